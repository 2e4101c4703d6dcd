"""numba loops of :func:`xentcheck.references.portable.exp` and ``log``, of the float64
decoding of :mod:`xentcheck.references.rounding` and of the perturbed points of
:func:`xentcheck.references.fd.directional_derivative_rows` (imported only where numba
is, for arrays of ``jit.MIN_ELEMENTS`` values and more).

Each loop transcribes its NumPy function operation for operation: the same float64
operations in the same order, none fused into an FMA or reordered (no ``fastmath``), the
same table and coefficients, and exact stand-ins for ``ldexp``/``frexp`` (products by
powers of two, bit fields) where a call per element would keep the loop from
vectorizing. So the outputs are bitwise NumPy's (``tests/references/test_portable_jit.py``),
in one pass over the array instead of some twenty.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from xentcheck.references import portable
from xentcheck.references.fast._numba_options import NJIT_OPTIONS as _OPTS

#: portable's table and coefficients as constants of the compiled code: loads from them
#: cannot alias the output's stores, and the polynomial has a known length, so the loop
#: vectorizes (passed as arguments, neither held, and it ran one element at a time).
_TABLE = portable._constants().table
_TAYLOR = portable._constants().taylor_array
_TERMS = _TAYLOR.size


@njit(inline="always", **_OPTS)
def _power_of_two(n: int) -> float:
    """2**n for -1022 <= n <= 1023 (a normal float64), from its bits."""
    return np.int64((n + 1023) << 52).view(np.float64)


@njit(inline="always", **_OPTS)
def _scaled(value: float, n: int) -> float:
    """``math.ldexp(value, n)`` for 1/2 <= value < 4 and |n| <= 1100, as two products
    by powers of two of which the first is exact (or, for n > 1023, already infinite,
    as the result is): the second rounds once, to the correctly rounded value ldexp
    gives (a subnormal one included)."""
    n1 = n + 600 if n < -1022 else (1023 if n > 1023 else n)
    return (value * _power_of_two(n1)) * _power_of_two(n - n1)


@njit(**_OPTS)
def exp_into(x: np.ndarray, out: np.ndarray, log2e: float, log2e_low: float, split: float,
             magic: float, table_bits: int) -> None:
    """out = portable.exp(x), both flat float64 arrays."""
    scale = float(1 << table_bits)
    unscale = 1.0 / scale  # a power of two: exact
    mask = (1 << table_bits) - 1
    cb = log2e * split  # _two_product's split of b = log2e (the same for every element)
    b1 = cb - (cb - log2e)
    b2 = log2e - b1
    for i in range(x.size):
        v = x[i]
        finite = math.isfinite(v)
        xs = min(max(v, -800.0), 800.0) if finite else 0.0
        # t + t_err = xs log2e exactly (Dekker)
        t = xs * log2e
        ca = xs * split
        a1 = ca - (ca - xs)
        a2 = xs - a1
        t_err = ((a1 * b1 - t) + a1 * b2 + a2 * b1) + a2 * b2
        t_low = t_err + xs * log2e_low
        # 2**(t + t_low)
        scaled = min(max(t, -1100.0), 1100.0) * scale
        k = (scaled + magic) - magic
        r = (scaled - k) * unscale + t_low
        value = _TAYLOR[_TERMS - 1]
        for j in range(_TERMS - 2, -1, -1):
            value = value * r + _TAYLOR[j]
        ki = np.int64(k)
        value = _scaled(value * _TABLE[ki & mask], ki >> table_bits)
        special = math.inf if v > 0 else (0.0 if v < 0 else v)
        out[i] = value if finite else special


@njit(**_OPTS)
def log_into(x: np.ndarray, out: np.ndarray, atanh: np.ndarray, sqrt_half: float,
             ln2_high: float, ln2_low: float) -> None:
    """out = portable.log(x), both flat float64 arrays."""
    last = atanh.size - 1
    for i in range(x.size):
        v = x[i]
        if not (math.isfinite(v) and v > 0):
            if v == 0:
                out[i] = -math.inf
            elif v == math.inf:
                out[i] = math.inf
            else:
                out[i] = math.nan
            continue
        m, e = math.frexp(v)  # m in [1/2, 1)
        low = m < sqrt_half
        if low:
            m = 2 * m  # exact
        ef = float(e - 1) if low else float(e)
        s = (m - 1.0) / (m + 1.0)
        s2 = s * s
        series = atanh[last]
        for j in range(last - 1, -1, -1):
            series = series * s2 + atanh[j]
        out[i] = ef * ln2_high + (ef * ln2_low + s * series)


@njit(**_OPTS)
def decode_float64_into(x: np.ndarray, bits: np.ndarray, finite: np.ndarray,
                        infinite: np.ndarray, negative: np.ndarray, expo: np.ndarray,
                        mant_bits: np.ndarray, clamp: int) -> None:
    """The float64 case of ``rounding._decode_floats`` on the flat array ``x`` (``bits``:
    the same memory as int64): finite, infinite, the sign bit (False for NaN),
    floor(log2 |x|) (``-clamp`` for zeros and non-finite values) and the significand in
    [1, 2) (0 there), written as its bits to ``mant_bits``. A number's exponent and
    significand are its bit fields (what frexp computes), a subnormal one's read after
    an exact scaling by 2**64; no branch, so the loop vectorizes."""
    fraction = (1 << 52) - 1
    magnitude = (1 << 63) - 1  # every bit but the sign
    one = 1023 << 52  # the bits of 1.0: a significand's exponent field
    for i in range(x.size):
        b = bits[i]
        field = (b >> 52) & 0x7FF
        special = field == 0x7FF  # inf or NaN
        finite[i] = not special
        infinite[i] = special and (b & fraction) == 0
        negative[i] = b < 0 and not (special and (b & fraction) != 0)
        subnormal = field == 0
        scaled = np.float64(abs(x[i]) * (18446744073709551616.0 if subnormal else 1.0)
                            ).view(np.int64)
        none = special or (b & magnitude) == 0  # inf, NaN, +-0
        e = ((scaled >> 52) & 0x7FF) - 1023 - (64 if subnormal else 0)
        expo[i] = -clamp if none else e
        mant_bits[i] = 0 if none else (scaled & fraction) | one


@njit(**_OPTS)
def perturbed_into(x: np.ndarray, v: np.ndarray, h: np.ndarray, sign: float,
                   every: bool, out: np.ndarray) -> None:
    """``fd.directional_derivative_rows``' perturbed point on (N, K) float64 arrays:
    out = x + h v (``sign`` 1) or x - h v (``sign`` -1) with h one step per row, the
    product rounded first as NumPy's ``step = h * v`` is; where ``v`` is 0 (unless
    ``every`` entry moves) x itself. One pass where NumPy makes two, and no step array."""
    n, k = x.shape
    for r in range(n):
        hr = h[r]
        for i in range(k):
            step = hr * v[r, i]
            moved = x[r, i] + step if sign > 0 else x[r, i] - step
            out[r, i] = moved if every or v[r, i] != 0 else x[r, i]
