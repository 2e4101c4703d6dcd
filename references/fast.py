"""Fast reference tier: softmax and cross-entropy, vectorized, in extended precision.

The gold tier (:mod:`references.gold`) is exact but costs about 25 µs per element. This
tier computes the same functions with NumPy in two working precisions and one shared
evaluator: :class:`Reference` takes a batch of logits, sums its exponentials once and
gives every output from them; the module functions (:func:`log_softmax`,
:func:`softmax`, :func:`logsumexp`, :func:`cross_entropy`, :func:`cross_entropy_grad`)
are thin wrappers around it, for one output each.

Working precisions (``work=``)
------------------------------
* ``"longdouble"`` (the default where :data:`TIER` is ``"longdouble"``): outputs are
  ``np.longdouble`` arrays (x87 extended precision, a 64-bit significand, on x86-64
  Linux), each computed in double-double arithmetic (unevaluated sums of two float64
  numbers) and rounded once. They are within 1e-3 float64 ulp of gold; one longdouble ulp
  is 2**-11 = 4.9e-4 float64 ulp and the final rounding alone costs up to half of one.
* ``"float64"``: the same formulas in plain float64 (with d = z - m kept exact), returning
  float64 arrays: a few float64 ulps, i.e. ~1e-8 float32 ulp, plenty to grade float32,
  float16 and bfloat16 candidates. :func:`work_for` names the working precision adequate
  for a candidate's dtype.
* ``"gold"``: :mod:`references.gold`'s exact values rounded to ``longdouble``. This is what
  ``work=None`` and ``"longdouble"`` give where ``np.finfo(np.longdouble).nmant < 63``
  (arm64 macOS, where longdouble is float64; binary128 platforms): :data:`TIER` says
  which one runs.

How the longdouble work stays accurate
--------------------------------------
For a row z with maximum m at index j, d = z - m is kept exactly as a float64 pair
(TwoSum), s = sum_{k != j} exp(d_k) and

* log softmax_i = d_i - log1p(s), logsumexp = m + log1p(s)  (no cancellation: d_i <= 0);
* softmax_i = exp(d_i) / (1 + s); 1 - softmax_j = s / (1 + s) at the argmax and
  1 - softmax_i (<= 1/2) elsewhere, so p_t - 1 keeps all its digits;
* the loss -sum_c u_c log p_c = (sum u) log1p(s) - sum_c u_c d_c (two non-negative terms
  for non-negative u) and the gradient (sum u) p_c - u_c, at the argmax (and the target
  class) as p_c sum_{c' != c} u_c' - u_c (1 - p_c) with the sum taken directly; u is
  gold's effective target (class weights, label smoothing).

exp(d) is a table-driven double-double kernel (d = k ln2/8192 + r, |r| <= 2**-14.5, an
8192-entry table of 2**(k/8192) as float64 pairs and a degree-4 polynomial in r: below
2**-66 relative); row sums use Rump's error-free extraction (exact sums of the leading
parts) per block; log1p(s) is a longdouble log1p refined by one Newton step on a more
precise variant of that kernel (~2**-71; or 2 atanh(s / (2 + s)) for small s); products
and quotients are Dekker's; the final double-double is rounded to longdouble with integer
operations. Everything proportional to exp(d) is carried times 2**128, so outputs down to
float64's smallest normal number stay relatively accurate; outputs below about 2**-1080
(beyond float64's range, which gold grading measures on float64's subnormal spacing) are
accurate in absolute terms only. The work runs in blocks of 32768 elements that stay in
cache.

Three outputs can cancel, as in gold, and there this tier is accurate relative to their
*scale*: logsumexp = m + log1p(s) when m ~ -log1p(s) (scale |m| + log1p(s)); a gradient
entry p_c sum_{c' != c} u_c' - u_c (1 - p_c) when its two terms nearly cancel, or when the
sum does (negative class weights) (scale: p_c sum_{c' != c} |u_c'| + |u_c| (1 - p_c)); a
loss with negative class weights (scale: the sum of the magnitudes of its terms).

Rows outside the range the double-double path is written for are computed by gold, row by
row: logits whose differences overflow float64 (or, with a target, exceed 2**300),
effective targets above 2**300 or infinite, longdouble logits beyond float64's range;
class weights outside [2**-400, 2**400] send the whole call there.

Semantics are gold's (DESIGN.md §4): a -inf logit with zero target mass contributes 0
(0 log 0 = 0) and gradient 0; with positive mass the loss is +inf; a NaN anywhere in a row
(logits or target) makes that row's outputs NaN; +inf logits give the limit, one-hot over
the +inf entries; an ignored row contributes 0 with gradient 0. Where gold answers
``UNDEFINED`` (an all -inf row; a mean over no weight) this tier answers NaN: use
:func:`undefined_rows` to tell an undefined row from a NaN one.

Status (issue 6)
----------------
Accuracy, measured with tests/references/test_fast.py's measure against gold over every
regime (12 cases each, float64 and float32 logits), the named extremes and ~10000
hypothesis draws: the longdouble work is within 3.1e-4 float64 ulp for every function
(goal 1e-3), the float64 work within 8e-9 float32 ulp on float32 logits. Speed, as
elements/s relative to NumPy's float64 ``shifted = z - z.max(1); shifted -
log(exp(shifted).sum(1))`` on the same float64 logits (standard normal times 5), measured
side by side in one process (thread CPU time, best of 15, interleaved) on the 2-core
development machine while quiet:

==================================  ============  ===========
longdouble work                     (8, 131072)   (8, 16384)
==================================  ============  ===========
log_softmax                         0.32x         0.22x
softmax                             0.25x         0.20x
cross_entropy (class indices)       0.41x         0.30x
cross_entropy_grad (class indices)  0.23x         0.18x
all four from one Reference         0.15x         0.11x
==================================  ============  ===========

(the last line: the four outputs' time together, against one NumPy log_softmax).

Wall-clock best-of-9 runs under the other users' load gave 0.26-0.44x for log_softmax on
(8, 131072). The float64 work runs at 0.5-0.7x on (8, 131072) and 0.4-0.6x on
(8, 16384).

>>> import numpy as np
>>> TIER in ("longdouble", "gold")
True
>>> float(log_softmax(np.array([40.0, 0.0]))[0])
-4.248354255291589e-18
>>> float(cross_entropy_grad(np.array([[37.42994775023705, 0.0]]), np.array([0]))[0, 0])
-5.551115123125776e-17
>>> ref = Reference(np.array([[1.0, 2.0, 3.0]]))
>>> [round(float(v), 6) for v in ref.softmax()[0]]
[0.090031, 0.244728, 0.665241]
>>> float(ref.cross_entropy(np.array([2]))[0]) == -float(ref.log_softmax()[0, 2])
True
>>> work_for("float32"), work_for(np.float64) == TIER
('float64', True)
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any, NamedTuple

import mpmath
import numpy as np

from references import gold, portable
from references.gold import UNDEFINED

__all__ = [
    "TIER",
    "WORKS",
    "Reference",
    "cross_entropy",
    "cross_entropy_grad",
    "log_softmax",
    "log_dd",
    "logsumexp",
    "softmax",
    "undefined_rows",
    "work_for",
]

_LD = np.longdouble
_F = np.float64

#: Which implementation ``work=None`` runs on this platform: ``"longdouble"`` where NumPy's
#: longdouble has at least a 64-bit significand (``nmant >= 63``: x87 extended), ``"gold"``
#: elsewhere. 64 bits are 11 more than float64's 53: one final rounding costs 2.4e-4
#: float64 ulp.
TIER: str = "longdouble" if np.finfo(_LD).nmant >= 63 else "gold"

#: The working precisions a caller may ask for (``"gold"`` is what ``"longdouble"`` falls
#: back to where :data:`TIER` is ``"gold"``).
WORKS: tuple[str, ...] = ("longdouble", "float64")

_REDUCTIONS = ("none", "sum", "mean")

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
#: Magnitude limits of the double-double path (products stay inside float64's range).
_BIG = 2.0**300
_W_RANGE = (2.0**-400, 2.0**400)
#: Veltkamp's splitter for float64: 2**27 + 1.
_SPLIT = 134217729.0
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


# ----------------------------------------------------------------- double-double helpers
# Vectorized error-free transformations on float64 arrays (Knuth, Dekker). A double-double
# is a pair (hi, lo) with value hi + lo; "normalized" means |lo| <= ulp(hi) / 2.


def _two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """TwoSum for |a| >= |b| (or a == 0)."""
    s = a + b
    return s, b - (s - a)


def _split(a: Any) -> tuple[Any, Any]:
    c = a * _SPLIT
    h = c - (c - a)
    return h, a - h


def _two_prod(a: Any, b: Any) -> tuple[Any, Any]:
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _dd_add(ah: Any, al: Any, bh: Any, bl: Any) -> tuple[Any, Any]:
    s, e = _two_sum(ah, bh)
    return _fast_two_sum(s, e + (al + bl))


def _dd_mul(ah: Any, al: Any, bh: Any, bl: Any) -> tuple[Any, Any]:
    p, e = _two_prod(ah, bh)
    return _fast_two_sum(p, e + (ah * bl + al * bh))


def _dd_div(ah: Any, al: Any, bh: Any, bl: Any) -> tuple[Any, Any]:
    q = ah / bh
    p, e = _two_prod(q, bh)
    r = (((ah - p) - e) + al) - q * bl
    return _fast_two_sum(q, r / bh)


def _dd_to_ld(hi: Any, lo: Any, shift: int = 0) -> Any:
    """(hi + lo) 2**-shift as the nearest longdouble (non-finite hi kept as it is)."""
    out = np.asarray(hi, dtype=_LD)
    with np.errstate(invalid="ignore"):
        out = np.where(np.isfinite(out), out + np.asarray(lo, dtype=_LD), out)
    return out * _LD(2.0) ** -shift if shift else out


def _ld_to_dd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A longdouble array as an exact float64 pair (where it is within float64's range)."""
    hi = x.astype(_F)
    with np.errstate(invalid="ignore"):
        lo = np.where(np.isfinite(hi), x - hi.astype(_LD), 0).astype(_F)
    return hi, lo


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


