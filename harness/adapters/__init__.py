"""Adapters: the contract (DESIGN.md §3), loading from specs, isolation, the built-ins.

>>> from xentcheck.harness.adapters import open_adapter
>>> import numpy as np
>>> with open_adapter("numpy") as numpy_adapter:
...     outcome = numpy_adapter.call("softmax", np.array([[0.0, 0.0]]))
>>> outcome.value, outcome.fault
(array([[0.5, 0.5]]), None)

Heavy frameworks are imported only inside their own adapter modules.
"""

from __future__ import annotations

from xentcheck.harness.adapters.contract import (
    DTYPES,
    FAULT_KINDS,
    FUNCTIONS,
    OPTIONS,
    Adapter,
    AdapterInfo,
    AdapterSpecError,
    AdapterUnavailable,
    CallOutcome,
    Fault,
)
from xentcheck.harness.adapters.isolation import AdapterHandle, InProcessHandle, WorkerHandle
from xentcheck.harness.adapters.registry import (
    BUILTINS,
    ENTRY_POINT_GROUP,
    describe,
    format_adapter_list,
    list_adapters,
    load_adapter,
    open_adapter,
)

__all__ = [
    "BUILTINS",
    "DTYPES",
    "ENTRY_POINT_GROUP",
    "FAULT_KINDS",
    "FUNCTIONS",
    "OPTIONS",
    "Adapter",
    "AdapterHandle",
    "AdapterInfo",
    "AdapterSpecError",
    "AdapterUnavailable",
    "CallOutcome",
    "Fault",
    "InProcessHandle",
    "WorkerHandle",
    "describe",
    "format_adapter_list",
    "list_adapters",
    "load_adapter",
    "open_adapter",
]
