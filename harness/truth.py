"""The truth of one case: exact outputs of every function, computed once and shared.

A :class:`Truth` is built per case before any adapter runs; every adapter's outputs are
graded against the same reference values. Derivatives come with a certificate: the
reference gradient is checked against finite differences of the reference function along
a random direction (``xentcheck.references.fd``), so every gradient verdict rests on a derivative
that was itself proven for that very input.

Two tiers (:func:`tier_for`): small cases get the exact gold tier (``xentcheck.references.gold``,
mpmath) and 20-digit certificates from :func:`xentcheck.references.fd.directional_derivative`;
large ones (more than :data:`MAX_JACOBIAN_CLASSES` classes, every logit finite, the loss
defined) get the fast tier (``xentcheck.references.fast``: longdouble for float64 candidates,
float64
for float32 and narrower, both within 1e-3 ulp of the candidate's dtype) and linear-cost
certificates, one direction per row (:func:`xentcheck.references.fd.directional_derivative_rows`),
agreeing to :data:`FAST_CERTIFICATE_DIGITS` digits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np

import xentcheck.references as ref
from xentcheck.harness import grading
from xentcheck.harness.adapters.contract import case_dtype
from xentcheck.harness.cases import Case
from xentcheck.references import dialects, fast, fd, portable
from xentcheck.references.gold import UNDEFINED
from xentcheck.references.precision import standard_precision

#: Largest K for which the (N, K, K) softmax Jacobian is computed and checked; beyond it
#: the Jacobian is too large to be worth holding, and the fused gradient covers the rows.
MAX_JACOBIAN_CLASSES = 64

#: Fewest decimal digits of agreement between the gold derivative and its finite-difference
#: estimate for a certificate to hold: four more than float64 carries, so a formula wrong
#: anywhere a float64 grade could see is caught. (The gold values themselves are
#: certified to 110 bits, 33 digits, by their own error bounds.)
CERTIFICATE_DIGITS = 20

#: Digits asked of the finite-difference estimate: enough to certify CERTIFICATE_DIGITS
#: with a margin, at a fraction of the working precision (and time) of fd's default 60.
FD_DIGITS = 24

#: The finite differences' first step, 2**-STEP_BITS of the scale: the central difference
#: is then already within 2**-96 and one Richardson level reaches FD_DIGITS (4 evaluations
#: of the gold function instead of 6 at fd's default 2**-32).
STEP_BITS = 48

#: Fewest digits of agreement of a fast-tier certificate, per working precision. The
#: per-row central differences reach about u**(4/5) relative to the loss (not to its
#: derivative): 10-16 digits in longdouble and 7-12 in float64 on the default regimes,
#: less where a row's loss is large next to its slope. A wrong formula (a missing weight or
#: smoothing term, a wrong divisor) misses by far more; the fast tier's formulas are also
#: checked against gold to 1e-3 ulp in the tests.
FAST_CERTIFICATE_DIGITS = {"longdouble": 8.0, "float64": 6.0}

_LN10 = portable.constant_log(10.0)

_LOGITS_FUNCTIONS = ("logsumexp", "softmax", "log_softmax", "softmax_jacobian")
_TARGET_FUNCTIONS = ("cross_entropy", "cross_entropy_grad")
_PROBS_FUNCTIONS = ("cross_entropy_from_probs", "cross_entropy_grad_wrt_probs")
#: Forward mode (logits, tangent) and with a target (logits, target, tangent/vector).
_TANGENT_FUNCTIONS = ("softmax_jvp", "log_softmax_jvp")
_TARGET_TANGENT_FUNCTIONS = ("cross_entropy_jvp", "cross_entropy_hvp")
#: What the soft-label-weight rule scales row by row (xentcheck.references.dialects.scale_rows).
_ROW_MASS_FUNCTIONS = ("cross_entropy", "cross_entropy_grad", "cross_entropy_jvp",
                       "cross_entropy_hvp")
#: What each directional derivative is the derivative of, along the tangent (certificates).
DIRECTIONAL = {"softmax_jvp": "softmax", "log_softmax_jvp": "log_softmax",
               "cross_entropy_jvp": "cross_entropy", "cross_entropy_hvp": "cross_entropy_grad"}

#: The tangent's entries are multiples of this step in [-1, 1]: exact in every case dtype
#: (bfloat16's 8 significant bits hold k / 256 for |k| <= 256).
TANGENT_STEP = 2.0**-8


@dataclass
class Certificate:
    """A gold derivative checked against finite differences of the gold function."""

    function: str
    holds: bool
    digits: float  # decimal digits of agreement (inf when both are exactly equal)
    rows: int  # rows that took part (finite logits and loss)
    note: str = ""


def tier_for(case: Case) -> str:
    """The reference tier of ``case``: ``"gold"``, or the fast tier's working precision
    (``"longdouble"``, ``"float64"``) for a large case whose every output the fast tier
    defines as gold does: no NaN or +inf logit and no all -inf row (-inf entries, masked
    classes, are fine), finite probability targets and weights, valid targets, and a
    ``mean`` over a non-zero weight. (Those rows stay with gold, whose semantics the fast
    tier follows but whose ``UNDEFINED`` it cannot tell from NaN; so does the Jacobian.)"""
    if case.num_classes <= MAX_JACOBIAN_CLASSES or case.num_rows == 0:
        return "gold"
    work = fast.work_for(case.dtype)
    if work == "gold" or case.target_problems():
        return "gold"
    z = np.asarray(case.logits, np.float64)
    if np.isnan(z).any() or (z == np.inf).any() or (z == -np.inf).all(axis=1).any():
        return "gold"
    arrays = [case.options.get("weight")]
    if case.target_kind != "indices":
        arrays.append(case.target)
    if not all(np.all(np.isfinite(np.asarray(a, np.float64))) for a in arrays if a is not None):
        return "gold"
    if case.options.get("reduction") == "mean" and not mean_denominator(case) > 0:
        return "gold"
    if overflowing_rows(case).any():
        return "gold"  # rows left ungraded (UNDEFINED): gold's marks
    return work


def mean_denominator(case: Case, dialect: dialects.Dialect = dialects.DEFAULT) -> float:
    """The divisor of a ``mean``: the kept rows' target weights (class indices; summed
    exactly) or N; under the soft-label-weight rule, the rows' weight masses."""
    if _row_masses_apply(case, dialect):
        return math.fsum(_row_masses(case))
    if case.target_kind != "indices":
        return float(case.num_rows)
    ignore = case.options.get("ignore_index")
    kept = case.target if ignore is None else case.target[case.target != ignore]
    weight = case.options.get("weight")
    if weight is None:
        return float(kept.size)
    return math.fsum(np.asarray(weight, np.float64)[kept].tolist())


