"""The truth of one case: exact outputs of every function, computed once and shared.

A :class:`Truth` is built per case before any adapter runs; every adapter's outputs are
graded against the same exact values. Derivatives come with a certificate: the gold
gradient (or Jacobian) is checked against a high-precision finite-difference estimate of
the gold function along a random direction (``references.fd``), so every gradient verdict
rests on a derivative that was itself proven for that very input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np

import references as ref
from harness.adapters.contract import case_dtype
from harness.cases import Case
from references import fd
from references.gold import UNDEFINED

#: Largest K for which the (N, K, K) softmax Jacobian is computed and checked; beyond it
#: the Jacobian is too large to be worth holding, and the fused gradient covers the rows.
MAX_JACOBIAN_CLASSES = 64

#: Fewest decimal digits of agreement between the gold derivative and its finite-difference
#: estimate for a certificate to hold. The gold is certified to 110 bits (33 digits); the
#: FD estimate targets 60 digits; 25 leaves room for the estimate's own error bound.
CERTIFICATE_DIGITS = 25

#: Digits asked of the finite-difference estimate: enough to certify CERTIFICATE_DIGITS
#: with a margin, at about half the working precision (and time) of fd's default 60.
FD_DIGITS = 32

_LOGITS_FUNCTIONS = ("logsumexp", "softmax", "log_softmax", "softmax_jacobian")
_TARGET_FUNCTIONS = ("cross_entropy", "cross_entropy_grad")
_PROBS_FUNCTIONS = ("cross_entropy_from_probs", "cross_entropy_grad_wrt_probs")


@dataclass
class Certificate:
    """A gold derivative checked against finite differences of the gold function."""

    function: str
    holds: bool
    digits: float  # decimal digits of agreement (inf when both are exactly equal)
    rows: int  # rows that took part (finite logits and loss)
    note: str = ""


@dataclass
class Truth:
    """Exact outputs of one case, computed on first use and kept."""

    case: Case
    _values: dict[str, Any] = field(default_factory=dict)
    _certificates: dict[str, Certificate] = field(default_factory=dict)

    # ------------------------------------------------------------------ inputs

    @property
    def probs(self) -> np.ndarray:
        """The probabilities the from-probs functions are called with: the exact softmax of
        the logits, correctly rounded to the case dtype (so exact zeros occur where the
        softmax underflows, as they do in real pipelines)."""
        if "probs" not in self._values:
            exact = self.exact("softmax")
            self._values["probs"] = ref.round_to(exact, case_dtype(self.case.dtype))
        return self._values["probs"]

    def arguments(self, function: str) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
        """Positional arrays and options of ``function`` for this case (the adapter call)."""
        case = self.case
        if function in _LOGITS_FUNCTIONS:
            return (case.logits,), {}
        if function in _TARGET_FUNCTIONS:
            return (case.logits, case.target), dict(case.options)
        if function in _PROBS_FUNCTIONS:
            return (self.probs, case.target), {}
        raise ValueError(f"unknown function {function!r}")

    def applicable(self, function: str) -> bool:
        """Whether ``function`` is checked on this case at all."""
        case = self.case
        if function == "softmax_jacobian":
            return case.num_classes <= MAX_JACOBIAN_CLASSES
        if function in _PROBS_FUNCTIONS:
            # the from-probs route has no options and no ignored rows
            return "ignore_index" not in case.options and not case.target_problems()
        if function in _TARGET_FUNCTIONS:
            return not case.target_problems()
        return True

    # ------------------------------------------------------------------ exact values

    def exact(self, function: str) -> Any:
        """The exact output of ``function`` (object array of mpf, or a scalar).

        Cross-entropy rows where the textbook algorithm's own intermediate z_i - max z
        overflows the case dtype while target mass sits there are marked ``UNDEFINED``
        here (recorded, not graded): no implementation working in the dtype can be asked
        for them, and grading must never accuse the textbook algorithm.
        """
        if function not in self._values:
            args, options = self.arguments(function) if function != "softmax" else (
                (self.case.logits,), {})
            value = getattr(ref, function)(*args, **options)
            if function == "cross_entropy":
                value = self._mask_overflowing_rows(value)
            self._values[function] = value
        return self._values[function]

    def overflowing_rows(self) -> np.ndarray:
        """Rows whose shifted logit z_i - max z overflows the dtype where the effective
        target has mass (weights and smoothing included)."""
        case = self.case
        z = case.logits.astype(np.float64)
        big = ref.float_format(case.dtype).max
        with np.errstate(all="ignore"):
            finite = np.where(np.isfinite(z), z, np.nan)
            top = np.nanmax(np.where(np.isnan(finite), -np.inf, finite), axis=1, keepdims=True)
            gap = np.abs(finite - top) > big
        if case.target_kind == "indices":
            mass = np.zeros(z.shape, dtype=bool)
            valid = (case.target >= 0) & (case.target < case.num_classes)
            mass[np.flatnonzero(valid), case.target[valid]] = True
            if case.options.get("label_smoothing"):
                mass[:] = True
        else:
            mass = case.target.astype(np.float64) != 0
            if case.options.get("label_smoothing"):
                mass[:] = True
        return np.any(gap & mass, axis=1)

    def _mask_overflowing_rows(self, value: Any) -> Any:
        rows = self.overflowing_rows()
        if not rows.any():
            return value
        if np.ndim(value) == 0:
            return UNDEFINED
        value = value.copy()
        value[rows] = UNDEFINED
        return value

    # ------------------------------------------------------------------ certificates

    def certificate(self, function: str) -> Certificate:
        """The finite-difference certificate of the gold derivative ``function``."""
        if function not in self._certificates:
            self._certificates[function] = self._certify(function)
        return self._certificates[function]

    def _direction(self, shape: tuple[int, ...]) -> np.ndarray:
        digest = hashlib.sha256(self.case.digest().encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return rng.uniform(-1.0, 1.0, size=shape)

    def _certify(self, function: str) -> Certificate:
        case = self.case
        target = case.target
        if function == "cross_entropy_grad":
            # the gradient of the summed per-row losses; "mean" divides it by a constant.
            # Rows whose loss is infinite (target mass at a -inf logit) have a finite
            # gradient but no finite differences: they are left out.
            options = {**case.options, "reduction": "none"}
            derivative = ref.cross_entropy_grad(case.logits, target, **options)
            losses = ref.cross_entropy(case.logits, target, **options)
            derivative = derivative.copy()
            for n, loss in enumerate(losses):
                if loss is UNDEFINED or not mpmath.isfinite(loss):
                    derivative[n, :] = UNDEFINED
            return _certify_along(
                function,
                lambda z, rows: mpmath.fsum(ref.cross_entropy(
                    z, target[rows], **options, prec=mpmath.mp.prec)),
                case.logits, derivative, self._direction(case.shape), hold_zeros=False)
        if function == "softmax_jacobian":
            return _certify_along(
                function, lambda z, rows: ref.softmax(z, prec=mpmath.mp.prec),
                case.logits, self.exact("softmax_jacobian"), self._direction(case.shape),
                hold_zeros=False)
        if function == "cross_entropy_grad_wrt_probs":
            return _certify_along(
                function,
                lambda p, rows: mpmath.fsum(ref.cross_entropy_from_probs(
                    p, target[rows], prec=mpmath.mp.prec)),
                self.probs, self.exact(function), self._direction(case.shape),
                hold_zeros=True)
        raise ValueError(f"{function} is not a derivative")


def _finite_rows(x: np.ndarray, derivative: np.ndarray) -> np.ndarray:
    """Rows where the finite-difference certificate is meaningful: every input finite (or
    -inf, held fixed) and every derivative entry finite and defined."""
    rows = []
    for n in range(x.shape[0]):
        values = np.asarray(x[n], dtype=np.float64)
        if np.any(np.isnan(values)) or np.any(values == np.inf):
            continue
        entries = np.ravel(derivative[n])
        if any(v is UNDEFINED or not mpmath.isfinite(v) for v in entries):
            continue
        if np.all(values == -np.inf):
            continue
        rows.append(n)
    return np.array(rows, dtype=int)


def _certify_along(function: str, f: Any, x: np.ndarray, derivative: np.ndarray,
                   direction: np.ndarray, *, hold_zeros: bool) -> Certificate:
    """Compare ``derivative`` applied to ``direction`` with the finite-difference derivative
    of ``f(x_rows, rows)`` along it, over the rows where both are finite. Entries at -inf
    (and, with ``hold_zeros``, exact zeros: probabilities cannot go negative) stay fixed."""
    rows = _finite_rows(x, derivative)
    if rows.size == 0:
        return Certificate(function, True, float("inf"), 0, "no finite rows to certify")
    x_rows = np.asarray(x, dtype=np.float64)[rows]
    moving = np.isfinite(x_rows) & ((x_rows != 0) if hold_zeros else True)
    v = np.where(moving, direction[rows], 0.0)
    if not np.any(v):
        return Certificate(function, True, float("inf"), int(rows.size), "nothing can move")
    fixed_inf = np.isneginf(x_rows)
    point = np.empty(x_rows.shape, dtype=object)
    point[...] = [[mpmath.mpf(e) for e in row] for row in np.where(fixed_inf, 0.0, x_rows)]

    def along(z: np.ndarray) -> Any:  # fd wants a finite point: put the -inf entries back
        z = z.copy()
        z[fixed_inf] = mpmath.mpf("-inf")
        return f(z, rows)

    estimate = fd.directional_derivative(along, point, v, digits=FD_DIGITS)
    k = v.shape[1]
    with mpmath.workprec(256):
        if function == "softmax_jacobian":  # J v for every row: K values per row
            analytic = [mpmath.fsum(derivative[n][i][j] * v[r][j] for j in range(k))
                        for r, n in enumerate(rows) for i in range(k)]
            pairs = zip(analytic, np.ravel(estimate.value), np.ravel(estimate.error),
                        strict=True)
        else:
            analytic = mpmath.fsum(derivative[n][j] * v[r][j]
                                   for r, n in enumerate(rows) for j in range(k))
            pairs = [(analytic, estimate.value, estimate.error)]
        resolved, unresolved = [], 0
        for a, e, err in pairs:
            if abs(err) >= max(abs(a), abs(e)):
                unresolved += 1  # below what the finite differences can see at any cost
            else:
                resolved.append(_agreement(a, e, err))
    note = f"{unresolved} entries below the finite differences' resolution" if unresolved else ""
    if not resolved:
        return Certificate(function, True, float("inf"), int(rows.size), note)
    digits = min(resolved)
    return Certificate(function, digits >= CERTIFICATE_DIGITS, digits, int(rows.size), note)


def _agreement(analytic: Any, estimate: Any, error: Any) -> float:
    with mpmath.workprec(256):
        a, e = mpmath.mpf(analytic), mpmath.mpf(estimate)
        diff = abs(a - e)
        scale = max(abs(a), abs(e))
        if diff == 0:
            return float("inf")
        if diff <= mpmath.mpf(error) or scale == 0:
            # the estimate cannot tell them apart: as many digits as its error allows
            resolved = max(abs(mpmath.mpf(error)), diff)
            return float("inf") if scale == 0 else float(-mpmath.log10(resolved / scale))
        return float(-mpmath.log10(diff / scale))
