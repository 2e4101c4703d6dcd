"""The adapter contract of DESIGN.md §3: the functions an adapter may provide.

An adapter is any object (a module, an instance) exposing a subset of ``FUNCTIONS``;
there is no base class and no registration. Built-in adapter modules expose
``load() -> object`` and raise :class:`AdapterUnavailable` when what they wrap is
not installed.
"""

from __future__ import annotations

FUNCTIONS: tuple[str, ...] = (
    "logsumexp",
    "softmax",
    "log_softmax",
    "cross_entropy",
    "cross_entropy_grad",
    "softmax_jacobian",
    "cross_entropy_from_probs",
    "cross_entropy_grad_wrt_probs",
)

#: Keyword options an adapter's ``cross_entropy``/``cross_entropy_grad`` may accept;
#: which ones it accepts is read from its signature.
OPTIONS: tuple[str, ...] = ("label_smoothing", "weight", "ignore_index", "reduction")


class AdapterUnavailable(Exception):
    """An adapter cannot be used here; the message says why (framework missing, no compiler)."""
