"""Every option of ``xentcheck run`` is an option of the pytest plugin, from one definition
(:mod:`xentcheck.harness.options`), and the plugin honours each: ``--xentcheck-cases``,
``--xentcheck-shard``, ``--xentcheck-max-examples``, ``--xentcheck-baseline``,
``--xentcheck-out``; ``--xentcheck-jobs`` points to pytest-xdist instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_plugin import BUGGY_ADAPTER, CORRECT_ADAPTER, REPO, pytest_in
from test_plugin_collection import verdicts

from xentcheck.harness import options
from xentcheck.harness.report import json_report

ARGS = ("--xentcheck-dtype", "float64", "--xentcheck-regime", "moderate",
        "--xentcheck-regime", "large")


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "correct.py").write_text(CORRECT_ADAPTER)
    (tmp_path / "buggy.py").write_text(BUGGY_ADAPTER)
    return tmp_path


def collected(run: subprocess.CompletedProcess[str]) -> set[str]:
    assert run.returncode == 0, run.stdout + run.stderr
    return {line for line in run.stdout.splitlines() if line.startswith("xentcheck::")}


def xentcheck_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "xentcheck.harness.cli", *args], cwd=project,
                          env=env, capture_output=True, text=True, timeout=600)


def test_run_options_and_plugin_options_agree(project: Path) -> None:
    from xentcheck.harness import cli

    run = cli.build_parser()._subparsers._group_actions[0].choices["run"]
    actions = {a.dest: a for a in run._actions if a.dest != "help"}
    assert set(actions) == {o.dest for o in options.RUN_OPTIONS}
    for option in options.RUN_OPTIONS:  # the very definitions, not copies
        assert actions[option.dest].type is option.type
        assert actions[option.dest].default == option.default
    for required in ("cases", "max-examples", "baseline", "shard"):
        assert required in options.OPTIONS_BY_NAME
    shown = pytest_in(project, "--help").stdout
    for option in options.RUN_OPTIONS:
        assert option.pytest_flag in shown


def test_light_constants_match_the_harness() -> None:
    from xentcheck.harness.adapters.contract import DTYPES

    assert options.DTYPES == DTYPES


def test_jobs_points_to_xdist(project: Path) -> None:
    run = pytest_in(project, "--xentcheck-adapter", "correct.py", "--xentcheck-jobs", "2")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert "give -n 2 instead" in run.stderr and "Traceback" not in run.stderr


def test_shards_split_the_tests(project: Path) -> None:
    base = ("--xentcheck-adapter", "correct.py", *ARGS, "--collect-only", "-q")
    whole = collected(pytest_in(project, *base))
    first = collected(pytest_in(project, *base, "--xentcheck-shard", "1/2"))
    second = collected(pytest_in(project, *base, "--xentcheck-shard", "2/2"))
    assert first | second == whole
    assert first < whole and second < whole or first != second


def test_cases_file_is_the_corpus(project: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(project / "mine.npy", rng.normal(size=(40, 7)))
    ids = collected(pytest_in(project, "--xentcheck-adapter", "correct.py", "--xentcheck-dtype",
                              "float64", "--xentcheck-regime", "corpus", "--xentcheck-cases",
                              "mine.npy", "--collect-only", "-q"))
    assert "xentcheck::softmax[float64-corpus-value]" in ids
    (project / "bad.npy").write_text("not numpy")
    run = pytest_in(project, "--xentcheck-adapter", "correct.py", "--xentcheck-cases",
                    "bad.npy", "--collect-only")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert "bad.npy" in run.stderr and "Traceback" not in run.stderr


def test_max_examples_hunts_each_function(project: Path) -> None:
    run = pytest_in(project, "--xentcheck-adapter", "buggy.py", "--xentcheck-dtype", "float64",
                    "--xentcheck-regime", "large", "--xentcheck-max-examples", "5", "-k",
                    "hunt", "-rA")
    found = verdicts(run)
    assert found["xentcheck::log_softmax[float64-large-hunt]"] == "FAILED", run.stdout
    assert set(found) == {f"xentcheck::{f}[float64-large-hunt]"
                          for f in ("log_softmax", "softmax", "cross_entropy")}
    assert "the hunt found a failure of the standard profile" in run.stdout
    assert "reproduce     python -m xentcheck.harness.repro" in run.stdout


def test_baseline_known_failures_are_xfail_and_regressions_fail(project: Path) -> None:
    (project / "impl.py").write_text(BUGGY_ADAPTER)
    made = xentcheck_cli(project, "run", "--adapter", "impl.py", "--dtype", "float64",
                         "--regime", "large", "--out", "buggy-base")
    assert made.returncode == 1, made.stderr
    run = pytest_in(project, "--xentcheck-adapter", "impl.py", "--xentcheck-dtype", "float64",
                    "--xentcheck-regime", "large", "--xentcheck-baseline",
                    "buggy-base/conformance.json", "-rA")
    assert run.returncode == 0, run.stdout + run.stderr
    found = verdicts(run)
    assert found["xentcheck::softmax[float64-large-value]"] == "XFAIL"
    assert "FAILED" not in found.values()
    # the same adapter fixed is no regression; a correct baseline turns the bug into one
    (project / "impl.py").write_text(CORRECT_ADAPTER)
    made = xentcheck_cli(project, "run", "--adapter", "impl.py", "--dtype", "float64",
                         "--regime", "large", "--out", "good-base")
    assert made.returncode == 0, made.stderr
    (project / "impl.py").write_text(BUGGY_ADAPTER)
    run = pytest_in(project, "--xentcheck-adapter", "impl.py", "--xentcheck-dtype", "float64",
                    "--xentcheck-regime", "large", "--xentcheck-baseline",
                    "good-base/conformance.json", "-rA")
    assert run.returncode == 1
    assert verdicts(run)["xentcheck::softmax[float64-large-value]"] == "FAILED"
    assert "regression against good-base/conformance.json: [newly failing]" in run.stdout


def test_out_writes_the_report_of_the_tests_that_ran(project: Path) -> None:
    made = xentcheck_cli(project, "run", "--adapter", "buggy.py", "--dtype", "float64",
                         "--regime", "large", "--out", "cli")
    assert made.returncode == 1, made.stderr
    run = pytest_in(project, "--xentcheck-adapter", "buggy.py", "--xentcheck-dtype", "float64",
                    "--xentcheck-regime", "large", "--xentcheck-out", "plugin")
    assert run.returncode == 1
    cli, plugin = (json_report.load(project / d / "conformance.json")
                   for d in ("cli", "plugin"))
    assert {p.name for p in (project / "plugin").iterdir()} >= {
        "conformance.json", "conformance.md", "conformance.html"}
    assert plugin["adapters"][0]["verdict"] == "fail"
    assert plugin["adapters"][0]["results"] == cli["adapters"][0]["results"]
    assert plugin["inputs"] == cli["inputs"]
