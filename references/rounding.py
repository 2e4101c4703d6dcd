"""Correct rounding of exact values to float64/float32/float16/bfloat16, and ulp errors.

Every function here works on the exact binary representation of its inputs: an mpmath
``mpf`` is read through ``x._mpf_ = (sign, man, exp, bc)`` (the value is
``(-1)**sign * man * 2**exp``), a float through ``float.as_integer_ratio``, an int as is.
Rounding is then done once, in integer arithmetic, straight to the target format, so there
is no double rounding through float64:

>>> import mpmath
>>> x = mpmath.mpf((2**60 + 2**36 + 1, -60), prec=0)   # 1 + 2**-24 + 2**-60, exact
>>> float(round_to(x, "float32")) == 1 + 2**-23     # correct: x lies above the tie
True
>>> float(np.float32(float(x))) == 1.0              # through float64 first: wrong
True

The rounding is IEEE 754 round-to-nearest, ties-to-even, with gradual underflow and
overflow to infinity exactly where IEEE puts it (``|x| >= max + ulp(max)/2``).
Exponents far outside every float range (``mpf((0, 1, -10**12, 1))``) cost nothing.

``ulp_error`` measures ``|c - x| / ulp_d(x)`` exactly and rounds the ratio once to float64:

>>> with mpmath.workprec(200):   # 1 + 0.001 * 2**-23, exact at 200 bits
...     one_and_a_bit = 1 + mpmath.mpf(0.001) * mpmath.ldexp(1, -23)
>>> float(ulp_error(np.float32(1), one_and_a_bit))
0.001
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import ml_dtypes
import mpmath
import numpy as np
from mpmath import libmp

__all__ = ["FloatFormat", "float_format", "round_to", "ulp", "ulp_error"]


class FloatFormat(NamedTuple):
    """One binary floating-point format (names as in ``np.finfo`` where they exist).

    ``precision`` counts significand bits including the implicit one; normal values are
    ``m * 2**e`` with ``1 <= m < 2`` and ``emin <= e <= emax``. ``max``,
    ``smallest_normal`` and ``smallest_subnormal`` are derived from those three numbers
    (every one is exactly a float64, so they are Python floats).
    """

    name: str
    dtype: np.dtype
    precision: int
    emin: int
    emax: int
    max: float
    smallest_normal: float
    smallest_subnormal: float


def _make_format(name: str, dtype: Any, precision: int, emin: int, emax: int) -> FloatFormat:
    # max = (2 - 2**(1 - p)) * 2**emax = (2**p - 1) * 2**(emax - p + 1); exact in float64.
    return FloatFormat(
        name=name,
        dtype=np.dtype(dtype),
        precision=precision,
        emin=emin,
        emax=emax,
        max=math.ldexp((1 << precision) - 1, emax - precision + 1),
        smallest_normal=math.ldexp(1.0, emin),
        smallest_subnormal=math.ldexp(1.0, emin - precision + 1),
    )


# (precision, emin, emax) from IEEE 754-2008 binary64/32/16 and Google's bfloat16
# (float32's exponent with an 8-bit significand).
_FORMATS: dict[np.dtype, FloatFormat] = {
    f.dtype: f
    for f in (
        _make_format("float64", np.float64, 53, -1022, 1023),
        _make_format("float32", np.float32, 24, -126, 127),
        _make_format("float16", np.float16, 11, -14, 15),
        _make_format("bfloat16", ml_dtypes.bfloat16, 8, -126, 127),
    )
}


_FLOAT64 = _FORMATS[np.dtype(np.float64)]


def float_format(dtype: Any) -> FloatFormat:
    """The :class:`FloatFormat` of ``dtype``.

    ``dtype`` may be a NumPy dtype, a scalar type (``np.float32``, ``ml_dtypes.bfloat16``)
    or one of the strings ``"float64"``, ``"float32"``, ``"float16"``, ``"bfloat16"``.

    >>> f = float_format("float16")
    >>> f.precision, f.emin, f.emax, f.max, f.smallest_subnormal
    (11, -14, 15, 65504.0, 5.960464477539063e-08)
    """
    try:
        if isinstance(dtype, str) and dtype == "bfloat16":
            dtype = ml_dtypes.bfloat16
        key = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"not a floating-point dtype: {dtype!r}") from exc
    try:
        return _FORMATS[key]
    except KeyError:
        names = ", ".join(f.name for f in _FORMATS.values())
        raise ValueError(f"unsupported dtype {key}; expected one of {names}") from None


# ---------------------------------------------------------------------------------------
# Decoding: every accepted element becomes (kind, negative, man, exp), value
# (-1)**negative * man * 2**exp with man >= 0 an int (mpz is fine).

_FINITE, _INF, _NAN, _UNDEFINED = 0, 1, 2, 3


def _undefined() -> object:
    # Imported lazily: references.gold is heavy and imports nothing from here.
    from references.gold import UNDEFINED

    return UNDEFINED


def _decode_float(v: float) -> tuple[int, bool, int, int]:
    if v != v:
        return (_NAN, False, 0, 0)
    negative = math.copysign(1.0, v) < 0.0
    if v in (math.inf, -math.inf):
        return (_INF, negative, 0, 0)
    num, den = v.as_integer_ratio()  # den is a power of two
    return (_FINITE, negative, abs(num), 1 - den.bit_length())


def _decode(v: Any, undefined: object) -> tuple[int, bool, int, int]:
    if type(v) is float:
        return _decode_float(v)
    mpf_ = getattr(v, "_mpf_", None)
    if mpf_ is not None:
        sign, man, exp, _ = mpf_
        if man:
            return (_FINITE, bool(sign), man, exp)
        if mpf_ == libmp.fnan:
            return (_NAN, False, 0, 0)
        if mpf_ in (libmp.finf, libmp.fninf):
            return (_INF, bool(sign), 0, 0)
        return (_FINITE, bool(sign), 0, 0)  # mpmath's zero (and its rare negative zero)
    if v is undefined:
        return (_UNDEFINED, False, 0, 0)
    if isinstance(v, numbers.Integral):
        n = int(v)
        return (_FINITE, n < 0, abs(n), 0)
    if isinstance(v, (float, np.floating)):
        # np.floating.as_integer_ratio is exact for every width, longdouble included.
        if not np.isfinite(v):
            return _decode_float(float(v))
        num, den = v.as_integer_ratio()
        negative = bool(np.signbit(v))
        return (_FINITE, negative, abs(int(num)), 1 - int(den).bit_length())
    if isinstance(v, np.generic) and np.dtype(type(v)) in _FORMATS:
        return _decode_float(float(v))  # e.g. an ml_dtypes.bfloat16 scalar: exact in float64
    raise TypeError(
        f"cannot round {type(v).__name__} exactly; expected mpmath.mpf, int, a binary float, "
        "or references.gold.UNDEFINED"
    )


# ---------------------------------------------------------------------------------------
# Rounding core.


def _round_finite(negative: bool, man: int, exp: int, fmt: FloatFormat) -> float:
    """The float64 that is exactly ``(-1)**negative * man * 2**exp`` rounded to ``fmt``.

    Round to nearest, ties to even, gradual underflow, overflow to inf. The result is a
    value of ``fmt`` (or ±0, ±inf), so it is exact as a Python float.
    """
    if not man:
        return -0.0 if negative else 0.0
    p = fmt.precision
    bc = man.bit_length()
    e = exp + bc - 1  # floor(log2 |x|)
    if e > fmt.emax:
        # |x| >= 2**(emax + 1) > max + ulp(max)/2: overflow.
        return -math.inf if negative else math.inf
    q = (e if e > fmt.emin else fmt.emin) - p + 1  # exponent of the quantum (ulp) at x
    shift = q - exp
    if shift <= 0:
        n = man << -shift  # exact; -shift <= p - 1 because e <= emax here
    elif shift > bc:
        n = 0  # |x| < 2**(bc + exp) <= 2**(q - 1): below half a quantum
    else:
        n = man >> shift
        rem = man & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        if rem > half or (rem == half and n & 1):
            n += 1
        # n may now be 2**p (next binade), or 2**(p-1) (subnormal rounded up to normal).
        if n >> p and q == fmt.emax - p + 1:
            return -math.inf if negative else math.inf
    if not n:
        return -0.0 if negative else 0.0
    return math.ldexp(-n if negative else n, q)


_SPECIAL = {_INF: math.inf, _NAN: math.nan, _UNDEFINED: math.nan}


def _round_decoded(d: tuple[int, bool, int, int], fmt: FloatFormat) -> float:
    kind, negative, man, exp = d
    if kind == _FINITE:
        return _round_finite(negative, man, exp, fmt)
    value = _SPECIAL[kind]
    return -value if negative else value


def round_to(values: Any, dtype: Any) -> np.ndarray:
    """Correctly round exact values to ``dtype`` (round to nearest, ties to even).

    ``values``: an ``mpmath.mpf``, a Python int or float, a NumPy scalar, or an
    array-like / object array of those, any shape. ``references.gold.UNDEFINED`` and NaN
    give NaN; ±inf give ±inf. ``dtype``: float64, float32, float16 or bfloat16 (see
    :func:`float_format`).

    Returns an array of ``dtype`` with the shape of ``values``; a scalar gives a 0-d
    array (``float(result)`` or ``result[()]`` takes it out).

    Each element is rounded once from its exact binary value (no float64 intermediate).
    Underflow is gradual; ``|x| < smallest_subnormal / 2`` gives a zero of x's sign
    (exactly half also gives zero, by ties-to-even); ``|x| >= max + ulp(max)/2`` gives
    ±inf. The rounded value is built as the float64 equal to it, then cast: exact, since
    it is representable in ``dtype``.

    >>> round_to([mpmath.mpf(1) / 3, -2**-30], "float16")
    array([ 0.3333, -0.    ], dtype=float16)
    """
    fmt = float_format(dtype)
    arr = np.asarray(values, dtype=object)
    undefined = _undefined()
    out = np.fromiter(
        (_round_decoded(_decode(v, undefined), fmt) for v in arr.flat),
        dtype=np.float64,
        count=arr.size,
    ).reshape(arr.shape)
    # Every element is a value of fmt (or ±0, ±inf, NaN), so this cast is exact.
    return out.astype(fmt.dtype)


# ---------------------------------------------------------------------------------------
# ulps.


def _ulp_exponent(man: int, exp: int, fmt: FloatFormat) -> int:
    """k with ulp_fmt(x) = 2**k, for finite x = ±man * 2**exp."""
    if not man:
        return fmt.emin - fmt.precision + 1
    e = exp + man.bit_length() - 1
    e = min(max(e, fmt.emin), fmt.emax)  # beyond max: max's binade
    return e - fmt.precision + 1


def ulp(x: Any, dtype: Any) -> mpmath.mpf:
    """The spacing of ``dtype``'s values at the exact value ``x``, as an exact ``mpf``.

    ``ulp_d(x) = 2**(max(e, emin) - p + 1)`` with ``e = floor(log2 |x|)``; at ``x = 0`` the
    smallest subnormal; for finite ``|x|`` beyond ``max`` the spacing of max's binade.
    NaN, ±inf and UNDEFINED give NaN (as ``np.spacing(inf)`` does).

    >>> ulp(1, "float32") == mpmath.ldexp(1, -23), ulp(0, "float16") == 2**-24
    (True, True)
    """
    fmt = float_format(dtype)
    kind, _, man, exp = _decode(x, _undefined())
    if kind != _FINITE:
        return mpmath.mpf("nan")
    return mpmath.mpf((0, 1, _ulp_exponent(man, exp, fmt), 1))


def _signed(negative: bool, man: int) -> int:
    return -man if negative else man


def _difference_rounded(a: int, ea: int, b: int, eb: int, shift_down: int) -> float:
    """float64 nearest to |a*2**ea - b*2**eb| * 2**-shift_down (a, b signed ints).

    Exact: when one term is so much smaller than the other that it sits strictly below
    both the larger term's last bit and 2**-54 of its leading bit, no float64 value or
    rounding midpoint lies between ``L - S`` and ``L`` (or ``L + S`` and ``L``), so any
    same-signed stand-in of that size rounds the same way. The stand-in keeps the
    integers short even when exponents differ by 10**12.
    """
    if a and b:
        ta = ea + abs(a).bit_length() - 1
        tb = eb + abs(b).bit_length() - 1
        if ta < tb:
            a, ea, ta, b, eb, tb = b, eb, tb, a, ea, ta  # |b - a| = |a - b|
        low = min(ea, ta - 54)  # below a's last bit and a's float64 rounding grid
        if tb < low - 2:
            b, eb = (1 if b > 0 else -1), low - 3
        if ea > eb:
            a, ea = a << (ea - eb), eb
        else:
            b, eb = b << (eb - ea), ea
        diff = a - b
        exp = ea
    elif a:
        diff, exp = a, ea
    else:
        diff, exp = b, eb
    return _round_finite(False, abs(diff), exp - shift_down, _FLOAT64)


def _ulp_error_one(c: float, x: tuple[int, bool, int, int], fmt: FloatFormat) -> float:
    kind, negative, man, exp = x
    if kind == _UNDEFINED:
        return math.nan
    if c != c:
        return 0.0 if kind == _NAN else math.inf
    if kind == _NAN:
        return math.inf
    if kind == _INF:
        return 0.0 if c == (-math.inf if negative else math.inf) else math.inf
    if c in (math.inf, -math.inf):
        # A finite exact value whose correct rounding is this infinity: no error.
        return 0.0 if _round_finite(negative, man, exp, fmt) == c else math.inf
    _, c_negative, c_man, c_exp = _decode_float(c)
    return _difference_rounded(
        _signed(c_negative, c_man), c_exp, _signed(negative, man), exp,
        _ulp_exponent(man, exp, fmt),
    )


def ulp_error(candidate: Any, exact: Any) -> np.ndarray:
    """Error of each candidate element in ulps of the candidate's dtype.

    ``candidate``: a NumPy array (or scalar) of float64, float32, float16 or bfloat16.
    ``exact``: the same shape, elements as accepted by :func:`round_to` (mpf, float, int,
    ``UNDEFINED``). Returns a float64 array of that shape.

    For finite ``c`` and ``x`` the error is ``|c - x| / ulp_d(x)`` (see :func:`ulp`),
    computed exactly from both binary representations and rounded once to float64, so
    even 1e-30 ulp is resolved. Otherwise:

    ==================================  =================  ======
    exact x                             candidate c        error
    ==================================  =================  ======
    finite (±0 alike)                   finite (±0 alike)  |c - x| / ulp_d(x)
    ``UNDEFINED``                       anything           NaN (not graded)
    NaN                                 NaN                0
    NaN                                 not NaN            inf
    finite or ±inf                      NaN                inf
    ±inf                                the same inf       0
    ±inf                                finite, other inf  inf
    finite, correct rounding is ±inf    that same inf      0
    finite, correct rounding is finite  ±inf               inf
    finite, correct rounding is ±inf    the other inf      inf
    ==================================  =================  ======

    >>> ulp_error(np.array([1.0, np.inf], np.float16), [mpmath.mpf(1) + 2**-11, 65520])
    array([0.5, 0. ])
    """
    cand = np.asarray(candidate)
    fmt = float_format(cand.dtype)
    exact_arr = np.asarray(exact, dtype=object)
    if exact_arr.shape != cand.shape:
        raise ValueError(
            f"candidate has shape {cand.shape} but exact has shape {exact_arr.shape}"
        )
    undefined = _undefined()
    # Upcasting to float64 is exact for every supported dtype.
    cand_values = cand.astype(np.float64).ravel().tolist()
    return np.fromiter(
        (
            _ulp_error_one(c, _decode(x, undefined), fmt)
            for c, x in zip(cand_values, exact_arr.flat, strict=True)
        ),
        dtype=np.float64,
        count=cand.size,
    ).reshape(cand.shape)
