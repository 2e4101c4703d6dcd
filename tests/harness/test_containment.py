"""Containment: a hanging, crashing or hostile adapter costs seconds and leaves nothing
behind.

The misbehaving adapters are in ``fixtures/faulty_adapters.py``. What is proven here: a
reply cut off halfway times out like silence; a worker's death is seen at once even when a
process it forked holds the pipe; whatever a worker starts dies with it; a function (or an
adapter) that keeps hanging or crashing is quarantined, its remaining calls reported as not
run; SIGINT and SIGTERM end a run (also with ``--jobs``) within seconds, with 130/143, and
leave the previous reports; a run killed outright leaves no worker (the lifeline); an
interrupt while ``--jobs`` processes start stops every one that started; untrusted names
and report fields reach neither the terminal nor the Markdown raw; ``list`` survives entry
points that exit or hang while loading.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import living_children
from xentcheck.harness.adapters import open_adapter
from xentcheck.harness.report import json_report
from xentcheck.harness.signals import held

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FAULTY = FIXTURES / "faulty_adapters.py"
ROOT = Path(__file__).resolve().parents[2]
XENTCHECK = [sys.executable, "-m", "xentcheck.harness.cli"]  # the CLI, in this interpreter
LOGITS = np.array([[1.0, 2.0, 3.0]])
SLEEP_MARK = "600.4242"  # faulty_adapters.SLEEP_MARK

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="process groups and /proc: Linux")


def _processes_with(text: str, where: str = "cmdline") -> list[int]:
    """The living processes whose command line (or ``where="environ"``: environment)
    holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / where).read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, UnicodeDecodeError, IndexError):
                continue
            if text in cmdline and state != "Z" and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


