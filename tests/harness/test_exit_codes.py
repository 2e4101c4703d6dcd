"""Exit codes that mean one thing, report sets that are whole or absent, adapters and shards
that keep their identity.

Each test replays a way a run used to lose, mix or invent results, or to end in a
traceback with exit 1 (the code of a finding): 0 conformant, 1 nonconformant, 2 a user's
or setup error in one line, 3 an internal error in one line naming a saved traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from xentcheck.harness import cli, runner
from xentcheck.harness.report import html as html_report
from xentcheck.harness.report import json_report

ROOT = Path(__file__).resolve().parents[2]
XENTCHECK = [sys.executable, "-m", "xentcheck.harness.cli"]  # the CLI, in this interpreter
SMALL = ["--adapter", "numpy", "--regime", "moderate", "--dtype", "float64"]


def _one_line(err: str, message: str) -> None:
    __tracebackhide__ = True
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def _run(tmp: Path, *extra: str) -> int:
    return cli.main(["run", *SMALL, "--out", str(tmp), *extra])


@pytest.fixture
def previous_set(tmp_path: Path) -> Path:
    """A folder holding a complete report set of an earlier run."""
    out = tmp_path / "reports"
    assert _run(out) == cli.EXIT_OK
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------- report sets


def test_every_file_of_a_set_carries_the_report_id(previous_set: Path) -> None:
    data = json_report.load(previous_set / "conformance.json")
    rid = data["report_id"]
    assert len(rid) == 16
    for name in ("conformance.md", "conformance.html", "conformance.junit.xml"):
        assert rid in (previous_set / name).read_text(encoding="utf-8"), name
    assert sorted(p.name for p in previous_set.iterdir()) == [
        "conformance.html", "conformance.json", "conformance.junit.xml", "conformance.md"]


def test_a_full_disk_while_writing_keeps_the_previous_set(
        previous_set: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    before = _snapshot(previous_set)
    real = Path.write_text

    def disk_full(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name.endswith(".html"):
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    capsys.readouterr()
    assert cli.main(["run", *SMALL, "--regime", "ties", "--out", str(previous_set)]) == 2
    out, err = capsys.readouterr()
    assert "numpy" in out and "pass" in out  # the verdicts were printed first
    _one_line(err, "No space left on device")
    assert _snapshot(previous_set) == before


def test_an_interrupt_while_rendering_keeps_the_previous_set(
        previous_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(previous_set)

    def interrupted(data: dict[str, Any]) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(html_report, "render", interrupted)
    assert cli.main(["run", *SMALL, "--regime", "ties", "--out", str(previous_set)]) == 130
    assert _snapshot(previous_set) == before


def test_an_interrupt_while_the_set_moves_in_comes_after_the_whole_set(
        previous_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT to the process (as a terminal's Ctrl-C sends it) once the first file has
    moved into place: the new set goes in whole, then the interrupt ends the run. The
    process has a second thread, as any with a BLAS or a thread pool has: a signal
    blocked in the main thread alone would reach Python through that one."""
    before = json_report.load(previous_set / "conformance.json")["report_id"]
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    real = os.replace
    moved = []

    def replace(source: Any, target: Any) -> None:
        if len(moved) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        real(source, target)
        moved.append(target)

    monkeypatch.setattr(os, "replace", replace)
    try:
        code = cli.main(["run", *SMALL, "--regime", "ties", "--out", str(previous_set)])
    finally:
        stop.set()
        other.join()
    assert len(moved) == 4 and code == 130
    rid = json_report.load(previous_set / "conformance.json")["report_id"]
    assert rid != before
    for name in ("conformance.md", "conformance.html", "conformance.junit.xml"):
        assert rid in (previous_set / name).read_text(encoding="utf-8"), name


def test_an_unwritable_out_is_refused_before_the_run(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["run", *SMALL, "--out", str(blocker / "reports")]) == 2
    _one_line(capsys.readouterr().err, "cannot write reports there")


def test_report_renders_beside_the_json_and_writes_no_json(previous_set: Path,
                                                           capsys) -> None:
    other = previous_set / "other.json"
    data = json_report.load(previous_set / "conformance.json")
    data["adapters"][0]["name"] = "renamed"
    other.write_text(json.dumps(data))
    before = (previous_set / "conformance.json").read_bytes()
    assert cli.main(["report", str(other)]) == 0
    assert (previous_set / "conformance.json").read_bytes() == before
    assert "renamed" in (previous_set / "other.md").read_text()
    assert "renamed" not in (previous_set / "conformance.md").read_text()
    assert {p.name for p in previous_set.glob("other.*")} == {
        "other.json", "other.md", "other.html", "other.junit.xml"}


# ---------------------------------------------------------------------- bad inputs