# ------------------------------------------------------------------------- input


def _check_options(label_smoothing: float, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing!r}")


def _resolve_work(work: str | None) -> str:
    if work is None:
        return TIER
    if work not in WORKS:
        raise ValueError(f"work must be one of {WORKS} or None, got {work!r}")
    return "gold" if work == "longdouble" and TIER == "gold" else work


_NARROW = ("float32", "float16", "bfloat16")


def work_for(dtype: Any) -> str:
    """The working precision adequate to grade a candidate computing in ``dtype``.

    ``"longdouble"`` (``"gold"`` where :data:`TIER` is ``"gold"``) for float64 and
    longdouble, ``"float64"`` for float32, float16 and bfloat16 (whose ulps are 2**29 and
    more float64 ulps: a few float64 roundings are invisible there). ``dtype`` may be a
    NumPy dtype, a scalar type or a name.

    >>> work_for("bfloat16"), work_for(np.dtype("float16"))
    ('float64', 'float64')
    """
    name = dtype if isinstance(dtype, str) else getattr(np.dtype(dtype), "name", str(dtype))
    if name in _NARROW:
        return "float64"
    if name in ("float64", "double", "longdouble", "float128", "float96"):
        return TIER
    raise ValueError(f"dtype must be one of float64, longdouble, {', '.join(_NARROW)}; "
                     f"got {dtype!r}")


def _float_array(array: Any, what: str) -> np.ndarray:
    """A real array as float64 (exact for every narrower format) or longdouble."""
    a = np.asarray(array)
    if a.dtype == _LD or a.dtype == _F:
        return a
    if a.dtype.kind not in "fiuV" or (a.dtype.kind == "V" and a.dtype.itemsize > 8):
        raise ValueError(f"{what} must be a real floating-point array, got dtype {a.dtype}")
    return a.astype(_F)


def _weights(weight: Any, k: int) -> np.ndarray | None:
    if weight is None:
        return None
    if np.ndim(weight) != 1 or np.shape(weight)[0] != k:
        raise ValueError(f"weight must have shape ({k},), got shape {np.shape(weight)}")
    return _float_array(weight, "weight")


class _Target:
    """A validated target: class indices (with the ignored rows) or a probability array."""

    def __init__(self, target: Any, n: int, k: int, single: bool,
                 ignore_index: int | None) -> None:
        t = np.asarray(target)
        self.index: np.ndarray | None = None
        self.probs: np.ndarray | None = None
        if t.dtype.kind in "iu":
            expected = () if single else (n,)
            if t.shape != expected:
                raise ValueError(
                    f"class-index target must have shape {expected}, got shape {t.shape}")
            index = t.reshape(-1).astype(np.int64)
            self.ignored = ((index == ignore_index) if ignore_index is not None
                            else np.zeros(n, bool))
            bad = ~self.ignored & ((index < 0) | (index >= k))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"target[{row}] = {index[row]} is out of range for {k} classes (row {row})")
            self.index = np.where(self.ignored, 0, index)
            return
        y = _float_array(t, "probability target")
        if t.shape != ((k,) if single else (n, k)):
            raise ValueError(
                f"probability target must have the logits' shape ({n}, {k}), "
                f"got shape {t.shape}")
        y = y.reshape(n, k)
        negative = y < 0
        if negative.any():
            row, c = (int(v[0]) for v in np.nonzero(negative))
            raise ValueError(
                f"target row {row} has a negative probability {float(y[row, c])!r} at class {c}")
        self.probs = y
        self.ignored = np.zeros(n, bool)


class _Options:
    """Validated cross-entropy options with the target."""

    def __init__(self, target: Any, n: int, k: int, single: bool, weight: Any,
                 ignore_index: int | None, label_smoothing: float, reduction: str) -> None:
        _check_options(label_smoothing, reduction)
        self.weight = _weights(weight, k)
        self.target = _Target(target, n, k, single, ignore_index)
        self.eps = float(label_smoothing)
        self.reduction = reduction
        self.raw = {"weight": weight, "ignore_index": ignore_index,
                    "label_smoothing": label_smoothing}


# --------------------------------------------------------------------------- row kinds


class _Kinds:
    """The kind of each row: NaN, +inf (the limit over the +inf entries), undefined (all
    -inf) or finite (at least one finite logit, none NaN or +inf)."""

    def __init__(self, z: np.ndarray, finite: bool | None = None) -> None:
        """``finite``: already known that every entry is finite (or None: look)."""
        n = z.shape[0]
        self.all_finite = finite if finite is not None else (
            bool(np.isfinite(z).all()) if z.size else True)
        if self.all_finite:
            self.nan = self.posinf = self.undefined = np.zeros(n, bool)
            self.n_posinf = np.zeros(n, np.int64)
            self.neginf = False
        else:
            self.nan = np.isnan(z).any(axis=1)
            self.n_posinf = np.count_nonzero(z == np.inf, axis=1)
            self.posinf = (self.n_posinf > 0) & ~self.nan
            self.undefined = (z == -np.inf).all(axis=1) & ~self.nan
            self.neginf = bool((z == -np.inf).any())
        self.special = self.nan | self.posinf | self.undefined
        self.any_special = bool(self.special.any())


def _posinf_limits(z: np.ndarray, n_posinf: np.ndarray, dtype: Any) -> tuple[Any, ...]:
    """softmax, 1 - softmax and log softmax of +inf rows (the limit), in ``dtype``."""
    count = np.maximum(n_posinf, 1)
    share = (1 / count.astype(dtype))[:, None]
    if dtype == _LD:
        lh, ll = _log1p_dd((count - 1).astype(_F), np.zeros(len(count)))
        log_share = -_dd_to_ld(lh, ll)[:, None]
    else:
        log_share = -_log1p_dd((count - 1).astype(_F), np.zeros(len(count)))[0][:, None]
    hit = z == np.inf
    p = np.where(hit, share, dtype(0))
    return p, 1 - p, np.where(hit, log_share, dtype(-np.inf))


# ------------------------------------------------------------------ sums, log1p per row