def _row_masses_apply(case: Case, dialect: dialects.Dialect) -> bool:
    """Whether the soft-label-weight rule changes this case: a class weight with probability
    targets or label smoothing (soft labels either way)."""
    return (dialect.has("soft-label-weight") and case.options.get("weight") is not None
            and (case.target_kind != "indices" or bool(case.options.get("label_smoothing"))))


def _row_masses(case: Case) -> list[float]:
    return dialects.row_mass(case.target, case.options["weight"],
                             case.options.get("label_smoothing", 0.0),
                             case.options.get("ignore_index"))


_NATIVE_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def overflowing_rows(case: Case) -> np.ndarray:
    """Rows whose shifted logit z_i - max z overflows the dtype where the effective
    target has mass (weights and smoothing included)."""
    big = ref.float_format(case.dtype).max
    logits = case.logits
    if logits.size and logits.dtype in _NATIVE_FLOATS and np.isfinite(logits).all():
        # every gap is at most its row's max - min: none when even the widest row is
        # well inside the dtype (the float64 difference is off by a rounding at most)
        with np.errstate(over="ignore"):  # inf: too wide to tell here
            spread = (logits.max(axis=1).astype(np.float64)
                      - logits.min(axis=1).astype(np.float64))
        if np.all(spread <= big / 2):
            return np.zeros(logits.shape[0], bool)
    z = logits.astype(np.float64)
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



