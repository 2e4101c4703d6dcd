"""Isolation: every fault kind is caught, named, and does not stop the next call or adapter.

The misbehaving adapters live in ``fixtures/faulty_adapters.py``: each class has a faulty
``softmax`` and a well-behaved ``logsumexp``. Worker handles must survive all of them
(segfault, abort, ``os._exit``, ``sys.exit``, a hang past the timeout, an exception, the
wrong shape, dtype or type, an input changed in place); in-process handles the ones that
leave the process alive.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from xentcheck.harness.adapters import open_adapter
from xentcheck.harness.adapters.isolation import WorkerHandle, receive_message, send_message

FAULTY = Path(__file__).resolve().parent / "fixtures" / "faulty_adapters.py"
LOGITS = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]], dtype=np.float32)
HANG_TIMEOUT = 0.5  # seconds; the Hang fixture sleeps forever

# class in faulty_adapters.py -> (fault kind, words the reason must contain)
FATAL = {
    "Segfault": ("crashed", "worker killed by SIGSEGV"),
    "Abort": ("crashed", "worker killed by SIGABRT"),
    "HardExit": ("exited", "worker exited with code 3"),
    "Hang": ("timeout", f"no answer within {HANG_TIMEOUT:g} s; worker killed"),
}
SURVIVABLE = {
    "SysExit": ("exited", "sys.exit(4) called"),
    "Raises": ("raised", "ZeroDivisionError: planted division by zero"),
    "WrongShape": ("wrong-shape", "returned shape (2, 2), expected (2, 3)"),
    "WrongDtype": ("wrong-dtype", "returned dtype float64, expected float32"),
    "ReturnsList": ("wrong-type", "returned a list of length 2, not a NumPy array"),
    "ReturnsNone": ("wrong-type", "returned None, not a NumPy array"),
    "MutatesInput": ("mutated-input", "modified its input in place: logits"),
}


def _expected_logsumexp(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    return np.log(np.exp(z).sum(axis=1))


@pytest.mark.parametrize("fixture", [*FATAL, *SURVIVABLE])
def test_fault_is_caught_named_and_the_next_call_works(fixture: str) -> None:
    kind, reason = {**FATAL, **SURVIVABLE}[fixture]
    logits = LOGITS.copy()
    with open_adapter(f"{FAULTY}:{fixture}") as handle:
        outcome = handle.call("softmax", logits, timeout=HANG_TIMEOUT)
        assert outcome.fault is not None, f"{fixture}: no fault reported"
        assert (outcome.fault.kind, outcome.fault.reason) == (kind, reason)
        after = handle.call("logsumexp", logits)  # a restarted worker if the first one died
        assert after.ok, after.faults
        np.testing.assert_allclose(after.value, _expected_logsumexp(LOGITS), rtol=1e-6)
        assert handle.deaths == (1 if fixture in FATAL else 0)
    np.testing.assert_array_equal(logits, LOGITS)  # the caller's array is never touched


@pytest.mark.parametrize("fixture", list(SURVIVABLE))
def test_fault_in_process_is_caught_and_the_callers_array_kept(fixture: str) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("faulty_in_process", FAULTY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logits = LOGITS.copy()
    with open_adapter(getattr(module, fixture)()) as handle:
        assert not handle.isolated
        outcome = handle.call("softmax", logits)
        assert (outcome.fault.kind, outcome.fault.reason) == SURVIVABLE[fixture]
        assert handle.call("logsumexp", logits).ok
    np.testing.assert_array_equal(logits, LOGITS)


def test_returned_array_is_kept_with_a_dtype_or_shape_fault() -> None:
    with open_adapter(f"{FAULTY}:WrongDtype") as handle:
        outcome = handle.call("softmax", LOGITS)
    assert outcome.value is not None and outcome.value.dtype == np.float64
    np.testing.assert_allclose(outcome.value.sum(axis=1), 1.0)


def test_the_run_goes_on_across_adapters() -> None:
    crashing = open_adapter(f"{FAULTY}:Segfault")
    hanging = open_adapter(f"{FAULTY}:Hang", timeout=HANG_TIMEOUT)  # every call's limit
    healthy = open_adapter("numpy")
    with crashing, hanging, healthy:
        for _ in range(2):
            assert crashing.call("softmax", LOGITS).fault.kind == "crashed"
            assert hanging.call("softmax", LOGITS).fault.kind == "timeout"
            assert healthy.call("softmax", LOGITS).ok
            assert crashing.call("logsumexp", LOGITS).ok
        assert (crashing.deaths, hanging.deaths, healthy.deaths) == (2, 2, 0)


def test_gives_up_after_max_restarts() -> None:
    with open_adapter(f"{FAULTY}:HardExit", max_restarts=1) as handle:
        kinds = [handle.call("softmax", LOGITS).fault for _ in range(3)]
        assert [f.kind for f in kinds] == ["exited", "not-run", "not-run"]
        assert kinds[2].reason.startswith("gave up after 1 worker deaths (last: exited")
        assert handle.call("logsumexp", LOGITS).fault.kind == "not-run"  # the whole adapter
        assert handle.not_run["softmax"][0] == 2 and handle.not_run["logsumexp"][0] == 1


def test_a_function_that_keeps_failing_is_quarantined() -> None:
    """Two consecutive timeouts of softmax: it is not called again (each later call
    answers at once, "not-run", with the reason), and the adapter's other functions still
    run; a third timeout anywhere stops the whole adapter."""
    with open_adapter(f"{FAULTY}:Hang", timeout=HANG_TIMEOUT) as handle:
        started = time.monotonic()
        faults = [handle.call("softmax", LOGITS).fault for _ in range(5)]
        assert time.monotonic() - started < 4 * HANG_TIMEOUT + 3  # two timeouts, not five
        assert [f.kind for f in faults] == ["timeout", "timeout", "not-run", "not-run",
                                            "not-run"]
        assert "not called after 2 failures in a row (last: timeout" in faults[2].reason
        assert handle.call("logsumexp", LOGITS).ok
        assert handle.not_run["softmax"][0] == 3
        assert handle.timeouts == 2


def test_a_crashing_function_is_quarantined_after_two_in_a_row() -> None:
    with open_adapter(f"{FAULTY}:Segfault") as handle:
        kinds = []
        for _ in range(3):
            kinds.append(handle.call("softmax", LOGITS).fault.kind)
            assert handle.call("logsumexp", LOGITS).ok  # a success of another function
        assert kinds == ["crashed", "crashed", "not-run"]
        assert handle.deaths == 2


def test_worker_that_crashes_while_loading_is_unavailable(tmp_path: Path) -> None:
    crashes = tmp_path / "crash_on_import.py"  # written here: never imported by pytest
    crashes.write_text("import ctypes\nctypes.string_at(0)\n")
    with open_adapter(str(crashes)) as handle:
        assert handle.unavailable == "crashed: while loading the adapter: worker killed by SIGSEGV"
        assert handle.call("softmax", LOGITS).fault.kind == "unavailable"


def test_worker_that_hangs_while_loading_times_out(tmp_path: Path) -> None:
    hangs = tmp_path / "hang_on_import.py"
    hangs.write_text("import time\nwhile True:\n    time.sleep(1)\n")
    with open_adapter(str(hangs), start_timeout=HANG_TIMEOUT) as handle:
        assert "did not load the adapter in 0.5 s" in handle.unavailable


def test_adapter_output_does_not_corrupt_the_protocol(capfd: pytest.CaptureFixture) -> None:
    with open_adapter(f"{FAULTY}:Prints") as handle:
        assert handle.call("softmax", LOGITS).ok
        assert handle.call("softmax", LOGITS).ok
    assert "noise on stdout" in capfd.readouterr().err  # the worker's stdout is our stderr


def test_close_stops_the_worker() -> None:
    handle = open_adapter("numpy")
    assert isinstance(handle, WorkerHandle)
    assert handle.call("logsumexp", LOGITS).ok
    process = handle._worker.process
    handle.close()
    assert process.poll() is not None
    assert handle.call("logsumexp", LOGITS).fault.kind == "unavailable"
    handle.close()  # harmless twice


def test_close_closes_each_pipe_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing a worker closes each of its pipes exactly once. A second close of a number
    would close whatever has it by then: the runner closes a worker in the background
    while the next adapter's starts, whose new pipe may have the freed number (that
    ended the next worker, exit code 0, before this was fixed)."""
    handle = open_adapter("numpy")
    assert handle.call("logsumexp", LOGITS).ok
    worker = handle._worker
    pipes = {worker.read_fd, worker.write_fd}
    closed: list[int] = []
    real_close = os.close

    def counting_close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "close", counting_close)
    handle.close()
    monkeypatch.undo()
    assert sorted(fd for fd in closed if fd in pipes) == sorted(pipes), closed


