"""Double-double arithmetic of the fast tier, vectorized over float64 arrays.

Error-free transformations (Knuth's TwoSum, Dekker's Fast2Sum and TwoProd with
Veltkamp's split), sums, products and quotients of double-doubles, the conversions to and
from ``np.longdouble``, and exact row sums (Rump's error-free extraction). Every function
takes scalars or arrays alike and changes nothing in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_LD = np.longdouble
_F = np.float64
#: Veltkamp's splitter for float64: 2**27 + 1.
_SPLIT = 134217729.0


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


def _two_prod_split(a: np.ndarray, b: Any, b1: Any, b2: Any) -> tuple[np.ndarray, np.ndarray]:
    """TwoProd(a, b) with b already split as b1 + b2."""
    p = a * b
    a1, a2 = _split(a)
    return p, ((a1 * b1 - p) + a1 * b2 + a2 * b1) + a2 * b2


def _dd_full(value: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A double-double scalar (or per-row pair) broadcast to n rows."""
    h, lo = value
    return np.broadcast_to(h, (n,)).astype(_F), np.broadcast_to(lo, (n,)).astype(_F)


# ------------------------------------------------------------------ exact row sums


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


# ------------------------------------------------- order-independent sums on a row grid
#
# The row sums of exp(d) must come out bitwise the same whichever engine takes them (NumPy
# here, the compiled kernels of :mod:`~xentcheck.references.fast.jit` where numba is
# installed) and whatever order the terms are added in. Each term hi + lo is cut into
# pieces on fixed grids that depend on the row alone (its width and a bound on its largest
# term), Rump's extraction: the pieces on one grid add up exactly in float64, in any
# order, and the parts below the last grid are left out.


def _grid_levels(width: int) -> tuple[int, int]:
    """(c, levels) for rows of ``width`` terms: 2**c >= 2 width + 2 (a level-2 or -3 grid
    takes two pieces per term), and 3 grids (4 above 2**18 - 2 terms) so that the part
    left out stays below 2**-83 of the row's largest term (see :func:`_grid_sigmas`)."""
    c = max(1, int(2 * width + 2 - 1).bit_length())
    return c, 3 if c <= 19 else 4


def _grid_sigmas(e_max: np.ndarray, width: int) -> np.ndarray:
    """The extraction constants sigma_1 .. sigma_L, (L, N), for rows whose terms are all
    below 2**e_max in magnitude (e_max an integer per row, >= -900).

    Level 1 takes the leading part of hi (|hi| <= 2**E) on the grid of ulp(sigma_1),
    sigma_1 = 1.5 2**(E + c) (the 1.5 keeps hi + sigma_1 in sigma_1's binade whatever
    the sign, so that every piece of a level is on one grid, and the compiled engine can
    count it from the bits of hi + sigma_1); what is left of hi and all of lo (a
    normalized pair) are below 2**(E + c - 53) =: 2**E_2, the next level's bound, and so
    on. Below the last grid at
    most 2**(E_L + c - 53) per piece is left out: 2 width 2**(E + L c - 53 L) in all, i.e.
    2**-84 2**E for 3 levels at width 131072 (c = 19)."""
    c, levels = _grid_levels(width)
    e = np.asarray(e_max, np.int64)
    exps = np.stack([e + c + (c - 53) * i for i in range(levels)])
    return np.ldexp(1.5, exps)


def _grid_bound(d2: np.ndarray, scale: int) -> np.ndarray:
    """e_max for terms exp(d) 2**scale with d <= d2 <= 0 (d2 float64 per row, -inf or NaN
    where a row has no such term): ceil(d2 / ln 2) + scale + 1, at least -900."""
    with np.errstate(all="ignore"):
        x = np.ceil(np.where(np.isfinite(d2), d2, -1e4) * 1.4426950408889634)
        return np.maximum(x, -900.0 - 1 - scale).astype(np.int64) + scale + 1


def _grid_add(hi: np.ndarray, lo: np.ndarray | None, sigmas: np.ndarray, acc: np.ndarray,
              t: np.ndarray, u: np.ndarray) -> None:
    """acc[l] += the row sums of the level-l pieces of hi + lo (hi, lo (R, W) blocks,
    |lo| <= |hi| or hi zero, overwritten; lo None for float64 terms; sigmas and acc (L,
    R); t, u (R, W) work arrays). Every addition into acc is exact."""
    if lo is not None:
        np.add(hi, lo, out=t)  # Fast2Sum: (t, lo) normalized
        np.subtract(t, hi, out=u)
        lo -= u
        hi[...] = t
    for level in range(sigmas.shape[0]):
        sigma = sigmas[level][:, None]
        for part in (hi, lo) if level and lo is not None else (hi,):
            np.add(part, sigma, out=t)
            t -= sigma
            acc[level] += t.sum(axis=1)
            part -= t


def _grid_total(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row sums a grid accumulation holds, as normalized double-doubles."""
    h, e = _two_sum(acc[0], acc[1])
    for level in range(2, acc.shape[0]):
        e = e + acc[level]
    return _fast_two_sum(h, e)