@dataclass
class Truth:
    """Reference outputs of one case, computed on first use and kept.

    ``base``: the PyTorch-convention truth of the very same case, for a truth under another
    dialect. What the dialect's rules leave as PyTorch's (every function but those
    :meth:`_under_dialect` names on this case) is then that truth's value, certificate and
    decoding, computed once for every dialect of a run; the rest is this truth's own."""

    case: Case
    dialect: dialects.Dialect = dialects.DEFAULT
    base: Truth | None = None
    _values: dict[str, Any] = field(default_factory=dict)
    _certificates: dict[str, Certificate] = field(default_factory=dict)
    _fast: Any = None
    _unweighted: Any = None
    _grading_memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def tier(self) -> str:
        """``"gold"`` or the fast tier's working precision (:func:`tier_for`)."""
        if "tier" not in self._values:
            self._values["tier"] = tier_for(self.case)
        return self._values["tier"]

    # ------------------------------------------------------------------ inputs

    @property
    @standard_precision
    def probs(self) -> np.ndarray:
        """The probabilities the from-probs functions are called with: the exact softmax of
        the logits, correctly rounded to the case dtype (so exact zeros occur where the
        softmax underflows, as they do in real pipelines); in the fast tier its softmax
        converted by NumPy (through float64: an input, not a graded value)."""
        if "probs" not in self._values and self.base is not None:
            return self.base.probs
        if "probs" not in self._values:
            exact = self.exact("softmax")
            dtype = case_dtype(self.case.dtype)
            if self.tier == "gold":
                self._values["probs"] = ref.round_to(exact, dtype)
            else:  # NumPy's conversion of the fast tier's softmax (through float64)
                self._values["probs"] = np.asarray(exact).astype(np.float64).astype(dtype)
        return self._values["probs"]

    @property
    def tangent(self) -> np.ndarray:
        """The direction of the forward-mode and Hessian-vector products: multiples of
        TANGENT_STEP in [-1, 1] from the case's digest (the same on every machine), 0 at
        non-finite logits, in the case dtype."""
        if "tangent" not in self._values:
            digest = hashlib.sha256(b"tangent:" + self._digest().encode()).digest()
            stream = np.random.PCG64(int.from_bytes(digest[:8], "little"))
            raw = stream.random_raw(self.case.logits.size).reshape(self.case.shape)
            steps = (raw % np.uint64(513)).astype(np.int64) - 256
            v = steps * TANGENT_STEP
            v[~np.isfinite(self.case.logits.astype(np.float64))] = 0.0
            self._values["tangent"] = v.astype(case_dtype(self.case.dtype))
        return self._values["tangent"]

    def arguments(self, function: str) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
        """Positional arrays and options of ``function`` for this case (the adapter call)."""
        case = self.case
        if function in _LOGITS_FUNCTIONS:
            return (case.logits,), {}
        if function in _TARGET_FUNCTIONS:
            return (case.logits, case.target), dict(case.options)
        if function in _PROBS_FUNCTIONS:
            return (self.probs, case.target), {}
        if function in _TANGENT_FUNCTIONS:
            return (case.logits, self.tangent), {}
        if function in _TARGET_TANGENT_FUNCTIONS:
            return (case.logits, case.target, self.tangent), dict(case.options)
        raise ValueError(f"unknown function {function!r}")

    def grading_inputs(self, function: str) -> dict[str, Any]:
        """What grading ``function``'s output takes besides it: ``inputs`` (the logits or
        probabilities), ``target``, ``tangent`` (of a JVP or HVP), ``options``, and the
        ``memo`` where grading keeps what every output on these inputs shares."""
        args, options = self.arguments(function)
        tangent = args[-1] if function in (*_TANGENT_FUNCTIONS, *_TARGET_TANGENT_FUNCTIONS) \
            else None
        target = args[1] if len(args) > 1 and function not in _TANGENT_FUNCTIONS else None
        inputs = args[0]
        if function == "cross_entropy_from_probs" and self.dialect.has("clip-probabilities"):
            inputs = dialects.clip_probabilities(inputs)  # what the log is taken of
        return {"inputs": inputs, "target": target, "tangent": tangent, "options": options,
                "memo": self._grading_memo}

    def finite_rows(self) -> np.ndarray:
        """The rows whose logits hold no NaN and no +inf and some finite entry (the rows
        the invariant checks judge): taken once per case, read-only."""
        if "finite_rows" not in self._values:
            z = self.case.logits
            if z.dtype not in (np.float32, np.float64):  # (the same answers, exactly)
                z = z.astype(np.float64)
            rows = ~np.any(np.isnan(z) | (z == np.inf), axis=1) & np.any(np.isfinite(z),
                                                                        axis=1)
            rows.flags.writeable = False
            self._values["finite_rows"] = rows
        return self._values["finite_rows"]

    def applicable(self, function: str) -> bool:
        """Whether ``function`` is checked on this case at all (not outside the dialect's
        contract either)."""
        key = f"applicable:{function}"
        if key not in self._values:
            self._values[key] = (self._applicable(function)
                                 and self.outside_contract(function) is None)
        return self._values[key]

    def outside_contract(self, function: str) -> str | None:
        """Why this case is outside ``function``'s documented domain under the dialect
        (recorded, not graded), or None."""
        outside = self.outside_rule(function)
        return None if outside is None else (
            f"outside contract ({self.dialect.name}, {outside[0]}): {outside[1]}")

    def outside_rule(self, function: str) -> tuple[str, str] | None:
        """The dialect rule that puts this case outside ``function``'s documented domain,
        and what about the case does: ``(rule key, detail)``; or None."""
        case = self.case
        with_target = function in (*_TARGET_FUNCTIONS, *_PROBS_FUNCTIONS,
                                   *_TARGET_TANGENT_FUNCTIONS)
        if (self.dialect.has("target-distribution") and case.target_kind != "indices"
                and with_target and self._applicable(function)
                and not dialects.distribution_rows(case.target, case.dtype).all()):
            return "target-distribution", "a target row is not a probability distribution"
        if self.dialect.has("two-classes") and case.num_classes == 1 and with_target:
            return "two-classes", "one class (K = 1)"
        return None

    def _applicable(self, function: str) -> bool:
        case = self.case
        if case.num_classes == 0:  # the policy defines logsumexp, softmax, log_softmax only
            return function in ("logsumexp", "softmax", "log_softmax")
        if function == "softmax_jacobian" or function in _TANGENT_FUNCTIONS:
            return case.num_classes <= MAX_JACOBIAN_CLASSES
        if function in _TARGET_TANGENT_FUNCTIONS:  # the gold tier's, like the Jacobian
            return case.num_classes <= MAX_JACOBIAN_CLASSES and not case.target_problems()
        if function in _PROBS_FUNCTIONS:
            # the from-probs route has no options and no ignored rows
            return "ignore_index" not in case.options and not case.target_problems()
        if function in _TARGET_FUNCTIONS:
            return not case.target_problems()
        return True

    # ------------------------------------------------------------------ exact values

    @standard_precision
    def exact(self, function: str) -> Any:
        """The reference output of ``function``: in the gold tier an object array (or a
        scalar) of exact mpf, ``UNDEFINED`` where nothing is graded; in the fast tier a
        ``np.longdouble`` or float64 array (or scalar) within 1e-3 ulp of the case dtype
        (such cases have no ``UNDEFINED``, :func:`tier_for`).

        Cross-entropy rows where the textbook algorithm's own intermediate z_i - max z
        overflows the case dtype while target mass sits there are marked ``UNDEFINED``
        here (recorded, not graded): no implementation working in the dtype can be asked
        for them, and grading must never accuse the textbook algorithm.
        """
        if function not in self._values and self._under_dialect(function):
            self._values[function] = self._dialect_value(function)
        if function not in self._values and self._shares(function):
            return self.base.exact(function)
        if function not in self._values:
            args, options = self.arguments(function) if function != "softmax" else (
                (self.case.logits,), {})
            if self.tier == "gold":
                value = getattr(ref, function)(*args, **options)
            else:
                value = self._fast_value(function, args, options)
            if function in ("cross_entropy", "cross_entropy_jvp"):
                value = self._mask_overflowing_rows(value)
            self._values[function] = value
        return self._values[function]

    def _shares(self, function: str) -> bool:
        """Whether ``function``'s value, certificate and decoding are ``base``'s."""
        return self.base is not None and not self._under_dialect(function)

    def _under_dialect(self, function: str) -> bool:
        """Whether the dialect's rules give ``function`` another value on this case."""
        if function in _ROW_MASS_FUNCTIONS:
            return _row_masses_apply(self.case, self.dialect)
        if function == "cross_entropy_from_probs":
            return self.dialect.has("clip-probabilities")
        return False

    def _dialect_value(self, function: str) -> Any:
        """``function`` under the dialect's rules, from the PyTorch-convention reference of
        a related case (xentcheck.references.dialects)."""
        if function == "cross_entropy_from_probs":  # clip-probabilities
            probs = dialects.clip_probabilities(self.probs)
            if self.tier == "gold":
                return ref.cross_entropy_from_probs(probs, self.case.target)
            return _from_probs(function, probs, self.case.target, self.tier)
        # soft-label-weight: the unweighted rows, each scaled by its weight mass
        masses = _row_masses(self.case)
        return dialects.scale_rows(self.unweighted().exact(function), masses,
                                   self.case.options.get("reduction", "none"))

    def unweighted(self) -> Truth:
        """The truth of this case without its class weight and unreduced, under PyTorch's
        convention (what the soft-label-weight rule scales)."""
        if self._unweighted is None:
            options = {k: v for k, v in self.case.options.items() if k != "weight"}
            options["reduction"] = "none"
            self._unweighted = Truth(dataclasses.replace(self.case, options=options))
            # the same direction as this case's (the tangent is drawn from the digest)
            self._unweighted._values["tangent"] = self.tangent
        return self._unweighted

    def _fast_reference(self) -> Any:
        if self._fast is None:
            self._fast = fast.Reference(self.case.logits, work=self.tier)
        return self._fast

    def _fast_value(self, function: str, args: tuple[np.ndarray, ...],
                    options: dict[str, Any]) -> Any:
        """``function`` from the fast tier, as an object array (or scalar) of its values."""
        if function in _PROBS_FUNCTIONS:
            value = _from_probs(function, args[0], args[1], self.tier)
        elif function in _TARGET_FUNCTIONS:
            value = getattr(self._fast_reference(), function)(args[1], **options)
        else:
            value = getattr(self._fast_reference(), function)()
        return value

    @standard_precision
    def decoded(self, function: str) -> grading.ExactValues:
        """:meth:`exact` decoded once for the vectorized grading of every adapter."""
        key = f"decoded:{function}"
        if key not in self._values and self._shares(function):
            return self.base.decoded(function)
        if key not in self._values:
            self._values[key] = grading.decode(self.exact(function))
        return self._values[key]

    def _mask_overflowing_rows(self, value: Any) -> Any:
        rows = overflowing_rows(self.case)
        if not rows.any():
            return value
        if np.ndim(value) == 0:
            return UNDEFINED
        value = value.copy()
        value[rows] = UNDEFINED
        return value

    # ------------------------------------------------------------------ certificates

    @standard_precision
    def certificate(self, function: str) -> Certificate:
        """The finite-difference certificate of the gold derivative ``function``."""
        if function not in self._certificates and self._shares(function):
            return self.base.certificate(function)
        if function not in self._certificates:
            if function in _ROW_MASS_FUNCTIONS and _row_masses_apply(self.case, self.dialect):
                # scaled rows of a certified derivative (constant factors)
                self._certificates[function] = self.unweighted().certificate(function)
            else:
                self._certificates[function] = self._certify(function)
        return self._certificates[function]

    def _digest(self) -> str:
        """The case's digest (a hash of all its bytes), taken once."""
        if "digest" not in self._values:
            self._values["digest"] = self.case.digest()
        return self._values["digest"]

    def _direction(self, shape: tuple[int, ...]) -> np.ndarray:
        """The certificates' direction: uniform in [-1, 1] from the case's digest (the same
        on every machine), drawn once per shape (read-only: callers copy to change it)."""
        key = f"direction:{shape}"
        if key not in self._values:
            digest = hashlib.sha256(self._digest().encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            # uniform(-1, 1)'s very values (-1 + 2 r, with r = random(): the product by 2
            # is exact), without its per-value calls
            direction = rng.random(size=shape)
            direction *= 2.0
            direction -= 1.0
            direction.flags.writeable = False
            self._values[key] = direction
        return self._values[key]

    def _certify(self, function: str) -> Certificate:
        if self.tier != "gold":
            return self._certify_fast(function)
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
        if function in DIRECTIONAL:
            return self._certify_directional(function)
        raise ValueError(f"{function} is not a derivative")

    def _certify_directional(self, function: str) -> Certificate:
        """A forward-mode or Hessian-vector product is itself a directional derivative:
        of softmax, log_softmax, the per-row losses or the gradient, along the tangent.
        Its gold value ("none" reduction: row by row) is compared with finite
        differences of that gold function along the very tangent."""
        case = self.case
        v = self.tangent.astype(np.float64)
        base = DIRECTIONAL[function]
        if function in _TANGENT_FUNCTIONS:
            value = getattr(ref, function)(case.logits, v)

            def f(z: np.ndarray, rows: np.ndarray) -> Any:
                return getattr(ref, base)(z, prec=mpmath.mp.prec)
        else:
            target = case.target
            options = {**case.options, "reduction": "none"}
            value = getattr(ref, function)(case.logits, target, v, **options)
            if function == "cross_entropy_jvp":
                value = np.asarray(value, dtype=object).reshape(-1, 1)

            def f(z: np.ndarray, rows: np.ndarray) -> Any:
                out = getattr(ref, base)(z, target[rows], **options, prec=mpmath.mp.prec)
                return out if base == "cross_entropy_grad" else np.asarray(
                    out, dtype=object).reshape(-1, 1)
        return _certify_along(function, f, case.logits, value, v, hold_zeros=False,
                              applied=True)


    def _certify_fast(self, function: str) -> Certificate:
        """One direction per row, differences in the tier's working precision: each row's
        loss derivative along its direction against the reference gradient applied to it."""
        case, work = self.case, self.tier
        dtype = np.longdouble if work == "longdouble" else np.float64
        target = case.target
        v = self._direction(case.shape)  # read only
        if function == "cross_entropy_grad":
            options = {**case.options, "reduction": "none"}
            x = np.asarray(case.logits, np.float64).astype(dtype, copy=False)  # read only
            # in float64 the truth's own reference has these very logits and their row
            # sums (in longdouble it reads float64 logits by another route than x's)
            reference = (self._fast_reference() if work == "float64"
                         else fast.Reference(x, work=work))
            derivative = reference.cross_entropy_grad(target, **options)

            def loss(z: np.ndarray) -> np.ndarray:
                return fast.Reference(z, work=work).cross_entropy(target, **options)

            def own_loss() -> np.ndarray:  # the truth's own, from the case's logits
                return self._fast_reference().cross_entropy(target, **options)
        elif function == "cross_entropy_grad_wrt_probs":
            probs = self.probs
            if np.asarray(target).dtype.kind in "iu":
                # class indices: -log p_t reads one entry of each row, and every other
                # entry's terms are zero (no derivative, no loss), so the certificate is
                # taken on those entries alone, as one column: the same steps, points,
                # sums and figures at O(N) cost instead of O(N K)
                each = np.arange(case.num_rows)
                probs, v = probs[each, target][:, None], v[each, target][:, None]
                target = np.zeros_like(target)
            x = np.asarray(probs, np.float64).astype(dtype, copy=False)
            derivative = _from_probs(function, x, target, work)

            def loss(p: np.ndarray) -> np.ndarray:
                return _from_probs("cross_entropy_from_probs", p, target, work)

            def own_loss() -> np.ndarray:
                return loss(x)
        else:
            raise ValueError(f"{function} is not certified in the fast tier")
        v = v.astype(dtype, copy=False)  # (read only where it is the shared direction)
        fused = _certificate_terms(derivative, v, x, function.endswith("probs"))
        if fused is not None:  # nothing held, every entry moving: one pass for the terms
            moving, (terms, moved) = True, fused
        else:
            held = ~np.isfinite(x)
            if function.endswith("probs"):
                held |= x == 0
            if held.any():
                v = v.copy()
                v[held] = 0
            del held
            moving = bool((v != 0).all())  # (then no np.where below: the same values)
            with np.errstate(invalid="ignore"):  # inf * 0 where a row's loss is infinite
                terms = np.asarray(derivative, dtype) * v
                moved = None
        analytic = np.sum(terms, axis=1)
        scale = None
        if function == "cross_entropy_grad_wrt_probs":
            # -y log p varies on the scale of p itself where y has mass: steps below it
            # (entries without mass do not enter the loss, whatever their sign)
            with np.errstate(divide="ignore", invalid="ignore"):
                lengths = np.where((derivative != 0) & (v != 0), x / np.abs(v), np.inf)
            scale = np.minimum(np.min(lengths, axis=1), 1).astype(np.float64)
            scale[~(scale > 0) | ~np.isfinite(scale)] = 1.0
        # what rounding the perturbed points can move each row's loss by, from the
        # derivative under test: a wrong one that is too large only widens the error bar,
        # and a certificate needs a narrow one to hold
        with np.errstate(invalid="ignore"):
            if moved is None:
                moved = derivative * x
                np.abs(moved, out=moved)
            sensitivity = np.sum(moved if moving else np.where(v != 0, moved, 0), axis=1)
        del moved
        # agreement relative to the row's scale: |dL/dt| or, where it is small, the
        # size of the gradient along |v| (what a wrong formula would be off by)
        magnitude = np.maximum(np.abs(analytic), np.sum(np.abs(terms, out=terms), axis=1))
        del terms
        needed = FAST_CERTIFICATE_DIGITS[work]

        def worst_of(estimate: fd.RowEstimate) -> tuple[float, np.ndarray]:
            """The worst row's disagreement relative to its scale, and the rows compared."""
            rows = np.isfinite(analytic) & np.isfinite(estimate.value)
            if not rows.any():
                return math.nan, rows
            diff = np.abs((analytic - estimate.value)[rows]).astype(np.float64)
            scale = magnitude[rows].astype(np.float64)
            resolved = np.maximum(diff, estimate.error[rows])
            with np.errstate(divide="ignore", invalid="ignore"):
                per_row = np.where(diff <= estimate.error[rows], resolved / scale,
                                   diff / scale)
            per_row = np.where(scale == 0, 0.0, per_row)
            return float(np.max(per_row)), rows  # NaN propagates: a certificate then fails

        def holds_already(estimate: fd.RowEstimate) -> bool:
            # a digit to spare: a finer step would not undo it (decided by a comparison,
            # not through a log whose last bit varies by machine)
            return bool(worst_of(estimate)[0] <= 10.0**-(needed + 1))

        estimate = fd.directional_derivative_rows(loss, x, v, scale=scale,
                                                  sensitivity=sensitivity.astype(np.float64),
                                                  enough=holds_already)
        worst, rows = worst_of(estimate)
        # a row the differences could not take is left out only where the truth's own
        # loss is infinite at the point itself (nothing to difference); elsewhere the
        # certificate fails, so that it cannot hold without having compared anything
        lost = np.isfinite(analytic) & ~np.isfinite(estimate.value)
        if lost.any():
            lost &= np.isfinite(np.asarray(own_loss(), np.float64))
            if lost.any():
                return Certificate(function, False, 0.0, int(rows.sum()),
                                   "the finite differences are not finite on "
                                   f"{int(lost.sum())} rows whose loss and derivative are")
        if not rows.any():
            return Certificate(function, True, float("inf"), 0, "no finite rows to certify "
                               "(no row has both a finite loss and a finite derivative)")
        holds = worst <= 10.0**-needed
        digits = math.inf if worst == 0 else -float(portable.log(np.array(worst))) / _LN10
        return Certificate(function, holds, digits, int(rows.sum()),
                           f"{work} differences, one direction per row")


def _certificate_terms(derivative: Any, v: np.ndarray, x: np.ndarray, probs: bool
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """``_certify_fast``'s derivative v and |derivative x| in one compiled pass, for float64
    (N, K) arrays large enough for the compiled loops, where every x is finite (and, for
    ``probs``, not zero) and every v is not zero: the products NumPy's passes give, bit for
    bit. None otherwise (also where an entry is held): NumPy's way."""
    loops = grading.compiled_loops(x.size)
    if (loops is None or x.ndim != 2 or not isinstance(derivative, np.ndarray)
            or not x.dtype == v.dtype == derivative.dtype == np.float64):
        return None
    x, v, d = (np.ascontiguousarray(a) for a in (x, v, derivative))
    terms, moved = np.empty_like(x), np.empty_like(x)
    if not loops.certificate_terms_into(d, v, x, probs, terms, moved):
        return None
    return terms, moved


def _from_probs(function: str, probs: np.ndarray, target: np.ndarray, work: str) -> np.ndarray:
    """The from-probabilities functions in the fast tier's working precision: -sum y log p
    per row (0 log 0 = 0) and its gradient -y / p (0 where y = 0)."""
    dtype = np.longdouble if work == "longdouble" else np.float64
    probs = np.asarray(probs)
    if np.asarray(target).dtype.kind in "iu":
        # one-hot: only the target's entry enters, -log p_t and -1/p_t (the same values
        # as the general sum below, at O(N) logs instead of O(N K)); only those entries
        # are converted
        rows = np.arange(probs.shape[0])
        picked = np.asarray(probs[rows, target], np.float64).astype(dtype, copy=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            if function == "cross_entropy_grad_wrt_probs":
                out = np.zeros(probs.shape, dtype)
                out[rows, target] = -1 / picked
                return out
            return -_log(picked)
    p = np.asarray(probs, np.float64).astype(dtype, copy=False)
    y = np.asarray(target, np.float64).astype(dtype, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        if function == "cross_entropy_grad_wrt_probs":
            return np.where(y == 0, dtype(0), -y / p)
        return -np.sum(np.where(y == 0, dtype(0), y * _log(p)), axis=1)


def _log(p: np.ndarray) -> np.ndarray:
    """log p in p's type (longdouble or float64) from the fast tier's double-double log:
    the same bits on every machine, where NumPy's log changes with the CPU."""
    p64 = np.asarray(p, np.float64)
    usable = np.isfinite(p64) & (p64 > 0)
    hi, lo = fast.log_dd(np.where(usable, p64, 1.0))
    value = hi.astype(p.dtype) + lo.astype(p.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(usable, value, np.where(p64 == 0, -np.inf, np.where(
            p64 == np.inf, np.inf, np.nan))).astype(p.dtype)


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
                   direction: np.ndarray, *, hold_zeros: bool,
                   applied: bool = False) -> Certificate:
    """Compare ``derivative`` applied to ``direction`` with the finite-difference derivative
    of ``f(x_rows, rows)`` along it, over the rows where both are finite. Entries at -inf
    (and, with ``hold_zeros``, exact zeros: probabilities cannot go negative) stay fixed.
    With ``applied`` the derivative is already the directional one (a JVP, an HVP: one
    value per output element of ``f``), compared element by element."""
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

    estimate = fd.directional_derivative(along, point, v, digits=FD_DIGITS, step_bits=STEP_BITS)
    k = v.shape[1]
    with mpmath.workprec(256):
        if applied:  # the directional derivative itself, per output element
            analytic = [a for n in rows for a in np.ravel(derivative[n])]
            pairs = zip(analytic, np.ravel(estimate.value), np.ravel(estimate.error),
                        strict=True)
        elif function == "softmax_jacobian":  # J v for every row: K values per row
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
