"""Orchestration: cases → gold truth (once per case) → every adapter → checks → results.

:func:`run` is the Python API behind ``xentcheck run``. Cases come from the fixed-seed
samples of the named regimes (every adapter gets the same inputs), from the pinned worst
cases (``harness/data/pinned_cases.jsonl``, replayed by every run) and from a user corpus
(``cases_file``). The truth of a case is computed once and shared by all adapters; data
flows one way, from cases to reports.
"""

from __future__ import annotations

import platform
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import grading, strategies
from harness.adapters import contract
from harness.cases import Case
from harness.checks import Context, families
from harness.findings import Finding, Result
from harness.truth import Truth

SCHEMA = "xentcheck-conformance/1"

#: Worst cases found by hunting, replayed by every run (one Case JSON per line).
PINNED_CASES = Path(__file__).resolve().parent / "data" / "pinned_cases.jsonl"

#: The regimes of a default run: every named regime but the user's corpus (which runs
#: when a corpus is given) — the built-in MNIST corpus stands in for it.
DEFAULT_REGIMES: tuple[str, ...] = tuple(strategies.REGIMES)


@dataclass
class AdapterReport:
    """One adapter's part of a run."""

    name: str
    spec: str
    version: str | None = None
    dtypes: tuple[str, ...] = ()
    provides: list[str] = field(default_factory=list)
    unavailable: str | None = None
    results: dict[tuple[str, str, str, str, str], Result] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.unavailable is not None:
            return "error"
        return "fail" if any(not r.passed for r in self.results.values()) else "pass"

    def add(self, finding: Finding) -> None:
        case = finding.case
        key = (self.name, finding.check, finding.function, case.dtype, case.regime)
        if key not in self.results:
            self.results[key] = Result(*key)
        self.results[key].add(finding)

    def to_dict(self) -> dict[str, Any]:
        not_provided = [f for f in contract.FUNCTIONS if f not in self.provides]
        return {
            "name": self.name, "spec": self.spec, "version": self.version,
            "verdict": self.verdict, "reason": self.unavailable,
            "dtypes": list(self.dtypes), "provides": list(self.provides),
            "not_provided": not_provided,
            "results": [r.to_dict() for r in sorted(self.results.values(),
                                                     key=lambda r: r.key)],
        }


@dataclass
class RunReport:
    """Everything a run found: the settings, the platform and each adapter's results."""

    settings: dict[str, Any]
    adapters: list[AdapterReport]
    cases: int
    seconds: float = 0.0

    @property
    def conformant(self) -> bool:
        return all(a.verdict == "pass" for a in self.adapters)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form every report writer renders from."""
        return {
            "schema": SCHEMA,
            "platform": platform_info(self.adapters),
            "settings": self.settings,
            "cases": self.cases,
            "seconds": round(self.seconds, 3),
            "adapters": [a.to_dict() for a in self.adapters],
        }


def platform_info(adapters: Sequence[AdapterReport] = ()) -> dict[str, Any]:
    import mpmath
    import numpy

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "mpmath": mpmath.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "system": platform.system(),
        "adapter_versions": {a.name: a.version for a in adapters},
    }


def load_pinned(path: Path = PINNED_CASES) -> list[Case]:
    """The pinned worst cases (one Case JSON per line); none if the file is absent."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [Case.from_json(line) for line in lines]


def build_cases(*, dtypes: Sequence[str], regimes: Sequence[str], seed: int = 0,
                cases_file: str | None = None, pinned: bool = True,
                max_classes: int | None = None) -> list[Case]:
    """Every case of a run, in a deterministic order."""
    cases: list[Case] = []
    for regime in regimes:
        for dtype in dtypes:
            if regime == "corpus" and cases_file is not None:
                continue  # the user's corpus replaces the built-in one
            cases.extend(strategies.sample(regime, dtype=dtype, seed=seed,
                                           max_classes=max_classes))
    if cases_file is not None:
        for dtype in dtypes:
            cases.extend(strategies.load_corpus(cases_file, dtype=dtype))
    if pinned:
        cases.extend(c for c in load_pinned() if c.dtype in dtypes)
    return cases


def shard_of(cases: Sequence[Case], shard: tuple[int, int] | None) -> list[Case]:
    """Shard I of N (1-based): every N-th case, so shards are balanced across regimes."""
    if shard is None:
        return list(cases)
    index, count = shard
    return [c for i, c in enumerate(cases) if i % count == index - 1]


