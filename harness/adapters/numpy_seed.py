"""Built-in ``numpy-seed``: the seeds' formulas, literally, in the case's own dtype.

softmax ŷ = exp(z) / Σ exp(z) without the max shift, L = −Σ y log ŷ through the
probabilities, dL/dŷ = −y/ŷ, the Jacobian diag(ŷ) − ŷŷᵀ, and the fused gradient ŷ − y
that silently assumes Σy = 1. No options, no special cases: this is the teaching baseline,
and the report shows where each formula breaks (overflow past log(max), 0·log 0 = NaN,
p − 1 cancelling to 0, unnormalized targets). NumPy's floating-point warnings are
silenced (the values are what the formulas give; the report says where they break).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

name = "numpy-seed"
dtypes = ("float64", "float32", "float16", "bfloat16")
version = np.__version__


def load() -> Any:
    """The adapter: this module."""
    return sys.modules[__name__]


def _quietly(formula: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """``formula`` without NumPy's overflow/invalid warnings (its values are unchanged)."""

    @functools.wraps(formula)
    def quiet(*arrays: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return formula(*arrays)

    return quiet


def _as_probabilities(target: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A class-index target as one-hot rows of ``like``'s dtype; probabilities unchanged."""
    target = np.asarray(target)
    if target.dtype.kind in "iu":
        y = np.zeros(like.shape, dtype=like.dtype)  # (not np.eye(K)[target]: K**2 memory)
        y[np.arange(like.shape[0]), target] = 1
        return y
    return target


@_quietly
def softmax(logits: np.ndarray) -> np.ndarray:
    exps = np.exp(logits)
    return exps / exps.sum(axis=1, keepdims=True)


@_quietly
def logsumexp(logits: np.ndarray) -> np.ndarray:
    return np.log(np.exp(logits).sum(axis=1))


@_quietly
def log_softmax(logits: np.ndarray) -> np.ndarray:
    return np.log(softmax(logits))


@_quietly
def cross_entropy_from_probs(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    y = _as_probabilities(target, probs)
    return -(y * np.log(probs)).sum(axis=1)


@_quietly
def cross_entropy(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    return cross_entropy_from_probs(softmax(logits), target)


@_quietly
def cross_entropy_grad_wrt_probs(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    return -_as_probabilities(target, probs) / probs


@_quietly
def softmax_jacobian(logits: np.ndarray) -> np.ndarray:
    p = softmax(logits)
    eye = np.eye(p.shape[1], dtype=p.dtype)
    return p[:, :, None] * eye - p[:, :, None] * p[:, None, :]


@_quietly
def cross_entropy_grad(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    return softmax(logits) - _as_probabilities(target, logits)
