"""numba kernels of :mod:`xentcheck.references.fast.jit` (imported only where numba is).

Each loop transcribes a NumPy block computation of :mod:`~xentcheck.references.fast.extended`
and :mod:`~xentcheck.references.fast.kernels` operation for operation (float64 operations
are correctly rounded in both, and none is fused or reordered here), except the sums of
grid pieces, which are exact in any order and so may be vectorized with reassociation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from xentcheck.references.fast._numba_options import NJIT_OPTIONS as _OPTS

_MAGIC = 1.5 * 2.0**52
_MAGIC_BITS = 0x4338000000000000
_T = 13
_N = 1 << _T


@intrinsic
def _bits(typingctx: Any, x: Any) -> Any:
    """The bits of a float64 as an int64."""
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx: Any, n: Any) -> Any:
    """The float64 with the bits of an int64."""
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# ------------------------------------------------------------------ row sums


@njit(fastmath={"reassoc"}, **_OPTS)
def _total(buf: np.ndarray, n: int) -> float:
    """The sum of buf[:n]: grid pieces, exact in any order (so reassociation is harmless)."""
    s = 0.0
    for i in range(n):
        s += buf[i]
    return s


@njit(**_OPTS)
def _exp_parts(row: np.ndarray, b0: int, n: int, m: float, clamp: bool, lowest: float,
               bias: int, inv: float, c1: float, c2: float, rb: np.ndarray, pb: np.ndarray,
               jb: np.ndarray, fb: np.ndarray) -> None:
    """The first half of kernels._exp_into (not precise) on d = row[b0:b0 + n] - m, after
    extended._d_block and extended._exp_block: r, P(r), the table index and the scale
    factor per element (vectorized: the table lookups, gathers, are a loop of their own)."""
    for i in range(n):
        z = row[b0 + i]
        dh = z - m
        bb = dh - z  # TwoSum(z, -m): the exact low part
        dl = (z - (dh - bb)) + (-m - bb)
        dl = dl if (dl - dl) == 0.0 else 0.0  # not finite: 0
        x = dh
        if clamp:
            x = dh if dh > lowest else lowest
            dl = dl if dh >= lowest else 0.0
        t = x * inv
        t = t + _MAGIC
        kf = t - _MAGIC
        a = x - kf * c1
        b = kf * c2
        tb = _bits(t)
        jb[i] = tb & (_N - 1)
        r = a - b
        r = r + dl
        p = r * (1 / 24)
        p = p + 1 / 6
        p = p * r
        p = p + 0.5
        p = p * (r * r)
        rb[i] = r
        pb[i] = p
        kbits = (tb >> _T) + bias
        if clamp:
            kbits = kbits if kbits > 0 else 0
        fb[i] = _from_bits(kbits << 52)


@njit(**_OPTS)
def _lookup(jb: np.ndarray, n: int, th: np.ndarray, tl: np.ndarray, hb: np.ndarray,
            lb: np.ndarray) -> None:
    for i in range(n):
        k = jb[i]
        hb[i] = th[k]
        lb[i] = tl[k]


@njit(inline="always", **_OPTS)
def _exp_end(h: float, low: float, r: float, p: float, factor: float) -> tuple[float, float]:
    """The end of kernels._exp_into (not precise): with the table entry (h, low), r and
    P(r) of :func:`_exp_parts`, hi + lo = exp(d) 2**scale."""
    r = r * h
    p = p * h
    p = p + low
    s = h + r
    e = r - (s - h)
    e = e + p
    return s * factor, e * factor


@njit(**_OPTS)
def _grid_pieces(n: int, skip: int, rb: np.ndarray, pb: np.ndarray, fb: np.ndarray,
                 hb: np.ndarray, lb: np.ndarray, sig: np.ndarray, q: np.ndarray,
                 keep: bool, kh: np.ndarray, kl: np.ndarray) -> None:
    """The second half of the exp kernel (hi + lo = exp(d) 2**scale), hi zeroed at index
    ``skip`` (the argmax), then doubledouble._grid_add's pieces: q[0] level 1 (hi),
    q[2l - 1] and q[2l] level l + 1 (hi's rest, lo's rest). With ``keep``, hi and lo
    are also written to kh and kl."""
    levels = sig.shape[0]
    s1 = sig[0]
    s2 = sig[1]
    s3 = sig[2]
    s4 = sig[3] if levels > 3 else 0.0
    for i in range(n):
        hi, lo = _exp_end(hb[i], lb[i], rb[i], pb[i], fb[i])
        hi = 0.0 if i == skip else hi
        if keep:
            kh[i] = hi
            kl[i] = lo
        t = hi + lo  # Fast2Sum
        lo = lo - (t - hi)
        hi = t
        v = (hi + s1) - s1
        q[0, i] = v
        hi = hi - v
        v = (hi + s2) - s2
        q[1, i] = v
        hi = hi - v
        v = (lo + s2) - s2
        q[2, i] = v
        lo = lo - v
        q[3, i] = (hi + s3) - s3
        q[4, i] = (lo + s3) - s3
        if levels > 3:
            v = q[3, i]
            hi = hi - v
            v = q[4, i]
            lo = lo - v
            q[5, i] = (hi + s4) - s4
            q[6, i] = (lo + s4) - s4


@njit(**_OPTS)
def _sums(z: np.ndarray, m: np.ndarray, j: np.ndarray, sigmas: np.ndarray, clamp: bool,
          lowest: float, shift: int, inv: float, c1: float, c2: float, th: np.ndarray,
          tl: np.ndarray, block: int, acc: np.ndarray, plain: bool, keep: bool,
          k1: np.ndarray, k2: np.ndarray) -> None:
    """acc[l, r] += the level-l grid pieces of exp(z[r] - m[r]) 2**shift off the argmax
    j[r]: the longdouble work's pairs (_grid_pieces, terms kept into k1, k2) or, with
    ``plain``, the float64 work's values scaled back (_plain_pieces, kept into k1)."""
    rows, k = z.shape
    levels = sigmas.shape[0]
    bias = 1023 + shift - (_MAGIC_BITS >> _T)
    scale = 2.0 ** -shift
    rb = np.empty(block)
    pb = np.empty(block)
    fb = np.empty(block)
    hb = np.empty(block)
    lb = np.empty(block)
    jb = np.empty(block, np.int64)
    pieces = levels if plain else 2 * levels - 1
    q = np.empty((pieces, block))
    level_of = np.empty(pieces, np.int64)  # the grid of each row of q
    for i in range(pieces):
        level_of[i] = i if plain else (i + 1) // 2
    sig = np.empty(levels)
    for r in range(rows):
        row = z[r]
        for level in range(levels):
            sig[level] = sigmas[level, r]
        for b0 in range(0, k, block):
            n = min(block, k - b0)
            _exp_parts(row, b0, n, m[r], clamp, lowest, bias, inv, c1, c2, rb, pb, jb, fb)
            _lookup(jb, n, th, tl, hb, lb)
            skip = j[r] - b0
            if plain:
                _plain_pieces(n, skip, scale, rb, pb, fb, hb, lb, sig, q, keep,
                              k1[r, b0:b0 + n] if keep else hb)
            else:
                _grid_pieces(n, skip, rb, pb, fb, hb, lb, sig, q, keep,
                             k1[r, b0:b0 + n] if keep else hb,
                             k2[r, b0:b0 + n] if keep else lb)
            for i in range(pieces):
                acc[level_of[i], r] += _total(q[i], n)


