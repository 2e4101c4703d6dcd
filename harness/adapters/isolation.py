"""Calling adapters: in this process, or in a persistent worker process that may die.

:class:`WorkerHandle` keeps one worker process per adapter alive across calls. The worker
is ``python -c ...`` started with :class:`subprocess.Popen` in its own session (not
``fork``: the parent may hold threads of torch, jax or BLAS), loads the adapter from its
spec, and answers calls over two private pipes (its side is
:mod:`xentcheck.harness.adapters.worker`, which imports this module, never the other way
round: :mod:`~xentcheck.harness.adapters.registry` opens handles from here). A call
travels to the worker as a pickle (protocol 5) whose array buffers go out of band. What
comes back is plain data only
(:func:`send_plain`): a JSON header of strings, numbers, lists and dicts, with each array
as its dtype name (from a fixed list), its shape and its raw bytes. Nothing the worker
sends is ever unpickled in the grading process, so an adapter cannot run code there (an
ndarray subclass or ``np.matrix`` is reported as ``wrong-type`` inside the worker). A
large array (64 KiB and more) travels through a shared memory file, one each way per
worker, sealed against resizing (:class:`SharedRegion`, Linux; elsewhere, and for what
does not fit, the pipes carry it): written once, copied out once. A large input that
cannot change (read-only all the way down, as a case's arrays are) is sent only once
per worker: the worker keeps it, and later calls with the very same array name it
(:class:`KeptInputs`; a block of an LLM batch goes to some twenty calls). Every reply
must arrive whole within the call's timeout: a worker that sends part of a message and
stalls times out like a silent one.
A worker also holds the read end of a lifeline, a pipe whose write end only the grading
process holds: when that process ends in any way, SIGKILL included (a ``--jobs`` process
killed after its grace period, the OOM killer), the worker kills its own process group,
so that neither it nor anything the adapter started outlives the run.
The adapter's own ``print`` output goes to stderr, never into the protocol. A worker
starts with the grading process's environment and ``OMP_WAIT_POLICY=PASSIVE`` unless
that is set (:func:`worker_environment`: idle OpenMP threads sleep rather than spin).

A call that segfaults or aborts (``crashed``), exits (``exited``) or does not answer
within its timeout (``timeout``: the worker's process group is killed) is reported as such;
the next call starts a new worker. After ``max_restarts`` deaths the handle stops
restarting and answers ``unavailable``. Every other fault (``raised``, ``wrong-type``,
``wrong-shape``, ``wrong-dtype``, ``mutated-input``) is found inside the worker by
:func:`xentcheck.harness.adapters.contract.invoke` and leaves the worker running.

:class:`InProcessHandle` calls an adapter object directly, for objects passed through the
API (``open_adapter(obj)``): the same checks, and the adapter gets copies of the inputs so
that it cannot corrupt the caller's arrays, but no protection against crashes or hangs
(the timeout is not enforced). Pass ``isolated=True`` to run such an object in a worker.
POSIX only (pipes are polled with ``select``).
"""

from __future__ import annotations

import fcntl
import json
import math
import mmap
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from xentcheck.harness.adapters.contract import (
    DTYPES,
    FAULT_KINDS,
    FUNCTIONS,
    OPTIONS,
    AdapterInfo,
    AdapterSpecError,
    CallOutcome,
    Fault,
    call_options,
    invoke,
    one_line,
)
from xentcheck.references import dialects

#: Seconds one call may take before its worker is killed (the CLI's ``--timeout``).
DEFAULT_TIMEOUT = 60.0
#: Seconds a worker may take to start and load its adapter: importing torch or jax on a
#: cold machine, or compiling the C sources on first use, takes tens of seconds.
DEFAULT_START_TIMEOUT = 300.0
#: Worker deaths (crash, exit, timeout) after which a handle stops calling its adapter:
#: a crashing adapter costs at most this many restarts.
DEFAULT_MAX_RESTARTS = 6

_SMALL_MESSAGE = 1 << 16  # below this, a message is joined and written in one syscall


# --------------------------------------------------------------------------- framing


def _write_all(stream: BinaryIO, data: Any) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        written = stream.write(view)
        if written is None:  # pragma: no cover - only for non-blocking streams
            continue
        view = view[written:]


def send_message(stream: BinaryIO, obj: Any, region: SharedRegion | None = None) -> None:
    """Write ``obj`` as one message: sizes, the pickle, then each out-of-band buffer (in
    ``region`` where it fits, else after the pickle)."""
    for part in _message_parts(obj, region):
        _write_all(stream, part)