def _extract(hi: np.ndarray, lo: Any, q: np.ndarray | None = None,
             rest: np.ndarray | None = None,
             positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Row sums of hi + lo: (the exact sum of the leading parts of hi, the rest).

    Rump's ExtractVector: sigma = 2**(ceil(log2 max|hi|) + ceil(log2(width + 2))) per row;
    q = (sigma + hi) - sigma are multiples of ulp(sigma) whose float64 sum is exact in any
    order, hi - q is exact and below ulp(sigma), and its float64 sum errs by about
    2**-106 width**2 max|hi| (2**-78 max|hi| for a block of 16384)."""
    n, width = hi.shape
    if not width:
        return np.zeros(n), np.zeros(n)
    _, ex = np.frexp(np.max(hi if positive else np.abs(hi), axis=1))
    sigma = np.ldexp(1.0, ex + int(np.ceil(np.log2(width + 2))))[:, None]
    q = np.add(hi, sigma, out=q)
    q -= sigma
    rest = np.subtract(hi, q, out=rest)
    low = rest.sum(axis=1)
    if np.ndim(lo):
        low += lo.sum(axis=1)
    return q.sum(axis=1), low


def _row_sums(hi: np.ndarray, lo: Any) -> tuple[np.ndarray, np.ndarray]:
    """Row sums of a double-double (N, K) array as double-doubles."""
    q, rest = _extract(hi, lo)
    return _two_sum(q, rest)


def _log1p_dd(sh: np.ndarray, sl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log1p(sh + sl) for sh >= 0 as a double-double, relative error ~2**-66 or better.

    s < 2**-5: 2 atanh(w) = 2 (w + w**3/3 + ...), w = s / (2 + s) < 2**-6, the series
    after w in float64. Otherwise: a float64 log1p (``references.portable``: a few ulps,
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
    (``references.portable``) refined by one Newton step with the double-double exp
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


def _dd_full(value: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A double-double scalar (or per-row pair) broadcast to n rows."""
    h, lo = value
    return np.broadcast_to(h, (n,)).astype(_F), np.broadcast_to(lo, (n,)).astype(_F)


# ------------------------------------------------------------------ the longdouble work


def _difference_low(z: np.ndarray, m: np.ndarray, dh: np.ndarray, mode: np.ndarray | None,
                    tmp: np.ndarray, dl: np.ndarray) -> None:
    """dl (in place) with dh + dl = z - m exactly, for dh = fl(z - m): Fast2Sum where
    every row of the block has |z| >= |m| (``mode`` 1) or |z| <= |m| (2), else TwoSum
    (also for ``mode=None``)."""
    if mode is not None and (mode == 1).all():
        np.subtract(dh, z, out=tmp)
        np.subtract(np.negative(m), tmp, out=dl)
    elif mode is not None and (mode == 2).all():
        np.add(dh, m, out=tmp)
        np.subtract(z, tmp, out=dl)
    else:
        np.subtract(dh, z, out=tmp)
        np.subtract(dh, tmp, out=dl)
        np.subtract(z, dl, out=dl)
        np.add(m, tmp, out=tmp)
        np.subtract(dl, tmp, out=dl)


def _row_extremes(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          _Kinds]:
    """The logits with special rows (NaN, +inf, all -inf) zeroed, and per row the argmax,
    the max, the smallest finite entry (-inf kept out) and the row kinds."""
    rows = np.arange(a.shape[0])
    # the max is NaN or +inf, or the min -inf or NaN, exactly where some entry is
    j = np.argmax(a, axis=1)
    m = a[rows, j]
    zmin = a.min(axis=1)
    kinds = _Kinds(a, bool(np.isfinite(m).all() and np.isfinite(zmin).all()))
    z = a
    if kinds.any_special:
        z = np.where(kinds.special[:, None], a.dtype.type(0), a)
        j = np.argmax(z, axis=1)
        m = z[rows, j]
        zmin = z.min(axis=1)
    if kinds.neginf:
        zmin = np.min(np.where(z == -np.inf, np.inf, z), axis=1)
    return z, j, m, zmin, kinds


class _Extended:
    """The longdouble work: double-double arithmetic, outputs rounded once to longdouble.

    The row sums of exp(d) are taken once, on first use (optionally keeping exp(d) for the
    outputs that need it); every output is built from them."""

    def __init__(self, a: np.ndarray) -> None:
        n, k = a.shape
        self.a = a
        self.shape = (n, k)
        self.ld_input = a.dtype == _LD
        with np.errstate(all="ignore"):
            zz, self.j, m, zmin, self.kinds = _row_extremes(a)
            if self.ld_input:
                self.zh, self.zl = _ld_to_dd(zz)
                self.mh, self.ml = _ld_to_dd(m)
                beyond = (~np.isfinite(self.zh) & np.isfinite(zz)).any(axis=1)
                self.m_ld = m
            else:
                self.zh, self.zl = zz, None
                self.mh, self.ml = m, np.zeros(n)
                beyond = np.zeros(n, bool)
                self.m_ld = m.astype(_LD)
            spread = np.where(np.isfinite(zmin), self.mh - zmin.astype(_F), 0.0)
            #: max |d| over the finite entries of each row (inf where d overflows)
            self.spread = np.where(beyond | np.isnan(spread), np.inf, spread)
            #: per row: 1 if m <= 0 (so |z| >= |m|), 2 if |z| <= m, else 0 (see _d_block)
            self.d_mode = np.where(self.mh <= 0, 1, np.where(zmin >= -self.mh, 2, 0))
        self.clamp = self.kinds.neginf or bool((self.spread[~self.kinds.special] > -_DEEP).any())
        self._sums: tuple[np.ndarray, np.ndarray] | None = None
        self.eh: np.ndarray | None = None
        self.el: np.ndarray | None = None
        #: keep exp(d) from the row sums even for an output that does not need it (a
        #: shared Reference: softmax and the gradient then skip recomputing it)
        self.keep = False

    # ---------------------------------------------------------------- blocks

    def _d_block(self, rs: slice, cs: slice, ws: _Scratch) -> tuple[np.ndarray, np.ndarray]:
        """d = z - m on a block, exactly, as (dh, dl) in ws.f[0], ws.f[1]: Fast2Sum where
        every row of the block has |z| >= |m| (m <= 0) or |z| <= |m|, else TwoSum."""
        dh, dl, tmp = ws.f[0], ws.f[1], ws.f[2]
        z = self.zh[rs, cs]
        m = self.mh[rs, None]
        np.subtract(z, m, out=dh)
        mode = self.d_mode[rs]
        _difference_low(z, m, dh, None if self.zl is not None else mode, tmp, dl)
        if self.zl is not None:  # longdouble input: add the low parts and renormalize
            np.subtract(self.zl[rs, cs], self.ml[rs, None], out=tmp)
            dl += tmp
            b, c = ws.f[3], ws.f[4]
            np.add(dh, dl, out=tmp)
            np.subtract(tmp, dh, out=b)
            np.subtract(tmp, b, out=c)
            np.subtract(dh, c, out=c)
            np.subtract(dl, b, out=dl)
            dl += c
            dh[...] = tmp
        if self.clamp:
            np.copyto(dl, 0.0, where=~np.isfinite(dl))
        return dh, dl

    def _exp_block(self, rs: slice, cs: slice, ws: _Scratch, hi: np.ndarray,
                   lo: np.ndarray) -> None:
        """exp(d) 2**_S on a block into (hi, lo); ws.f[0], ws.f[1] hold d afterwards."""
        dh, dl = self._d_block(rs, cs, ws)
        x = dh
        if self.clamp:  # exp is 0 below _CLAMP: the low part (up to ulp(d)) must not count
            x = np.maximum(dh, _CLAMP, out=ws.f[2])
            np.copyto(dl, 0.0, where=dh < _CLAMP)
        _exp_into(x, dl, hi, lo, ws, _S, self.clamp)

    def _clear_max(self, rs: slice, cs: slice, hi: np.ndarray) -> None:
        """Zero the argmax entry of each row of the block (its exp is exactly 2**_S)."""
        col = self.j[rs] - cs.start
        inside = (col >= 0) & (col < cs.stop - cs.start)
        if inside.all():
            hi[np.arange(len(col)), col] = 0.0
        elif inside.any():
            hi[np.flatnonzero(inside), col[inside]] = 0.0

    def sums(self, keep: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """2**_S s as a double-double per row: the sum of exp(d) off the argmax. With
        ``keep`` (on the first call) exp(d) 2**_S is kept for the outputs that use it."""
        if self._sums is not None:
            return self._sums
        n, k = self.shape
        acc_h, acc_l, acc_r = np.zeros(n), np.zeros(n), np.zeros(n)
        if keep or self.keep:
            self.eh, self.el = np.empty((n, k)), np.empty((n, k))
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                if self.eh is not None and self.el is not None:
                    hi, lo = self.eh[rs, cs], self.el[rs, cs]
                else:
                    hi, lo = ws.f[5], ws.f[6]
                self._exp_block(rs, cs, ws, hi, lo)
                self._clear_max(rs, cs, hi)
                q, rest = _extract(hi, lo, ws.f[7], ws.f[2], positive=True)
                acc_h[rs], e = _two_sum(acc_h[rs], q)
                acc_l[rs] += e
                acc_r[rs] += rest
            self._sums = _two_sum(acc_h, acc_l + acc_r)
        return self._sums

    def _products(self, c: tuple[np.ndarray, np.ndarray], minus: Any = None,
                  sign: int = 0) -> np.ndarray:
        """exp(d) 2**_S c - minus per element, times 2**-_S, rounded once to longdouble.

        ``c`` is a double-double per row; ``minus`` None or a function of a block's
        (rows, columns) giving the double-double to subtract there; ``sign`` as in
        :func:`_to_ld_into`."""
        n, k = self.shape
        ch, cl = c
        # c = c1 + rest with c1 of 26 bits: for hi = h1 + h2 (26 + 27 bits, Veltkamp),
        # h1 c1 and h2 c1 are exact, and hi rest, lo c are ~2**-26 of the product
        c1, rest = _split(ch)
        rest = rest + cl
        out = np.empty((n, k), _LD)
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                if self.eh is not None and self.el is not None:
                    hi, lo = self.eh[rs, cs], self.el[rs, cs]
                else:
                    hi, lo = ws.f[5], ws.f[6]
                    self._exp_block(rs, cs, ws, hi, lo)
                ph, pl, h1, h2, t = ws.f[0:5]
                a1 = c1[rs, None]
                np.multiply(hi, _SPLIT, out=h1)
                np.subtract(h1, hi, out=h2)
                np.subtract(h1, h2, out=h1)
                np.subtract(hi, h1, out=h2)
                np.multiply(h1, a1, out=ph)
                np.multiply(h2, a1, out=pl)
                np.multiply(hi, rest[rs, None], out=h1)
                pl += h1
                np.multiply(lo, ch[rs, None], out=h1)
                pl += h1
                if minus is not None:  # (ph, pl) - (mh, ml), TwoSum on the leading parts
                    mh, ml = minus(rs, cs)
                    np.subtract(ph, mh, out=h1)
                    np.subtract(h1, ph, out=h2)
                    np.subtract(h1, h2, out=t)
                    np.subtract(ph, t, out=t)
                    h2 += mh
                    t -= h2
                    pl -= ml
                    pl += t
                    np.add(h1, pl, out=ph)  # renormalize: h1 may have cancelled
                    np.subtract(ph, h1, out=h2)
                    np.subtract(pl, h2, out=pl)
                _to_ld_into(ph, pl, out[rs, cs], ws, _S, sign=sign)
        return out

    # ------------------------------------------------------------- per row

    @functools.cached_property
    def row(self) -> dict[str, Any]:
        """Per row: s and log1p(s) scaled by 2**_S ("s", "Ls"), log1p(s) ("L") and
        1 / (1 + s) ("inv") as double-doubles; log1p(s) as a longdouble ("L_ld")."""
        sh, sl = self.sums()
        sc = 2.0**_S
        with np.errstate(all="ignore"):
            lh, ll = _log1p_dd(sh / sc, sl / sc)  # loses bits below 2**-1022: "tiny" rows
            tiny = sh < 2.0 ** (_S - 40)
            th, tl = _fast_two_sum(sh, sl - sh * (sh / sc / 2))  # s (1 - s/2) to 2**-80
            lsh = np.where(tiny, th, lh * sc)
            lsl = np.where(tiny, tl, ll * sc)
            den_h, den_l = _dd_add(np.full_like(sh, sc), np.zeros_like(sh), sh, sl)
            inv = _dd_div(np.full_like(sh, sc), np.zeros_like(sh), den_h, den_l)
        return {"s": (sh, sl), "L": (lh, ll), "Ls": (lsh, lsl), "L_ld": _dd_to_ld(lsh, lsl, _S),
                "tiny": tiny, "inv": inv}

    def _gather(self, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """d (double-double, -inf kept) and exp(d) 2**_S at one column per row."""
        n = self.shape[0]
        rows = np.arange(n)
        with np.errstate(all="ignore"):
            dh, dl = _two_sum(self.zh[rows, cols], -self.mh)
            if self.zl is not None:
                dh, dl = _two_sum(dh, dl + (self.zl[rows, cols] - self.ml))
            dl = np.where(np.isfinite(dl), dl, 0.0)
            x = np.maximum(np.where(np.isnan(dh), 0.0, dh), _CLAMP)
            dlx = np.where(dh < _CLAMP, 0.0, dl)
            hi, lo = np.empty(n), np.empty(n)
            _exp_into(x, dlx, hi, lo, _scratch((n,)), _S, True)
            eh, el = _fast_two_sum(hi, lo)
        return dh, dl, eh, el

    # ----------------------------------------------------------------- outputs

    def _limits(self) -> tuple[Any, Any, Any]:
        return _posinf_limits(self.a, self.kinds.n_posinf, _LD)

    def logsumexp(self) -> np.ndarray:
        row = self.row
        lh, ll = row["L"]
        with np.errstate(all="ignore"):
            h, e = _two_sum(self.mh, lh)
            out = _dd_to_ld(h, e + (self.ml + ll))
            tiny = row["tiny"]
            out[tiny] = self.m_ld[tiny] + row["L_ld"][tiny]
        kinds = self.kinds
        out[kinds.nan] = np.nan
        out[kinds.undefined] = -np.inf
        out[kinds.posinf] = np.inf
        return self._gold_fill(out, "logsumexp")

    def log_softmax(self) -> np.ndarray:
        n, k = self.shape
        lh, ll = self.row["L"]
        out = np.empty((n, k), _LD)
        with np.errstate(all="ignore"):
            # z - (m + L) with m + L as a double-double M: off the argmax |log p| >=
            # log 2, so M's error 2**-105 |M| is negligible for |M| <= 2**30; the argmax
            # entry, -L, is set below. Larger |M|: d - L with d exact.
            big_h, big_l = _dd_add(self.mh, self.ml, lh, ll)
            fused = np.abs(big_h) <= 2.0**30
            # z <= m <= M: Fast2Sum(z, -Mh) if Mh <= 0, Fast2Sum(-Mh, z) if every |z| <= Mh
            zmin = self.mh - self.spread
            mode = np.where(big_h <= 0, 1, np.where(zmin >= -big_h, 2, 0))
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                oh, bb, ol = ws.f[2], ws.f[3], ws.f[4]
                if fused[rs].all():
                    z, mb = self.zh[rs, cs], big_h[rs, None]
                    np.subtract(z, mb, out=oh)
                    if self.zl is None and (mode[rs] == 1).all():
                        np.subtract(oh, z, out=bb)
                        np.subtract(-mb, bb, out=ol)
                    elif self.zl is None and (mode[rs] == 2).all():
                        np.add(oh, mb, out=bb)
                        np.subtract(z, bb, out=ol)
                    else:  # TwoSum(z, -Mh)
                        np.subtract(oh, z, out=bb)
                        np.subtract(oh, bb, out=ol)
                        np.subtract(z, ol, out=ol)
                        bb += mb
                        ol -= bb
                    ol -= big_l[rs, None]
                    if self.zl is not None:
                        ol += self.zl[rs, cs]
                else:
                    dh, dl = self._d_block(rs, cs, ws)
                    lb = lh[rs, None]
                    np.subtract(dh, lb, out=oh)  # TwoSum(dh, -L)
                    np.subtract(oh, dh, out=bb)
                    np.subtract(oh, bb, out=ol)
                    np.subtract(dh, ol, out=ol)
                    bb += lb
                    ol -= bb
                    ol += dl
                    ol -= ll[rs, None]
                _to_ld_into(oh, ol, out[rs, cs], ws, 0, check_range=False, sign=-1)
        out[np.arange(n), self.j] = -self.row["L_ld"]
        if self.kinds.neginf:
            out[self.zh == -np.inf] = -np.inf
        kinds = self.kinds
        out[kinds.nan | kinds.undefined] = np.nan
        if kinds.posinf.any():
            out[kinds.posinf] = self._limits()[2][kinds.posinf]
        return self._gold_fill(out, "log_softmax")

    def softmax(self) -> np.ndarray:
        self.sums(keep=True)
        row = self.row
        out = self._products(row["inv"], sign=1)
        n = self.shape[0]
        out[np.arange(n), self.j] = _dd_to_ld(*row["inv"])
        kinds = self.kinds
        out[kinds.nan | kinds.undefined] = np.nan
        if kinds.posinf.any():
            out[kinds.posinf] = self._limits()[0][kinds.posinf]
        return self._gold_fill(out, "softmax")

    def _gold_fill(self, out: np.ndarray, name: str) -> np.ndarray:
        """Rows outside the double-double range (d overflows float64), from gold."""
        rows = self.gold_rows(False)
        if rows.any():
            out[rows] = _from_gold(getattr(gold, name)(self.a[rows]))
        return out

    def gold_rows(self, targets: bool) -> np.ndarray:
        """Finite rows outside the double-double path's range (computed by gold): d
        overflows float64, or (with targets) exceeds 2**300 (products with u overflow)."""
        limit = _BIG if targets else np.inf
        return ~self.kinds.special & ~(self.spread < limit)

    # -------------------------------------------------------------- targets

    def cross_entropy(self, o: _Options) -> Any:
        n, k = self.shape
        if o.weight is not None and not _weights_in_range(o.weight):
            return _gold_cross_entropy(self.a, o, "cross_entropy")
        eff = _Effective(self, o)
        sc = 2.0**_S
        lsh, lsl = self.row["Ls"]
        with np.errstate(all="ignore"):
            uh, ul = eff.U
            t1h, t1l = _dd_mul(uh, ul, lsh, lsl)  # U L, scaled twice
            t1h, t1l = t1h / sc, t1l / sc
            if eff.index is not None:
                dh, dl, _, _ = self._gather(eff.index)
                dh = np.where(dh == -np.inf, 0.0, dh)  # such rows are +-inf rows below
                bh, bl = eff.B
                sh, sl = _dd_mul(bh, bl, dh, dl)
                if eff.A is not None:
                    wd = self._weighted_d(eff.w)
                    xh, xl = _dd_mul(eff.spread[0] * sc, eff.spread[1] * sc, *wd)
                    sh, sl = _dd_add(sh, sl, xh, xl)
            else:
                sh, sl = self._u_dot_d(eff.u)
            lh, ll = _dd_add(t1h, t1l, -sh, -sl)  # U L - sum u d: two terms >= 0 for u >= 0
            losses = _dd_to_ld(lh, ll, _S)
            regular = np.ones(n, bool)
            if self.kinds.neginf:
                pos, neg = eff.infinite_terms(self)
                both = pos & neg
                losses[pos] = np.inf
                losses[neg] = -np.inf
                losses[both] = np.nan
                regular &= ~(pos | neg)
        row_nan = self.kinds.nan | self.kinds.undefined | eff.nan
        losses[row_nan] = np.nan
        regular &= ~row_nan
        ignored = eff.ignored
        gold_rows = (self.gold_rows(True) | eff.big | self.kinds.posinf) & ~row_nan & ~ignored
        gold_values: dict[int, Any] = {}
        if gold_rows.any():
            exact = gold.cross_entropy(self.a[gold_rows], eff.target_rows(gold_rows),
                                       **o.raw, reduction="none")
            gold_values = dict(zip(np.flatnonzero(gold_rows).tolist(), exact, strict=True))
            losses[gold_rows] = _from_gold(exact)
            regular &= ~gold_rows
        losses[ignored] = 0
        regular |= ignored
        lh, ll = np.where(ignored, 0.0, lh), np.where(ignored, 0.0, ll)
        if o.reduction == "none":
            return losses
        den = eff.denominator() if o.reduction == "mean" else (np.float64(1.0), np.float64(0.0))
        if o.reduction == "mean" and den[0] == 0:
            return _LD(np.nan)
        if not regular.all():
            odd = losses[~regular & ~gold_rows]
            if odd.size and not np.isfinite(odd).all():
                return _LD(odd.sum() / _LD(float(den[0])))
            with mpmath.workprec(400):
                total = mpmath.fsum(
                    [gold_values[i] if i in gold_values else
                     mpmath.ldexp(mpmath.mpf(float(lh[i])) + mpmath.mpf(float(ll[i])), -_S)
                     for i in range(n)])
                return _from_gold(total / (mpmath.mpf(float(den[0])) + mpmath.mpf(float(den[1]))))
        th, tl = _row_sums(lh[None, :], ll[None, :])
        if o.reduction == "mean":
            th, tl = _dd_div(th, tl, np.float64(den[0]), np.float64(den[1]))
        return _dd_to_ld(th, tl, _S)[0]

    def cross_entropy_grad(self, o: _Options) -> np.ndarray:
        n, k = self.shape
        if o.weight is not None and not _weights_in_range(o.weight):
            return _gold_cross_entropy(self.a, o, "cross_entropy_grad")
        eff = _Effective(self, o)
        self.sums(keep=True)
        row = self.row
        sc = 2.0**_S
        one = (np.float64(1.0), np.float64(0.0))
        den = eff.denominator() if o.reduction == "mean" else one
        zero_den = o.reduction == "mean" and den[0] == 0
        if zero_den or o.reduction != "mean":
            f = one
        else:
            if abs(den[0]) < 2.0**-300:
                return _gold_cross_entropy(self.a, o, "cross_entropy_grad")
            f = _dd_div(np.float64(1.0), np.float64(0.0), np.float64(den[0]), np.float64(den[1]))
        ih, il = row["inv"]
        with np.errstate(all="ignore"):
            ch, cl = _dd_mul(ih, il, *eff.U)
            ch, cl = _dd_mul(ch / sc, cl / sc, *_dd_full(f, n))
            minus = None
            if eff.index is not None and eff.A is not None:
                mh, ml = _dd_mul(*eff.A, *_dd_full(f, k))
                minus = lambda rs, cs: (mh[None, cs], ml[None, cs])  # noqa: E731
            elif eff.index is None:
                uh, ul = eff.u
                if f is not one:
                    uh, ul = _dd_mul(uh, ul, np.full_like(uh, f[0]), np.full_like(uh, f[1]))
                minus = lambda rs, cs: (uh[rs, cs], ul[rs, cs])  # noqa: E731
            out = self._products((ch, cl), minus)
            # the argmax column, and the target column of class indices: p_c (U - u_c)
            # - u_c (1 - p_c) with 1 - p_j = s / (1 + s)
            rows = np.arange(n)
            sh, sl = row["s"]
            fix_cols = [(self.j, (ih * sc, il * sc), _dd_mul(sh, sl, ih, il))]
            if eff.index is not None:
                _, _, eth, etl = self._gather(eff.index)
                pth, ptl = _dd_mul(eth, etl, ih, il)
                qth, qtl = _dd_add(np.full(n, sc), np.zeros(n), -pth, -ptl)
                fix_cols.insert(0, (eff.index, (pth, ptl), (qth, qtl)))
            for cols, (ph, pl), (qh, ql) in fix_cols:
                uch, ucl = eff.u_at(cols)
                oh, ol = eff.others_at(cols)
                ah, al = _dd_mul(ph, pl, oh, ol)
                bh, bl = _dd_mul(uch, ucl, qh, ql)
                gh, gl = _dd_add(ah, al, -bh, -bl)
                gh, gl = _dd_mul(gh / sc, gl / sc, *_dd_full(f, n))
                out[rows, cols] = _dd_to_ld(gh, gl, _S)
        row_nan = self.kinds.nan | self.kinds.undefined | eff.nan
        out[row_nan] = np.nan
        gold_rows = (self.gold_rows(True) | eff.big | self.kinds.posinf) & ~row_nan & ~eff.ignored
        if gold_rows.any():
            exact = gold.cross_entropy_grad(self.a[gold_rows], eff.target_rows(gold_rows),
                                            **o.raw, reduction="none")
            values = _from_gold(exact)
            if o.reduction == "mean" and not zero_den:  # exact / den, rounded once
                with mpmath.workprec(400):
                    d = mpmath.mpf(float(den[0])) + mpmath.mpf(float(den[1]))
                    values = _from_gold(np.array([v / d for v in exact.ravel()],
                                                 dtype=object).reshape(exact.shape))
            out[gold_rows] = values
        out[eff.ignored] = 0
        if zero_den:
            out = np.where(out == 0, _LD(0), _LD(np.nan))
        return out

    def _weighted_d(self, w: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, ...]:
        """sum_k w_k d_k per row (double-double; -inf entries count as 0)."""
        n, k = self.shape
        acc_h, acc_l, acc_r = np.zeros(n), np.zeros(n), np.zeros(n)
        if w is not None:
            w1, w2 = _split(w[0])
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                dh, dl = self._d_block(rs, cs, ws)
                if self.kinds.neginf:
                    np.copyto(dh, 0.0, where=dh == -np.inf)
                if w is None:
                    ph, pl = dh, dl
                else:
                    ph, pl = _two_prod_split(dh, w[0][None, cs], w1[None, cs], w2[None, cs])
                    pl += dh * w[1][None, cs] + dl * w[0][None, cs]
                q, rest = _extract(ph, pl, ws.f[7], ws.f[6])
                acc_h[rs], e = _two_sum(acc_h[rs], q)
                acc_l[rs] += e
                acc_r[rs] += rest
        return _two_sum(acc_h, acc_l + acc_r)

    def _u_dot_d(self, u: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """sum_k u_k d_k per row (double-double; -inf entries count as 0)."""
        n, k = self.shape
        acc_h, acc_l, acc_r = np.zeros(n), np.zeros(n), np.zeros(n)
        uh, ul = u
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                dh, dl = self._d_block(rs, cs, ws)
                if self.kinds.neginf:
                    np.copyto(dh, 0.0, where=dh == -np.inf)
                ph, pl = _dd_mul(uh[rs, cs], ul[rs, cs], dh, dl)
                q, rest = _extract(ph, pl)
                acc_h[rs], e = _two_sum(acc_h[rs], q)
                acc_l[rs] += e
                acc_r[rs] += rest
        return _two_sum(acc_h, acc_l + acc_r)


def _two_prod_split(a: np.ndarray, b: Any, b1: Any, b2: Any) -> tuple[np.ndarray, np.ndarray]:
    """TwoProd(a, b) with b already split as b1 + b2."""
    p = a * b
    a1, a2 = _split(a)
    return p, ((a1 * b1 - p) + a1 * b2 + a2 * b1) + a2 * b2


def _weights_in_range(w: np.ndarray) -> bool:
    """Whether class weights suit the double-double path (else the call goes to gold)."""
    a = np.abs(w[~np.isnan(w)].astype(_F))
    a = a[a != 0]
    return bool(((a >= _W_RANGE[0]) & (a <= _W_RANGE[1])).all())


class _Effective:
    """Gold's effective target u of one call, times 2**_S, in double-double arithmetic.

    Class indices: u_c = A_c + B [c = t] with A = spread w (label smoothing, spread =
    eps / K) and B = (1 - eps) w_t; probabilities: u = w ((1 - eps) y + spread), dense."""

    def __init__(self, ext: _Extended, o: _Options) -> None:
        n, k = ext.shape
        sc = 2.0**_S
        eps = np.float64(o.eps)
        self.options = o
        self.index = o.target.index
        self.ignored = o.target.ignored
        keep = _two_sum(np.float64(1.0), -eps)  # exact
        spread = _dd_div(eps, np.float64(0.0), np.float64(k), np.float64(0.0))
        self.spread = spread
        w = o.weight
        self.w = None if w is None else (_ld_to_dd(w) if w.dtype == _LD else (w, np.zeros(k)))
        with np.errstate(all="ignore"):
            if self.index is not None:
                idx = self.index
                if self.w is None:
                    self.B = _dd_full((keep[0] * sc, keep[1] * sc), n)
                else:
                    bh, bl = _dd_mul(keep[0], keep[1], self.w[0][idx], self.w[1][idx])
                    self.B = (bh * sc, bl * sc)
                if eps:
                    if self.w is None:
                        self.A: tuple[np.ndarray, np.ndarray] | None = (
                            np.full(k, spread[0] * sc), np.full(k, spread[1] * sc))
                        self.U = _dd_full((sc, 0.0), n)  # (1 - eps) + K eps / K = 1
                        self.W = (np.float64(k), np.float64(0.0))
                    else:
                        ah, al = _dd_mul(spread[0], spread[1], *self.w)
                        self.A = (ah * sc, al * sc)
                        wh, wl = _row_sums(self.w[0][None, :], self.w[1][None, :])
                        self.W = (wh[0], wl[0])
                        xh, xl = _dd_mul(spread[0], spread[1], wh[0], wl[0])
                        self.U = _dd_add(np.full(n, xh * sc), np.full(n, xl * sc), *self.B)
                    big = np.full(n, not (np.abs(self.A[0]) <= _BIG * sc).all())
                else:
                    self.A = None
                    self.U = self.B
                    big = np.zeros(n, bool)
                self.nan = np.isnan(self.U[0])
                self.big = (big | ~(np.abs(self.B[0]) <= _BIG * sc)) & ~self.nan
            else:
                y = o.target.probs
                assert y is not None
                yh, yl = _ld_to_dd(y) if y.dtype == _LD else (y, np.zeros_like(y))
                yh, yl = yh * sc, yl * sc
                if eps or self.w is not None:
                    yh, yl = _dd_mul(np.full_like(yh, keep[0]), np.full_like(yh, keep[1]),
                                     yh, yl)
                    if eps:
                        yh, yl = _dd_add(yh, yl, np.full_like(yh, spread[0] * sc),
                                         np.full_like(yh, spread[1] * sc))
                    if self.w is not None:
                        yh, yl = _dd_mul(yh, yl, np.broadcast_to(self.w[0], yh.shape),
                                         np.broadcast_to(self.w[1], yh.shape))
                self.u = (yh, yl)
                self.A = None
                rows = np.arange(n)
                self.uj = (yh[rows, ext.j], yl[rows, ext.j])
                off_h, off_l = yh.copy(), yl.copy()
                off_h[rows, ext.j] = 0
                off_l[rows, ext.j] = 0
                self.others_j = _row_sums(off_h, off_l)
                self.U = _dd_add(*self.others_j, *self.uj)
                self.nan = np.isnan(yh).any(axis=1) | np.isnan(yl).any(axis=1)
                self.big = ~(np.abs(yh) <= _BIG * sc).all(axis=1) & ~self.nan

    def u_at(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """u (scaled) at one column per row."""
        n = len(cols)
        rows = np.arange(n)
        if self.index is None:
            return self.u[0][rows, cols], self.u[1][rows, cols]
        hit = cols == self.index
        if self.A is None:
            return np.where(hit, self.B[0], 0.0), np.where(hit, self.B[1], 0.0)
        ah, al = self.A[0][cols], self.A[1][cols]
        sh, sl = _dd_add(ah, al, *self.B)
        return np.where(hit, sh, ah), np.where(hit, sl, al)

    def others_at(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sum_{c' != c} u_c' (scaled) at one column per row (the argmax for
        probabilities), summed rather than U - u_c, which may cancel."""
        if self.index is None:
            return self.others_j
        n = len(cols)
        off_target = cols != self.index
        bh = np.where(off_target, self.B[0], 0.0)
        bl = np.where(off_target, self.B[1], 0.0)
        if self.A is None:
            return bh, bl
        sc = 2.0**_S
        if self.w is None:
            rest = (np.full(n, self.W[0] - 1), np.zeros(n))  # K - 1, exact
        else:
            rest = _dd_add(np.full(n, self.W[0]), np.full(n, self.W[1]),
                           -self.w[0][cols], -self.w[1][cols])
        ah, al = _dd_mul(np.full(n, self.spread[0] * sc), np.full(n, self.spread[1] * sc),
                         *rest)
        return _dd_add(ah, al, bh, bl)

    def infinite_terms(self, ext: _Extended) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a term u_c log p_c = +inf (u_c > 0 at a -inf logit) or -inf."""
        at = ext.zh == -np.inf
        if self.index is None:
            sign = np.sign(self.u[0])
        else:
            n, k = ext.shape
            sign = (np.zeros((n, k)) if self.A is None
                    else np.broadcast_to(np.sign(self.A[0]), (n, k)).copy())
            uh, _ = self.u_at(self.index)
            sign[np.arange(n), self.index] = np.sign(uh)
        return (at & (sign > 0)).any(axis=1), (at & (sign < 0)).any(axis=1)

    def target_rows(self, rows: np.ndarray) -> np.ndarray:
        """The caller's target at some rows (for gold)."""
        if self.index is not None:
            return self.index[rows]
        assert self.options.target.probs is not None
        return self.options.target.probs[rows]

    def denominator(self) -> tuple[np.float64, np.float64]:
        """The divisor of reduction="mean": sum of w_t over kept rows, or their count."""
        kept = ~self.ignored
        if self.index is not None and self.w is not None:
            idx = self.index[kept]
            h, lo = _row_sums(self.w[0][idx][None, :], self.w[1][idx][None, :])
            return np.float64(h[0]), np.float64(lo[0])
        return np.float64(np.count_nonzero(kept)), np.float64(0.0)


def _gold_cross_entropy(a: np.ndarray, o: _Options, name: str) -> Any:
    """A whole call by gold (class weights outside the double-double path's range)."""
    t = o.target.index if o.target.index is not None else o.target.probs
    if o.target.index is not None:
        t = np.where(o.target.ignored, o.raw["ignore_index"] if o.raw["ignore_index"]
                     is not None else 0, t)
    return _from_gold(getattr(gold, name)(a, t, **o.raw, reduction=o.reduction))


# ---------------------------------------------------------------------- the float64 work


#: The float64 work's exp carries its values times 2**_PLAIN_S inside the kernel, so that
#: results down to float64's subnormals come out of one final scaling.
_PLAIN_S = 64


def _plain_exp_into(dh: np.ndarray, dl: np.ndarray, out: np.ndarray, ws: _Scratch) -> None:
    """out = exp(dh + dl) in float64 for d = dh + dl <= 0 (or NaN), with the table kernel:
    within about an ulp, and the same bits on every machine (NumPy's exp is not)."""
    x = np.maximum(dh, _CLAMP, out=ws.f[3])  # exp is 0 below _CLAMP; NaN stays NaN
    low = None
    if dl is not None:
        low = ws.f[4]
        np.copyto(low, dl)
        np.copyto(low, 0.0, where=dh < _CLAMP)
    _exp_into(x, low, out, ws.f[6], ws, _PLAIN_S, True)
    out += ws.f[6]
    out *= 2.0**-_PLAIN_S


class _Plain:
    """The float64 work: the same formulas in plain float64 (d = z - m kept exact, so
    exp(d) = exp(dh) (1 + dl) stays relatively accurate), in blocks, float64 outputs."""

    def __init__(self, a: np.ndarray) -> None:
        z = a if a.dtype in (_F, np.float32) else a.astype(_F)
        n, k = z.shape
        self.a = z
        self.shape = (n, k)
        with np.errstate(all="ignore"):
            z, self.j, m, zmin, self.kinds = _row_extremes(z)
            self.z = z
            self.m = m.astype(_F)
            zmin = zmin.astype(_F)
            #: per row: 1 if m <= 0 (so |z| >= |m|), 2 if |z| <= m, else 0 (see _d_block)
            self.d_mode = np.where(self.m <= 0, 1, np.where(zmin >= -self.m, 2, 0))
        self.keep = False
        self.e: np.ndarray | None = None
        self._sums: np.ndarray | None = None

    def _d_block(self, rs: slice, cs: slice, ws: _Scratch) -> tuple[np.ndarray, np.ndarray]:
        """d = z - m on a block as dh + dl (Fast2Sum or TwoSum; dl = 0 where not finite)."""
        dh, dl, tmp = ws.f[0], ws.f[1], ws.f[2]
        z = self.z[rs, cs]
        m = self.m[rs, None]
        np.subtract(z, m, out=dh)
        mode = self.d_mode[rs]
        _difference_low(z, m, dh, mode, tmp, dl)
        if not self.kinds.all_finite:
            np.copyto(dl, 0.0, where=~np.isfinite(dl))
        return dh, dl

    def sums(self, keep: bool = False) -> np.ndarray:
        """s per row: the sum of exp(d) off the argmax (with ``keep``, exp(d) is kept)."""
        if self._sums is not None:
            return self._sums
        n, k = self.shape
        s = np.zeros(n)
        if keep or self.keep:
            self.e = np.empty((n, k))
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                dh, dl = self._d_block(rs, cs, ws)
                e = self.e[rs, cs] if self.e is not None else ws.f[5]
                _plain_exp_into(dh, dl, e, ws)
                col = self.j[rs] - cs.start
                inside = np.flatnonzero((col >= 0) & (col < cs.stop - cs.start))
                e[inside, col[inside]] = 0.0
                s[rs] += e.sum(axis=1)
                e[inside, col[inside]] = 1.0
        self._sums = s
        return s

    @functools.cached_property
    def L(self) -> np.ndarray:
        s = self.sums()
        with np.errstate(all="ignore"):
            return np.where(np.isfinite(s), _log1p_dd(s, np.zeros_like(s))[0], s)

    def _special(self, out: np.ndarray, which: int) -> np.ndarray:
        kinds = self.kinds
        out[kinds.nan | kinds.undefined] = np.nan
        if kinds.posinf.any():
            out[kinds.posinf] = _posinf_limits(self.a, kinds.n_posinf, _F)[which][kinds.posinf]
        return out

    def logsumexp(self) -> np.ndarray:
        out = self.m + self.L
        kinds = self.kinds
        out[kinds.nan] = np.nan
        out[kinds.undefined] = -np.inf
        out[kinds.posinf] = np.inf
        return out

    def _log_softmax_block(self, rs: slice, cs: slice, ws: _Scratch, out: np.ndarray) -> None:
        """(d - log1p(s)) + dl on a block (the row sums must be taken: they use ws too)."""
        dh, dl = self._d_block(rs, cs, ws)
        np.subtract(dh, self.L[rs, None], out=out)
        out += dl

    def log_softmax(self) -> np.ndarray:
        n, k = self.shape
        self.sums()
        out = np.empty((n, k))
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                self._log_softmax_block(rs, cs, ws, out[rs, cs])
        out[np.arange(n), self.j] = -self.L
        return self._special(out, 2)

    def _p_block(self, rs: slice, cs: slice, ws: _Scratch, out: np.ndarray) -> None:
        if self.e is not None:
            np.divide(self.e[rs, cs], self.den[rs, None], out=out)
            return
        dh, dl = self._d_block(rs, cs, ws)
        _plain_exp_into(dh, dl, out, ws)
        out /= self.den[rs, None]

    @functools.cached_property
    def den(self) -> np.ndarray:
        return 1 + self.sums()

    def _e_at(self, cols: np.ndarray) -> np.ndarray:
        """exp(d) at one column per row."""
        rows = np.arange(self.shape[0])
        with np.errstate(all="ignore"):
            dh, dl = _two_sum(self.z[rows, cols].astype(_F), -self.m)
            e = np.empty(len(rows))
            _plain_exp_into(dh, np.where(np.isfinite(dl), dl, 0.0), e, _scratch(e.shape))
            return e

    def softmax(self) -> np.ndarray:
        self.sums(keep=True)
        n, k = self.shape
        out = np.empty((n, k))
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                self._p_block(rs, cs, _scratch((rs.stop - rs.start, cs.stop - cs.start)),
                              out[rs, cs])
            out[np.arange(n), self.j] = 1 / self.den
        return self._special(out, 0)

    # -------------------------------------------------------------- targets

    def _u(self, o: _Options, rows: Any = slice(None), cols: Any = slice(None)) -> np.ndarray:
        """The effective target at some rows (and columns), dense."""
        k = self.shape[1]
        w = np.ones(k) if o.weight is None else o.weight.astype(_F)
        eps = o.eps
        if o.target.index is not None:
            idx = o.target.index[rows]
            width = len(np.arange(k)[cols])
            u = (np.broadcast_to(w[cols] * (eps / k), (len(idx), width)).copy() if eps
                 else np.zeros((len(idx), width)))
            at = idx - (cols.start or 0)
            hit = np.flatnonzero((at >= 0) & (at < width))
            u[hit, at[hit]] += (1 - eps) * w[idx[hit]]
        else:
            assert o.target.probs is not None
            y = o.target.probs[rows, cols].astype(_F)
            u = w[cols] * ((1 - eps) * y + eps / k) if eps else w[cols] * y
        u[o.target.ignored[rows]] = 0
        return u

    def _den(self, o: _Options) -> float:
        kept = ~o.target.ignored
        if o.target.index is not None and o.weight is not None:
            return float(o.weight.astype(_F)[o.target.index][kept].sum())
        return float(np.count_nonzero(kept))

    def _u_rows(self, o: _Options) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row: sum u, u at the argmax, sum_{c != j} u_c, and whether u holds a NaN."""
        n, k = self.shape
        total, uj, nan = np.zeros(n), np.zeros(n), np.zeros(n, bool)
        for rs, cs in _blocks(n, k):
            u = self._u(o, rs, cs)
            total[rs] += u.sum(axis=1)
            nan[rs] |= np.isnan(u).any(axis=1)
            col = self.j[rs] - cs.start
            inside = np.flatnonzero((col >= 0) & (col < cs.stop - cs.start))
            uj[rs.start + inside] = u[inside, col[inside]]
        with np.errstate(all="ignore"):
            others = total - uj
            if o.target.index is None:  # summed without u_j (it may hold nearly all of it)
                others = np.zeros(n)
                for rs, cs in _blocks(n, k):
                    u = self._u(o, rs, cs)
                    col = self.j[rs] - cs.start
                    inside = np.flatnonzero((col >= 0) & (col < cs.stop - cs.start))
                    u[inside, col[inside]] = 0
                    others[rs] += u.sum(axis=1)
        return total, uj, others, nan

    def _index_terms(self, o: _Options) -> tuple[Any, ...]:
        """Class-index targets: u_c = A_c + B [c = t] (A = eps w / K, B = (1 - eps) w_t),
        U = sum u, W = sum w, and the rows whose u holds a NaN."""
        n, k = self.shape
        w = np.ones(k) if o.weight is None else o.weight.astype(_F)
        idx = o.target.index
        assert idx is not None
        eps = o.eps
        b = (1 - eps) * w[idx]
        if eps:
            a = w * (eps / k)
            total = w.sum()
            u_total = eps * total / k + b
            nan = np.isnan(u_total)
        else:
            a, total, u_total, nan = None, 0.0, b, np.isnan(b)
        return a, b, u_total, total, w, nan

    def cross_entropy(self, o: _Options) -> Any:
        n, k = self.shape
        ignored = o.target.ignored
        rows = np.arange(n)
        with np.errstate(all="ignore"):
            if o.target.index is not None and not o.eps:
                # -u_t log p_t = B (log1p(s) - d_t), 0 where B = 0
                t = o.target.index
                _, b, _, _, _, u_nan = self._index_terms(o)
                zt = self.z[rows, t].astype(_F)
                dh, dl = _two_sum(zt, -self.m)
                dl = np.where(np.isfinite(dl), dl, 0.0)
                logp_t = np.where(t == self.j, -self.L, (dh - self.L) + dl)
                if self.kinds.posinf.any():
                    limit = _posinf_limits(self.a, self.kinds.n_posinf, _F)[2]
                    logp_t = np.where(self.kinds.posinf, limit[rows, t], logp_t)
                losses = np.where(b != 0, -b * logp_t, 0.0)
            else:
                self.sums()
                losses, u_nan = np.zeros(n), np.zeros(n, bool)
                limits = (_posinf_limits(self.a, self.kinds.n_posinf, _F)[2]
                          if self.kinds.posinf.any() else None)
                for rs, cs in _blocks(n, k):
                    ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                    logp = ws.f[5]
                    self._log_softmax_block(rs, cs, ws, logp)
                    col = self.j[rs] - cs.start
                    inside = np.flatnonzero((col >= 0) & (col < cs.stop - cs.start))
                    logp[inside, col[inside]] = -self.L[rs][inside]
                    if limits is not None:
                        logp[...] = np.where(self.kinds.posinf[rs, None], limits[rs, cs], logp)
                    u = self._u(o, rs, cs)
                    u_nan[rs] |= np.isnan(u).any(axis=1)
                    losses[rs] += np.where(u != 0, -u * logp, 0.0).sum(axis=1)
        losses[(self.kinds.nan | self.kinds.undefined | u_nan) & ~ignored] = np.nan
        losses[ignored] = 0
        if o.reduction == "none":
            return losses
        total = np.float64(losses.sum())
        if o.reduction == "sum":
            return total
        den = self._den(o)
        return np.float64(np.nan) if den == 0 else np.float64(total / den)

    def cross_entropy_grad(self, o: _Options) -> np.ndarray:
        """Off the argmax p_c (U - u_c) - u_c (1 - p_c) = p_c U - u_c; the argmax column
        (and the target column of class indices) with that formula, 1 - p_j = s / (1 + s)
        and sum_{c != j} u_c summed directly."""
        self.sums(keep=True)
        n, k = self.shape
        rows, j = np.arange(n), self.j
        g = np.empty((n, k))
        with np.errstate(all="ignore"):
            if o.target.index is not None:
                t = o.target.index
                a, b, u_total, total, w, u_nan = self._index_terms(o)
                for rs, cs in _blocks(n, k):
                    block = g[rs, cs]
                    self._p_block(rs, cs, _scratch(block.shape), block)
                    block *= u_total[rs, None]
                    if a is not None:
                        block -= a[cs]
                pt = self._e_at(t) / self.den
                for cols, p, q in ((t, pt, 1 - pt), (j, 1 / self.den, self.sums() / self.den)):
                    hit = cols == t
                    uc = (a[cols] if a is not None else 0.0) + np.where(hit, b, 0.0)
                    others = np.where(hit, 0.0, b)
                    if a is not None:
                        others = others + (total - w[cols]) * (o.eps / k)
                    g[rows, cols] = p * others - uc * q
            else:
                u_total, uj, others, u_nan = self._u_rows(o)
                for rs, cs in _blocks(n, k):
                    block = g[rs, cs]
                    self._p_block(rs, cs, _scratch(block.shape), block)
                    block *= u_total[rs, None]
                    block -= self._u(o, rs, cs)
                pj = 1 / self.den
                g[rows, j] = pj * others - uj * (self.sums() / self.den)
            posinf = self.kinds.posinf
            if posinf.any():  # the limit; where one +inf holds p = 1, its others summed
                p, q, _ = _posinf_limits(self.a[posinf], self.kinds.n_posinf[posinf], _F)
                u = self._u(o, posinf)
                others = u.sum(axis=1, keepdims=True) - u
                r = np.flatnonzero(self.kinds.n_posinf[posinf] == 1)
                c = np.argmax(self.a[posinf][r] == np.inf, axis=1)
                uc = u[r, c]
                u[r, c] = 0
                others[r, c] = u[r].sum(axis=1)
                u[r, c] = uc
                g[posinf] = p * others - u * q
        g[self.kinds.nan | self.kinds.undefined | u_nan] = np.nan
        g[o.target.ignored] = 0
        if o.reduction == "mean":
            den = self._den(o)
            with np.errstate(all="ignore"):
                if den == 0:
                    g = np.where(g == 0, 0.0, np.nan)
                else:
                    g /= den
        return g


# --------------------------------------------------------------------------- gold work


_LD_HUGE = mpmath.mpf(2) ** 16384  # longdouble's range (rounding at its edges aside)
_LD_TINY = mpmath.mpf(2) ** -16446


def _from_gold(values: Any) -> Any:
    """Gold's exact values as the nearest longdouble (UNDEFINED as NaN)."""
    def one(v: Any) -> Any:
        if v is UNDEFINED or v != v:
            return _LD("nan")
        if not mpmath.isfinite(v) or abs(v) > _LD_HUGE:
            return _LD(np.inf) if v > 0 else _LD(-np.inf)
        if abs(v) < _LD_TINY:
            return _LD(0.0) if v >= 0 else _LD(-0.0)
        return _LD(mpmath.nstr(v, 40, strip_zeros=False))  # 40 digits: correctly rounded

    if isinstance(values, np.ndarray):
        return np.vectorize(one, otypes=[_LD])(values) if values.size else values.astype(_LD)
    return one(values)


# ------------------------------------------------------------------------------ public


class Reference:
    """The reference values of one batch of logits, computed once and shared.

    ``logits`` is (N, K) or (K,) in any real float dtype (float64, float32, float16,
    ``ml_dtypes.bfloat16``, longdouble) or integers. The row sums (the softmax's
    denominator) are taken once, on first use, and every method builds its output from
    them, so a caller needing several outputs of one input pays the exponentials once.
    The logits are not copied: do not change them while the object is in use.

    ``work`` is the working precision (module docstring): ``"longdouble"`` (outputs are
    longdouble arrays within 1e-3 float64 ulp of gold), ``"float64"`` (float64 outputs, a
    few float64 ulps) or None for :data:`TIER`. :attr:`work` says which one runs (``"gold"``
    where longdouble is not extended).

    >>> import numpy as np
    >>> ref = Reference(np.array([[0.0, np.log(3.0)]]), work="float64")
    >>> ref.work, [round(float(v), 12) for v in ref.softmax()[0]]
    ('float64', [0.25, 0.75])
    >>> float(ref.cross_entropy(np.array([1]), reduction="mean"))  # -log 0.75
    0.2876820724517809
    """

    def __init__(self, logits: Any, *, work: str | None = None) -> None:
        #: "longdouble", "float64" or "gold"
        self.work: str = _resolve_work(work)
        a, self._single = gold.as_matrix(logits, "logits", kinds="fiuV")
        self._logits = logits
        self._impl: _Extended | _Plain | None = None
        if self.work == "longdouble":
            self._impl = _Extended(_float_array(a, "logits"))
            self._impl.keep = True
        elif self.work == "float64":
            self._impl = _Plain(_float_array(a, "logits"))
            self._impl.keep = True

    def _one(self, values: Any) -> Any:
        return values[0] if self._single else values

    def _options(self, target: Any, weight: Any, ignore_index: int | None,
                 label_smoothing: float, reduction: str) -> _Options:
        assert self._impl is not None
        n, k = self._impl.shape
        return _Options(target, n, k, self._single, weight, ignore_index, label_smoothing,
                        reduction)

    def logsumexp(self) -> Any:
        """log sum_k exp(z_k) per row (a scalar for one row), as m + log1p(s)."""
        if self._impl is None:
            return _from_gold(gold.logsumexp(self._logits))
        return self._one(self._impl.logsumexp())

    def softmax(self) -> np.ndarray:
        """exp(z_i) / sum_k exp(z_k) per row (NaN for all -inf rows)."""
        if self._impl is None:
            return _from_gold(gold.softmax(self._logits))
        return self._one(self._impl.softmax())

    def log_softmax(self) -> np.ndarray:
        """z_i - logsumexp(z) per row, as d_i - log1p(s): no cancellation."""
        if self._impl is None:
            return _from_gold(gold.log_softmax(self._logits))
        return self._one(self._impl.log_softmax())

    def cross_entropy(self, target: Any, *, weight: Any = None,
                      ignore_index: int | None = None, label_smoothing: float = 0.0,
                      reduction: str = "none") -> Any:
        """-sum_c u_c log softmax(z)_c per row (0 log 0 = 0), reduced as gold does.

        ``target`` is class indices (N,) or probabilities (N, K); options as in
        :func:`references.gold.cross_entropy`."""
        if self._impl is None:
            return _from_gold(gold.cross_entropy(
                self._logits, target, weight=weight, ignore_index=ignore_index,
                label_smoothing=label_smoothing, reduction=reduction))
        o = self._options(target, weight, ignore_index, label_smoothing, reduction)
        out = self._impl.cross_entropy(o)
        return self._one(out) if reduction == "none" else out

    def cross_entropy_grad(self, target: Any, *, weight: Any = None,
                           ignore_index: int | None = None, label_smoothing: float = 0.0,
                           reduction: str = "none") -> np.ndarray:
        """The fused gradient (sum u) p - u per row, of the reduced loss."""
        if self._impl is None:
            return _from_gold(gold.cross_entropy_grad(
                self._logits, target, weight=weight, ignore_index=ignore_index,
                label_smoothing=label_smoothing, reduction=reduction))
        o = self._options(target, weight, ignore_index, label_smoothing, reduction)
        return self._one(self._impl.cross_entropy_grad(o))

    def undefined_rows(self) -> np.ndarray:
        """Which rows gold leaves ``UNDEFINED`` (all -inf, no NaN): NaN here."""
        return undefined_rows(self._logits)


def _single_use(logits: Any, work: str | None) -> Reference:
    """A Reference for one output that does not use exp(d) itself: not kept."""
    ref = Reference(logits, work=work)
    if ref._impl is not None:
        ref._impl.keep = False
    return ref


def undefined_rows(logits: Any) -> np.ndarray:
    """Which rows gold leaves ``UNDEFINED`` (all -inf, no NaN); this tier answers NaN there.

    >>> import numpy as np
    >>> undefined_rows(np.array([[-np.inf, -np.inf], [0.0, -np.inf]])).tolist()
    [True, False]
    """
    a, single = gold.as_matrix(logits, "logits", kinds="fiuV")
    z = _float_array(a, "logits")
    out = (z == -np.inf).all(axis=1)
    return out[0] if single else out


def logsumexp(logits: Any, *, work: str | None = None) -> Any:
    """log sum_k exp(z_k) per row, as m + log1p(s) (accurate relative to |m| + log1p(s)).

    >>> import numpy as np
    >>> [float(v) for v in logsumexp(np.array([[0.0, 0.0], [1e308, 1e308]]))]
    [0.6931471805599453, 1e+308]
    """
    return _single_use(logits, work).logsumexp()


def softmax(logits: Any, *, work: str | None = None) -> np.ndarray:
    """exp(z_i) / sum_k exp(z_k) per row (NaN for all -inf rows).

    >>> import numpy as np
    >>> [float(v) for v in softmax(np.array([0.0, 0.0, -np.inf]))]
    [0.5, 0.5, 0.0]
    """
    return Reference(logits, work=work).softmax()


def log_softmax(logits: Any, *, work: str | None = None) -> np.ndarray:
    """z_i - logsumexp(z) per row, as (d_i - log1p(s)): no cancellation.

    >>> import numpy as np
    >>> [float(v) for v in log_softmax(np.array([np.inf, 0.0, np.inf]))]
    [-0.6931471805599453, -inf, -0.6931471805599453]
    """
    return _single_use(logits, work).log_softmax()


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    work: str | None = None,
) -> Any:
    """-sum_c u_c log softmax(z)_c per row (0 log 0 = 0), then reduced as gold does.

    >>> import numpy as np
    >>> float(cross_entropy(np.array([[0.0, -np.inf]]), np.array([[1.0, 0.0]]))[0])
    0.0
    >>> float(cross_entropy(np.array([[0.0, -np.inf]]), np.array([1]))[0])
    inf
    """
    return _single_use(logits, work).cross_entropy(
        target, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
        reduction=reduction)


def cross_entropy_grad(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    work: str | None = None,
) -> np.ndarray:
    """(sum u) p_j - u_j = p_j sum_{i != j} u_i - u_j (1 - p_j) per row, of the reduced loss.

    >>> import numpy as np
    >>> g = cross_entropy_grad(np.array([[0.0, 0.0]]), np.array([[2.0, 0.0]]))
    >>> [float(v) for v in g[0]]
    [-1.0, 1.0]
    """
    return Reference(logits, work=work).cross_entropy_grad(
        target, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
        reduction=reduction)