@njit(**_OPTS)
def row_sums(z: np.ndarray, m: np.ndarray, j: np.ndarray, sigmas: np.ndarray, clamp: bool,
             lowest: float, scale: int, inv: float, c1: float, c2: float, th: np.ndarray,
             tl: np.ndarray, block: int, acc: np.ndarray, keep: bool, eh: np.ndarray,
             el: np.ndarray) -> None:
    """acc[l, r] += the level-l grid pieces of exp(z[r] - m[r]) 2**scale, the argmax j[r]
    left out (extended._Extended.sums with doubledouble._grid_add); with ``keep``, the
    terms (hi zeroed at the argmax) into eh and el."""
    _sums(z, m, j, sigmas, clamp, lowest, scale, inv, c1, c2, th, tl, block, acc, False,
          keep, eh, el)


@njit(**_OPTS)
def _plain_pieces(n: int, skip: int, scale: float, rb: np.ndarray, pb: np.ndarray,
                  fb: np.ndarray, hb: np.ndarray, lb: np.ndarray, sig: np.ndarray,
                  q: np.ndarray, keep: bool, ke: np.ndarray) -> None:
    """plain._plain_exp_into's end (e = (hi + lo) 2**-_PLAIN_S), e zeroed at ``skip``, and
    its pieces on the grids (q[l], level l + 1; no low parts). With ``keep``, e is also
    written to ke (1 at ``skip``, as plain._Plain.sums keeps it)."""
    levels = sig.shape[0]
    s1 = sig[0]
    s2 = sig[1]
    s3 = sig[2]
    s4 = sig[3] if levels > 3 else 0.0
    for i in range(n):
        hi, lo = _exp_end(hb[i], lb[i], rb[i], pb[i], fb[i])
        v = (hi + lo) * scale
        if keep:
            ke[i] = 1.0 if i == skip else v
        v = 0.0 if i == skip else v
        w = (v + s1) - s1
        q[0, i] = w
        v = v - w
        w = (v + s2) - s2
        q[1, i] = w
        v = v - w
        w = (v + s3) - s3
        q[2, i] = w
        if levels > 3:
            v = v - w
            q[3, i] = (v + s4) - s4


