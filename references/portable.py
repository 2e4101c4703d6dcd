"""Elementary functions that give the same bits on every machine.

NumPy's ``exp``, ``log``, ``log1p``, ``log2`` (on float64 and even on longdouble) run
SIMD code chosen when NumPy loads (AVX-512, AVX2 or the baseline), and ``math``'s follow
the platform's libm: their last bits change with the CPU and the platform. A verdict must
not, so the harness's own arithmetic (its input samples, its stability bounds, the seeds
of the fast tier's refinements, its certificate steps) uses these instead.

Everything here is built from operations IEEE 754 rounds exactly (``+ - * /``,
``floor``, ``frexp``/``ldexp``, comparisons), each rounding once in a fixed order (NumPy
never fuses the multiply and add of two ufunc calls), and from constants computed with
mpmath (exact integer arithmetic inside) and rounded once to float64. Results are a pure
function of the inputs, accurate to a few float64 ulps: enough for bounds, seeds and
sampling, not meant as references (``xentcheck.references.gold`` and
``xentcheck.references.fast`` are).

- :func:`constant_log`, :func:`constant_log2`, :data:`LN2`: constants, correctly rounded
  (to within 2**-107 ulp of a rounding midpoint; the same everywhere either way);
- :func:`exp2`, :func:`exp`: a 64-entry table of 2**(j/64) and a degree-6 Taylor
  polynomial on the remainder (|r ln 2| <= ln 2 / 128; truncation below 2**-63);
- :func:`log`, :func:`log1p`, :func:`log2`: log m = 2 atanh((m - 1)/(m + 1)) on the
  significand m in [sqrt(1/2), sqrt(2)) (11 terms of the series, |s| <= 0.172), plus
  e ln 2 with ln 2 split in two; log1p(x) = log(u) x / (u - 1), u = 1 + x.

Arrays of a million values and more (an LLM batch's block) run :func:`exp` and :func:`log`
as compiled loops where numba is installed (:mod:`xentcheck.references._portable_jit`,
under the fast tier's engine choice, ``XENTCHECK_FAST_ENGINE``): the same operations in
the same order, so the same bits, in one pass over the array.

>>> exp2(np.array([0.0, 0.5, 10.0, -1074.0])).tolist()
[1.0, 1.4142135623730951, 1024.0, 5e-324]
>>> float(exp(np.array(1.0))), float(log(np.array(10.0)))
(2.718281828459045, 2.302585092994046)
>>> constant_log(2.0) == LN2 == 0.6931471805599453
True
"""

from __future__ import annotations

import functools
from typing import Any

import mpmath
import numpy as np

__all__ = ["LN2", "constant_log", "constant_log2", "exp", "exp2", "log", "log1p", "log2"]

#: Working precision of the constants (bits): ~2**-160 relative error before the one
#: rounding to float64.
_CONSTANT_BITS = 160

#: 2**6 table entries: 2**t = 2**(k/64) 2**r with |r| <= 1/128.
_TABLE_BITS = 6
#: Terms of the Taylor series of exp(r ln 2), |r ln 2| <= 2**-7.5: the first left out,
#: (2**-7.5)**7 / 7!, is below 2**-64.
_EXP_TERMS = 7
#: Terms of 2 atanh(s) = 2 sum s**(2i+1) / (2i+1), |s| <= 3 - 2 sqrt(2) = 0.1716: the
#: first left out, s**22 / 23 relative to s, is below 2**-60.
_LOG_TERMS = 11

_MAGIC = 1.5 * 2.0**52  # x + _MAGIC rounds x to an integer (|x| < 2**51)
_SPLIT = 134217729.0  # Veltkamp's splitter 2**27 + 1: exact products in two parts


def constant_log(x: float) -> float:
    """The natural logarithm of the positive float ``x``, from mpmath, rounded once."""
    with mpmath.workprec(_CONSTANT_BITS):
        return float(mpmath.log(mpmath.mpf(x)))


def constant_log2(x: float) -> float:
    """The base-2 logarithm of the positive float ``x``, from mpmath, rounded once."""
    with mpmath.workprec(_CONSTANT_BITS):
        return float(mpmath.log(mpmath.mpf(x), 2))


#: ln 2 rounded to float64.
LN2 = constant_log(2.0)


class _Constants:
    """The tables and split constants, computed once with mpmath."""

    def __init__(self) -> None:
        with mpmath.workprec(_CONSTANT_BITS):
            ln2 = mpmath.ln2
            self.table = np.array([float(mpmath.power(2, mpmath.mpf(j) / 2**_TABLE_BITS))
                                   for j in range(2**_TABLE_BITS)])
            self.taylor = tuple(float((ln2**i) / mpmath.factorial(i))
                                for i in range(_EXP_TERMS))
            log2e = 1 / ln2
            self.log2e = float(log2e)
            self.log2e_low = float(log2e - mpmath.mpf(self.log2e))
            # ln 2 with its last 11 bits zero: e ln2_high is exact for |e| < 2**11
            self.ln2_high = float(mpmath.ldexp(mpmath.floor(mpmath.ldexp(ln2, 42)), -42))
            self.ln2_low = float(ln2 - mpmath.mpf(self.ln2_high))
            self.inv_ln2 = float(1 / ln2)
            self.sqrt_half = float(mpmath.sqrt(mpmath.mpf(0.5)))
            self.atanh = tuple(float(mpmath.mpf(2) / (2 * i + 1)) for i in range(_LOG_TERMS))
        # the coefficients as arrays, for the compiled loops
        self.taylor_array = np.array(self.taylor)
        self.atanh_array = np.array(self.atanh)


