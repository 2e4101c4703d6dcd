"""The truth: exact reference values for softmax and cross-entropy, and the tools that prove them.

``xentcheck.references.gold`` computes every function of the design in mpmath;
``xentcheck.references.fd``
proves its derivatives by high-precision finite differences; ``xentcheck.references.rounding``
rounds exact values to a dtype and measures ulp errors. The common names are
re-exported here.
"""

from __future__ import annotations

from xentcheck.references.gold import (
    DEFAULT_PREC,
    UNDEFINED,
    cross_entropy,
    cross_entropy_from_probs,
    cross_entropy_grad,
    cross_entropy_grad_wrt_probs,
    cross_entropy_hessian,
    cross_entropy_hvp,
    cross_entropy_jvp,
    log_softmax,
    log_softmax_jvp,
    logsumexp,
    softmax,
    softmax_jacobian,
    softmax_jvp,
)
from xentcheck.references.rounding import FloatFormat, float_format, round_to, ulp, ulp_error

__all__ = [
    "DEFAULT_PREC",
    "UNDEFINED",
    "FloatFormat",
    "float_format",
    "round_to",
    "ulp",
    "ulp_error",
    "cross_entropy",
    "cross_entropy_from_probs",
    "cross_entropy_grad",
    "cross_entropy_grad_wrt_probs",
    "cross_entropy_hessian",
    "cross_entropy_hvp",
    "cross_entropy_jvp",
    "log_softmax",
    "log_softmax_jvp",
    "logsumexp",
    "softmax",
    "softmax_jacobian",
    "softmax_jvp",
]
