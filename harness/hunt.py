"""Worst-case hunting: Hypothesis searches for the inputs an adapter gets most wrong.

:func:`hunt` runs a Hypothesis search over :func:`xentcheck.harness.strategies.cases` for one
adapter, function and dtype (and optionally one regime). Every drawn case goes through
the adapter and is graded against the gold exactly as the ``values`` and ``gradient``
checks of a run grade it: same profile, same accuracy budgets, and a derivative is failed
only where the gold's finite-difference certificate holds for that very input (checked
for the cases that would fail, so that passing cases cost no certificate). Two observations go to
:func:`hypothesis.target`, so that Hypothesis climbs towards the worst inputs:

* ``"<function>: log2 failure margin"``, the largest over the output's graded elements of
  log2 of how far the element is from failing the profile. Under ``standard`` an element
  fails when it is off by more than N ulps *and* its stability ratio exceeds 1, so its
  margin is ``min(log2(ulp / N), log2(ratio))``; under ``strict`` it is ``log2(ulp / N)``.
  A margin above 0 fails; a broken element (non-finite where finite is right, a fault)
  counts as :data:`LOG2_CAP`.
* ``"<function>: log2 ulp"``, log2 of the largest error in ulps (capped the same way).

A case that fails the profile raises inside the test, so Hypothesis shrinks it to a
minimal failing case, which is caught and returned with a one-line reproducer
(``python -m xentcheck.harness.repro SPEC FUNCTION 'CASEJSON'``). Searches are deterministic for a
seed (``@hypothesis.seed``; no example database, no deadline, no explain phase).

:func:`pin` appends cases to the pinned corpus that every run replays
(:data:`xentcheck.harness.runner.PINNED_CASES`); :func:`hunt_all` hunts every function and dtype an
adapter provides and pins what it found.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings

from xentcheck.harness import grading, strategies
from xentcheck.harness.adapters.contract import (
    DTYPES,
    FUNCTIONS,
    FUNCTIONS_WITH_OPTIONS,
    CallOutcome,
    dtype_name,
)
from xentcheck.harness.cases import Case
from xentcheck.harness.checks import Context, fault_finding, graded_finding, rows_of
from xentcheck.harness.findings import Worst
from xentcheck.harness.truth import MAX_JACOBIAN_CLASSES, Truth
from xentcheck.references import portable

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "LOG2_CAP",
    "PIN_MAX_ENTRIES",
    "HuntError",
    "HuntResult",
    "hunt",
    "hunt_all",
    "pin",
]

#: Examples per hunt when not told: enough for the targeting phase to climb a few steps
#: (Hypothesis spends part of ``max_examples`` on generation, part on targeting).
DEFAULT_MAX_EXAMPLES = 200

#: Cap of the log2 observations passed to ``target()`` (which must be finite), standing
#: for infinite errors (broken elements). It is above the log2 of any finite ulp error:
#: the farthest a finite float64 can be from an exact value is below 2**1024 / 2**-1074
#: = 2**2098 ulps, and log2 of an exact 0 error is clamped to -LOG2_CAP.
LOG2_CAP = 4096.0

#: Largest input (N * K entries) :func:`hunt_all` pins as a worst case: a line of the
#: pinned corpus holds every entry as a hex float, and every run replays it through the
#: gold. Shrunk failing cases are always pinned (they are minimal, hence small).
PIN_MAX_ENTRIES = 4096

#: Faults after which the adapter's output is still graded (the value came back intact);
#: every other fault makes the whole output broken, as in the runner's checks.
_GRADED_FAULTS = ("mutated-input",)

#: The derivatives whose gold must hold its finite-difference certificate before a
#: candidate is failed on it (as the ``gradient`` check requires).
_DERIVATIVES = ("cross_entropy_grad", "softmax_jacobian", "cross_entropy_grad_wrt_probs")

_HEALTH_CHECKS = (
    HealthCheck.too_slow,  # mpmath gold and adapter calls are slow by design
    HealthCheck.filter_too_much,  # cases a function does not apply to are rejected
    HealthCheck.data_too_large,  # wide regimes draw large inputs
    HealthCheck.large_base_example,
)


class HuntError(ValueError):
    """A hunt cannot run: unknown function, dtype or regime, or the adapter lacks it or
    cannot be started. The message is one line."""


# ----------------------------------------------------------------------------- results


@dataclass
class HuntResult:
    """What one hunt found.

    ``examples`` counts the distinct cases the adapter was called on and graded (shrinking
    included; a case Hypothesis draws twice is called once). ``worst`` is the case with
    the largest failure margin seen (ties: the larger ulp error, then the first seen);
    ``max_ulp`` and ``max_ratio`` are its largest error in ulps and stability ratio (inf
    when broken; None when nothing was graded). ``failing`` is the minimal failing case
    Hypothesis shrank to (None when nothing failed).
    ``worst_report`` and ``failure_report`` say for the worst element of each: input as hex
    floats, got, should be, ulps, the bound and a one-row reproducer. ``reproducer``
    replays the whole failing case (or, with no failure, the worst case).
    """

    adapter: str
    spec: str
    function: str
    dtype: str
    regime: str | None
    profile: str
    seed: int
    max_examples: int
    examples: int = 0
    worst: Case | None = None
    max_ulp: float | None = None
    max_ratio: float | None = None
    worst_grade: str | None = None
    found_failure: bool = False
    failing: Case | None = None
    worst_report: Worst | None = None
    failure_report: Worst | None = None
    note: str = ""
    reproducer: str | None = None
    seconds: float = 0.0
    error: str | None = None

    def cases(self) -> list[Case]:
        """The cases worth pinning: the shrunk failing case first, then the worst."""
        return [c for c in (self.failing, self.worst) if c is not None]

    def summary(self) -> str:
        """One line: adapter, function, dtype, regime, the outcome and the reproducer."""
        where = f"{self.adapter} {self.function} {self.dtype} {self.regime or 'all regimes'}"
        if self.error is not None:
            return f"{where}: error: {self.error}"
        worst = f"worst {_fmt(self.max_ulp)} ulp, ratio {_fmt(self.max_ratio)}"
        if not self.found_failure:
            return f"{where}: no failure in {self.examples} examples ({worst})"
        return (f"{where}: FAILS {self.profile} ({worst}); minimal case "
                f"{self.failing.case_id if self.failing else '?'}: {self.reproducer}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinite numbers as the strings "inf"; cases as their JSON dicts)."""
        return {
            "adapter": self.adapter, "spec": self.spec, "function": self.function,
            "dtype": self.dtype, "regime": self.regime, "profile": self.profile,
            "seed": self.seed, "max_examples": self.max_examples, "examples": self.examples,
            "found_failure": self.found_failure,
            "worst": self.worst.to_dict() if self.worst is not None else None,
            "max_ulp": _json_number(self.max_ulp), "max_ratio": _json_number(self.max_ratio),
            "worst_grade": self.worst_grade,
            "failing": self.failing.to_dict() if self.failing is not None else None,
            "worst_report": self.worst_report.to_dict() if self.worst_report else None,
            "failure_report": self.failure_report.to_dict() if self.failure_report else None,
            "note": self.note, "reproducer": self.reproducer,
            "seconds": round(self.seconds, 3), "error": self.error,
        }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _json_number(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def reproducer(spec: str, function: str, case: Case) -> str:
    """The one-line shell command that replays ``function`` of adapter ``spec`` on ``case``."""
    return (f"python -m xentcheck.harness.repro {shlex.quote(spec)} {function} "
            f"{shlex.quote(case.to_json())}")


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class _Score:
    """One graded call: its failure margin and log2 ulp (NaN: nothing graded), the largest
    ulp and ratio (None: nothing graded), the worst grade and whether the profile fails."""

    margin: float
    log2_ulp: float
    max_ulp: float | None
    max_ratio: float | None
    grade: str | None
    failed: bool

    @property
    def graded(self) -> bool:
        return not math.isnan(self.margin)

    def rank(self) -> tuple[float, float]:
        """Larger is worse; anything graded is worse than nothing graded."""
        if not self.graded:
            return (-math.inf, -math.inf)
        return (self.margin, self.log2_ulp)


_UNGRADED = _Score(math.nan, math.nan, None, None, None, False)
_BROKEN = _Score(LOG2_CAP, LOG2_CAP, math.inf, math.inf, "broken", True)


def _log2(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(portable.log2(values), -LOG2_CAP, LOG2_CAP)


def _margins(grades: grading.ElementGrades, policy: grading.Profile,
             budget: grading.Budget | None) -> np.ndarray:
    """Per element, log2 of how far it is from failing ``policy`` (> 0: fails), with the
    thresholds widened by ``budget`` as :func:`xentcheck.harness.grading.judge` widens them."""
    n = policy.ulp_budget
    ratio_limit = 1.0
    if budget is not None:
        n = max(n, budget.max_ulp or 0.0)
        ratio_limit = max(1.0, budget.max_ratio or 0.0)
    ulp_limit = {"exact": 0.5, "faithful": 1.0}.get(policy.worst_passing, n)
    ulp_term = _log2(grades.ulp / ulp_limit)
    if grading.GRADES.index(policy.worst_passing) >= grading.GRADES.index("stable"):
        # within N ulps or within the textbook algorithm's bound: the nearer of the two
        margin = np.minimum(ulp_term, _log2(grades.ratio / ratio_limit))
    else:
        margin = ulp_term
    margin = np.where(grades.broken, LOG2_CAP, margin)
    return np.where(grades.graded, margin, np.nan)


def _score(grades: grading.ElementGrades, verdict: grading.Verdict, policy: grading.Profile,
           budget: grading.Budget | None) -> _Score:
    graded = grades.graded
    if not graded.any():
        return _UNGRADED
    margin = float(np.nanmax(_margins(grades, policy, budget)))
    max_ulp = float(np.max(grades.ulp[graded]))
    max_ratio = float(np.max(grades.ratio[graded]))
    return _Score(margin, float(_log2(np.asarray(max_ulp))), max_ulp, max_ratio,
                  verdict.result.grade, not verdict.passed)


# ----------------------------------------------------------------------------- the hunt


class _Failure(Exception):
    """Raised inside the Hypothesis test for a case that fails the profile."""

    def __init__(self, case: Case, score: _Score) -> None:
        super().__init__(f"{case.case_id} fails: grade {score.grade}, margin {score.margin:.3g}")
        self.case = case


class _Unavailable(Exception):
    """Raised inside the Hypothesis test when the adapter can no longer be called."""


@dataclass
class _Seen:
    case: Case
    outcome: CallOutcome | None  # kept for the worst and the failing cases only
    score: _Score


class _Hunter:
    """One adapter function on drawn cases: calls, grades, keeps the worst and last failure."""

    def __init__(self, handle: Any, function: str, policy: grading.Profile,
                 budgets: dict[tuple[str, str, str], grading.Budget],
                 timeout: float | None) -> None:
        self.handle = handle
        self.function = function
        self.policy = policy
        self.budgets = budgets
        self.timeout = timeout
        self.accepted = tuple(handle.provides.get(function, ()))
        self.examples = 0
        self.worst: _Seen | None = None
        self.failures: list[_Seen] = []  # in the order seen
        self.seen: dict[str, _Seen] = {}  # by case digest: Hypothesis replays its choice

    def fit(self, case: Case) -> Case:
        """The case with only the options the adapter's function accepts (what it is
        called with is exactly what is graded and pinned)."""
        options = {k: v for k, v in case.options.items() if k in self.accepted}
        if options == case.options:
            return case
        fitted = dataclasses.replace(case, options=options, case_id="pending")
        return dataclasses.replace(fitted,
                                   case_id=f"{case.regime}-{case.dtype}-h{fitted.digest()}")

    def examine(self, case: Case) -> _Seen | None:
        """Call and grade one case; None when the function does not apply to it."""
        truth = Truth(case)
        if not truth.applicable(self.function):
            return None
        args, options = truth.arguments(self.function)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # candidates' own warnings are not ours
            outcome = self.handle.call(self.function, *args, timeout=self.timeout, **options)
        fault = outcome.fault
        if fault is not None and fault.kind == "not-provided":
            return None
        if fault is not None and fault.kind == "unavailable":
            raise _Unavailable(fault.reason)
        self.examples += 1
        if not _usable(outcome):
            return _Seen(case, outcome, _BROKEN)
        exact = truth.exact(self.function)
        budget = grading.budget_for(self.budgets, self.handle.name, self.function, case.dtype,
                                    case.regime)
        with np.errstate(all="ignore"):
            grades = grading.grade_elements(
                self.function, outcome.value, exact, dtype=case.dtype,
                ulp_budget=self.policy.ulp_budget, **truth.grading_inputs(self.function))
        verdict = grading.judge(grades, self.policy, budget=budget)
        score = _score(grades, verdict, self.policy, budget)
        if score.failed and self.function in _DERIVATIVES:
            # accuse a gradient only on a gold derivative proven for this very input
            if not truth.certificate(self.function).holds:
                score = _UNGRADED
        return _Seen(case, outcome, score)

    def visit(self, drawn: Case) -> None:
        """The body of the Hypothesis test."""
        case = self.fit(drawn)
        seen = self.seen.get(case.digest())
        if seen is None:
            seen = self.examine(case)
            if seen is None:
                hypothesis.reject()
            self.seen[case.digest()] = seen
            self._remember(seen)
        score = seen.score
        if score.graded:
            hypothesis.target(score.margin, label=f"{self.function}: log2 failure margin")
            hypothesis.target(score.log2_ulp, label=f"{self.function}: log2 ulp")
        if score.failed:
            raise _Failure(case, score)

    def _remember(self, seen: _Seen) -> None:
        """Keep ``seen`` if it is the worst so far or fails; drop outputs no longer needed."""
        if seen.score.failed:
            self.failures.append(seen)
        previous = self.worst
        if previous is None or seen.score.rank() > previous.score.rank():
            self.worst = seen
            if previous is not None and not previous.score.failed:
                previous.outcome = None
        elif not seen.score.failed:
            seen.outcome = None

    def smallest_failure(self, shrunk: Case) -> Case | None:
        """The failing case with the fewest entries (then rows) among those seen; on a tie
        the one Hypothesis shrank to. Hypothesis orders cases by their choice sequences,
        and a large array drawn from one seeded stream can be a shorter sequence than a
        small one drawn value by value."""
        if not self.failures:
            return None
        digest = shrunk.digest()
        order = {id(f): i for i, f in enumerate(self.failures)}
        best = min(self.failures, key=lambda f: (
            f.case.logits.size, f.case.num_rows, f.case.digest() != digest, order[id(f)]))
        return best.case


def _usable(outcome: CallOutcome) -> bool:
    return outcome.value is not None and all(f.kind in _GRADED_FAULTS for f in outcome.faults)


def _search_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        database=None,  # no example database writes; the pinned corpus is the memory
        deadline=None,  # adapter calls and the mpmath gold take what they take
        derandomize=False,  # the hunt's own seed is given with @hypothesis.seed
        phases=(Phase.generate, Phase.target, Phase.shrink),  # no explain: it only re-runs
        report_multiple_bugs=False,  # one failure, shrunk to one minimal case
        suppress_health_check=_HEALTH_CHECKS,
        verbosity=Verbosity.quiet,
        print_blob=False,
    )


def _caught(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``error`` or the first exception of type ``kind`` nested in its groups or causes."""
    stack = [error]
    while stack:
        current = stack.pop()
        if isinstance(current, kind):
            return current
        stack.extend(getattr(current, "exceptions", ()))
        if current.__cause__ is not None:
            stack.append(current.__cause__)
    return None


def _strategy(handle: Any, function: str, dtype: str, regime: str | None,
              max_classes: int | None) -> Any:
    if function == "softmax_jacobian":  # the Jacobian is checked up to this K (truth.py)
        max_classes = min(max_classes or MAX_JACOBIAN_CLASSES, MAX_JACOBIAN_CLASSES)
    with_options = function in FUNCTIONS_WITH_OPTIONS and bool(handle.provides.get(function))
    try:
        return strategies.cases(dtype=dtype, regime=regime, with_options=with_options,
                                max_classes=max_classes)
    except strategies.InvalidArgument as err:
        raise HuntError(str(err)) from None


def _validate(function: str, dtype: Any, regime: str | None, max_examples: int,
              seed: int) -> str:
    if function not in FUNCTIONS:
        raise HuntError(f"unknown function {function!r}; choose from {', '.join(FUNCTIONS)}")
    try:
        name = dtype_name(dtype)
    except TypeError:
        name = None
    if name not in DTYPES:
        raise HuntError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if regime is not None and regime not in strategies.REGIMES:
        raise HuntError(f"unknown regime {regime!r}; choose from "
                        f"{', '.join(strategies.REGIMES)}")
    for label, value, least in (("max_examples", max_examples, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise HuntError(f"{label} must be an int >= {least}; got {value!r}")
    return name


def _open(adapter: Any, timeout: float | None) -> tuple[Any, bool]:
    """A handle for ``adapter`` and whether this hunt opened it (and so must close it)."""
    from xentcheck.harness.adapters.isolation import AdapterHandle
    from xentcheck.harness.adapters.registry import open_adapter

    if isinstance(adapter, AdapterHandle):
        return adapter, False
    return open_adapter(adapter, timeout=timeout), True


def hunt(
    adapter: str | Any,
    function: str,
    *,
    dtype: Any = "float64",
    regime: str | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    seed: int = 0,
    profile: str = "standard",
    timeout: float | None = 60.0,
    ulp_budget: float | None = None,
    budgets_path: str | Path | None = None,
    max_classes: int | None = None,
) -> HuntResult:
    """Search for the input on which ``adapter``'s ``function`` errs most, and shrink a
    failure of ``profile`` to a minimal case.

    ``adapter``: a spec, an adapter object, or an open handle (left open; anything else is
    opened for this hunt and closed at its end). ``regime``: one of
    :data:`xentcheck.harness.strategies.REGIMES`, or None for all but ``corpus``. ``max_examples``:
    Hypothesis' budget of valid examples (shrinking calls come on top). ``seed``: the
    search is the same for the same seed, adapter and arguments. ``timeout``: seconds per
    adapter call (enforced for adapters in a worker). ``ulp_budget``, ``budgets_path``:
    as for :func:`xentcheck.harness.runner.run`. ``max_classes``: the largest K drawn (the softmax
    Jacobian is capped at :data:`xentcheck.harness.truth.MAX_JACOBIAN_CLASSES`).

    Raises :class:`HuntError` for an unknown function, dtype or regime, or an adapter that
    lacks the function or dtype or cannot be started; a spec that names nothing raises
    :class:`~xentcheck.harness.adapters.contract.AdapterSpecError` (a usage error), as in
    :func:`xentcheck.harness.runner.run`.
    """
    started = time.monotonic()
    dtype = _validate(function, dtype, regime, max_examples, seed)
    policy = grading.profile(profile, ulp_budget=ulp_budget)
    budgets = grading.load_budgets(budgets_path)
    handle, owned = _open(adapter, timeout)
    try:
        return _hunt(handle, function, dtype, regime, max_examples, seed, policy, budgets,
                     timeout, max_classes, started)
    finally:
        if owned:
            handle.close()


def _hunt(handle: Any, function: str, dtype: str, regime: str | None, max_examples: int,
          seed: int, policy: grading.Profile,
          budgets: dict[tuple[str, str, str], grading.Budget], timeout: float | None,
          max_classes: int | None, started: float) -> HuntResult:
    info = handle.wait()
    if info.unavailable is not None:
        raise HuntError(f"{info.name} is unavailable: {info.unavailable}")
    if function not in info.provides:
        raise HuntError(f"{info.name} does not provide {function}")
    if dtype not in info.dtypes:
        raise HuntError(f"{info.name} does not take {dtype}")
    result = HuntResult(info.name, info.spec, function, dtype, regime, policy.name, seed,
                        max_examples)
    hunter = _Hunter(handle, function, policy, budgets, timeout)

    @settings(_search_settings(max_examples))
    @hypothesis.seed(seed)
    @given(_strategy(handle, function, dtype, regime, max_classes))
    def search(case: Case) -> None:
        hunter.visit(case)

    failing: Case | None = None
    try:
        search()
    except hypothesis.errors.Unsatisfiable:
        result.note = f"{function} applies to none of the cases drawn"
    except Exception as error:  # what Hypothesis re-raises after shrinking
        failure = _caught(error, _Failure)
        unavailable = _caught(error, _Unavailable)
        if failure is not None:
            failing = hunter.smallest_failure(failure.case)  # type: ignore[attr-defined]
        elif unavailable is not None:
            result.error = f"{info.name} became unavailable: {unavailable}"
            if hunter.failures:
                failing = hunter.smallest_failure(hunter.failures[-1].case)
        else:
            raise
    result.examples = hunter.examples
    _fill(result, hunter, failing, handle, policy, budgets, timeout)
    result.seconds = time.monotonic() - started
    return result


def _fill(result: HuntResult, hunter: _Hunter, failing: Case | None, handle: Any,
          policy: grading.Profile, budgets: dict[tuple[str, str, str], grading.Budget],
          timeout: float | None) -> None:
    """Worst and failing cases into ``result``, each with its self-explaining record."""
    worst = hunter.worst
    if worst is not None and worst.score.graded:
        result.worst = worst.case
        result.max_ulp, result.max_ratio = worst.score.max_ulp, worst.score.max_ratio
        result.worst_grade = worst.score.grade
        result.worst_report = _report(result, worst, handle, policy, budgets, timeout)
    if failing is not None:
        seen = hunter.seen.get(failing.digest())
        result.found_failure = True
        result.failing = failing
        if seen is not None and seen.outcome is not None:
            result.failure_report = _report(result, seen, handle, policy, budgets, timeout)
            if seen.outcome.fault is not None and not result.note:
                result.note = str(seen.outcome.fault)
    shown = result.failing or result.worst
    if shown is not None:
        result.reproducer = reproducer(result.spec, result.function, shown)


def _report(result: HuntResult, seen: _Seen, handle: Any, policy: grading.Profile,
            budgets: dict[tuple[str, str, str], grading.Budget],
            timeout: float | None) -> Worst | None:
    """The worst element of ``seen`` as the run's checks report it (hex floats, got,
    should be, ulps, the bound, a one-row reproducer)."""
    outcome = seen.outcome
    if outcome is None:
        return None
    truth = Truth(seen.case)
    ctx = Context(result.adapter, result.spec, handle, truth, policy, budgets, timeout)
    function = result.function
    exact = truth.exact(function)
    if not _usable(outcome):
        return fault_finding(ctx, "hunt", function, outcome, rows_of(exact, seen.case)).worst
    with np.errstate(all="ignore"):
        finding = graded_finding(ctx, "hunt", function, outcome.value, exact,
                                 **truth.grading_inputs(function))
    return finding.worst


# ----------------------------------------------------------------------------- pinning


def pin(cases: Iterable[Case], path: str | Path | None = None) -> int:
    """Append ``cases`` to the pinned corpus at ``path`` (one ``Case.to_json()`` a line;
    default :data:`xentcheck.harness.runner.PINNED_CASES`, which every run replays), leaving out any
    whose contents (:meth:`~xentcheck.harness.cases.Case.digest`) are there already.

    The file is rewritten atomically (a temporary file in the same folder, then
    ``os.replace``), so a reader never sees half a line; existing lines are kept as they
    are. Concurrent writers are not serialized: pin from one process at a time. Returns
    how many cases were new.
    """
    if path is None:
        from xentcheck.harness.runner import PINNED_CASES  # here: the runner may import this module

        path = PINNED_CASES
    target = Path(path)
    existing = target.read_text(encoding="utf-8") if target.exists() else ""
    lines = [line for line in existing.splitlines() if line.strip()]
    known = {Case.from_json(line).digest() for line in lines}
    added = []
    for case in cases:
        digest = case.digest()
        if digest in known:
            continue
        known.add(digest)
        added.append(case.to_json())
    if not added:
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{line}\n" for line in [*lines, *added])
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                             dir=target.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return len(added)


def _worth_pinning(result: HuntResult) -> list[Case]:
    cases = [result.failing] if result.failing is not None else []
    worst = result.worst
    if worst is not None and worst.logits.size <= PIN_MAX_ENTRIES:
        cases.append(worst)
    return cases


def hunt_all(
    adapters: Iterable[str | Any],
    *,
    functions: Sequence[str] | None = None,
    dtypes: Sequence[str] = DTYPES,
    regimes: Sequence[str | None] | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    seed: int = 0,
    profile: str = "standard",
    timeout: float | None = 60.0,
    ulp_budget: float | None = None,
    budgets_path: str | Path | None = None,
    max_classes: int | None = None,
    pin_path: str | Path | None = None,
    progress: Callable[[HuntResult], None] | None = None,
) -> list[HuntResult]:
    """:func:`hunt` every function (of ``functions``, default all) and dtype (of ``dtypes``)
    each adapter provides, in each regime of ``regimes`` (default: one hunt over all).

    Each adapter is opened once for all its hunts. An adapter that cannot be started gives
    one result with ``function`` and ``dtype`` "*" and its ``error``; a hunt that cannot
    run (a regime that cannot meet ``max_classes``) gives a result with its ``error``.
    With ``pin_path``, every shrunk failing case and every worst case of at most
    :data:`PIN_MAX_ENTRIES` entries is pinned there (:func:`pin`, once at the end).
    ``progress`` is called with each result as it is done.
    """
    wanted = tuple(functions) if functions is not None else FUNCTIONS
    for function in wanted:
        _validate(function, "float64", None, max_examples, seed)
    for dtype in dtypes:
        _validate(FUNCTIONS[0], dtype, None, max_examples, seed)
    for regime in regimes or ():
        _validate(FUNCTIONS[0], "float64", regime, max_examples, seed)
    regime_list: Sequence[str | None] = regimes if regimes else (None,)
    results: list[HuntResult] = []
    for adapter in adapters:
        handle, owned = _open(adapter, timeout)
        try:
            results.extend(_hunt_adapter(handle, wanted, dtypes, regime_list, progress,
                                         dict(max_examples=max_examples, seed=seed,
                                              profile=profile, timeout=timeout,
                                              ulp_budget=ulp_budget, budgets_path=budgets_path,
                                              max_classes=max_classes)))
        finally:
            if owned:
                handle.close()
    if pin_path is not None:
        pin([case for r in results for case in _worth_pinning(r)], pin_path)
    return results


def _hunt_adapter(handle: Any, functions: Sequence[str], dtypes: Sequence[str],
                  regimes: Sequence[str | None],
                  progress: Callable[[HuntResult], None] | None,
                  options: dict[str, Any]) -> list[HuntResult]:
    info = handle.wait()
    if info.unavailable is not None:
        failed = HuntResult(info.name, info.spec, "*", "*", None, options["profile"],
                            options["seed"], options["max_examples"],
                            error=f"unavailable: {info.unavailable}")
        if progress is not None:
            progress(failed)
        return [failed]
    results = []
    for function in functions:
        if function not in info.provides:
            continue
        for dtype in dtypes:
            if dtype not in info.dtypes:
                continue
            for regime in regimes:
                try:
                    result = hunt(handle, function, dtype=dtype, regime=regime, **options)
                except HuntError as err:  # e.g. a regime that cannot meet the bounds
                    result = HuntResult(info.name, info.spec, function, dtype, regime,
                                        options["profile"], options["seed"],
                                        options["max_examples"], error=str(err))
                results.append(result)
                if progress is not None:
                    progress(result)
    return results
