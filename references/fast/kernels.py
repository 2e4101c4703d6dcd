"""The exp and log kernels of the fast tier, and the blocks of work they run on.

exp(d) is table-driven (d = k ln2/8192 + r, |r| <= 2**-14.5, an 8192-entry table of
2**(k/8192) as float64 pairs and a degree-4 polynomial in r), written into preallocated
work arrays block by block (:func:`_blocks`, :func:`_scratch`); :func:`_to_ld_into`
rounds a double-double to longdouble with integer operations; :func:`_log1p_dd` and
:func:`log_dd` refine a portable float64 seed by one Newton step on the exp kernel. The
package docstring (:mod:`xentcheck.references.fast`) gives the error analysis.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import NamedTuple

import mpmath
import numpy as np

from xentcheck.references import portable
from xentcheck.references.fast.doubledouble import (
    _F,
    _dd_add,
    _dd_div,
    _dd_to_ld,
    _fast_two_sum,
    _two_sum,
)

# --------------------------------------------------------------------------- constants

#: Elements per block: NumPy's per-call overhead (~1 µs) stays small next to an operation
#: on a block, and the kernel's ~15 work arrays (4 MiB) stay in cache (measured: 16384 to
#: 65536 are within noise of each other, 8192 is 25% slower).
_BLOCK = 32768
#: log2 of the exp table size: |r| <= ln2 / 16384 = 2**-14.5 after the reduction.
_T = 13
_N = 1 << _T
#: Every exp-proportional quantity is carried times 2**_S: exp(d) for d down to -797 and
#: every product of it with a target >= 2**-600 stay normal float64 numbers.
_S = 128
#: Below this d (in the kernel's input) exp(d) 2**_S is below float64's range: the scale
#: factor is clamped to 0 (and -inf is replaced by it).
_DEEP = -790.0
_CLAMP = -1.0e4
#: Bit 63: the explicit integer bit of an x87 significand (:func:`_to_ld_into`).
_SIGN = np.uint64(1 << 63)


class _Tables(NamedTuple):
    """The exp kernel's constants (see :func:`_tables`)."""

    inv: float  # N / ln2
    c1: float  # ln2 / N to 26 bits: k c1 is exact for |k| < 2**27
    c2: float  # ln2 / N - c1, rounded ...
    c3: float  # ... and the rest
    th: np.ndarray  # 2**(i/N) rounded to float64 ...
    tl: np.ndarray  # ... and the rest
    th44: np.ndarray  # 2**(i/N) truncated to 44 bits (th44 r exact for r of 9 bits) ...
    tl44: np.ndarray  # ... and the rest, < 2**-43


@functools.cache
def _tables() -> _Tables:
    """The exp kernel's constants, computed once: 2**(i/N) as fixed-point integers of 200
    fractional bits (successive products by 2**(1/N) from mpmath; error < 2**-185), split
    into float64 parts with Python's correctly rounded int-to-float conversion."""
    bits = 200
    with mpmath.workprec(bits + 40):
        ln2n = mpmath.log(2) / _N
        step = int(mpmath.nint(mpmath.ldexp(mpmath.exp(ln2n), bits)))
        mant, ex = mpmath.frexp(ln2n)
        c1 = float(mpmath.ldexp(mpmath.floor(mpmath.ldexp(mant, 26)), ex - 26))
        c2 = float(ln2n - c1)
        c3 = float(ln2n - c1 - c2)
        inv = float(_N / mpmath.log(2))
    one = 1 << bits
    th, tl, th44, tl44 = (np.empty(_N) for _ in range(4))
    v = one
    for i in range(_N):  # v = 2**(i/N) 2**bits, in [2**bits, 2**(bits + 1))
        h = math.ldexp(float(v), -bits)
        rest = v - (int(math.ldexp(h, 52)) << (bits - 52))
        th[i], tl[i] = h, math.ldexp(float(rest), -bits)
        top = v >> (bits - 43)  # 44 bits: 1 before the point, 43 after
        th44[i] = math.ldexp(float(top), -43)
        tl44[i] = math.ldexp(float(v - (top << (bits - 43))), -bits)
        v = (v * step + (one >> 1)) >> bits
    return _Tables(inv, c1, c2, c3, th, tl, th44, tl44)


