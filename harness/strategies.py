"""Hypothesis strategies and fixed-seed samples of the named input regimes (DESIGN.md §5).

Strategies, for property tests with shrinking and ``target()``: :func:`dtypes`,
:func:`logits`, :func:`targets`, :func:`options` and :func:`cases`. Fixed-seed samples, so
that every adapter gets the same inputs and tables compare like with like: :func:`sample`
for a regime, :func:`load_corpus` for a user's own logits. :data:`REGIMES` names the
regimes and :func:`regime_info` describes one in a line.

Each regime is written once, against a small source of randomness that runs either on
Hypothesis' draws (a strategy: shrinkable) or on a PCG64 bit stream seeded with
``SeedSequence([seed, crc32(regime), crc32(dtype), index])`` (a sample). A sample uses
only the raw 64-bit outputs of ``PCG64`` and ``SeedSequence``, whose streams NumPy keeps
stable across versions, and turns them into numbers itself, so the same seed gives the
same cases byte for byte on every run and machine, independent of Hypothesis and its
database; case ``i`` does not depend on how many cases are asked for.

Samples are portable: only operations that IEEE 754 rounds exactly (integers, ``+ - * /``,
``ldexp``, casts) and constants computed with mpmath go into them, never NumPy's or the
libm's ``exp``/``log``/``cos``, whose last bits change with the CPU's SIMD code
(:mod:`references.portable`; normal deviates come from integer sums).
``harness/data/sample_fingerprints.json`` holds the SHA-256 of
every default sample; the tests regenerate them, also with NumPy's SIMD dispatch turned off.

Logits are generated in float64 and cast to the case dtype with ``astype`` (ml_dtypes
rounds float64 to bfloat16 through float32), except where a regime needs exact values of
the dtype: the neighbours of log(max) in ``overflow-edge``, the ulp steps of
``tiny-spread``, the repeated maxima and rows of ``ties``, ±max in ``huge``. A case holds
the rounded values, and the gold is computed from exactly those.

>>> [(c.case_id, c.shape, c.target_kind) for c in sample("ties", dtype="bfloat16", size=2)]
[('ties-bfloat16-s0-0', (4, 10), 'indices'), ('ties-bfloat16-s0-1', (4, 8), 'one-hot')]
>>> round(overflow_edge("float16"), 2), round(overflow_edge("bfloat16"), 2)
(11.09, 88.72)
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import hypothesis.errors
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np

from harness.adapters.contract import DTYPES, OPTIONS, REDUCTIONS, dtype_name
from harness.cases import TARGET_KINDS, Case
from harness.options import MAX_CLASSES
from references import portable
from references.rounding import float_format

__all__ = [
    "DEFAULT_CORPUS",
    "HUNT_ONLY_REGIMES",
    "MAX_CLASSES",
    "REGIMES",
    "TARGET_KINDS",
    "WIDE_SIZES",
    "InvalidArgument",
    "Targets",
    "cases",
    "dtypes",
    "load_corpus",
    "logits",
    "options",
    "overflow_edge",
    "regime_info",
    "sample",
    "targets",
]

REGIMES: tuple[str, ...] = (
    "moderate",
    "large",
    "overflow-edge",
    "huge",
    "dominant",
    "ties",
    "tiny-spread",
    "masked",
    "nonfinite",
    "wide",
    "single-class",
    "empty",
    "corpus",
    "near-zero",
    "long-rows",
    "ignored",
    "no-classes",
    "known-defects",
    "bits",
)
#: Regimes that hunting draws from and ``--regime`` can name, but the default run leaves
#: out: ``bits`` (the dtype's bit patterns, sign, exponent and mantissa drawn
#: independently) is a search space, not a sample of a class of inputs.
HUNT_ONLY_REGIMES: tuple[str, ...] = ("bits",)

# MAX_CLASSES (from harness.options, where the CLI reads it without importing NumPy):
# the largest K any strategy or sample makes, a large LLM vocabulary (2**17).
#: The vocabulary sizes of ``wide``; a sample holds those up to ``max_classes``
#: (:data:`WIDE_DEFAULT_MAX_CLASSES` unless given).
WIDE_SIZES: tuple[int, ...] = (1024, 4096, 32768, 131072)
WIDE_DEFAULT_MAX_CLASSES = 4096
#: ``overflow-edge`` logits lie within this distance of log(max) (plus half an ulp from the
#: cast): e**±4 spans a factor ~3000 around the overflow threshold, enough for the sum of
#: up to ~e**4 ≈ 55 terms near the threshold to land on either side of it.
OVERFLOW_EDGE_HALF_WIDTH = 4.0
#: ``tiny-spread`` rows hold values at most this many ulps (steps of the dtype) either side
#: of a common offset.
TINY_SPREAD_ULPS = 4
#: ``dominant``: the largest gap between the dominant logit and the rest. e**-800 is below
#: float64's smallest subnormal (e**-744.4), so the largest gaps make exp underflow to 0.
DOMINANT_MAX_GAP = 800.0
#: The tile of a causal or block mask (as attention kernels tile it): ``masked`` rows with
#: K > 128 have runs of at least this many -inf.
MASK_TILE = 128
#: ``ties``: the magnitudes of ties at large values (and the dtype's largest value).
BIG_TIES: tuple[float, ...] = (1e4, 1e5, 1e6, 1e7, 1e8)
#: ``long-rows``: the (N, K) of its cases: uniform rows past bfloat16's 256-term and
#: float16's 2048-term accumulation limits, K one either side of 1024, 2048 and 65536
#: (kernel block and grid boundaries), and arrays of 2**16 and 2**17 elements.
LONG_SHAPES: tuple[tuple[int, int], ...] = (
    (2, 257), (1, 2049), (2, 1023), (1, 1025), (1, 2047), (1, 65535), (1, 65537),
    (64, 1024), (2, 65536),
)
#: ``ignored``: every case has class-index targets with an ignore_index; each of these
#: setups (ignore_index, reduction, with weights, with label smoothing, rows: "some" or
#: the number of rows when every one is ignored) comes once per sample, in order.
IGNORED_SETUPS: tuple[tuple[str, str, bool, bool, str | int], ...] = (
    ("-100", "mean", False, False, "some"),
    ("-100", "mean", False, False, 1),
    ("class", "mean", True, False, 4),
    ("class", "mean", False, True, "some"),
    ("-100", "sum", True, True, "some"),
    ("-100", "none", False, True, 3),
)
#: Rows per case when :func:`load_corpus` chunks a corpus.
CORPUS_ROWS_PER_CASE = 256
#: The corpus of the ``corpus`` regime when none is given: 2,500 rows of real MNIST logits
#: (float32, K = 10) with labels, from Blanchard, Higham & Higham's test data.
DEFAULT_CORPUS = Path(__file__).parent / "data" / "mnist_presoftmax.npz"

# Samples cycle the target kind and a set of options through their cases, offset by regime
# and dtype, so that every regime and dtype meets every target kind and the default
# samples cross every option with every target kind (ignore_index only with indices).
_OPTION_PROFILES: tuple[tuple[str, ...], ...] = (
    (),
    ("reduction",),
    ("weight",),
    ("label_smoothing",),
    ("ignore_index",),
    ("weight", "ignore_index", "reduction"),
    ("label_smoothing", "weight", "ignore_index", "reduction"),
)
_DEFAULT_SAMPLE_SIZE = 5  # = len(TARGET_KINDS): each regime and dtype meets each kind once


class InvalidArgument(hypothesis.errors.InvalidArgument, ValueError):
    """A strategy or sample was asked for something impossible; raised at once, by the call."""


class Targets(NamedTuple):
    """A drawn target: its kind (one of :data:`TARGET_KINDS`) and its values."""

    kind: str
    values: np.ndarray


# --------------------------------------------------------------------------- formats


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


def _moderate_bound(fmt: _Format) -> float:
    # |z| <= 10 is where typical logits live; capped at log(max)/2 (5.5 for float16) so
    # that even exp of every logit, summed over a row, stays finite in the dtype itself.
    return min(10.0, fmt.log_max / 2)


def _far_below(fmt: _Format) -> tuple[float, float]:
    # Rows "entirely far below zero": every exp underflows (|z| >= 2 log(max) is below
    # log of the smallest subnormal in every dtype), up to -1e4 (or max/4 for float16).
    lo = 2 * fmt.log_max
    return lo, max(lo, min(1e4, fmt.max / 4))


def _step(values: np.ndarray, steps: np.ndarray | int, fmt: _Format) -> np.ndarray:
    """Move non-negative finite ``values`` of the dtype by ``steps`` representable numbers."""
    bits = np.asarray(values, dtype=fmt.dtype).view(fmt.uint).astype(np.int64)
    return (bits + steps).astype(fmt.uint).view(fmt.dtype)


# --------------------------------------------------------------------------- sources of randomness


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


# --------------------------------------------------------------------------- the regimes
# Each builder takes (source, format, N, K) and returns (N, K) logits of the dtype.


def _moderate(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    return _centred_rows(src, _moderate_bound(fmt), n, k).astype(fmt.dtype)


def _large(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    # offsets log(max) .. 100 log(max) (exp overflows unshifted), spreads 1 .. log(max)/2:
    # |z| in [log(max)/2, 100.5 log(max)], at most 1115 for float16, far inside every range
    lm = fmt.log_max
    c = _signs(src, (n, 1)) * _log_uniform(src, lm, 100 * lm, (n, 1))
    s = _log_uniform(src, 1.0, lm / 2, (n, 1))
    return (c + s * src.floats(-1.0, 1.0, (n, k))).astype(fmt.dtype)


def _overflow_edge(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    lm, w = fmt.log_max, OVERFLOW_EDGE_HALF_WIDTH
    z = (lm + src.floats(-w, w, (n, k))).astype(fmt.dtype)
    below = np.array([lm]).astype(fmt.dtype)  # the last value with exp(z) <= max ...
    while float(below[0]) > lm:
        below = _step(below, -1, fmt)
    while float(_step(below, 1, fmt)[0]) <= lm:
        below = _step(below, 1, fmt)
    above = _step(below, 1, fmt)  # ... and the first with exp(z) > max
    for i in range(n):
        mode = src.integer(0, 2)
        if mode == 1:  # some entries exactly at the threshold's two sides
            pick = src.integers(0, 2, (k,))
            z[i, pick == 1] = below[0]
            z[i, pick == 2] = above[0]
        elif mode == 2:  # a constant row just below: sum of K terms overflows unshifted
            z[i, :] = below[0]
    return z


def _huge(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    # magnitudes log-uniform in [100 log(max), max]: beyond `large`, up to the format's max
    mag = _log_uniform(src, 100 * fmt.log_max, fmt.max, (n, k))
    z = (_signs(src, (n, k)) * mag).astype(fmt.dtype)  # <= max rounds to <= max: finite
    top = np.array([fmt.max]).astype(fmt.dtype)[0]
    for i in range(n):
        mode = src.integer(0, 2)
        if mode == 1:  # +max and -max in one row: max - min overflows
            p = src.integer(0, k - 1)
            z[i, p] = top
            if k > 1:
                z[i, (p + 1) % k] = -top
        elif mode == 2:  # one huge value repeated: ties at huge magnitude
            z[i, :] = z[i, 0]
    return z


def _dominant_min_gap(fmt: _Format) -> float:
    # p ln 2 is the gap at which 1 - p_max falls below the unit roundoff; gaps from half
    # that up to DOMINANT_MAX_GAP cover p_max just below 1, rounding to 1, and underflow
    return 0.5 * fmt.precision * portable.LN2


def _dominant(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    rest = src.floats(-10.0, 10.0, (n, 1)) + src.floats(-2.0, 2.0, (n, k))
    gap = _log_uniform(src, _dominant_min_gap(fmt), DOMINANT_MAX_GAP, (n,))
    where = src.integers(0, k - 1, (n,))
    rows = np.arange(n)
    rest[rows, where] = rest.max(axis=1, initial=-np.inf) + gap
    return rest.astype(fmt.dtype)


def _ties(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    # rows whose maximum is attained at least twice, constant rows, and repeated rows;
    # values below c stay <= c after rounding, so the maxima survive the cast
    c = src.floats(-10.0, 10.0, (n, 1))
    z = (c - src.floats(0.0, 5.0, (n, k))).astype(fmt.dtype)
    top = c.astype(fmt.dtype)
    copied = False
    big = [m for m in BIG_TIES if m <= fmt.max] + [fmt.max]
    for i in range(n):
        mode = src.integer(0, 3)
        if mode == 2 and i > 0:
            z[i] = z[src.integer(0, i - 1)]
            copied = True
            continue
        if mode == 3:  # ties at a large magnitude M (1e4 ... 1e8, the dtype's largest):
            # the rest a few representable steps below, the maximum attained at least twice
            m = np.array([big[src.integer(0, len(big) - 1)]]).astype(fmt.dtype)
            negative = src.integer(0, 1) == 1
            steps = src.integers(1, 8, (k,))
            if negative and float(m[0]) < fmt.max:
                z[i] = -_step(np.broadcast_to(m, (k,)), steps, fmt)
                top_i = -m[0]
            elif negative:
                z[i] = -m[0]
                top_i = -m[0]
            else:
                z[i] = _step(np.broadcast_to(m, (k,)), -steps, fmt)
                top_i = m[0]
            z[i, src.distinct(k, src.integer(min(2, k), k))] = top_i
            continue
        count = k if mode == 1 else src.integer(min(2, k), k)
        z[i, src.distinct(k, count)] = top[i, 0]
    if n >= 2 and not copied:
        z[n - 1] = z[0]
    return z


def _tiny_spread(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    # an offset of magnitude 1 .. min(1e6, max/4), then values within TINY_SPREAD_ULPS
    # representable steps of it (magnitude >= 1 and <= max/4: the steps stay finite)
    cap = min(1e6, fmt.max / 4)
    offset = _log_uniform(src, 1.0, cap, (n, 1)).astype(fmt.dtype)
    steps = src.integers(-TINY_SPREAD_ULPS, TINY_SPREAD_ULPS, (n, k))
    mag = _step(np.broadcast_to(offset, (n, k)), steps, fmt)
    return np.where(_signs(src, (n, 1)) < 0, -mag, mag).astype(fmt.dtype)


def _masked(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    z = _centred_rows(src, _moderate_bound(fmt), n, k)
    lo, hi = _far_below(fmt)
    for i in range(n):
        mode = 0 if (i == 0 and k > MASK_TILE) else src.integer(0, 3)
        if mode == 0:  # causal: a visible prefix, the rest masked (a run >= 128 when K > 128)
            visible = src.integer(1, k - MASK_TILE if k > MASK_TILE else k - 1)
            z[i, visible:] = -np.inf
        elif mode == 1 and k >= 2 * MASK_TILE:  # block-sparse: one whole tile masked
            tile = src.integer(0, k // MASK_TILE - 1)
            z[i, tile * MASK_TILE : (tile + 1) * MASK_TILE] = -np.inf
        elif mode == 3:  # entirely far below zero, every exp underflows
            z[i] = -_log_uniform(src, lo, hi, ()) + src.floats(-5.0, 5.0, (k,))
        else:  # scattered -inf, at least one entry kept finite
            hole = src.integers(0, 2, (k,)) == 0
            hole[src.integer(0, k - 1)] = False
            z[i, hole] = -np.inf
    return z.astype(fmt.dtype)


def _nonfinite(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    z = _centred_rows(src, _moderate_bound(fmt), n, k)
    inf, nan = np.inf, np.nan
    patterns = ((), (nan,), (inf,), (inf, inf), (inf, -inf), None, (nan, inf), (-inf, nan))
    modes = [src.integer(0, len(patterns) - 1) for _ in range(n)]
    if n and k and all(m == 0 for m in modes):
        modes[0] = 1  # every case holds a non-finite entry
    for i, mode in enumerate(modes):
        values = patterns[mode]
        if values is None:  # a row of -inf only (undefined: behaviour recorded)
            z[i] = -inf
            continue
        places = src.distinct(k, min(len(values), k))
        z[i, places] = values[: len(places)]
    return z.astype(fmt.dtype)


def _wide(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    # vocabulary-sized rows: normal logits like a language model's, with a dominant
    # token, a constant row (K equal terms), or all but the top few masked (top-k)
    z = np.empty((n, k))
    for i in range(n):
        mode = src.integer(0, 3)
        c, s = src.real(-5.0, 5.0), src.real(0.5, 4.0)
        z[i] = c + s * src.noise((k,))
        if mode == 1:
            z[i, src.integer(0, k - 1)] = z[i].max() + src.real(5.0, 30.0)
        elif mode == 2:
            z[i] = c
        elif mode == 3:
            keep = src.integer(1, min(k, 64))
            z[i, np.argsort(z[i], kind="stable")[: k - keep]] = -np.inf
    return z.astype(fmt.dtype)


def _single_class(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    mag = _log_uniform(src, 1e-3, min(1e4, fmt.max / 2), (n, k))
    z = _signs(src, (n, k)) * mag * (src.integers(0, 3, (n, k)) > 0)  # some exact zeros
    return z.astype(fmt.dtype)


def _empty(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    return np.empty((0, k), dtype=fmt.dtype)


def _near_zero(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    # the maximum is 0, -0 or tiny, every other logit far below it (gaps as in
    # ``dominant``): logsumexp and the maximum's log_softmax are near 0, where
    # m + log(sum) loses everything that m + log1p(s) keeps (logsumexp([0, -40]) = 4.2e-18)
    smallest = float_format(fmt.name).smallest_normal
    mode = src.integers(0, 2, (n,))
    tiny = _signs(src, (n,)) * _log_uniform(src, smallest, 1e-3, (n,))
    top = np.where(mode == 1, tiny, np.where(mode == 2, -0.0, 0.0))
    gaps = _log_uniform(src, _dominant_min_gap(fmt), DOMINANT_MAX_GAP, (n, k))
    z = (top[:, None] - gaps).astype(fmt.dtype)
    z[np.arange(n), src.integers(0, k - 1, (n,))] = top.astype(fmt.dtype)
    return z


def _long_rows(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    # constant rows (every term equal: the worst case for an accumulator), constant rows
    # with a few tokens raised, and rows within a few ulps of a constant
    z = np.empty((n, k), dtype=fmt.dtype)
    for i in range(n):
        mode = src.integer(0, 2)
        c = np.array([src.real(-5.0, 5.0)]).astype(fmt.dtype)
        if mode == 2:
            steps = src.integers(0, TINY_SPREAD_ULPS, (k,))
            row = _step(np.abs(np.broadcast_to(c, (k,))), steps, fmt)
            z[i] = np.where(c < 0, -row, row).astype(fmt.dtype)
            continue
        z[i] = c[0]
        if mode == 1:
            raised = src.distinct(k, min(k, 4))
            z[i, raised] = (np.float64(c[0]) + src.floats(1.0, 8.0, (raised.size,))).astype(
                fmt.dtype)
    return z


def _no_classes(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    return np.empty((n, 0), dtype=fmt.dtype)


class _Regime(NamedTuple):
    build: Callable[[_Source, _Format, int, int], np.ndarray] | None
    rows: tuple[int, int]  # default range of N
    classes: tuple[int, int]  # default range of K
    row_limits: tuple[int, int]  # what the regime can make at all
    class_limits: tuple[int, int]
    summary: str
    detail: Callable[[_Format], str]


def _bits(src: _Source, fmt: _Format, n: int, k: int) -> np.ndarray:
    # sign, biased exponent and mantissa drawn independently, then put together: every
    # binade is as likely as any other, and the boundary fields are weighted up (1/32
    # each: exponent 0, subnormals and zeros, and all ones, infinities and NaN; 1/16
    # each: mantissa 0 and all ones), so that even float64, whose 2**11 exponents and
    # 2**52 mantissas would otherwise hide them, gives ±0, ±inf and NaN; shrinking goes
    # towards +0
    width = 8 * fmt.dtype.itemsize
    mantissa_bits = fmt.precision - 1
    exponent_bits = width - 1 - mantissa_bits
    top_exponent, top_mantissa = (1 << exponent_bits) - 1, (1 << mantissa_bits) - 1
    sign = src.integers(0, 1, (n, k)).astype(np.uint64)
    pick = src.integers(0, 31, (n, k))
    exponent = np.where(pick == 1, 0, np.where(pick == 2, top_exponent, src.integers(
        0, top_exponent, (n, k)))).astype(np.uint64)
    pick = src.integers(0, 15, (n, k))
    mantissa = np.where(pick == 1, 0, np.where(pick == 2, top_mantissa, src.integers(
        0, top_mantissa, (n, k)))).astype(np.uint64)
    # NaNs quiet (the mantissa's top bit set): a signalling NaN is quieted by the first
    # operation on it anyway, and casts of one raise the invalid flag in the harness
    nan = (exponent == top_exponent) & (mantissa != 0)
    mantissa = np.where(nan, mantissa | np.uint64(1 << (mantissa_bits - 1)), mantissa)
    bits = ((sign << np.uint64(width - 1)) | (exponent << np.uint64(mantissa_bits))
            | mantissa)
    return bits.astype(fmt.uint).view(fmt.dtype)


def _no_detail(fmt: _Format) -> str:
    return ""


# fmt: off
_ANY = (1, MAX_CLASSES)
_ROWS = (0, 4096)
_REGIMES: dict[str, _Regime] = {
    "moderate": _Regime(
        build=_moderate, rows=(1, 8), classes=(1, 16), row_limits=_ROWS, class_limits=_ANY,
        summary="typical logits: |z| <= min(10, log(max)/2), nothing overflows",
        detail=lambda f: f"|z| <= {_moderate_bound(f):.4g}",
    ),
    "large": _Regime(
        build=_large, rows=(1, 8), classes=(2, 16), row_limits=_ROWS, class_limits=_ANY,
        summary="|offsets| log(max) .. 100 log(max), spreads up to log(max)/2: "
        "unshifted exp overflows",
        detail=lambda f: f"|offset| in [{f.log_max:.4g}, {100 * f.log_max:.4g}]",
    ),
    "overflow-edge": _Regime(
        build=_overflow_edge, rows=(1, 8), classes=(1, 16), row_limits=_ROWS, class_limits=_ANY,
        summary=f"logits within ±{OVERFLOW_EDGE_HALF_WIDTH:g} of log(max), incl. the two "
        "values either side of it",
        detail=lambda f: f"log(max) = {f.log_max:.2f}",
    ),
    "huge": _Regime(
        build=_huge, rows=(1, 8), classes=(2, 16), row_limits=_ROWS, class_limits=_ANY,
        summary="|z| from 100 log(max) up to the dtype's max, incl. ±max in one row",
        detail=lambda f: f"|z| in [{100 * f.log_max:.4g}, {f.max:.4g}]",
    ),
    "dominant": _Regime(
        build=_dominant, rows=(1, 8), classes=(2, 16), row_limits=_ROWS,
        class_limits=(2, MAX_CLASSES),
        summary=f"one logit p ln2/2 .. {DOMINANT_MAX_GAP:g} above the rest: p_max -> 1",
        detail=lambda f: f"gap in [{_dominant_min_gap(f):.3g}, {DOMINANT_MAX_GAP:g}]",
    ),
    "ties": _Regime(
        build=_ties, rows=(1, 8), classes=(2, 16), row_limits=_ROWS, class_limits=_ANY,
        summary="repeated maxima, constant rows and repeated rows, ties at 1e4 ... 1e8 "
        "and at the dtype's largest value",
        detail=_no_detail,
    ),
    "tiny-spread": _Regime(
        build=_tiny_spread, rows=(1, 8), classes=(2, 16), row_limits=_ROWS, class_limits=_ANY,
        summary=f"all logits of a row within {TINY_SPREAD_ULPS} ulps of an offset of 1 .. 1e6",
        detail=lambda f: f"|offset| <= {min(1e6, f.max / 4):.4g}",
    ),
    "masked": _Regime(
        build=_masked, rows=(1, 4), classes=(2, 512), row_limits=_ROWS,
        class_limits=(2, MAX_CLASSES),
        summary="-inf at and off the target: causal runs and whole tiles of >= 128, "
        "scattered holes, rows entirely far below zero",
        detail=lambda f: "far-below rows at -[{:.4g}, {:.4g}]".format(*_far_below(f)),
    ),
    "nonfinite": _Regime(
        build=_nonfinite, rows=(1, 8), classes=(2, 16), row_limits=_ROWS, class_limits=_ANY,
        summary="NaN, +inf and -inf entries, and rows of -inf only",
        detail=_no_detail,
    ),
    "wide": _Regime(
        build=_wide, rows=(1, 2), classes=(WIDE_SIZES[0], WIDE_DEFAULT_MAX_CLASSES),
        row_limits=(0, 64), class_limits=_ANY,
        summary=f"vocabulary-sized rows, K up to {MAX_CLASSES} "
        f"(sizes {', '.join(map(str, WIDE_SIZES))})",
        detail=_no_detail,
    ),
    "single-class": _Regime(
        build=_single_class, rows=(1, 8), classes=(1, 1), row_limits=_ROWS, class_limits=(1, 1),
        summary="K = 1: softmax is 1, the loss and gradient are 0",
        detail=_no_detail,
    ),
    "empty": _Regime(
        build=_empty, rows=(0, 0), classes=(1, 16), row_limits=(0, 0), class_limits=_ANY,
        summary="N = 0: empty outputs",
        detail=_no_detail,
    ),
    "corpus": _Regime(
        build=None, rows=(1, 8), classes=_ANY, row_limits=(0, 1 << 30), class_limits=_ANY,
        summary="the user's own logits from a .npy/.npz file (default: MNIST logits, K = 10)",
        detail=_no_detail,
    ),
    "near-zero": _Regime(
        build=_near_zero, rows=(1, 8), classes=(2, 16), row_limits=_ROWS,
        class_limits=(2, MAX_CLASSES),
        summary="the maximum is 0, -0 or tiny and every other logit far below: logsumexp "
        "and log_softmax near 0",
        detail=lambda f: f"gaps in [{_dominant_min_gap(f):.3g}, {DOMINANT_MAX_GAP:g}]",
    ),
    "long-rows": _Regime(
        build=_long_rows, rows=(1, 128), classes=(257, 65537), row_limits=(1, 4096),
        class_limits=(2, MAX_CLASSES),
        summary="uniform rows past the half formats' accumulation limits, K at 1024, 2048 "
        "and 65536 +- 1, arrays of 2**16 and 2**17 elements",
        detail=_no_detail,
    ),
    "ignored": _Regime(
        build=_moderate, rows=(1, 8), classes=(2, 16), row_limits=(1, 4096),
        class_limits=(2, MAX_CLASSES),
        summary="class indices with ignore_index (-100 or a class): mean without weights, "
        "every row ignored (N = 1 and more), with label smoothing",
        detail=_no_detail,
    ),
    "no-classes": _Regime(
        build=_no_classes, rows=(1, 4), classes=(0, 0), row_limits=(1, 4096),
        class_limits=(0, 0),
        summary="K = 0: logsumexp is -inf, softmax and log_softmax are empty",
        detail=_no_detail,
    ),
    "known-defects": _Regime(
        build=None, rows=(1, 64), classes=_ANY, row_limits=(0, 1 << 30), class_limits=_ANY,
        summary="the inputs of defects reported upstream (harness/data/known_defects.json), "
        "with their provenance",
        detail=_no_detail,
    ),
    "bits": _Regime(
        build=_bits, rows=(1, 8), classes=(1, 16), row_limits=_ROWS, class_limits=_ANY,
        summary="the dtype's bit patterns, sign, exponent and mantissa drawn independently "
        "(subnormals to ±inf and NaN; hunting only, not in the default run)",
        detail=_no_detail,
    ),
}
# fmt: on
assert tuple(_REGIMES) == REGIMES


def regime_info(name: str, dtype: Any = None) -> str:
    """A one-line description of a regime, with its numbers for ``dtype`` when given.

    >>> regime_info("overflow-edge", "float32")
    'overflow-edge: logits within ±4 of log(max), incl. the two values either side of it \
(float32: log(max) = 88.72)'
    """
    spec = _regime(name)
    line = f"{name}: {spec.summary}"
    if dtype is not None:
        fmt = _format(dtype)
        detail = spec.detail(fmt)
        line += f" ({fmt.name}: {detail})" if detail else f" ({fmt.name})"
    return line


def _regime(name: Any) -> _Regime:
    if name not in _REGIMES:
        raise InvalidArgument(f"regime must be one of {', '.join(REGIMES)}; got {name!r}")
    return _REGIMES[name]


# --------------------------------------------------------------------------- corpora


class _CorpusError(ValueError):
    """A corpus file that cannot be used: one line naming the file and the problem."""


def _corpus_error(path: Path, what: str) -> _CorpusError:
    return _CorpusError(f"corpus {path}: {what}")


@functools.lru_cache(maxsize=8)
def _read_corpus_cached(
    path: str, mtime_ns: int, size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    p = Path(path)
    try:
        if p.suffix == ".npy":
            logits, labels = np.load(p, allow_pickle=False), None
        else:
            with np.load(p, allow_pickle=False) as archive:
                if "logits" not in archive.files:
                    found = ", ".join(archive.files) or "nothing"
                    raise _corpus_error(p, f"no 'logits' array in the .npz (found: {found})")
                logits = archive["logits"]
                labels = archive["labels"] if "labels" in archive.files else None
    except _CorpusError:
        raise
    except Exception as exc:  # a truncated, pickled or foreign file
        raise _corpus_error(p, f"cannot be read ({type(exc).__name__}: {exc})") from None
    if logits.ndim != 2:
        raise _corpus_error(p, f"logits must be 2-D (N, K); got shape {logits.shape}")
    if logits.dtype.kind != "f":
        raise _corpus_error(p, f"logits must be floating point; got {logits.dtype}")
    if logits.shape[1] < 1:
        raise _corpus_error(p, "logits have no classes (K = 0)")
    if labels is not None:
        if labels.dtype.kind not in "iu" or labels.shape != (logits.shape[0],):
            raise _corpus_error(
                p,
                f"labels must be integers of shape ({logits.shape[0]},); "
                f"got {labels.dtype} {labels.shape}",
            )
        bad = (labels < 0) | (labels >= logits.shape[1])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _corpus_error(p, f"label {labels[i]} of row {i} is not in [0, {logits.shape[1]})")
        labels = labels.astype(np.int64)
    return logits, labels


def _read_corpus(path: str | Path) -> tuple[Path, np.ndarray, np.ndarray | None]:
    p = Path(path)
    if p.suffix not in (".npy", ".npz"):
        raise _corpus_error(p, "must be a .npy file or a .npz file with 'logits'")
    if not p.is_file():
        raise _corpus_error(p, "no such file")
    stat = p.stat()
    logits, labels = _read_corpus_cached(str(p.resolve()), stat.st_mtime_ns, stat.st_size)
    return p, logits, labels


def _corpus_dtype(p: Path, logits: np.ndarray, dtype: Any) -> _Format:
    if dtype is not None:
        return _format(dtype)
    name = dtype_name(logits.dtype)
    if name not in DTYPES:
        raise _corpus_error(p, f"logits are {name}; pass dtype= one of {', '.join(DTYPES)}")
    return _format(name)


def load_corpus(
    path: str | Path, *, dtype: Any = None, rows_per_case: int = CORPUS_ROWS_PER_CASE
) -> list[Case]:
    """The logits of a ``.npy`` file, or of a ``.npz`` with ``logits`` and optional ``labels``.

    Rows are cut into cases of ``rows_per_case`` rows, in order, cast to ``dtype`` (the
    file's own dtype by default). Targets are the labels as class indices, or without
    labels the argmax of each row (the model's own prediction). Bad files raise a
    one-line ``ValueError`` naming the file and the problem.

    >>> chunks = load_corpus(DEFAULT_CORPUS)
    >>> len(chunks), sum(c.num_rows for c in chunks), chunks[0].dtype, chunks[0].target[:3]
    (10, 2500, 'float32', array([0, 0, 0]))
    """
    _check_count("rows_per_case", rows_per_case, 1)
    p, data, labels = _read_corpus(path)
    fmt = _corpus_dtype(p, data, dtype)
    z = data.astype(fmt.dtype)
    target = labels if labels is not None else _first_argmax(z)
    out = []
    for number, start in enumerate(range(0, z.shape[0], rows_per_case)):
        stop = start + rows_per_case
        out.append(
            Case(
                logits=z[start:stop],
                target=target[start:stop],
                target_kind="indices",
                options={},
                dtype=fmt.name,
                regime="corpus",
                case_id=f"corpus-{fmt.name}-{p.stem}-{number}",
                origin=(
                    f"harness.strategies.load_corpus({str(p.resolve())!r}, dtype={fmt.name!r}, "
                    f"rows_per_case={rows_per_case})[{number}]"
                ),
            )
        )
    return out


def _first_argmax(z: np.ndarray) -> np.ndarray:
    wide = z.astype(np.float64)
    return np.argmax(np.where(np.isnan(wide), -np.inf, wide), axis=1).astype(np.int64)


# --------------------------------------------------------------------------- plans: regime + bounds


class _Plan(NamedTuple):
    name: str
    spec: _Regime
    rows: tuple[int, int]
    classes: tuple[int, int]
    corpus: tuple[np.ndarray, np.ndarray | None] | None


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgument(f"{name} must be an int; got {value!r}")
    if value < minimum:
        raise InvalidArgument(f"{name} must be >= {minimum}; got {value}")


def _range(
    what: str,
    name: str,
    lo: int | None,
    hi: int | None,
    default: tuple[int, int],
    limits: tuple[int, int],
) -> tuple[int, int]:
    a = default[0] if lo is None else lo
    b = default[1] if hi is None else hi
    if hi is None:
        b = max(b, a)
    if lo is None:
        a = min(a, b)
    a, b = max(a, limits[0]), min(b, limits[1])
    if a > b:
        raise InvalidArgument(
            f"regime {name!r} makes {what} in [{limits[0]}, {limits[1]}]; "
            f"got min_{what}={lo}, max_{what}={hi}"
        )
    return a, b


def _plan(
    name: str,
    min_rows: int | None,
    max_rows: int | None,
    min_classes: int | None,
    max_classes: int | None,
    corpus: str | Path | None,
) -> _Plan:
    spec = _regime(name)
    data = None
    classes = spec.classes
    class_limits = spec.class_limits
    if name == "corpus":
        _, logits, labels = _read_corpus(DEFAULT_CORPUS if corpus is None else corpus)
        data = (logits, labels)
        classes = class_limits = (logits.shape[1], logits.shape[1])
    rows = _range("rows", name, min_rows, max_rows, spec.rows, spec.row_limits)
    cls = _range("classes", name, min_classes, max_classes, classes, class_limits)
    return _Plan(name, spec, rows, cls, data)


def _plans(
    regime: str | None,
    min_rows: int | None,
    max_rows: int | None,
    min_classes: int | None,
    max_classes: int | None,
    corpus: str | Path | None,
) -> tuple[_Plan, ...]:
    for label, value, minimum in (
        ("min_rows", min_rows, 0),
        ("max_rows", max_rows, 0),
        ("min_classes", min_classes, 1),
        ("max_classes", max_classes, 1),
    ):
        if value is not None:
            _check_count(label, value, minimum)
    if max_classes is not None and max_classes > MAX_CLASSES:
        raise InvalidArgument(f"max_classes must be <= {MAX_CLASSES}; got {max_classes}")
    for lo, hi, what in ((min_rows, max_rows, "rows"), (min_classes, max_classes, "classes")):
        if lo is not None and hi is not None and lo > hi:
            raise InvalidArgument(f"min_{what}={lo} is greater than max_{what}={hi}")
    bounds = (min_rows, max_rows, min_classes, max_classes, corpus)
    if regime == "known-defects":
        raise InvalidArgument("known-defects is a fixed corpus, not a strategy: use "
                              "sample('known-defects', dtype=...)")
    if regime is not None:
        return (_plan(regime, *bounds),)
    # drawn from when no regime is named: every one but the fixed corpus of defects and
    # K = 0 (which most code that draws logits does not expect); name them to get them
    names = [r for r in REGIMES if r not in ("known-defects", "no-classes")
             and (r != "corpus" or corpus is not None)]
    plans = []
    for name in names:
        try:
            plans.append(_plan(name, *bounds))
        except InvalidArgument:
            continue  # this regime cannot meet the bounds; the others may
    if not plans:
        raise InvalidArgument("no regime can make logits within the given bounds")
    return tuple(plans)


class _Drawn(NamedTuple):
    logits: np.ndarray
    anchors: np.ndarray | None  # the labels of corpus rows
    setup: int | None  # the ``ignored`` setup (an index of IGNORED_SETUPS)


def _long_shapes(plan: _Plan) -> list[tuple[int, int]]:
    (rlo, rhi), (klo, khi) = plan.rows, plan.classes
    shapes = [(n, k) for n, k in LONG_SHAPES if rlo <= n <= rhi and klo <= k <= khi]
    return shapes or [(rlo, khi)]


def _generate(src: _Source, plan: _Plan, fmt: _Format, slot: int | None) -> _Drawn:
    """Logits of the plan's regime (and the labels of corpus rows), shape drawn first.

    ``slot`` is a sample's case index, which picks the wide size, whether a masked case
    is long, the long-rows shape and the ignored setup; strategies (``slot=None``) draw
    those instead.
    """
    (rlo, rhi), (klo, khi) = plan.rows, plan.classes
    if plan.corpus is not None:
        data, labels = plan.corpus
        n = src.integer(rlo, rhi)
        picked = src.integers(0, data.shape[0] - 1, (n,))
        anchors = None if labels is None else labels[picked]
        return _Drawn(data[picked].astype(fmt.dtype), anchors, None)
    setup = None
    if plan.name == "long-rows":
        shapes = _long_shapes(plan)
        n, k = shapes[src.integer(0, len(shapes) - 1) if slot is None else slot % len(shapes)]
    elif plan.name == "ignored":
        setup = src.integer(0, len(IGNORED_SETUPS) - 1) if slot is None else (
            slot % len(IGNORED_SETUPS))
        rows = IGNORED_SETUPS[setup][4]
        n = min(max(rows, rlo), rhi) if isinstance(rows, int) else src.integer(
            max(rlo, 2), max(rhi, 2))
        k = src.integer(klo, khi)
    elif plan.name == "wide":
        sizes = [s for s in WIDE_SIZES if klo <= s <= khi]
        if slot is None:
            if sizes and src.integer(0, 1) == 0:  # one of the usual vocabulary sizes
                k = sizes[src.integer(0, len(sizes) - 1)]
            else:
                k = src.integer(klo, khi)
            n = src.integer(rlo, rhi)
        else:
            k = sizes[slot % len(sizes)] if sizes else khi
            n = min(max(2 if k <= WIDE_SIZES[0] else 1, rlo), rhi)  # ~6k elements by default
    elif plan.name == "masked":
        long = (src.integer(0, 1) == 0 if slot is None else slot % 2 == 0) and khi > MASK_TILE
        if long:
            tiles = [t for t in range(2 * MASK_TILE, khi + 1, MASK_TILE) if t >= klo]
            if tiles:
                k = tiles[src.integer(0, len(tiles) - 1)]
            else:
                k = src.integer(max(klo, MASK_TILE + 1), khi)
        else:
            k = src.integer(klo, min(khi, max(klo, 16)))
        n = src.integer(rlo, rhi)
    else:
        k = src.integer(klo, khi)
        n = src.integer(rlo, rhi)
    assert plan.spec.build is not None
    return _Drawn(plan.spec.build(src, fmt, n, k), None, setup)


# --------------------------------------------------------------------------- targets and options


def _anchors(src: _Source, z: np.ndarray) -> np.ndarray:
    """A class per row for the target to sit on: random, the argmax, the argmin or a -inf."""
    n, k = z.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    mode = src.integers(0, 3, (n,))
    out = src.integers(0, k - 1, (n,))
    with np.errstate(invalid="ignore"):  # NaN bit patterns (``bits``)
        wide = z.astype(np.float64)
    for i in range(n):
        row = wide[i]
        finite_or_inf = ~np.isnan(row)
        if mode[i] == 1 and finite_or_inf.any():
            out[i] = int(np.argmax(np.where(finite_or_inf, row, -np.inf)))
        elif mode[i] == 2 and finite_or_inf.any():
            out[i] = int(np.argmin(np.where(finite_or_inf, row, np.inf)))
        elif mode[i] == 3:
            masked = np.flatnonzero(row == -np.inf)
            if masked.size:
                out[i] = int(masked[out[i] % masked.size])
    return out


def _make_targets(
    src: _Source,
    fmt: _Format,
    z: np.ndarray,
    kind: str,
    anchors: np.ndarray | None = None,
    ignore_index: int | None = None,
) -> np.ndarray:
    n, k = z.shape
    anchor = _anchors(src, z) if anchors is None else np.asarray(anchors, dtype=np.int64)
    if kind == "indices":
        t = anchor.copy()
        if ignore_index is not None and n:
            ignored = src.integers(0, 2, (n,)) == 0
            ignored[src.integer(0, n - 1)] = True  # at least one row is ignored
            t[ignored] = ignore_index
        return t
    y = np.zeros((n, k))
    if kind == "one-hot":
        y[np.arange(n), anchor] = 1.0
    elif kind in ("soft", "unnormalized"):
        # Integer counts over 2**m with m = p - 2: every value count / 2**m with count
        # <= 4 * 2**m = 2**p is exact in the dtype, so soft rows sum to exactly 1 and
        # unnormalized rows to exactly T / 2**m with T != 2**m (between 1/8 and 4).
        denominator = 2 ** (fmt.precision - 2)
        for i in range(n):
            support = src.distinct(k, src.integer(1, min(k, 16)))
            if anchor[i] not in support:
                support[0] = anchor[i]
            total = denominator
            if kind == "unnormalized":
                low = src.integer(0, 1) == 0
                scale = src.real(0.125, 0.9375) if low else src.real(1.0625, 4.0)
                total = int(round(scale * denominator))
            cuts = np.sort(src.integers(0, total, (support.size - 1,)))
            counts = np.diff(np.concatenate(([0], cuts, [total])))
            y[i, support] = counts / denominator
    return y.astype(fmt.dtype)


def _ignored_case(src: _Source, fmt: _Format, z: np.ndarray, setup: int
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """Class-index targets and options of an ``ignored`` case (see IGNORED_SETUPS)."""
    n, k = z.shape
    which, reduction, weighted, smoothed, rows = IGNORED_SETUPS[setup]
    ignore = -100 if which == "-100" else src.integer(0, k - 1)
    target = _anchors(src, z)
    if rows == "some":  # at least one row ignored and, with two rows or more, one kept
        ignored = src.integers(0, 1, (n,)) == 1
        ignored[0] = True
        if n > 1:
            ignored[n - 1] = False
            target[n - 1] = (ignore + 1) % k if target[n - 1] == ignore else target[n - 1]
    else:
        ignored = np.ones(n, dtype=bool)
    target[ignored] = ignore
    options: dict[str, Any] = {"ignore_index": ignore, "reduction": reduction}
    if weighted:
        options["weight"] = src.floats(0.25, 2.0, (k,)).astype(fmt.dtype)
    if smoothed:
        options["label_smoothing"] = src.integer(1, 32) / 64
    return target, options


def _make_options(
    src: _Source, fmt: _Format, k: int, kind: str, names: Sequence[str], *, each_maybe: bool
) -> dict[str, Any]:
    """Values for the options in ``names`` (each kept or not at random if ``each_maybe``)."""
    out: dict[str, Any] = {}
    for name in OPTIONS:
        if name not in names or (name == "ignore_index" and kind != "indices"):
            continue
        if each_maybe and src.integer(0, 1) == 0:
            continue
        if name == "weight":
            w = src.floats(0.0, 2.0, (k,))
            w[src.integers(0, 3, (k,)) == 0] = 0.0  # zero weights: whole classes dropped
            out[name] = w.astype(fmt.dtype)
        elif name == "ignore_index":
            out[name] = -100 if src.integer(0, 1) == 0 else src.integer(0, k - 1)
        elif name == "label_smoothing":
            out[name] = src.integer(0, 64) / 64  # exact in every dtype, 0 and 1 included
        else:
            out[name] = REDUCTIONS[src.integer(0, len(REDUCTIONS) - 1)]
    return out


def _targets_and_options(
    src: _Source, fmt: _Format, z: np.ndarray, anchors: np.ndarray | None, setup: int | None,
    kind: str, names: Sequence[str], *, each_maybe: bool
) -> tuple[str, np.ndarray, dict[str, Any]]:
    """(target kind, target, options) of a case: the ``ignored`` setups and K = 0 have
    their own; every other case gets ``kind`` and options among ``names``."""
    if setup is not None:
        target, opts = _ignored_case(src, fmt, z, setup)
        return "indices", target, opts
    if z.shape[1] == 0:  # no classes: no class to index, no option to apply
        return "all-zero", np.zeros(z.shape, dtype=fmt.dtype), {}
    opts = _make_options(src, fmt, z.shape[1], kind, names, each_maybe=each_maybe)
    return kind, _make_targets(src, fmt, z, kind, anchors, opts.get("ignore_index")), opts


# --------------------------------------------------------------------------- fixed-seed samples


def _entropy(seed: int, regime: str, dtype: str, index: int) -> list[int]:
    return [seed, zlib.crc32(regime.encode()), zlib.crc32(dtype.encode()), index]


def sample(
    regime: str,
    *,
    dtype: Any = "float64",
    seed: int = 0,
    size: int | None = None,
    max_classes: int | None = None,
    corpus: str | Path | None = None,
) -> list[Case]:
    """The fixed-seed sample of a regime: ``size`` cases, the same bytes on every run.

    ``size`` defaults to 5 (one case per target kind; 3 for ``empty``; for ``wide``, one
    case per size of :data:`WIDE_SIZES` up to ``max_classes``). ``max_classes`` caps K in
    every regime and sets the largest ``wide`` size (default 4096; pass 131072 for
    vocabulary-sized rows). ``corpus`` is the file of the ``corpus`` regime (default: the
    built-in MNIST logits); its sample draws rows at random, keeping their labels.
    Target kinds and options are cycled through the cases (see the module notes).

    >>> [c.case_id for c in sample("ties", dtype="float16", size=2)]
    ['ties-float16-s0-0', 'ties-float16-s0-1']
    """
    spec = _regime(regime)
    fmt = _format(dtype)
    _check_count("seed", seed, 0)
    if size is not None:
        _check_count("size", size, 0)
    if regime == "known-defects":  # a fixed corpus: the seed picks nothing
        from harness import defects

        chosen = [c for c in defects.cases(fmt.name)
                  if max_classes is None or c.num_classes <= max_classes]
        return chosen if size is None else chosen[:size]
    if max_classes is not None:
        _check_count("max_classes", max_classes, 1)
        if max_classes > MAX_CLASSES:
            raise InvalidArgument(f"max_classes must be <= {MAX_CLASSES}; got {max_classes}")
    if regime == "wide":
        cap = WIDE_DEFAULT_MAX_CLASSES if max_classes is None else max_classes
        plan = _plan(regime, None, None, min(spec.classes[0], cap), cap, None)
        sizes = [s for s in WIDE_SIZES if s <= cap]
        default_size = max(len(sizes), 1)
    else:
        cap = None if max_classes is None else min(spec.classes[1], max_classes)
        if regime == "corpus":
            plan = _plan(regime, None, None, None, None, corpus)
            if max_classes is not None and plan.classes[0] > max_classes:
                raise InvalidArgument(f"the corpus has K = {plan.classes[0]} > max_classes")
        else:
            plan = _plan(regime, None, None, None, cap, None)
        default_size = {"empty": 3, "long-rows": len(_long_shapes(plan)),
                        "ignored": len(IGNORED_SETUPS)}.get(regime, _DEFAULT_SAMPLE_SIZE)
    count = default_size if size is None else size
    r, d = REGIMES.index(regime), DTYPES.index(fmt.name)
    call = f"harness.strategies.sample({regime!r}, dtype={fmt.name!r}, seed={seed}"
    if max_classes is not None:
        call += f", max_classes={max_classes}"
    if corpus is not None:
        call += f", corpus={str(Path(corpus).resolve())!r}"
    out = []
    for i in range(count):
        src = _StreamSource(_entropy(seed, regime, fmt.name, i))
        z, anchors, setup = _generate(src, plan, fmt, slot=i)
        kind, target, opts = _targets_and_options(
            src, fmt, z, anchors, setup, TARGET_KINDS[(i + r) % len(TARGET_KINDS)],
            _OPTION_PROFILES[(i + 3 * r + 2 * d) % len(_OPTION_PROFILES)], each_maybe=False)
        out.append(
            Case(
                logits=z,
                target=target,
                target_kind=kind,
                options=opts,
                dtype=fmt.name,
                regime=regime,
                case_id=f"{regime}-{fmt.name}-s{seed}-{i}",
                seed=seed,
                origin=f"{call}, size={i + 1})[{i}]",
            )
        )
    return out


# --------------------------------------------------------------------------- strategies


def dtypes(*, names: Sequence[str] = DTYPES) -> st.SearchStrategy[str]:
    """The case dtypes by name, shrinking towards float64."""
    names = tuple(names)
    if not names:
        raise InvalidArgument("names must not be empty")
    for name in names:
        _format(name)
    return st.sampled_from(names)


def logits(
    *,
    dtype: Any = "float64",
    regime: str | None = None,
    min_rows: int | None = None,
    max_rows: int | None = None,
    min_classes: int | None = None,
    max_classes: int | None = None,
    corpus: str | Path | None = None,
) -> st.SearchStrategy[np.ndarray]:
    """``(N, K)`` logits of ``dtype`` from a regime (any of them, ``corpus`` aside, if None).

    A bound left as None takes the regime's default range (e.g. K in 1..16 for
    ``moderate``, 1024..4096 for ``wide``); one that is given replaces it and is checked
    against what the regime can make at all (``single-class`` has K = 1, ``empty`` has
    N = 0; K <= 131072). ``corpus`` is the file of the ``corpus`` regime (rows are drawn
    from it; default: the built-in MNIST logits); with ``regime=None`` it adds ``corpus``
    to the regimes drawn from. Invalid arguments raise :class:`InvalidArgument` at once.
    """
    fmt = _format(dtype)
    plans = _plans(regime, min_rows, max_rows, min_classes, max_classes, corpus)
    return _logits_draws(fmt, plans)


@st.composite
def _logits_draws(draw: Any, fmt: _Format, plans: tuple[_Plan, ...]) -> np.ndarray:
    plan = draw(st.sampled_from(plans))
    return _generate(_DrawSource(draw), plan, fmt, slot=None).logits


def targets(
    logits_array: np.ndarray,
    *,
    kind: str | None = None,
    dtype: Any = None,
    ignore_index: int | None = None,
) -> st.SearchStrategy[Targets]:
    """Targets for ``logits_array``: :class:`Targets` ``(kind, values)``.

    ``kind`` is one of :data:`TARGET_KINDS` (drawn if None). Class indices are int64
    ``(N,)``; the probability kinds are ``(N, K)`` of ``dtype`` (default: the logits'
    dtype). Each row's class, or the centre of its mass, is drawn among a random class,
    the row's argmax, its argmin and one of its -inf entries. Soft rows sum to exactly 1,
    unnormalized rows to exactly something else in [1/8, 4]. With ``ignore_index`` (index
    targets only) at least one row is set to it.
    """
    z = np.asarray(logits_array)
    if z.ndim != 2:
        raise InvalidArgument(f"logits must be 2-D (N, K); got shape {z.shape}")
    _format(z.dtype)
    fmt = _format(z.dtype if dtype is None else dtype)
    if kind is not None and kind not in TARGET_KINDS:
        raise InvalidArgument(f"kind must be one of {', '.join(TARGET_KINDS)}; got {kind!r}")
    kinds = TARGET_KINDS if kind is None else (kind,)
    if ignore_index is not None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int | np.integer):
            raise InvalidArgument(f"ignore_index must be an int; got {ignore_index!r}")
        if kind not in (None, "indices"):
            raise InvalidArgument(f"ignore_index applies to class indices, not {kind} targets")
        kinds = ("indices",)
    return _target_draws(z.copy(), fmt, kinds, None if ignore_index is None else int(ignore_index))


@st.composite
def _target_draws(
    draw: Any, z: np.ndarray, fmt: _Format, kinds: tuple[str, ...], ignore_index: int | None
) -> Targets:
    kind = draw(st.sampled_from(kinds))
    return Targets(kind, _make_targets(_DrawSource(draw), fmt, z, kind, None, ignore_index))


def options(
    *,
    num_classes: int,
    dtype: Any = "float64",
    target_kind: str = "indices",
    names: Sequence[str] = OPTIONS,
) -> st.SearchStrategy[dict[str, Any]]:
    """Options for ``cross_entropy``: a dict holding some of ``names`` (maybe none).

    ``weight``: ``(num_classes,)`` of ``dtype`` in [0, 2], about a third of them 0;
    ``ignore_index`` (index targets only): -100 or a class; ``label_smoothing``: a multiple
    of 1/64 in [0, 1]; ``reduction``: ``"none"``, ``"sum"`` or ``"mean"``.
    """
    _check_count("num_classes", num_classes, 1)
    fmt = _format(dtype)
    if target_kind not in TARGET_KINDS:
        raise InvalidArgument(
            f"target_kind must be one of {', '.join(TARGET_KINDS)}; got {target_kind!r}"
        )
    unknown = sorted(set(names) - set(OPTIONS))
    if unknown:
        raise InvalidArgument(f"unknown option names {unknown}; known: {', '.join(OPTIONS)}")
    return _option_draws(int(num_classes), fmt, target_kind, tuple(names))


@st.composite
def _option_draws(
    draw: Any, k: int, fmt: _Format, kind: str, names: tuple[str, ...]
) -> dict[str, Any]:
    return _make_options(_DrawSource(draw), fmt, k, kind, names, each_maybe=True)


def cases(
    *,
    dtype: Any = None,
    regime: str | None = None,
    target_kinds: Sequence[str] = TARGET_KINDS,
    with_options: bool = True,
    min_rows: int | None = None,
    max_rows: int | None = None,
    min_classes: int | None = None,
    max_classes: int | None = None,
    corpus: str | Path | None = None,
) -> st.SearchStrategy[Case]:
    """Whole :class:`~harness.cases.Case` s: logits of a regime, a target, maybe options.

    ``dtype`` and ``regime`` are drawn when None (``dtypes()``; every regime but
    ``corpus`` unless ``corpus`` is given); the bounds are those of :func:`logits`. A
    drawn case's id is ``f"{regime}-{dtype}-h{digest}"``, stable for the same contents,
    and its ``seed`` is None: Hypothesis' own seed and database reproduce it.
    """
    fmts = tuple(_format(d) for d in (DTYPES if dtype is None else (dtype,)))
    kinds = tuple(target_kinds)
    if not kinds:
        raise InvalidArgument("target_kinds must not be empty")
    for kind in kinds:
        if kind not in TARGET_KINDS:
            raise InvalidArgument(
                f"target kinds must be among {', '.join(TARGET_KINDS)}; got {kind!r}"
            )
    if not isinstance(with_options, bool):
        raise InvalidArgument(f"with_options must be a bool; got {with_options!r}")
    plans = _plans(regime, min_rows, max_rows, min_classes, max_classes, corpus)
    return _case_draws(fmts, plans, kinds, with_options)


@st.composite
def _case_draws(
    draw: Any,
    fmts: tuple[_Format, ...],
    plans: tuple[_Plan, ...],
    kinds: tuple[str, ...],
    with_options: bool,
) -> Case:
    fmt = draw(st.sampled_from(fmts))
    plan = draw(st.sampled_from(plans))
    src = _DrawSource(draw)
    z, anchors, setup = _generate(src, plan, fmt, slot=None)
    kind, target, opts = _targets_and_options(
        src, fmt, z, anchors, setup if with_options else None, draw(st.sampled_from(kinds)),
        OPTIONS if with_options else (), each_maybe=True)
    case = Case(
        logits=z,
        target=target,
        target_kind=kind,
        options=opts,
        dtype=fmt.name,
        regime=plan.name,
        case_id="pending",
    )
    return dataclasses.replace(case, case_id=f"{plan.name}-{fmt.name}-h{case.digest()}")