def _appears(text: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _processes_with(text):
            return True
        time.sleep(0.05)
    return False


def _gone(text: str, within: float = 5.0, where: str = "cmdline") -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _processes_with(text, where):
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------- messages and processes


def test_a_partial_reply_times_out_like_silence() -> None:
    with open_adapter(f"{FAULTY}:PartialReply") as handle:
        started = time.monotonic()
        outcome = handle.call("softmax", LOGITS, timeout=0.5)
        assert outcome.fault is not None and outcome.fault.kind == "timeout", outcome
        assert time.monotonic() - started < 5


def test_a_death_is_seen_at_once_when_a_forked_child_holds_the_pipe() -> None:
    with open_adapter(f"{FAULTY}:ForksThenExits") as handle:
        started = time.monotonic()
        outcome = handle.call("softmax", LOGITS, timeout=60)
        assert outcome.fault is not None and outcome.fault.kind == "exited", outcome
        assert time.monotonic() - started < 10  # not the 60 s timeout
        assert handle.call("logsumexp", LOGITS).ok
    assert not [c for c in living_children() if "worker_main" in c[1]]


def test_what_a_worker_starts_dies_with_it() -> None:
    assert not _processes_with(f"sleep {SLEEP_MARK}")
    with open_adapter(f"{FAULTY}:SpawnsSleep") as handle:
        assert handle.call("softmax", LOGITS).ok
        assert _appears(f"sleep {SLEEP_MARK}")  # (started, then exec'd: a moment)
    assert _gone(f"sleep {SLEEP_MARK}")


# ------------------------------------------------------------------- the faulty adapters run

_EIGHT = ("Raises", "Hang", "Segfault", "HardExit", "WrongShape", "ReturnsList", "WrongDtype",
          "ReturnsNone")


def test_eight_faulty_adapters_and_a_correct_one(tmp_path: Path) -> None:
    """Each faulty adapter is reported with its reason, the hanging and crashing ones are
    quarantined (not run, with the reason), and the correct one passes."""
    out = tmp_path / "out"
    argv = [*XENTCHECK, "run", "--timeout", "2", "--dtype", "float64",
            "--regime", "moderate", "--regime", "ties", "--regime", "empty",  # N = 0 too
            "--out", str(out), "--adapter", "numpy"]
    for name in _EIGHT:
        argv += ["--adapter", f"{FAULTY}:{name}"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    adapters = {a["spec"].rsplit(":", 1)[-1]: a
                for a in json_report.load(out / "conformance.json")["adapters"]}
    assert adapters["numpy"]["verdict"] == "pass"
    expected = {"Raises": "raised: ZeroDivisionError", "Hang": "timeout: no answer within 2 s",
                "Segfault": "crashed: worker killed by SIGSEGV",
                "HardExit": "exited: worker exited with code 3",
                "WrongShape": "wrong-shape", "ReturnsList": "wrong-type: returned a list",
                "WrongDtype": "wrong-dtype", "ReturnsNone": "wrong-type: returned None"}
    for name, reason in expected.items():
        adapter = adapters[name]
        assert adapter["verdict"] == "fail", name
        notes = [n for r in adapter["results"] if not r["passed"] for n in r["notes"]]
        assert any(reason in n for n in notes), (name, notes[:3])
    for name in ("Hang", "Segfault", "HardExit"):
        not_run = {n["function"]: n for n in adapters[name]["not_run"]}
        assert not_run["softmax"]["calls"] > 0, name
        assert "failures in a row" in not_run["softmax"]["reason"]
    assert "Not run" in (out / "conformance.md").read_text()


# ------------------------------------------------------------------- signals

_HANGS = textwrap.dedent("""
    import subprocess, time
    def softmax(logits):
        subprocess.Popen(["sleep", "{mark}"])
        time.sleep(600)
    """)
_marks = itertools.count(1)


def _hanging_adapter(tmp_path: Path) -> tuple[Path, str]:
    """An adapter whose softmax starts ``sleep MARK`` and hangs, and its MARK: one of its
    own per test (tests run side by side under xdist, and one test's sleep must not be
    taken for another's)."""
    mark = f"600.{os.getpid()}{next(_marks):03d}"
    adapter = tmp_path / "hangs.py"
    adapter.write_text(_HANGS.format(mark=mark))
    return adapter, mark


@pytest.mark.parametrize("signum, jobs", [(signal.SIGTERM, 1), (signal.SIGINT, 1),
                                          (signal.SIGTERM, 2), (signal.SIGINT, 2)],
                         ids=["term", "int", "term-jobs2", "int-jobs2"])
def test_a_signal_ends_the_run_and_leaves_the_previous_reports(
        tmp_path: Path, signum: int, jobs: int) -> None:
    adapter, mark = _hanging_adapter(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "conformance.json").write_text("previous")
    process = subprocess.Popen(
        [*XENTCHECK, "run", "--adapter", str(adapter), "--timeout",
         "300", "--jobs", str(jobs), "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the run is inside a hanging call once the adapter's sleep shows
        assert _appears(f"sleep {mark}", within=60), "the adapter was never called"
        started = time.monotonic()
        process.send_signal(signum)
        _, err = process.communicate(timeout=30)
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == (143 if signum == signal.SIGTERM else 130), err
    assert "Traceback" not in err
    assert _gone(f"sleep {mark}")
    assert _gone(str(adapter))
    assert [p.name for p in out.iterdir()] == ["conformance.json"]
    assert (out / "conformance.json").read_text() == "previous"


def _kill_leftovers(mark: str, tag: str) -> None:
    """Kill what a failed test's run left (its adapter's sleep, anything with its tag in
    the environment), not to burden the tests after it."""
    for pid in set(_processes_with(f"sleep {mark}") + _processes_with(tag, "environ")):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_killed_run_leaves_no_worker_behind(tmp_path: Path, jobs: int) -> None:
    """SIGKILL (no cleanup can run) of the grading process, or of the whole run: each
    worker sees its lifeline end and kills its process group, the adapter's sleep too."""
    adapter, mark = _hanging_adapter(tmp_path)
    tag = f"XENTCHECK_TEST_RUN={mark}"  # in the environment of the run and its workers
    process = subprocess.Popen(
        [*XENTCHECK, "run", "--adapter", str(adapter), "--timeout", "300",
         "--jobs", str(jobs), "--out", str(tmp_path / "out")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "XENTCHECK_TEST_RUN": mark}, start_new_session=True)
    try:
        assert _appears(f"sleep {mark}", within=60), "the adapter was never called"
        workers = set(_processes_with(tag, "environ")) & set(_processes_with("worker_main"))
        assert workers  # (with --jobs 2, the other part's may still be starting)
        os.killpg(process.pid, signal.SIGKILL)  # the run and its --jobs processes
        process.wait(timeout=30)
        assert _gone(f"sleep {mark}", within=10)
        assert _gone(tag, within=10, where="environ")
    finally:
        _kill_leftovers(mark, tag)
        if process.poll() is None:
            process.kill()
            process.wait()


def test_held_signals_come_after_the_block_once_each() -> None:
    steps: list[str] = []

    def handler(signum: int, frame: object) -> None:
        steps.append(f"handled {signal.Signals(signum).name}")

    before = signal.signal(signal.SIGTERM, handler)
    try:
        with held():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            steps.append("the block went on")
        assert steps == ["the block went on", "handled SIGTERM"]
        assert signal.getsignal(signal.SIGTERM) is handler
        with held():  # nothing arrived: nothing delivered
            steps.append("again")
        assert steps[-1] == "again"
    finally:
        signal.signal(signal.SIGTERM, before)


def test_an_interrupt_while_parts_start_stops_every_started_part(tmp_path: Path) -> None:
    """SIGINT just after a --jobs process started, before it was recorded: held until
    every started process is, then raised, and every one is stopped."""
    adapter, mark = _hanging_adapter(tmp_path)
    script = textwrap.dedent(f"""
        import multiprocessing.context, signal
        from xentcheck.harness import runner
        start = multiprocessing.context.SpawnProcess.start
        def start_then_interrupt(self):
            start(self)
            signal.raise_signal(signal.SIGINT)  # before run_parallel records it
        multiprocessing.context.SpawnProcess.start = start_then_interrupt
        try:
            runner.run_parallel([{str(adapter)!r}], jobs=2, timeout=300)
        except KeyboardInterrupt:
            print("interrupted")
        """)
    tag = f"XENTCHECK_TEST_RUN={mark}"
    try:
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                              text=True, timeout=30,
                              env={**os.environ, "XENTCHECK_TEST_RUN": mark})
        assert done.stdout == "interrupted\n", done.stdout + done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert _gone(tag, within=10, where="environ")
    finally:
        _kill_leftovers(mark, tag)


# ------------------------------------------------------------------- untrusted text

EVIL = "\x1b]52;c;cHduZWQ=\x07\x1b[2J<script>alert(1)</script> | x\nnext"


def test_hostile_names_reach_neither_terminal_nor_markdown_raw(tmp_path: Path) -> None:
    adapter = tmp_path / "hostile.py"
    adapter.write_text(textwrap.dedent(f"""
        import numpy as np
        name = {EVIL!r}
        version = {EVIL!r}
        def softmax(logits):
            raise RuntimeError({EVIL!r})
        """))
    out = tmp_path / "out"
    done = subprocess.run([*XENTCHECK, "run", "--adapter", str(adapter),
                           "--regime", "moderate", "--dtype", "float64", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    for stream in (done.stdout, done.stderr):
        assert "\x1b" not in stream and "\x07" not in stream
    assert "\\x1b]52" in done.stdout
    md = (out / "conformance.md").read_text()
    assert "<script>" not in md and "\x1b" not in md
    data = json_report.load(out / "conformance.json")
    assert data["adapters"][0]["name"] == EVIL  # the data keeps it as it was
    for command in (["compare", str(out / "conformance.json"), str(out / "conformance.json")],
                    ["report", str(out / "conformance.json"), "--out", str(tmp_path / "r")]):
        shown = subprocess.run([*XENTCHECK, *command], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
        assert "\x1b" not in shown.stdout + shown.stderr


def test_a_hostile_report_renders_as_text(tmp_path: Path) -> None:
    """Markdown tables keep their columns and carry no HTML, whatever the report says."""
    from xentcheck.harness.report import markdown

    committed = json_report.load(ROOT / "reports" / "conformance.json")
    for adapter in committed["adapters"]:
        adapter["name"] = f"{adapter['name']}{EVIL}"
        adapter["reason"] = EVIL
        for result in adapter["results"]:
            result["notes"] = [EVIL]
    text = markdown.render(committed)
    assert "<script>" not in text and "\x1b" not in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| function"))
    columns = lines[header].count(" | ")
    for line in lines[header + 2: header + 10]:
        assert line.replace("\\|", "").count(" | ") == columns, line


# ------------------------------------------------------------------- list


def test_list_survives_entry_points_that_exit_or_hang(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "hostile_adapters-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-adapters\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[xentcheck.adapters]\nexits = exits_at_import:adapter\n"
        "hangs = hangs_at_import:adapter\n")
    (site / "exits_at_import.py").write_text("import os\nos._exit(7)\n")
    (site / "hangs_at_import.py").write_text("import time\ntime.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.monotonic()
    # 20 s: every built-in starts its worker at once, the frameworks' imports among them
    done = subprocess.run([*XENTCHECK, "list", "--timeout", "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 120
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    flat = " ".join(done.stdout.split())  # the table wraps long reasons
    assert "unavailable" in rows["exits"] and "exited with code 7" in flat
    assert "unavailable" in rows["hangs"] and "did not load the adapter in 20 s" in flat
    assert rows["numpy"].rstrip().endswith("ok")
    assert _gone("hangs_at_import")
