"""Invariants every correct implementation keeps, checked row by row on its own outputs.

- ``range``: 0 <= p <= 1; log_softmax <= 0; CE >= 0 (non-negative targets and weights).
- ``normalization``: |Σp − 1| within the sum of the elements' allowed errors; gradient rows
  sum to 0 for every target and option ((Σy) p − y), within the same kind of bound, and
  finite rows where the gradient is not graded (+inf or all −inf logits) within an
  oracle-free one.
- ``order``: z_i < z_j implies p_i <= p_j (and the same for log_softmax).
- ``determinism``: the same input gives the same bits twice.
- ``contract``: dtype and shape kept, inputs not mutated (the boundary's own checks).

Rows whose exact outputs are NaN or undefined are not judged here (the value checks
grade NaN propagation).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

import xentcheck.references as ref
from xentcheck.harness.adapters.contract import DTYPES, FUNCTIONS, same_bits
from xentcheck.harness.checks import Context, allowed_abs, boolean_finding, target_mass
from xentcheck.harness.findings import Finding
from xentcheck.harness.grading import compiled_loops
from xentcheck.harness.truth import mean_denominator

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
    """The adapter's output to compare: float32 and float64 as they are (comparisons and
    signs of differences are the same in float64), the narrower formats in float64."""
    value = ctx.value(function)
    if value is None or value.dtype in (np.float32, np.float64):
        return value
    return value.astype(np.float64)


def _contract(ctx: Context) -> Iterator[Finding]:
    for function in FUNCTIONS:
        if function not in ctx._memo:
            continue
        faults = [f for f in ctx._memo[function].faults if f.kind in _CONTRACT_FAULTS]
        yield boolean_finding(ctx, "contract", function, np.array([bool(faults)]),
                              "; ".join(str(f) for f in faults))


def _ranges(ctx: Context) -> Iterator[Finding]:
    rows = ctx.truth.finite_rows()
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


def _normalization(ctx: Context) -> Iterator[Finding]:
    case = ctx.case
    rows = ctx.truth.finite_rows()
    if ctx.provides("softmax") and ctx.truth.applicable("softmax"):
        outcome = ctx.outcome("softmax")
        if outcome.ok:
            p = outcome.value.astype(np.float64)
            tol = np.nansum(allowed_abs(ctx, "softmax", outcome.value), axis=1)
            tol += case.num_classes * 2.0**-52  # the float64 sum below
            with np.errstate(invalid="ignore"):
                bad = ~(np.abs(p.sum(axis=1) - 1) <= tol) & rows
            yield boolean_finding(ctx, "normalization", "softmax", bad, "Σp differs from 1 "
                                  "by more than the elements' allowed errors")
    if ctx.provides("cross_entropy_grad") and ctx.truth.applicable("cross_entropy_grad"):
        outcome = ctx.outcome("cross_entropy_grad")
        if outcome.ok and np.ndim(outcome.value) == 2:
            yield _gradient_sums_to_zero(ctx, outcome.value, rows)


def _gradient_sums_to_zero(ctx: Context, value: np.ndarray, rows: np.ndarray) -> Finding:
    """Σ_k ((Σu) p_k − u_k) = 0 for every effective target u: any targets, weights, label
    smoothing, ignored rows (0) and reductions (a constant factor). Where the exact
    gradient is graded: within the sum of the elements' allowed errors. Where it is not
    (a row holding +inf, or nothing but -inf: DESIGN.md §4, behaviour recorded, not
    graded) NaN is acceptable, but a finite row is still held to the invariant, within an
    oracle-free bound: (K + 8) units of the dtype on the terms' size 2 W Σ|y| / D (W the
    largest class weight, D the mean's divisor), what the textbook's sum of (Σu) p_k and
    u_k can round to."""
    case = ctx.case
    g = value.astype(np.float64)
    k = case.num_classes
    exact = ctx.truth.decoded("cross_entropy_grad")
    defined = exact.finite.all(axis=1) & rows
    tol = np.nansum(allowed_abs(ctx, "cross_entropy_grad", value), axis=1)
    tol += k * 2.0**-52 * np.nansum(np.abs(g), axis=1)  # the float64 sum below
    ungraded = np.zeros_like(defined)
    if not defined.all():  # (else no row is left ungraded: the passes over z are saved)
        with np.errstate(invalid="ignore"):
            z = case.logits.astype(np.float64)
            ungraded = (~defined & ~np.any(np.isnan(z), axis=1)
                        & np.all(np.isfinite(g), axis=1)
                        & (np.any(z == np.inf, axis=1) | np.all(z == -np.inf, axis=1)))
    if ungraded.any():
        fmt = ref.float_format(case.dtype)
        eps = 2.0 ** (1 - fmt.precision)
        tol = np.where(ungraded, (k + 8) * (eps * _term_size(ctx) + fmt.smallest_normal), tol)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(g.sum(axis=1)) <= tol) & (defined | ungraded)
    return boolean_finding(ctx, "normalization", "cross_entropy_grad", bad,
                           "a gradient row does not sum to 0 ((Σy) p − y sums to 0 for "
                           "every target)")


def _term_size(ctx: Context) -> np.ndarray:
    """Per row, 2 W Σ_k |y_k| / D: a bound on Σ_k |(Σu) p_k| + |u_k| for the effective
    target u (label smoothing moves mass, it adds none)."""
    case = ctx.case
    y = np.abs(target_mass(case))
    weight = case.options.get("weight")
    w = 1.0 if weight is None else float(np.max(np.abs(np.asarray(weight, np.float64))))
    d = 1.0
    if case.options.get("reduction") == "mean":
        d = mean_denominator(case, ctx.truth.dialect) or 1.0
    return 2 * w * y.sum(axis=1) / abs(d)


def stable_order(z: np.ndarray) -> np.ndarray:
    """``np.argsort(z, axis=1, kind="stable")`` for rows without NaN (another row's order
    is any permutation). Logits of 32 bits or fewer are sorted as distinct int64 keys (the
    value's order-preserving integer, then the index), which an unstable sort puts in the
    one order, at a third of a stable sort's time; where numba is and the batch is large,
    by a radix sort of the value's integer (``_compiled.stable_order_into``: a seventh
    of that time on a block of 16 x 131072)."""
    z = np.asarray(z)
    k = z.shape[1]
    if z.dtype.name not in ("float32", "float16", "bfloat16") or k > 2**31:
        return np.argsort(z, axis=1, kind="stable")
    loops = compiled_loops(z.size)
    if loops is not None:  # a radix sort of the same keys: the same order
        order = np.empty(z.shape, np.intp)
        loops.stable_order_into(np.ascontiguousarray(z, np.float32).view(np.int32), order)
        return order
    bits = z.astype(np.float32).view(np.int32).astype(np.int64)
    key = np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)  # the order of the values; -0 = +0
    width = max(int(k - 1).bit_length(), 1)
    key = (key << width) | np.arange(k, dtype=np.int64)
    key.sort(axis=1)
    return key & ((1 << width) - 1)


def order_broken(z: np.ndarray, order: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per row: two neighbours in ``order`` (:func:`stable_order` of ``z``) whose logits
    increase strictly and whose ``value`` entries decrease. One compiled pass where numba
    is and the batch is large (the same comparisons, without gathering the rows)."""
    loops = compiled_loops(z.size) if z.dtype.itemsize <= 4 else None
    if loops is not None and value.shape == z.shape and value.dtype.name in DTYPES:
        bad = np.empty(z.shape[0], bool)
        loops.order_broken_into(z.astype(np.float32, copy=False), order,
                                value.astype(np.float32, copy=False)
                                if value.dtype.itemsize < 4 else value, bad)
        return bad
    zs = np.take_along_axis(z, order, axis=1)
    strictly = zs[:, 1:] > zs[:, :-1]  # exact in any float type, infinities included
    vs = np.take_along_axis(value, order, axis=1)
    with np.errstate(invalid="ignore"):
        return np.any(strictly & (np.diff(vs, axis=1) < 0), axis=1)


