"""Tests of xentcheck.harness.grading: the rule that keeps grading honest, and the
grading machinery.

1. The textbook shifted algorithm (written below in NumPy: float64 and float32 natively,
   float16 and bfloat16 computing in float32 and rounding once) passes ``standard`` on
   hypothesis-generated inputs of every kind, for every graded function and option.
2. Planted errors fail: the normaliser added to a huge logit before subtracting, float32
   arithmetic for float64 inputs, half-precision accumulation, p - y for sum(y) != 1,
   log(softmax) where p underflows, NaN where a finite value is right, a 2-ulp error
   under ``strict`` with N = 1.
3. Hand-made grades (0.5 vs 0.51 ulp, inf/NaN/UNDEFINED conventions), rows per grade, the
   worst element, profiles and accuracy budgets.
4. Exact values decoded once (``grading.decode``) grade every candidate exactly as the
   object arrays do, and float arrays (the fast tier's longdouble) are read as exact.

Exact values come from ``references`` (mpmath at its default 192 bits).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import hypothesis
import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xentcheck.references as gold
from xentcheck.harness import grading
from xentcheck.harness.adapters import contract
from xentcheck.harness.adapters.contract import FUNCTIONS, case_dtype
from xentcheck.harness.grading import (
    GRADES,
    STANDARD,
    STRICT,
    Budget,
    BudgetError,
    grade_elements,
    judge,
    load_budgets,
    profile,
    summarize,
)
from xentcheck.references import portable
from xentcheck.references.fast import jit
from xentcheck.references.gold import UNDEFINED
from xentcheck.references.rounding import CHUNK_ELEMENTS

DTYPES: dict[str, np.dtype] = {name: case_dtype(name) for name in contract.DTYPES}
HALF = ("float16", "bfloat16")
PROBS_FUNCTIONS = ("cross_entropy_from_probs", "cross_entropy_grad_wrt_probs")
TANGENT_FUNCTIONS = ("softmax_jvp", "log_softmax_jvp")
CE_TANGENT_FUNCTIONS = ("cross_entropy_jvp", "cross_entropy_hvp")
LOGITS_ONLY = ("logsumexp", "softmax", "log_softmax", "softmax_jacobian")


# -- the textbook shifted algorithm ------------------------------------------------------


def working(dtype: str) -> np.dtype:
    """float16 and bfloat16 compute in float32 (as PyTorch and JAX do), the others natively."""
    return np.dtype(np.float32) if dtype in HALF else DTYPES[dtype]


def effective_target(target: np.ndarray, options: Mapping[str, Any], n: int, k: int,
                     work: np.dtype) -> tuple[np.ndarray, Any, np.ndarray]:
    """u in the working format (PyTorch's formulas), the mean's divisor, ignored rows."""
    weight = options.get("weight")
    w = np.ones(k, work) if weight is None else np.asarray(weight).astype(work)
    eps = work.type(options.get("label_smoothing") or 0.0)
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        ignore_index = options.get("ignore_index")
        ignored = t == ignore_index if ignore_index is not None else np.zeros(n, bool)
        safe = np.where(ignored, 0, t)
        u = np.broadcast_to(eps * w / k, (n, k)).copy() if eps else np.zeros((n, k), work)
        u[np.arange(n), safe] += (1 - eps) * w[safe]
        u[ignored] = 0
        den = w[safe][~ignored].sum() if weight is not None else work.type((~ignored).sum())
        return u, den, ignored
    y = t.astype(work)
    u = w * ((1 - eps) * y + eps / k) if eps else w * y
    return u, work.type(n), np.zeros(n, bool)


def textbook(function: str, inputs: np.ndarray, target: Any = None,
             options: Mapping[str, Any] | None = None,
             tangent: np.ndarray | None = None) -> np.ndarray:
    """The textbook shifted algorithm of every contract function, in ``inputs``' dtype.

    m = max z; d = z - m; s = sum exp(d); lse = m + log s; p = exp(d) / s;
    log p = d - log s; L = -sum u log p; dL/dz = (sum u) p - u; J = diag(p) - p p^T;
    from probabilities -sum y log yhat and -y / yhat; along a tangent v, with
    s = <p, v>: v - s, p (v - s), -sum u (v - s) and (sum u) p (v - s). Computed in
    ``working(dtype)``, rounded once to the dtype.
    """
    options = options or {}
    dtype = DTYPES[np.dtype(inputs.dtype).name]
    work = working(np.dtype(inputs.dtype).name)
    x = inputs.astype(work)
    n, k = x.shape
    reduction = options.get("reduction") or "none"
    with np.errstate(all="ignore"):
        if function in PROBS_FUNCTIONS:
            y, _, _ = effective_target(target, {}, n, k, work)
            if function == "cross_entropy_from_probs":
                log_x = np.log(x)  # 0 log 0 = 0; NaN stays NaN
                value = -(y * np.where((y == 0) & (log_x == -np.inf), 0, log_x)).sum(axis=1)
            else:
                value = np.where(y == 0, 0, -y / x)
            return value.astype(dtype)
        m = x.max(axis=1, keepdims=True)
        d = x - m
        e = np.exp(d)
        s = e.sum(axis=1, keepdims=True)
        p = e / s
        if function == "logsumexp":
            value = (m + np.log(s))[:, 0]
        elif function == "softmax":
            value = p
        elif function == "log_softmax":
            value = d - np.log(s)
        elif function == "softmax_jacobian":
            value = -p[:, :, None] * p[:, None, :]
            index = np.arange(k)
            value[:, index, index] = p - p * p
        elif function in TANGENT_FUNCTIONS or function in CE_TANGENT_FUNCTIONS:
            v = np.asarray(tangent).astype(work)
            centred = v - np.where(p == 0, 0, p * v).sum(axis=1, keepdims=True)
            if function == "log_softmax_jvp":
                value = centred
            elif function == "softmax_jvp":
                value = np.where(p == 0, 0, p * centred)
            else:
                u, den, ignored = effective_target(target, options, n, k, work)
                if function == "cross_entropy_jvp":
                    value = -(u * centred).sum(axis=1)
                    value[ignored] = 0
                    if reduction != "none":
                        value = value.sum()
                        value = value / den if reduction == "mean" else value
                else:
                    value = u.sum(axis=1, keepdims=True) * np.where(p == 0, 0, p * centred)
                    value[ignored] = 0
                    if reduction == "mean":
                        value = value / den if den != 0 else np.zeros_like(value)
        else:
            u, den, ignored = effective_target(target, options, n, k, work)
            if function == "cross_entropy":
                log_p = d - np.log(s)  # 0 log 0 = 0 at -inf logits; NaN rows stay NaN
                value = -(u * np.where((u == 0) & (log_p == -np.inf), 0, log_p)).sum(axis=1)
                value[ignored] = 0
                if reduction != "none":
                    value = value.sum()
                    value = value / den if reduction == "mean" else value
            else:
                value = u.sum(axis=1, keepdims=True) * p - u
                value[ignored] = 0
                if reduction == "mean":
                    value = value / den if den != 0 else np.zeros_like(value)
        return np.asarray(value).astype(dtype)


# -- cases -----------------------------------------------------------------------------


class Case(NamedTuple):
    inputs: np.ndarray  # logits (or probabilities for the from-probs functions), (N, K)
    target: Any  # int64 (N,) or (N, K) of the dtype
    options: dict[str, Any]
    regime: str
    tangent: np.ndarray | None = None  # of the JVPs and the HVP

    def describe(self) -> str:
        return (f"regime={self.regime} shape={self.inputs.shape} "
                f"target={'index' if np.asarray(self.target).dtype.kind == 'i' else 'probs'} "
                f"options={ {k: v for k, v in self.options.items() if k != 'weight'} } "
                f"weight={'weight' in self.options}")


REGIMES = ("moderate", "large-offset", "large-spread", "dominant", "ties", "masked",
           "tiny-spread", "nonfinite")

#: Logit magnitudes of the large regimes, per dtype (float16's range ends at 65504).
LARGE = {
    "float64": (1e2, 1e4, 1e8, 1e30, 1e300),
    "float32": (1e2, 1e4, 1e8, 1e30),
    "bfloat16": (1e2, 1e4, 1e8, 1e30),
    "float16": (1e2, 1e3, 1e4),
}


def make_logits(regime: str, rng: np.random.Generator, n: int, k: int, scale: float,
                dtype: str) -> np.ndarray:
    """Logits of a regime, rounded to ``dtype`` (rows keep at least one finite entry)."""
    if regime == "moderate":
        z = rng.normal(0.0, rng.choice([0.3, 1.0, 3.0, 10.0]), (n, k))
    elif regime == "large-offset":
        z = rng.choice([-1.0, 1.0]) * scale + rng.normal(0.0, 3.0, (n, k))
    elif regime == "large-spread":
        z = rng.normal(0.0, scale, (n, k))
    elif regime == "dominant":
        z = rng.normal(0.0, 1.0, (n, k))
        z[np.arange(n), rng.integers(0, k, n)] += rng.choice([20.0, 40.0, 100.0, 800.0])
    elif regime == "ties":
        z = rng.choice(rng.normal(0.0, 2.0, 3), (n, k))
    elif regime == "masked":
        z = rng.normal(0.0, 2.0, (n, k))
        z[rng.random((n, k)) < rng.choice([0.3, 0.9])] = -np.inf
        if k >= 8:  # a causal-mask tile: a long run of -inf
            start = rng.integers(0, k)
            z[:, start:] = -np.inf
        keep = rng.integers(0, k, n)
        z[np.arange(n), keep] = rng.normal(0.0, 2.0, n)
    elif regime == "tiny-spread":
        z = scale * (1 + rng.normal(0.0, 1e-6, (n, k)))
    else:  # nonfinite: NaN and +inf in some rows (NaN graded, +inf rows not graded)
        z = rng.normal(0.0, 2.0, (n, k))
        z[rng.random((n, k)) < 0.1] = rng.choice([np.nan, np.inf, -np.inf])
    limit = float(ml_dtypes.finfo(DTYPES[dtype]).max) / 4
    with np.errstate(invalid="ignore"):
        z = np.where(np.isfinite(z), np.clip(z, -limit, limit), z)
    return z.astype(DTYPES[dtype])


def make_target(kind: str, rng: np.random.Generator, n: int, k: int, dtype: str) -> Any:
    if kind == "index":
        return rng.integers(0, k, n).astype(np.int64)
    if kind == "onehot":
        y = np.zeros((n, k))
        y[np.arange(n), rng.integers(0, k, n)] = 1.0
    elif kind == "soft":
        y = rng.dirichlet(np.full(k, 0.5), n)
    elif kind == "unnormalized":
        y = rng.dirichlet(np.full(k, 0.5), n) * rng.uniform(0.0, 3.0, (n, 1))
    elif kind == "sparse":
        y = rng.random((n, k)) * (rng.random((n, k)) < 0.2)
    else:
        y = np.zeros((n, k))
    return y.astype(DTYPES[dtype])


@st.composite
def cases(draw: st.DrawFn, function: str, dtype: str) -> Case:
    """Inputs, target and options for ``function`` in ``dtype``; K from 1 to 1000."""
    k = draw(st.one_of(st.integers(1, 8), st.integers(9, 100), st.integers(101, 1000)))
    if function == "softmax_jacobian" or function in TANGENT_FUNCTIONS + CE_TANGENT_FUNCTIONS:
        k = min(k, 48)  # K^2 outputs per row, or K^2 gold terms
    n = draw(st.integers(1, 3)) if k <= 100 else 1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    target_kind = draw(st.sampled_from(
        ["index", "onehot", "soft", "unnormalized", "sparse", "zero"]))
    if function in PROBS_FUNCTIONS:
        regime = draw(st.sampled_from(["dirichlet", "with-zeros", "tiny"]))
        probs = rng.dirichlet(np.full(k, draw(st.sampled_from([0.05, 0.5, 5.0]))), n)
        if regime == "with-zeros":
            probs[rng.random((n, k)) < 0.3] = 0.0
        elif regime == "tiny":
            probs *= 10.0 ** -draw(st.integers(0, 300 if dtype == "float64" else 30))
        return Case(probs.astype(DTYPES[dtype]), make_target(target_kind, rng, n, k, dtype),
                    {}, regime)
    regime = draw(st.sampled_from(REGIMES))
    scale = draw(st.sampled_from(LARGE[dtype]))
    logits = make_logits(regime, rng, n, k, scale, dtype)
    options: dict[str, Any] = {}
    tangent = make_tangent(rng, logits) if function in (
        *TANGENT_FUNCTIONS, *CE_TANGENT_FUNCTIONS) else None
    if function in ("cross_entropy", "cross_entropy_grad", *CE_TANGENT_FUNCTIONS):
        smoothing = draw(st.sampled_from([0.0, 0.0, 0.1, 0.25, 0.9]))
        if smoothing:
            options["label_smoothing"] = smoothing
        if draw(st.booleans()):
            options["weight"] = rng.uniform(0.1, 3.0, k).astype(DTYPES[dtype])
        options["reduction"] = draw(st.sampled_from(["none", "sum", "mean"]))
        if target_kind == "index" and draw(st.booleans()):
            options["ignore_index"] = -100
            target = make_target("index", rng, n, k, dtype)
            target[rng.random(n) < 0.4] = -100
            return Case(logits, target, options, regime, tangent)
    else:
        target_kind = "index"
    return Case(logits, make_target(target_kind, rng, n, k, dtype), options, regime, tangent)


def make_tangent(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """Multiples of 2**-8 in [-1, 1] (exact in every dtype), 0 at non-finite logits."""
    v = rng.integers(-256, 257, logits.shape) / 256
    v[~np.isfinite(logits.astype(np.float64))] = 0.0
    return v.astype(logits.dtype)


def exact_values(function: str, case: Case) -> Any:
    fn = getattr(gold, function)
    if function in LOGITS_ONLY:
        return fn(case.inputs)
    if function in TANGENT_FUNCTIONS:
        return fn(case.inputs, case.tangent)
    if function in CE_TANGENT_FUNCTIONS:
        return fn(case.inputs, case.target, case.tangent, **case.options)
    return fn(case.inputs, case.target, **case.options)


def grade(function: str, case: Case, candidate: Any, exact: Any = None,
          **kwargs: Any) -> grading.ElementGrades:
    exact = exact_values(function, case) if exact is None else exact
    target = None if function in TANGENT_FUNCTIONS else case.target
    return grade_elements(function, np.asarray(candidate), exact, inputs=case.inputs,
                          target=target, options=case.options, tangent=case.tangent,
                          **kwargs)


def worst_ratio(grades: grading.ElementGrades) -> float:
    """The largest stability ratio over graded elements that are not broken (0 if none)."""
    mask = grades.graded & ~grades.broken
    return float(np.max(grades.ratio[mask])) if mask.any() else 0.0


def failure_message(function: str, case: Case, candidate: np.ndarray, exact: Any,
                    verdict: grading.Verdict) -> str:
    """What failed, where, by how much, and a reproducer (inputs as hex floats)."""
    result = verdict.result
    index = result.worst_index
    exact_arr = np.asarray(exact, dtype=object)
    got = np.asarray(candidate)[index] if index is not None else None
    want = exact_arr[index] if index is not None else None
    row = index[0] if index and np.ndim(candidate) > 0 and case.inputs.ndim == 2 else 0
    inputs = case.inputs[row] if case.inputs.ndim == 2 and case.inputs.shape[0] else case.inputs
    hexes = ", ".join(float(v).hex() for v in np.asarray(inputs, np.float64).ravel()[:16])
    more = " ..." if np.size(inputs) > 16 else ""
    return (
        f"{function} [{np.dtype(case.inputs.dtype).name}] {case.describe()}: grade "
        f"{result.grade} fails {verdict.profile}; worst element {index}: got "
        f"{float(got) if got is not None else None!r}, should be "
        f"{mpmath.nstr(want, 20) if want is not None else None}, {result.worst_ulp:.4g} ulp, "
        f"ratio {result.worst_ratio:.4g} (allowed {result.worst_allowed:.4g} ulp); "
        f"grades {result.grades}\n  row {row} inputs: [{hexes}{more}]\n"
        f"  reproduce: textbook({function!r}, case.inputs, case.target, case.options)"
    )


# -- 1. the textbook algorithm passes ----------------------------------------------------

#: ``standard`` with N = 1: whatever is not faithful must be within the stability bound.
#: Stricter than the rule (N = 4), so a bound too small shows even where errors are small.
WITHIN_BOUND = profile("standard", ulp_budget=1)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("function", FUNCTIONS)
@settings(deadline=None, max_examples=20,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_textbook_shifted_algorithm_passes_standard(function: str, dtype: str,
                                                    data: st.DataObject) -> None:
    case = data.draw(cases(function, dtype), label="case")
    candidate = textbook(function, case.inputs, case.target, case.options, case.tangent)
    exact = exact_values(function, case)
    grades = grade(function, case, candidate, exact)
    hypothesis.target(worst_ratio(grades), label="worst stability ratio")
    verdict = judge(grades, WITHIN_BOUND)
    assert verdict.passed, failure_message(function, case, candidate, exact, verdict)
    assert judge(grades, STANDARD).passed


def test_textbook_in_half_precision_rounds_once_to_within_one_ulp() -> None:
    """float16/bfloat16 outputs of the float32 textbook are graded against the half dtype:
    at most the final rounding plus float32 noise."""
    rng = np.random.default_rng(7)
    for dtype in HALF:
        z = rng.normal(0.0, 3.0, (4, 300)).astype(DTYPES[dtype])
        case = Case(z, None, {}, "moderate")
        result = summarize(grade("softmax", case, textbook("softmax", z)))
        assert result.grade in ("exact", "faithful"), (dtype, result)


# -- 2. planted errors fail ----------------------------------------------------------------


def assert_grade(function: str, case: Case, candidate: np.ndarray, expected: str,
                 policy: grading.Profile = STANDARD) -> grading.Verdict:
    __tracebackhide__ = True
    exact = exact_values(function, case)
    verdict = judge(grade(function, case, candidate, exact), policy)
    assert verdict.result.grade == expected, failure_message(
        function, case, candidate, exact, verdict)
    assert not verdict.passed
    return verdict


def test_normaliser_added_to_a_huge_logit_is_unstable() -> None:
    """log_softmax as z - (m + log s) at |z| ~ 1e8 loses u |m|; the textbook does not."""
    z = 1e8 + np.random.default_rng(3).normal(0.0, 2.0, (4, 16))
    case = Case(z, None, {}, "large-offset")
    with np.errstate(all="ignore"):
        m = z.max(axis=1, keepdims=True)
        lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    assert_grade("log_softmax", case, z - lse, "unstable")
    assert judge(grade("log_softmax", case, textbook("log_softmax", z)), STANDARD).passed


@pytest.mark.parametrize("function", ["logsumexp", "softmax", "log_softmax", "cross_entropy",
                                      "cross_entropy_grad", "softmax_jacobian"])
def test_float32_arithmetic_for_float64_inputs_is_unstable(function: str) -> None:
    rng = np.random.default_rng(5)
    z = rng.normal(0.0, 3.0, (4, 16))
    case = Case(z, rng.integers(0, 16, 4), {}, "moderate")
    candidate = textbook(function, z.astype(np.float32), case.target).astype(np.float64)
    assert_grade(function, case, candidate, "unstable")


def half_accumulating(function: str, z: np.ndarray) -> np.ndarray:
    """softmax / logsumexp with every operation, and the running sum, in float16."""
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = np.zeros((z.shape[0], 1), np.float16)
    for k in range(z.shape[1]):
        s = (s + e[:, k:k + 1]).astype(np.float16)
    return e / s if function == "softmax" else (m + np.log(s))[:, 0]


@pytest.mark.parametrize("k", [64, 256, 1000])
@pytest.mark.parametrize("function", ["softmax", "logsumexp"])
def test_float16_accumulation_is_unstable(function: str, k: int) -> None:
    """Logits centred so that lse ~ 0: the output's own ulp is then fine enough to see the
    sum's half-precision error (at |lse| >> 1 it is within a few ulps of the output: ulp≤N)."""
    z = (np.random.default_rng(k).normal(0.0, 1.0, (8, k)) - np.log(k)).astype(np.float16)
    case = Case(z, None, {}, "moderate")
    assert_grade(function, case, half_accumulating(function, z), "unstable")


def test_p_minus_y_for_unnormalized_targets_is_unstable() -> None:
    rng = np.random.default_rng(11)
    z = rng.normal(0.0, 1.0, (4, 8))
    y = rng.dirichlet(np.ones(8), 4) * np.array([[2.0], [0.5], [1.5], [3.0]])
    case = Case(z, y, {}, "moderate")
    assert_grade("cross_entropy_grad", case, textbook("softmax", z) - y, "unstable")
    assert judge(grade("cross_entropy_grad", case, textbook("cross_entropy_grad", z, y)),
                 STANDARD).passed


def test_log_of_underflowed_softmax_is_broken() -> None:
    z = np.array([[0.0, -800.0, -1.0]])
    case = Case(z, None, {}, "large-spread")
    with np.errstate(divide="ignore"):
        candidate = np.log(textbook("softmax", z))
    verdict = assert_grade("log_softmax", case, candidate, "broken")
    assert verdict.result.worst_index == (0, 1)
    assert verdict.result.broken_elements == 1
    assert verdict.result.max_ratio < 1  # the finite elements are fine; the -inf is broken


def test_unshifted_exp_overflow_is_broken() -> None:
    z = np.array([[1000.0, 0.0, -1.0], [1.0, 0.0, -1.0]])
    case = Case(z, None, {}, "overflow-edge")
    with np.errstate(all="ignore"):
        e = np.exp(z)
        candidate = e / e.sum(axis=1, keepdims=True)  # inf / inf = NaN in row 0
    verdict = assert_grade("softmax", case, candidate, "broken")
    assert verdict.result.grades["broken"] == 1 and verdict.result.worst_index == (0, 0)


def test_nan_where_finite_is_broken_not_a_huge_ratio() -> None:
    z = np.array([[0.0, 1.0, -np.inf], [2.0, 2.0, 2.0]])
    case = Case(z, np.array([0, 1]), {}, "masked")
    candidate = gold.round_to(exact_values("cross_entropy_grad", case), "float64")
    candidate[0, 2] = np.nan  # the NaN gradient at a -inf logit
    grades = grade("cross_entropy_grad", case, candidate)
    assert grades.broken[0, 2] and np.isinf(grades.ratio[0, 2])
    verdict = assert_grade("cross_entropy_grad", case, candidate, "broken")
    assert verdict.result.grades == {"exact": 1, "broken": 1}


def test_two_ulps_off_passes_standard_but_not_strict_with_one_ulp() -> None:
    z = np.random.default_rng(2).normal(0.0, 1.0, (3, 5))
    case = Case(z, None, {}, "moderate")
    exact = gold.softmax(z)
    candidate = gold.round_to(exact, "float64")
    candidate = np.nextafter(np.nextafter(candidate, 2.0), 2.0)  # every element 2 ulps up
    grades = grade("softmax", case, candidate, exact)
    assert 1.5 <= summarize(grades).max_ulp <= 2.5
    assert judge(grades, STANDARD).passed
    assert judge(grades, STRICT).passed  # N = 4
    verdict = judge(grades, profile("strict", ulp_budget=1))
    assert not verdict.passed and verdict.failed == 3
    assert verdict.result.grade == "stable"  # under N = 1 the 2-ulp rows are "stable"


def test_masked_logits_do_not_widen_the_bound() -> None:
    """-inf entries give exact zeros; max - min over the finite logits only, so a 1e-12
    relative error in p stays unstable next to a masked entry."""
    z = np.array([[0.0, 1.0, -np.inf, -np.inf]])
    case = Case(z, None, {}, "masked")
    grades = grade("softmax", case, textbook("softmax", z))
    assert np.all(np.isfinite(grades.allowed))
    candidate = textbook("softmax", z) * np.array([1 + 1e-12, 1.0, 1.0, 1.0])
    assert_grade("softmax", case, candidate, "unstable")
    candidate = textbook("softmax", z) + np.array([0.0, 0.0, 1e-300, 0.0])  # not exactly 0
    assert_grade("softmax", case, candidate, "unstable")


def test_log_softmax_bound_has_no_max_term_but_logsumexp_has() -> None:
    z = np.array([[0.0, -1.0, -2.5, -40.0]])
    shifted = z + 2.0**26  # exact: the same d = z - m
    a = grade("log_softmax", Case(z, None, {}, "m"), textbook("log_softmax", z))
    b = grade("log_softmax", Case(shifted, None, {}, "m"), textbook("log_softmax", shifted))
    np.testing.assert_array_equal(a.allowed, b.allowed)
    a = grade("logsumexp", Case(z, None, {}, "m"), textbook("logsumexp", z))
    b = grade("logsumexp", Case(shifted, None, {}, "m"), textbook("logsumexp", shifted))
    # in ulps of lse: ~ |lse| / ulp(lse) at the shift, ~ (n + 2 kappa) / ulp(lse) at 0
    assert 0.25 <= b.allowed[0] <= 4 and a.allowed[0] > 10


# -- 3. hand-made grades -------------------------------------------------------------------


def dyadic(man: int, exp: int) -> mpmath.mpf:
    """The exact mpf man * 2**exp."""
    return mpmath.mpf((man, exp), prec=0)


def grade_exact(candidate: list[float], exact: list[Any], dtype: str = "float64",
                **kwargs: Any) -> grading.ElementGrades:
    """Grade a row against hand-made exact values (function -y/yhat: bound u |x|)."""
    cand = np.array([candidate], dtype=DTYPES[dtype])
    exact_arr = np.empty(cand.shape, dtype=object)
    exact_arr[0, :] = exact
    ones = np.ones(cand.shape, DTYPES[dtype])
    return grade_elements("cross_entropy_grad_wrt_probs", cand, exact_arr, inputs=ones,
                          target=ones, **kwargs)


def test_half_an_ulp_is_exact_and_a_bit_more_is_faithful() -> None:
    # 1 + 0.5 * 2**-52 and 1 + 0.51 * 2**-52 (0.51 = 51/100 -> 2**-52 * 51 / 100, exact
    # as the mpf below at 200 bits); candidate 1.0.
    with mpmath.workprec(200):
        above = 1 + mpmath.mpf(51) / 100 * mpmath.ldexp(1, -52)
    grades = grade_exact([1.0, 1.0, 1.0], [dyadic(2**53 + 1, -53), above, dyadic(5, -2)])
    np.testing.assert_allclose(grades.ulp, [[0.5, 0.51, 2.0**50]], rtol=1e-12)
    assert [GRADES[c] for c in grades.codes[0]] == ["exact", "faithful", "unstable"]


def test_classify_thresholds() -> None:
    ulp = np.array([0.0, 0.5, 0.500001, 1.0, 1.01, 4.0, 4.01, 4.01, 1e9, 1.0])
    ratio = np.array([0.0, 9, 9, 9, 9, 9, 1.0, 1.0001, np.inf, 9])
    broken = np.array([False] * 8 + [True, False])
    graded = np.array([True] * 9 + [False])
    codes = grading.classify(ulp, ratio, broken, graded)
    assert [GRADES[c] if c >= 0 else None for c in codes] == [
        "exact", "exact", "faithful", "faithful", "ulp≤N", "ulp≤N", "stable", "unstable",
        "broken", None]
    assert GRADES[grading.classify(ulp, ratio, broken, graded, ulp_budget=1)[4]] == "unstable"
    with pytest.raises(ValueError, match="at least 1"):
        grading.classify(ulp, ratio, broken, graded, ulp_budget=0.5)


def test_inf_nan_and_undefined_conventions() -> None:
    inf, nan = mpmath.mpf("inf"), mpmath.mpf("nan")
    cases_ = [  # (candidate, exact, grade or None when not graded)
        (np.inf, inf, "exact"),
        (-np.inf, -inf, "exact"),
        (np.nan, nan, "exact"),
        (3.0, UNDEFINED, None),
        (np.nan, UNDEFINED, None),
        (np.nan, mpmath.mpf(1), "broken"),  # non-finite where finite is right
        (np.inf, mpmath.mpf(1), "broken"),
        (1.0, inf, "broken"),  # finite where inf is right
        (-np.inf, inf, "broken"),  # the other infinity
        (5.0, nan, "broken"),  # finite where NaN is right
        (np.inf, mpmath.mpf(70000), "exact"),  # float16: 70000 rounds to inf
        (65504.0, mpmath.mpf(70000), "unstable"),  # finite, 8 ulps of 32 below
    ]
    grades = grade_exact([c for c, _, _ in cases_], [x for _, x, _ in cases_], "float16")
    got = [GRADES[c] if c >= 0 else None for c in grades.codes[0]]
    assert got == [g for _, _, g in cases_]
    assert np.isnan(grades.ulp[0, 3]) and np.isnan(grades.ratio[0, 3])
    assert np.all(np.isinf(grades.ratio[grades.broken]))
    result = summarize(grades)
    assert result.grade == "broken" and result.rows == 1 and result.broken_elements == 5
    assert result.worst_index == (0, 5)  # the first broken element


def test_finite_errors_too_large_for_ulps_are_unstable_not_broken() -> None:
    """Exact 0 and a finite candidate: |c - x| / ulp(0) overflows float64, yet it is an
    accuracy failure (unstable), and 1e-300 where 1e-16 is allowed is stable."""
    z = np.array([[0.0, 0.0]])
    y = np.array([[0.5, 0.5]])  # gradient exactly 0 = S p - y
    case = Case(z, y, {}, "ties")
    grades = grade("cross_entropy_grad", case, np.array([[1e-5, -1e-5]]))
    assert not grades.broken.any() and np.isinf(grades.ulp).all()
    assert [GRADES[c] for c in grades.codes[0]] == ["unstable", "unstable"]
    assert 1e9 < grades.ratio[0, 0] < 1e13  # 1e-5 / (u (n + 2 kappa + ...))
    grades = grade("cross_entropy_grad", case, np.array([[1e-300, -1e-300]]))
    assert [GRADES[c] for c in grades.codes[0]] == ["stable", "stable"]


def test_rows_per_grade_and_worst_index() -> None:
    z = np.random.default_rng(4).normal(0.0, 1.0, (4, 5))
    z[3] = -np.inf  # all -inf: UNDEFINED, not graded
    case = Case(z, None, {}, "moderate")
    exact = gold.softmax(z)
    with np.errstate(invalid="ignore"):
        candidate = gold.round_to(exact, "float64")

    def ulps_up(value: float, count: int) -> float:
        for _ in range(count):
            value = np.nextafter(value, 2.0)
        return value

    candidate[1, 2] = ulps_up(candidate[1, 2], 2)
    candidate[1, 3] = ulps_up(candidate[1, 3], 3)  # row 1: worst is ulp≤N at (1, 3)
    candidate[2, 0] *= 1 + 1e-9  # unstable
    candidate[2, 4] = np.nan  # broken, the worst of all
    grades = grade("softmax", case, candidate, exact)
    result = summarize(grades)
    assert result.grades == {"exact": 1, "ulp≤N": 1, "broken": 1}
    assert (result.rows, result.ungraded) == (3, 1)
    assert result.grade == "broken" and result.worst_index == (2, 4)
    assert 1e6 < result.max_ulp < 1e8  # the unstable element; broken ones are left out
    candidate[2, 4] = gold.round_to(exact[2, 4], "float64")
    result = summarize(grade("softmax", case, candidate, exact))
    assert result.grade == "unstable" and result.worst_index == (2, 0)
    assert result.worst_ratio == result.max_ratio > 1
    candidate[2, 0] = gold.round_to(exact[2, 0], "float64")
    result = summarize(grade("softmax", case, candidate, exact))
    assert result.grade == "ulp≤N" and result.worst_index == (1, 3)
    assert 2.5 <= result.worst_ulp <= 3.5
    assert result.failed(STANDARD) == 0 and result.failed(STRICT) == 0
    by_column = summarize(grade("softmax", case, candidate, exact), rows_axis=1)
    assert by_column.rows == 5 and by_column.grades["ulp≤N"] == 2


def test_rows_of_jacobians_reductions_and_plus_inf() -> None:
    z = np.array([[0.0, 1.0, 2.0], [1.0, np.inf, 0.0]])  # +inf row: recorded, not graded
    case = Case(z, np.array([0, 2]), {"reduction": "sum"}, "nonfinite")
    jac = summarize(grade("softmax_jacobian", case, textbook("softmax_jacobian", z)))
    assert (jac.rows, jac.ungraded) == (1, 1) and STRICT.passes(jac.grade)
    loss = summarize(grade("cross_entropy", case, textbook("cross_entropy", z, case.target,
                                                           case.options)))
    assert (loss.rows, loss.ungraded, loss.grade) == (0, 1, None)  # a sum over the +inf row
    finite = Case(z[:1], case.target[:1], {"reduction": "mean"}, "moderate")
    loss = summarize(grade("cross_entropy", finite, textbook("cross_entropy", finite.inputs,
                                                             finite.target, finite.options)))
    assert (loss.rows, loss.ungraded) == (1, 0) and loss.grade in ("exact", "faithful")


def test_all_minus_inf_rows_are_not_graded() -> None:
    """DESIGN.md §4: an all -inf row is undefined (gold's logsumexp says -inf, the limit;
    the shifted algorithm says NaN); recorded, not graded, for every logit function."""
    z = np.array([[-np.inf, -np.inf], [0.0, 1.0]])
    case = Case(z, np.array([0, 1]), {}, "masked")
    for function in ("logsumexp", "softmax", "cross_entropy_grad"):
        result = summarize(grade(function, case, textbook(function, z, case.target)))
        assert (result.rows, result.ungraded) == (1, 1) and STANDARD.passes(result.grade)


def test_empty_and_broken_results() -> None:
    z = np.zeros((0, 4))
    result = summarize(grade("softmax", Case(z, None, {}, "empty"), np.zeros((0, 4))))
    assert (result.grade, result.rows, result.grades) == (None, 0, {})
    assert judge(grade("softmax", Case(z, None, {}, "empty"), np.zeros((0, 4))),
                 STRICT).passed
    broken = grading.broken_result(4)
    assert broken.grade == "broken" and broken.failed(STANDARD) == 4
    json.dumps(broken.to_dict())


def test_candidate_dtype_and_shape_must_match() -> None:
    z = np.zeros((1, 3))
    exact = gold.softmax(z)
    with pytest.raises(ValueError, match="dtype"):
        grade_elements("softmax", np.zeros((1, 3), np.float32), exact, inputs=z,
                       dtype="float64")
    with pytest.raises(ValueError, match="shape"):
        grade_elements("softmax", np.zeros((3,)), exact, inputs=z)
    with pytest.raises(ValueError, match="unknown function"):
        grade_elements("softplus", np.zeros((1, 3)), exact, inputs=z)


# -- profiles --------------------------------------------------------------------------


def test_profiles() -> None:
    assert [g for g in GRADES if STANDARD.passes(g)] == ["exact", "faithful", "ulp≤N", "stable"]
    assert [g for g in GRADES if STRICT.passes(g)] == ["exact", "faithful", "ulp≤N"]
    assert STANDARD.passes(None)
    assert profile("standard") is STANDARD and profile("strict").ulp_budget == 4
    assert profile("strict", ulp_budget=1) == grading.Profile("strict", "ulp≤N", 1.0)
    assert grading.grade_label("ulp≤N", 1) == "ulp≤1"
    with pytest.raises(ValueError, match="unknown profile"):
        profile("lenient")
    with pytest.raises(ValueError, match="unknown grade"):
        grading.Profile("x", "good")
    with pytest.raises(ValueError, match="N = 4"):
        grading.broken_result(1).failed(profile("strict", ulp_budget=1))


def test_working_dtype() -> None:
    assert [grading.working_dtype(d) for d in DTYPES] == [
        "float64", "float32", "float32", "float32"]


# -- budgets ---------------------------------------------------------------------------


def write_budgets(tmp_path: Any, data: Any) -> Any:
    path = tmp_path / "budgets.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_shipped_budgets_load_and_every_entry_has_a_reason() -> None:
    budgets = load_budgets()
    assert all(b.reason and (b.max_ulp or b.max_ratio) for b in budgets.values())


def test_budget_lets_a_documented_error_pass_and_says_so(tmp_path: Any) -> None:
    path = write_budgets(tmp_path, {
        "_about": "comments are skipped",
        "mylib": {"softmax": {"float64": {"max_ulp": 8, "reason": "exp is 6 ulps off"},
                              "float32": {"max_ratio": 1e4, "regimes": ["large-spread"],
                                          "reason": "sums in float32"}}},
    })
    budgets = load_budgets(path)
    assert set(budgets) == {("mylib", "softmax", "float64"), ("mylib", "softmax", "float32")}
    budget = grading.budget_for(budgets, "mylib", "softmax", "float64", "moderate")
    assert budget == Budget("mylib", "softmax", "float64", "exp is 6 ulps off", 8.0)
    assert grading.budget_for(budgets, "mylib", "softmax", "float32", "moderate") is None
    assert grading.budget_for(budgets, "mylib", "softmax", "float32", "large-spread")
    assert grading.budget_for(budgets, "other", "softmax", "float64") is None

    z = np.random.default_rng(9).normal(0.0, 1.0, (2, 4))
    exact = gold.softmax(z)
    six_up = gold.round_to(exact, "float64")
    for _ in range(6):
        six_up = np.nextafter(six_up, 2.0)
    grades = grade("softmax", Case(z, None, {}, "moderate"), six_up, exact)
    assert not judge(grades, STRICT).passed
    verdict = judge(grades, STRICT, budget=budget)
    assert verdict.passed and verdict.budget_used and verdict.failed == 0
    assert verdict.result.grade == "stable" and verdict.budgeted.grade == "ulp≤N"
    report = verdict.to_dict()
    assert report["budget_used"] and report["budget"]["reason"] == "exp is 6 ulps off"
    json.dumps(report)
    # not needed: no budget shown as used
    plain = judge(grades, STANDARD, budget=budget)
    assert plain.passed and not plain.budget_used and plain.budget is None


def test_budget_is_a_limit_and_never_excuses_broken() -> None:
    z = np.random.default_rng(10).normal(0.0, 1.0, (2, 4))
    case = Case(z, None, {}, "moderate")
    exact = gold.softmax(z)
    candidate = gold.round_to(exact, "float64") * (1 + 1e-10)  # ~1e6 ulps: unstable
    grades = grade("softmax", case, candidate, exact)
    small = Budget("x", "softmax", "float64", "too small", max_ulp=8)
    verdict = judge(grades, STANDARD, budget=small)
    assert not verdict.passed and verdict.budget is small and not verdict.budget_used
    assert judge(grades, STANDARD, budget=Budget("x", "softmax", "float64", "r",
                                                 max_ratio=1e9)).passed
    candidate[0, 0] = np.nan
    grades = grade("softmax", case, candidate, exact)
    huge = Budget("x", "softmax", "float64", "anything", max_ulp=1e300, max_ratio=1e300)
    assert not judge(grades, STANDARD, budget=huge).passed
    with pytest.raises(ValueError, match="applied to"):
        judge(grades, STANDARD, budget=Budget("x", "log_softmax", "float64", "r", max_ulp=8))


@pytest.mark.parametrize("entry, message", [
    ({"max_ulp": 8}, "reason"),
    ({"reason": "why"}, "max_ulp or max_ratio"),
    ({"max_ulp": 0.5, "reason": "why"}, "max_ulp must be"),
    ({"max_ulp": "8", "reason": "why"}, "max_ulp must be"),
    ({"max_ratio": float("inf"), "reason": "why"}, "max_ratio must be"),
    ({"max_ulp": 8, "reason": "why", "xfail": True}, "unknown keys"),
    ({"max_ulp": 8, "reason": "why", "regimes": "large"}, "regimes"),
])
def test_malformed_budget_entries_are_rejected(tmp_path: Any, entry: dict[str, Any],
                                               message: str) -> None:
    path = write_budgets(tmp_path, {"torch": {"softmax": {"float16": entry}}})
    with pytest.raises(BudgetError, match=message) as info:
        load_budgets(path)
    assert "torch.softmax.float16" in str(info.value)


def test_malformed_budget_files_are_rejected(tmp_path: Any) -> None:
    ok = {"max_ulp": 8, "reason": "why"}
    with pytest.raises(BudgetError, match="unknown function"):
        load_budgets(write_budgets(tmp_path, {"torch": {"softplus": {"float16": ok}}}))
    with pytest.raises(BudgetError, match="unknown dtype"):
        load_budgets(write_budgets(tmp_path, {"torch": {"softmax": {"float8": ok}}}))
    with pytest.raises(BudgetError, match="cannot read"):
        load_budgets(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(BudgetError, match="cannot read"):
        load_budgets(tmp_path / "bad.json")


# -- the numpy built-in on a fixed sample -------------------------------------------------


def fixed_cases(function: str, dtype: str) -> list[Case]:
    """One case per regime (K = 7, N = 3), targets and options cycling; seed 2024."""
    rng = np.random.default_rng(2024)
    out = []
    kinds = ["index", "soft", "unnormalized", "onehot"]
    for i, regime in enumerate(REGIMES):
        scale = LARGE[dtype][i % len(LARGE[dtype])]
        logits = make_logits(regime, rng, 3, 7, scale, dtype)
        options: dict[str, Any] = {}
        kind = kinds[i % len(kinds)] if function not in (
            *LOGITS_ONLY, *TANGENT_FUNCTIONS) else "index"
        if function in ("cross_entropy", "cross_entropy_grad", *CE_TANGENT_FUNCTIONS):
            options = {"reduction": ("none", "sum", "mean")[i % 3]}
            if i % 2:
                options["label_smoothing"] = 0.1
            if i % 3 == 1:
                options["weight"] = rng.uniform(0.5, 2.0, 7).astype(DTYPES[dtype])
        if function in PROBS_FUNCTIONS:
            logits = rng.dirichlet(np.full(7, 0.5), 3).astype(DTYPES[dtype])
        out.append(Case(logits, make_target(kind, rng, 3, 7, dtype), options, regime,
                        make_tangent(rng, logits)))
    return out


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("function", FUNCTIONS)
def test_numpy_builtin_passes_standard(function: str, dtype: str) -> None:
    from xentcheck.harness.adapters import numpy_stable

    for case in fixed_cases(function, dtype):
        fn = getattr(numpy_stable, function)
        if function in LOGITS_ONLY:
            candidate = fn(case.inputs)
        elif function in TANGENT_FUNCTIONS:
            candidate = fn(case.inputs, case.tangent)
        elif function in CE_TANGENT_FUNCTIONS:
            candidate = fn(case.inputs, case.target, case.tangent, **case.options)
        else:
            candidate = fn(case.inputs, case.target, **case.options)
        exact = exact_values(function, case)
        verdict = judge(grade(function, case, candidate, exact), STANDARD)
        assert verdict.passed, failure_message(function, case, candidate, exact, verdict)


# -- 4. decoded exact values -------------------------------------------------------------


def assert_same_grades(a: grading.ElementGrades, b: grading.ElementGrades) -> None:
    """Two gradings agree on every number, bit for bit (NaN where NaN)."""
    __tracebackhide__ = True
    for name in ("ulp", "ratio", "allowed", "broken", "graded", "codes"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        same = (x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else x == y
        assert np.all(same), (
            f"{a.function} [{a.dtype}] {name}: decoded and object gradings differ at "
            f"{np.argwhere(~same)[:3].tolist()}: got {x[~same][:3]}, should be {y[~same][:3]}")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("function", FUNCTIONS)
@settings(deadline=None, max_examples=8,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_grading_decoded_values_once_changes_nothing(function: str, dtype: str,
                                                     data: st.DataObject) -> None:
    # One decoding, three candidates (the textbook, and a step up and down): every number
    # equals grading against the object array, where the exact values are decoded anew.
    case = data.draw(cases(function, dtype), label="case")
    exact = exact_values(function, case)
    decoded = grading.decode(exact)
    assert grading.decode(decoded) is decoded
    textbook_value = textbook(function, case.inputs, case.target, case.options,
                              case.tangent)
    with np.errstate(all="ignore"):
        for toward in (None, np.inf, -np.inf):
            candidate = textbook_value if toward is None else np.nextafter(
                textbook_value, np.asarray(toward, textbook_value.dtype))
            assert_same_grades(grade(function, case, candidate, decoded),
                               grade(function, case, candidate, exact))


def test_decode_reads_float_arrays_as_exact_values() -> None:
    # The fast reference tier's longdouble values (and any float array) grade as the same
    # values would as exact objects; an undefined mask stands for UNDEFINED.
    z = np.random.default_rng(11).normal(0.0, 3.0, (3, 6))
    case = Case(z, None, {}, "moderate")
    exact = gold.softmax(z)
    as_longdouble = np.array([[np.longdouble(mpmath.nstr(v, 25)) for v in row] for row in exact])
    as_objects = np.empty(as_longdouble.shape, dtype=object)
    as_objects[:] = as_longdouble
    candidate = gold.round_to(exact, "float64")
    assert_same_grades(grade("softmax", case, candidate, grading.decode(as_longdouble)),
                       grade("softmax", case, candidate, as_objects))
    undefined = np.zeros(z.shape, bool)
    undefined[1] = True
    decoded = grading.ExactValues.from_floats(as_longdouble, undefined=undefined)
    grades = grade("softmax", case, candidate, decoded)
    assert not grades.graded[1].any() and grades.graded[[0, 2]].all()
    assert decoded.element((1, 0)) is UNDEFINED
    assert grading.decode(np.array([1, 2])).mant.tolist() == [1.0, 1.0]  # ints as objects


def test_outputs_graded_with_one_memo_share_the_rows_and_targets() -> None:
    """A case's outputs graded with one memo compute the softmax rows, the softmax error
    bound (and its Lambda) and the effective target once, and grade exactly as without it
    (every number the same)."""
    rng = np.random.default_rng(4)
    z = rng.standard_normal((6, 9))
    labels = rng.integers(0, 9, 6)
    options = {"label_smoothing": 0.1, "weight": rng.uniform(0.5, 2.0, 9)}
    memo: dict = {}
    plain = {"weight": options["weight"], "reduction": "none"}  # no smoothing: not reused
    for function, opts in (("cross_entropy_grad", {**options, "reduction": "none"}),
                           ("softmax", {}),
                           ("cross_entropy", {**options, "reduction": "none"}),
                           ("cross_entropy_grad", {**options, "reduction": "none"}),
                           ("cross_entropy_grad", plain), ("cross_entropy", plain)):
        target = None if function == "softmax" else labels
        exact = getattr(gold, function)(z, *([] if target is None else [target]), **opts)
        cand = gold.round_to(exact, "float64")
        kept = grading.grade_elements(function, cand, exact, inputs=z, target=target,
                                      options=opts, memo=memo)
        alone = grading.grade_elements(function, cand, exact, inputs=z, target=target,
                                       options=opts)
        for field in ("ulp", "ratio", "allowed", "codes"):
            assert np.array_equal(getattr(kept, field), getattr(alone, field),
                                  equal_nan=field != "codes"), field
    assert sorted(str(key[0]) for key in memo) == ["rows", "softmax error", "softmax lambda",
                                                   "targets", "targets"]


# ----------------------------------------------------------------- chunked roll-ups


def _whole_max(values: np.ndarray, mask: np.ndarray, skip_nan: bool) -> float | None:
    picked = values[mask]
    if skip_nan:
        picked = picked[~np.isnan(picked)]
    return float(picked.max()) if picked.size else None


@pytest.mark.parametrize("engine", ["numpy", "numba"])
@pytest.mark.parametrize("seed", range(6))
def test_chunked_roll_ups_are_the_whole_array_formulas(seed: int, engine: str) -> None:
    """``masked_max`` and ``first_largest`` go a chunk at a time (or, compiled, in one
    loop); their answers are the one-pass formulas' on arrays of several chunks with NaN,
    ±inf, ties across chunks and masks that leave chunks empty."""
    if engine == "numba" and grading._compiled_loops() is None:
        pytest.skip("numba is not installed")
    with jit.engine(engine):
        _roll_ups_agree(seed)


def _roll_ups_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = 3 * CHUNK_ELEMENTS + 17
    values = rng.integers(0, 50, size).astype(np.float64)  # many ties
    special = rng.integers(0, size, 40)
    values[special[:10]] = np.nan if seed % 2 else np.inf
    values[special[10:20]] = np.inf
    values[special[20:25]] = -np.inf
    mask = rng.random(size) < (0.5 if seed < 3 else 1e-5)
    mask[: CHUNK_ELEMENTS] = seed == 5 or mask[: CHUNK_ELEMENTS]
    for skip_nan in (False, True):
        got, want = (grading.masked_max(values, mask, skip_nan=skip_nan),
                     _whole_max(values, mask, skip_nan))
        assert (got is None and want is None) or np.array_equal(got, want, equal_nan=True)
    assert grading.first_largest(values, mask) == int(np.argmax(
        np.where(mask, values, -np.inf)))
    assert grading.first_largest(values, mask, nan=-1.0) == int(np.argmax(
        np.where(mask, np.nan_to_num(values, nan=-1.0, posinf=np.inf), -np.inf)))
    assert grading.first_largest(values, np.zeros(size, bool)) == 0
    lows, only = np.full(size, -np.inf), np.zeros(size, bool)
    lows[-1], only[size // 2] = 3.0, True  # -inf read as the lowest float64 beats none
    assert grading.first_largest(lows, only, nan=-1.0) == size // 2
    assert grading.first_largest(lows, only) == 0


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_first_largest_across_blocks_and_in_the_tail(engine: str) -> None:
    """The compiled ``first_largest`` goes in blocks of 1024 and a tail: a NaN only in
    the tail is still the answer; a -0 maximum in an early block is found before a +0
    in a later one (equal floats: the first); a maximum in the tail is found."""
    if engine == "numba" and grading._compiled_loops() is None:
        pytest.skip("numba is not installed")
    size = 3 * CHUNK_ELEMENTS + 17  # not a multiple of the blocks
    every = np.ones(size, bool)

    def argmax(values: np.ndarray, nan: float | None = None) -> int:
        if nan is not None:
            values = np.nan_to_num(values, nan=nan, posinf=np.inf)
        return int(np.argmax(values))

    with jit.engine(engine):
        values = -np.arange(size, dtype=np.float64) - 1.0
        values[size - 3] = np.nan  # the only NaN, in the tail
        assert grading.first_largest(values, every) == size - 3 == argmax(values)
        assert grading.first_largest(values, every, nan=5.0) == size - 3
        values = np.full(size, -1.0)
        values[5], values[1500], values[size - 2] = -0.0, 0.0, 0.0  # -0 first
        assert grading.first_largest(values, every) == 5 == argmax(values)
        values[size - 1] = 2.0  # the largest in the tail
        assert grading.first_largest(values, every) == size - 1 == argmax(values)
        assert grading.first_largest(values, every, nan=-1.0) == size - 1


def test_summaries_reuse_the_codes_only_under_their_own_thresholds() -> None:
    element = grading.grade_elements("softmax", np.array([[0.25, 0.75]]) * (1 + 2e-15),
                                     np.array([[0.25, 0.75]]), inputs=np.array(
                                         [[0.0, np.log(3.0)]]))
    assert grading.codes_under(element, element.ulp_budget) is element.codes
    other = grading.codes_under(element, 64.0)
    assert other is not element.codes
    assert np.array_equal(other, grading.classify(element.ulp, element.ratio, element.broken,
                                                  element.graded, ulp_budget=64.0))


@pytest.mark.parametrize(("shape", "share"), [((64, 300), 0.001), ((64, 300), 0.3),
                                             ((64, 300), 0.9), ((16, 65536), 0.001)])
def test_scaled_logs_where_a_target_weighs_are_the_full_arrays(shape, share: float) -> None:
    """The from-probabilities bounds take u |log p| only where the target has mass (one
    log per row for a one-hot target): those entries are the full array's, bit for bit
    (also where the full array is large enough for the compiled log and the few entries
    are not), and the rest are never read (products with a zero target)."""
    rng = np.random.default_rng(5)
    p = rng.uniform(0.0, 1.0, shape) ** 8  # tiny values, and at the start exact zeros,
    p[:, :3] = [0.0, 1.0, 5e-324]  # ones and subnormals
    needed = rng.uniform(size=p.shape) < share
    needed[:, :3] = True
    uw = 2.0**-53
    with np.errstate(divide="ignore"):
        full = np.abs(portable.log(p)) * uw
    got = grading._scaled_logs(p, needed, uw)
    assert got.shape == full.shape
    np.testing.assert_array_equal(got[needed].view(np.int64), full[needed].view(np.int64))


@pytest.mark.parametrize("engine", ["numpy", "numba"])
@pytest.mark.parametrize("seed", range(10))
def test_largest_errors_in_one_pass_are_masked_maxima(seed: int, engine: str) -> None:
    """``ElementGrades.largest`` (one compiled pass over a large output) gives the four
    ``masked_max`` answers it replaces: over graded elements not broken, NaN sticky;
    over every graded one, NaN left out; None where nothing is selected. Seeds 6 to 9:
    everything broken, nothing graded, a NaN first, every ulp error NaN."""
    if engine == "numba" and grading._compiled_loops() is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(seed)
    size = 3 * CHUNK_ELEMENTS + 5
    ulp = rng.integers(0, 40, size).astype(np.float64)
    ratio = rng.random(size) * 3
    for values in (ulp, ratio):
        hit = rng.integers(0, size, 30)
        values[hit[:10]] = np.inf
        values[hit[10:20]] = -np.inf
        if seed % 2:
            values[hit[20:]] = np.nan
    graded = rng.random(size) < (0.7 if seed < 4 else 1e-4)
    broken = rng.random(size) < 0.01
    if seed == 6:
        broken[:] = True
    if seed == 7:
        graded[:] = False
    if seed == 8:
        first = int(np.argmax(graded))
        ulp[first] = ratio[first] = np.nan
    if seed == 9:
        ulp[:] = np.nan
    element = grading.ElementGrades("softmax", "float64", ulp, ratio, np.ones(size), broken,
                                    graded, np.zeros(size, np.int8))
    accurate = graded & ~broken
    want = (_whole_max(ulp, accurate, False), _whole_max(ratio, accurate, False),
            _whole_max(ulp, graded, True), _whole_max(ratio, graded, True))
    with jit.engine(engine):
        got = element.largest
    for g, w in zip(got, want, strict=True):
        assert (g is None and w is None) or np.array_equal(g, w, equal_nan=True), (got, want)
