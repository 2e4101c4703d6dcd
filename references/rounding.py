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

Decoding each exact value costs microseconds, and a grader measures many candidates
against the same exact values. :class:`ExactValues` decodes them once into NumPy arrays
(sign, exponent, and the significand split into three float64s: 159 bits, and a flag for
any bits beyond), and ``ulp_error`` given an ``ExactValues`` computes with NumPy instead,
with the same result bit for bit: error-free transformations give the error as an
unevaluated sum with a proven bound on what is left out, and only the elements whose
rounding that bound cannot settle (a ratio within about 2**-100 of a float64 rounding
midpoint, a value far outside the dtype's range) take the per-element integer path:

>>> decoded = ExactValues.from_exact([one_and_a_bit, mpmath.mpf(1) + 2**-24])
>>> ulp_error(np.float32([1, 1]), decoded)
array([0.001, 0.5  ])
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import mpmath
import numpy as np
from mpmath import libmp

from xentcheck.references.precision import standard_precision

__all__ = [
    "EXPONENT_CLAMP",
    "ExactValues",
    "FloatFormat",
    "float_format",
    "round_to",
    "ulp",
    "ulp_error",
]


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
# (float32's exponent with an 8-bit significand). bfloat16's entry is added by
# _format_of on first need: importing ml_dtypes costs most of a second of CPU, paid
# only by a process that meets bfloat16 (whose arrays already imported it).
_FORMATS: dict[np.dtype, FloatFormat] = {
    f.dtype: f
    for f in (
        _make_format("float64", np.float64, 53, -1022, 1023),
        _make_format("float32", np.float32, 24, -126, 127),
        _make_format("float16", np.float16, 11, -14, 15),
    )
}
_NAMES = ("float64", "float32", "float16", "bfloat16")


def _bfloat16() -> np.dtype:
    import ml_dtypes

    dtype = np.dtype(ml_dtypes.bfloat16)
    if dtype not in _FORMATS:
        _FORMATS[dtype] = _make_format("bfloat16", dtype, 8, -126, 127)
    return dtype


def _format_of(dtype: np.dtype) -> FloatFormat | None:
    """The format of a NumPy dtype, None for an unsupported one (a dtype of kind "V",
    as ml_dtypes' are, first has bfloat16's entry made)."""
    if dtype.kind == "V":
        _bfloat16()
    return _FORMATS.get(dtype)


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
            dtype = _bfloat16()
        key = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"not a floating-point dtype: {dtype!r}") from exc
    found = _format_of(key)
    if found is None:
        raise ValueError(f"unsupported dtype {key}; expected one of {', '.join(_NAMES)}")
    return found


# ---------------------------------------------------------------------------------------
# Decoding: every accepted element becomes (kind, negative, man, exp), value
# (-1)**negative * man * 2**exp with man >= 0 an int (mpz is fine).

_FINITE, _INF, _NAN, _UNDEFINED = 0, 1, 2, 3