# --------------------------------------------------------------------------- the wire


def _round_trip(obj: object) -> object:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb", buffering=0) as writer:
        sender = threading.Thread(target=send_message, args=(writer, obj))
        sender.start()  # a big message fills the pipe: write and read concurrently
        received = receive_message(reader)
        sender.join()
    return received


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.arange(12, dtype=np.float32).reshape(3, 4).T,  # Fortran order
        np.arange(24, dtype=np.float16).reshape(4, 6)[:, ::2],  # not contiguous
        np.array([[1.5, -np.inf, np.nan]], dtype=ml_dtypes.bfloat16),
        np.zeros((0, 5)),
        np.float32(2.5),
        np.array([3, 1, 2], dtype=np.int64),
        np.random.default_rng(0).normal(size=(256, 1024)),  # 2 MiB: more than a pipe holds
    ],
    ids=["float64", "fortran", "strided", "bfloat16", "empty", "scalar", "int64", "2MiB"],
)
def test_arrays_cross_the_pipe_bit_for_bit(array: np.ndarray) -> None:
    got = _round_trip(("call", "softmax", [array], {"weight": array}))
    assert got[0] == "call" and got[1] == "softmax"
    for received in (got[2][0], got[3]["weight"]):
        assert received.dtype == array.dtype and received.shape == np.shape(array)
        assert np.asarray(received).tobytes() == np.asarray(array).tobytes()
    if isinstance(got[2][0], np.ndarray) and got[2][0].size:
        assert got[2][0].flags.writeable  # an adapter may write to its (private) copy


