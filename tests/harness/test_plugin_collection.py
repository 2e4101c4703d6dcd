"""The pytest plugin collects without computing and runs only what is selected.

An example project whose adapter writes one line per call to ``calls.log`` (the function
and the input's shape) shows what each pytest invocation made the adapter do:
``--collect-only`` calls nothing, ``-k`` calls only the selected functions, ``-x`` stops,
``--lf`` reruns the failures only, and pytest-xdist (``-n 2``) gives every test the verdict
it gets in one process. In-process, every result computed one test at a time equals the
result of a whole run (:func:`xentcheck.harness.runner.run`), and a test whose check finds
nothing on its cases is skipped with the reason.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from test_plugin import BUGGY_ADAPTER, CORRECT_ADAPTER, pytest_in

from xentcheck.harness import plugin

# The buggy adapter (no max shift), each call recorded in calls.log next to it.
RECORDING_ADAPTER = BUGGY_ADAPTER + '''
import os as _os

_LOG = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "calls.log")
_IMPLEMENTATIONS = {"log_softmax": log_softmax, "softmax": softmax,
                    "cross_entropy": cross_entropy}


def _recorded(name):
    implementation = _IMPLEMENTATIONS[name]

    def call(*arrays):
        with open(_LOG, "a") as stream:
            stream.write(f"{name} {arrays[0].shape}\\n")
        return implementation(*arrays)

    return call


log_softmax = _recorded("log_softmax")
softmax = _recorded("softmax")
cross_entropy = _recorded("cross_entropy")
'''

ARGS = ("--xentcheck-adapter", "recording.py", "--xentcheck-dtype", "float64",
        "--xentcheck-regime", "moderate", "--xentcheck-regime", "large", "-rA")


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "recording.py").write_text(RECORDING_ADAPTER)
    (tmp_path / "correct.py").write_text(CORRECT_ADAPTER)
    (tmp_path / "test_own.py").write_text("def test_own():\n    assert True\n")
    return tmp_path


def calls(project: Path) -> list[str]:
    """The adapter calls recorded so far (and forget them)."""
    log = project / "calls.log"
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    log.unlink()
    return lines


def verdicts(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Node id -> PASSED / FAILED / SKIPPED / XFAIL, from the lines of ``-v`` (``-n``'s too)
    or, without ``-v``, of ``-rA``'s summary (which names no skipped test)."""
    out = {}
    for line in run.stdout.splitlines():
        found = (re.match(r"(PASSED|FAILED|XFAIL|ERROR) (\S+::\S+)", line)
                 or re.match(r"(?:\[gw\d\] \[ *\d+%\] )?(PASSED|FAILED|SKIPPED|XFAIL|ERROR) "
                             r"(\S+::\S+)", line))
        if found:
            out[found.group(2)] = found.group(1)
            continue
        found = re.match(r"(\S+::\S+) (PASSED|FAILED|SKIPPED|XFAIL|ERROR)", line)
        if found:
            out[found.group(1)] = found.group(2)
    return out


