"""The runner's order of work: one adapter at a time, truths shared along a dialect.

A run loads one adapter's worker, gives it every case, and closes it before the next one
starts (so one framework is in memory at a time, not all of them); the truth of a case is
computed once for the adapters that follow, within a block's worth of elements (across
dialects: ``tests/harness/test_dialects.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from xentcheck.harness import runner, truth

_FIRST = """
import os
import numpy as np

name = "first"
dtypes = ("float64",)
with open({pid_file!r}, "w") as fh:
    fh.write(str(os.getpid()))


def logsumexp(logits):
    m = logits.max(axis=1)
    return m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
"""

_SECOND = """
import os
import time
import numpy as np

name = "second"
dtypes = ("float64",)


def _first_is_gone():
    with open({pid_file!r}) as fh:
        pid = int(fh.read())
    deadline = time.monotonic() + 10.0  # the first closes in the background: a moment
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def logsumexp(logits):
    if not _first_is_gone():
        raise RuntimeError("the first adapter's worker is still running")
    m = logits.max(axis=1)
    return m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
"""


def test_one_adapter_worker_at_a_time(tmp_path: Path) -> None:
    """The second adapter's calls find the first one's worker gone (its process reaped);
    with every worker kept to the end of the run they would raise, and grade broken."""
    pid_file = tmp_path / "first.pid"
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text(_FIRST.format(pid_file=str(pid_file)))
    second.write_text(_SECOND.format(pid_file=str(pid_file)))
    report = runner.run([str(first), str(second)], dtypes=["float64"],
                        regimes=["moderate"]).to_dict()
    by_name = {a["name"]: a for a in report["adapters"]}
    assert set(by_name) == {"first", "second"}
    results = by_name["second"]["results"]
    assert results, "the second adapter was not graded"
    assert all(r["grade"] != "broken" for r in results), [
        r["notes"] for r in results if r["grade"] == "broken"]
    assert not os.path.exists(f"/proc/{pid_file.read_text()}")


def _counted_truths(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    made: list[Any] = []
    real_init = truth.Truth.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(truth.Truth, "__init__", counting_init)
    return made


def test_truths_are_shared_along_a_dialect(monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy and numpy-seed (both PyTorch's dialect, one after the other) share one truth
    per case; with no elements to keep, each computes its own; the reports are the same."""
    made = _counted_truths(monkeypatch)
    settings: dict[str, Any] = dict(dtypes=["float64"], regimes=["moderate"])
    shared = runner.run(["numpy", "numpy-seed"], **settings).to_dict()
    cases = shared["cases"]
    assert len(made) == cases
    made.clear()
    alone = runner.run(["numpy", "numpy-seed"], block_elements=0, **settings).to_dict()
    assert len(made) == 2 * cases
    assert shared["adapters"] == alone["adapters"]
