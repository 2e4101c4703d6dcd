"""Orchestration: cases → gold truth (once per case) → every adapter → checks → results.

:func:`run` is the Python API behind ``xentcheck run``. Cases come from the fixed-seed
samples of the named regimes (every adapter gets the same inputs), from the pinned worst
cases (``harness/data/pinned_cases.jsonl``, replayed by every run) and from a user corpus
(``cases_file``). Adapters run one after another, each over every case, so that one
framework is loaded at a time; the truth of a case is computed once and shared by the
adapters that follow (up to a block's worth of elements kept), the part a dialect's rules
change computed once per dialect; data flows one way, from cases to reports.
"""

from __future__ import annotations

import json
import platform
import signal
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xentcheck.harness import fpenv, grading, strategies
from xentcheck.harness.adapters import contract
from xentcheck.harness.cases import Case
from xentcheck.harness.checks import Context, families
from xentcheck.harness.findings import Finding, Result
from xentcheck.harness.merge import combine, timing
from xentcheck.harness.truth import Truth
from xentcheck.references import dialects

#: The report schema. /2 added the input fingerprints (``inputs``), the versions of
#: xentcheck and Hypothesis, NumPy's SIMD targets, the report id and the built-ins left out.
SCHEMA = "xentcheck-conformance/3"

#: Worst cases found by hunting, replayed by every run (one Case JSON per line).
PINNED_CASES = Path(__file__).resolve().parent / "data" / "pinned_cases.jsonl"

#: The regimes of a default run: every named regime but the user's corpus (which runs
#: when a corpus is given) — the built-in MNIST corpus stands in for it.
DEFAULT_REGIMES: tuple[str, ...] = tuple(
    r for r in strategies.REGIMES if r not in strategies.HUNT_ONLY_REGIMES)


@dataclass
class AdapterReport:
    """One adapter's part of a run."""

    name: str
    spec: str
    version: str | None = None
    dtypes: tuple[str, ...] = ()
    provides: list[str] = field(default_factory=list)
    unavailable: str | None = None
    dialect: str = "pytorch"  # the documented contract it is graded under
    results: dict[tuple[str, str, str, str, str], Result] = field(default_factory=dict)
    #: function -> [calls not made, why]: the function (or adapter) was quarantined
    not_run: dict[str, list[Any]] = field(default_factory=dict)
    #: the adapter's part of the run (its loading, its calls, their grading), and the
    #: calls and seconds of its own calls: the run's ``timing``, not its results
    seconds: float = 0.0
    calls: int = 0
    call_seconds: float = 0.0

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
            "verdict": self.verdict, "reason": self.unavailable, "dialect": self.dialect,
            "dtypes": list(self.dtypes), "provides": list(self.provides),
            "not_provided": not_provided,
            "not_run": [{"function": f, "calls": int(n), "reason": str(why)}
                        for f, (n, why) in sorted(self.not_run.items())],
            "results": [r.to_dict() for r in sorted(self.results.values(),
                                                     key=lambda r: r.key)],
        }


