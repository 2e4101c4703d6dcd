"""numba kernels of :mod:`xentcheck.references.fast.jit` (imported only where numba is).

Each loop transcribes a NumPy block computation of :mod:`~xentcheck.references.fast.extended`
and :mod:`~xentcheck.references.fast.kernels` operation for operation (float64 operations
are correctly rounded in both, and none is fused or reordered here), except the sums of
grid pieces, which are exact: here they are counted in integers (see "row sums" below).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from xentcheck.references.fast._numba_options import NJIT_OPTIONS as _OPTS
from xentcheck.references.fast.kernels import _tables

_MAGIC = 1.5 * 2.0**52
_MAGIC_BITS = 0x4338000000000000
_T = 13
_N = 1 << _T
#: The exp table, as constants of the compiled code: loads from it cannot alias a store
#: (passed as arguments, they could, and a loop that writes the terms was not vectorized).
_TH = _tables().th
_TL = _tables().tl


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


# ------------------------------------------------------------------ row extremes
#
# The row maxima, minima and argmax of finite logits in one pass, on integer keys of the
# values (the bits of x >= 0 as they are, -(bits of |x|) below: the order of the values,
# with -0 and +0 one key), so that the maxima and minima are integer reductions, which
# vectorize. Each block of _B logits keeps its largest key; the argmax is then searched
# in the first block that holds the row's, and the largest entry off it is the largest
# of the other blocks' and of its own block without it.

_B = 1024


@njit(inline="always", **_OPTS)
def _key(b: int, mag: int) -> int:
    return b if b >= 0 else -(b & mag)


@njit(**_OPTS)
def row_extremes(bits: np.ndarray, mag: int, ones: int, j: np.ndarray, low: np.ndarray,
                 second: np.ndarray, blocks: np.ndarray) -> bool:
    """Per row of ``bits`` (the float64 or float32 logits as int64 or int32): the first
    index j of the largest value, the keys of the smallest (low) and of the largest off
    column j (second; the int64 minimum where the row has one entry);
    False (and nothing meaningful) if an entry is not finite (its exponent bits ``ones``
    all set). ``mag`` masks the magnitude bits; ``blocks`` (N, K // _B + 1) is work."""
    rows, k = bits.shape
    whole = k // _B
    lowest = np.int64(-9223372036854775808)
    highest = np.int64(9223372036854775807)
    special = 0
    for r in range(rows):
        row = bits[r]
        hi = lowest
        lo = highest
        for b in range(whole + 1):
            start = b * _B
            bm = lowest
            if b < whole:
                for i in range(_B):  # a literal trip count: this loop vectorizes
                    x = np.int64(row[start + i])
                    key = _key(x, mag)
                    bm = key if key > bm else bm
                    lo = key if key < lo else lo
                    special += (x & ones) == ones
            else:
                for i in range(start, k):
                    x = np.int64(row[i])
                    key = _key(x, mag)
                    bm = key if key > bm else bm
                    lo = key if key < lo else lo
                    special += (x & ones) == ones
            blocks[r, b] = bm
            hi = bm if bm > hi else hi
        low[r] = lo
        at = 0
        while blocks[r, at] != hi:
            at += 1
        first = at * _B
        while _key(np.int64(row[first]), mag) != hi:
            first += 1
        j[r] = first
        off = lowest
        for b in range(whole + 1):
            if b != at:
                off = blocks[r, b] if blocks[r, b] > off else off
        for i in range(at * _B, min(k, at * _B + _B)):
            if i != first:
                key = _key(np.int64(row[i]), mag)
                off = key if key > off else off
        second[r] = off
    return special == 0


# ------------------------------------------------------------------ row sums
#
# One loop per row, with no work arrays: each element's exp(d) 2**scale is computed, cut
# into its pieces on the row's grids, and each piece counted in units of its grid. The
# grid of a level is ulp(sigma) for sigma = 1.5 2**k, and every x cut there has |x| <=
# 2**(k-1), so x + sigma stays in sigma's binade (or is its top, 2**(k+1)), where the bit
# patterns of float64 are consecutive integers: bits(x + sigma) - bits(sigma) is the
# piece's count, exactly. The loop adds the bits of x + sigma in int64, wrapping (exact
# modulo 2**64, so in any order: the loop vectorizes, reductions included, without
# licence to reassociate floating point), and takes the parts' bits(sigma) off once per
# row; the row's count is below 2**52, and times its unit it is the exact sum NumPy's
# engine gets by adding the same pieces in float64.
# Intermediate arrays (the blocks of r, P(r), table entries and pieces this loop once
# wrote and read back) made the loop's speed hang on where the heap put them: their
# stores and loads collided in the cache, 8 to 70 ns per element, run to run.


@njit(inline="always", **_OPTS)
def _exp_pair(z: float, m: float, clamp: bool, lowest: float, bias: int, inv: float,
              c1: float, c2: float) -> tuple[float, float]:
    """hi + lo = exp(d) 2**scale, d = z - m as the exact pair of extended._d_block, with
    the operations of kernels._exp_into (not precise) after extended._exp_block."""
    dh = z - m
    bb = dh - z  # TwoSum(z, -m): the exact low part
    dl = (z - (dh - bb)) + (-m - bb)
    x = dh
    if clamp:  # dl is finite where dh >= lowest: it is not where z - m overflows
        x = dh if dh > lowest else lowest
        dl = dl if dh >= lowest else 0.0
    t = x * inv
    t = t + _MAGIC
    kf = t - _MAGIC
    a = x - kf * c1
    b = kf * c2
    tb = _bits(t)
    jj = tb & (_N - 1)
    r = a - b
    r = r + dl
    p = r * (1 / 24)
    p = p + 1 / 6
    p = p * r
    p = p + 0.5
    p = p * (r * r)
    kbits = (tb >> _T) + bias
    if clamp:
        kbits = kbits if kbits > 0 else 0
    factor = _from_bits(kbits << 52)
    h = _TH[jj]
    low = _TL[jj]
    r = r * h
    p = p * h
    p = p + low
    s = h + r
    e = r - (s - h)
    e = e + p
    return s * factor, e * factor


@njit(inline="always", **_OPTS)
def _take(x: float, sigma: float) -> tuple[int, float]:
    """The piece of x on sigma's grid (Rump's extraction), as the bits of x + sigma (its
    count plus bits(sigma)), and what is left of x (exact)."""
    t = x + sigma
    return _bits(t), x - (t - sigma)


@njit(**_OPTS)
def _scalers(sigmas: np.ndarray, r: int, unit: np.ndarray, base: np.ndarray) -> None:
    """Per level of row r, sigma = 1.5 2**k: unit = 2**(k - 52), the grid's unit (subnormal
    at the deepest grids), and base = bits(sigma), a piece's count being bits(x + sigma)
    - base."""
    for level in range(sigmas.shape[0]):
        sigma = sigmas[level, r]
        k = math.frexp(sigma)[1] - 1
        unit[level] = math.ldexp(1.0, k - 52)
        base[level] = _bits(sigma)


@njit(inline="always", **_OPTS)
def _pair_counts(hi: float, lo: float, g: Any, four: bool) -> tuple[int, int, int, int]:
    """The bits of hi + lo's pieces per level, added (doubledouble._grid_add: Fast2Sum,
    level 1 takes hi, level l + 1 what is left of hi and of lo); g = sigma_1..4."""
    t = hi + lo  # Fast2Sum
    lo = lo - (t - hi)
    c1, hi = _take(t, g[0])
    c2, hi = _take(hi, g[1])
    b, lo = _take(lo, g[1])
    c2 += b
    c3, hi = _take(hi, g[2])
    b, lo = _take(lo, g[2])
    c3 += b
    c4 = np.int64(0)
    if four:
        c4 = _take(hi, g[3])[0] + _take(lo, g[3])[0]
    return c1, c2, c3, c4


@njit(inline="always", **_OPTS)
def _value_counts(v: float, g: Any, four: bool) -> tuple[int, int, int, int]:
    """The bits of a float64 value's pieces per level (no low part)."""
    c1, v = _take(v, g[0])
    c2, v = _take(v, g[1])
    c3, v = _take(v, g[2])
    c4 = np.int64(0)
    if four:
        c4 = _take(v, g[3])[0]
    return c1, c2, c3, c4


# The four loops over a row (pairs or values, terms kept or not) are written out: a loop
# that may store is vectorized only where LLVM can check its stores against its loads,
# so the one that keeps nothing must not contain the stores at all.


@njit(**_OPTS)
def _pairs(row: np.ndarray, m: float, skip: int, clamp: bool, lowest: float, bias: int,
           inv: float, c1: float, c2: float, g: Any, four: bool) -> Any:
    q = (np.int64(0), np.int64(0), np.int64(0), np.int64(0))
    for i in range(row.size):
        hi, lo = _exp_pair(row[i], m, clamp, lowest, bias, inv, c1, c2)
        c = _pair_counts(0.0 if i == skip else hi, lo, g, four)
        q = (q[0] + c[0], q[1] + c[1], q[2] + c[2], q[3] + c[3])
    return q


@njit(**_OPTS)
def _pairs_kept(row: np.ndarray, m: float, skip: int, clamp: bool, lowest: float,
                bias: int, inv: float, c1: float, c2: float, g: Any, four: bool,
                kh: np.ndarray, kl: np.ndarray) -> Any:
    q = (np.int64(0), np.int64(0), np.int64(0), np.int64(0))
    for i in range(row.size):
        hi, lo = _exp_pair(row[i], m, clamp, lowest, bias, inv, c1, c2)
        hi = 0.0 if i == skip else hi
        kh[i] = hi
        kl[i] = lo
        c = _pair_counts(hi, lo, g, four)
        q = (q[0] + c[0], q[1] + c[1], q[2] + c[2], q[3] + c[3])
    return q


@njit(**_OPTS)
def _values(row: np.ndarray, m: float, skip: int, lowest: float, bias: int, inv: float,
            c1: float, c2: float, scale: float, g: Any, four: bool) -> Any:
    q = (np.int64(0), np.int64(0), np.int64(0), np.int64(0))
    for i in range(row.size):
        hi, lo = _exp_pair(row[i], m, True, lowest, bias, inv, c1, c2)
        v = (hi + lo) * scale
        c = _value_counts(0.0 if i == skip else v, g, four)
        q = (q[0] + c[0], q[1] + c[1], q[2] + c[2], q[3] + c[3])
    return q


@njit(**_OPTS)
def _values_kept(row: np.ndarray, m: float, skip: int, lowest: float, bias: int,
                 inv: float, c1: float, c2: float, scale: float, g: Any, four: bool,
                 ke: np.ndarray) -> Any:
    q = (np.int64(0), np.int64(0), np.int64(0), np.int64(0))
    for i in range(row.size):
        hi, lo = _exp_pair(row[i], m, True, lowest, bias, inv, c1, c2)
        v = (hi + lo) * scale
        ke[i] = 1.0 if i == skip else v
        c = _value_counts(0.0 if i == skip else v, g, four)
        q = (q[0] + c[0], q[1] + c[1], q[2] + c[2], q[3] + c[3])
    return q


@njit(**_OPTS)
def _sums(z: np.ndarray, m: np.ndarray, j: np.ndarray, sigmas: np.ndarray, clamp: bool,
          lowest: float, shift: int, inv: float, c1: float, c2: float, acc: np.ndarray,
          plain: bool, keep: bool, k1: np.ndarray, k2: np.ndarray) -> None:
    """acc[l, r] += the sum of the level-l grid pieces of exp(z[r] - m[r]) 2**shift off
    the argmax j[r]: of the longdouble work's pairs (the terms, hi zeroed at the argmax,
    kept into k1, k2) or, with ``plain``, of the float64 work's values scaled back
    (plain._plain_exp_into's e = (hi + lo) 2**-shift, kept into k1 with 1 at the argmax)."""
    levels = sigmas.shape[0]
    four = levels > 3
    bias = 1023 + shift - (_MAGIC_BITS >> _T)
    scale = 2.0 ** -shift
    unit = np.zeros(4)
    base = np.zeros(4, np.int64)
    k = z.shape[1]
    for r in range(z.shape[0]):
        _scalers(sigmas, r, unit, base)
        g = (sigmas[0, r], sigmas[1, r], sigmas[2, r], sigmas[3, r] if four else 1.5)
        if plain and keep:
            q = _values_kept(z[r], m[r], j[r], lowest, bias, inv, c1, c2, scale, g, four,
                             k1[r])
        elif plain:
            q = _values(z[r], m[r], j[r], lowest, bias, inv, c1, c2, scale, g, four)
        elif keep:
            q = _pairs_kept(z[r], m[r], j[r], clamp, lowest, bias, inv, c1, c2, g, four,
                            k1[r], k2[r])
        else:
            q = _pairs(z[r], m[r], j[r], clamp, lowest, bias, inv, c1, c2, g, four)
        for level in range(levels):  # one piece per value, two per pair below level 1
            parts = k if plain or level == 0 else 2 * k
            count = q[level] - parts * base[level]  # modulo 2**64; below 2**52: exact
            acc[level, r] += np.float64(count) * unit[level]


@njit(**_OPTS)
def row_sums(z: np.ndarray, m: np.ndarray, j: np.ndarray, sigmas: np.ndarray, clamp: bool,
             lowest: float, scale: int, inv: float, c1: float, c2: float, acc: np.ndarray,
             keep: bool, eh: np.ndarray, el: np.ndarray) -> None:
    """acc[l, r] += the level-l grid pieces of exp(z[r] - m[r]) 2**scale, the argmax j[r]
    left out (extended._Extended.sums with doubledouble._grid_add); with ``keep``, the
    terms (hi zeroed at the argmax) into eh and el."""
    _sums(z, m, j, sigmas, clamp, lowest, scale, inv, c1, c2, acc, False, keep, eh, el)


@njit(**_OPTS)
def plain_row_sums(z: np.ndarray, m: np.ndarray, j: np.ndarray, sigmas: np.ndarray,
                   lowest: float, shift: int, inv: float, c1: float, c2: float,
                   acc: np.ndarray, keep: bool, e: np.ndarray) -> None:
    """acc[l, r] += the level-l grid pieces of exp(z[r] - m[r]), the argmax j[r] left out
    (plain._Plain.sums: the exp kernel clamped, scaled by 2**shift and back); with
    ``keep``, the terms (1 at the argmax) into e."""
    _sums(z, m, j, sigmas, True, lowest, shift, inv, c1, c2, acc, True, keep, e, e)


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
