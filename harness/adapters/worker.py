"""The worker process's side of :class:`~xentcheck.harness.adapters.isolation.WorkerHandle`.

:func:`worker_main` is what a worker runs (``python -c``): it loads the adapter named by
the first message with :mod:`xentcheck.harness.adapters.registry`, then answers calls
over the protocol of :mod:`xentcheck.harness.adapters.isolation`. It lives apart from
that module so that the imports go one way: ``registry`` opens handles from
``isolation``, and only this module, never imported by either, loads adapters in a
worker.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import warnings
from typing import Any, BinaryIO

from xentcheck.harness.adapters.contract import (
    AdapterSpecError,
    AdapterUnavailable,
    Fault,
    invoke,
    one_line,
)
from xentcheck.harness.adapters.isolation import (
    PLAIN_DTYPES,
    SharedRegion,
    _fault_plain,
    _info_plain,
    keep_inputs,
    receive_message,
    send_plain,
)
from xentcheck.harness.allocator import keep_freed_memory


def worker_main(read_fd: int, write_fd: int, calls_fd: int = -1, replies_fd: int = -1,
                lifeline_fd: int = -1) -> None:
    """The worker's loop: load the adapter named by the first message, then answer calls
    (their large buffers in the shared region ``calls_fd``, the replies' in
    ``replies_fd``; -1: through the pipes). When ``lifeline_fd`` (-1: none) reaches its
    end, the grading process is gone and the worker kills its process group."""
    if lifeline_fd >= 0:
        _watch_lifeline(lifeline_fd)
    os.dup2(2, 1)  # the adapter's prints go to stderr; the protocol has its own pipes
    keep_freed_memory()  # as the grading process does: no result depends on it
    # Overflow and invalid-value warnings are what extreme inputs are for: the grading
    # reports the outcome, so the candidate's own warnings would only be noise.
    warnings.simplefilter("ignore")
    reader = os.fdopen(read_fd, "rb")
    writer = os.fdopen(write_fd, "wb", buffering=0)
    calls, replies = (_region(fd) for fd in (calls_fd, replies_fd))
    try:
        load = receive_message(reader, calls)
    except EOFError:
        return
    sys.path[:] = load["sys_path"]
    adapter = None
    try:
        from xentcheck.harness.adapters import registry

        if "spec" in load:
            adapter, source = registry.load_adapter(load["spec"])
            info = registry.describe(adapter, spec=load["spec"], source=source)
        else:
            adapter = registry._materialize(pickle.loads(load["pickled"]), "<object>")
            info = registry.describe(adapter, spec=registry._object_spec(adapter), source="object")
        hello: dict[str, Any] = {"ok": True, "info": _info_plain(info)}
    except AdapterSpecError as exc:
        hello = {"ok": False, "kind": "spec", "message": one_line(str(exc))}
    except AdapterUnavailable as exc:
        hello = {"ok": False, "kind": "unavailable", "message": one_line(str(exc))}
    except (Exception, SystemExit) as exc:
        message = one_line(f"failed to load: {type(exc).__name__}: {exc}")
        hello = {"ok": False, "kind": "unavailable", "message": message}
    try:
        _serve(adapter, hello, reader, writer, calls, replies)
    except (BrokenPipeError, ConnectionError):
        pass  # the grading process went away: nobody is left to answer


def _watch_lifeline(fd: int) -> None:
    """Kill this worker's process group once ``fd`` reads end-of-file: its write end
    closes when the grading process ends, however it ends, and a worker busy in a call
    (or one that a call of the adapter's left hanging) would not see the call pipe's end.
    Only a worker that leads its own group kills the group; any other exits alone."""
    def watch() -> None:
        try:
            while os.read(fd, 1):  # nothing is written: only the end comes
                pass
        except OSError:
            pass
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="xentcheck-lifeline", daemon=True).start()


def _region(fd: int) -> SharedRegion | None:
    if fd < 0:
        return None
    try:
        return SharedRegion(fd)
    finally:
        os.close(fd)  # the mapping stays


def _serve(adapter: Any, hello: dict[str, Any], reader: BinaryIO, writer: BinaryIO,
           calls: SharedRegion | None = None, replies: SharedRegion | None = None) -> None:
    send_plain(writer, hello, replies)
    if not hello["ok"]:
        return
    kept: dict[int, Any] = {}  # the inputs the grading process may name again
    while True:
        try:
            message = receive_message(reader, calls)
        except EOFError:
            return
        _, function, arrays, kwargs, forget = message
        arrays, kwargs = keep_inputs(kept, arrays), keep_inputs(kept, kwargs)
        for slot in forget:
            kept.pop(slot, None)
        value, faults = invoke(adapter, function, arrays, kwargs)
        plain = [_fault_plain(f) for f in faults]
        if value is not None and value.dtype.name not in PLAIN_DTYPES:
            if not any(f.kind == "wrong-dtype" for f in faults):
                plain.append(_fault_plain(Fault(
                    "wrong-dtype", f"returned dtype {value.dtype.name}, not a float dtype")))
            value = None  # not sent: only numeric arrays of known dtypes cross back
        send_plain(writer, {"value": value, "faults": plain}, replies)