@functools.cache
def _constants() -> _Constants:
    return _Constants()


def _exp2_parts(t: np.ndarray, t_low: np.ndarray | float) -> np.ndarray:
    """2**(t + t_low) for finite t (|t_low| tiny), t in float64's exponent range."""
    c = _constants()
    scaled = np.clip(t, -1100.0, 1100.0) * 2.0**_TABLE_BITS  # exact (a power of two)
    k = (scaled + _MAGIC) - _MAGIC  # rint, exact
    r = (scaled - k) * 2.0**-_TABLE_BITS + t_low  # |r| <= 1/128
    value = np.full(np.shape(r), c.taylor[-1])
    for coefficient in reversed(c.taylor[:-1]):
        value = value * r + coefficient
    ki = k.astype(np.int64)
    value = value * c.table[ki & (2**_TABLE_BITS - 1)]
    return np.ldexp(value, ki >> _TABLE_BITS)


def exp2(t: np.ndarray) -> np.ndarray:
    """``2**t`` elementwise (float64): a few ulps, the same bits on every machine."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(all="ignore"):
        out = _exp2_parts(np.where(np.isfinite(t), t, 0.0), 0.0)
        return np.where(np.isfinite(t), out, np.where(t > 0, np.inf, np.where(t < 0, 0.0, t)))


def _two_product(a: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """a b as an unevaluated sum p + e, exactly (Dekker; no overflow for |a b| < 2**996)."""
    p = a * b
    ca = a * _SPLIT
    a1 = ca - (ca - a)
    a2 = a - a1
    cb = b * _SPLIT
    b1 = cb - (cb - b)
    b2 = b - b1
    return p, ((a1 * b1 - p) + a1 * b2 + a2 * b1) + a2 * b2


def _compiled(name: str, x: np.ndarray, *constants: Any) -> np.ndarray | None:
    """``name`` of :mod:`xentcheck.references._portable_jit` on ``x`` where the fast tier's
    engine choice (``xentcheck.references.fast.jit``) takes an array this large, else
    None. The loops give NumPy's bits, in one pass instead of some twenty."""
    from xentcheck.references.fast import jit

    loops = jit.elementwise(x.size)
    if loops is None:
        return None
    out = np.empty_like(x, order="C")
    getattr(loops, name)(np.ascontiguousarray(x).reshape(-1), out.reshape(-1), *constants)
    return out


def exp(x: np.ndarray) -> np.ndarray:
    """``e**x`` elementwise (float64): a few ulps, the same bits on every machine."""
    x = np.asarray(x, dtype=np.float64)
    c = _constants()
    out = _compiled("exp_into", x, c.log2e, c.log2e_low, _SPLIT, _MAGIC, _TABLE_BITS)
    if out is not None:
        return out
    with np.errstate(all="ignore"):
        finite = np.isfinite(x)
        xs = np.where(finite, np.clip(x, -800.0, 800.0), 0.0)
        t, t_err = _two_product(xs, c.log2e)
        out = _exp2_parts(t, t_err + xs * c.log2e_low)
        return np.where(finite, out, np.where(x > 0, np.inf, np.where(x < 0, 0.0, x)))


def log(x: np.ndarray) -> np.ndarray:
    """The natural logarithm elementwise (float64): a few ulps, the same bits everywhere;
    -inf at 0, NaN below 0, inf at inf."""
    x = np.asarray(x, dtype=np.float64)
    c = _constants()
    out = _compiled("log_into", x, c.atanh_array, c.sqrt_half, c.ln2_high, c.ln2_low)
    if out is not None:
        return out
    with np.errstate(all="ignore"):
        usable = np.isfinite(x) & (x > 0)
        m, e = np.frexp(np.where(usable, x, 1.0))  # m in [1/2, 1)
        low = m < c.sqrt_half
        m = np.where(low, 2 * m, m)  # [sqrt(1/2), sqrt(2)): exact
        e = (e - low).astype(np.float64)
        s = (m - 1.0) / (m + 1.0)  # m - 1 exact (Sterbenz)
        s2 = s * s
        series = np.full(np.shape(s), c.atanh[-1])
        for coefficient in reversed(c.atanh[:-1]):
            series = series * s2 + coefficient
        out = e * c.ln2_high + (e * c.ln2_low + s * series)
        return np.where(usable, out, np.where(x == 0, -np.inf,
                                              np.where(x == np.inf, np.inf, np.nan)))


def log1p(x: np.ndarray) -> np.ndarray:
    """``log(1 + x)`` elementwise (float64), accurate for small x too; the same bits
    everywhere."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        u = 1.0 + x
        d = u - 1.0
        plain = log(u)
        # log(u) x / (u - 1): the rounding of 1 + x cancels to first order
        out = np.where(d == 0, x, plain * (x / np.where(d == 0, 1.0, d)))
        return np.where(np.isfinite(u) & (u > 0), out, plain)


def log2(x: np.ndarray) -> np.ndarray:
    """The base-2 logarithm elementwise (float64), the same bits everywhere; exact for
    powers of two."""
    x = np.asarray(x, dtype=np.float64)
    m, e = np.frexp(np.where(np.isfinite(x) & (x > 0), x, 1.0))
    with np.errstate(all="ignore"):
        # log2(m 2**e) = e - 1 + log2(2 m), 2m in [1, 2): exact for a power of two
        out = (e - 1) + log(2 * m) * _constants().inv_ln2
        return np.where(np.isfinite(x) & (x > 0), out, log(x))
