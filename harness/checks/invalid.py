"""Invalid inputs: an out-of-range class index or a negative probability.

Raising is conformant, and so is a non-finite answer for the offending row; a silent
finite value is a failure (DESIGN.md §4), except where the adapter's dialect documents a
domain that excludes the input (targets that must be distributions): "outside contract".
The class indices tried are K, -1 (which a negative index wraps to class K - 1), -2 and
-K - 1, each unless it is the case's ignore_index. Run once per case of the ``moderate``
regime (options of every kind) and of the ``ignored`` regime (every case with an
ignore_index).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from xentcheck.harness.checks import Context, boolean_finding, recorded_finding
from xentcheck.harness.findings import OUTSIDE, Finding

FUNCTIONS = ("cross_entropy", "cross_entropy_grad")
#: The regimes whose cases the invalid targets are tried on.
REGIMES = ("moderate", "ignored")


def _variants(ctx: Context) -> list[tuple[str, np.ndarray]]:
    case = ctx.case
    k = case.num_classes
    if case.target_kind == "indices":
        out = []
        ignore = case.options.get("ignore_index")
        for bad in dict.fromkeys((k, -1, -2, -k - 1)):
            if bad == ignore:
                continue
            target = case.target.copy()
            target[0] = bad
            out.append((f"class index {bad} with {k} classes", target))
        return out
    target = case.target.copy()
    target[0, 0] = -abs(float(target[0, 0])) - 0.5
    return [("a negative probability", target)]


def run(ctx: Context) -> Iterator[Finding]:
    case = ctx.case
    if case.regime not in REGIMES or case.num_rows == 0 or case.num_classes < 2:
        return
    for function in FUNCTIONS:
        if not ctx.provides(function):
            continue
        for what, target in _variants(ctx):
            if case.target_kind != "indices" and ctx.truth.dialect.has("target-distribution"):
                # a negative probability is outside a domain of distributions: not asked
                yield recorded_finding(
                    ctx, "invalid-input", function, OUTSIDE, "target-distribution",
                    f"outside contract ({ctx.truth.dialect.name}, target-distribution): "
                    f"{what}", 1)
                continue
            options = {**case.options, "reduction": "none"} if function == "cross_entropy" \
                else dict(case.options)
            outcome = ctx.call(function, case.logits, target, **options)
            silent, note = False, f"{what}: returned a finite value instead of raising"
            if outcome.ok:
                first = np.asarray(outcome.value, dtype=np.float64)
                row = first[0] if first.ndim >= 1 else first
                silent = bool(np.all(np.isfinite(row)))
            elif outcome.fault is not None and outcome.fault.kind == "not-provided":
                continue
            elif outcome.fault is not None and outcome.fault.kind in (
                    "crashed", "exited", "timeout"):
                silent, note = True, f"{what}: {outcome.fault} (raising is the conformant way)"
            yield boolean_finding(ctx, "invalid-input", function, np.array([silent]), note)