@njit(**_OPTS)
def plain_row_sums(z: np.ndarray, m: np.ndarray, j: np.ndarray, sigmas: np.ndarray,
                   lowest: float, shift: int, inv: float, c1: float, c2: float,
                   th: np.ndarray, tl: np.ndarray, block: int, acc: np.ndarray, keep: bool,
                   e: np.ndarray) -> None:
    """acc[l, r] += the level-l grid pieces of exp(z[r] - m[r]), the argmax j[r] left out
    (plain._Plain.sums: the exp kernel clamped, scaled by 2**shift and back); with
    ``keep``, the terms (1 at the argmax) into e."""
    _sums(z, m, j, sigmas, True, lowest, shift, inv, c1, c2, th, tl, block, acc, True, keep,
          e, e)


# ------------------------------------------------------------------ longdouble words


@njit(inline="always", **_OPTS)
def _ld_fast(oh: float, ol: float) -> tuple[int, int, bool]:
    """oh + ol (|ol| < |oh| / 2) rounded once to x87 longdouble, as its two words (the
    significand, then sign and exponent), without branches (so that the loops it is in
    are vectorized); and whether that does not apply (oh not finite, or below 2**-923):
    then :func:`_ld_words` must.

    ol is counted in units of the 64th bit (rounded to nearest, ties to even: the
    significand above it is even). Where oh is a power of two and ol of the other sign,
    the value lies in the binade below, whose unit is half as large, unless ol rounds to
    nothing there."""
    s = oh + ol  # Fast2Sum: the same value, normalized
    ol = ol - (s - oh)
    b = _bits(s)
    eb = (b >> 52) & 2047
    neg = b < 0
    v = -ol if neg else ol
    ebc = min(max(eb, 100), 2046)
    frac = b & 0xFFFFFFFFFFFFF
    mant = frac | (1 << 52)
    t1 = v * _from_bits((2109 - ebc) << 52) + _MAGIC  # ol in units of 2**(E - 63)
    m1 = (mant << 11) + (_bits(t1) - _MAGIC_BITS)
    t2 = v * _from_bits((2110 - ebc) << 52) + _MAGIC  # ... and of 2**(E - 64)
    u2 = _bits(t2) - _MAGIC_BITS
    m2 = (mant << 12) + u2
    word = (eb + (16383 - 1023)) | (np.int64(neg) << 15)
    below = (frac == 0) & (u2 < 0)
    return (m2 if below else m1), (word - 1 if below else word), (eb < 100) | (eb == 2047)


@njit(**_OPTS)
def _ld_slow(oh: float, ol: float) -> tuple[int, int]:
    """:func:`_ld_fast` for a normalized pair with oh finite and below 2**-923 (zero and
    float64 subnormals too)."""
    neg = _bits(oh) < 0
    sign = np.int64(neg) << 15
    if oh == 0.0:
        return np.int64(0), sign
    v = -ol if neg else ol
    f, e2 = math.frexp(abs(oh))  # |oh| = f 2**e2, f in [1/2, 1): exponent e2 - 1
    mant = np.int64(f * 9007199254740992.0)  # 2**53 f: 53 bits
    u2 = np.int64(np.rint(math.ldexp(v, 65 - e2)))
    if mant == (1 << 52) and u2 < 0:
        return (mant << 12) + u2, np.int64(e2 - 2 + 16383) | sign
    m1 = (mant << 11) + np.int64(np.rint(math.ldexp(v, 64 - e2)))
    return m1, np.int64(e2 - 1 + 16383) | sign


