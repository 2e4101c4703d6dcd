"""Kept inputs: a worker keeps a large input that cannot change and later calls name it
instead of sending it again (``isolation.KeptInputs``). Each test would fail on a planted
bug: a writable array kept (a change would not reach the adapter), the handle's record
outliving its worker, slots dropped before the call that names them is read, the least
recently used order ignored, a gone array's slot never freed."""

from __future__ import annotations

import gc
import pickle
from pathlib import Path

import numpy as np
import pytest

from xentcheck.harness.adapters import isolation, open_adapter
from xentcheck.harness.adapters.isolation import KeptArray, KeptInputs

ECHO = f"{Path(__file__).resolve().parent / 'fixtures' / 'kept_adapters.py'}:Echo"
CRASH = -7.0  # kept_adapters.CRASH: softmax of it kills the worker
SHAPE = (32, 1024)  # 128 KiB of float32: above KEEP_MIN_BYTES


def _frozen(seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)
    a.flags.writeable = False
    return a


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes each call message of the grading process carries (through the pipe or a
    shared region: its pickle and its arrays)."""
    sizes: list[int] = []
    parts = isolation._message_parts

    def counted(obj: object, region: object = None) -> list:
        buffers: list[pickle.PickleBuffer] = []
        header = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        sizes.append(len(header) + sum(b.raw().nbytes for b in buffers))
        return parts(obj, region)

    monkeypatch.setattr(isolation, "_message_parts", counted)
    return sizes


def test_an_unchangeable_input_crosses_once(sent: list[int]) -> None:
    x = _frozen(0)
    with open_adapter(ECHO) as handle:
        for _ in range(3):
            out = handle.call("logsumexp", x)
            assert out.ok, out.faults
            np.testing.assert_array_equal(out.value, x.sum(axis=1, dtype=np.float32))
    calls = sent[1:]  # the first message loads the adapter
    assert calls[0] > x.nbytes and all(size < 1024 for size in calls[1:])


@pytest.mark.parametrize("make", [
    lambda a: a,  # writable
    lambda a: a[:, :512][:, ::1],  # a read-only view of a writable array
], ids=["writable", "read-only view of writable"])
def test_a_changeable_input_crosses_every_time_and_a_change_arrives(make, sent) -> None:
    base = np.array(_frozen(1))  # writable copy
    x = make(base)
    x.flags.writeable = x is base  # the view: read-only, its base is not
    with open_adapter(ECHO) as handle:
        first = handle.call("logsumexp", x)
        base[:, 0] += 1.0
        second = handle.call("logsumexp", x)
    assert first.ok and second.ok
    np.testing.assert_array_equal(second.value, x.sum(axis=1, dtype=np.float32))
    assert not np.array_equal(first.value, second.value)
    assert all(size > x.nbytes for size in sent[1:])


def test_an_adapter_changing_a_kept_input_changes_nothing_kept() -> None:
    x = _frozen(2)
    with open_adapter(ECHO) as handle:
        assert handle.call("logsumexp", x).ok
        mutated = handle.call("softmax", x)
        assert mutated.fault is not None and mutated.fault.kind == "mutated-input"
        again = handle.call("logsumexp", x)
    np.testing.assert_array_equal(again.value, x.sum(axis=1, dtype=np.float32))


def test_a_new_worker_starts_with_nothing_kept(sent: list[int]) -> None:
    x, crash = _frozen(3), np.array(_frozen(4))
    crash.flat[0] = CRASH
    with open_adapter(ECHO) as handle:
        assert handle.call("logsumexp", x).ok
        died = handle.call("softmax", crash)
        assert died.fault is not None and died.fault.kind == "exited"
        sent.clear()
        after = handle.call("logsumexp", x)  # a new worker: x is sent again
        assert after.ok, after.faults
        assert handle.deaths == 1
    np.testing.assert_array_equal(after.value, x.sum(axis=1, dtype=np.float32))
    assert sent[-1] > x.nbytes


def test_a_slot_dropped_by_the_call_that_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _frozen(5), _frozen(6)
    monkeypatch.setattr(isolation, "KEEP_BYTES", a.nbytes)  # room for one array
    with open_adapter(ECHO) as handle:
        for logits, target in [(a, a), (a, b), (b, a), (b, b)]:
            # (a, b): a is named, then evicted for b within the same message
            out = handle.call("cross_entropy", logits, target)
            assert out.ok, out.faults
            np.testing.assert_array_equal(out.value, (logits * target).sum(axis=1,
                                                                          dtype=np.float32))
        assert handle.deaths == 0


def test_the_least_recently_used_goes_first() -> None:
    a, b, c = _frozen(7), _frozen(8), _frozen(9)
    kept = KeptInputs(budget=2 * a.nbytes)
    slot_a, slot_b = kept.wrap(a).slot, kept.wrap(b).slot
    assert kept.wrap(a) == KeptArray(slot_a)  # named, not sent: and now the newest
    assert kept.wrap(c).array is c
    assert kept.forget() == [slot_b]
    assert kept.wrap(a) == KeptArray(slot_a)
    assert kept.wrap(b).array is b  # sent again


def test_a_gone_array_frees_its_slot() -> None:
    kept = KeptInputs()
    a = _frozen(10)
    slot = kept.wrap(a).slot
    del a
    gc.collect()
    assert kept.forget() == [slot]
    b = _frozen(11)
    assert kept.wrap(b).array is b  # whatever its id, it is sent


def test_small_or_writable_inputs_are_sent_as_they_are() -> None:
    kept = KeptInputs()
    small = np.zeros(8, np.float32)
    small.flags.writeable = False
    writable = np.array(_frozen(12))
    assert kept.wrap(small) is small and kept.wrap(writable) is writable
    assert kept.wrap(3) == 3 and kept.forget() == []
