"""Derivatives against gold: the fused gradient, the softmax Jacobian and the −y/ŷ route.

Every verdict is backed by a certificate: the gold derivative of the very case is checked
against high-precision finite differences of the gold function along a random direction
(:meth:`harness.truth.Truth.certificate`). A case whose certificate does not hold is not
graded at all (it would be the reference, not the candidate, at fault) and says so.
"""

from __future__ import annotations

from collections.abc import Iterator

from harness.checks import Context
from harness.checks.values import graded_outputs
from harness.findings import Finding

FUNCTIONS = ("cross_entropy_grad", "softmax_jacobian", "cross_entropy_grad_wrt_probs")


def run(ctx: Context, functions: tuple[str, ...] = FUNCTIONS) -> Iterator[Finding]:
    for function in functions:
        if not ctx.provides(function) or not ctx.truth.applicable(function):
            continue
        certificate = ctx.truth.certificate(function)
        if not certificate.holds:
            yield Finding("gradient", function, ctx.case, 0, 0, {}, None,
                          note=f"gold certificate failed ({certificate.digits:.1f} digits): "
                               "not graded")
            continue
        yield from graded_outputs(ctx, "gradient", (function,))
