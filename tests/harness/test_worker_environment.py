"""A worker's environment: the grading process's, with ``OMP_WAIT_POLICY=PASSIVE`` added
where it is unset (idle OpenMP threads of a candidate sleep instead of spinning on the
CPU the grading needs) and a user's own value kept. Fails on a planted bug: the default
not passed to the worker, or forced over the user's value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xentcheck.harness.adapters import open_adapter
from xentcheck.harness.adapters.isolation import WORKER_DEFAULTS, worker_environment

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kept_adapters.py"


def _policy_in_worker() -> str | None:
    """The OMP_WAIT_POLICY the fixture's worker sees (None: unset)."""
    with open_adapter(f"{FIXTURES}:WaitPolicy") as handle:
        out = handle.call("logsumexp", np.zeros((32, 2)))
    assert out.ok, out.faults
    codes = [int(c) for c in out.value]
    if codes[0] == -2:
        return None
    return "".join(chr(c) for c in codes if c >= 0)


def test_a_worker_waits_passively_unless_told_otherwise(monkeypatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert _policy_in_worker() == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert _policy_in_worker() == "ACTIVE"


@pytest.mark.parametrize("base", [{}, {"OMP_WAIT_POLICY": "active", "PATH": "/bin"}])
def test_worker_environment_adds_only_what_is_unset(base: dict[str, str]) -> None:
    before = dict(base)
    env = worker_environment(base)
    assert base == before  # the base itself is not modified
    assert {k: env[k] for k in base} == base  # nothing of the base changed
    assert set(env) == set(base) | set(WORKER_DEFAULTS)
    for name, value in WORKER_DEFAULTS.items():
        assert env[name] == base.get(name, value)
