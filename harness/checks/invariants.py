"""Invariants every correct implementation keeps, checked row by row on its own outputs.

- ``range``: 0 <= p <= 1; log_softmax <= 0; CE >= 0 (non-negative targets and weights).
- ``normalization``: |Σp − 1| within the sum of the elements' allowed errors; gradient rows
  sum to 0 when Σy = 1, within the same kind of bound.
- ``order``: z_i < z_j implies p_i <= p_j (and the same for log_softmax).
- ``determinism``: the same input gives the same bits twice.
- ``contract``: dtype and shape kept, inputs not mutated (the boundary's own checks).

Rows whose exact outputs are NaN or undefined are not judged here (the value checks
grade NaN propagation).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from harness import grading
from harness.adapters.contract import FUNCTIONS
from harness.checks import Context, boolean_finding
from harness.findings import Finding

_CONTRACT_FAULTS = ("wrong-shape", "wrong-dtype", "wrong-type", "mutated-input")


def run(ctx: Context) -> Iterator[Finding]:
    yield from _contract(ctx)
    if ctx.case.num_rows == 0:
        return
    yield from _ranges(ctx)
    yield from _normalization(ctx)
    yield from _order(ctx)
    yield from _determinism(ctx)


def _value(ctx: Context, function: str) -> np.ndarray | None:
    value = ctx.value(function)
    return None if value is None else value.astype(np.float64)


def _finite_rows(ctx: Context) -> np.ndarray:
    z = ctx.case.logits.astype(np.float64)
    return ~np.any(np.isnan(z) | (z == np.inf), axis=1) & np.any(np.isfinite(z), axis=1)


def _contract(ctx: Context) -> Iterator[Finding]:
    for function in FUNCTIONS:
        if function not in ctx._memo:
            continue
        faults = [f for f in ctx._memo[function].faults if f.kind in _CONTRACT_FAULTS]
        yield boolean_finding(ctx, "contract", function, np.array([bool(faults)]),
                              "; ".join(str(f) for f in faults))


def _ranges(ctx: Context) -> Iterator[Finding]:
    rows = _finite_rows(ctx)
    p = _value(ctx, "softmax")
    if p is not None:
        bad = np.any((p < 0) | (p > 1) | np.isnan(p), axis=1) & rows
        yield boolean_finding(ctx, "range", "softmax", bad, "a probability outside [0, 1]")
    lp = _value(ctx, "log_softmax")
    if lp is not None:
        bad = np.any((lp > 0) | np.isnan(lp), axis=1) & rows
        yield boolean_finding(ctx, "range", "log_softmax", bad, "log_softmax > 0 or NaN")
    ce = _value(ctx, "cross_entropy")
    weight = ctx.case.options.get("weight")
    if ce is not None and ce.ndim == 1 and (weight is None or np.all(weight >= 0)):
        with np.errstate(invalid="ignore"):
            bad = (ce < 0) & rows
        yield boolean_finding(ctx, "range", "cross_entropy", bad, "negative cross-entropy")


def _allowed_abs(ctx: Context, function: str, candidate: np.ndarray) -> np.ndarray:
    """The allowed absolute error of each element (stability bound or ulp budget); NaN
    where the exact value is not a finite number."""
    truth = ctx.truth
    exact = truth.decoded(function)
    graded = grading.grade_elements(function, candidate, exact, dtype=ctx.case.dtype,
                                    **truth.grading_inputs(function))
    allowed = np.maximum(np.nan_to_num(graded.allowed, nan=0.0), ctx.profile.ulp_budget)
    return allowed * exact.ulp(ctx.case.dtype)


def _normalization(ctx: Context) -> Iterator[Finding]:
    case = ctx.case
    rows = _finite_rows(ctx)
    if ctx.provides("softmax") and ctx.truth.applicable("softmax"):
        outcome = ctx.outcome("softmax")
        if outcome.ok:
            p = outcome.value.astype(np.float64)
            tol = np.nansum(_allowed_abs(ctx, "softmax", outcome.value), axis=1)
            tol += case.num_classes * 2.0**-52  # the float64 sum below
            with np.errstate(invalid="ignore"):
                bad = ~(np.abs(p.sum(axis=1) - 1) <= tol) & rows
            yield boolean_finding(ctx, "normalization", "softmax", bad, "Σp differs from 1 "
                                  "by more than the elements' allowed errors")
    if (ctx.provides("cross_entropy_grad") and ctx.truth.applicable("cross_entropy_grad")
            and case.target_kind in ("indices", "one-hot", "soft")
            and "weight" not in case.options):
        outcome = ctx.outcome("cross_entropy_grad")
        if outcome.ok:
            g = outcome.value.astype(np.float64)
            tol = np.nansum(_allowed_abs(ctx, "cross_entropy_grad", outcome.value), axis=1)
            tol += case.num_classes * 2.0**-52 * np.nansum(np.abs(g), axis=1)
            exact = ctx.truth.decoded("cross_entropy_grad")
            defined = exact.finite.all(axis=1)
            with np.errstate(invalid="ignore"):
                bad = ~(np.abs(g.sum(axis=1)) <= tol) & rows & defined
            yield boolean_finding(ctx, "normalization", "cross_entropy_grad", bad,
                                  "a gradient row does not sum to 0 although Σy = 1")


def _order(ctx: Context) -> Iterator[Finding]:
    z = ctx.case.logits.astype(np.float64)
    rows = _finite_rows(ctx)
    order = np.argsort(z, axis=1, kind="stable")
    zs = np.take_along_axis(z, order, axis=1)
    strictly = np.diff(zs, axis=1) > 0
    for function in ("softmax", "log_softmax"):
        value = _value(ctx, function)
        if value is None:
            continue
        vs = np.take_along_axis(value, order, axis=1)
        with np.errstate(invalid="ignore"):
            bad = np.any(strictly & (np.diff(vs, axis=1) < 0), axis=1) & rows
        yield boolean_finding(ctx, "order", function, bad,
                              "a larger logit got a smaller output")


def _determinism(ctx: Context) -> Iterator[Finding]:
    for function in ("softmax", "log_softmax", "cross_entropy", "cross_entropy_grad"):
        if not ctx.provides(function) or not ctx.truth.applicable(function):
            continue
        first = ctx.outcome(function)
        if not first.ok:
            continue
        args, options = ctx.truth.arguments(function)
        second = ctx.call(function, *args, **options)
        same = second.ok and first.value.tobytes() == second.value.tobytes()
        yield boolean_finding(ctx, "determinism", function, np.array([not same]),
                              "the same input gave different bits on a second call")
