"""The pytest plugin: the conformance suite as tests in a user's own CI.

Loaded through the ``pytest11`` entry point ``xentcheck`` (or ``-p xentcheck.harness.plugin``)::

    pytest --xentcheck-adapter mypkg.ops:adapter
    pytest --xentcheck-adapter adapter.py:ops --xentcheck-dtype float32 \\
           --xentcheck-regime large --xentcheck-profile strict --junitxml=xentcheck.xml
    pytest -n 2 --xentcheck-adapter adapter.py:ops          # with pytest-xdist

Without ``--xentcheck-adapter`` the plugin adds nothing. With it, pytest gets one test per
(adapter, function, dtype, regime, check), named ``function[dtype-regime-check]``
(``log_softmax[float32-large-value]``) under a collector ``xentcheck`` (node ids
``xentcheck::log_softmax[float32-large-value]``); with several adapters each gets its own
collector level (``xentcheck::numpy_stable::softmax[...]``).

**Collection computes nothing.** The tests are enumerated from the fixed-seed cases of
each (dtype, regime) (cheap to build) and from what the adapter says it provides: its
worker process is started and loads it, and no adapter function is called, no truth
computed (:meth:`xentcheck.harness.runner.ResultRunner.plan`). A test may be collected
whose check then finds nothing to judge on its cases (e.g. a range check on rows that are
all NaN); it is skipped with the reason. Each test computes its own result when it runs
(:meth:`~xentcheck.harness.runner.ResultRunner.result`, the very result ``xentcheck run``
reports): the truth of each case is computed once per process and shared by every test
that needs it, and so is each adapter output; the adapter's worker is started once per
process. So ``-k``, ``-m``, ``--deselect``, ``-x``, ``--lf`` and ``--collect-only`` cost
only what the selected tests need (``--collect-only`` calls nothing).

**pytest-xdist.** Each xdist worker collects (starting its own adapter worker) and runs
the tests it is sent. Under ``--dist load`` (what ``-n N`` means) the plugin's tests go
to the workers in groups that need the same truths, one (dtype, regime, function) each
(:func:`xentcheck.harness.runner.truth_group`), so that no truth is computed twice; the
project's other tests are sent one by one as usual. The same groups are ``xdist_group``
marks, for ``--dist loadgroup``. Other ``--dist`` modes work, at the cost of truths
computed by several workers.

**Options.** Every option of ``xentcheck run`` is an option here, ``--xentcheck-NAME``,
from the one definition in :mod:`xentcheck.harness.options`, with the same meaning
except: ``--xentcheck-jobs`` (pytest shares tests among processes with pytest-xdist:
``-n J``; a J above 1 is refused), ``--xentcheck-out DIR`` (no reports unless given; then
the report set of the results this session computed, written at its end),
``--xentcheck-baseline FILE`` (each result is judged against the baseline as ``xentcheck
compare`` would: a regression fails, a failure the baseline records too is an expected
failure, ``xfail``; results that are no longer collected at all are not seen) and
``--xentcheck-max-examples N`` (one extra test per provided function and dtype,
``function[dtype-hunt]``, hunting its worst input with N Hypothesis examples; it fails
with the shrunk failing case. The cases it finds are not graded by the other checks in
the same session; ``--xentcheck-pin`` pins them, and every later session replays them).

An adapter spec that cannot be resolved, or any other bad option or file, is a usage
error (exit 4, one line); an adapter that cannot be started gives one failing test
``ADAPTER[unavailable]`` with the reason.

A failing test reports, without a harness traceback, what the CLI's reports say: the
function, dtype, regime and check, the grade, how many rows failed, the worst input as hex
floats, got, should be, the error in ulps against the bound, notes and a reproducer line.

**Hypothesis in CI.** Hypothesis loads its own ``ci`` profile when it sees a CI
environment, and that profile sets ``database=None``: failures found in one CI run are not
replayed by the next. The plugin registers a profile ``xentcheck-ci`` (see
:func:`register_ci_profile`) that keeps a directory example database (cache
``.hypothesis/`` between CI runs to carry failures over), no deadline (adapter calls cross a
worker process) and ``print_blob=True``; select it explicitly with
``pytest --hypothesis-profile xentcheck-ci``. It does not set ``derandomize=True``:
Hypothesis defines ``derandomize=True`` as implying ``database=None``, the very thing the
profile exists to avoid; pin ``--hypothesis-seed`` instead when a CI job must be repeatable.

Importing this module imports nothing heavy (no NumPy, mpmath or frameworks): the harness
is imported inside the hooks, and only when ``--xentcheck-adapter`` is given (and not at
all in the xdist controller, which only schedules).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xentcheck.harness import options

#: The name of the Hypothesis settings profile registered for CI.
CI_PROFILE = "xentcheck-ci"

#: Where the ``xentcheck-ci`` profile keeps its example database (relative to the cwd).
CI_DATABASE = ".hypothesis/examples"

#: The check names (``options.CHECKS``, as :data:`xentcheck.harness.runner.CHECKS` has
#: them): the xdist scheduler reads test ids with them without importing the harness.
CHECK_NAMES: tuple[str, ...] = options.CHECKS

#: The check name of the ``--xentcheck-max-examples`` tests.
HUNT = "hunt"

_STATE_KEY = pytest.StashKey["_Session"]()


# ---------------------------------------------------------------------------- hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xentcheck", "xentcheck: softmax / cross-entropy conformance")
    options.add_to_pytest(group)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tryfirst: before Hypothesis' own pytest_configure loads --hypothesis-profile.
    wanted = getattr(config.option, "hypothesis_profile", None) == CI_PROFILE
    if wanted or (config.getoption("xentcheck_adapter") and not _xdist_controller(config)):
        register_ci_profile()
    config.addinivalue_line("markers", "xdist_group(name): the xdist group of a test")
    if config.getoption("xentcheck_adapter"):
        config.stash[_STATE_KEY] = _Session(config)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    # tryfirst: the items must exist before -k, -m, --deselect and --lf filter the list.
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    state.plan()  # a bad spec, corpus or budget file is a usage error: one line, exit 4
    root = XentcheckRun.from_parent(session, name="xentcheck", nodeid="xentcheck")
    items.extend(session.genitems(root))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    data = getattr(item, "xentcheck_data", None)
    if data is not None and call.when == "call":
        # plain data: it travels from an xdist worker to the controller with the report
        outcome.get_result().xentcheck = data


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    data = getattr(report, "xentcheck", None)
    if data is not None:
        _COLLECTED.append(data)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    state.close()
    if state.out is not None and not hasattr(session.config, "workerinput"):
        state.write_reports(list(_COLLECTED))
    _COLLECTED.clear()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist load``: the plugin's tests in groups of one truth group each."""
    if config.getvalue("dist") != "load" or not config.getoption("xentcheck_adapter"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class TruthGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return TruthGroupScheduling(config, log)


def _xdist_controller(config: pytest.Config) -> bool:
    """Whether this process is pytest-xdist's controller (it schedules, runs no test)."""
    return (getattr(config.option, "dist", "no") != "no"
            and not hasattr(config, "workerinput"))


def scope_of(nodeid: str) -> str:
    """The unit of work of a test under xdist: its truth group for a test of the plugin
    (adapters aside: they share truths), the test itself otherwise.

    >>> scope_of("xentcheck::log_softmax[float32-overflow-edge-shift-invariance]")
    'xentcheck:float32-overflow-edge-log_softmax'
    >>> scope_of("xentcheck::numpy::cross_entropy_grad_wrt_probs[float64-large-value]")
    'xentcheck:float64-large-softmax'
    >>> scope_of("tests/test_own.py::test_own[a-b]")
    'tests/test_own.py::test_own[a-b]'
    """
    if not nodeid.startswith("xentcheck::") or not nodeid.endswith("]"):
        return nodeid
    name = nodeid.rsplit("::", 1)[1]
    function, _, inner = name[:-1].partition("[")
    dtype, _, rest = inner.partition("-")
    for check in sorted((*CHECK_NAMES, HUNT), key=len, reverse=True):
        if rest == check or rest.endswith("-" + check):
            rest = rest[:-len(check)].rstrip("-")
            break
    if function in ("cross_entropy_from_probs", "cross_entropy_grad_wrt_probs"):
        function = "softmax"
    return f"xentcheck:{dtype}-{rest + '-' if rest else ''}{function}"


def register_ci_profile() -> None:
    """Register the Hypothesis settings profile ``xentcheck-ci`` (does not load it).

    Load it with ``pytest --hypothesis-profile xentcheck-ci`` or
    ``hypothesis.settings.load_profile("xentcheck-ci")``.
    """
    from hypothesis import HealthCheck, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    settings.register_profile(
        CI_PROFILE,
        # Unlike Hypothesis' automatic "ci" profile (database=None): keep failing examples
        # so the next CI run replays them first. derandomize stays False because Hypothesis
        # defines derandomize=True as implying database=None.
        database=DirectoryBasedExampleDatabase(CI_DATABASE),
        derandomize=False,
        deadline=None,  # every adapter call crosses a worker process; timings vary
        print_blob=True,  # a failure prints the blob that reproduces it
        suppress_health_check=[HealthCheck.too_slow],
    )


# ------------------------------------------------------------------- the session

#: The plugin's part of each test report of this process (``--xentcheck-out``).
_COLLECTED: list[dict[str, Any]] = []


class _Session:
    """The settings of this session, validated, and (on first use) its result runner."""

    def __init__(self, config: pytest.Config) -> None:
        # Validated here, in every process (pytest-xdist's controller included, which must
        # stop at a usage error before it starts workers): nothing heavy is imported.
        values = options.from_pytest(config)
        self.values = values
        self.specs: list[str] = list(values["adapter"])
        self.dtypes: list[str] = values["dtype"] or list(options.DTYPES)
        for dtype in self.dtypes:
            if dtype not in options.DTYPES:
                raise pytest.UsageError(f"--xentcheck-dtype: unknown dtype {dtype!r}; choose "
                                        f"from {', '.join(options.DTYPES)}")
        if values["regime"]:  # (the regimes are known only to the heavy strategies module)
            self.regimes()
        self.checks: list[str] | None = values["check"]
        for check in self.checks or ():
            if check not in CHECK_NAMES:
                raise pytest.UsageError(f"--xentcheck-check: unknown check {check!r}; "
                                        f"choose from {', '.join(CHECK_NAMES)}")
        if values["jobs"] > 1:
            raise pytest.UsageError("--xentcheck-jobs: pytest shares the tests among "
                                    "processes with pytest-xdist; give -n "
                                    f"{values['jobs']} instead")
        if values["pin"] and not values["max_examples"]:
            raise pytest.UsageError("--xentcheck-pin: pins what --xentcheck-max-examples "
                                    "finds; give that too")
        self.out: Path | None = None
        if values["out"] is not None:
            self.out = Path(values["out"])
            self._check_out()
        self.baseline: dict[str, Any] | None = None
        if values["baseline"] is not None:
            self.baseline = self._load_baseline(values["baseline"])
        self.started = time.monotonic()
        self.runner: Any = None
        self.plans: list[tuple[Any, str, list[Any]]] = []

    def _check_out(self) -> None:
        from xentcheck.harness import report

        assert self.out is not None
        if self.out.exists() and not self.out.is_dir():
            raise pytest.UsageError(f"--xentcheck-out {self.out} is a file; give a directory")
        try:
            report.check_writable(self.out)
        except OSError as err:
            raise pytest.UsageError(f"--xentcheck-out {self.out}: cannot write reports there "
                                    f"({err.strerror or err})") from None

    @staticmethod
    def _load_baseline(path: str) -> dict[str, Any]:
        from xentcheck.harness.report import json_report

        try:
            data = json_report.load(path)
        except ValueError as err:
            raise pytest.UsageError(f"--xentcheck-baseline: {err}") from None
        if not isinstance(data.get("adapters"), list) or "inputs" not in data:
            raise pytest.UsageError(f"--xentcheck-baseline: {path}: not a conformance.json "
                                    "written by 'xentcheck run' (0.2 or later)")
        return data

    def regimes(self) -> list[str]:
        """The regimes asked for (all the default ones when none is), validated."""
        from xentcheck.harness import strategies

        regimes = self.values["regime"] or [
            r for r in strategies.REGIMES if r not in strategies.HUNT_ONLY_REGIMES]
        for regime in regimes:
            if regime not in strategies.REGIMES:
                raise pytest.UsageError(f"--xentcheck-regime: unknown regime {regime!r}; "
                                        f"choose from {', '.join(strategies.REGIMES)}")
        return regimes

    def settings(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~xentcheck.harness.runner.ResultRunner`."""
        values = self.values
        return dict(profile=values["profile"], dtypes=self.dtypes, regimes=self.regimes(),
                    cases_file=values["cases"], seed=values["seed"],
                    timeout=values["timeout"], shard=values["shard"],
                    max_classes=values["max_classes"], budgets_path=values["budgets"],
                    block_elements=values["block_elements"])

    def plan(self) -> None:
        """Build the cases, open the adapters and name every test (no adapter call)."""
        from xentcheck.harness import runner
        from xentcheck.harness.adapters.contract import AdapterSpecError

        settings = self.settings()
        try:
            self.runner = runner.ResultRunner(**settings)
            self.plans = self.runner.plan(self.specs)
            if self.checks:  # the other checks are not planned: no test, no call
                self.plans = [(handle, name, [p for p in planned if p.check in self.checks])
                              for handle, name, planned in self.plans]
        except AdapterSpecError as err:
            raise pytest.UsageError(f"--xentcheck-adapter: {err}") from None
        except ValueError as err:  # a corpus, budget or pinned-cases file that is wrong
            raise pytest.UsageError(f"xentcheck: {err}") from None

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()

    # --out ---------------------------------------------------------------------
    def write_reports(self, collected: list[dict[str, Any]]) -> None:
        """Write the report set of the results in ``collected`` (what the tests of this
        session computed, from every xdist worker) to ``--xentcheck-out``."""
        from xentcheck.harness import report, runner
        from xentcheck.harness.adapters.contract import FUNCTIONS

        settings = self.settings()
        blocks = runner.block_cases(**{k: settings[k] for k in (
            "dtypes", "regimes", "seed", "cases_file", "shard", "max_classes",
            "block_elements")})
        adapters: dict[str, dict[str, Any]] = {}
        for data in collected:
            meta = data["adapter"]
            entry = adapters.setdefault(meta["name"], {
                **meta, "verdict": "pass", "not_run": [], "results": [],
                "not_provided": [f for f in FUNCTIONS if f not in meta["provides"]]})
            if data.get("result") is not None:
                entry["results"].append(data["result"])
                if not data["result"]["passed"]:
                    entry["verdict"] = "fail"
            if meta.get("reason"):
                entry["verdict"] = "error"
        graded = {(r["dtype"], r["regime"]) for a in adapters.values() for r in a["results"]}
        cases = [c for key, block in blocks.items() if key in graded for c in block]
        data = {
            "schema": runner.SCHEMA, "platform": runner.platform_info(),
            "settings": {**{k: settings[k] for k in ("profile", "seed", "timeout",
                                                     "max_classes", "block_elements")},
                         "ulp_budget": None, "dtypes": settings["dtypes"],
                         "regimes": settings["regimes"], "cases_file": settings["cases_file"],
                         "shard": "{}/{}".format(*settings["shard"]) if settings["shard"]
                         else None,
                         **({"checks": [c for c in CHECK_NAMES if c in self.checks]}
                            if self.checks else {})},
            "cases": len(cases), "seconds": round(time.monotonic() - self.started, 3),
            "inputs": sorted(runner.fingerprints(cases)), "skipped": [],
            "adapters": [dict(a, results=sorted(a["results"], key=lambda r: (
                r["check"], r["function"], r["dtype"], r["regime"])))
                for a in adapters.values()],
        }
        data["platform"]["adapter_versions"] = {a["name"]: a["version"]
                                                for a in adapters.values()}
        assert self.out is not None
        report.write_set(data, self.out)

    # --baseline ----------------------------------------------------------------
    def judge(self, adapter: dict[str, Any], key: tuple[str, ...],
              result: dict[str, Any] | None, cases: list[Any]) -> tuple[str, str] | None:
        """How the baseline sees ``result`` (None: the check reported nothing):
        ``("regression", why)``, ``("known", why)`` for a failure it does not count, or
        None when the result stands as it is."""
        from xentcheck.harness import compare, runner

        assert self.baseline is not None
        name, check, function, dtype, regime = key
        base = self.baseline
        then = [a for a in base["adapters"] if a.get("name") == name]
        base_results = [r for a in then for r in a.get("results", [])
                        if (r.get("check"), r.get("function"), r.get("dtype"),
                            r.get("regime")) == (check, function, dtype, regime)]
        mini_base = {**base, "inputs": [row for row in base.get("inputs") or ()
                                        if (row[1], row[2]) == (dtype, regime)],
                     "adapters": [{"name": name, "verdict": "pass",
                                   "results": base_results}] if then else []}
        mini_now = {"schema": base.get("schema"), "settings": base.get("settings"),
                    "platform": runner.platform_info(), "inputs": runner.fingerprints(cases),
                    "adapters": [{"name": name, "verdict": "pass",
                                  "results": [result] if result is not None else []}]}
        comparison = compare.compare(mini_base, mini_now,
                                     ulp_slack=self.values["ulp_slack"])
        subject = compare._key_text(key)  # type: ignore[arg-type]
        for change in comparison.regressions:
            if change.subject == subject:
                return "regression", f"regression against {self.values['baseline']}: " \
                                     f"[{change.kind}] {change.detail}"
        if result is not None and not result["passed"]:
            if any(c.subject == subject for c in comparison.not_comparable):
                return "known", (f"not comparable with {self.values['baseline']} (graded "
                                 "on other inputs): not counted")
            return "known", f"known failure, recorded in {self.values['baseline']}"
        return None


def _state(config: pytest.Config) -> _Session:
    return config.stash[_STATE_KEY]


# --------------------------------------------------------------- collectors, items


class XentcheckRun(pytest.Collector):
    """The root of the plugin's tests: one item per result a run may report."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        plans = _state(self.config).plans
        for handle, name, planned in plans:
            if len(plans) > 1:
                yield XentcheckAdapter.from_parent(self, name=name)
            else:
                yield from XentcheckAdapter.items_of(self, handle, name, planned)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, "xentcheck"


class XentcheckAdapter(pytest.Collector):
    """One adapter's tests, when a session checks several adapters."""

    def collect(self) -> Iterator[pytest.Item]:
        for handle, name, planned in _state(self.config).plans:
            if name == self.name:
                yield from self.items_of(self, handle, name, planned)

    @staticmethod
    def items_of(parent: pytest.Collector, handle: Any, name: str,
                 planned: list[Any]) -> Iterator[pytest.Item]:
        meta = _adapter_meta(handle, name)
        if handle.unavailable is not None:
            yield XentcheckUnavailable.from_parent(parent, name=f"{name}[unavailable]",
                                                   adapter=meta)
            return
        for result in planned:
            item = XentcheckResult.from_parent(parent, name=result_id(result.__dict__),
                                               adapter=meta, planned=result)
            item.add_marker(pytest.mark.xdist_group(name=result.group))
            yield item
        state = _state(parent.config)
        if state.values["max_examples"]:
            regimes = state.values["regime"] or [None]
            for function in handle.provides:
                for dtype in state.dtypes:
                    if dtype not in handle.dtypes:
                        continue
                    for regime in regimes:
                        where = f"{dtype}-{regime}" if regime else dtype
                        yield XentcheckHunt.from_parent(
                            parent, name=f"{function}[{where}-{HUNT}]", adapter=meta,
                            function=function, dtype=dtype, regime=regime)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


def _adapter_meta(handle: Any, name: str) -> dict[str, Any]:
    """The adapter as reports describe it (plain data)."""
    return {"name": name, "spec": handle.spec, "version": handle.version,
            "reason": handle.unavailable, "dialect": handle.dialect,
            "dtypes": list(handle.dtypes), "provides": sorted(handle.provides)}


def result_id(result: dict[str, Any]) -> str:
    """A result's test name: ``function[dtype-regime-check]``.

    >>> result_id({"function": "log_softmax", "dtype": "float32", "regime": "large",
    ...            "check": "value"})
    'log_softmax[float32-large-value]'
    """
    return f"{result['function']}[{result['dtype']}-{result['regime']}-{result['check']}]"


class ConformanceFailure(AssertionError):
    """A result that did not pass; its message is the whole failure report."""


class _ConformanceItem(pytest.Item):
    """A test item whose conformance failures print as their message, no traceback."""

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str | Any:
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)


class XentcheckResult(_ConformanceItem):
    """One (adapter, function, dtype, regime, check): computes the result when it runs and
    passes when the result does."""

    def __init__(self, *, adapter: dict[str, Any], planned: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter
        self.planned = planned
        for key in ("function", "dtype", "regime", "check"):
            self.keywords[getattr(planned, key)] = True  # -k float32, -k value

    def runtest(self) -> None:
        __tracebackhide__ = True
        state = _state(self.config)
        planned = self.planned
        result = state.runner.result(planned)
        data = None if result is None else result.to_dict()
        if state.out is not None:  # for the report set (sent along from an xdist worker)
            self.xentcheck_data = {"adapter": self.adapter, "result": data}
        if data is not None:
            self.user_properties.extend(
                (key, data[key]) for key in ("grade", "cases", "failed", "max_ulp")
                if data.get(key) is not None)
        verdict = None
        if state.baseline is not None:
            cases = state.runner.blocks.get((planned.dtype, planned.regime), [])
            verdict = state.judge(self.adapter, planned.key, data, cases)
        if data is None:
            if verdict is not None and verdict[0] == "regression":
                raise ConformanceFailure(f"{self.adapter['name']}: {planned.function} "
                                         f"{planned.dtype} {planned.regime}: check "
                                         f"{planned.check!r}: {verdict[1]}")
            count = len(state.runner.blocks.get((planned.dtype, planned.regime), []))
            pytest.skip(f"check {planned.check!r} has nothing to judge of {planned.function} "
                        f"on the {count} {planned.dtype} {planned.regime} cases (it applies "
                        "to none, or the adapter does not take their options)")
        message = None if data["passed"] else failure_message(self.adapter, data)
        if verdict is not None and verdict[0] == "regression":
            raise ConformanceFailure(f"{message}\n  baseline      {verdict[1]}" if message
                                     else f"{self.adapter['name']}: {planned.function} "
                                          f"{planned.dtype} {planned.regime}: check "
                                          f"{planned.check!r} passes but: {verdict[1]}")
        if message is not None:
            if verdict is not None and verdict[0] == "known":
                pytest.xfail(verdict[1])
            raise ConformanceFailure(message)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"{self.adapter['name']}: {self.name}"


class XentcheckHunt(_ConformanceItem):
    """``--xentcheck-max-examples``: a Hypothesis hunt for one function's worst input."""

    def __init__(self, *, adapter: dict[str, Any], function: str, dtype: str,
                 regime: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter
        # not .function: pytest's -k reads an item's .function as a Python function
        self.hunted, self.dtype, self.regime = function, dtype, regime
        for key in (function, dtype, regime or "", HUNT):
            if key:
                self.keywords[key] = True

    def runtest(self) -> None:
        __tracebackhide__ = True
        from xentcheck.harness import hunt

        state = _state(self.config)
        values = state.values
        found = hunt.hunt(state.runner.handle(self.adapter["spec"]), self.hunted,
                          dtype=self.dtype, regime=self.regime,
                          max_examples=values["max_examples"], seed=values["seed"],
                          profile=values["profile"], timeout=values["timeout"],
                          budgets_path=values["budgets"], max_classes=values["max_classes"])
        if values["pin"] and found.cases():
            _pin(found.cases())
        if found.error is not None:
            raise ConformanceFailure(found.summary())
        if found.found_failure:
            report = found.failure_report.to_dict() if found.failure_report else {}
            lines = [f"{self.adapter['name']}: {self.hunted} {self.dtype} "
                     f"{self.regime or 'all regimes'}: the hunt found a failure of the "
                     f"{found.profile} profile in {found.examples} examples, grade "
                     f"{found.worst_grade}", *_worst_lines(report)]
            if found.note:
                lines.append(f"  note          {found.note}")
            if found.reproducer:
                lines.append(f"  reproduce     {found.reproducer}")
            raise ConformanceFailure("\n".join(lines))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"{self.adapter['name']}: {self.name}"


def _pin(cases: list[Any]) -> None:
    """Pin ``cases`` (one process at a time: xdist workers may find cases together)."""
    import fcntl
    import tempfile

    from xentcheck.harness import hunt

    with open(Path(tempfile.gettempdir()) / "xentcheck-pin.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        hunt.pin(cases)


class XentcheckUnavailable(_ConformanceItem):
    """An adapter that could not be started at all: one failing test with the reason."""

    def __init__(self, *, adapter: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter

    def runtest(self) -> None:
        __tracebackhide__ = True
        if _state(self.config).out is not None:
            self.xentcheck_data = {"adapter": self.adapter, "result": None}
        raise ConformanceFailure(f"adapter {self.adapter['name']} ({self.adapter['spec']}) "
                                 f"could not be run: {self.adapter['reason']}")

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


# ------------------------------------------------------------------- the message


def _ulps(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):  # the JSON-ready report spells non-finite numbers as text
        return f"{value} ulp"
    if isinstance(value, float) and math.isinf(value):
        return "inf ulp"
    return f"{value:.4g} ulp"


def _worst_lines(worst: dict[str, Any]) -> list[str]:
    """The worst element of a result: where, the input, got, should be, the error."""
    if not worst:
        return []
    where = f"case {worst.get('case')}, row {worst.get('row')}"
    if worst.get("index"):
        where += f", element {worst['index']}"
    lines = [f"  worst input   {where}"]
    if worst.get("input") is not None:
        lines.append(f"                [{', '.join(map(str, worst['input']))}]")
    if worst.get("got") is not None or worst.get("expected") is not None:
        lines.append(f"  got           {worst.get('got')}")
        lines.append(f"  should be     {worst.get('expected')}")
    if worst.get("ulp") is not None or worst.get("allowed_ulp") is not None:
        lines.append(f"  error         {_ulps(worst.get('ulp'))} "
                     f"(bound {_ulps(worst.get('allowed_ulp'))})")
    return lines


def failure_message(adapter: dict[str, Any], result: dict[str, Any]) -> str:
    """A failing result as a self-explaining message (STYLE.md §5).

    >>> print(failure_message({"name": "mine", "version": None}, {
    ...     "function": "softmax", "dtype": "float64", "regime": "large",
    ...     "check": "value", "grade": "broken", "cases": 11, "failed": 3, "max_ulp": None,
    ...     "notes": [], "reproducer": "python -m xentcheck.harness.repro ...",
    ...     "worst": {"case": "large-float64-s0-1", "row": 0, "index": [1],
    ...               "input": ["0x1.0p+10", "0x1.0p+10"], "got": "nan", "expected": "0.5",
    ...               "ulp": None, "allowed_ulp": 12.1}}))
    mine: softmax float64 large: check 'value' failed, grade broken (3 of 11 rows failed)
      worst input   case large-float64-s0-1, row 0, element [1]
                    [0x1.0p+10, 0x1.0p+10]
      got           nan
      should be     0.5
      error         n/a (bound 12.1 ulp)
      reproduce     python -m xentcheck.harness.repro ...
    """
    name = adapter["name"] + (f" {adapter['version']}" if adapter.get("version") else "")
    lines = [f"{name}: {result['function']} {result['dtype']} {result['regime']}: "
             f"check {result['check']!r} failed, grade {result['grade']} "
             f"({result['failed']} of {result['cases']} rows failed)"]
    lines += _worst_lines(result.get("worst") or {})
    if result.get("max_ulp") is not None:
        lines.append(f"  max error     {_ulps(result['max_ulp'])} over the regime")
    for note in result.get("notes") or ():
        lines.append(f"  note          {note}")
    if result.get("reproducer"):
        lines.append(f"  reproduce     {result['reproducer']}")
    return "\n".join(lines)
