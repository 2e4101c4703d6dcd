"""Edge behaviour the reference leaves ungraded (DESIGN.md §4): recorded, not judged.

For rows with +inf logits (the limit is one-hot, NaN is common) and all −inf rows (0/0),
and for a mean over no targets (0/0), what the candidate returned is recorded as
``nan``, ``inf``, ``finite`` or ``limit`` (+inf rows that match the limit), so reports can
show a behaviour table. A call that gave no value is recorded by its fault: ``raised``
only when the call was made and raised; ``not offered`` (:data:`NOT_OFFERED`) when it was
never made because the adapter does not accept an option the case needs (or the function
was quarantined: ``not run``); the fault kind otherwise (``crashed``, ``timeout``,
``wrong-shape``, ...). The one graded part: when every target is ignored the gradient of
the mean must be 0 (check ``ignored-mean``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from xentcheck.harness.checks import Context, boolean_finding
from xentcheck.harness.findings import Finding
from xentcheck.references.gold import UNDEFINED

FUNCTIONS = ("logsumexp", "softmax", "log_softmax", "cross_entropy", "cross_entropy_grad")

#: What a call that was never made is recorded as: the adapter does not offer the call
#: (an option the case needs is not in its signature).
NOT_OFFERED = "not offered"

#: The recorded behaviour of a call that gave no value, by fault kind (other kinds are
#: recorded under their own name: ``crashed``, ``timeout``, ``wrong-shape``, ...).
_FAULT_BEHAVIOUR = {"raised": "raised", "not-provided": NOT_OFFERED, "not-run": "not run"}


def situations(case_logits: np.ndarray) -> dict[str, np.ndarray]:
    """Rows per ungraded situation."""
    z = case_logits.astype(np.float64)
    return {
        "+inf logit": np.any(z == np.inf, axis=1) & ~np.any(np.isnan(z), axis=1),
        "all -inf row": np.all(z == -np.inf, axis=1) & (z.shape[1] > 0),
    }


def behaviour(value: np.ndarray | None, limit: np.ndarray | None = None,
              fault: str | None = "raised") -> str:
    """What one row of output shows: ``nan``, ``limit``, ``inf`` or ``finite``; for no
    value (``value`` None), what became of the call, from the ``fault`` kind."""
    if value is None:
        return _FAULT_BEHAVIOUR.get(fault or "raised", fault or "raised")
    v = np.asarray(value, dtype=np.float64)
    if np.any(np.isnan(v)):
        return "nan"
    if limit is not None and np.array_equal(v, limit):
        return "limit"
    if np.any(np.isinf(v)):
        return "inf"
    return "finite"


def run(ctx: Context) -> Iterator[Finding]:
    case = ctx.case
    if case.num_rows == 0:
        return
    rows_by_situation = situations(case.logits)
    for function in FUNCTIONS:
        if not ctx.provides(function) or not ctx.truth.applicable(function):
            continue
        outcome = ctx.outcome(function)
        value = outcome.value if outcome.ok else None
        fault = outcome.fault.kind if outcome.fault is not None else None
        if value is not None and np.ndim(value) == 0:
            continue  # reductions mix rows: the per-row behaviour is what is recorded
        exact = ctx.truth.exact(function)
        if np.ndim(exact) == 0:
            continue
        for situation, rows in rows_by_situation.items():
            for n in np.flatnonzero(rows):
                limit = None
                exact_row = exact[n]
                if situation == "+inf logit" and UNDEFINED not in np.ravel(exact_row):
                    limit = np.array([float(x) for x in np.ravel(exact_row)]).reshape(
                        np.shape(exact_row))
                seen = behaviour(None if value is None else value[n], limit, fault)
                yield Finding("edge", function, case, 1, 0, {seen: 1}, None,
                              note=f"{situation}: {seen}")
    yield from _ignored_mean(ctx)


def _ignored_mean(ctx: Context) -> Iterator[Finding]:
    case = ctx.case
    ignore = case.options.get("ignore_index")
    if (case.options.get("reduction") != "mean" or ignore is None
            or case.target_kind != "indices" or not np.all(case.target == ignore)):
        return
    if not ctx.provides("cross_entropy_grad"):
        return
    outcome = ctx.outcome("cross_entropy_grad")
    if outcome.fault is not None and outcome.fault.kind == "not-provided":
        return
    bad = not outcome.ok or not np.all(outcome.value.astype(np.float64) == 0)
    yield boolean_finding(ctx, "ignored-mean", "cross_entropy_grad", np.array([bad]),
                          "every target ignored: the gradient of the mean must be 0")