# ----------------------------------------------------------------------- block kernels


class _Scratch:
    """Work arrays of one block shape (reused across blocks of that shape)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.f = [np.empty(shape) for _ in range(16)]
        self.i = [np.empty(shape, np.int64) for _ in range(2)]


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...]) -> _Scratch:
    """The work arrays of a block shape, kept per thread across calls (a few shapes):
    allocating ~2 MiB afresh per call costs more than a block's arithmetic (page faults)."""
    cache: dict[tuple[int, ...], _Scratch] | None = getattr(_SCRATCH, "cache", None)
    if cache is None:
        cache = _SCRATCH.cache = {}
    ws = cache.get(shape)
    if ws is None:
        if len(cache) >= 4:
            del cache[next(iter(cache))]
        ws = cache[shape] = _Scratch(shape)
    return ws


def _blocks(n: int, k: int) -> list[tuple[slice, slice]]:
    """(rows, columns) blocks of about _BLOCK elements covering an (n, k) array."""
    if k >= _BLOCK:
        count = -(-k // _BLOCK)
        width = -(-k // count)
        return [(slice(r, r + 1), slice(c, min(c + width, k)))
                for r in range(n) for c in range(0, k, width)]
    rows = max(1, _BLOCK // k)
    return [(slice(r, min(r + rows, n)), slice(0, k)) for r in range(0, n, rows)]


_MAGIC = 1.5 * 2.0**52  # x + _MAGIC rounds x to an integer, readable from the low bits
_MAGIC_BITS = int(np.array(_MAGIC).view(np.int64))


def _exp_into(x: np.ndarray, dl: np.ndarray | None, hi: np.ndarray, lo: np.ndarray,
              ws: _Scratch, scale: int, clamp: bool, precise: bool = False) -> None:
    """hi + lo = exp(x + dl) 2**scale, relative error below 2**-66 (|x| <= 745, |dl| <=
    2**-40; ~2**-74 with ``precise``).

    x = k ln2/N + r with |r| <= 2**-14.5 (Cody-Waite: k c1 is exact, c2 carries the rest of
    ln2/N) and exp(x) = 2**(k/N) exp(r) = 2**(k/N) (1 + r + P(r)), P to r**4/24 (2**-79
    left out). The leading part TH + TH r is a Fast2Sum; TH r and r itself are rounded
    (2**-67.5 relative each), TL r is left out (2**-67.5). With ``precise`` r is split as
    ra + rlow with ra on a 2**-23 grid (9 bits) so that the 44-bit table TH44 times ra is
    exact, and every term down to 2**-76 is kept. The pair is not normalized (|lo| up to
    2**-14 hi). With ``clamp`` the scale factor is clamped to 0 below float64's range (x
    must then be >= _CLAMP and not NaN)."""
    tab = _tables()
    t, kf, a, b, r, p, th = ws.f[9:16]
    tl = lo
    kbits, jj = ws.i
    np.multiply(x, tab.inv, out=t)
    t += _MAGIC
    np.subtract(t, _MAGIC, out=kf)  # k = rint(x N / ln2)
    np.multiply(kf, tab.c1, out=a)
    np.subtract(x, a, out=a)  # exact (Sterbenz)
    np.multiply(kf, tab.c2, out=b)
    tb = t.view(np.int64)
    np.bitwise_and(tb, _N - 1, out=jj)
    if not precise:
        np.subtract(a, b, out=r)
        if dl is not None:
            r += dl
        np.multiply(r, 1 / 24, out=p)
        p += 1 / 6
        p *= r
        p += 0.5
        np.multiply(r, r, out=a)
        p *= a  # P(r) = r**2 (1/2 + r/6 + r**2/24)
        tab.th.take(jj, out=th, mode="clip")
        tab.tl.take(jj, out=tl, mode="clip")
        r *= th  # TH r, rounded
        p *= th
        p += tl  # TH P + TL
        np.add(th, r, out=hi)
        np.subtract(hi, th, out=th)
        np.subtract(r, th, out=lo)
        lo += p
    else:
        ra, rlow = ws.f[7], ws.f[8]
        np.add(a, 805306368.0, out=ra)  # 1.5 * 2**29: rounds a to the 2**-23 grid
        ra -= 805306368.0
        a -= ra  # exact
        np.subtract(a, b, out=rlow)
        np.multiply(kf, tab.c3, out=b)
        rlow -= b
        if dl is not None:
            rlow += dl
        np.add(ra, rlow, out=r)
        np.multiply(r, 1 / 24, out=p)
        p += 1 / 6
        p *= r
        p += 0.5
        np.multiply(r, r, out=a)
        p *= a
        r += p  # r + P: multiplies TL44
        p += rlow  # the tail beyond ra
        tab.th44.take(jj, out=th, mode="clip")
        tab.tl44.take(jj, out=tl, mode="clip")
        ra *= th  # exact
        p *= th
        r += 1.0
        r *= tl
        r += p  # TH44 tail + TL44 (1 + r + P)
        np.add(th, ra, out=hi)
        np.subtract(hi, th, out=th)
        np.subtract(ra, th, out=lo)
        lo += r
    np.right_shift(tb, _T, out=kbits)
    kbits += 1023 + scale - (_MAGIC_BITS >> _T)
    if clamp:
        np.maximum(kbits, 0, out=kbits)
    kbits <<= 52
    factor = kbits.view(_F)
    hi *= factor
    lo *= factor


def _exp_dd(x: np.ndarray, dl: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """exp(x + dl) as a normalized double-double, for a few values (rows), |x| <= 700."""
    x = np.asarray(x, _F)
    hi, lo = np.empty_like(x), np.empty_like(x)
    with np.errstate(all="ignore"):
        _exp_into(x, dl, hi, lo, _scratch(x.shape), 0, False, precise=True)
    return _fast_two_sum(hi, lo)


def _to_ld_into(hi: np.ndarray, lo: np.ndarray, out: np.ndarray, ws: _Scratch,
                shift: int, check_range: bool = True, sign: int = 0) -> None:
    """out = (hi + lo) 2**-shift rounded once to longdouble, for |lo| < |hi| / 2.

    The 64-bit significand is built with integer operations (hi's 53 bits, then lo in
    units of the 64th bit, rounded to nearest even). The elements where that does not
    apply take x87 arithmetic: a carry out of the binade, hi a power of two with lo of the
    other sign (the value lies in the binade below, whose unit is half as large) and, with
    ``check_range``, hi zero, below 2**-960 or not finite (without it the caller
    overwrites such elements). ``sign`` -1 or 1 promises the sign of every element that
    the caller keeps (0: any)."""
    u = np.uint64
    bits = hi.view(u)
    se, ulp, mant = (w.view(u) for w in ws.f[8:11])
    r = ws.f[11]
    np.right_shift(bits, u(52), out=se)
    np.bitwise_and(bits, u(0xFFF0000000000000), out=ulp)
    ulp -= u(63 << 52)  # +-2**(E - 63): the unit of the 64th bit, with hi's sign
    np.divide(lo, ulp.view(_F), out=r)
    r += _MAGIC  # rounds to an integer (to even on ties: the significand below is even)
    np.left_shift(bits, u(11), out=mant)
    mant |= _SIGN
    mant += r.view(u)
    mant -= u(_MAGIC_BITS)
    good = not mant.size or bool(mant.min() > _SIGN)
    if check_range and good:
        np.bitwise_and(se, u(0x7FF), out=ulp)
        good = int(ulp.min()) >= 63 and int(ulp.max()) <= 2046
    # sign and exponent: E - 1023 + 16383 - shift, sign bit moved from bit 11 to bit 15
    if sign > 0:
        se += u(15360 - shift)
    elif sign < 0:
        se += u(15360 - shift + 0x8000 - 0x800)
    else:
        np.right_shift(se, u(11), out=ulp)
        ulp *= u(30720)
        se += ulp
        se += u(15360 - shift)
    words = out.view(u).reshape(out.shape + (2,))
    words[..., 0] = mant
    words[..., 1] = se
    if not good:
        ex = (bits >> u(52)) & u(0x7FF)
        bad = (mant < _SIGN) | ((mant == _SIGN) & (lo != 0) & (np.signbit(lo) != np.signbit(hi)))
        if check_range:
            bad |= (ex < 63) | (ex > 2046)
        out[bad] = _dd_to_ld(hi[bad], lo[bad], shift)


# ------------------------------------------------------------------ log1p and log


def _log1p_dd(sh: np.ndarray, sl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log1p(sh + sl) for sh >= 0 as a double-double, relative error ~2**-66 or better.

    s < 2**-5: 2 atanh(w) = 2 (w + w**3/3 + ...), w = s / (2 + s) < 2**-6, the series
    after w in float64. Otherwise: a float64 log1p (``xentcheck.references.portable``: a few ulps,
    the same bits on every machine, where NumPy's log1p is not) refined by one Newton step
    L += ((1 + s) - exp(L)) / exp(L) with the double-double exp kernel (the seed's 2**-50
    error becomes 2**-100; the kernel's ~2**-71 relative error is an absolute error in L,
    <= 2**-66 relative for L >= 2**-5)."""
    with np.errstate(all="ignore"):
        th, tl = _dd_add(np.full_like(sh, 2.0), np.zeros_like(sh), sh, sl)
        wh, wl = _dd_div(sh, sl, th, tl)
        w2 = wh * wh
        series = w2 * (1 / 3 + w2 * (1 / 5 + w2 * (1 / 7 + w2 * (1 / 9 + w2 * (
            1 / 11 + w2 * (1 / 13 + w2 / 15))))))
        small = _fast_two_sum(2 * wh, 2 * wl + 2 * wh * series)
        l0h = portable.log1p(sh + sl)
        l0l = np.zeros_like(l0h)
        eh, el = _exp_dd(np.where(np.isfinite(l0h), l0h, 0.0), l0l)
        ah, al = _two_sum(1.0, sh)
        residual = (ah - eh) + ((al + sl) - el)
        large = _fast_two_sum(l0h, l0l + residual / eh)
        use_small = ~(sh >= 2.0**-5)
        return np.where(use_small, small[0], large[0]), np.where(use_small, small[1], large[1])


def log_dd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(x) for positive finite float64 x as a double-double, ~2**-66 relative or better.

    x = m 2**e with m in [1/2, 1) (exact); log m from a float64 seed
    (``xentcheck.references.portable``) refined by one Newton step with the double-double exp
    kernel (m - exp(L) is exact, Sterbenz), plus e ln 2 with ln 2 to 159 bits."""
    tab = _tables()
    x = np.asarray(x, _F)
    with np.errstate(all="ignore"):
        m, e = np.frexp(x)
        l0 = portable.log(m)
        eh, el = _exp_dd(l0)
        lm = _fast_two_sum(l0, ((m - eh) - el) / eh)
        # e ln2 = e N (c1 + c2 + c3): e N c1 is exact for |e N| < 2**27
        ef = e.astype(_F) * _N
        ph, pl = _two_sum(ef * tab.c1, ef * tab.c2)
        return _dd_add(ph, pl + ef * tab.c3, *lm)