@dataclass
class RunReport:
    """Everything a run found: the settings, the platform and each adapter's results.

    ``inputs`` fingerprints every case the run graded (``[case id, dtype, regime,
    SHA-256 of its contents]``), so that reports compare like with like and shards merge
    only with their own run; ``skipped`` names the built-ins a default run left out and
    why (their framework is not installed)."""

    settings: dict[str, Any]
    adapters: list[AdapterReport]
    cases: int
    seconds: float = 0.0
    inputs: list[list[str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

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
            "inputs": sorted(self.inputs),
            "skipped": list(self.skipped),
            "adapters": [a.to_dict() for a in self.adapters],
            "timing": {a.name: timing(a.seconds, a.calls, a.call_seconds)
                       for a in self.adapters},
        }


def simd_targets() -> list[str]:
    """The SIMD code NumPy dispatches to in this process (e.g. ``["X86_V3", "X86_V4"]``):
    it decides the last bits of NumPy-based candidates' results, never the harness's."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # pragma: no cover - NumPy < 2
        return []
    features = getattr(umath, "__cpu_features__", {})
    return [name for name in getattr(umath, "__cpu_dispatch__", ()) if features.get(name)]


def platform_info(adapters: Sequence[AdapterReport] = ()) -> dict[str, Any]:
    import hypothesis
    import mpmath
    import numpy

    import xentcheck.harness

    return {
        "xentcheck": xentcheck.harness.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "mpmath": mpmath.__version__,
        "hypothesis": hypothesis.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "system": platform.system(),
        "simd": simd_targets(),
        "adapter_versions": {a.name: a.version for a in adapters},
    }


class RunError(RuntimeError):
    """A run could not be completed (a process of it died); the message is one line."""


class PinnedCasesError(ValueError):
    """The pinned-cases file cannot be read: the one-line message names the file and line."""


def load_pinned(path: Path = PINNED_CASES, *, dtypes: Collection[str] | None = None,
                regimes: Collection[str] | None = None) -> list[Case]:
    """The pinned worst cases (one Case JSON per line); none if the file is absent. With
    ``dtypes`` or ``regimes``, only those of them (the others are not decoded: a run
    without bfloat16 does not import ml_dtypes for them). Raises
    :class:`PinnedCasesError` naming the line of a corrupted file (a merge conflict's
    markers, a truncated line) among those read."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PinnedCasesError(f"{path}: cannot be read ({exc})") from None
    cases = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if ((dtypes is not None and data["dtype"] not in dtypes)
                    or (regimes is not None and data["regime"] not in regimes)):
                continue
            cases.append(Case.from_dict(data))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            shown = line if len(line) <= 40 else line[:37] + "..."
            raise PinnedCasesError(
                f"{path}:{number}: not a pinned case ({type(exc).__name__}: "
                f"{str(exc)[:120]}): {shown!r}") from None
    return cases


def fingerprint_of(case: Case) -> list[str]:
    """``[case id, dtype, regime, SHA-256 of its contents]``: one entry of ``inputs``."""
    return [case.case_id, case.dtype, case.regime, case.fingerprint()]


def fingerprints(cases: Iterable[Case]) -> list[list[str]]:
    """:func:`fingerprint_of` each case."""
    return [fingerprint_of(c) for c in cases]


def refuse_repeated(specs: Sequence[Any]) -> None:
    """Raise :class:`AdapterSpecError` for a spec given twice."""
    from xentcheck.harness.adapters.contract import AdapterSpecError

    for spec in specs:
        if specs.count(spec) > 1:
            raise AdapterSpecError(f"adapter {spec!r} is given twice")


class _SharedTruths:
    """The truths of the cases, kept for the adapters that follow, up to ``limit`` logits
    in all (the rest are computed again): each case's PyTorch-convention truth, and its
    truth under the dialect of the adapters now running, which takes from the first what
    that dialect leaves as PyTorch's (:class:`~xentcheck.harness.truth.Truth`'s ``base``),
    so that a run over several dialects computes that part once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dialect: str | None = None
        self.bases: dict[int, Truth] = {}
        self.kept: dict[int, Truth] = {}  # under self.dialect
        self.elements = 0

    def truth(self, number: int, case: Case, dialect: str, keep: bool) -> Truth:
        """Case ``number``'s truth under ``dialect``; kept for the next adapters if ``keep``
        and within the limit."""
        base = self.bases.get(number)
        if base is None:
            base = Truth(case)
            if keep and self._room(case):
                self.bases[number] = base
        if dialect == dialects.DEFAULT.name:
            return base
        if dialect != self.dialect:
            for dropped in self.kept.values():
                self.elements -= dropped.case.logits.size
            self.dialect, self.kept = dialect, {}
        found = self.kept.get(number)
        if found is None:
            found = Truth(case, dialects.dialect(dialect), base=base)
            if keep and self._room(case):
                self.kept[number] = found
        return found

    def _room(self, case: Case) -> bool:
        """Whether a truth of ``case`` fits within the limit (then counted)."""
        if self.elements + case.logits.size > self.limit:
            return False
        self.elements += case.logits.size
        return True


def unique_names(handles: Sequence[Any]) -> list[str]:
    """The report name of each adapter: its own name, or ``name (spec)`` where two adapters
    of one run share a name (``v1/impl.py`` and ``v2/impl.py`` are both ``impl``). The
    same spec given twice is refused with :class:`AdapterSpecError`."""

    specs = [h.spec for h in handles]
    refuse_repeated(specs)
    names = [str.__str__(h.name) for h in handles]
    return [f"{name} ({spec})" if names.count(name) > 1 else name
            for name, spec in zip(names, specs, strict=True)]


def build_cases(*, dtypes: Sequence[str], regimes: Sequence[str], seed: int = 0,
                cases_file: str | None = None, pinned: bool = True,
                max_classes: int | None = None,
                block_elements: int = strategies.BLOCK_ELEMENTS) -> list[Case]:
    """Every case of a run, in a deterministic order (a ``cases_file`` cut into cases of at
    most ``block_elements`` logits, :func:`~xentcheck.harness.strategies.load_corpus`)."""
    cases: list[Case] = []
    for regime in regimes:
        for dtype in dtypes:
            if regime == "corpus" and cases_file is not None:
                continue  # the user's corpus replaces the built-in one
            cases.extend(strategies.sample(regime, dtype=dtype, seed=seed,
                                           max_classes=max_classes))
    if cases_file is not None:
        for dtype in dtypes:
            cases.extend(strategies.load_corpus(cases_file, dtype=dtype,
                                                block_elements=block_elements))
    if pinned:  # the pinned cases of the regimes and dtypes asked for
        cases.extend(load_pinned(dtypes=dtypes, regimes=regimes))
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


def adapters_of(adapters: Sequence[Any], part: tuple[int, int]) -> list[Any]:
    """The order part I of N of a ``--jobs N`` run takes the adapters in: the list rotated
    by (I - 1)/N of its length, so that the processes are in different frameworks at any
    one time (in the same order, the main job's two processes held a TensorFlow worker
    each at once: its memory peak). The order changes no result; the report keeps the
    order given (part 1's)."""
    index, count = part
    shift = (index - 1) * len(adapters) // count
    return [*adapters[shift:], *adapters[:shift]]


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
    block_elements: int = strategies.BLOCK_ELEMENTS,
    checks: Sequence[str] | None = None,
) -> RunReport:
    """Run the conformance checks of every adapter over the cases and grade them.

    ``adapters``: built-in names, specs (``pkg.mod:attr``, ``file.py:attr``, ``c:file.c``)
    or adapter objects. Raises :class:`~xentcheck.harness.adapters.contract.AdapterSpecError` for a
    spec that cannot be resolved or is given twice (a usage error); an adapter that cannot
    be started is reported with verdict ``error`` and the run goes on, or left out of the
    report (named in ``skipped``) with ``skip_unavailable`` (how a default run treats a
    built-in whose framework is absent). Two adapters with one name are told apart as
    ``name (spec)``. Raises :class:`~xentcheck.harness.fpenv.FloatingPointEnvironmentError` when the
    floating-point environment of this process is not IEEE's default, at the start or
    after an in-process adapter changed it. ``progress(step, steps, what)`` is called as
    each adapter starts each case (``steps``: adapters × cases; ``what``: the case id and
    the adapter's name). ``checks``: run only these checks (names of :data:`CHECKS`;
    None: every one); an unknown name raises ``ValueError`` before any work.
    """
    from xentcheck.harness.adapters.registry import check_spec, open_adapter

    started = time.monotonic()
    selected = check_names(checks)
    fpenv.check("before the run")
    policy = grading.profile(profile, ulp_budget=ulp_budget)
    budgets = grading.load_budgets(budgets_path)
    cases = shard_of(build_cases(dtypes=dtypes, regimes=regimes, seed=seed,
                                 cases_file=cases_file, max_classes=max_classes,
                                 block_elements=block_elements)
                     + list(extra_cases), shard)
    cases = part_of(cases, part)  # this process's part of a --jobs run
    specs = [a.strip() if isinstance(a, str) else a for a in adapters]
    for spec in specs:  # a spec that names nothing, or twice, is refused before any work
        if isinstance(spec, str):
            check_spec(spec)
    refuse_repeated([s for s in specs if isinstance(s, str)])
    reports: list[AdapterReport] = []
    skipped: list[dict[str, str]] = []
    inputs: list[list[str] | None] = [None] * len(cases)  # fingerprints, taken in memory
    kept: list[Any] = []
    findings_of = _every_check if selected is None else _only(selected)
    current: Any = None  # the one adapter whose worker is running
    closing: list[Any] = []  # workers being shut down in the background
    truths = _SharedTruths(block_elements)
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        for index, adapter in enumerate(specs):
            # one adapter at a time: its worker starts, runs every case, and is closed
            # before the next starts, so one framework is in memory, not all of them
            began = time.monotonic()
            current = open_adapter(adapter, timeout=timeout)
            current.wait()
            if skip_unavailable and current.unavailable is not None:
                skipped.append({"name": current.name, "reason": current.unavailable})
                closing.append(pool.submit(current.close))
                current = None
                continue
            report = AdapterReport(
                name=str.__str__(current.name), spec=current.spec, version=current.version,
                dtypes=tuple(current.dtypes), provides=sorted(current.provides),
                unavailable=current.unavailable,
                dialect=current.dialect if current.unavailable is None else "pytorch")
            reports.append(report)
            kept.append(current)
            if report.unavailable is None:
                fpenv.check("while loading the adapters")
                more = index + 1 < len(specs)  # truths kept only for adapters still to come
                for number, case in enumerate(cases):
                    if progress is not None:
                        progress(index * len(cases) + number + 1, len(specs) * len(cases),
                                 f"{case.case_id} ({report.name})")
                    if case.dtype not in current.dtypes:
                        continue
                    truth = truths.truth(number, case, report.dialect, keep=more)
                    ctx = Context(report.name, report.spec, current, truth, policy, budgets,
                                  timeout)
                    with np.errstate(all="ignore"), warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # candidates' warnings are not ours
                        for finding in findings_of(ctx):
                            report.add(finding)
                    if not current.isolated:
                        fpenv.check(f"by the in-process adapter {report.name!r}")
                    if inputs[number] is None:
                        inputs[number] = fingerprint_of(case)
                    strategies.release(case.logits)  # a corpus block's pages, once graded
                report.not_run = {f: list(v) for f, v in current.not_run.items()}
            report.seconds = time.monotonic() - began
            report.calls, report.call_seconds = current.calls, current.call_seconds
            closing.append(pool.submit(current.close))  # while the next one starts
            current = None
        for report, name in zip(reports, unique_names(kept), strict=True):
            report.name = name
    except BaseException:
        # interrupted (SIGINT, SIGTERM) or failed: the running worker's process group is
        # killed at once, no grace period, so that nothing of the run outlives it
        if current is not None:
            current.kill()
        raise
    finally:
        for future in closing:
            future.result()
        pool.shutdown()
    inputs = [found if found is not None else fingerprint_of(case)
              for found, case in zip(inputs, cases, strict=True)]
    settings = {
        "profile": policy.name, "ulp_budget": policy.ulp_budget, "seed": seed,
        "dtypes": list(dtypes), "regimes": list(regimes), "cases_file": cases_file,
        "shard": f"{shard[0]}/{shard[1]}" if shard else None, "timeout": timeout,
        "max_classes": max_classes, "block_elements": block_elements,
    }
    if selected is not None:  # a run of every check says nothing (its reports stay as they were)
        settings["checks"] = [c for c in CHECKS if c in selected]
    return RunReport(settings, reports, len(cases), time.monotonic() - started,
                     inputs=inputs, skipped=skipped)


#: Seconds an interrupted --jobs process gets to kill its workers and exit on SIGTERM
#: before it is killed.
PART_GRACE = 5.0


def _part_main(kwargs: dict[str, Any], conn: Any) -> None:
    """A ``--jobs`` process: run its part and send the report back. SIGTERM and SIGINT
    unwind through :func:`run`'s cleanup (its workers' process groups are killed)."""
    from xentcheck.harness.adapters.contract import AdapterSpecError
    from xentcheck.harness.allocator import keep_freed_memory
    from xentcheck.harness.signals import raise_on_sigterm

    keep_freed_memory()  # a fresh interpreter: the parent's allocator settings are not its
    raise_on_sigterm()
    if kwargs.pop("report_progress", False):
        def progress(number: int, total: int, case_id: str) -> None:
            conn.send(("progress", number, total, case_id))

        kwargs["progress"] = progress
    try:
        message: tuple[Any, ...] = ("ok", run(**kwargs).to_dict())
    except (AdapterSpecError, fpenv.FloatingPointEnvironmentError) as exc:
        message = ("usage", type(exc).__name__, str(exc))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        message = ("error", type(exc).__name__, str(exc))
    try:
        conn.send(message)
    except (OSError, ValueError):
        pass  # the parent is gone
    finally:
        conn.close()
        # reported: nothing is left to clean up, so a late SIGTERM ends the process
        # quietly (not with a traceback out of an exit handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_parallel(adapters: Sequence[str], *, jobs: int,
                 progress: Callable[[int, int, str], None] | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    """:func:`run` split over ``jobs`` local processes (whole dtypes each where possible,
    see :func:`part_of`), merged into one report (as ``run(...).to_dict()`` would give).
    ``progress`` is called as in :func:`run`, with the steps done and the total over all
    processes (the total grows until every process has started its first case).

    Adapters must be specs (names or paths), since each process loads its own. A process
    that dies raises :class:`RunError`; an interrupt (SIGINT, SIGTERM) ends every process
    within :data:`PART_GRACE` seconds, their workers with them, and propagates."""
    import multiprocessing
    from multiprocessing.connection import wait

    from xentcheck.harness.adapters.contract import AdapterSpecError
    from xentcheck.harness.signals import held

    context = multiprocessing.get_context("spawn")
    processes: list[Any] = []
    parts: dict[int, dict[str, Any]] = {}
    done: dict[int, tuple[int, int]] = {}  # part -> (cases done, its total)
    if progress is not None:
        kwargs["report_progress"] = True
    try:
        pending: dict[Any, tuple[int, Any]] = {}
        with held():  # an interrupt comes after, when every started process is recorded
            for i in range(1, jobs + 1):
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(
                    target=_part_main, name=f"xentcheck-part-{i}",
                    args=(dict(kwargs, adapters=adapters_of(list(adapters), (i, jobs)),
                               part=(i, jobs)), sender))
                process.start()
                sender.close()
                processes.append(process)
                pending[receiver] = (i, process)
        while pending:
            for ready in wait([*pending, *(p.sentinel for _, p in pending.values())]):
                for receiver, (i, process) in list(pending.items()):
                    if ready not in (receiver, process.sentinel):
                        continue
                    if not receiver.poll():
                        if process.is_alive():
                            continue
                        raise RunError(
                            f"a --jobs process died before finishing its part (exit code "
                            f"{process.exitcode}: killed, e.g. for memory?); nothing was graded")
                    try:
                        message = receiver.recv()
                    except EOFError:
                        raise RunError("a --jobs process died before finishing its part "
                                       f"(exit code {process.exitcode}); nothing was graded"
                                       ) from None
                    if message[0] == "progress":
                        done[i] = (message[1], message[2])
                        if progress is not None:
                            progress(sum(n for n, _ in done.values()),
                                     sum(t for _, t in done.values()), message[3])
                        continue
                    del pending[receiver]
                    receiver.close()
                    if message[0] == "usage":
                        raise AdapterSpecError(message[2])
                    if message[0] == "error":
                        if message[1] in ("KeyboardInterrupt", "Terminated"):
                            raise KeyboardInterrupt
                        raise RunError(f"a --jobs process failed: {message[1]}: {message[2]}")
                    parts[i] = message[1]
    finally:
        # A process that sent its report is on its way out (its interpreter's exit): it
        # gets the grace period to end by itself. The others (an interrupt, a failure)
        # are sent SIGTERM at once: each kills its workers on the way out.
        for i, process in enumerate(processes, start=1):
            if i not in parts and process.is_alive():
                process.terminate()
        deadline = time.monotonic() + PART_GRACE
        for process in processes:
            process.join(max(deadline - time.monotonic(), 0.0))
            if process.is_alive():
                process.kill()
                process.join()
    merged = combine([parts[i] for i in sorted(parts)])
    merged["settings"]["shard"] = kwargs.get("shard") and "{}/{}".format(*kwargs["shard"])
    return merged


# ----------------------------------------------------- one result at a time (the plugin)
#
# The pytest plugin (xentcheck.harness.plugin) collects one test per (adapter, function,
# dtype, regime, check) without calling the adapter or computing any truth, and each test
# then computes its own result. :func:`plan_results` names the results a run may report
# (from the cases and what the adapter says it provides, nothing computed);
# :class:`ResultRunner` computes one of them, the cases' truths and the adapter's outputs
# kept for every other result of the process that needs them. A result computed so is
# the result :func:`run` reports for the same key.

#: Every check a run reports, with the functions it reports under (the families of
#: ``xentcheck.harness.checks``, in the order :func:`run` applies them).
CHECKS: dict[str, tuple[str, ...]] = {
    "value": ("logsumexp", "softmax", "log_softmax", "cross_entropy",
              "cross_entropy_from_probs"),
    "gradient": ("cross_entropy_grad", "softmax_jacobian", "cross_entropy_grad_wrt_probs"),
    "jvp": ("softmax_jvp", "log_softmax_jvp", "cross_entropy_jvp"),
    "hvp": ("cross_entropy_hvp",),
    "chain-rule": ("cross_entropy_grad",),
    "self-fd": ("cross_entropy_grad",),
    "reduction": ("cross_entropy",),
    "batch-invariance": ("softmax", "log_softmax"),
    "shift-invariance": ("softmax", "log_softmax", "cross_entropy", "cross_entropy_grad"),
    "chunk-invariance": ("cross_entropy", "cross_entropy_grad"),
    "contract": contract.FUNCTIONS,
    "range": ("softmax", "log_softmax", "cross_entropy"),
    "normalization": ("softmax", "cross_entropy_grad"),
    "order": ("softmax", "log_softmax"),
    "determinism": ("softmax", "log_softmax", "cross_entropy", "cross_entropy_grad"),
    "edge": ("logsumexp", "softmax", "log_softmax", "cross_entropy", "cross_entropy_grad"),
    "ignored-mean": ("cross_entropy_grad",),
    "invalid-input": ("cross_entropy", "cross_entropy_grad"),
}

#: The functions whose outputs a check of a function reads besides the function itself
#: (the chain rule is built from softmax, its Jacobian and −y/ŷ; the gradient's own
#: finite differences call the loss).
_READS: dict[str, tuple[str, ...]] = {
    "chain-rule": ("softmax", "softmax_jacobian", "cross_entropy_grad_wrt_probs"),
    "self-fd": ("cross_entropy", "cross_entropy_grad"),
}

_DERIVATIVE_CHECKS = ("gradient", "jvp", "hvp")


def check_names(checks: Iterable[str] | None) -> frozenset[str] | None:
    """The checks a run is limited to (None: every one); ``ValueError`` naming an unknown
    one and the choices."""
    if checks is None:
        return None
    selected = frozenset(checks)
    unknown = sorted(selected - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r}; choose from {', '.join(CHECKS)}")
    if not selected:
        raise ValueError(f"no check selected; choose from {', '.join(CHECKS)}")
    return selected


def _every_check(ctx: Context) -> Iterator[Finding]:
    """Every family's findings on one case, in the order of :func:`families`."""
    for family in families().values():
        yield from family(ctx)


def _only(selected: frozenset[str]) -> Callable[[Context], Iterator[Finding]]:
    """The findings of the ``selected`` checks alone on one case, in :data:`CHECKS`'s order
    (the families' own, ``contract`` where the invariants have it): a check left out is not
    computed at all, so its candidate calls, references and gradings cost nothing."""

    def findings(ctx: Context) -> Iterator[Finding]:
        from xentcheck.harness.checks import derivatives, invariants

        edges_done = False
        for check in CHECKS:
            if check not in selected:
                continue
            if check in ("edge", "ignored-mean"):  # one family reports both
                if edges_done:
                    continue
                edges_done = True
            if check == "contract":
                found: Iterable[Finding] = invariants._contract(ctx)
            elif check in _DERIVATIVE_CHECKS:
                found = derivatives.certified(ctx, check, CHECKS[check])
            else:
                found = _case_findings(check, ctx)
            yield from (f for f in found if f.check in selected)

    return findings


@dataclass(frozen=True)
class PlannedResult:
    """A result a run may report: ``adapter`` is its name in reports, ``spec`` how to load
    it; ``group`` names the truths it needs (results of one group share them)."""

    adapter: str
    spec: str
    function: str
    dtype: str
    regime: str
    check: str

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.adapter, self.check, self.function, self.dtype, self.regime)

    @property
    def group(self) -> str:
        return truth_group(self.function, self.dtype, self.regime)


