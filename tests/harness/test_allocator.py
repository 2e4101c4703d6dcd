"""The allocator tuning: it takes on glibc, and a run's results do not depend on it."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

from xentcheck.harness.allocator import keep_freed_memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt only")
def test_glibc_accepts_the_settings() -> None:
    assert ctypes.util.find_library("c")
    assert keep_freed_memory() is True


def test_results_are_the_same_bits_with_and_without_it() -> None:
    # the same grading in a fresh process with and without the tuning
    code = """
import sys, numpy as np
from xentcheck.harness.allocator import keep_freed_memory
if sys.argv[1] == "1":
    keep_freed_memory()
from xentcheck.harness import grading
z = (np.random.default_rng(3).standard_normal((8, 4096)) * 8).astype(np.float32)
x = z.astype(np.float64)
e = np.exp(x - x.max(axis=1, keepdims=True))
exact = e / e.sum(axis=1, keepdims=True)  # float64 stands in for the truth here
g = grading.grade_elements("softmax", exact.astype(np.float32), exact, inputs=z)
sys.stdout.write(g.ulp.tobytes().hex() + g.allowed.tobytes().hex())
"""
    out = [subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True,
                          check=True).stdout for flag in ("0", "1")]
    assert len(out[0]) == 2 * 2 * 8 * 4096 * 8  # two float64 arrays, as hex
    assert out[0] == out[1]


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt only")
def test_freed_memory_stays_in_the_process() -> None:
    # 640 MiB of 16 MiB arrays (below the mapping threshold: on the heap), freed at once:
    # under the tuning the heap is not trimmed, so the pages stay resident for the next
    # block; a trim threshold of 512 MiB (the setting before) or glibc's default gives
    # most of them back.
    code = """
import sys, numpy as np
from xentcheck.harness.allocator import keep_freed_memory
if sys.argv[1] == "1":
    assert keep_freed_memory()
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 >> 20
base = resident()
arrays = [np.ones(1 << 21) for _ in range(40)]
held = resident() - base
del arrays
sys.stdout.write(f"{held} {resident() - base}")
"""
    for flag, kept in (("1", True), ("0", False)):
        out = subprocess.run([sys.executable, "-c", code, flag], capture_output=True,
                             text=True, check=True).stdout
        held, after = map(int, out.split())
        assert held >= 600
        assert (after >= 600) is kept, (flag, held, after)