def _undefined() -> object:
    # Imported lazily: xentcheck.references.gold is heavy and imports nothing from here.
    from xentcheck.references.gold import UNDEFINED

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
    if isinstance(v, np.generic) and _format_of(np.dtype(type(v))) is not None:
        return _decode_float(float(v))  # e.g. an ml_dtypes.bfloat16 scalar: exact in float64
    raise TypeError(
        f"cannot round {type(v).__name__} exactly; expected mpmath.mpf, int, a binary float, "
        "or xentcheck.references.gold.UNDEFINED"
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


@standard_precision
def round_to(values: Any, dtype: Any) -> np.ndarray:
    """Correctly round exact values to ``dtype`` (round to nearest, ties to even).

    ``values``: an ``mpmath.mpf``, a Python int or float, a NumPy scalar, or an
    array-like / object array of those, any shape. ``xentcheck.references.gold.UNDEFINED`` and NaN
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


@standard_precision
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


@standard_precision
def ulp_error(candidate: Any, exact: Any) -> np.ndarray:
    """Error of each candidate element in ulps of the candidate's dtype.

    ``candidate``: a NumPy array (or scalar) of float64, float32, float16 or bfloat16.
    ``exact``: the same shape, elements as accepted by :func:`round_to` (mpf, float, int,
    ``UNDEFINED``), or those values decoded once as :class:`ExactValues`. Returns a
    float64 array of that shape.

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

    Given an :class:`ExactValues`, the same numbers come out bit for bit, computed with
    NumPy from the decoded significands (error-free sums and a proven bound on what they
    leave out; the argument is in ``_ulp_error_decoded``), and element by element from
    the exact values only where the bound cannot settle the final rounding: about 2**-50
    of ordinary elements, and values far outside the dtype's range.

    >>> ulp_error(np.array([1.0, np.inf], np.float16), [mpmath.mpf(1) + 2**-11, 65520])
    array([0.5, 0. ])
    """
    cand = np.asarray(candidate)
    fmt = float_format(cand.dtype)
    if isinstance(exact, ExactValues):
        if exact.shape != cand.shape:
            raise ValueError(
                f"candidate has shape {cand.shape} but exact has shape {exact.shape}"
            )
        return _ulp_error_decoded(cand, exact, fmt)[0]
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


# ---------------------------------------------------------------------------------------
# Decoded exact values.

#: |floor(log2 |x|)| is clamped to this in :attr:`ExactValues.expo`: far beyond every
#: format (an exact exp(-1e30) has exponent ~ -1.4e30), and int64 holds it.
EXPONENT_CLAMP = 1 << 40

# The significand M = |x| / 2**expo in [1, 2) is split by bit position into three float64s
# of 53 bits each: bits 2**0..2**-52, 2**-53..2**-105, 2**-106..2**-158.
_PIECE_BITS = 53
_SPLIT_BITS = 3 * _PIECE_BITS
# from_exact lays significands out as 256-bit integers (gold's have 192 bits); longer ones
# are cut to their leading 256 bits first, which only the "inexact" flag needs.
_LAID_BITS = 256


def _piece_bits(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three 53-bit pieces of 256-bit significands given as 4 uint64 words, leading
    bit (2**0) first: bits 255..203, 202..150 and 149..97 (bits 96..0 are the rest)."""
    w0, w1, w2 = words[:, 0], words[:, 1], words[:, 2]
    first = w0 >> np.uint64(11)
    second = ((w0 & np.uint64(0x7FF)) << np.uint64(42)) | (w1 >> np.uint64(22))
    third = ((w1 & np.uint64((1 << 22) - 1)) << np.uint64(31)) | (w2 >> np.uint64(33))
    return first, second, third


def _decode_floats(work: np.ndarray) -> tuple[np.ndarray, ...]:
    """finite, infinite, negative, expo, the three pieces and inexact (as ExactValues has
    them) of a float64 or longdouble array, vectorized."""
    if work.dtype == np.float64:
        compiled = _decoded_float64(work)
        if compiled is not None:
            return compiled
    finite = np.isfinite(work)
    negative = np.signbit(work) & ~np.isnan(work)
    significand, exponent = np.frexp(np.where(finite, np.abs(work), 0))  # [1/2, 1)
    expo = np.where(significand != 0, exponent.astype(np.int64) - 1, -EXPONENT_CLAMP)
    rest = significand * 2  # M in [1, 2), exact
    if rest.dtype == np.float64:  # M is its own first piece: nothing is left
        return (finite, np.isinf(work), negative, expo, rest, *_nothing_left(rest.shape))
    pieces = []
    for _ in range(3):
        # The float64 just below or at rest (truncation), then what is left: exact, since
        # rest - piece < 2**-52 rest has no bits but those of rest below piece's.
        piece = rest.astype(np.float64)
        piece = np.where(piece > rest, np.nextafter(piece, 0), piece)
        pieces.append(piece)
        rest = rest - piece
    return (finite, np.isinf(work), negative, expo, *pieces, rest != 0)


def _decoded_float64(work: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """:func:`_decode_floats` of a float64 array as one compiled loop
    (:mod:`xentcheck.references._portable_jit`) where the fast tier's engine choice takes
    an array this large, else None: the same arrays, in one pass instead of some fifteen."""
    from xentcheck.references.fast import jit

    loops = jit.elementwise(work.size)
    if loops is None:
        return None
    flags = [np.empty(work.shape, bool) for _ in range(3)]
    expo, mant = np.empty(work.shape, np.int64), np.empty(work.shape)
    flat = np.ascontiguousarray(work).reshape(-1)
    loops.decode_float64_into(flat, flat.view(np.int64), *(a.reshape(-1) for a in flags),
                              expo.reshape(-1), mant.reshape(-1).view(np.int64),
                              EXPONENT_CLAMP)
    return (*flags, expo, mant, *_nothing_left(work.shape))


def _nothing_left(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A float64 value's second and third pieces and inexact flag: zeros and False, as
    read-only views of one scalar each (an LLM block's were 34 MB of zeros to write)."""
    zero = np.broadcast_to(np.float64(0.0), shape)
    return zero, zero, np.broadcast_to(np.False_, shape)


@dataclass(frozen=True, eq=False)
class ExactValues:
    """Exact values decoded once into NumPy arrays, for vectorized ulp errors and bounds.

    All arrays have the values' shape. ``defined``: not ``UNDEFINED``. ``finite``: a finite
    number (±0 included). ``infinite``: ±inf. (Defined, neither: NaN.) ``negative``: the
    sign bit (of ±0 and ±inf too; False for NaN and UNDEFINED). For finite nonzero x,
    ``expo`` = floor(log2 |x|) (int64, clamped to ±``EXPONENT_CLAMP``) and the significand
    M = |x| / 2**expo in [1, 2) is split, truncating, into ``mant`` (its first 53 bits, a
    float64 in [1, 2)), ``mant_mid`` (the next 53 bits, in [0, 2**-52)), ``mant_low`` (the
    next 53, in [0, 2**-105)); ``inexact`` says M has bits beyond those 159 (then
    0 < M - (mant + mant_mid + mant_low) < 2**-158). Zeros and non-finite values have
    ``expo = -EXPONENT_CLAMP`` and zero pieces.

    ``source`` holds the values themselves (an object array from :meth:`from_exact`, a
    float64 or longdouble array from :meth:`from_floats`), for the per-element exact path
    and :meth:`element`. Treat every array as read-only.

    >>> d = ExactValues.from_exact([mpmath.mpf(3) / 4, -mpmath.inf, 0])
    >>> d.expo[0], d.mant[0], d.finite.tolist(), d.negative.tolist()
    (np.int64(-1), np.float64(1.5), [True, False, True], [False, True, False])
    """

    defined: np.ndarray
    finite: np.ndarray
    infinite: np.ndarray
    negative: np.ndarray
    expo: np.ndarray
    mant: np.ndarray
    mant_mid: np.ndarray
    mant_low: np.ndarray
    inexact: np.ndarray
    source: np.ndarray

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).flags.writeable = False  # shared by every grading

    @property
    def shape(self) -> tuple[int, ...]:
        return self.defined.shape

    @property
    def ndim(self) -> int:
        return self.defined.ndim

    @property
    def size(self) -> int:
        return self.defined.size

    @classmethod
    def from_exact(cls, values: Any) -> ExactValues:
        """Decode exact values: anything :func:`round_to` accepts (an object array of mpf,
        ints, binary floats and ``xentcheck.references.gold.UNDEFINED``, any shape), read exactly.

        About 1 µs per element of gold's (a Python pass that lays every significand out
        as 256 bits, then NumPy); do it once per set of exact values.
        """
        source = np.array(values, dtype=object)  # a copy: the caller may change theirs
        flat = source.ravel()
        size = flat.size
        undefined = _undefined()
        defined = np.ones(size, bool)
        finite = np.ones(size, bool)
        infinite = np.zeros(size, bool)
        negative = np.zeros(size, bool)
        expo = np.full(size, -EXPONENT_CLAMP, np.int64)
        pieces = [np.zeros(size, np.float64) for _ in range(3)]
        inexact = np.zeros(size, bool)
        # (sign, man, exp, bc) of mpmath: value (-1)**sign * man * 2**exp, bc bits.
        parts = [getattr(v, "_mpf_", None) for v in flat.tolist()]
        laid = np.fromiter(
            (p is not None and p[1] and p[3] <= _LAID_BITS for p in parts), bool, size
        )
        floats = []  # binary floats (the fast tier's longdouble): decoded together below
        zero = libmp.fzero
        for i in np.flatnonzero(~laid).tolist():
            v = flat[i]
            if parts[i] == zero:  # mpmath's zero (gold's masked entries): as it stands
                continue
            if v is undefined:
                defined[i] = finite[i] = False
                continue
            if parts[i] is None and isinstance(v, (float, np.floating)):
                floats.append(i)
                continue
            kind, neg, man, exp = _decode(v, undefined)
            negative[i] = neg
            if kind != _FINITE:
                defined[i] = kind != _UNDEFINED
                finite[i] = False
                infinite[i] = kind == _INF
                continue
            if not man:
                continue
            bc = man.bit_length()
            if bc > _LAID_BITS:  # keep the leading bits; the rest only says "inexact"
                drop = bc - _LAID_BITS
                inexact[i] = bool(man & ((1 << drop) - 1))
                man, exp, bc = man >> drop, exp + drop, _LAID_BITS
            parts[i] = (int(neg), man, exp, bc)
            laid[i] = True
        if floats:
            where = np.array(floats)
            values = np.array([flat[i] for i in floats])
            if values.dtype != np.longdouble:
                values = values.astype(np.float64)  # exact for every binary float
            decoded = _decode_floats(values)
            for full, part in zip((finite, infinite, negative, expo, *pieces, inexact),
                                  decoded, strict=True):
                full[where] = part
        where = np.flatnonzero(laid)
        if where.size:
            chosen = [parts[i] for i in where.tolist()]
            negative[where] = [p[0] for p in chosen]
            top = [p[2] + p[3] - 1 for p in chosen]  # floor(log2 |x|)
            try:
                exponents = np.array(top, np.int64)
            except OverflowError:  # beyond int64 (exp(-1e30)): clamp first
                exponents = np.array([min(max(e, -EXPONENT_CLAMP), EXPONENT_CLAMP)
                                      for e in top], np.int64)
            expo[where] = np.clip(exponents, -EXPONENT_CLAMP, EXPONENT_CLAMP)
            # Every significand, shifted so that its leading bit is bit 255, as 4 big-endian
            # 64-bit words (bit 255 is M's 2**0). int and gmpy's mpz both have to_bytes.
            joined = b"".join([(man << (_LAID_BITS - bc)).to_bytes(_LAID_BITS // 8, "big")
                               for _, man, _, bc in chosen])
            words = np.frombuffer(joined, ">u8").reshape(-1, 4).astype(np.uint64)
            for piece, bits, exponent in zip(pieces, _piece_bits(words), (52, 105, 158),
                                             strict=True):
                piece[where] = np.ldexp(bits.astype(np.float64), -exponent)  # < 2**53: exact
            rest = (words[:, 2] & np.uint64((1 << 33) - 1)) | words[:, 3]
            inexact[where] |= rest != 0
        shape = source.shape
        return cls(
            *(a.reshape(shape) for a in (defined, finite, infinite, negative, expo, *pieces,
                                         inexact)),
            source,
        )

    @classmethod
    def from_floats(cls, values: Any, *, undefined: Any = None) -> ExactValues:
        """Decode binary floats taken as exact: float64, float32, float16, bfloat16 or
        ``np.longdouble`` (every bit of its significand is kept). Vectorized.

        ``undefined``: an optional boolean mask of the values' shape marking elements that
        are ``UNDEFINED`` (``xentcheck.references.fast`` answers NaN there); elsewhere NaN is NaN.

        >>> ld = np.longdouble(1) + np.longdouble(2.0**-60)   # exact where it has 64 bits
        >>> d = ExactValues.from_floats(np.array([ld, np.nan]), undefined=[False, True])
        >>> bool(d.mant_mid[0] == 2.0**-60 or np.finfo(np.longdouble).nmant < 60)
        True
        >>> d.defined.tolist()
        [True, False]
        """
        arr = np.asarray(values)
        if arr.dtype == np.longdouble:
            work = arr.copy()
        elif _format_of(arr.dtype) is not None:
            work = arr.astype(np.float64)  # exact for every supported dtype
        else:
            raise TypeError(
                f"cannot decode {arr.dtype} as exact floats; expected float64, float32, "
                "float16, bfloat16 or longdouble"
            )
        if undefined is None:
            defined = np.ones(arr.shape, bool)
        else:
            mask = np.asarray(undefined, dtype=bool)
            if mask.shape != arr.shape:
                raise ValueError(
                    f"undefined has shape {mask.shape} but the values have shape {arr.shape}"
                )
            defined = ~mask
        # UNDEFINED as NaN (nothing to replace without a mask: no copy)
        decoded = _decode_floats(work if undefined is None else np.where(defined, work, np.nan))
        return cls(defined, *decoded, work)

    def __getitem__(self, key: Any) -> ExactValues:
        """The values at ``key`` (any NumPy index), still decoded."""

        def take(a: np.ndarray) -> np.ndarray:
            out = a[key]
            return out if isinstance(out, np.ndarray) else np.array(out, dtype=a.dtype)

        return ExactValues(*(take(getattr(self, f)) for f in self.__dataclass_fields__))

    def element(self, index: Any) -> Any:
        """The exact value at ``index`` as given (an mpf, a float, ``UNDEFINED``)."""
        if not self.defined[index]:
            return _undefined()
        return self.source[index]

    def ulp_exponent(self, dtype: Any) -> np.ndarray:
        """k with ulp_dtype(x) = 2**k per element (as :func:`ulp`; zeros and non-finite
        values get the smallest subnormal's)."""
        fmt = float_format(dtype)
        return np.clip(self.expo, fmt.emin, fmt.emax) - (fmt.precision - 1)

    def ulp(self, dtype: Any) -> np.ndarray:
        """:func:`ulp` of every element as float64 (exact: 2**k is a float64 for every
        format); NaN where x is not finite.

        >>> ExactValues.from_exact([1, 0, mpmath.inf]).ulp("float16").tolist()
        [0.0009765625, 5.960464477539063e-08, nan]
        """
        spacing = np.ldexp(1.0, self.ulp_exponent(dtype))
        return np.where(self.finite, spacing, np.nan)

    def _exact_element(self, flat_index: int) -> tuple[int, bool, int, int]:
        if not self.defined.flat[flat_index]:
            return (_UNDEFINED, False, 0, 0)
        return _decode(self.source.flat[flat_index], _undefined())


# ---------------------------------------------------------------------------------------
# The vectorized ulp error.

#: Elements per pass of an elementwise computation over a long array: the temporaries of
#: one chunk (a few float64 arrays of 512 KiB) stay in the CPU's cache, where a whole
#: (16, 131072) block's go out to memory and back once per operation (twice the time).
CHUNK_ELEMENTS = 1 << 16


def ldexp(x: Any, e: np.ndarray) -> np.ndarray:
    """``np.ldexp(x, e)``, bit for bit, at the cost of one multiplication where every
    exponent lies in [-1022, 1023]: 2**e is then a normal float64 (built from its bits),
    and x * 2**e is the exact product correctly rounded, which is what ldexp returns
    (subnormal and overflowing results included). np.ldexp itself is a libm call per
    element, several times slower; it takes the other cases."""
    e = np.asarray(e)
    if e.size and e.dtype.kind in "iu" and e.min() >= -1022 and e.max() <= 1023:
        return np.multiply(x, ((e.astype(np.int64) + 1023) << 52).view(np.float64))
    return np.ldexp(x, e)


def chunks(size: int) -> list[slice]:
    """Consecutive slices of at most :data:`CHUNK_ELEMENTS` covering ``range(size)``."""
    return [slice(start, min(start + CHUNK_ELEMENTS, size))
            for start in range(0, size, CHUNK_ELEMENTS)]


# Scaled exponents sc = expo - k (x / ulp_d(x) = M * 2**sc) for which the three pieces of
# x, their sums and the error bound below stay normal and finite in float64: the lowest
# bit is 2**(sc - 158) >= 2**-1018, and everything stays below 2**1002.
_LOWEST_SCALE, _HIGHEST_SCALE = -860, 1000
# sc below this: x / ulp_d(x) < 2**(sc + 1) <= 2**-1075, below half float64's smallest
# subnormal, so an error of x / ulp_d(x) (candidate 0) rounds to 0.
_ROUNDS_TO_ZERO = -1075
# The scaled candidate a = |c| / ulp_d(x) must stay below this for the same reason.
_LARGEST_SCALED = 2.0**1000
_SMALLEST_SUBNORMAL = 2.0**-1074


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth; no overflow here)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _overflows(d: ExactValues, fmt: FloatFormat) -> np.ndarray:
    """Finite x whose correct rounding to fmt is ±inf: |x| >= (2 - 2**-p) 2**emax."""
    # T = 2 - 2**-p has p + 1 bits: split like M, T = t_hi + t_lo (t_lo = 0 unless p = 53).
    # Both are truncations at the same bit, so M >= T iff mant > t_hi, or mant = t_hi and
    # mant_mid >= t_lo (M - mant >= t_lo iff the bits after the first 53 reach t_lo's).
    threshold = 2 - math.ldexp(1.0, -fmt.precision)
    t_hi = threshold if fmt.precision < _PIECE_BITS else 2 - math.ldexp(1.0, 1 - _PIECE_BITS)
    t_lo = threshold - t_hi if fmt.precision < _PIECE_BITS else math.ldexp(1.0, -_PIECE_BITS)
    at_emax = (d.expo == fmt.emax) & (
        (d.mant > t_hi) | ((d.mant == t_hi) & (d.mant_mid >= t_lo))
    )
    return d.finite & ((d.expo > fmt.emax) | at_emax)


def _ulp_error_decoded(
    candidate: np.ndarray, d: ExactValues, fmt: FloatFormat
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ulp_error` from decoded values, and where the exact path was taken.

    The conventions are the table of :func:`ulp_error`, as masks; whether a finite x
    rounds to ±inf is read from its exponent and leading bits (:func:`_overflows`).

    For finite c and x, work in units of ulp_d(x) = 2**k, k = clip(expo, emin, emax) -
    p + 1, and let sc = expo - k (x / ulp_d(x) = M 2**sc). Then a = |c| 2**-k is exact
    (or, with k > 0 and c tiny, a float64 subnormal within 2**-1075 of it), and
    X = |x| 2**-k = X0 + X1 + X2 + rest with Xi = piece_i 2**sc (exact, all normal for
    -860 <= sc <= 1000), 0 <= rest < 2**(sc - 158), rest = 0 unless ``inexact``. With
    sigma = +1 when c and x have the same sign (or c = ±0) and -1 otherwise, the error is
    |a - sigma X|, and Knuth's TwoSum (error-free: s + e is the exact sum) gives

        a - sigma X0 = s1 + e1,   s1 - sigma X1 = s2 + e2,   e1 + e2 = t1 + f1,
        t1 - sigma X2 = t2 + f2,  s2 + t2 = hi + lo  (hi = fl(hi + lo)),
        a - sigma X = hi + lo + f1 + f2 - sigma rest.

    The exact path returns the float64 nearest to that (ties to even). It is |hi| when
    eps = |f1| + |f2| + 2**(sc - 158) [inexact] + 2**-1074 [a inexact] is 0 (the sum is
    exactly hi + lo, and fl already rounded it, ties included), or when |lo| + eps is
    below the distance from hi to the rounding midpoint on lo's side (half an ulp of hi;
    a quarter below a power of two, measured conservatively in the subnormals); the test
    is fl(|lo| + 2 eps) < that distance, which no rounding of its own can fool. Other
    elements take the exact path. Since |f1| + |f2| <= 2**-52 (|e1| + |e2| + X2), which
    is about 2**-104 of the error, and rest < 2**-158 X, that is about 2**-50 of them.

    Outside -860 <= sc <= 1000: x = 0 gives a (exact, or inf as the exact path's rounding
    overflows too); x far below the subnormals (sc < -860) gives a when c != 0 (a >= 1,
    more than 2**-55 from a rounding midpoint, and X < 2**-859) and 0 when X < 2**-1075
    (sc <= -1076); the rest (c = 0 with 2**-1076 <= X < 2**-859, x far beyond max with
    sc > 1000, a >= 2**1000) takes the exact path.
    """
    c = candidate.astype(np.float64).ravel()  # exact for every supported dtype
    defined, finite, infinite = (a.ravel() for a in (d.defined, d.finite, d.infinite))
    negative = d.negative.ravel()
    out = np.empty(c.shape, np.float64)
    settled = np.zeros(c.shape, bool)
    if not (np.isfinite(c).all() and defined.all() and finite.all()):  # else no rule applies
        c_nan = np.isnan(c)
        c_inf = np.isinf(c)
        x_nan = defined & ~finite & ~infinite
        same_sign = np.signbit(c) == negative
        # The table of ulp_error, first matching row wins (the order of _ulp_error_one).
        rules = [
            (~defined, np.nan),
            (c_nan, np.where(x_nan, 0.0, np.inf)),
            (x_nan, np.inf),
            (infinite, np.where(c_inf & same_sign, 0.0, np.inf)),
            (c_inf, np.where(_overflows(d, fmt).ravel() & same_sign, 0.0, np.inf)),
        ]
        for rule, value in rules:
            take = rule & ~settled
            out[take] = np.broadcast_to(value, c.shape)[take]
            settled |= rule
    fallback = np.zeros(c.shape, bool)
    both = ~settled  # both finite
    if both.any() and d.source.dtype in (np.float64, np.longdouble):
        both &= ~_sterbenz_errors(c, d, both, fmt, out)
    if both.any():
        index = np.flatnonzero(both)
        out[index], slow = _finite_errors(c[index], d, index, fmt)
        fallback[index[slow]] = True
    for i in np.flatnonzero(fallback):
        out[i] = _ulp_error_one(float(c[i]), d._exact_element(int(i)), fmt)
    return out.reshape(candidate.shape), fallback.reshape(candidate.shape)


def _sterbenz_errors(c: np.ndarray, d: ExactValues, both: np.ndarray, fmt: FloatFormat,
                     out: np.ndarray) -> np.ndarray:
    """The common case of exact values decoded from floats (``from_floats``: float64 or
    longdouble, which hold every candidate exactly): where c and x have one sign and
    |x| / 2 <= |c| <= 2 |x|, c - x is exact in x's own format (Sterbenz's lemma), scaling
    by ulp_d(x) = 2**k is exact, and the one conversion to float64 rounds the exact error
    to nearest: the exact path's bits, at the cost of a few array operations. Where both
    are zeros (of either sign: a gradient's entries off the target) the error is 0 too.
    Fills ``out`` there and returns where it did."""
    source, expo = d.source.ravel(), d.expo.ravel()
    near = np.empty(c.shape, bool)
    for part in chunks(c.size):
        x = source[part]
        cx = c[part].astype(x.dtype)  # exact: float64 and longdouble hold every dtype
        ax, ac = np.abs(x), np.abs(cx)
        with np.errstate(over="ignore", invalid="ignore"):
            here = both[part] & (((np.signbit(x) == np.signbit(cx)) & (ax != 0)
                                  & (ac <= 2 * ax) & (ax <= 2 * ac)) | ((ax == 0) & (ac == 0)))
        k = np.clip(expo[part], fmt.emin, fmt.emax) - (fmt.precision - 1)
        if here.all():  # the usual case: no element to pick out
            out[part] = ldexp(np.abs(cx - x), -k)
        elif here.any():
            out[part][here] = ldexp(np.abs(cx[here] - x[here]), -k[here])
        near[part] = here
    return near


def _finite_errors(
    c: np.ndarray, d: ExactValues, index: np.ndarray, fmt: FloatFormat
) -> tuple[np.ndarray, np.ndarray]:
    """|c - x| / ulp_d(x) for finite c and x at flat ``index`` (see _ulp_error_decoded),
    and the elements that need the exact path (their value here is meaningless)."""
    expo = d.expo.ravel()[index]
    mant = d.mant.ravel()[index]
    k = np.clip(expo, fmt.emin, fmt.emax) - (fmt.precision - 1)
    sc = expo - k
    magnitude = np.abs(c)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        a = np.ldexp(magnitude, -k)  # exact, or inf, or (k > 0, tiny c) a subnormal
    zero = mant == 0
    tiny = ~zero & (sc < _LOWEST_SCALE)
    regular = ~zero & ~tiny & (sc <= _HIGHEST_SCALE) & (a < _LARGEST_SCALED)
    out = np.where(zero | tiny & (c != 0), a, 0.0)
    slow = ~zero & ~regular & ~(tiny & ((c != 0) | (sc < _ROUNDS_TO_ZERO)))
    if not regular.any():
        return out, slow
    r = np.flatnonzero(regular)
    index, a, sc = index[r], a[r], sc[r]
    sigma = np.where((np.signbit(c[r]) == d.negative.ravel()[index]) | (c[r] == 0), 1.0, -1.0)
    x0 = np.ldexp(mant[r], sc) * sigma
    x1 = np.ldexp(d.mant_mid.ravel()[index], sc) * sigma
    x2 = np.ldexp(d.mant_low.ravel()[index], sc) * sigma
    s1, e1 = _two_sum(a, -x0)
    s2, e2 = _two_sum(s1, -x1)
    t1, f1 = _two_sum(e1, e2)
    t2, f2 = _two_sum(t1, -x2)
    hi, lo = _two_sum(s2, t2)
    eps = np.abs(f1) + np.abs(f2)
    eps += np.where(d.inexact.ravel()[index], np.ldexp(1.0, sc - (_SPLIT_BITS - 1)), 0.0)
    eps += np.where(np.ldexp(a, k[r]) != magnitude[r], _SMALLEST_SUBNORMAL, 0.0)
    error = np.abs(hi)
    outward = np.where(hi < 0, -lo, lo)  # lo's direction away from zero
    gap = np.spacing(error)  # to the next float64 above |hi|
    with np.errstate(under="ignore"):
        half_up = gap * 0.5
        half_down = np.where(np.frexp(error)[0] == 0.5, gap * 0.25, half_up)
        # fl(|lo| + 2 eps) < half (a float) implies |lo| + eps < half.
        certain = (eps == 0) | (np.abs(outward) + 2 * eps < np.where(outward > 0, half_up,
                                                                     half_down))
    out[r] = error
    slow[r] = ~certain
    return out, slow
