"""The pytest plugin: the conformance suite as tests in a user's own CI.

Loaded through the ``pytest11`` entry point ``xentcheck`` (or ``-p harness.plugin``)::

    pytest --xentcheck-adapter mypkg.ops:adapter
    pytest --xentcheck-adapter adapter.py:ops --xentcheck-dtype float32 \\
           --xentcheck-regime large --xentcheck-profile strict --junitxml=xentcheck.xml

Without ``--xentcheck-adapter`` the plugin adds nothing. With it, pytest gets one test per
result of the run, i.e. per (adapter, function, dtype, regime, check), named
``function[dtype-regime-check]`` (``log_softmax[float32-large-value]``) under a collector
``xentcheck`` (node ids ``xentcheck::log_softmax[float32-large-value]``); with several
adapters each gets its own collector level (``xentcheck::numpy_stable::softmax[...]``).
``-k``, ``-m``, ``--deselect``, ``--collect-only`` and ``--junitxml`` work as for any test.

**Collection runs the suite.** Which results exist depends on what the adapter provides and
on what each check finds applicable to each regime, so the ids are only known once the run
has been made: the run (:func:`harness.runner.run`, once per session) happens at collection,
and each test then asserts its own result. ``--collect-only`` therefore also runs the suite
(seconds for one adapter and a few regimes); under pytest-xdist every worker would make its
own run, so do not combine the two. An adapter spec that cannot be resolved is a usage error
(exit 4, one line); an adapter that cannot be started gives one failing test
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
is imported inside the hooks, and only when ``--xentcheck-adapter`` is given.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from harness import options

#: The name of the Hypothesis settings profile registered for CI.
CI_PROFILE = "xentcheck-ci"

#: Where the ``xentcheck-ci`` profile keeps its example database (relative to the cwd).
CI_DATABASE = ".hypothesis/examples"

#: Where the run's JSON-ready report is kept for the session (``config.stash``).
_REPORT_KEY = pytest.StashKey[dict]()


# ---------------------------------------------------------------------------- hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xentcheck", "xentcheck: softmax / cross-entropy conformance")
    options.add_to_pytest(group)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tryfirst: before Hypothesis' own pytest_configure loads --hypothesis-profile.
    wanted = getattr(config.option, "hypothesis_profile", None) == CI_PROFILE
    if wanted or config.getoption("xentcheck_adapter"):
        register_ci_profile()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    # tryfirst: the items must exist before -k, -m and --deselect filter the list.
    if not config.getoption("xentcheck_adapter"):
        return
    _report(config)  # a spec that cannot be resolved is a usage error: one line, exit 4
    root = XentcheckRun.from_parent(session, name="xentcheck", nodeid="xentcheck")
    items.extend(session.genitems(root))


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


# ------------------------------------------------------------------------ the run


def _run_settings(config: pytest.Config) -> tuple[list[str], dict[str, Any]]:
    """The adapters and keyword arguments of :func:`harness.runner.run`, validated."""
    from harness import runner, strategies
    from harness.adapters.contract import DTYPES

    values = options.from_pytest(config)
    dtypes = values["dtype"] or list(DTYPES)
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise pytest.UsageError(f"--xentcheck-dtype: unknown dtype {dtype!r}; choose from "
                                    f"{', '.join(DTYPES)}")
    regimes = values["regime"] or list(runner.DEFAULT_REGIMES)
    for regime in regimes:
        if regime not in strategies.REGIMES:
            raise pytest.UsageError(f"--xentcheck-regime: unknown regime {regime!r}; choose "
                                    f"from {', '.join(strategies.REGIMES)}")
    settings = dict(profile=values["profile"], dtypes=dtypes, regimes=regimes,
                    seed=values["seed"], timeout=values["timeout"],
                    max_classes=values["max_classes"], budgets_path=values["budgets"])
    return list(values["adapter"]), settings


def _report(config: pytest.Config) -> dict[str, Any]:
    """The JSON-ready report of this session's run, made on first use."""
    if _REPORT_KEY not in config.stash:
        from harness import runner
        from harness.adapters.contract import AdapterSpecError

        adapters, settings = _run_settings(config)
        try:
            config.stash[_REPORT_KEY] = runner.run(adapters, **settings).to_dict()
        except AdapterSpecError as err:
            raise pytest.UsageError(f"--xentcheck-adapter: {err}") from None
    return config.stash[_REPORT_KEY]


# --------------------------------------------------------------- collectors, items


