"""Root pytest configuration.

- Fixture adapters (which crash on purpose) stay out of doctest collection; the tests that
  need them load them.
- No test leaves a process behind: the test process makes itself the "child subreaper" of
  everything it starts (Linux), so a process orphaned by a worker is re-parented to it
  rather than to init; at the end of the session any process still its child fails the
  run, named, and is killed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

collect_ignore_glob = ["tests/harness/fixtures/*", "examples/*", "benchmarks/*"]

_PR_SET_CHILD_SUBREAPER = 36


def pytest_configure(config: pytest.Config) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def living_children(pid: int | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose parent is ``pid`` (default: this one)
    and that is not a zombie."""
    parent = os.getpid() if pid is None else pid
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append((int(entry.name), cmdline))
    return found


def fused_multiply_adds(script: str) -> int:
    """FMA instructions in the machine code that ``script`` prints (run in a fresh process
    that compiles numba's loops afresh, XENTCHECK_JIT_CACHE=0, on the compiled engine):
    an FMA rounds once where the NumPy code the loops transcribe rounds twice."""
    env = dict(os.environ, XENTCHECK_JIT_CACHE="0", XENTCHECK_FAST_ENGINE="numba")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    code = done.stdout
    assert len(code) > 1000, code  # the code was read, not an empty listing
    return len(re.findall(r"\bv?fn?m(add|sub)[0-9]*[ps][sd]", code))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    # Python's own multiprocessing resource tracker (started once by the spawn context of
    # `--jobs`) lives as long as the interpreter that started it, by design: not a leak
    def still_here() -> list[tuple[int, str]]:
        return [(pid, cmd) for pid, cmd in living_children()
                if "multiprocessing.resource_tracker" not in cmd]

    # a process killed by a test's clean-up (a worker's group, killed at once) may still
    # be exiting when the session ends (its command line already empty): a few seconds
    # for those to go, while a process really left behind stays
    left, deadline = still_here(), time.monotonic() + 5.0
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = still_here()
    if not left:
        return
    for pid, cmdline in left:
        print(f"\nprocess left behind by the tests: {pid} {cmdline[:200]}", file=sys.stderr)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
