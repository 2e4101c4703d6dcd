"""Semantic dialects: the cross-entropy contracts libraries document where they differ from
PyTorch's, each rule cited, and the reference's answer under it (DESIGN.md §4).

The reference follows PyTorch's documented formulas (:mod:`xentcheck.references.gold`). A library
that documents another choice is graded under its *dialect*: the reference applies that
library's rules, an input outside the library's documented domain is "outside contract"
(recorded, not graded), and an exception the library documents for an input (NaN) is
"refused" (recorded, not a failure). A rule is data: what the library documents, what
PyTorch does instead, and where the library says so.

The rules (each tested against gold in ``tests/references/test_dialect_rules.py``):

``soft-label-weight``
    PaddlePaddle, ``paddle.nn.functional.cross_entropy``: with soft labels and a class
    weight, a row's loss is its unweighted loss times the row's weight mass
    m = Σ_c w_c y_c, and ``mean`` divides by Σ_rows m. PyTorch weights each term instead,
    −Σ_c w_c y_c log p_c, and its ``mean`` over probability targets divides by N. Label
    smoothing makes soft labels of class indices too, y = (1 − ε)·onehot + ε/K, and the
    rule applies to them.
``clip-probabilities``
    scikit-learn, ``sklearn.metrics.log_loss``: the predicted probabilities are clipped to
    [eps, 1 − eps], eps the machine epsilon of their dtype, before the log (a probability
    of 0 costs −log eps, not +inf). The PyTorch convention takes log p as it is.
``refuses-nonfinite``
    scikit-learn validates its inputs (``sklearn.utils.check_array``) and raises
    ``ValueError`` for NaN or ±inf; raising there is the documented contract (PyTorch
    propagates NaN and takes limits at ±inf).
``two-classes``
    scikit-learn: the log loss is defined for two or more labels; K = 1 is outside its
    contract (PyTorch's loss of one class is 0).
``target-distribution``
    TensorFlow, ``tf.nn.softmax_cross_entropy_with_logits``, and optax,
    ``optax.softmax_cross_entropy``: each row of the labels is a probability distribution.
    Rows with a negative entry or a sum other than 1 are outside the contract (PyTorch
    defines the loss −Σ y log p for any y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np

from xentcheck.references.gold import DEFAULT_PREC, UNDEFINED
from xentcheck.references.rounding import float_format

__all__ = [
    "DEFAULT",
    "DIALECTS",
    "Dialect",
    "Rule",
    "clip_probabilities",
    "dialect",
    "distribution_rows",
    "row_mass",
    "scale_rows",
]


@dataclass(frozen=True)
class Rule:
    """One documented difference from PyTorch's convention."""

    key: str
    says: str  # the library's documented choice, in this project's words
    pytorch: str  # what the PyTorch convention does instead
    source: str  # the library's documentation

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "says": self.says, "pytorch": self.pytorch,
                "source": self.source}


@dataclass(frozen=True)
class Dialect:
    """A library's documented cross-entropy contract: PyTorch's, except for ``rules``."""

    name: str
    rules: tuple[Rule, ...] = ()

    def has(self, key: str) -> bool:
        return any(rule.key == key for rule in self.rules)

    def rule(self, key: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.key == key), None)


_PADDLE_CE = ("https://www.paddlepaddle.org.cn/documentation/docs/en/api/paddle/nn/"
              "functional/cross_entropy_en.html")
_SKLEARN_LOG_LOSS = ("https://scikit-learn.org/stable/modules/generated/"
                     "sklearn.metrics.log_loss.html")
_SKLEARN_CHECK_ARRAY = ("https://scikit-learn.org/stable/modules/generated/"
                        "sklearn.utils.check_array.html")
_OPTAX_LOSSES = "https://optax.readthedocs.io/en/latest/api/losses.html"
_TF_SOFTMAX_CE = ("https://www.tensorflow.org/api_docs/python/tf/nn/"
                  "softmax_cross_entropy_with_logits")