class XentcheckRun(pytest.Collector):
    """The root of the plugin's tests: runs the suite and yields a node per result."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        adapters = _report(self.config)["adapters"]
        for adapter in adapters:
            parent: pytest.Collector = self
            if len(adapters) > 1:
                parent = XentcheckAdapter.from_parent(self, name=adapter["name"])
                yield parent
            else:
                yield from XentcheckAdapter.items_of(parent, adapter)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, "xentcheck"


class XentcheckAdapter(pytest.Collector):
    """One adapter's results, when a session checks several adapters."""

    def collect(self) -> Iterator[pytest.Item]:
        for adapter in _report(self.config)["adapters"]:
            if adapter["name"] == self.name:
                yield from self.items_of(self, adapter)

    @staticmethod
    def items_of(parent: pytest.Collector, adapter: dict[str, Any]) -> Iterator[pytest.Item]:
        if adapter.get("reason") is not None and not adapter["results"]:
            yield XentcheckUnavailable.from_parent(
                parent, name=f"{adapter['name']}[unavailable]", adapter=adapter)
            return
        for result in adapter["results"]:
            yield XentcheckResult.from_parent(parent, name=result_id(result),
                                              adapter=adapter, result=result)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


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
    """One (adapter, function, dtype, regime, check) result: passes when the result did."""

    def __init__(self, *, adapter: dict[str, Any], result: dict[str, Any],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter
        self.result = result
        for key in ("function", "dtype", "regime", "check"):
            self.keywords[result[key]] = True  # -k float32, -k value
        self.user_properties.extend(
            (key, result[key]) for key in ("grade", "cases", "failed", "max_ulp")
            if result.get(key) is not None)

    def runtest(self) -> None:
        __tracebackhide__ = True
        if not self.result["passed"]:
            raise ConformanceFailure(failure_message(self.adapter, self.result))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"{self.adapter['name']}: {self.name}"


class XentcheckUnavailable(_ConformanceItem):
    """An adapter that could not be started at all: one failing test with the reason."""

    def __init__(self, *, adapter: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter

    def runtest(self) -> None:
        __tracebackhide__ = True
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


def failure_message(adapter: dict[str, Any], result: dict[str, Any]) -> str:
    """A failing result as a self-explaining message (STYLE.md §5).

    >>> print(failure_message({"name": "mine", "version": None}, {
    ...     "function": "softmax", "dtype": "float64", "regime": "large",
    ...     "check": "value", "grade": "broken", "cases": 11, "failed": 3, "max_ulp": None,
    ...     "notes": [], "reproducer": "python -m harness.repro ...",
    ...     "worst": {"case": "large-float64-s0-1", "row": 0, "index": [1],
    ...               "input": ["0x1.0p+10", "0x1.0p+10"], "got": "nan", "expected": "0.5",
    ...               "ulp": None, "allowed_ulp": 12.1}}))
    mine: softmax float64 large: check 'value' failed, grade broken (3 of 11 rows failed)
      worst input   case large-float64-s0-1, row 0, element [1]
                    [0x1.0p+10, 0x1.0p+10]
      got           nan
      should be     0.5
      error         n/a (bound 12.1 ulp)
      reproduce     python -m harness.repro ...
    """
    name = adapter["name"] + (f" {adapter['version']}" if adapter.get("version") else "")
    lines = [f"{name}: {result['function']} {result['dtype']} {result['regime']}: "
             f"check {result['check']!r} failed, grade {result['grade']} "
             f"({result['failed']} of {result['cases']} rows failed)"]
    worst = result.get("worst") or {}
    if worst:
        where = f"case {worst.get('case')}, row {worst.get('row')}"
        if worst.get("index"):
            where += f", element {worst['index']}"
        lines.append(f"  worst input   {where}")
        if worst.get("input") is not None:
            lines.append(f"                [{', '.join(map(str, worst['input']))}]")
        if worst.get("got") is not None or worst.get("expected") is not None:
            lines.append(f"  got           {worst.get('got')}")
            lines.append(f"  should be     {worst.get('expected')}")
        if worst.get("ulp") is not None or worst.get("allowed_ulp") is not None:
            lines.append(f"  error         {_ulps(worst.get('ulp'))} "
                         f"(bound {_ulps(worst.get('allowed_ulp'))})")
    if result.get("max_ulp") is not None:
        lines.append(f"  max error     {_ulps(result['max_ulp'])} over the regime")
    for note in result.get("notes") or ():
        lines.append(f"  note          {note}")
    if result.get("reproducer"):
        lines.append(f"  reproduce     {result['reproducer']}")
    return "\n".join(lines)
