"""The pytest plugin (:mod:`xentcheck.harness.plugin`) as a user meets it: a separate
example project
with a ten-line adapter, run by pytest in a subprocess.

A correct adapter (textbook shifted softmax / log_softmax / cross-entropy in NumPy, float64
only, validating its targets) gets passing tests; a buggy one (unshifted ``exp``) gets failing
tests with readable ids and messages carrying got / should be / ulps / reproducer; the JUnit
file parses; without ``--xentcheck-adapter`` nothing is added; the shared option definitions
reach both surfaces; importing the plugin imports no NumPy. How collection, selection and
pytest-xdist behave, and the other run options, are tested in ``test_plugin_*.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

from xentcheck.harness import options

REPO = Path(__file__).resolve().parents[2]

CORRECT_ADAPTER = """\
import numpy as np

dtypes = ("float64",)

def log_softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

def cross_entropy(x, t):
    if t.ndim == 2:
        if (t < 0).any():
            raise ValueError("probability targets must be >= 0")
        return -(t * log_softmax(x)).sum(axis=-1)
    if ((t < 0) | (t >= x.shape[-1])).any():
        raise ValueError("targets must be class indices in [0, K)")
    return -np.take_along_axis(log_softmax(x), t[:, None], axis=-1)[:, 0]
"""

# The planted bug: exp of the raw logits (no max shift) overflows in the "large" regime.
BUGGY_ADAPTER = (CORRECT_ADAPTER
                 .replace("    z = x - x.max(axis=-1, keepdims=True)\n"
                          "    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))",
                          "    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))")
                 .replace("np.exp(x - x.max(axis=-1, keepdims=True))", "np.exp(x)"))

RUN_ARGS = ("--xentcheck-regime", "moderate", "--xentcheck-regime", "large",
            "--xentcheck-dtype", "float64")


def _entry_point_installed() -> bool:
    return any(ep.value == "xentcheck.harness.plugin"
               for ep in metadata.entry_points(group="pytest11"))


def pytest_in(project: Path, *args: str, cache: bool = False,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run pytest in ``project`` as a user would, in a fresh process (without pytest's
    cache unless ``cache``)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("PYTEST_ADDOPTS", None)
    # The installed pytest11 entry point loads the plugin; -p loads it from a bare checkout
    # (both at once would register it twice, which pluggy refuses).
    load = () if _entry_point_installed() else ("-p", "xentcheck.harness.plugin")
    no_cache = () if cache else ("-p", "no:cacheprovider")
    return subprocess.run([sys.executable, "-m", "pytest", *load, *no_cache,
                           "-p", "no:randomly", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project: two adapters, one ordinary test, no xentcheck configuration."""
    root = tmp_path_factory.mktemp("user_project")
    assert len(CORRECT_ADAPTER.splitlines()) <= 20 and BUGGY_ADAPTER != CORRECT_ADAPTER
    (root / "correct.py").write_text(CORRECT_ADAPTER)
    (root / "buggy.py").write_text(BUGGY_ADAPTER)
    (root / "test_own.py").write_text("def test_own():\n    assert True\n")
    return root


@pytest.fixture(scope="module")
def correct_run(project: Path) -> subprocess.CompletedProcess[str]:
    return pytest_in(project, "--xentcheck-adapter", "correct.py", *RUN_ARGS, "-rA",
                     "--junitxml=correct.xml")


@pytest.fixture(scope="module")
def buggy_run(project: Path) -> subprocess.CompletedProcess[str]:
    return pytest_in(project, "--xentcheck-adapter", "buggy.py", *RUN_ARGS,
                     "--junitxml=buggy.xml")


def test_correct_adapter_passes_with_readable_ids(correct_run: subprocess.CompletedProcess[str],
                                                  project: Path) -> None:
    out = correct_run.stdout
    assert correct_run.returncode == 0, out + correct_run.stderr
    assert "failed" not in out.splitlines()[-1]
    assert "PASSED xentcheck::log_softmax[float64-large-value]" in out
    assert "PASSED xentcheck::cross_entropy[float64-moderate-invalid-input]" in out
    assert "PASSED test_own.py::test_own" in out  # the user's own tests still run