def test_a_corrupted_pinned_corpus_names_its_line(tmp_path: Path, monkeypatch, capsys) -> None:
    pinned = tmp_path / "pinned_cases.jsonl"
    good = runner.PINNED_CASES.read_text().splitlines()[0]
    pinned.write_text(f"{good}\n<<<<<<< HEAD\n{good}\n=======\n>>>>>>> theirs\n")
    monkeypatch.setattr(runner, "PINNED_CASES", pinned)
    monkeypatch.setattr(runner.load_pinned, "__defaults__", (pinned,))
    assert _run(tmp_path / "out") == 2
    _one_line(capsys.readouterr().err, f"{pinned}:2: not a pinned case")


def test_a_corrupted_defect_corpus_is_named_where_the_run_reads_it(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """The known-defects corpus is checked before a run that asks for its regime (exit 2,
    one line naming the file); a run of other regimes does not read it."""
    from xentcheck.harness import defects

    broken = tmp_path / "known_defects.json"
    broken.write_text('{"format": "not-this"}')
    monkeypatch.setattr(defects, "KNOWN_DEFECTS", broken)
    monkeypatch.setattr(defects.cases, "__defaults__", (None, broken))
    assert _run(tmp_path / "asked", "--regime", "known-defects") == cli.EXIT_USAGE
    _one_line(capsys.readouterr().err, f"{broken}: not a known-defects file")
    assert not (tmp_path / "asked").exists()
    assert _run(tmp_path / "other") == cli.EXIT_OK


def test_a_run_without_bfloat16_does_not_import_ml_dtypes_before_it_starts(
        tmp_path: Path) -> None:
    """Checking the pinned cases and the defect corpus up front decodes only what the run
    asks for: a float32 run's own process never imports ml_dtypes (most of a second of
    CPU; its workers and parts are tested in test_runner_cli.py)."""
    code = ("import sys; from xentcheck.harness.cli import main; "
            "rc = main(['run', '--adapter', 'numpy', '--regime', 'moderate', '--dtype', "
            "'float32', '--out', sys.argv[1], "
            "'--jobs', '1']); print(rc, 'ml_dtypes' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.stdout.split()[-2:] == [str(cli.EXIT_OK), "False"], done.stderr


@pytest.mark.parametrize("content, message", [
    ('{"schema": "xentcheck-conformance/2", "x": NaN}', "NaN is not JSON"),
    ('{"schema": "xentcheck-conformance/2", "x": Infinity}', "Infinity is not JSON"),
    ('{"schema": "xentcheck-conformance/2", "x": ' + "[" * 5000 + "]" * 5000 + "}",
     "nested too deeply"),
    ('{"schema": "xentcheck-conformance/2", "x": ' + "[" * 40 + "]" * 40 + "}",
     "nested too deeply"),
    ('{"schema": "xentcheck-conformance/2", "platform": {}}', "report.platform has no"),
])
@pytest.mark.parametrize("command", ["report", "compare", "merge"])
def test_malformed_report_json_is_exit_2(tmp_path: Path, capsys, content: str, message: str,
                                         command: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    argv = {"report": ["report", str(path)],
            "compare": ["compare", str(path), str(path)],
            "merge": ["merge", str(tmp_path / "m"), str(path)]}[command]
    capsys.readouterr()
    assert cli.main(argv) == 2
    _one_line(capsys.readouterr().err, message)


def test_a_report_with_a_wrong_field_type_is_exit_2(previous_set: Path, capsys) -> None:
    data = json_report.load(previous_set / "conformance.json")
    data["adapters"][0]["results"][3]["max_ulp"] = [1, 2]
    bad = previous_set / "bad.json"
    bad.write_text(json.dumps(data))
    capsys.readouterr()
    assert cli.main(["report", str(bad)]) == 2
    _one_line(capsys.readouterr().err, "report.adapters[0].results[3].max_ulp is [1, 2]")


def test_an_internal_error_is_exit_3_with_a_saved_traceback(tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(runner, "run", broken)
    assert _run(tmp_path) == 3
    err = capsys.readouterr().err
    _one_line(err, "internal error: ZeroDivisionError: planted; traceback in ")
    saved = Path(err.strip().rsplit(" ", 1)[-1])
    assert "ZeroDivisionError: planted" in saved.read_text()
    saved.unlink()


def test_a_dying_jobs_process_is_one_line(tmp_path: Path) -> None:
    """A --jobs process killed mid-run (here by its adapter's worker, as the OOM killer
    would): exit 3 and one line, not a BrokenProcessPool traceback."""
    adapter = tmp_path / "killer.py"
    adapter.write_text(textwrap.dedent("""
        import os, signal
        def softmax(logits):
            os.kill(os.getppid(), signal.SIGKILL)  # the worker's parent: a --jobs process
            return logits
        """))
    done = subprocess.run(
        [*XENTCHECK, "run", "--adapter", str(adapter), "--jobs", "2",
         "--regime", "moderate", "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    _one_line(done.stderr, "a --jobs process died")
    assert not (tmp_path / "out" / "conformance.json").exists()


# ---------------------------------------------------------------------- identity


def test_adapters_with_one_name_are_told_apart(tmp_path: Path) -> None:
    """v1/impl.py and v2/impl.py are both "impl": each keeps its own results, and a broken
    one is never merged into a passing one."""
    for version, body in (("v1", "return e / e.sum(axis=1, keepdims=True)"),
                          ("v2", "raise RuntimeError('broken')")):
        folder = tmp_path / version
        folder.mkdir()
        (folder / "impl.py").write_text(textwrap.dedent(f"""
            import numpy as np
            def softmax(logits):
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                {body}
            """))
    out = tmp_path / "out"
    code = cli.main(["run", "--adapter", str(tmp_path / "v1" / "impl.py"), "--adapter",
                     str(tmp_path / "v2" / "impl.py"), "--regime", "moderate", "--dtype",
                     "float64", "--out", str(out)])
    assert code == cli.EXIT_FAIL
    adapters = json_report.load(out / "conformance.json")["adapters"]
    verdicts = {a["name"]: a["verdict"] for a in adapters}
    assert verdicts == {f"impl ({tmp_path / 'v1' / 'impl.py'})": "pass",
                        f"impl ({tmp_path / 'v2' / 'impl.py'})": "fail"}


def test_the_same_adapter_twice_is_refused(tmp_path: Path, capsys) -> None:
    assert cli.main(["run", "--adapter", "numpy", *SMALL, "--out", str(tmp_path)]) == 2
    _one_line(capsys.readouterr().err, "adapter 'numpy' is given twice")


def test_a_str_subclass_name_is_a_plain_name(tmp_path: Path) -> None:
    adapter = tmp_path / "named.py"
    adapter.write_text(textwrap.dedent("""
        import numpy as np
        class Loud(str):
            def __str__(self):
                raise RuntimeError("str() of the name runs adapter code")
            def __format__(self, spec):
                raise RuntimeError("format() of the name runs adapter code")
        name = Loud("loud")
        def softmax(logits):
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        """))
    out = tmp_path / "out"
    code = cli.main(["run", "--adapter", str(adapter), "--regime", "moderate", "--dtype",
                     "float64", "--out", str(out)])
    assert code == cli.EXIT_OK
    assert json_report.load(out / "conformance.json")["adapters"][0]["name"] == "loud"


def _shards(tmp_path: Path) -> list[Path]:
    paths = []
    for i in (1, 2, 3):
        out = tmp_path / f"s{i}"
        assert cli.main(["run", *SMALL, "--regime", "ties", "--shard", f"{i}/3",
                         "--out", str(out)]) == 0
        paths.append(out / "conformance.json")
    return paths


def test_merge_refuses_duplicate_and_missing_shards(tmp_path: Path, capsys) -> None:
    s1, s2, s3 = _shards(tmp_path)
    merged = tmp_path / "merged"
    capsys.readouterr()
    assert cli.main(["merge", str(merged), str(s1), str(s2), str(s3)]) == 0
    assert cli.main(["merge", str(tmp_path / "m2"), str(s1), str(s2), str(s2)]) == 2
    _one_line(capsys.readouterr().err, "shard 2/3 is given twice")
    assert cli.main(["merge", str(tmp_path / "m3"), str(s1), str(s3)]) == 2
    _one_line(capsys.readouterr().err, "shard 2/3 missing")
    whole = tmp_path / "whole"
    assert cli.main(["run", *SMALL, "--regime", "ties", "--out", str(whole)]) == 0
    capsys.readouterr()
    assert cli.main(["merge", str(tmp_path / "m4"), str(whole / "conformance.json")]) == 2
    _one_line(capsys.readouterr().err, "is not a shard")
    assert not (tmp_path / "m2").exists() or not any((tmp_path / "m2").iterdir())


# ---------------------------------------------------------------------- repro


@pytest.mark.parametrize("args, message", [
    ([], "usage"),
    (["numpy", "softmax"], "usage"),
    (["numpy", "no_such_function", "x"], "unknown function"),
    (["numpy", "softmax", "__import__('os').system('touch /tmp/xentcheck-pwned')"],
     "only calls of xentcheck.harness.strategies.sample"),
    (["numpy", "softmax", "xentcheck.harness.strategies.sample('moderate')[99]"], "case [99] of 5"),
    (["numpy", "softmax",
      "xentcheck.harness.strategies.sample('moderate', dtype=open)[0]"], "literals"),
    (["numpy", "softmax", "{not json"], "cannot read the case"),
    (["no-such-adapter", "softmax", "xentcheck.harness.strategies.sample('moderate')[0]"],
     "unknown adapter"),
])
def test_repro_bad_arguments_are_one_line_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "xentcheck.harness.repro", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    _one_line(done.stderr, message)
    assert not os.path.exists("/tmp/xentcheck-pwned")
