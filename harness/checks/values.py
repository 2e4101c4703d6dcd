"""Values against gold: logsumexp, softmax, log_softmax, cross-entropy (from logits and from
probabilities), graded in ulps and by the stability ratio (DESIGN.md §6, §7)."""

from __future__ import annotations

from collections.abc import Iterator

from xentcheck.harness.checks import (
    SILENT_FAULTS,
    Context,
    fault_finding,
    graded_finding,
    outside_finding,
    rows_of,
)
from xentcheck.harness.findings import Finding

FUNCTIONS = ("logsumexp", "softmax", "log_softmax", "cross_entropy", "cross_entropy_from_probs")


def run(ctx: Context) -> Iterator[Finding]:
    yield from graded_outputs(ctx, "value", FUNCTIONS)


def graded_outputs(ctx: Context, check: str, functions: tuple[str, ...]) -> Iterator[Finding]:
    """Call each provided, applicable function on the case and grade it against gold."""
    truth = ctx.truth
    for function in functions:
        outside = outside_finding(ctx, check, function)
        if outside is not None:
            yield outside
            continue
        if not ctx.provides(function) or not truth.applicable(function):
            continue
        outcome = ctx.outcome(function)
        if outcome.fault is not None and outcome.fault.kind in SILENT_FAULTS:
            continue
        exact = truth.exact(function)
        usable = outcome.value is not None and not any(
            f.kind not in ("mutated-input",) for f in outcome.faults)
        if not usable:
            yield fault_finding(ctx, check, function, outcome, rows_of(exact, ctx.case))
            continue
        element = ctx.element_grades(function, outcome.value, ctx.profile.ulp_budget)
        yield graded_finding(ctx, check, function, outcome.value, truth.decoded(function),
                             element=element, **truth.grading_inputs(function))
