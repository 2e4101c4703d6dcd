"""Built-in ``scipy``: ``scipy.special.softmax``, ``log_softmax``, ``logsumexp`` along the
class axis, and cross-entropy built from them: −Σ y log_softmax and its gradient
softmax·Σy − y. No options. Declared dtypes are those SciPy supports (bfloat16 is not
one: ``logsumexp`` returns float64 for it).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from harness.adapters.contract import AdapterUnavailable

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


def _as_probabilities(target: np.ndarray, like: np.ndarray) -> np.ndarray:
    target = np.asarray(target)
    if target.dtype.kind in "iu":
        return np.eye(like.shape[1], dtype=like.dtype)[target]
    return target


def logsumexp(logits: np.ndarray) -> np.ndarray:
    return special.logsumexp(logits, axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    return special.softmax(logits, axis=1)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return special.log_softmax(logits, axis=1)


def cross_entropy(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    target = np.asarray(target)
    log_p = log_softmax(logits)
    if target.dtype.kind in "iu":
        return -np.take_along_axis(log_p, target[:, None], axis=1)[:, 0]
    return -(target * log_p).sum(axis=1)


def cross_entropy_grad(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    y = _as_probabilities(target, logits)
    return softmax(logits) * y.sum(axis=1, keepdims=True) - y
