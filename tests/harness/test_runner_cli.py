"""The runner and ``xentcheck run``: report keys, exit codes, one-line usage errors, --jobs,
reproducers that run, and the gold certificate that guards every gradient verdict."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from xentcheck.harness import cli, runner, strategies
from xentcheck.harness.cases import Case
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
        (["run", "--check", "values"], "unknown check 'values'; choose from value, "),
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
    # the processes' timings add up: every adapter got as many calls as in one process
    assert ({name: t["calls"] for name, t in one["timing"].items()}
            == {name: t["calls"] for name, t in two["timing"].items()})


def test_each_part_takes_the_adapters_in_an_order_of_its_own():
    names = [f"a{i}" for i in range(13)]
    orders = [runner.adapters_of(names, (i, 2)) for i in (1, 2)]
    assert orders[0] == names  # the report keeps the order given
    assert orders[1] == names[6:] + names[:6]
    # at any position the two parts are in different adapters, each meeting every one
    assert all(a != b for a, b in zip(*orders, strict=True))
    assert all(sorted(o) == sorted(names) for o in orders)
    assert runner.adapters_of(["only"], (2, 2)) == ["only"]
    assert [runner.adapters_of(names[:3], (i, 3)) for i in (1, 2, 3)] == [
        ["a0", "a1", "a2"], ["a1", "a2", "a0"], ["a2", "a0", "a1"]]


def test_timing_gives_each_adapters_calls_and_their_time(monkeypatch):
    from xentcheck.harness.adapters import isolation
    from xentcheck.harness.adapters.registry import load_adapter

    reached: Counter[tuple[str, str]] = Counter()  # counted where the adapter is called
    invoke = isolation.invoke

    def counting(adapter, function, arrays, kwargs):
        reached[adapter.name, function] += 1
        return invoke(adapter, function, arrays, kwargs)

    monkeypatch.setattr(isolation, "invoke", counting)
    plain, _ = load_adapter("numpy")  # the built-in (a module)

    class Slow:
        """The numpy built-in, its softmax 20 ms slower."""

        name = "slow"

        def __getattr__(self, attribute):
            return getattr(plain, attribute)

        def softmax(self, logits):
            time.sleep(0.02)
            return plain.softmax(logits)

    data = runner.run([Slow(), plain], regimes=("moderate",), dtypes=("float64",)).to_dict()
    json_report.validate(data)
    timing = data["timing"]
    assert set(timing) == {"slow", "numpy"}
    for name, spent in timing.items():
        assert spent["calls"] == sum(n for (a, _), n in reached.items() if a == name) > 0
        assert spent["seconds"] >= spent["call_seconds"] > 0
    slept = 0.02 * reached["slow", "softmax"]
    assert slept > 0 and timing["slow"]["call_seconds"] >= slept
    assert timing["numpy"]["call_seconds"] < timing["slow"]["call_seconds"] - slept / 2


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


def test_pinned_cases_of_other_dtypes_are_not_decoded(monkeypatch, tmp_path) -> None:
    every = runner.load_pinned()
    assert {"bfloat16", "float32"} <= {c.dtype for c in every}  # else this proves nothing
    decoded: list[str] = []

    class Counted(Case):
        @classmethod
        def from_dict(cls, data):
            decoded.append(data["dtype"])
            return Case.from_dict(data)

    monkeypatch.setattr(runner, "Case", Counted)
    for dtypes, regimes in ((["float32"], None), (None, ["large"]),
                            (["float64", "float32"], ["large", "overflow-edge"])):
        decoded.clear()
        only = runner.load_pinned(dtypes=dtypes, regimes=regimes)
        expected = [c for c in every if (dtypes is None or c.dtype in dtypes)
                    and (regimes is None or c.regime in regimes)]
        assert [c.case_id for c in only] == [c.case_id for c in expected]
        assert decoded == [c.dtype for c in expected]  # nothing else was decoded
    # a corrupted line is named whatever the filter
    lines = runner.PINNED_CASES.read_text().splitlines()
    broken = tmp_path / "pinned.jsonl"
    broken.write_text("\n".join([lines[0], "<<<<<<< HEAD", *lines[1:]]) + "\n")
    with pytest.raises(runner.PinnedCasesError, match=":2: not a pinned case"):
        runner.load_pinned(broken, dtypes=["float16"])


def test_a_run_without_bfloat16_does_not_import_ml_dtypes() -> None:
    # (importing it costs most of a second of CPU in every grading process and worker)
    code = ("import sys; from xentcheck.harness import runner, grading, truth; "
            "from xentcheck.harness.adapters import worker, torch_nn; "
            "from xentcheck.references import fd, rounding, fast; "
            "runner.build_cases(dtypes=['float32', 'float16'], regimes=['large']); "
            "rounding.float_format('float16'); "
            "print('ml_dtypes' in sys.modules); "
            "rounding.float_format('bfloat16'); print('ml_dtypes' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def _results(data: dict) -> dict[tuple, dict]:
    return {(a["name"], r["check"], r["function"], r["dtype"], r["regime"]): r
            for a in data["adapters"] for r in a["results"]}


@pytest.mark.parametrize("checks", [["value", "gradient"], ["chunk-invariance", "contract"],
                                    ["edge", "range"], ["hvp", "order", "invalid-input"]])
def test_a_run_of_some_checks_reports_what_a_whole_run_reports_for_them(tmp_path, checks):
    """--check limits a run to those checks: every result it reports is the whole run's
    for the same key (grade, counts, errors, worst element), none is missing, no other
    check is reported, and the settings name the checks (a whole run's do not).
    ``contract`` reports the outputs the run called: those of the checks it ran."""
    args = ["--adapter", "numpy", "--adapter", "numpy-seed", "--regime", "moderate",
            "--regime", "nonfinite", "--dtype", "float64", "--dtype", "float32"]
    assert run_cli("run", *args, "--out", str(tmp_path / "all")) == cli.EXIT_FAIL
    only = [a for c in checks for a in ("--check", c)]
    code = run_cli("run", *args, *only, "--jobs", "2", "--out", str(tmp_path / "some"))
    whole, some = (json_report.load(tmp_path / d / "conformance.json")
                   for d in ("all", "some"))
    assert "checks" not in whole["settings"]
    assert some["settings"]["checks"] == [c for c in runner.CHECKS if c in checks]
    expected = {k: r for k, r in _results(whole).items() if k[1] in checks}
    got = _results(some)
    assert {k[1] for k in expected} == set(checks), "the whole run reports every one"
    assert {k: r for k, r in got.items() if k[1] != "contract"} == {
        k: r for k, r in expected.items() if k[1] != "contract"}
    assert {k[1] for k in got} == set(checks)
    contract = {k for k in got if k[1] == "contract"}
    assert contract <= {k for k in expected if k[1] == "contract"}
    assert set(got) - contract <= set(expected)
    failing = any(not r["passed"] for r in expected.values())
    assert code == (cli.EXIT_FAIL if failing else cli.EXIT_OK)
    assert f"only the checks {', '.join(some['settings']['checks'])}" in (
        tmp_path / "some" / "conformance.md").read_text()
    # against the whole run as a baseline, the checks left out are missing, not gone
    from xentcheck.harness.compare import compare

    comparison = compare(whole, some)
    assert comparison.regressions == []
    left_out = {c.subject for c in comparison.missing}
    reported = {f"{k[0]}: {k[1]} {k[2]}[{k[3]}-{k[4]}]" for k in got}
    assert left_out and not left_out & reported
    assert {s.split(": ")[1].split()[0] for s in left_out} - {"contract"} == (
        {r["check"] for a in whole["adapters"] for r in a["results"]} - {*checks, "contract"})


def test_the_checks_a_run_knows_are_the_options_and_the_plugins():
    from xentcheck.harness import options

    assert tuple(runner.CHECKS) == options.CHECKS
    with pytest.raises(ValueError, match="no check selected"):
        runner.check_names([])


def test_a_finished_jobs_process_is_not_sent_sigterm(monkeypatch):
    """A --jobs process that sent its report is left to exit by itself (SIGTERM while it
    runs its exit handlers printed a traceback from one); the report is unchanged."""
    import multiprocessing.context

    terminated: list[str] = []
    real = multiprocessing.context.SpawnProcess.terminate

    def terminate(self):
        terminated.append(self.name)
        real(self)

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "terminate", terminate)
    data = runner.run_parallel(["numpy"], jobs=2, dtypes=["float64", "float32"],
                               regimes=["moderate"])
    assert data["cases"] and data["adapters"][0]["results"]
    assert terminated == []


def test_a_jobs_process_ends_quietly_on_sigterm_once_it_has_reported():
    """After its report is sent, a --jobs process has nothing to clean up: SIGTERM then
    ends it by the default action, not by an exception out of whatever it was running."""
    import multiprocessing
    import signal

    receiver, sender = multiprocessing.Pipe(duplex=False)
    before = signal.getsignal(signal.SIGTERM)
    try:
        runner._part_main({"adapters": ["no-such-adapter"]}, sender)
        assert receiver.recv()[0] == "usage"
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_jobs_process_tunes_its_own_allocator(monkeypatch):
    """A --jobs process is a fresh interpreter: the CLI's allocator settings are not its,
    so it applies them itself (without them a block's pages were faulted in again for
    every block)."""
    import multiprocessing
    import signal

    from xentcheck.harness import allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    receiver, sender = multiprocessing.Pipe(duplex=False)
    before = signal.getsignal(signal.SIGTERM)
    try:
        runner._part_main({"adapters": ["no-such-adapter"]}, sender)
        assert receiver.recv()[0] == "usage"
    finally:
        signal.signal(signal.SIGTERM, before)
    assert calls == [1]