@njit(**_OPTS)
def _ld_words(oh: float, ol: float) -> tuple[int, int]:
    """oh + ol (|ol| < |oh| / 2) rounded once to x87 longdouble, as its two words, for any
    oh (NaN and infinities as they are in oh)."""
    w0, w1, other = _ld_fast(oh, ol)
    if not other:
        return w0, w1
    s = oh + ol
    ol = ol - (s - oh)
    oh = s
    b = _bits(oh)
    if ((b >> 52) & 2047) == 2047:  # not finite: oh itself
        sign = np.int64(b < 0) << 15
        if (b & 0xFFFFFFFFFFFFF) == 0:
            return np.int64(-9223372036854775808), sign | 32767
        return np.int64(-4611686018427387904), sign | 32767
    return _ld_slow(oh, ol)


@njit(inline="always", **_OPTS)
def _fused_pair(x: float, mb: float, ml: float) -> tuple[float, float]:
    """(z - mb) - ml as a pair: TwoSum, then ml."""
    oh = x - mb
    bb = oh - x
    ol = (x - (oh - bb)) + (-mb - bb)
    return oh, ol - ml


@njit(inline="always", **_OPTS)
def _split_pair(x: float, m: float, lb: float, lr: float, clamp: bool) -> tuple[float, float]:
    """((d - lb) + dl) - lr as a pair, d = dh + dl = z - m (dl not finite: 0 with clamp)."""
    dh = x - m
    bb = dh - x
    dl = (x - (dh - bb)) + (-m - bb)
    if clamp:
        dl = dl if (dl - dl) == 0.0 else 0.0
    oh = dh - lb
    bb = oh - dh
    ol = dh - (oh - bb)
    ol = ol - (bb + lb)
    ol = ol + dl
    return oh, ol - lr


@njit(**_OPTS)
def _fused_row(row: np.ndarray, mb: float, ml: float, o: np.ndarray) -> int:
    """o: the longdouble words of (z - mb) - ml per element; the count of elements
    _ld_fast left to _ld_words."""
    bad = 0
    for i in range(row.size):
        oh, ol = _fused_pair(row[i], mb, ml)
        w0, w1, slow = _ld_fast(oh, ol)
        o[2 * i] = w0
        o[2 * i + 1] = w1
        bad += slow
    return bad


@njit(**_OPTS)
def _split_row(row: np.ndarray, m: float, lb: float, lr: float, clamp: bool,
               o: np.ndarray) -> int:
    """o: the longdouble words of ((d - lb) + dl) - lr per element, d = dh + dl = z - m."""
    bad = 0
    for i in range(row.size):
        oh, ol = _split_pair(row[i], m, lb, lr, clamp)
        w0, w1, slow = _ld_fast(oh, ol)
        o[2 * i] = w0
        o[2 * i + 1] = w1
        bad += slow
    return bad


@njit(**_OPTS)
def log_softmax_rows(z: np.ndarray, m: np.ndarray, big_h: np.ndarray, big_l: np.ndarray,
                     fused: np.ndarray, lh: np.ndarray, ll: np.ndarray, clamp: bool,
                     out: np.ndarray) -> None:
    """out[r] (int64 words of longdouble): z - M where fused[r], else (d - L) + dl, with
    extended._Extended.log_softmax's operations."""
    rows, k = z.shape
    for r in range(rows):
        row = z[r]
        o = out[r]
        if fused[r]:
            bad = _fused_row(row, big_h[r], big_l[r], o)
        else:
            bad = _split_row(row, m[r], lh[r], ll[r], clamp, o)
        if bad == 0:
            continue
        for i in range(k):  # the elements _ld_fast does not take, again
            if fused[r]:
                oh, ol = _fused_pair(row[i], big_h[r], big_l[r])
            else:
                oh, ol = _split_pair(row[i], m[r], lh[r], ll[r], clamp)
            eb = (_bits(oh + ol) >> 52) & 2047
            if eb < 100 or eb == 2047:
                o[2 * i], o[2 * i + 1] = _ld_words(oh, ol)