def _read_exact(stream: BinaryIO, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise EOFError("the other end closed the pipe")
        got += n
    return buffer


def receive_message(stream: BinaryIO, region: SharedRegion | None = None) -> Any:
    """Read one message written by :func:`send_message` (arrays come back writable)."""
    (count,) = struct.unpack("<I", _read_exact(stream, 4))
    sizes = struct.unpack(f"<{count}Q", _read_exact(stream, 8 * count))
    offsets = struct.unpack(f"<{count - 1}Q", _read_exact(stream, 8 * (count - 1)))
    header = _read_exact(stream, sizes[0])
    buffers = [_read_exact(stream, size) if at == IN_PIPE else _taken(region, at, size)
               for size, at in zip(sizes[1:], offsets, strict=True)]
    return pickle.loads(header, buffers=buffers)


def _taken(region: SharedRegion | None, offset: int, size: int) -> bytearray:
    if region is None:
        raise ProtocolError("a buffer in a shared region that this end does not have")
    return region.take(offset, size)


# --------------------------------------------------------------------------- shared regions

#: Bytes of each shared region: a message's large buffers travel there when they fit.
REGION_BYTES = 64 << 20
#: Buffers smaller than this go through the pipe with the message.
REGION_MIN_BYTES = 1 << 16
#: The offset that says "in the pipe, after the header".
IN_PIPE = (1 << 64) - 1


class SharedRegion:
    """A shared memory file of fixed size (Linux's ``memfd_create``) that carries the
    large buffers of one message at a time, each written once by the sender and copied
    once by the receiver, where a pipe copies twice through the kernel and wakes both
    sides up every megabyte. Each worker has two, one each way, created by the grading
    process and passed to the worker at its start; calls and replies alternate, so a
    message always starts at offset 0 and is read before the next is written.

    Its size is sealed (no shrinking, no growing, no new seals): a worker that tried to
    truncate it, to make the grading process's reads or writes fault, gets an error. Its
    contents are the sender's bytes, as a pipe's would be: the receiver copies them out
    and then checks them like any reply."""

    def __init__(self, fd: int) -> None:
        self.size = os.fstat(fd).st_size
        self.map = mmap.mmap(fd, self.size)

    @classmethod
    def create(cls) -> tuple[SharedRegion, int] | None:
        """A new region and its file descriptor (to pass to a worker, then close); None
        where there is no ``memfd_create`` or sealing (not Linux): pipes carry it all."""
        make = getattr(os, "memfd_create", None)
        add_seals = getattr(fcntl, "F_ADD_SEALS", None)
        if make is None or add_seals is None:
            return None
        try:
            fd = make("xentcheck-region", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError:
            return None
        try:
            os.ftruncate(fd, REGION_BYTES)
            fcntl.fcntl(fd, add_seals,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            return cls(fd), fd
        except OSError:
            os.close(fd)
            return None

    def place(self, buffers: Sequence[memoryview]) -> list[int]:
        """Write each buffer of at least :data:`REGION_MIN_BYTES` that still fits, one
        after another from offset 0 (64-byte aligned); their offsets, :data:`IN_PIPE`
        for the others."""
        offsets, at = [], 0
        for buffer in buffers:
            size = buffer.nbytes
            if size < REGION_MIN_BYTES or at + size > self.size:
                offsets.append(IN_PIPE)
                continue
            self.map[at:at + size] = buffer.cast("B")
            offsets.append(at)
            at = (at + size + 63) & ~63
        return offsets

    def take(self, offset: int, size: int) -> bytearray:
        """A copy of ``size`` bytes at ``offset``; :class:`ProtocolError` if they are not
        all inside the region."""
        if offset > self.size or size > self.size - offset:
            raise ProtocolError(f"{size} bytes at offset {offset} of a {self.size}-byte region")
        with memoryview(self.map) as view:
            return bytearray(view[offset:offset + size])


# --------------------------------------------------------------------------- kept inputs

#: Bytes of inputs a worker keeps for later calls (the least recently used go first).
KEEP_BYTES = 64 << 20
#: Inputs smaller than this are sent every time (naming them would save nothing).
KEEP_MIN_BYTES = 1 << 16


@dataclass(frozen=True)
class KeptArray:
    """An input in a call message that the worker keeps under ``slot``: ``array`` is sent
    with its first call, None on later ones (the worker has it)."""

    slot: int
    array: np.ndarray | None = None


def _unchangeable(array: np.ndarray) -> bool:
    """Nobody can write to ``array`` through NumPy: it and every array it views are
    read-only, down to memory that is read-only itself (bytes, a read-only map) or owned
    by a read-only array. (An owner made writable again and changed would escape this:
    the harness never does so, its case arrays are frozen.)"""
    base: Any = array
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    if base is None:
        return True
    try:
        return memoryview(base).readonly
    except (TypeError, ValueError):  # not a buffer, or a closed map
        return False


class KeptInputs:
    """The grading process's record of what its worker keeps: slot -> a weak reference to
    the array (an array that is gone frees its slot; an id alone could be reused).

    :meth:`wrap` turns a call's input into a :class:`KeptArray` where it is large and
    unchangeable (:func:`_unchangeable`), and :meth:`forget` lists the slots the worker
    is to drop once it has read the call (evicted or gone). It belongs to one worker
    process: a new worker starts with an empty one, so a worker that died takes its
    slots with it."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = KEEP_BYTES if budget is None else budget
        self._slots: dict[int, tuple[weakref.ref, int]] = {}  # in order of last use
        self._next = 0
        self._forget: list[int] = []

    def wrap(self, value: Any) -> Any:
        if (type(value) is not np.ndarray or value.nbytes < KEEP_MIN_BYTES
                or value.nbytes > self.budget or not _unchangeable(value)):
            return value
        self._collect()
        for slot, (ref, size) in self._slots.items():
            if ref() is value:
                del self._slots[slot]
                self._slots[slot] = (ref, size)  # the most recently used now
                return KeptArray(slot)
        while self._slots and self._held() + value.nbytes > self.budget:
            oldest = next(iter(self._slots))
            del self._slots[oldest]
            self._forget.append(oldest)
        slot, self._next = self._next, self._next + 1
        self._slots[slot] = (weakref.ref(value), value.nbytes)
        return KeptArray(slot, value)

    def forget(self) -> list[int]:
        """The slots the worker is to drop once it has read this call (each said once)."""
        self._collect()
        dropped, self._forget = self._forget, []
        return dropped

    def _held(self) -> int:
        return sum(size for _, size in self._slots.values())

    def _collect(self) -> None:
        for slot, (ref, _) in list(self._slots.items()):
            if ref() is None:
                del self._slots[slot]
                self._forget.append(slot)


def keep_inputs(kept: dict[int, np.ndarray], values: Any) -> Any:
    """The worker's side of :class:`KeptInputs`: store each newly sent :class:`KeptArray`
    in ``kept`` (read-only), and return ``values`` (a list, or a dict of options) with
    every :class:`KeptArray` replaced by its array. The slots a message says to forget
    are dropped after this (one of them may be named in that very message). A slot the
    worker does not hold is a broken protocol (``KeyError``)."""

    def resolve(value: Any) -> Any:
        if not isinstance(value, KeptArray):
            return value
        if value.array is not None:
            value.array.flags.writeable = False
            kept[value.slot] = value.array
        return kept[value.slot]

    if isinstance(values, dict):
        return {k: resolve(v) for k, v in values.items()}
    return [resolve(v) for v in values]


# --------------------------------------------------------------------------- replies: plain data

#: The dtypes an array in a worker's reply may have, by ``np.dtype(...).name``. A value of
#: any other dtype is not sent (the worker reports it as ``wrong-dtype``).
PLAIN_DTYPES = frozenset({
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "float128", "complex64", "complex128", "bfloat16",
})
_PLAIN_PREFIX = struct.Struct("<II")  # header length, number of buffers
_MAX_HEADER = 1 << 26  # 64 MiB of JSON: far beyond any reply's strings
_MAX_BUFFERS = 64
_MAX_BUFFER = 1 << 40


class ProtocolError(Exception):
    """A worker's reply that is not plain data of the documented form."""


def _plain_dtype(name: str) -> np.dtype:
    if name not in PLAIN_DTYPES:
        raise ProtocolError(f"array dtype {name!r} is not one a reply may carry")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _to_plain(obj: Any, buffers: list[memoryview]) -> Any:
    if type(obj) is np.ndarray or isinstance(obj, np.generic):  # before float: np.float64
        array = np.asarray(obj)
        if not array.flags.c_contiguous:  # (ascontiguousarray would make 0-d arrays 1-d)
            array = array.copy(order="C")
        _plain_dtype(array.dtype.name)
        buffers.append(memoryview(array.reshape(-1).view(np.uint8)))
        return {"__array__": len(buffers) - 1, "dtype": array.dtype.name,
                "shape": list(array.shape)}
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, (list, tuple)):
        return [_to_plain(item, buffers) for item in obj]
    if isinstance(obj, dict):
        return {str.__str__(str(k)): _to_plain(v, buffers) for k, v in obj.items()}
    raise ProtocolError(f"{type(obj).__name__} is not plain data")


def send_plain(stream: BinaryIO, obj: Any, region: SharedRegion | None = None) -> None:
    """Write ``obj`` (None, bool, int, float, str, list, dict, plain NumPy arrays of
    :data:`PLAIN_DTYPES`) as one message: sizes, offsets, a JSON header, each array's
    bytes (in ``region`` where it fits, else after the header)."""
    buffers: list[memoryview] = []
    header = json.dumps(_to_plain(obj, buffers), separators=(",", ":")).encode("utf-8")
    offsets = region.place(buffers) if region is not None else [IN_PIPE] * len(buffers)
    piped = [b for b, at in zip(buffers, offsets, strict=True) if at == IN_PIPE]
    sizes = _PLAIN_PREFIX.pack(len(header), len(buffers))
    sizes += struct.pack(f"<{2 * len(buffers)}Q", *(b.nbytes for b in buffers), *offsets)
    if len(header) + sum(b.nbytes for b in piped) < _SMALL_MESSAGE:
        _write_all(stream, b"".join([sizes, header, *(b.tobytes() for b in piped)]))
    else:
        _write_all(stream, sizes + header)
        for buffer in piped:
            _write_all(stream, buffer)


#: Seconds between looks at whether the worker is still alive while waiting for a reply
#: (a process it started may hold the pipe open after it died: no end-of-file comes).
_LIVENESS_POLL = 0.2


def _read_before(fd: int, size: int, deadline: float | None,
                 alive: Callable[[], bool] | None = None) -> bytearray:
    """``size`` bytes from the raw descriptor ``fd``, all of them before ``deadline``
    (``time.monotonic()``; None: no limit): ``TimeoutError`` otherwise, ``EOFError`` if the
    other end closed or ``alive()`` says the writer is gone."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            wait = left if alive is None else min(left if left is not None else _LIVENESS_POLL,
                                                  _LIVENESS_POLL)
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            if alive is not None and not alive():
                raise EOFError("the worker is gone")
        n = os.readv(fd, [view[got:]])
        if not n:
            raise EOFError("the other end closed the pipe")
        got += n
    return buffer


def receive_plain(fd: int, timeout: float | None,
                  alive: Callable[[], bool] | None = None,
                  region: SharedRegion | None = None) -> Any:
    """Read one message of :func:`send_plain` from the raw descriptor ``fd``, the whole of
    it within ``timeout`` seconds (None: no limit); ``alive`` (if given) is asked now and
    then whether the writer still runs; ``region``: where its large arrays may be. Arrays
    come back as fresh, writable NumPy arrays. Raises ``TimeoutError``, ``EOFError`` or
    :class:`ProtocolError`."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def read(size: int) -> bytearray:
        return _read_before(fd, size, deadline, alive)

    header_size, count = _PLAIN_PREFIX.unpack(read(_PLAIN_PREFIX.size))
    if header_size > _MAX_HEADER or count > _MAX_BUFFERS:
        raise ProtocolError(f"a reply of {header_size} header bytes and {count} arrays")
    sizes = struct.unpack(f"<{count}Q", read(8 * count))
    offsets = struct.unpack(f"<{count}Q", read(8 * count))
    if any(size > _MAX_BUFFER for size in sizes):
        raise ProtocolError("an array larger than any reply holds")
    try:
        header = json.loads(bytes(read(header_size)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"the reply's header is not JSON ({exc})") from None
    buffers = [read(size) if at == IN_PIPE else _taken(region, at, size)
               for size, at in zip(sizes, offsets, strict=True)]
    return _from_plain(header, buffers, 0)


def _from_plain(obj: Any, buffers: list[bytearray], depth: int) -> Any:
    if depth > 16:
        raise ProtocolError("a reply nested too deeply")
    if isinstance(obj, list):
        return [_from_plain(item, buffers, depth + 1) for item in obj]
    if isinstance(obj, dict):
        if "__array__" not in obj:
            return {k: _from_plain(v, buffers, depth + 1) for k, v in obj.items()}
        index, name, shape = obj.get("__array__"), obj.get("dtype"), obj.get("shape")
        if (not isinstance(index, int) or not 0 <= index < len(buffers)
                or not isinstance(name, str) or not isinstance(shape, list)
                or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ProtocolError("a malformed array in the reply")
        dtype = _plain_dtype(name)
        data = buffers[index]
        if math.prod(shape) * dtype.itemsize != len(data):
            raise ProtocolError(f"an array of shape {shape} and {len(data)} bytes")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    return obj


# --------------------------------------------------------------------------- handles


class AdapterHandle:
    """One adapter, ready to be called: what it provides and :meth:`call`.

    ``info`` (an :class:`~xentcheck.harness.adapters.contract.AdapterInfo`) has the name, the
    functions provided with the options each accepts, the dtypes, the version, and
    ``unavailable`` (why it cannot be used, or ``None``). Use as a context manager or
    call :meth:`close`.
    """

    isolated: bool = False
    #: The calls that reached the adapter (its worker) and the seconds they took, each as
    #: :attr:`CallOutcome.seconds <xentcheck.harness.adapters.contract.CallOutcome.seconds>`
    #: counts it: what a report's ``timing`` gives as the adapter's own time.
    calls: int = 0
    call_seconds: float = 0.0

    def __init__(self, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout

    # what the adapter is -------------------------------------------------
    def wait(self) -> AdapterInfo:
        """The adapter's info, once it is loaded; raises ``AdapterSpecError`` for a bad spec."""
        raise NotImplementedError

    @property
    def info(self) -> AdapterInfo:
        return self.wait()

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def spec(self) -> str:
        return self.info.spec

    @property
    def provides(self) -> dict[str, tuple[str, ...]]:
        return self.info.provides

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self.info.dtypes

    @property
    def version(self) -> str | None:
        return self.info.version

    @property
    def unavailable(self) -> str | None:
        return self.info.unavailable

    @property
    def dialect(self) -> str:
        return self.info.dialect

    # calling -------------------------------------------------------------
    def call(
        self, function: str, *arrays: np.ndarray, timeout: float | None = None, **options: Any
    ) -> CallOutcome:
        """Call ``function(*arrays, **options)`` and check what comes back.

        ``options`` are the CE options (``weight``, ``ignore_index``, ``label_smoothing``,
        ``reduction``); those the function does not accept are dropped when at their
        default and make the call ``not-provided`` otherwise. ``timeout`` (seconds)
        overrides the handle's. Never raises for anything the adapter does.
        """
        if function not in FUNCTIONS:
            raise ValueError(f"unknown adapter function {function!r}; known: {FUNCTIONS}")
        start = time.perf_counter()
        try:
            info = self.wait()
        except AdapterSpecError as exc:
            return CallOutcome(function, None, (Fault("unavailable", one_line(str(exc))),))
        if info.unavailable is not None:
            return CallOutcome(function, None, (Fault("unavailable", info.unavailable),))
        if function not in info.provides:
            fault = Fault("not-provided", f"{info.name} does not provide {function}")
            return CallOutcome(function, None, (fault,))
        kwargs, fault = call_options(function, info.provides[function], options)
        if fault is not None:
            return CallOutcome(function, None, (fault,))
        inputs = [np.asarray(a) for a in arrays]
        if not inputs or inputs[0].ndim != 2:
            raise ValueError(f"{function} takes an (N, K) array first")
        value, faults, seconds = self._call(
            function, inputs, kwargs, self.timeout if timeout is None else timeout
        )
        if seconds is None:
            seconds = time.perf_counter() - start
        self.calls += 1
        self.call_seconds += seconds
        return CallOutcome(function, value, faults, seconds)

    def _call(
        self,
        function: str,
        arrays: Sequence[np.ndarray],
        kwargs: Mapping[str, Any],
        timeout: float | None,
    ) -> tuple[np.ndarray | None, tuple[Fault, ...], float | None]:
        raise NotImplementedError

    #: function -> [calls not run, the reason] (see :class:`WorkerHandle`'s quarantine)
    not_run: dict[str, list[Any]] = {}

    def close(self) -> None:
        """Release the worker, if any. Calling again is harmless."""

    def kill(self) -> None:
        """Stop at once (an interrupted run); for a worker, no grace period."""
        self.close()

    def __enter__(self) -> AdapterHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "worker" if self.isolated else "in-process"
        return f"<{type(self).__name__} {kind}>"


class InProcessHandle(AdapterHandle):
    """An adapter object called in this process: checked, but neither crash- nor hang-proof."""

    isolated = False

    def __init__(
        self,
        adapter: Any,
        info: AdapterInfo,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        start_timeout: float | None = None,
    ) -> None:
        super().__init__(timeout=timeout)
        self.adapter = adapter
        self._info = info

    def wait(self) -> AdapterInfo:
        return self._info

    def _call(
        self,
        function: str,
        arrays: Sequence[np.ndarray],
        kwargs: Mapping[str, Any],
        timeout: float | None,
    ) -> tuple[np.ndarray | None, tuple[Fault, ...], float | None]:
        start = time.perf_counter()
        value, faults = invoke(self.adapter, function, arrays, kwargs)
        return value, faults, time.perf_counter() - start


_WORKER_CODE = ("from xentcheck.harness.adapters.worker import worker_main; "
                "worker_main({}, {}, {}, {}, {})")

#: Set in a worker's environment where the grading process's leaves them unset.
WORKER_DEFAULTS: dict[str, str] = {
    # An OpenMP runtime (torch's libgomp, an OpenMP BLAS) keeps its threads spinning
    # for a while after each parallel region by default. Between a candidate's calls
    # the grading process has the CPU's work to do: spinning threads took it (a torch
    # worker spent about a third of its CPU time so on an LLM batch's blocks, and
    # `--jobs 2` runs two graders beside two workers). Passive waiting changes when an
    # idle thread sleeps, never what a kernel computes.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def worker_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a worker starts with: ``base`` (default: this process's), with
    :data:`WORKER_DEFAULTS` added where ``base`` does not set them (a user's own choice,
    e.g. ``OMP_WAIT_POLICY=ACTIVE``, is kept)."""
    env = dict(os.environ if base is None else base)
    for name, value in WORKER_DEFAULTS.items():
        env.setdefault(name, value)
    return env


_PIPE_SIZE = 1 << 20  # fewer wake-ups per large array than the default 64 KiB


def _widen_pipe(fd: int) -> None:
    """Ask Linux for a larger pipe buffer (unprivileged limit: 1 MiB); harmless elsewhere."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        try:
            fcntl.fcntl(fd, set_size, _PIPE_SIZE)
        except OSError:
            pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Worker:
    """One worker process (the leader of its own session and process group) and its two
    pipes. Everything it and its descendants in that group do ends with it: the group is
    killed when the worker is killed, restarted or closed, on every path."""

    def __init__(self, load_message: Mapping[str, Any]) -> None:
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        for fd in (parent_read, parent_write):
            _widen_pipe(fd)
        # the lifeline: nothing is ever written to it; its write end closes only when
        # this process kills the worker or ends, however it ends (SIGKILL included), and
        # the worker then kills its own process group (see worker._watch_lifeline)
        life_read, life_write = os.pipe()
        # the large buffers' way, one region each way (None: the pipes carry them)
        calls, replies = SharedRegion.create(), SharedRegion.create()
        self.calls = calls[0] if calls else None
        self.replies = replies[0] if replies else None
        region_fds = [made[1] for made in (calls, replies) if made]
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE.format(
                    child_read, child_write, calls[1] if calls else -1,
                    replies[1] if replies else -1, life_read)],
                pass_fds=(child_read, child_write, life_read, *region_fds),
                env=worker_environment(),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            for fd in (parent_read, parent_write, life_write):
                os.close(fd)
            raise
        finally:
            for fd in (child_read, child_write, life_read, *region_fds):
                os.close(fd)
        self.read_fd = parent_read  # raw: replies are read against a deadline
        self.write_fd = parent_write  # non-blocking: calls are written against one too
        os.set_blocking(parent_write, False)
        # the pipes still open, each closed once: a number closed twice may by then be
        # another worker's pipe (workers close in the background while the next starts)
        self._open_fds = {parent_read, parent_write, life_write}
        self.kept = KeptInputs()  # what this process keeps of the inputs sent to it
        self._finalizer = weakref.finalize(self, _kill, self.process, self._open_fds)
        try:
            self.send(dict(load_message), timeout=DEFAULT_START_TIMEOUT)
        except (OSError, TimeoutError):  # it died at start-up; reading its hello says how
            pass

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, obj: Any, timeout: float | None) -> None:
        """Write one call, all of it within ``timeout`` (a worker that stops reading times
        out like one that stops answering): ``TimeoutError``, or ``OSError`` if it died."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for part in _message_parts(obj, self.calls):
            _write_before(self.write_fd, part, deadline)

    def receive(self, timeout: float | None) -> Any:
        """The next reply, whole within ``timeout``: ``TimeoutError`` if it does not come
        (or stops halfway), ``EOFError`` if the worker died (also when a process it
        started still holds the pipe open), :class:`ProtocolError` if it is not plain
        data."""
        return receive_plain(self.read_fd, timeout, alive=self.alive, region=self.replies)

    def death(self) -> Fault:
        """Collect a dead (or dying) worker, its process group too, and say how it ended."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return Fault("exited", "worker closed its pipe and did not exit; killed")
        self.kill()  # what it started goes with it
        if code < 0:
            return Fault("crashed", f"worker killed by {_signal_name(-code)}")
        return Fault("exited", f"worker exited with code {code}")

    def kill(self) -> None:
        """Kill the worker's process group (the worker and what it started) and reap it."""
        self._finalizer()

    def close(self, grace: float = 2.0) -> None:
        """Let the worker exit on end-of-file (``grace`` seconds at most), then kill its
        process group: nothing it started outlives it."""
        if self.process.poll() is None:
            try:
                self._open_fds.discard(self.write_fd)
                os.close(self.write_fd)
                self.process.wait(timeout=grace)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._finalizer()


def _message_parts(obj: Any, region: SharedRegion | None = None
                   ) -> list[memoryview | bytes]:
    """:func:`send_message`'s bytes as parts: sizes, the buffers' offsets in ``region``
    (:data:`IN_PIPE` for those not there), the pickle, each buffer not in the region."""
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    offsets = region.place(raws) if region is not None else [IN_PIPE] * len(raws)
    piped = [r for r, at in zip(raws, offsets, strict=True) if at == IN_PIPE]
    parts = [memoryview(header), *piped]
    sizes = struct.pack(f"<I{2 * len(raws) + 1}Q", len(raws) + 1, len(header),
                        *(r.nbytes for r in raws), *offsets)
    if sum(p.nbytes for p in parts) < _SMALL_MESSAGE:
        return [b"".join([sizes, *parts])]
    return [sizes, *parts]


def _write_before(fd: int, data: Any, deadline: float | None) -> None:
    """Write all of ``data`` to the non-blocking ``fd`` before ``deadline``."""
    view = memoryview(data).cast("B")
    while view.nbytes:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError from None
            select.select([], [fd], [], left)
            continue
        view = view[written:]


def _kill(process: subprocess.Popen, open_fds: set[int]) -> None:
    # The group first, whether or not the worker is still there: a process it started
    # keeps the group (and its number) alive, and must not outlive the run.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.kill()
    process.wait()
    while open_fds:
        try:
            os.close(open_fds.pop())
        except OSError:
            pass


#: Consecutive failures (a timeout, a crash, an exit) of one function after which a
#: handle stops calling it: its remaining calls are ``not-run``, with the reason.
QUARANTINE_AFTER = 2
#: Timeouts in all after which a handle stops calling its adapter at all: a hanging
#: adapter costs at most this many timeouts.
MAX_TIMEOUTS = 3


class WorkerHandle(AdapterHandle):
    """An adapter in a persistent worker process, restarted after it dies or hangs, and
    quarantined when it keeps doing so.

    Quarantine: after :data:`QUARANTINE_AFTER` consecutive timeouts or deaths of one
    function, that function is not called again; after :data:`MAX_TIMEOUTS` timeouts or
    ``max_restarts`` deaths in all, the adapter is not called again. Such calls come
    back at once as ``not-run`` with the reason, and :attr:`not_run` counts them per
    function, for the reports."""

    isolated = True

    def __init__(
        self,
        *,
        spec: str | None = None,
        adapter_object: Any = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        start_timeout: float | None = DEFAULT_START_TIMEOUT,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
    ) -> None:
        super().__init__(timeout=timeout)
        if (spec is None) == (adapter_object is None):
            raise ValueError("give exactly one of spec and adapter_object")
        self.start_timeout = start_timeout
        self.max_restarts = max_restarts
        self.deaths = 0
        self.timeouts = 0
        #: function -> [calls not run, the reason]
        self.not_run: dict[str, list[Any]] = {}
        self._streaks: dict[str, int] = {}
        self._quarantined: dict[str, str] = {}
        self._given_up: str | None = None
        self._load = _load_message(spec, adapter_object)
        self._info: AdapterInfo | None = None
        self._spec_error: str | None = None
        self._worker: _Worker | None = None
        self._hello_pending = False
        self._last_death: Fault | None = None
        self._lock = threading.RLock()
        self._closed = False
        self._start_failure = self._start()

    # starting --------------------------------------------------------------
    def _start(self) -> Fault | None:
        try:
            self._worker = _Worker(self._load)
        except OSError as exc:  # no process could be started at all
            self._worker = None
            return Fault("unavailable", one_line(f"cannot start a worker process: {exc}"))
        self._hello_pending = True
        return None

    def _await_hello(self) -> Fault | None:
        """Read the worker's answer to loading; a fault if it died or never answered."""
        worker = self._worker
        assert worker is not None
        self._hello_pending = False
        try:
            hello = worker.receive(self.start_timeout)
            ok, info = _hello(hello)
        except TimeoutError:
            worker.kill()
            self._worker = None
            self.deaths += 1
            self._last_death = Fault("timeout", "did not load in time")
            return Fault("timeout", f"worker did not load the adapter in {self.start_timeout:g} s")
        except (EOFError, OSError):
            fault = self._worker_died()
            return Fault(fault.kind, f"while loading the adapter: {fault.reason}")
        except ProtocolError as exc:
            worker.kill()
            self._worker = None
            self.deaths += 1
            return Fault("unavailable", one_line(f"the worker's answer to loading is not "
                                                 f"plain data: {exc}"))
        if ok:
            if self._info is None:
                self._info = info
            return None
        worker.close()
        self._worker = None
        if hello["kind"] == "spec":
            self._spec_error = hello["message"]
        return Fault("unavailable", hello["message"])

    def wait(self) -> AdapterInfo:
        with self._lock:
            if self._spec_error is not None:
                raise AdapterSpecError(self._spec_error)
            if self._info is None and (self._hello_pending or self._start_failure):
                fault = self._start_failure or self._await_hello()
                if self._spec_error is not None:
                    raise AdapterSpecError(self._spec_error)
                if fault is not None and self._info is None:
                    self._info = AdapterInfo(
                        name=self._load.get("spec") or "<object>",
                        spec=self._load.get("spec") or "<object>",
                        provides={},
                        dtypes=(),
                        unavailable=fault.reason if fault.kind == "unavailable" else str(fault),
                        source="spec",
                    )
            if self._info is None:  # closed before it ever loaded
                raise AdapterSpecError("adapter handle was closed before the adapter loaded")
            return self._info

    def _worker_died(self) -> Fault:
        worker = self._worker
        assert worker is not None
        fault = worker.death()
        self._worker = None
        self.deaths += 1
        self._last_death = fault
        return fault

    def _ensure_worker(self) -> Fault | None:
        if self._closed:
            return Fault("unavailable", "adapter handle is closed")
        if self._worker is not None and not self._hello_pending:
            return None
        if self._worker is None:
            failure = self._start()
            if failure is not None:
                return failure
        return self._await_hello()

    # quarantine ------------------------------------------------------------
    def _blocked(self, function: str) -> str | None:
        """Why ``function`` is not called any more (None: it is)."""
        return self._given_up or self._quarantined.get(function)

    def _failed(self, function: str, fault: Fault) -> None:
        """Count a timeout or death of ``function``; quarantine what keeps failing."""
        streak = self._streaks[function] = self._streaks.get(function, 0) + 1
        if streak >= QUARANTINE_AFTER and function not in self._quarantined:
            self._quarantined[function] = one_line(
                f"not called after {streak} failures in a row (last: {fault})")
        if self.timeouts >= MAX_TIMEOUTS:
            self._given_up = f"not called after {self.timeouts} timeouts (last: {fault})"
        elif self.deaths >= self.max_restarts:
            last = f" (last: {self._last_death})" if self._last_death else ""
            self._given_up = one_line(f"gave up after {self.deaths} worker deaths{last}")

    # calling ---------------------------------------------------------------
    def _call(
        self,
        function: str,
        arrays: Sequence[np.ndarray],
        kwargs: Mapping[str, Any],
        timeout: float | None,
    ) -> tuple[np.ndarray | None, tuple[Fault, ...], float | None]:
        with self._lock:
            blocked = self._blocked(function)
            if blocked is not None:
                counted = self.not_run.setdefault(function, [0, blocked])
                counted[0] += 1
                return None, (Fault("not-run", blocked),), None
            fault = self._ensure_worker()
            if fault is not None:
                if fault.kind != "unavailable":  # it died or hung while restarting
                    self._failed(function, fault)
                return None, (fault,), None
            worker = self._worker
            assert worker is not None
            start = time.perf_counter()
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                kept = worker.kept
                message = ("call", function, [kept.wrap(a) for a in arrays],
                           {k: kept.wrap(v) for k, v in kwargs.items()})
                worker.send((*message, kept.forget()), timeout)
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                value, faults = _reply(worker.receive(left))
            except TimeoutError:
                worker.kill()
                self._worker = None
                self.deaths += 1
                self.timeouts += 1
                self._last_death = Fault("timeout", f"no answer within {timeout:g} s")
                fault = Fault("timeout", f"no answer within {timeout:g} s; worker killed")
                self._failed(function, fault)
                return None, (fault,), None
            except (EOFError, OSError):  # died mid-call (BrokenPipeError is an OSError)
                fault = self._worker_died()
                self._failed(function, fault)
                return None, (fault,), None
            except ProtocolError as exc:  # not plain data: the stream cannot be trusted
                worker.kill()
                self._worker = None
                self.deaths += 1
                fault = Fault("wrong-type", one_line(f"the worker's reply is not plain data "
                                                     f"({exc}); worker killed"))
                self._last_death = fault
                self._failed(function, fault)
                return None, (fault,), None
            self._streaks[function] = 0
            return value, faults, time.perf_counter() - start

    def kill(self) -> None:
        """Stop at once: kill the worker's process group, no grace (an interrupted run)."""
        with self._lock:
            self._closed = True
            if self._worker is not None:
                self._worker.kill()
                self._worker = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._worker is not None:
                self._worker.close()
                self._worker = None

    def __repr__(self) -> str:
        what = self._load.get("spec") or "<object>"
        state = "running" if self._worker is not None else "stopped"
        return f"<WorkerHandle {what} {state}, {self.deaths} deaths>"


def _text(value: Any, what: str, none: bool = False) -> Any:
    if value is None and none:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{what} is not a string")
    return value


def _hello(message: Any) -> tuple[bool, AdapterInfo | None]:
    """(ok, the adapter's info) from a worker's answer to loading, checked field by field."""
    if not isinstance(message, dict) or not isinstance(message.get("ok"), bool):
        raise ProtocolError("the answer to loading is not {ok: ...}")
    if not message["ok"]:
        _text(message.get("kind"), "kind")
        message["message"] = one_line(_text(message.get("message"), "message"))
        return False, None
    info = message.get("info")
    if not isinstance(info, dict):
        raise ProtocolError("no adapter info")
    provides = info.get("provides")
    if not isinstance(provides, dict) or not all(
            f in FUNCTIONS and isinstance(o, list) and all(x in OPTIONS for x in o)
            for f, o in provides.items()):
        raise ProtocolError("'provides' is not a map of contract functions to options")
    dtypes = info.get("dtypes")
    if not isinstance(dtypes, list) or not all(d in DTYPES for d in dtypes):
        raise ProtocolError("'dtypes' is not a list of case dtypes")
    return True, AdapterInfo(
        name=_text(info.get("name"), "name"), spec=_text(info.get("spec"), "spec"),
        provides={f: tuple(o) for f, o in provides.items()}, dtypes=tuple(dtypes),
        version=_text(info.get("version"), "version", none=True),
        unavailable=_text(info.get("unavailable"), "unavailable", none=True),
        source=_text(info.get("source"), "source"),
        dialect=_dialect_name(info.get("dialect")))


def _dialect_name(value: Any) -> str:
    if value not in dialects.DIALECTS:
        raise ProtocolError("'dialect' is not a known dialect")
    return str(value)


def _reply(message: Any) -> tuple[np.ndarray | None, tuple[Fault, ...]]:
    """The value and faults of a worker's reply to a call, checked field by field."""
    if not isinstance(message, dict) or not isinstance(message.get("faults"), list):
        raise ProtocolError("the reply is not {value, faults}")
    value = message.get("value")
    if value is not None and not isinstance(value, np.ndarray):
        raise ProtocolError("the reply's value is not an array")
    faults = []
    for item in message["faults"]:
        if not isinstance(item, dict) or item.get("kind") not in FAULT_KINDS:
            raise ProtocolError("a fault of no known kind")
        faults.append(Fault(item["kind"], one_line(_text(item.get("reason"), "reason")),
                            _text(item.get("detail", ""), "detail")))
    return value, tuple(faults)


# The worker's hello and replies, as plain data (sent by xentcheck.harness.adapters.worker).


def _fault_plain(fault: Fault) -> dict[str, str]:
    return {"kind": fault.kind, "reason": fault.reason, "detail": fault.detail}


def _info_plain(info: AdapterInfo) -> dict[str, Any]:
    return {"name": info.name, "spec": info.spec,
            "provides": {f: list(o) for f, o in info.provides.items()},
            "dtypes": list(info.dtypes), "version": info.version,
            "unavailable": info.unavailable, "source": info.source, "dialect": info.dialect}


def _load_message(spec: str | None, adapter_object: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"sys_path": list(sys.path)}
    if spec is not None:
        message["spec"] = spec
        return message
    if isinstance(adapter_object, types.ModuleType):
        path = getattr(adapter_object, "__file__", None)
        name = adapter_object.__name__
        if name != "__main__" and not name.startswith("_xentcheck_adapter_"):
            message["spec"] = name
        elif path:
            message["spec"] = path
        else:
            raise AdapterSpecError(f"module {name} has no importable name or file for a worker")
        return message
    try:
        message["pickled"] = pickle.dumps(adapter_object, protocol=5)
    except Exception as exc:
        raise AdapterSpecError(
            one_line(
                f"cannot send {type(adapter_object).__name__} to a worker ({type(exc).__name__}: "
                f"{exc}); pass a spec, or isolated=False to run it in-process"
            )
        ) from exc
    return message