def truth_group(function: str, dtype: str, regime: str) -> str:
    """The truths a result of ``function`` needs, as a name: ``dtype-regime-family``; the
    from-probabilities functions go with softmax (their inputs are its exact values)."""
    family = "softmax" if function in ("cross_entropy_from_probs",
                                       "cross_entropy_grad_wrt_probs") else function
    return f"{dtype}-{regime}-{family}"


def block_cases(*, dtypes: Sequence[str], regimes: Sequence[str], seed: int = 0,
                cases_file: str | None = None, shard: tuple[int, int] | None = None,
                max_classes: int | None = None, extra_cases: Sequence[Case] = (),
                block_elements: int = strategies.BLOCK_ELEMENTS
                ) -> dict[tuple[str, str], list[Case]]:
    """The cases :func:`run` grades with the same settings, by (dtype, regime) in order."""
    cases = shard_of(build_cases(dtypes=dtypes, regimes=regimes, seed=seed,
                                 cases_file=cases_file, max_classes=max_classes,
                                 block_elements=block_elements)
                     + list(extra_cases), shard)
    blocks: dict[tuple[str, str], list[Case]] = {}
    for case in cases:
        blocks.setdefault((case.dtype, case.regime), []).append(case)
    return blocks


def _may_report(check: str, function: str, case: Case, truth: Truth,
                provides: dict[str, tuple[str, ...]]) -> bool:
    """Whether ``check`` may report ``function`` on ``case``: what the checks require of the
    case and the adapter before they call anything (a necessary condition; the truth is
    only asked what applies, nothing is computed)."""
    needed = _READS.get(check, (function,)) if check == "chain-rule" else (function,)
    if not all(f in provides for f in needed):
        return False
    rows = case.num_rows
    if check in ("value", *_DERIVATIVE_CHECKS):
        return truth.applicable(function) or truth.outside_rule(function) is not None
    if check == "contract":
        return truth.applicable(function)
    if check == "invalid-input":
        from xentcheck.harness.checks import invalid

        return case.regime in invalid.REGIMES and rows > 0 and case.num_classes >= 2
    if check == "ignored-mean":
        ignore = case.options.get("ignore_index")
        return (rows > 0 and case.options.get("reduction") == "mean" and ignore is not None
                and case.target_kind == "indices" and bool(np.all(case.target == ignore)))
    if rows == 0:
        return False
    if check == "chain-rule":
        return (not case.options and case.dtype in ("float64", "float32")
                and truth.applicable("softmax_jacobian"))
    if not truth.applicable(function):
        return False
    if check == "self-fd":
        return case.dtype == "float64" and "cross_entropy" in provides
    if check == "reduction":
        return "reduction" in provides[function] and "reduction" not in case.options
    if check in ("batch-invariance", "chunk-invariance"):
        return rows >= 2
    if check == "shift-invariance":
        from xentcheck.harness.checks import consistency

        return consistency._shift(case.logits) is not None
    if check == "edge":
        from xentcheck.harness.checks import edges

        return any(bool(r.any()) for r in edges.situations(case.logits).values())
    return True  # range, normalization, order, determinism


