"""The runner and ``xentcheck run``: report keys, exit codes, one-line usage errors, --jobs,
reproducers that run, and the gold certificate that guards every gradient verdict."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xentcheck.harness import cli, runner, strategies
from xentcheck.harness.report import json_report
from xentcheck.harness.truth import Truth

RESULT_KEYS = {"check", "function", "dtype", "regime", "grade", "passed", "cases", "failed",
               "grades", "max_ulp", "max_ratio", "worst", "reproducer"}


def run_cli(*args: str) -> int:
    return cli.main(list(args))


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict]:
    out = tmp_path_factory.mktemp("rep")
    code = run_cli("run", "--adapter", "numpy-seed", "--adapter", "numpy", "--regime",
                   "moderate", "--regime", "dominant", "--dtype", "float64", "--out", str(out))
    return code, json_report.load(out / "conformance.json")


def test_report_has_the_documented_keys(seed_report):
    code, data = seed_report
    assert data["schema"].startswith("xentcheck-conformance/")
    assert {"python", "numpy", "adapter_versions", "processor"} <= set(data["platform"])
    names = [a["name"] for a in data["adapters"]]
    assert names == ["numpy-seed", "numpy"]
    for adapter in data["adapters"]:
        assert {"name", "verdict", "results"} <= set(adapter)
        for result in adapter["results"]:
            assert RESULT_KEYS <= set(result)
            assert sum(result["grades"].values()) == result["cases"]


def test_exit_code_and_verdicts(seed_report):
    code, data = seed_report
    verdicts = {a["name"]: a["verdict"] for a in data["adapters"]}
    assert verdicts == {"numpy-seed": "fail", "numpy": "pass"}
    assert code == cli.EXIT_FAIL


def test_conformant_run_exits_zero(tmp_path, capsys):
    code = run_cli("run", "--adapter", "numpy", "--regime", "moderate", "--dtype", "float32",
                   "--out", str(tmp_path))
    assert code == cli.EXIT_OK
    assert "numpy" in capsys.readouterr().out
    assert (tmp_path / "conformance.md").read_text().startswith("# xentcheck conformance")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--adapter", "no-such-adapter"], "no-such-adapter"),
        (["run", "--dtype", "float128"], "unknown dtype 'float128'"),
        (["run", "--regime", "gigantic"], "unknown regime 'gigantic'"),
        (["run", "--shard", "3/2"], "--shard must be I/N"),
        (["run", "--timeout", "-1"], "expected seconds in [0.001, 86400]"),
        (["run", "--timeout", "inf"], "expected seconds"),
        (["run", "--timeout", "nan"], "expected seconds"),
        (["run", "--seed", "-1"], "expected a whole number in [0, "),
        (["run", "--max-classes", "999999999999"], "in [1, 131072]"),
        (["run", "--budgets", "/nonexistent/budgets.json"], "budgets.json"),
        (["run", "--cases", "/nonexistent/logits.npz"], "logits.npz"),
        (["frobnicate"], "invalid choice"),
        (["run", "--cases", __file__], "test_runner_cli.py"),
        (["run", "--adapter", "xentcheck.harness.adapters.numpy_stable:no_such_attr"],
         "no_such_attr"),
        (["run", "--adapter", "/nonexistent/adapter.py"], "adapter.py"),
        (["run", "--profile", "lenient"], "invalid choice: 'lenient'"),
        (["run", "--max-examples", "-3"], ">= 0"),
        (["run", "--jobs", "0"], "positive"),
        (["run", "--max-classes", "0"], "in [1, 131072]"),
        (["run", "--adapter", "numpy", "--out", __file__], "is a file"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args, message, capsys, tmp_path):
    extra = ["--out", str(tmp_path)] if args[0] == "run" and "--out" not in args else []
    code = run_cli(*args, *extra)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_jobs_give_the_same_report_as_one_process(tmp_path):
    args = ["--adapter", "numpy", "--adapter", "c", "--regime", "moderate", "--regime",
            "masked", "--dtype", "float64"]
    assert run_cli("run", *args, "--out", str(tmp_path / "one")) == 0
    assert run_cli("run", *args, "--jobs", "2", "--out", str(tmp_path / "two")) == 0
    one, two = (json_report.load(tmp_path / d / "conformance.json")
                for d in ("one", "two"))
    assert one["adapters"] == two["adapters"]
    assert one["cases"] == two["cases"]


def test_reproducer_of_a_failure_runs_and_shows_it(seed_report):
    _, data = seed_report
    seed = next(a for a in data["adapters"] if a["name"] == "numpy-seed")
    failing = next(r for r in seed["results"] if not r["passed"] and r["check"] == "gradient")
    command = shlex.split(failing["reproducer"])
    assert command[:3] == ["python", "-m", "xentcheck.harness.repro"]
    done = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "ulp" in done.stdout and "exact" in done.stdout


def test_a_wrong_gold_derivative_fails_its_certificate(monkeypatch):
    """The certificate behind every gradient verdict can fail: plant p - y as the gold
    gradient of an unnormalized target and the finite differences refuse it."""
    import xentcheck.references as ref

    case = strategies.sample("moderate", dtype="float64", size=5)[3]  # unnormalized
    assert case.target_kind == "unnormalized"
    assert Truth(case).certificate("cross_entropy_grad").holds

    real = ref.cross_entropy_grad

    def p_minus_y(logits, target, **options):
        options.pop("reduction", None)
        p = ref.softmax(logits)
        y = np.asarray(target, dtype=object)
        return p - y if y.ndim == 2 else real(logits, target, **options)

    monkeypatch.setattr(ref, "cross_entropy_grad", p_minus_y)
    certificate = Truth(case).certificate("cross_entropy_grad")
    assert not certificate.holds
    assert certificate.digits < 5


def test_shards_partition_the_cases():
    cases = runner.build_cases(dtypes=["float64"], regimes=["moderate", "ties"])
    parts = [runner.shard_of(cases, (i, 3)) for i in (1, 2, 3)]
    ids = sorted(c.case_id for part in parts for c in part)
    assert ids == sorted(c.case_id for c in cases)
    assert all(parts)


def test_max_examples_hunts_and_grades_what_it_finds(tmp_path, capsys):
    code = run_cli("run", "--adapter", "numpy-seed", "--regime", "moderate", "--dtype",
                   "float64", "--max-examples", "10", "--out", str(tmp_path))
    data = json_report.load(tmp_path / "conformance.json")
    assert code == cli.EXIT_FAIL
    assert data["hunts"] and any(h["found_failure"] for h in data["hunts"])
    hunted = [r for r in data["adapters"][0]["results"] if r["worst"]
              and "-h" in r["worst"]["case"]]
    assert hunted, "the hunted cases are graded by the run's checks"
    assert "hunt:" in capsys.readouterr().out


def test_jobs_report_progress_over_every_process():
    """A --jobs run reports its progress: the cases started over all processes, up to the
    run's case count (the CLI's progress bar is fed by this)."""
    calls: list[tuple[int, int, str]] = []
    data = runner.run_parallel(["numpy"], jobs=2, progress=lambda *a: calls.append(a),
                               dtypes=["float64", "float32"], regimes=["moderate"])
    assert calls, "no progress was reported"
    numbers = [n for n, _, _ in calls]
    assert numbers == sorted(numbers) and numbers[-1] == calls[-1][1] == data["cases"]
    assert {case_id.split("-")[1] for _, _, case_id in calls} == {"float64", "float32"}


def test_progress_bar_shows_a_growing_total_on_stderr(capsys):
    bar = cli._ProgressBar()
    bar(1, 4, "moderate-float64-0")
    bar(3, 10, "moderate-float32-1")  # a second process reported its share
    shown = bar._bar  # tqdm redraws at most every 0.1 s: its state is what it will show
    assert (shown.n, shown.total) == (3, 10) and "moderate-float32-1" in shown.postfix
    bar.close()
    assert "0/4" in capsys.readouterr().err  # it drew on stderr


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path):
    done = subprocess.run([sys.executable, "-m", "xentcheck.harness.cli", "run", "--adapter",
                           "numpy", "--regime", "moderate", "--dtype", "float64", "--jobs",
                           "2", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "case/s" not in done.stderr and "it/s" not in done.stderr and "%|" not in done.stderr


def test_a_regime_selects_only_its_own_pinned_cases():
    pinned_regimes = {c.regime for c in runner.load_pinned()}
    assert "large" in pinned_regimes and len(pinned_regimes) > 1  # else this proves nothing
    cases = runner.build_cases(dtypes=["float64", "float32"], regimes=["large"])
    assert {c.regime for c in cases} == {"large"}
    assert any(c.case_id in {p.case_id for p in runner.load_pinned()} for c in cases)
