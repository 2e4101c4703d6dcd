"""The case dtypes as formats, and the argument checks every strategy and sample shares.

:class:`InvalidArgument` is what a strategy or sample raises, at once, for an impossible
request; :func:`_format` turns a dtype (name, NumPy dtype or scalar type) into the
numbers of its floating-point format; :func:`overflow_edge` is log of its largest value.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import hypothesis.errors
import numpy as np

from xentcheck.harness.adapters.contract import DTYPES, dtype_name
from xentcheck.references import portable
from xentcheck.references.rounding import float_format


class InvalidArgument(hypothesis.errors.InvalidArgument, ValueError):
    """A strategy or sample was asked for something impossible; raised at once, by the call."""


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgument(f"{name} must be an int; got {value!r}")
    if value < minimum:
        raise InvalidArgument(f"{name} must be >= {minimum}; got {value}")


class _Format(NamedTuple):
    name: str
    dtype: np.dtype
    precision: int  # significand bits, the implicit one included
    max: float
    log_max: float  # log(max): exp overflows above it
    uint: type


def _format(dtype: Any) -> _Format:
    try:
        name = dtype_name(dtype)
    except TypeError:
        name = None
    if name not in DTYPES:
        raise InvalidArgument(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    f = float_format(name)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[f.dtype.itemsize]
    return _Format(name, f.dtype, f.precision, f.max, portable.constant_log(f.max), uint)


def overflow_edge(dtype: Any) -> float:
    """log of the largest finite value of ``dtype``: exp(z) overflows for z above it.

    709.78 (float64), 88.72 (float32 and bfloat16), 11.09 (float16).
    """
    return _format(dtype).log_max


def _step(values: np.ndarray, steps: np.ndarray | int, fmt: _Format) -> np.ndarray:
    """Move non-negative finite ``values`` of the dtype by ``steps`` representable numbers."""
    bits = np.asarray(values, dtype=fmt.dtype).view(fmt.uint).astype(np.int64)
    return (bits + steps).astype(fmt.uint).view(fmt.dtype)
