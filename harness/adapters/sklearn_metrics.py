"""Built-in adapter ``sklearn``: ``sklearn.metrics.log_loss`` as ``cross_entropy_from_probs``.

scikit-learn's one cross-entropy is ``log_loss(y_true, y_proba)``, the loss of predicted
probabilities against true labels. It returns one number for the whole batch (the mean or,
with ``normalize=False``, the sum of the per-sample losses), so the glue calls it once per
row, ``log_loss([t], probs[i:i+1], normalize=False, labels=range(K))``, and puts the
per-row losses into an (N,) array of the case's dtype. ``log_loss`` computes in the dtype
of ``y_proba`` (float64, float32 or float16; it would turn bfloat16 into float64, so
bfloat16 is not declared) and returns a Python float, which converts back to that dtype
exactly. An empty batch (N = 0) gives an empty array without a call (``log_loss`` itself
refuses zero samples).

Targets are class indices only: ``log_loss`` takes labels or a label *indicator* matrix
(0/1), not probabilities, so probability targets raise ``NotImplementedError`` ("not
provided"). scikit-learn has no gradient, so nothing else is provided.

``log_loss`` documents choices that differ from PyTorch's convention, so the adapter
declares the dialect ``sklearn``: it clips the probabilities to [eps, 1 − eps] with eps the
machine epsilon of their dtype (so p = 0 at the target gives −log eps, not +inf), does not
renormalise rows that do not sum to 1 (a ``UserWarning`` only), refuses NaN and infinite
probabilities, probabilities above 1 or below 0 and labels outside ``labels`` with
``ValueError``, and needs at least two classes (K = 1 raises ``ValueError``). Warnings are
let through as they are; nothing is caught or fixed. scikit-learn is imported only by
:func:`load` and the methods, never when the harness is imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import AdapterUnavailable

DTYPES: tuple[str, ...] = ("float64", "float32", "float16")


def _import_sklearn() -> Any:
    try:
        import sklearn
        import sklearn.metrics  # noqa: F401  (log_loss lives here)
    except ImportError as exc:  # pragma: no cover - exercised only where it is absent
        raise AdapterUnavailable(f"scikit-learn is not installed ({exc})") from exc
    return sklearn


class SklearnAdapter:
    """``sklearn.metrics.log_loss``, one call per row; holds no scikit-learn objects."""

    name = "sklearn"
    dtypes = DTYPES
    #: log_loss documents clipping with eps, a class-label target domain and K >= 2.
    dialect = "sklearn"

    def __init__(self) -> None:
        self.version = _import_sklearn().__version__

    def __repr__(self) -> str:
        return "SklearnAdapter()"

    def cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Per row: ``log_loss([t_i], probs[i:i+1], normalize=False, labels=range(K))``."""
        from sklearn.metrics import log_loss

        probs = np.asarray(probs)
        target = np.asarray(target)
        if target.ndim != 1:
            raise NotImplementedError(
                "sklearn.metrics.log_loss takes class labels, not probability targets")
        n, k = probs.shape
        out = np.empty(n, dtype=probs.dtype)
        for i in range(n):
            out[i] = log_loss([int(target[i])], probs[i:i + 1], normalize=False,
                              labels=range(k))
        return out


def load() -> SklearnAdapter:
    """The ``sklearn`` built-in; AdapterUnavailable when scikit-learn is not installed."""
    return SklearnAdapter()
