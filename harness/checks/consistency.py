"""Consistency: the candidate against itself and against the mathematics' identities.

- ``chain-rule``: the unfused route J(z)ᵀ(−y/ŷ), built from the candidate's own softmax,
  −y/ŷ and softmax Jacobian, graded against the gold fused gradient (where the seed
  formulas break, e.g. ŷ underflowing to 0, this is where it shows).
- ``self-fd``: the candidate's gradient against central differences of its own forward
  (float64 only), with a Richardson error estimate: catches a backward that does not
  belong to the forward even where no gold is needed.
- ``reduction``: ``"sum"`` equals the sum of ``"none"``, ``"mean"`` the sum over the
  documented denominator, within the summation error bound.
- ``batch-invariance``: a row alone gives what it gives inside the batch, within both
  results' stability bounds.
- ``shift-invariance``: softmax, log_softmax, the loss and its gradient of z + c (c
  exact) graded against the gold of z.
- ``chunk-invariance``: the loss and gradient of the batch split in 2 and 3 parts,
  recombined, against the candidate's own whole-batch result (fused and chunked kernels).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

import xentcheck.references as ref
from xentcheck.harness import grading
from xentcheck.harness.adapters.contract import case_dtype
from xentcheck.harness.cases import Case
from xentcheck.harness.checks import (
    SILENT_FAULTS,
    Context,
    allowed_abs,
    boolean_finding,
    fault_finding,
    graded_finding,
    rows_of,
    target_mass,
)
from xentcheck.harness.findings import Finding
from xentcheck.harness.truth import mean_denominator

#: Rows of a case re-run one at a time by the batch-invariance check.
BATCH_ROWS = 3

#: The functions graded on z + c against the gold of z by the shift-invariance check.
SHIFT_INVARIANT = ("softmax", "log_softmax", "cross_entropy", "cross_entropy_grad")

#: The numbers of parts the chunk-invariance check splits a batch into.
CHUNKS = (2, 3)


def run(ctx: Context) -> Iterator[Finding]:
    case = ctx.case
    if case.num_rows == 0:
        return
    yield from _chain_rule(ctx)
    yield from _self_fd(ctx)
    yield from _reductions(ctx)
    yield from _batch_invariance(ctx)
    yield from _shift_invariance(ctx)
    yield from _chunk_invariance(ctx)


def _plain(ctx: Context) -> bool:
    """No options: the identities below are about the bare loss."""
    return not ctx.case.options


def _chain_rule(ctx: Context) -> Iterator[Finding]:
    case, truth = ctx.case, ctx.truth
    if not _plain(ctx) or not truth.applicable("softmax_jacobian"):
        return
    needed = ("softmax", "softmax_jacobian", "cross_entropy_grad_wrt_probs")
    if not all(ctx.provides(f) for f in needed):
        return
    probs = ctx.value("softmax")
    jac = ctx.value("softmax_jacobian")
    if probs is None or jac is None:
        return
    if case.dtype not in ("float64", "float32"):
        return  # half-precision ŷ underflows on ordinary inputs: the route, not the code
    outcome = ctx.call("cross_entropy_grad_wrt_probs", probs, case.target)
    if not outcome.ok:
        return
    # The unfused route is only defined where ŷ > 0 wherever the target has mass: rows
    # where the candidate's own ŷ underflowed are the seed route's known breakdown, which
    # the values check already judges through ŷ itself.
    # Rows where some ŷ_i is below 2**(emin/2) are left out too: there the Jacobian's
    # products ŷ_i ŷ_j underflow and lose their digits, in every implementation.
    y = target_mass(ctx.case)
    p = probs.astype(np.float64)
    floor = 2.0 ** (ref.float_format(case.dtype).emin / 2)
    rows = np.all((p >= floor) | (y == 0) & (p == 0), axis=1) & np.all(np.isfinite(p), axis=1)
    if not rows.any():
        return
    with np.errstate(all="ignore"):
        upstream = outcome.value.astype(np.float64)[rows]
        # J^T g as a plain product and sum over i: einsum's SIMD loops (and BLAS) order
        # the sum differently on different CPUs, and the harness's arithmetic must not
        unfused = (jac.astype(np.float64)[rows] * upstream[:, :, None]).sum(axis=1)
    candidate = unfused.astype(case_dtype(case.dtype))
    exact = truth.decoded("cross_entropy_grad")[rows]
    # graded by the stability bound whatever the run's profile: the product is the
    # harness's, so its last-bit rounding is not the candidate's to answer for
    yield graded_finding(ctx, "chain-rule", "cross_entropy_grad", candidate, exact,
                         inputs=case.logits[rows], target=case.target[rows], options={},
                         profile=grading.STANDARD)


#: Step of the self-consistency finite differences (about u**(1/3) for float64, the step
#: that balances truncation and rounding in a central difference; softmax varies on the
#: scale of logit differences, so the step is absolute).
_SELF_FD_STEP = 2.0**-18

#: Largest |logit| at which the self-consistency differences are taken: below 2**20 a
#: float64 logit's ulp (<= 2**-32) is far below the step, so z + h v differs from z.
_SELF_FD_MAX_LOGIT = 2.0**20

#: The self-consistency check flags only disagreements beyond this relative size plus the
#: difference estimate's own error: it is there to catch a backward of another function,
#: not to grade accuracy (the gradient check against gold does that).
_SELF_FD_REL = 1e-6


def _self_fd(ctx: Context) -> Iterator[Finding]:
    case = ctx.case
    if case.dtype != "float64" or not (ctx.provides("cross_entropy")
                                       and ctx.provides("cross_entropy_grad")):
        return
    if not ctx.truth.applicable("cross_entropy_grad"):
        return
    z = case.logits.astype(np.float64)
    grad = ctx.value("cross_entropy_grad")
    if grad is None or not np.all(np.isfinite(z)) or not np.all(np.isfinite(grad)):
        return
    options = {**case.options, "reduction": case.options.get("reduction", "sum")}
    if options["reduction"] == "none":
        options["reduction"] = "sum"
    if z.size == 0 or float(np.max(np.abs(z))) > _SELF_FD_MAX_LOGIT:
        return  # z + h v would round back to z: no difference to take
    if options["reduction"] == "mean" and not mean_denominator(case, ctx.truth.dialect) > 0:
        return  # a mean over no weight is 0/0 at every point: nothing to differentiate
    rng = np.random.default_rng(int(case.digest()[:8], 16))
    v = rng.uniform(-1.0, 1.0, size=z.shape)
    h = _SELF_FD_STEP
    steps = (h, -h, h / 2, -h / 2)
    values: list[float] = []
    for t in steps:
        # the loss is finite and smooth around z: a perturbed call that fails or gives a
        # non-finite loss is the forward's own failure, not a reason to skip the check
        out = ctx.call("cross_entropy", (z + t * v).astype(np.float64), case.target,
                       **options)
        if out.fault is not None and out.fault.kind in SILENT_FAULTS:
            return  # it does not take this reduction: nothing to compare with
        problem = None
        if not out.ok:
            problem = str(out.fault)
        elif np.ndim(out.value) != 0 or not math.isfinite(float(out.value)):
            problem = f"returned {out.value!r}"
        if problem is not None:
            note = (f"its forward at z + t·v (t = {t:g}, a step of the central difference) "
                    f"failed: {problem}")
            finding = boolean_finding(ctx, "self-fd", "cross_entropy_grad",
                                      np.array([True]), note)
            finding.rows = 1
            yield finding
            return
        values.append(float(out.value))
    d1 = (values[0] - values[1]) / (2 * h)
    d2 = (values[2] - values[3]) / h
    estimate = (4 * d2 - d1) / 3  # one Richardson step
    # truncation (the two steps' disagreement) plus what the loss's own allowed rounding
    # error, up to (n K + 16) u (1 + |L|) per evaluation, can do to a quotient over h
    allowed = (z.size + 16) * 2.0**-52 * (1 + max(abs(x) for x in values))
    error = abs(d2 - d1) + 4 * allowed / h
    directional = float(np.sum(grad.astype(np.float64) * v))
    tolerance = _SELF_FD_REL * (abs(directional) + abs(estimate)) + 4 * error
    violated = abs(directional - estimate) > tolerance
    note = (f"gradient·v = {directional!r} but its own forward's central difference gives "
            f"{estimate!r} ± {error:.3g}")
    finding = boolean_finding(ctx, "self-fd", "cross_entropy_grad", np.array([violated]), note)
    finding.rows = 1
    yield finding


def _reductions(ctx: Context) -> Iterator[Finding]:
    case = ctx.case
    if not ctx.provides("cross_entropy") or "cross_entropy" not in ctx.handle.provides:
        return
    if "reduction" not in ctx.handle.provides["cross_entropy"] or "reduction" in case.options:
        return
    if not ctx.truth.applicable("cross_entropy"):
        return
    per_row = ctx.value("cross_entropy")
    if per_row is None:
        return
    rows = per_row.astype(np.float64)
    if not np.all(np.isfinite(rows)):
        return
    u = 2.0 ** -(np.finfo(np.float64).nmant + 1)
    out_u = ref.float_format(case.dtype).smallest_normal  # absolute floor for tiny sums
    eps = 2.0 ** -ref.float_format(case.dtype).precision
    try:
        total = math.fsum(rows.tolist())
        magnitude = math.fsum(np.abs(rows).tolist())
    except OverflowError:
        return  # the float64 sum itself overflows: nothing to compare
    big = ref.float_format(case.dtype).max
    violations = []
    notes = []
    for reduction in ("sum", "mean"):
        out = ctx.call("cross_entropy", case.logits, case.target,
                       **{**case.options, "reduction": reduction})
        if out.fault is not None and out.fault.kind in SILENT_FAULTS:
            continue
        if not out.ok or np.ndim(out.value) != 0:
            violations.append(True)
            notes.append(f"{reduction}: {out.fault or f'returned shape {np.shape(out.value)}'}")
            continue
        got = float(out.value)
        expected = total if reduction == "sum" else _mean(total, ctx)
        if expected is None:
            continue
        if abs(total) > big / 2:
            continue  # the sum overflows the dtype (or nearly): inf is right, for a mean too
        # summation of N terms in the working format, then one rounding to the case dtype
        bound = (len(rows) + 2) * max(eps, u) * magnitude + eps * abs(expected) + out_u
        if reduction == "mean":
            bound /= max(_denominator(ctx) or 1.0, 1e-300)
        bad = not (abs(got - expected) <= bound) or math.isnan(got)
        violations.append(bad)
        if bad:
            notes.append(f"{reduction}: got {got!r}, its own rows give {expected!r}")
    if violations:
        finding = boolean_finding(ctx, "reduction", "cross_entropy",
                                  np.array([any(violations)]), "; ".join(notes))
        yield finding


def _denominator(ctx: Context) -> float:
    return mean_denominator(ctx.case, ctx.truth.dialect)


def _mean(total: float, ctx: Context) -> float | None:
    den = _denominator(ctx)
    return None if not den else total / den


def _batch_invariance(ctx: Context) -> Iterator[Finding]:
    case = ctx.case
    if case.num_rows < 2:
        return
    for function in ("softmax", "log_softmax"):
        batched = ctx.value(function)
        if batched is None:
            continue
        rows = range(min(BATCH_ROWS, case.num_rows))
        violated = []
        for n in rows:
            alone = ctx.call(function, case.logits[n:n + 1])
            if not alone.ok:
                violated.append(True)
                continue
            a = alone.value[0].astype(np.float64)
            b = batched[n].astype(np.float64)
            same = (a == b) | (np.isnan(a) & np.isnan(b))
            if np.all(same):
                violated.append(False)
                continue
            # different bits are fine within both results' stability bounds
            exact = ctx.truth.decoded(function)[n:n + 1]
            ga = _ulp_ok(ctx, function, alone.value, exact, case.logits[n:n + 1])
            gb = _ulp_ok(ctx, function, batched[n:n + 1], exact, case.logits[n:n + 1])
            violated.append(ga != gb)
        yield boolean_finding(ctx, "batch-invariance", function, np.array(violated),
                              "a row alone grades differently from the same row in the batch")


def _ulp_ok(ctx: Context, function: str, value: np.ndarray, exact: np.ndarray,
            logits: np.ndarray) -> bool:
    finding = graded_finding(ctx, "batch-invariance", function, value, exact, inputs=logits)
    return finding.failed == 0


def _shift(z: np.ndarray) -> float | None:
    """A shift c with z + c exact in z's dtype for every finite entry, or None."""
    finite = z[np.isfinite(z.astype(np.float64))].astype(np.float64)
    if finite.size == 0:
        return None
    for c in (1.0, 0.5, 0.25, 2.0, 16.0):
        if not _exact_shift(finite[:_SAMPLE], c, z.dtype):
            continue  # (the first entries decide most shifts at a fraction of the cost)
        if _exact_shift(finite, c, z.dtype):
            return c
    return None