def test_buggy_adapter_fails_readably(buggy_run: subprocess.CompletedProcess[str]) -> None:
    out = buggy_run.stdout
    assert buggy_run.returncode == 1, out + buggy_run.stderr
    assert "FAILED xentcheck::softmax[float64-large-value]" in out
    assert "FAILED xentcheck::log_softmax[float64-large-value]" in out
    assert "FAILED xentcheck::softmax[float64-moderate-value]" not in out  # no overflow there
    section = out.split("buggy: log_softmax[float64-large-value]", 1)[1]
    section = section.split("\n____", 1)[0]
    assert "log_softmax float64 large: check 'value' failed, grade broken" in section
    assert "worst input" in section and "0x1." in section  # hex floats
    assert "got           -inf" in section
    assert "should be     -0.69314718" in section
    assert "inf ulp (bound " in section
    assert "reproduce     python -m xentcheck.harness.repro buggy.py log_softmax" in section
    assert "plugin.py" not in section and "Traceback" not in section  # no harness traceback


def test_junit_files_parse(correct_run: subprocess.CompletedProcess[str],
                           buggy_run: subprocess.CompletedProcess[str], project: Path) -> None:
    for name, want_failures in (("correct.xml", False), ("buggy.xml", True)):
        suite = ET.parse(project / name).getroot().find("testsuite")
        assert suite is not None
        cases = {case.get("name"): case for case in suite.iter("testcase")}
        assert "log_softmax[float64-large-value]" in cases
        failed = [n for n, case in cases.items() if case.find("failure") is not None]
        assert bool(failed) == want_failures, failed
        assert int(suite.get("failures", "0")) == len(failed)
    buggy = ET.parse(project / "buggy.xml").getroot()
    case = next(c for c in buggy.iter("testcase")
                if c.get("name") == "softmax[float64-large-value]")
    failure = case.find("failure")
    assert failure is not None and "should be" in (failure.text or "")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["grade"] == "broken"


def test_keyword_selection_and_collect_only(project: Path) -> None:
    run = pytest_in(project, "--xentcheck-adapter", "buggy.py", *RUN_ARGS, "--collect-only",
                    "-q", "-k", "softmax and large and value")
    assert run.returncode == 0, run.stdout + run.stderr
    ids = [line for line in run.stdout.splitlines() if line.startswith("xentcheck::")]
    assert sorted(ids) == ["xentcheck::log_softmax[float64-large-value]",
                           "xentcheck::softmax[float64-large-value]"]


def test_without_adapter_the_plugin_adds_nothing(project: Path) -> None:
    run = pytest_in(project, "--collect-only", "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "xentcheck::" not in run.stdout
    assert "test_own.py::test_own" in run.stdout


def test_bad_adapter_is_one_line_usage_error(project: Path) -> None:
    run = pytest_in(project, "--xentcheck-adapter", "correct.py:nope", *RUN_ARGS)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --xentcheck-adapter: " in run.stderr and "nope" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_importing_the_plugin_imports_nothing_heavy() -> None:
    code = ("import sys, xentcheck.harness.plugin; "
            "print(sorted(m for m in ('numpy', 'mpmath', 'scipy', 'torch', 'jax') "
            "if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_cli_and_plugin_share_the_option_definitions() -> None:
    from xentcheck.harness import cli

    run = next(action for action in cli.build_parser()._subparsers._group_actions[0]
               .choices["run"]._actions if action.dest == "timeout")
    assert run.type is options.OPTIONS_BY_NAME["timeout"].type
    parser = argparse.ArgumentParser()
    options.add_to_argparse(parser)
    defaults = parser.parse_args([])
    assert (defaults.profile, defaults.seed, defaults.timeout) == ("standard", 0, 60.0)
    assert [o.pytest_flag for o in options.RUN_OPTIONS] == [
        "--xentcheck-adapter", "--xentcheck-profile", "--xentcheck-dtype",
        "--xentcheck-regime", "--xentcheck-check", "--xentcheck-cases", "--xentcheck-seed",
        "--xentcheck-timeout",
        "--xentcheck-shard", "--xentcheck-jobs", "--xentcheck-max-classes",
        "--xentcheck-block-elements",
        "--xentcheck-budgets", "--xentcheck-max-examples", "--xentcheck-pin",
        "--xentcheck-out", "--xentcheck-baseline", "--xentcheck-ulp-slack"]


def test_ci_profile_keeps_the_example_database() -> None:
    from hypothesis import settings

    from xentcheck.harness.plugin import CI_PROFILE, register_ci_profile

    register_ci_profile()
    profile = settings.get_profile(CI_PROFILE)
    assert profile.database is not None and profile.deadline is None and profile.print_blob


def test_usage_lines_in_docstring_match_the_options() -> None:
    from xentcheck.harness import plugin

    doc = textwrap.dedent(plugin.__doc__ or "")
    for flag in ("--xentcheck-adapter", "--xentcheck-dtype", "--xentcheck-regime",
                 "--xentcheck-profile"):
        assert flag in doc
