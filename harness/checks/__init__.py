"""The checks, one module per family (DESIGN.md §6), and what they share.

Every family is a function ``run(ctx) -> Iterator[Finding]`` over one adapter and one
case. :class:`Context` gives it the case's truth, the adapter handle and a memo of the
adapter's outputs, so several checks reuse one call. ``FAMILIES`` lists them in the order
the runner applies them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xentcheck.harness import grading
from xentcheck.harness.adapters.contract import CallOutcome
from xentcheck.harness.cases import Case
from xentcheck.harness.findings import (
    HOLDS,
    OUTSIDE,
    REFUSED,
    VIOLATED,
    Finding,
    Worst,
    call_inputs,
    exact_text,
    hex_value,
    input_row,
    severity,
)
from xentcheck.harness.truth import Truth
from xentcheck.references.rounding import float_format

#: Longest case JSON a reproducer embeds; longer cases are named by their origin.
REPRODUCER_CHARS = 6000
#: Most logits a reproducer serializes to find out (cases and rows beyond it are named).
REPRODUCER_ELEMENTS = 4096

#: Faults that give no finding: the adapter does not do this, or the call was not made
#: because the function or adapter is quarantined (counted apart, as "not run").
SILENT_FAULTS = ("not-provided", "not-run")


@dataclass
class Context:
    """One adapter on one case."""

    adapter: str  # the adapter's name in reports
    spec: str  # how to load it again (for reproducers)
    handle: Any  # xentcheck.harness.adapters.isolation.AdapterHandle
    truth: Truth
    profile: grading.Profile
    budgets: dict[tuple[str, str, str], grading.Budget] = field(default_factory=dict)
    timeout: float | None = None
    _memo: dict[str, CallOutcome] = field(default_factory=dict)
    _grades: dict[str, tuple[np.ndarray, float, grading.ElementGrades]] = field(
        default_factory=dict)
    _allowed: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def case(self) -> Case:
        return self.truth.case

    def provides(self, function: str) -> bool:
        return function in self.handle.provides and self.case.dtype in self.handle.dtypes

    def call(self, function: str, *arrays: np.ndarray, **options: Any) -> CallOutcome:
        return self.handle.call(function, *arrays, timeout=self.timeout, **options)

    def outcome(self, function: str) -> CallOutcome:
        """The adapter's output for this case's own arguments (called once, then kept)."""
        if function not in self._memo:
            args, options = self.truth.arguments(function)
            self._memo[function] = self.call(function, *args, **options)
        return self._memo[function]

    def value(self, function: str) -> np.ndarray | None:
        """The adapter's output for this case when it provides the function, the function
        applies, and the call came back clean; else None."""
        if not self.provides(function) or not self.truth.applicable(function):
            return None
        outcome = self.outcome(function)
        return outcome.value if outcome.ok else None

    def element_grades(self, function: str, candidate: np.ndarray,
                       ulp_budget: float | None = None) -> grading.ElementGrades:
        """``grading.grade_elements`` of ``candidate``, an output of ``function`` on this
        case's own arguments, under ``ulp_budget`` (None: any; the allowed errors do not
        depend on it), kept for the next check that reads the same output."""
        kept = self._grades.get(function)
        if kept is not None and kept[0] is candidate and ulp_budget in (None, kept[1]):
            return kept[2]
        budget = grading.DEFAULT_ULP_BUDGET if ulp_budget is None else ulp_budget
        element = grading.grade_elements(function, candidate, self.truth.decoded(function),
                                         dtype=self.case.dtype, ulp_budget=budget,
                                         **self.truth.grading_inputs(function))
        self._grades[function] = (candidate, budget, element)
        return element

    def reproducer(self, function: str, row: int | None) -> str:
        """A command that replays ``function`` on the whole case (a failure may depend on
        the other rows: a reduction, a shift over the batch; the report names the row).
        A sampled case is named by the expression that regenerates it; a case without one
        (hunted, pinned, a corpus) is embedded as JSON, cut to its worst row if long."""
        case = self.case
        if case.origin:  # the sample expression: short, and the same bytes on every run
            text = case.origin
        elif case.logits.size > REPRODUCER_ELEMENTS and (
                row is None or case.num_classes > REPRODUCER_ELEMENTS):
            return (f"# case {case.case_id}: {case.logits.size} logits, too many to embed "
                    "(save it with Case.to_json and replay it with "
                    "python -m xentcheck.harness.repro)")
        else:
            text = case.to_json()
            if len(text) > REPRODUCER_CHARS and row is not None and case.num_rows > 1:
                text = case.select_rows([row]).to_json()
        return (f"python -m xentcheck.harness.repro {shlex.quote(self.spec)} {function} "
                f"{shlex.quote(text)}")


def rows_of(value: np.ndarray | None, case: Case) -> int:
    """How many rows an output stands for: N, or 1 for a reduced (scalar) output."""
    if value is None or np.ndim(value) == 0:
        return 1
    return int(np.shape(value)[0])


def allowed_abs(ctx: Context, function: str, candidate: np.ndarray) -> np.ndarray:
    """The allowed absolute error of each element (stability bound or ulp budget); NaN
    where the exact value is not a finite number. Kept for the next check that asks
    about the same output (read-only)."""
    kept = ctx._allowed.get(function)
    if kept is not None and kept[0] is candidate:
        return kept[1]
    graded = ctx.element_grades(function, candidate)
    decoded = ctx.truth.decoded(function)
    loops = grading.compiled_loops(graded.allowed.size)
    if loops is not None and graded.allowed.ndim:  # one pass instead of some ten
        fmt = float_format(ctx.case.dtype)
        allowed = np.empty(graded.allowed.shape)
        loops.allowed_abs_into(
            np.ascontiguousarray(graded.allowed, np.float64).reshape(-1),
            float(ctx.profile.ulp_budget), np.ascontiguousarray(decoded.expo).reshape(-1),
            np.ascontiguousarray(decoded.finite).reshape(-1), fmt.emin, fmt.emax,
            1 - fmt.precision, allowed.reshape(-1))
    else:
        allowed = np.maximum(np.nan_to_num(graded.allowed, nan=0.0), ctx.profile.ulp_budget)
        allowed = allowed * decoded.ulp(ctx.case.dtype)
    if isinstance(allowed, np.ndarray):  # a reduced output's is a scalar
        allowed.flags.writeable = False
    ctx._allowed[function] = (candidate, allowed)
    return allowed


def target_mass(case: Case) -> np.ndarray:
    """The target as an (N, K) float64 array of mass: one-hot rows for class indices (all
    zero for an index outside [0, K), e.g. an ignored row), the dense target otherwise."""
    if case.target_kind == "indices":
        y = np.zeros(case.shape)
        valid = (case.target >= 0) & (case.target < case.num_classes)
        y[np.flatnonzero(valid), case.target[valid]] = 1.0
        return y
    return case.target.astype(np.float64)


def outside_finding(ctx: Context, check: str, function: str) -> Finding | None:
    """An "outside contract" record (every row, none failed) when the case lies outside
    ``function``'s documented domain under the adapter's dialect; else None."""
    if not ctx.provides(function):
        return None
    outside = ctx.truth.outside_rule(function)
    if outside is None:
        return None
    return recorded_finding(ctx, check, function, OUTSIDE, outside[0],
                            ctx.truth.outside_contract(function) or "", ctx.case.num_rows)


def recorded_finding(ctx: Context, check: str, function: str, grade: str, rule: str,
                     note: str, rows: int) -> Finding:
    """Rows recorded, not graded, under a dialect rule: counted as ``grade`` and as
    ``"<grade>: <rule>"`` (the report's per-rule tally), none failed."""
    return Finding(check, function, ctx.case, rows, 0, {grade: rows, f"{grade}: {rule}": rows},
                   grade, note=note)


def refused(ctx: Context, function: str, outcome: CallOutcome) -> bool:
    """Whether the call raised where the adapter's dialect documents an exception: a NaN
    or ±inf among its inputs under ``refuses-nonfinite``."""
    fault = outcome.fault
    if (fault is None or fault.kind != "raised"
            or not ctx.truth.dialect.has("refuses-nonfinite")):
        return False
    args, _ = ctx.truth.arguments(function)
    return any(np.asarray(a).dtype.kind in "fV"
               and not bool(np.isfinite(np.asarray(a, np.float64)).all()) for a in args)


def fault_finding(ctx: Context, check: str, function: str, outcome: CallOutcome,
                  rows: int) -> Finding:
    """A call that gave no gradable value: every row is broken, the fault says why (or,
    where the dialect documents that exception, every row is "refused", none failed)."""
    fault = outcome.fault
    assert fault is not None
    if refused(ctx, function, outcome):
        return recorded_finding(ctx, check, function, REFUSED, "refuses-nonfinite",
                                f"refused ({ctx.truth.dialect.name}, documented): {fault}",
                                rows)
    worst = Worst(ctx.case.case_id, 0 if ctx.case.num_rows else None, [],
                  input_row(ctx.case.logits, 0) if ctx.case.num_rows else [], None, None,
                  None, None, None, ctx.reproducer(function, 0 if ctx.case.num_rows else None),
                  severity("broken"),
                  call_inputs(ctx.case, function, 0 if ctx.case.num_rows else None))
    return Finding(check, function, ctx.case, rows, rows, {"broken": rows}, "broken",
                   worst=worst, note=str(fault))


def graded_finding(ctx: Context, check: str, function: str, candidate: np.ndarray,
                   exact: Any, *, inputs: np.ndarray, target: Any = None,
                   options: dict[str, Any] | None = None,
                   profile: grading.Profile | None = None,
                   tangent: np.ndarray | None = None,
                   memo: dict[Any, Any] | None = None,
                   element: grading.ElementGrades | None = None) -> Finding:
    """Grade ``candidate`` against ``exact`` (gold's values, or the same already decoded by
    ``grading.decode``) and judge it by the run's profile (and the adapter's accuracy
    budget, if it has one). ``element``: the grading already done under the profile's N
    (``Context.element_grades``); ``memo``: as ``grading.grade_elements`` takes it."""
    profile = profile or ctx.profile
    decoded = grading.decode(exact)
    if element is None:
        element = grading.grade_elements(function, candidate, decoded, inputs=inputs,
                                         target=target, options=options, dtype=ctx.case.dtype,
                                         ulp_budget=profile.ulp_budget, tangent=tangent,
                                         memo=memo)
    elif element.ulp_budget != profile.ulp_budget or element.function != function:
        raise ValueError(f"{function}: graded under N = {element.ulp_budget:g}, the profile "
                         f"has N = {profile.ulp_budget:g}")
    # ``name (spec)`` first: where two adapters of a run share a name, that is each one's
    # name in the report (known once every adapter has run); the plain name covers both
    budget = (grading.budget_for(ctx.budgets, f"{ctx.adapter} ({ctx.spec})", function,
                                 ctx.case.dtype, ctx.case.regime)
              or grading.budget_for(ctx.budgets, ctx.adapter, function, ctx.case.dtype,
                                    ctx.case.regime))
    verdict = grading.judge(element, profile, budget=budget)
    budgeted = verdict.budget_used and verdict.budgeted is not None and verdict.budget
    result = verdict.budgeted if budgeted else verdict.result
    ratio_limit = max(1.0, verdict.budget.max_ratio or 0.0) if budgeted else 1.0
    worst = None
    index = worst_element(element, result.ulp_budget, ratio_limit)
    if index is not None:
        row = index[0] if np.ndim(candidate) >= 1 else None
        worst = Worst(
            ctx.case.case_id, row, list(index), input_row(inputs, row),
            hex_value(np.asarray(candidate)[index]), exact_text(decoded.element(index)),
            float(element.ulp[index]), float(element.ratio[index]),
            float(element.allowed[index]), ctx.reproducer(function, row),
            severity(result.grade), call_inputs(ctx.case, function, row),
        )
    max_ulp, max_ratio = largest_errors(element)
    return Finding(check, function, ctx.case, result.rows, verdict.failed,
                   dict(result.grades), result.grade, max_ulp, max_ratio,
                   worst, budget=str(verdict.budget.reason) if budgeted else None)


def worst_element(element: grading.ElementGrades, ulp_budget: float,
                  ratio_limit: float = 1.0) -> tuple[int, ...] | None:
    """The index of the worst element: of the worst grade (under ``ulp_budget`` and
    ``ratio_limit``, as judged), the one with the largest error in ulps, the first of
    equals (broken ones are all infinitely wrong). The same order as
    :func:`xentcheck.harness.findings.worst_key` across cases, so that a result's
    ``max_ulp`` is its worst case's whenever the largest error lies in the worst grade.
    None when nothing was graded."""
    codes = grading.codes_under(element, ulp_budget, ratio_limit)
    worst = int(codes.max(initial=-1))
    if worst < 0:
        return None
    flat = grading.first_largest(element.ulp, codes == worst, nan=-1.0)
    return tuple(int(i) for i in np.unravel_index(flat, np.shape(codes)))


def largest_errors(element: grading.ElementGrades) -> tuple[float | None, float | None]:
    """The largest error in ulps and the largest stability ratio over every graded
    element, broken ones included (their error is infinite: a summary that left them out
    would read "0 ulp" above a worst case of NaN). None when nothing was graded."""
    return element.largest[2], element.largest[3]


def boolean_finding(ctx: Context, check: str, function: str, violated: np.ndarray,
                    note: str = "", shown: np.ndarray | None = None) -> Finding:
    """A check that holds or not per row; ``violated`` is a boolean per row."""
    violated = np.asarray(violated, dtype=bool).reshape(-1)
    bad = int(violated.sum())
    worst = None
    if bad:
        row = int(np.argmax(violated))
        inputs = shown if shown is not None else ctx.case.logits
        worst = Worst(ctx.case.case_id, row, [row], input_row(inputs, row), None, None,
                      None, None, None, ctx.reproducer(function, row), severity(VIOLATED),
                      call_inputs(ctx.case, function, row))
    grades = {HOLDS: int(violated.size - bad)} if violated.size - bad else {}
    if bad:
        grades[VIOLATED] = bad
    return Finding(check, function, ctx.case, int(violated.size), bad, grades,
                   VIOLATED if bad else HOLDS, worst=worst, note=note if bad else "")


Family = Callable[[Context], Iterator[Finding]]


def families() -> dict[str, Family]:
    """The check families by name, in the order the runner applies them."""
    from xentcheck.harness.checks import (
        consistency,
        derivatives,
        edges,
        invalid,
        invariants,
        values,
    )

    return {
        "values": values.run,
        "derivatives": derivatives.run,
        "consistency": consistency.run,
        "invariants": invariants.run,
        "edges": edges.run,
        "invalid": invalid.run,
    }