def test_per_call_overhead_of_a_worker_is_small() -> None:
    """A tiny call's round trip through the worker; measured, with a generous bound."""
    with open_adapter(f"{FAULTY}:WellBehaved") as handle:
        for _ in range(10):
            handle.call("logsumexp", LOGITS)  # warm up
        calls = 200
        start = time.perf_counter()
        for _ in range(calls):
            outcome = handle.call("logsumexp", LOGITS)
        per_call = (time.perf_counter() - start) / calls
    assert outcome.ok
    print(f"worker round trip: {per_call * 1e6:.0f} us per call")
    assert per_call < 0.05  # typically ~0.3 ms; 50 ms would mean something is wrong


# --------------------------------------------------------------------------- the contract checks


class _Reducing:
    """``cross_entropy`` returns whatever ``make(logits)`` gives; may scale the weight."""

    def __init__(self, make, touch_weight: bool = False) -> None:
        self.make, self.touch_weight = make, touch_weight

    def cross_entropy(self, logits, target, weight=None, reduction="none"):
        if self.touch_weight and weight is not None:
            weight *= 2
        return self.make(logits)


@pytest.mark.parametrize(
    ("make", "fault"),
    [
        (lambda z: z.sum(), None),  # a NumPy scalar is a 0-d array: fine
        (lambda z: np.asarray(z.sum()), None),
        (lambda z: float(z.sum()), "wrong-type: returned a float, not a NumPy array"),
        (lambda z: z.sum(keepdims=True)[0], "wrong-shape: returned shape (1,), expected ()"),
        (lambda z: np.int64(3), "wrong-dtype: returned dtype int64, expected float32"),
    ],
)
def test_scalar_results_of_a_reduction(make, fault: str | None) -> None:
    with open_adapter(_Reducing(make)) as handle:
        outcome = handle.call("cross_entropy", LOGITS, np.array([0, 1]), reduction="sum")
    assert (str(outcome.fault) if outcome.fault else None) == fault
    if fault and "int64" in fault:
        assert outcome.value is None  # integers are not a value anyone can grade


def test_a_mutated_option_array_is_named() -> None:
    weight = np.ones(3, np.float32)
    with open_adapter(_Reducing(lambda z: z[:, 0].copy(), touch_weight=True)) as handle:
        outcome = handle.call("cross_entropy", LOGITS, np.array([0, 1]), weight=weight)
    assert str(outcome.fault) == "mutated-input: modified its input in place: weight"
    np.testing.assert_array_equal(weight, 1)
