"""Framework built-ins called in a worker process, for the adapter tests.

TensorFlow, PaddlePaddle, PyTorch, JAX and ONNX Runtime each load native libraries that
can crash a process holding another (PaddlePaddle's import segfaults after TensorFlow's),
so a test of a framework's adapter never imports the framework into the pytest process:
:func:`require` skips the module when the package is absent (``find_spec``, no import),
and the fixture ``framework`` (:func:`framework_fixture`, imported by the test module,
which makes it a fixture there) gives the built-in running in a worker of its own, as a run uses it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from xentcheck.harness.adapters.contract import FUNCTIONS, Fault
from xentcheck.harness.adapters.registry import open_adapter
from xentcheck.references.rounding import ulp_error


class WorkerFault(Exception):
    """A call that came back with a fault; ``kind`` is one of FAULT_KINDS ("raised" for
    an exception, its type and message in the text; "not-provided" for
    NotImplementedError)."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(str(fault))
        self.kind = fault.kind


class WorkerAdapter:
    """A built-in in its worker: ``name``, ``version``, ``dtypes``, ``dialect`` and
    ``provides`` (function -> accepted options) from the worker; each contract function
    is called there and returns its value, or raises :class:`WorkerFault`."""

    def __init__(self, handle: Any) -> None:
        info = handle.wait()
        if info.unavailable is not None:
            pytest.skip(f"{info.name}: {info.unavailable}")
        self._handle = handle
        self.name, self.version, self.dtypes = info.name, info.version, info.dtypes
        self.dialect, self.provides = info.dialect, info.provides

    def __getattr__(self, function: str) -> Callable[..., np.ndarray]:
        if function not in FUNCTIONS:
            raise AttributeError(function)

        def call(*arrays: np.ndarray, **options: Any) -> np.ndarray:
            outcome = self._handle.call(function, *arrays, **options)
            if outcome.faults:
                raise WorkerFault(outcome.faults[0])
            return outcome.value

        return call


def require(*packages: str) -> None:
    """Skip the calling test module unless every package is installed (not importing it)."""
    for package in packages:
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed", allow_module_level=True)


def assert_ulps(got: Any, exact: Any, bound: float, what: str, dtype: np.dtype) -> None:
    """``got`` has ``dtype`` and ``exact``'s shape and is within ``bound`` ulps of it."""
    __tracebackhide__ = True
    got = np.asarray(got)
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, should be {dtype}"
    assert got.shape == np.shape(exact), f"{what}: shape {got.shape}, should be {np.shape(exact)}"
    err = ulp_error(got, exact)
    worst = float(np.nanmax(err)) if err.size else 0.0
    assert worst <= bound, (
        f"{what} [{dtype}]: {worst:.3g} ulp > {bound} (got {got.ravel().tolist()}, "
        f"should be {[float(v) for v in np.asarray(exact, dtype=object).ravel()]})"
    )


@pytest.fixture(scope="module", name="framework")
def framework_fixture() -> Iterator[Callable[[str], WorkerAdapter]]:
    """``framework("paddle")``: the built-in of that name in a worker, closed at the end of
    the module."""
    handles: list[Any] = []

    def open_builtin(name: str) -> WorkerAdapter:
        handle = open_adapter(name, isolated=True, timeout=300)
        handles.append(handle)
        return WorkerAdapter(handle)

    yield open_builtin
    for handle in handles:
        handle.close()
