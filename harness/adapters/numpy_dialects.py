"""The careful ``numpy`` implementation under another library's documented contract.

:class:`NumpyInDialect` is the built-in ``numpy`` (:mod:`xentcheck.harness.adapters.numpy_stable`)
with a dialect's rules (:mod:`xentcheck.references.dialects`) applied, so that every dialect has an
implementation known to be right under it (the test suite runs each one) and a plant for
each rule: the PyTorch-convention ``numpy`` graded under a dialect fails where the rule
applies, and the other way round.

* ``paddle`` (soft-label-weight): with a class weight and probability targets or label
  smoothing, each row's unweighted loss (and derivative) times m = Σ_c w_c y'_c (y' the
  smoothed target), the mean divided by Σ m.
* ``sklearn`` (clip-probabilities, refuses-nonfinite, two-classes): the from-probabilities
  loss of p clipped to [eps, 1 − eps] in its dtype; NaN or ±inf in its inputs raises
  ``ValueError``; K = 1 is left ungraded.
* ``tensorflow``, ``optax`` (target-distribution): nothing to compute differently; the
  harness leaves targets that are not distributions ungraded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xentcheck.harness.adapters import numpy_stable as careful
from xentcheck.references import dialects


class NumpyInDialect:
    """``numpy`` under ``dialect``; holds only the dialect's name, so it pickles."""

    dtypes = careful.dtypes
    version = careful.version

    def __init__(self, dialect: str) -> None:
        self.dialect = dialects.dialect(dialect).name
        self.name = f"numpy-{self.dialect}"

    def __repr__(self) -> str:
        return f"NumpyInDialect({self.dialect!r})"

    def _rules(self) -> dialects.Dialect:
        return dialects.dialect(self.dialect)

    # -- unchanged in every dialect ---------------------------------------------------

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        return careful.logsumexp(logits)

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        return careful.softmax(logits)

    def log_softmax(self, logits: np.ndarray) -> np.ndarray:
        return careful.log_softmax(logits)

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        return careful.softmax_jacobian(logits)

    def softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        return careful.softmax_jvp(logits, tangent)

    def log_softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        return careful.log_softmax_jvp(logits, tangent)

    def cross_entropy_grad_wrt_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        self._refuse_nan(probs, target)
        return careful.cross_entropy_grad_wrt_probs(probs, target)

    # -- the loss and its derivatives: soft-label-weight ---------------------------------

    def _scaled(self, function: Any, logits: np.ndarray, target: np.ndarray,
                extra: tuple[np.ndarray, ...], options: dict[str, Any]) -> np.ndarray:
        weight = options.get("weight")
        smoothing = options.get("label_smoothing") or 0.0
        applies = (self._rules().has("soft-label-weight") and weight is not None
                   and (np.asarray(target).dtype.kind != "i" or bool(smoothing)))
        if not applies:
            return function(logits, target, *extra, **options)
        reduction = options.get("reduction", "none")
        unweighted = {k: v for k, v in options.items() if k != "weight"}
        unweighted["reduction"] = "none"
        rows = function(logits, target, *extra, **unweighted)
        dtype = rows.dtype
        masses = np.array(dialects.row_mass(target, weight, smoothing,
                                            options.get("ignore_index")))
        work = np.float64 if dtype != np.float64 else careful.WORKING_DTYPE["float64"]
        with np.errstate(all="ignore"):
            scaled = rows.astype(work) * (masses[:, None] if rows.ndim == 2 else masses)
            total = masses.sum()
            if rows.ndim == 2:  # derivatives of the sum or the mean
                out = scaled / total if reduction == "mean" else scaled
            elif reduction == "none":
                out = scaled
            else:
                out = scaled.sum() / total if reduction == "mean" else scaled.sum()
        return np.asarray(out).astype(dtype)

    def cross_entropy(self, logits: np.ndarray, target: np.ndarray, *,
                      weight: np.ndarray | None = None, ignore_index: int | None = None,
                      label_smoothing: float = 0.0, reduction: str = "none") -> np.ndarray:
        return self._scaled(careful.cross_entropy, logits, target, (), dict(
            weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
            reduction=reduction))

    def cross_entropy_grad(self, logits: np.ndarray, target: np.ndarray, *,
                           weight: np.ndarray | None = None, ignore_index: int | None = None,
                           label_smoothing: float = 0.0, reduction: str = "none") -> np.ndarray:
        return self._scaled(careful.cross_entropy_grad, logits, target, (), dict(
            weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
            reduction=reduction))

    def cross_entropy_jvp(self, logits: np.ndarray, target: np.ndarray, tangent: np.ndarray,
                          *, weight: np.ndarray | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0, reduction: str = "none") -> np.ndarray:
        return self._scaled(careful.cross_entropy_jvp, logits, target, (tangent,), dict(
            weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
            reduction=reduction))

    def cross_entropy_hvp(self, logits: np.ndarray, target: np.ndarray, vector: np.ndarray,
                          *, weight: np.ndarray | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0, reduction: str = "none") -> np.ndarray:
        return self._scaled(careful.cross_entropy_hvp, logits, target, (vector,), dict(
            weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
            reduction=reduction))

    # -- from probabilities: clip-probabilities, refuses-nan -----------------------------

    def _refuse_nan(self, *arrays: np.ndarray) -> None:
        if self._rules().has("refuses-nonfinite") and any(
                np.asarray(a).dtype.kind in "fV"
                and not np.isfinite(np.asarray(a, np.float64)).all() for a in arrays):
            raise ValueError("Input contains NaN or infinity.")

    def cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        self._refuse_nan(probs, target)
        if self._rules().has("clip-probabilities"):
            probs = dialects.clip_probabilities(probs)
        return careful.cross_entropy_from_probs(probs, target)


def load_paddle() -> NumpyInDialect:
    return NumpyInDialect("paddle")


def load_sklearn() -> NumpyInDialect:
    return NumpyInDialect("sklearn")


def load_tensorflow() -> NumpyInDialect:
    return NumpyInDialect("tensorflow")


def load_optax() -> NumpyInDialect:
    return NumpyInDialect("optax")