def part_of(cases: Sequence[Case], part: tuple[int, int] | None) -> list[Case]:
    """Part I of N of a ``--jobs N`` run: whole dtypes per process where there are at
    least N of them (each process's workers then compile and warm up for its dtypes
    only: JAX compiles per dtype), else every N-th case."""
    if part is None:
        return list(cases)
    index, count = part
    dtypes = list(dict.fromkeys(c.dtype for c in cases))  # in order of appearance
    if len(dtypes) < count:
        return shard_of(cases, part)
    mine = {d for i, d in enumerate(dtypes) if i % count == index - 1}
    return [c for c in cases if c.dtype in mine]


def run(
    adapters: Iterable[str | Any],
    *,
    profile: str = "standard",
    dtypes: Sequence[str] = contract.DTYPES,
    regimes: Sequence[str] = DEFAULT_REGIMES,
    cases_file: str | None = None,
    seed: int = 0,
    timeout: float = 60.0,
    shard: tuple[int, int] | None = None,
    max_classes: int | None = None,
    ulp_budget: float | None = None,
    budgets_path: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    part: tuple[int, int] | None = None,
    extra_cases: Sequence[Case] = (),
    skip_unavailable: bool = False,
) -> RunReport:
    """Run the conformance checks of every adapter over the cases and grade them.

    ``adapters``: built-in names, specs (``pkg.mod:attr``, ``file.py:attr``, ``c:file.c``)
    or adapter objects. Raises :class:`~harness.adapters.contract.AdapterSpecError` for a
    spec that cannot be resolved (a usage error); an adapter that cannot be started is
    reported with verdict ``error`` and the run goes on, or left out of the report with
    ``skip_unavailable`` (how a default run treats a built-in whose framework is absent).
    """
    from harness.adapters.registry import open_adapter

    started = time.monotonic()
    policy = grading.profile(profile, ulp_budget=ulp_budget)
    budgets = grading.load_budgets(budgets_path)
    cases = shard_of(build_cases(dtypes=dtypes, regimes=regimes, seed=seed,
                                 cases_file=cases_file, max_classes=max_classes)
                     + list(extra_cases), shard)
    cases = part_of(cases, part)  # this process's part of a --jobs run
    handles = [open_adapter(a, timeout=timeout) for a in adapters]
    reports: list[AdapterReport] = []
    try:
        for handle in handles:
            handle.wait()
            if skip_unavailable and handle.unavailable is not None:
                continue
            reports.append(AdapterReport(
                name=handle.name, spec=handle.spec, version=handle.version,
                dtypes=tuple(handle.dtypes), provides=sorted(handle.provides),
                unavailable=handle.unavailable))
        by_name = {r.name: r for r in reports}
        live = [(h, by_name[h.name]) for h in handles
                if h.name in by_name and by_name[h.name].unavailable is None]
        checks = families()
        for number, case in enumerate(cases, 1):
            if progress is not None:
                progress(number, len(cases), case.case_id)
            truth = Truth(case)
            for handle, report in live:
                if case.dtype not in handle.dtypes:
                    continue
                ctx = Context(report.name, report.spec, handle, truth, policy, budgets,
                              timeout)
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # candidates' own warnings are not ours
                    for family in checks.values():
                        for finding in family(ctx):
                            report.add(finding)
    finally:
        # workers exit concurrently (each takes a moment to tear its framework down)
        with ThreadPoolExecutor(max_workers=max(1, len(handles))) as pool:
            list(pool.map(lambda h: h.close(), handles))
    settings = {
        "profile": policy.name, "ulp_budget": policy.ulp_budget, "seed": seed,
        "dtypes": list(dtypes), "regimes": list(regimes), "cases_file": cases_file,
        "shard": f"{shard[0]}/{shard[1]}" if shard else None, "timeout": timeout,
        "max_classes": max_classes,
    }
    return RunReport(settings, reports, len(cases), time.monotonic() - started)


def _run_part(kwargs: dict[str, Any]) -> dict[str, Any]:
    return run(**kwargs).to_dict()


def run_parallel(adapters: Sequence[str], *, jobs: int, **kwargs: Any) -> dict[str, Any]:
    """:func:`run` split over ``jobs`` local processes (cases dealt round-robin), merged.

    Adapters must be specs (names or paths), since each process loads its own. Returns
    the JSON-ready report (as ``run(...).to_dict()`` would)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from harness.merge import merge

    kwargs.pop("progress", None)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        parts = list(pool.map(_run_part, [dict(kwargs, adapters=list(adapters),
                                               part=(i, jobs)) for i in range(1, jobs + 1)]))
    merged = merge(parts)
    merged["settings"]["shard"] = kwargs.get("shard") and "{}/{}".format(*kwargs["shard"])
    return merged