class ResultRunner:
    """Computes results one at a time for one process (a pytest session or xdist worker).

    Each adapter is opened once (its worker started on first use: loading it tells what it
    provides, and calls nothing); each case's truth is computed once per dialect and each
    adapter output once per case, kept for every result that needs them. :meth:`close`
    ends the workers."""

    def __init__(self, *, profile: str = "standard", dtypes: Sequence[str] = contract.DTYPES,
                 regimes: Sequence[str] = DEFAULT_REGIMES, cases_file: str | None = None,
                 seed: int = 0, timeout: float = 60.0, shard: tuple[int, int] | None = None,
                 max_classes: int | None = None, ulp_budget: float | None = None,
                 budgets_path: str | None = None, extra_cases: Sequence[Case] = (),
                 block_elements: int = strategies.BLOCK_ELEMENTS) -> None:
        self.timeout = timeout
        self.policy = grading.profile(profile, ulp_budget=ulp_budget)
        self.budgets = grading.load_budgets(budgets_path)
        self._cases = dict(dtypes=dtypes, regimes=regimes, seed=seed, cases_file=cases_file,
                           shard=shard, max_classes=max_classes, extra_cases=extra_cases,
                           block_elements=block_elements)
        self._blocks: dict[tuple[str, str], list[Case]] | None = None
        self._handles: dict[str, Any] = {}
        self._truths: dict[tuple[int, str], Truth] = {}
        self._outputs: dict[tuple[str, int], dict[str, Any]] = {}

    @property
    def blocks(self) -> dict[tuple[str, str], list[Case]]:
        """The cases by (dtype, regime) (:func:`block_cases`), built on first use."""
        if self._blocks is None:
            self._blocks = block_cases(**self._cases)
        return self._blocks

    # adapters ---------------------------------------------------------------
    def handle(self, spec: str) -> Any:
        """The open handle of ``spec`` (opened on first use; loading it calls nothing).
        Raises :class:`~xentcheck.harness.adapters.contract.AdapterSpecError` for a spec
        that names nothing."""
        self._open(spec).wait()
        return self._handles[spec]

    def _open(self, spec: str) -> Any:
        """The handle of ``spec``, its worker started in the background if need be."""
        if spec not in self._handles:
            from xentcheck.harness.adapters.registry import open_adapter

            self._handles[spec] = open_adapter(spec, timeout=self.timeout)
        return self._handles[spec]

    def close(self) -> None:
        handles, self._handles = list(self._handles.values()), {}
        with ThreadPoolExecutor(max_workers=max(1, len(handles))) as pool:
            list(pool.map(lambda h: h.close(), handles))

    # planning ---------------------------------------------------------------
    def truth(self, case: Case, dialect: str) -> Truth:
        """The truth of ``case`` under ``dialect``: an empty one at first, filled on use."""
        key = (id(case), dialect)
        if key not in self._truths:
            base = None if dialect == dialects.DEFAULT.name else self.truth(
                case, dialects.DEFAULT.name)  # what the dialect leaves as PyTorch's
            self._truths[key] = Truth(case, dialects.dialect(dialect), base=base)
        return self._truths[key]

    def plan(self, specs: Sequence[str]) -> list[tuple[Any, str, list[PlannedResult]]]:
        """For each adapter: its handle, its report name and the results it may report,
        in order of dtype, regime, function and check. Opens the adapters (their workers
        load them and say what they provide) and calls no adapter function."""
        for spec in specs:  # the workers load the adapters while the cases are built
            self._open(spec)
        self.blocks  # noqa: B018 - built now
        handles = [self.handle(spec) for spec in specs]
        names = unique_names(handles)
        out = []
        for handle, name in zip(handles, names, strict=True):
            planned: list[PlannedResult] = []
            if handle.unavailable is None:
                for (dtype, _), cases in self.blocks.items():
                    if dtype in handle.dtypes:
                        planned.extend(self._plan_block(handle, name, cases))
            out.append((handle, name, planned))
        return out

    def _plan_block(self, handle: Any, name: str, cases: list[Case]) -> list[PlannedResult]:
        found = set()
        # the shifted and rescaled inputs some checks would build may overflow, by design
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for case in cases:
                truth = self.truth(case, handle.dialect)
                for check, functions in CHECKS.items():
                    for function in functions:
                        if (check, function) not in found and _may_report(
                                check, function, case, truth, handle.provides):
                            found.add((check, function))
        order = {f: i for i, f in enumerate(contract.FUNCTIONS)}
        checks = list(CHECKS)
        dtype, regime = cases[0].dtype, cases[0].regime
        return [PlannedResult(name, handle.spec, function, dtype, regime, check)
                for check, function in sorted(found, key=lambda cf: (
                    order.get(cf[1], len(order)), checks.index(cf[0])))]

    # computing ----------------------------------------------------------------
    def result(self, planned: PlannedResult) -> Result | None:
        """The result :func:`run` reports for ``planned`` (None when the check reported
        nothing on any of its cases)."""
        from xentcheck.harness.checks import invariants

        handle = self.handle(planned.spec)
        result = Result(*planned.key)
        found = False
        reads = _READS.get(planned.check, (planned.function,))
        view = _ProvidedOnly(handle, reads)
        for case in self.blocks.get((planned.dtype, planned.regime), ()):
            if case.dtype not in handle.dtypes:
                continue
            ctx = Context(planned.adapter, planned.spec, view,
                          self.truth(case, handle.dialect), self.policy, self.budgets,
                          self.timeout, self._outputs.setdefault((planned.spec, id(case)), {}))
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # candidates' own warnings are not ours
                if planned.check == "contract":
                    findings: Iterable[Finding] = (
                        invariants._contract(self._requested(ctx, planned.function)))
                else:
                    findings = _findings(planned.check, planned.function, ctx)
                for finding in findings:
                    if (finding.check, finding.function) == (planned.check, planned.function):
                        result.add(finding)
                        found = True
        return result if found else None

    def _requested(self, ctx: Context, function: str) -> Context:
        """A context whose memo holds ``function``'s output if :func:`run`'s checks before
        the invariants ask for it on this case (so that ``contract`` reports it), else
        nothing."""
        from xentcheck.harness.checks import consistency

        mine = Context(ctx.adapter, ctx.spec, ctx.handle, ctx.truth, ctx.profile, ctx.budgets,
                       ctx.timeout, {})
        if not ctx.provides(function) or not ctx.truth.applicable(function):
            return mine  # no check asks for it
        asked = True  # the values and derivatives checks ask for every applicable function
        if function in CHECKS["gradient"] + CHECKS["jvp"] + CHECKS["hvp"]:
            asked = ctx.truth.certificate(function).holds
            if not asked and ctx.case.num_rows:  # the consistency checks may still ask
                extra = {"softmax": _READS["chain-rule"],
                         "softmax_jacobian": _READS["chain-rule"],
                         "cross_entropy_grad": _READS["self-fd"]}.get(function, (function,))
                probe = _Probe(ctx.adapter, ctx.spec,
                               _ProvidedOnly(ctx.handle.handle, (function, *extra)),
                               ctx.truth, ctx.profile, ctx.budgets, ctx.timeout, ctx._memo)
                probe.watched = function
                for part in (consistency._chain_rule, consistency._self_fd,
                             consistency._reductions, consistency._batch_invariance,
                             consistency._shift_invariance, consistency._chunk_invariance):
                    try:
                        for _ in part(probe):
                            pass
                    except _Asked:
                        asked = True
                        break
        if asked:
            mine._memo[function] = ctx.outcome(function)
        return mine