def orders_broken(z: np.ndarray, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`order_broken` of each value (one or two outputs of the same logits ``z``):
    where numba is and the batch is large, each row sorted once carrying both values
    (``_compiled.orders_broken_into``: no gather), else one :func:`stable_order` for all."""
    loops = compiled_loops(z.size) if z.dtype.itemsize <= 4 else None
    if (loops is not None and 1 <= len(values) <= 2 and all(
            v.shape == z.shape and v.dtype.name in DTYPES and v.dtype.itemsize <= 4
            for v in values.values())):
        bits = [np.ascontiguousarray(v, np.float32).view(np.int32) for v in values.values()]
        out = np.empty((2, z.shape[0]), bool)
        loops.orders_broken_into(np.ascontiguousarray(z, np.float32).view(np.int32),
                                 bits[0], bits[-1], out)
        return dict(zip(values, out, strict=False))
    order = stable_order(z)
    return {function: order_broken(z, order, v) for function, v in values.items()}


def _order(ctx: Context) -> Iterator[Finding]:
    rows = ctx.truth.finite_rows()
    values = {function: value for function in ("softmax", "log_softmax")
              if (value := _value(ctx, function)) is not None}
    if not values:
        return
    for function, bad in orders_broken(ctx.case.logits, values).items():
        yield boolean_finding(ctx, "order", function, bad & rows,
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
        same = second.ok and same_bits(first.value, second.value)
        yield boolean_finding(ctx, "determinism", function, np.array([not same]),
                              "the same input gave different bits on a second call")
