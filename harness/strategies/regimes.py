"""The named input regimes (DESIGN.md §5): their constants, builders and descriptions.

:data:`REGIMES` names them; each has a builder ``(source, format, N, K) -> logits`` and
its default and possible shapes in :data:`_REGIMES`; :func:`regime_info` describes one
in a line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from xentcheck.harness.options import MAX_CLASSES
from xentcheck.harness.strategies.formats import InvalidArgument, _Format, _format, _step
from xentcheck.harness.strategies.sources import (
    _centred_rows,
    _log_uniform,
    _signs,
    _Source,
)
from xentcheck.references import portable
from xentcheck.references.rounding import float_format

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

# MAX_CLASSES (from xentcheck.harness.options, where the CLI reads it without importing NumPy):
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


def _moderate_bound(fmt: _Format) -> float:
    # |z| <= 10 is where typical logits live; capped at log(max)/2 (5.5 for float16) so
    # that even exp of every logit, summed over a row, stays finite in the dtype itself.
    return min(10.0, fmt.log_max / 2)


def _far_below(fmt: _Format) -> tuple[float, float]:
    # Rows "entirely far below zero": every exp underflows (|z| >= 2 log(max) is below
    # log of the smallest subnormal in every dtype), up to -1e4 (or max/4 for float16).
    lo = 2 * fmt.log_max
    return lo, max(lo, min(1e4, fmt.max / 4))


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