class _ProvidedOnly:
    """An adapter handle that shows only some of the functions it provides (so that a
    check computes, and calls, only what one result needs)."""

    def __init__(self, handle: Any, functions: Iterable[str]) -> None:
        self.handle = handle
        wanted = set(functions)
        self.provides = {f: o for f, o in handle.provides.items() if f in wanted}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


class _Asked(Exception):
    """The watched function's output was asked for (see :class:`_Probe`)."""


class _Probe(Context):
    """A context that stops a check at the moment it asks for one function's output."""

    watched: str = ""

    def outcome(self, function: str) -> Any:
        if function == self.watched:
            raise _Asked
        return super().outcome(function)


def _findings(check: str, function: str, ctx: Context) -> Iterator[Finding]:
    """What ``check`` finds on one case: a derivative check for ``function`` alone, any
    other check for every function the context shows (:func:`_case_findings`)."""
    if check in _DERIVATIVE_CHECKS:
        from xentcheck.harness.checks import derivatives

        return derivatives.certified(ctx, check, (function,))
    return _case_findings(check, ctx)


def _case_findings(check: str, ctx: Context) -> Iterator[Finding]:
    """What ``check`` (not a derivative check: those take their functions) finds on one
    case, for every function the context shows."""
    from xentcheck.harness.checks import consistency, edges, invalid, invariants, values

    if check in _DERIVATIVE_CHECKS:
        raise ValueError(f"{check!r} is graded per function: call _findings")
    if check == "value":
        return values.run(ctx)
    if check in ("edge", "ignored-mean"):
        return edges.run(ctx)
    if check == "invalid-input":
        return invalid.run(ctx)
    if ctx.case.num_rows == 0:  # the consistency and invariant checks need rows
        return iter(())
    parts = {
        "chain-rule": consistency._chain_rule, "self-fd": consistency._self_fd,
        "reduction": consistency._reductions,
        "batch-invariance": consistency._batch_invariance,
        "shift-invariance": consistency._shift_invariance,
        "chunk-invariance": consistency._chunk_invariance,
        "range": invariants._ranges, "normalization": invariants._normalization,
        "order": invariants._order, "determinism": invariants._determinism,
    }
    return parts[check](ctx)
