"""Derivatives against gold: the fused gradient, the softmax Jacobian, the −y/ŷ route, the
forward-mode JVPs and the Hessian-vector product.

Every verdict is backed by a certificate: the gold derivative of the very case is checked
against high-precision finite differences of the gold function along a random direction
(:meth:`xentcheck.harness.truth.Truth.certificate`). A case whose certificate does not hold is not
graded at all (it would be the reference, not the candidate, at fault) and says so.
"""

from __future__ import annotations

from collections.abc import Iterator

from xentcheck.harness.checks import Context, outside_finding
from xentcheck.harness.checks.values import graded_outputs
from xentcheck.harness.findings import Finding

FUNCTIONS = ("cross_entropy_grad", "softmax_jacobian", "cross_entropy_grad_wrt_probs")
#: Forward mode (check ``jvp``) and second order (check ``hvp``): JVPs of softmax,
#: log_softmax and the loss along the case's tangent, the loss's Hessian-vector product.
#: Each gold value is a directional derivative, certified by finite differences along
#: the very tangent (``xentcheck.harness.truth.Truth.certificate``).
JVP_FUNCTIONS = ("softmax_jvp", "log_softmax_jvp", "cross_entropy_jvp")
HVP_FUNCTIONS = ("cross_entropy_hvp",)


def run(ctx: Context) -> Iterator[Finding]:
    yield from certified(ctx, "gradient", FUNCTIONS)
    yield from certified(ctx, "jvp", JVP_FUNCTIONS)
    yield from certified(ctx, "hvp", HVP_FUNCTIONS)


def certified(ctx: Context, check: str, functions: tuple[str, ...]) -> Iterator[Finding]:
    """Grade each function against gold where its gold certificate holds."""
    for function in functions:
        outside = outside_finding(ctx, check, function)
        if outside is not None:
            yield outside
            continue
        if not ctx.provides(function) or not ctx.truth.applicable(function):
            continue
        certificate = ctx.truth.certificate(function)
        if not certificate.holds:
            why = f"; {certificate.note}" if certificate.note else ""
            yield Finding(check, function, ctx.case, 0, 0, {}, None,
                          note=f"gold certificate failed ({certificate.digits:.1f} digits"
                               f"{why}): not graded")
            continue
        yield from graded_outputs(ctx, check, (function,))