SOFT_LABEL_WEIGHT = Rule(
    "soft-label-weight",
    "with soft labels (or label smoothing) and a class weight, a row's loss is its "
    "unweighted loss times m = Σ_c w_c·y_c, and the mean divides by the sum of m over the "
    "rows",
    "each term weighted, −Σ_c w_c·y_c·log p_c; the mean over probability targets divides "
    "by N",
    _PADDLE_CE)
CLIP_PROBABILITIES = Rule(
    "clip-probabilities",
    "predicted probabilities clipped to [eps, 1 − eps] (eps: machine epsilon of their "
    "dtype) before the log",
    "log p as it is: a probability of 0 under target mass gives +inf",
    _SKLEARN_LOG_LOSS)
REFUSES_NONFINITE = Rule(
    "refuses-nonfinite",
    "inputs are validated: NaN or ±inf raises ValueError",
    "NaN propagates to the row's outputs; ±inf inputs give limits",
    _SKLEARN_CHECK_ARRAY)
TWO_CLASSES = Rule(
    "two-classes",
    "the log loss is defined for two or more labels; K = 1 raises ValueError",
    "one class: loss 0, gradient 0",
    _SKLEARN_LOG_LOSS)
TARGET_DISTRIBUTION = Rule(
    "target-distribution",
    "each row of labels must be a probability distribution (entries ≥ 0, summing to 1)",
    "−Σ y·log p for any target, unnormalized or all zero",
    _TF_SOFTMAX_CE)

OPTAX_DISTRIBUTION = Rule(
    "target-distribution",
    "each row of labels is a class probability distribution (non-negative, summing to 1)",
    "−Σ y·log p for any target, unnormalized or all zero",
    _OPTAX_LOSSES)

PADDLE_DISTRIBUTION = Rule(
    "target-distribution",
    "soft labels are probabilities that sum to 1 per row",
    "−Σ y·log p for any target, unnormalized or all zero",
    _PADDLE_CE)

DEFAULT = Dialect("pytorch")

#: Every dialect an adapter may declare (its ``dialect`` attribute), by name.
DIALECTS: dict[str, Dialect] = {
    "pytorch": DEFAULT,
    # ignore_index is documented for hard labels (soft_label=False), label smoothing
    # included: an ignored row that still gets a smoothing loss is a defect, not a rule
    "paddle": Dialect("paddle", (SOFT_LABEL_WEIGHT, PADDLE_DISTRIBUTION)),
    "sklearn": Dialect("sklearn", (CLIP_PROBABILITIES, REFUSES_NONFINITE, TWO_CLASSES)),
    "tensorflow": Dialect("tensorflow", (TARGET_DISTRIBUTION,)),
    "optax": Dialect("optax", (OPTAX_DISTRIBUTION,)),
}


def dialect(name: str | None) -> Dialect:
    """The dialect called ``name`` (``None``: PyTorch's); ValueError with the known names."""
    if name is None:
        return DEFAULT
    if not isinstance(name, str) or name not in DIALECTS:
        raise ValueError(f"unknown dialect {name!r}; known: {', '.join(DIALECTS)}")
    return DIALECTS[name]


def _machine_epsilon(dtype: Any) -> float:
    """The spacing of the format above 1, 2**(1 - precision) (``np.finfo(dtype).eps``)."""
    return math.ldexp(1.0, 1 - float_format(dtype).precision)


