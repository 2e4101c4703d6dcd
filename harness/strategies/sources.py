"""The two sources of randomness every regime is written against.

:class:`_StreamSource` turns the raw 64-bit outputs of a ``PCG64`` stream (stable across
NumPy versions) into numbers with exact operations only, for the fixed-seed samples;
:class:`_DrawSource` gives the same kinds of numbers from Hypothesis draws, for the
strategies (shrinkable). The helpers below them build common shapes of logits from either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np

from xentcheck.references import portable


class _StreamSource:
    """Numbers from the raw outputs of a PCG64 stream (stable across NumPy versions)."""

    def __init__(self, entropy: Sequence[int]) -> None:
        self._bits = np.random.PCG64(np.random.SeedSequence(list(entropy)))

    def _raw(self, shape: Any) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        raw = self._bits.random_raw(n) if n else np.zeros(0, dtype=np.uint64)
        return np.asarray(raw, dtype=np.uint64).reshape(shape)

    def _unit(self, shape: Any) -> np.ndarray:
        # the top 53 bits as a multiple of 2**-53 in [0, 1)
        return (self._raw(shape) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def integer(self, lo: int, hi: int) -> int:
        return int(self.integers(lo, hi, ())[()])

    def integers(self, lo: int, hi: int, shape: Any) -> np.ndarray:
        span = hi - lo + 1  # the modulo bias is below span / 2**64: negligible here
        return (self._raw(shape) % np.uint64(span)).astype(np.int64) + lo

    def real(self, lo: float, hi: float) -> float:
        return float(self.floats(lo, hi, ())[()])

    def floats(self, lo: float, hi: float, shape: Any) -> np.ndarray:
        u = self._unit(shape)
        return np.clip(lo * (1.0 - u) + hi * u, lo, hi)  # no hi - lo: it may overflow

    def distinct(self, n: int, count: int) -> np.ndarray:
        return np.argsort(self._raw(n), kind="stable")[:count].astype(np.int64)

    def noise(self, shape: Any) -> np.ndarray:
        # approximately standard normal deviates, in exact integer arithmetic
        return _irwin_hall(self._raw((*_as_shape(shape), 6)))


def _as_shape(shape: Any) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)


@functools.lru_cache(maxsize=4096)
def _integer_strategy(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


@functools.lru_cache(maxsize=4096)
def _array_strategy(kind: str, lo: Any, hi: Any, shape: tuple[int, ...]) -> st.SearchStrategy[Any]:
    # strategies are immutable: built once per (bounds, shape), since building one per draw
    # costs more than the draw itself
    if kind == "int":
        return hnp.arrays(np.int64, shape, elements=st.integers(lo, hi))
    if kind == "float":
        elements = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        return hnp.arrays(np.float64, shape, elements=elements)
    if kind == "real":
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return st.lists(st.integers(0, lo - 1), min_size=hi, max_size=hi, unique=True)


class _DrawSource:
    """The same numbers from Hypothesis draws. Large arrays come from a drawn PCG64 seed."""

    _ELEMENTWISE = 256  # arrays up to this size are drawn element by element (shrinkable)

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self._draw = draw

    def _stream(self) -> _StreamSource:
        return _StreamSource([self._draw(_integer_strategy(0, 2**64 - 1))])

    def integer(self, lo: int, hi: int) -> int:
        return self._draw(_integer_strategy(lo, hi))

    def integers(self, lo: int, hi: int, shape: Any) -> np.ndarray:
        shape = _as_shape(shape)
        if int(np.prod(shape, dtype=np.int64)) > self._ELEMENTWISE:
            return self._stream().integers(lo, hi, shape)
        return self._draw(_array_strategy("int", lo, hi, shape))

    def real(self, lo: float, hi: float) -> float:
        return self._draw(_array_strategy("real", lo, hi, ()))

    def floats(self, lo: float, hi: float, shape: Any) -> np.ndarray:
        shape = _as_shape(shape)
        if int(np.prod(shape, dtype=np.int64)) > self._ELEMENTWISE:
            return self._stream().floats(lo, hi, shape)
        return self._draw(_array_strategy("float", lo, hi, shape))

    def distinct(self, n: int, count: int) -> np.ndarray:
        return np.array(self._draw(_array_strategy("distinct", n, count, ())), dtype=np.int64)

    def noise(self, shape: Any) -> np.ndarray:
        return self._stream().noise(shape)


_Source = _StreamSource | _DrawSource


def _irwin_hall(raw: np.ndarray) -> np.ndarray:
    """Approximately standard normal deviates from raw 64-bit draws of shape ``(*S, 6)``:
    (the sum of twelve uniform 32-bit integers) / 2**32 - 6, the Irwin-Hall distribution
    (mean 0, variance 1, |x| < 6), from the two halves of six draws. The sum is an exact
    integer below 2**36, so the deviate is exact too: the same on every machine."""
    raw = np.asarray(raw, dtype=np.uint64)
    halves = (raw >> np.uint64(32)) + (raw & np.uint64(0xFFFFFFFF))
    total = halves.sum(axis=-1, dtype=np.uint64).astype(np.int64) - 6 * (1 << 32)
    return np.ldexp(total.astype(np.float64), -32)


def _log_uniform(src: _Source, lo: float, hi: float, shape: Any) -> np.ndarray:
    # 2**t with t uniform in [log2 lo, log2 hi], clipped to [lo, hi] (the last ulps of 2**t)
    a, b = portable.constant_log2(lo), portable.constant_log2(hi)
    u = src.floats(0.0, 1.0, shape)
    return np.clip(portable.exp2(a * (1.0 - u) + b * u), lo, hi)


def _signs(src: _Source, shape: Any) -> np.ndarray:
    return np.where(src.integers(0, 1, shape) == 1, -1.0, 1.0)


def _centred_rows(src: _Source, bound: float, n: int, k: int) -> np.ndarray:
    # per row an offset c and a spread s with |c| + s <= bound
    c = src.floats(-bound / 2, bound / 2, (n, 1))
    s = src.floats(0.0, bound / 2, (n, 1))
    return c + s * src.floats(-1.0, 1.0, (n, k))