_SAMPLE = 4096


def _exact_shift(finite: np.ndarray, c: float, dtype: np.dtype) -> bool:
    """z + c is exact in ``dtype`` (and finite) for every float64 value z of ``finite``."""
    moved = (finite + c).astype(dtype).astype(np.float64)
    return bool(np.all(moved - c == finite) and np.all(np.isfinite(moved)))


def _shift_invariance(ctx: Context) -> Iterator[Finding]:
    case = ctx.case
    c = _shift(case.logits)
    if c is None:
        return
    shifted = (case.logits.astype(np.float64) + c).astype(case.logits.dtype)
    for function in SHIFT_INVARIANT:
        if not ctx.provides(function) or not ctx.truth.applicable(function):
            continue
        args, options = ctx.truth.arguments(function)
        out = ctx.call(function, shifted, *args[1:], **options)
        if out.fault is not None and out.fault.kind in SILENT_FAULTS:
            continue
        if not out.ok:
            yield fault_finding(ctx, "shift-invariance", function, out,
                                rows_of(ctx.truth.exact(function), case))
            continue
        inputs = ctx.truth.grading_inputs(function)
        yield graded_finding(ctx, "shift-invariance", function, out.value,
                             ctx.truth.decoded(function), inputs=shifted,
                             target=inputs["target"], options=inputs["options"])


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous row ranges covering 0..n, as even as can be."""
    edges = [n * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _chunk_invariance(ctx: Context) -> Iterator[Finding]:
    """The loss and gradient of the batch split in CHUNKS parts, put back together (rows
    concatenated; sums added; means weighted by each part's divisor, D_i / D) against the
    candidate's own whole-batch result, within twice its allowed error plus the rounding
    the recombination may add ((N + 2) units of the dtype on the summed magnitudes)."""
    case = ctx.case
    if case.num_rows < 2:
        return
    reduction = case.options.get("reduction", "none")
    denominator = mean_denominator(case, ctx.truth.dialect) if reduction == "mean" else 1.0
    if not denominator:
        return  # a mean over no weight: 0/0 whole, nothing to recombine
    fmt = ref.float_format(case.dtype)
    eps = 2.0 ** (1 - fmt.precision)
    splits: dict[int, list[tuple[int, int, Case]]] = {}

    def split(parts: int) -> list[tuple[int, int, Case]]:
        # one set of pieces for both functions: the worker keeps their arrays
        if parts not in splits:
            splits[parts] = [(start, stop, case.select_rows(range(start, stop)))
                             for start, stop in _chunks(case.num_rows, parts)]
        return splits[parts]

    for function in ("cross_entropy", "cross_entropy_grad"):
        if not ctx.provides(function) or not ctx.truth.applicable(function):
            continue
        whole_outcome = ctx.outcome(function)
        if not whole_outcome.ok:
            continue  # the value or gradient check reports it
        whole = whole_outcome.value.astype(np.float64)
        exact = ctx.truth.decoded(function)
        graded = exact.finite & np.isfinite(whole)
        tol = np.nan_to_num(allowed_abs(ctx, function, whole_outcome.value), nan=0.0)
        tol *= 2  # (a copy: what allowed_abs keeps is read-only)
        violated = np.zeros(rows_of(whole, case), dtype=bool)
        notes: list[str] = []
        scalar = np.ndim(whole) == 0
        loops = grading.compiled_loops(np.size(whole)) if np.ndim(whole) == 2 else None
        if not scalar:  # the same limit for every split: the sums' magnitudes are |whole|
            with np.errstate(all="ignore"):
                limit = tol + ((case.num_rows + 2) * eps * np.abs(whole) + fmt.smallest_normal)
        for parts in CHUNKS:
            if case.num_rows < parts:
                continue
            pieces, magnitude, failure = [], 0.0, None
            for start, stop, sub in split(parts):
                out = ctx.call(function, sub.logits, sub.target, **sub.options)
                if out.fault is not None and out.fault.kind in SILENT_FAULTS:
                    return
                if not out.ok or np.shape(out.value) != _shape_of(function, sub):
                    failure = (f"rows {start}..{stop - 1}: "
                               f"{out.fault or f'returned shape {np.shape(out.value)}'}")
                    break
                share = (mean_denominator(sub, ctx.truth.dialect) / denominator
                         if reduction == "mean" else 1.0)
                if not share:
                    pieces.append(np.zeros(np.shape(out.value)))  # no weight: adds nothing
                    continue
                with np.errstate(all="ignore"):
                    piece = out.value.astype(np.float64) * share
                pieces.append(piece)
                if scalar:
                    magnitude += float(np.sum(np.abs(piece)))
            if failure is not None:
                violated[:] = True
                notes.append(f"split in {parts}: {failure}")
                continue
            with np.errstate(all="ignore"):
                combined = (np.concatenate(pieces) if function == "cross_entropy_grad"
                            or reduction == "none" else np.array(math.fsum(
                                float(p) for p in pieces)))
                if scalar:
                    limit = tol + ((case.num_rows + 2) * eps * magnitude + fmt.smallest_normal)
            if loops is not None:  # the comparison below in one pass: the same rows
                bad = np.empty(len(whole), bool)
                if not loops.rows_off_limit_into(combined, whole, limit, graded, bad):
                    continue
            with np.errstate(all="ignore"):
                off = np.abs(combined - whole)
            out_of_bounds = graded & ~(off <= limit)
            bad = np.asarray(out_of_bounds.any(axis=1) if np.ndim(whole) == 2
                             else out_of_bounds).reshape(-1)
            if bad.any():
                at = np.unravel_index(int(np.argmax(np.where(out_of_bounds, off, -1))),
                                      np.shape(whole))
                where = "" if not at else f"at {list(map(int, at))}: "
                notes.append(f"split in {parts}: {where}{float(combined[at])!r} against "
                             f"{float(whole[at])!r} for the whole batch")
            violated |= bad
        yield boolean_finding(ctx, "chunk-invariance", function, violated, "; ".join(notes))


def _shape_of(function: str, case: Case) -> tuple[int, ...]:
    if function == "cross_entropy_grad":
        return case.shape
    return (case.num_rows,) if case.options.get("reduction", "none") == "none" else ()