def row_mass(target: np.ndarray, weight: Any, label_smoothing: float = 0.0,
             ignore_index: int | None = None) -> list[float]:
    """m = Σ_c w_c·y'_c of each row, y' the smoothed target (1 − ε)·y + ε/K (y one-hot for
    class indices; 0 for a row whose index is ``ignore_index``: it is left out), summed
    exactly (fractions) and rounded once to float64; NaN where a term is not finite."""
    weights = np.asarray(weight, dtype=np.float64).tolist()
    k = len(weights)
    w = [Fraction(x) if math.isfinite(x) else None for x in weights]
    eps = Fraction(float(label_smoothing))
    t = np.asarray(target)
    ignored = [False] * len(t)
    if t.dtype.kind in "iu":
        rows = [[1.0 if c == int(i) else 0.0 for c in range(k)] for i in t.tolist()]
        ignored = [ignore_index is not None and int(i) == ignore_index for i in t.tolist()]
    else:
        rows = t.astype(np.float64).tolist()
    masses = []
    for row, left_out in zip(rows, ignored, strict=True):
        if left_out:
            masses.append(0.0)
            continue
        if any(a is None for a in w) or not all(math.isfinite(b) for b in row):
            masses.append(math.nan)
            continue
        smoothed = [(1 - eps) * Fraction(b) + eps / k for b in row]
        masses.append(float(sum((a * b for a, b in zip(w, smoothed, strict=True)),
                                Fraction(0))))
    return masses


def scale_rows(value: Any, masses: list[float], reduction: str) -> Any:
    """The soft-label-weight rule applied to an unweighted loss or derivative.

    ``value``: the reference's output for the same case without ``weight`` and with
    ``reduction="none"`` (per-row losses or directional derivatives (N,), or row-wise
    derivatives (N, K)); each row is scaled by its mass, then reduced: ``sum`` adds the
    rows (1-D values), ``mean`` also divides by Σ m. Exact (mpf object) arrays and float
    arrays alike; ``UNDEFINED`` stays so, and makes a sum or mean of it ``UNDEFINED``, as
    does a mean over no mass (0/0). Exact values are combined at gold's precision."""
    with mpmath.workprec(DEFAULT_PREC):
        return _scale_rows(np.asarray(value), masses, reduction)


def _scale_rows(rows: np.ndarray, masses: list[float], reduction: str) -> Any:
    total = math.fsum(masses)
    if reduction == "mean" and not total > 0:
        return np.full(rows.shape, UNDEFINED, dtype=object) if rows.ndim == 2 else UNDEFINED
    scaled = np.empty_like(rows)
    for i, mass in enumerate(masses):
        factor = mass if rows.dtype == object else rows.dtype.type(mass)
        if rows.ndim == 2:
            scaled[i] = [x if x is UNDEFINED else x * factor for x in rows[i]]
        else:
            scaled[i] = rows[i] if rows[i] is UNDEFINED else rows[i] * factor
    if rows.ndim == 2:  # a derivative, row-wise already: the mean scales every row
        if reduction != "mean":
            return scaled
        return np.array([[x if x is UNDEFINED else x / total for x in row] for row in scaled],
                        dtype=object) if rows.dtype == object else scaled / total
    if reduction == "none":
        return scaled
    if any(x is UNDEFINED for x in scaled.tolist()):
        return UNDEFINED
    summed = sum(scaled.tolist()) if rows.dtype == object else scaled.sum()
    return summed / total if reduction == "mean" else summed


def distribution_rows(target: np.ndarray, dtype: Any) -> np.ndarray:
    """Which rows of a probability target are distributions: every entry ≥ 0 and finite,
    the exact sum within K·eps of 1 (the rounding of a distribution to ``dtype``)."""
    y = np.asarray(target).astype(np.float64)
    eps = _machine_epsilon(dtype)
    k = y.shape[1] if y.ndim == 2 else 0
    ok = []
    for row in y:
        finite = bool(np.all(np.isfinite(row))) and bool(np.all(row >= 0))
        ok.append(finite and abs(math.fsum(row.tolist()) - 1.0) <= max(k, 1) * eps)
    return np.array(ok, dtype=bool)


def clip_probabilities(probs: np.ndarray) -> np.ndarray:
    """``probs`` clipped to [eps, 1 − eps] in their own dtype (both bounds are exact there);
    NaN stays NaN."""
    dtype = probs.dtype
    eps = _machine_epsilon(dtype)
    low = np.asarray(eps, dtype=np.float64).astype(dtype)
    high = np.asarray(1.0 - eps, dtype=np.float64).astype(dtype)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(probs), probs, np.minimum(np.maximum(probs, low), high))
