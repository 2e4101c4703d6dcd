"""Built-in ``scipy``: ``scipy.special.softmax``, ``log_softmax``, ``logsumexp`` along the
class axis, and cross-entropy built from them: −Σ y log_softmax and its gradient
softmax·Σy − y. No options. Declared dtypes are those SciPy supports (bfloat16 is not
one: ``logsumexp`` returns float64 for it).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import AdapterUnavailable

try:
    import scipy
    from scipy import special
except ImportError:  # pragma: no cover - scipy is a core dependency
    scipy = special = None  # type: ignore[assignment]

name = "scipy"
dtypes = ("float64", "float32", "float16")
version = getattr(scipy, "__version__", None)


def load() -> Any:
    """The adapter: this module; unavailable without SciPy."""
    if special is None:
        raise AdapterUnavailable("scipy is not installed")
    return sys.modules[__name__]


def _checked(target: np.ndarray, k: int) -> np.ndarray:
    """The glue around scipy.special validates what scipy would never see: targets."""
    target = np.asarray(target)
    if target.dtype.kind in "iu":
        bad = np.flatnonzero((target < 0) | (target >= k))
        if bad.size:
            raise ValueError(f"target[{bad[0]}] = {target[bad[0]]} is out of range for {k} classes")
    elif np.any(target < 0):
        raise ValueError(f"target row {np.argwhere(target < 0)[0][0]} has a negative probability")
    return target


def _as_probabilities(target: np.ndarray, like: np.ndarray) -> np.ndarray:
    target = _checked(target, like.shape[1])
    if target.dtype.kind in "iu":
        y = np.zeros(like.shape, dtype=like.dtype)  # (not np.eye(K)[target]: K**2 memory)
        y[np.arange(like.shape[0]), target] = 1
        return y
    return target


def logsumexp(logits: np.ndarray) -> np.ndarray:
    return special.logsumexp(logits, axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    return special.softmax(logits, axis=1)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return special.log_softmax(logits, axis=1)


def cross_entropy(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    target = _checked(target, logits.shape[1])
    log_p = log_softmax(logits)
    if target.dtype.kind in "iu":
        return -np.take_along_axis(log_p, target[:, None], axis=1)[:, 0]
    # 0 * log 0 = 0: classes without target mass contribute nothing, even at -inf; a NaN
    # anywhere in a row makes the row NaN
    loss = -np.where(target != 0, target * log_p, 0).sum(axis=1)
    return np.where(np.isnan(logits).any(axis=1), np.nan, loss).astype(logits.dtype)


def cross_entropy_grad(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    y = _as_probabilities(target, logits)
    return softmax(logits) * y.sum(axis=1, keepdims=True) - y