def test_collect_only_calls_nothing(project: Path) -> None:
    run = pytest_in(project, *ARGS, "--collect-only", "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    ids = [line for line in run.stdout.splitlines() if line.startswith("xentcheck::")]
    assert "xentcheck::log_softmax[float64-large-value]" in ids
    assert "xentcheck::cross_entropy[float64-moderate-invalid-input]" in ids
    assert len(ids) > 30
    assert calls(project) == []  # the old plugin ran the whole suite here


def test_keyword_selection_calls_only_the_selected_function(project: Path) -> None:
    run = pytest_in(project, *ARGS, "-k", "log_softmax and large and value")
    assert run.returncode == 1, run.stdout + run.stderr
    assert verdicts(run) == {"xentcheck::log_softmax[float64-large-value]": "FAILED"}
    made = calls(project)
    assert made and {line.split()[0] for line in made} == {"log_softmax"}
    # one call per case of the large regime, none on the moderate cases
    from xentcheck.harness import runner

    large = runner.block_cases(dtypes=["float64"], regimes=["large"])[("float64", "large")]
    assert sorted(made) == sorted(f"log_softmax {c.shape}" for c in large)


def test_exitfirst_stops_at_the_first_failure(project: Path) -> None:
    full = pytest_in(project, *ARGS)
    every = len(calls(project))
    run = pytest_in(project, *ARGS, "-x")
    assert run.returncode == 1
    results = verdicts(run)
    assert list(results.values()).count("FAILED") == 1
    assert len(results) < len(verdicts(full))
    assert len(calls(project)) < every


def test_last_failed_reruns_only_the_failures(project: Path) -> None:
    first = pytest_in(project, *ARGS, cache=True)
    failed = {i for i, v in verdicts(first).items() if v == "FAILED"}
    assert first.returncode == 1 and failed
    calls(project)
    again = pytest_in(project, *ARGS, "--lf", cache=True)
    assert set(verdicts(again)) == failed, again.stdout
    assert all(v == "FAILED" for v in verdicts(again).values())
    # the failures are in the large regime: nothing was called on the moderate cases
    assert {line.split()[0] for line in calls(project)} <= {"log_softmax", "softmax",
                                                            "cross_entropy"}


def test_xdist_gives_every_test_its_serial_verdict(project: Path) -> None:
    pytest.importorskip("xdist")
    serial = pytest_in(project, *ARGS)
    parallel = pytest_in(project, *ARGS, "-n", "2")
    assert serial.returncode == parallel.returncode == 1, parallel.stdout + parallel.stderr
    assert len(verdicts(serial)) > 30
    assert verdicts(parallel) == verdicts(serial)


def test_unavailable_adapter_is_one_failing_test(project: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "unavailable_adapter.py"
    (project / "unavailable.py").write_text(fixture.read_text())
    run = pytest_in(project, "--xentcheck-adapter", "unavailable.py", "-rA")
    assert run.returncode == 1, run.stdout + run.stderr
    assert verdicts(run) == {"xentcheck::unavailable.py[unavailable]": "FAILED",
                             "test_own.py::test_own": "PASSED"}
    assert "frobnitz is not installed" in run.stdout


# ------------------------------------------------------------- in one process


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("adapters")
    (root / "correct.py").write_text(CORRECT_ADAPTER)
    (root / "buggy.py").write_text(BUGGY_ADAPTER)
    return [str(root / "correct.py"), str(root / "buggy.py")]


def test_one_result_at_a_time_equals_the_whole_run(adapters: list[str]) -> None:
    from xentcheck.harness import runner

    settings = dict(dtypes=["float64"],
                    regimes=["moderate", "large", "masked", "nonfinite", "empty", "ignored"])
    whole = runner.run(adapters, **settings).to_dict()
    expected = {(a["name"], r["check"], r["function"], r["dtype"], r["regime"]): r
                for a in whole["adapters"] for r in a["results"]}
    results = runner.ResultRunner(**settings)
    try:
        computed, nothing = {}, []
        for _, _, planned in results.plan(adapters):
            for one in planned:
                result = results.result(one)
                if result is None:
                    nothing.append(one.key)
                else:
                    computed[one.key] = result.to_dict()
    finally:
        results.close()
    assert computed == expected
    assert len(nothing) < len(computed) / 5  # few tests collected that find nothing


def test_a_check_that_finds_nothing_is_skipped_with_the_reason(project: Path) -> None:
    # huge: every case carries CE options this adapter's cross_entropy does not take, so
    # each call is "not provided" and the checks of cross_entropy have nothing to judge
    run = pytest_in(project, "--xentcheck-adapter", "correct.py", "--xentcheck-dtype",
                    "float64", "--xentcheck-regime", "huge", "-v", "-rs")
    assert run.returncode == 0, run.stdout + run.stderr
    found = verdicts(run)
    assert found["xentcheck::cross_entropy[float64-huge-value]"] == "SKIPPED"
    assert found["xentcheck::softmax[float64-huge-value]"] == "PASSED"
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED [")]
    assert len(skipped) == list(found.values()).count("SKIPPED"), skipped
    assert all("has nothing to judge of cross_entropy on the 5 float64 huge" in line
               for line in skipped), skipped


def test_check_names_match_the_runner() -> None:
    from xentcheck.harness import runner

    assert plugin.CHECK_NAMES == tuple(runner.CHECKS)


def test_xdist_scope_is_the_truth_group() -> None:
    from xentcheck.harness import runner

    for check in runner.CHECKS:
        for function in runner.CHECKS[check]:
            for regime in ("overflow-edge", "large", "tiny-spread"):
                planned = runner.PlannedResult("a", "a.py", function, "float16", regime, check)
                nodeid = f"xentcheck::{plugin.result_id(planned.__dict__)}"
                assert plugin.scope_of(nodeid) == f"xentcheck:{planned.group}"
                assert plugin.scope_of(f"xentcheck::a::{nodeid[11:]}") == \
                    f"xentcheck:{planned.group}"
    assert plugin.scope_of("test_own.py::test_own") == "test_own.py::test_own"


def test_the_harness_own_warnings_stay_out_of_the_users_run(project: Path) -> None:
    """Building shifted and rescaled inputs overflows by design (the CLI silences it); in a
    user's suite run with warnings as errors it must neither warn nor break collection."""
    run = pytest_in(project, "--xentcheck-adapter", "numpy",  # every regime and dtype
                    "-W", "error::RuntimeWarning", "-k", "log_softmax and large and shift")
    assert "INTERNALERROR" not in run.stdout + run.stderr, run.stdout[-2000:]
    assert "warning" not in run.stdout.splitlines()[-1], run.stdout[-2000:]
    assert run.returncode in (0, 1), run.stdout[-2000:] + run.stderr[-2000:]


def test_check_option_collects_only_those_checks(project: Path) -> None:
    """--xentcheck-check plans only the checks named: no other test, and an unknown name
    is a one-line usage error."""
    run = pytest_in(project, *ARGS, "--xentcheck-check", "value", "--xentcheck-check",
                    "order", "--collect-only", "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    ids = [line for line in run.stdout.splitlines() if line.startswith("xentcheck::")]
    checks = {re.sub(r"^.*-(value|order)\]$", r"\1", i) for i in ids}
    assert checks == {"value", "order"}, ids
    assert "xentcheck::log_softmax[float64-large-value]" in ids
    bad = pytest_in(project, *ARGS, "--xentcheck-check", "values", "--collect-only", "-q")
    assert bad.returncode == 4
    assert "--xentcheck-check: unknown check 'values'; choose from value, " in bad.stderr
