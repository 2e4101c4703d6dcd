"""Tests of xentcheck.references.rounding: correct rounding to the four dtypes and ulp errors.

Every expected value is either written out as an exact dyadic (with the reason it is the
right answer) or comes from an independent oracle: NumPy's casts from float64 (correctly
rounded for float32 and float16), ml_dtypes' cast from float32 (for bfloat16), np.finfo,
np.spacing, and a brute-force nearest-value search by exact mpmath distance. The
vectorized ulp error from decoded values (``ExactValues``) has ulp_error's exact
per-element path as its oracle, bit for bit, on ties, near-ties and values far outside
each dtype's range.
"""

from __future__ import annotations

import math
import time
from typing import Any

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xentcheck.references import gold
from xentcheck.references.gold import UNDEFINED
from xentcheck.references.rounding import (
    EXPONENT_CLAMP,
    ExactValues,
    FloatFormat,
    _ulp_error_decoded,
    float_format,
    ldexp,
    round_to,
    ulp,
    ulp_error,
)

DTYPES = ["float64", "float32", "float16", "bfloat16"]
_UINT = {8: np.uint64, 4: np.uint32, 2: np.uint16}

# Hypothesis: the functions are pure and fast, but the first call imports; no deadline.
fast = settings(deadline=None, max_examples=100)


def dyadic(man: int, exp: int) -> mpmath.mpf:
    """The exact mpf man * 2**exp (prec=0: no rounding to the context precision)."""
    return mpmath.mpf((man, exp), prec=0)


def exact_sum(*terms: tuple[int, int]) -> mpmath.mpf:
    """Exact sum of terms (man, exp), each man * 2**exp."""
    low = min(e for _, e in terms)
    return dyadic(sum(m << (e - low) for m, e in terms), low)


def neg(x: mpmath.mpf) -> mpmath.mpf:
    """Exact -x (mpf's unary minus rounds to the context precision)."""
    return mpmath.fneg(x, exact=True)


def bits(a: np.ndarray) -> np.ndarray:
    """The bit patterns of a float array (distinguishes -0.0 from 0.0)."""
    a = np.asarray(a)
    return a.view(_UINT[a.dtype.itemsize])


def assert_rounds_to(x: object, dtype: str, expected: float) -> None:
    """round_to(x, dtype) is bit-for-bit ``expected`` (a float exactly in dtype)."""
    __tracebackhide__ = True
    fmt = float_format(dtype)
    got = round_to(x, dtype)
    assert got.dtype == fmt.dtype, f"round_to(x, {dtype}): dtype {got.dtype}, should be {dtype}"
    assert got.shape == (), f"round_to(scalar, {dtype}): shape {got.shape}, should be ()"
    want = np.array(expected, dtype=fmt.dtype)
    assert float(want) == expected or math.isnan(expected), "test bug: expected not in dtype"
    if math.isnan(expected):
        assert np.isnan(got), f"round_to({x}, {dtype}): got {got}, should be NaN"
        return
    assert bits(got) == bits(want), (
        f"round_to({x!r}, {dtype}): got {float(got).hex()}, "
        f"should be {expected.hex()}"
    )


def test_dyadic_helper_is_exact() -> None:
    # A 201-bit mantissa survives: the helper does not round to mpmath's 53 bits.
    x = dyadic(2**200 + 1, -200)
    assert x._mpf_ == (0, 2**200 + 1, -200, 201)
    assert exact_sum((1, 0), (1, -200))._mpf_ == (0, 2**200 + 1, -200, 201)


# ---------------------------------------------------------------------------------------
# Formats


@pytest.mark.parametrize("name", DTYPES)
def test_float_format_agrees_with_finfo(name: str) -> None:
    # Oracle: np.finfo (ml_dtypes.finfo for bfloat16), independent of the module's table.
    fmt = float_format(name)
    fi = ml_dtypes.finfo(fmt.dtype) if name == "bfloat16" else np.finfo(fmt.dtype)
    assert isinstance(fmt, FloatFormat)
    assert fmt.name == name
    assert fmt.precision == fi.nmant + 1
    assert fmt.emin == fi.minexp
    assert fmt.emax == fi.maxexp - 1
    assert fmt.max == float(fi.max)
    assert fmt.smallest_normal == float(fi.smallest_normal)
    assert fmt.smallest_subnormal == float(fi.smallest_subnormal)


@pytest.mark.parametrize(
    "spelling",
    [np.float32, np.dtype(np.float32), "float32", np.array([1], np.float32).dtype],
)
def test_float_format_spellings(spelling: object) -> None:
    assert float_format(spelling).name == "float32"


@pytest.mark.parametrize("spelling", [ml_dtypes.bfloat16, np.dtype(ml_dtypes.bfloat16)])
def test_float_format_bfloat16_spellings(spelling: object) -> None:
    assert float_format(spelling).name == "bfloat16"


@pytest.mark.parametrize("bad", [np.int32, "float128", np.complex128])
def test_float_format_rejects_other_dtypes(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        float_format(bad)


# ---------------------------------------------------------------------------------------
# Double rounding and ties


# x = 1 + 2**-p + tiny lies just above the tie between 1 and 1 + 2**(1 - p), so the correct
# result is 1 + 2**(1 - p). Rounding x to 53 bits first (float64, or mpmath's default
# context) drops the tiny term, leaves the exact tie, and ties-to-even gives 1: wrong.
DOUBLE_ROUNDING = [
    ("float64", exact_sum((1, 0), (1, -53), (1, -200)), 1 + 2**-52),
    ("float32", exact_sum((1, 0), (1, -24), (1, -60)), 1 + 2**-23),
    ("float16", exact_sum((1, 0), (1, -11), (1, -60)), 1 + 2**-10),
    ("bfloat16", exact_sum((1, 0), (1, -8), (1, -60)), 1 + 2**-7),
]


@pytest.mark.parametrize(("dtype", "x", "expected"), DOUBLE_ROUNDING)
def test_no_double_rounding(dtype: str, x: mpmath.mpf, expected: float) -> None:
    assert_rounds_to(x, dtype, expected)
    assert_rounds_to(neg(x), dtype, -expected)
    # The trap is real: rounding to a wider format first (float64's 53 bits; for float64
    # itself x87's 64 bits) leaves the exact tie, and the second rounding gives 1.
    intermediate = mpmath.mpf(x, prec=64 if dtype == "float64" else 53)
    assert intermediate == exact_sum((1, 0), (1, -float_format(dtype).precision))
    assert float(round_to(intermediate, dtype)) == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_ties_go_to_even(dtype: str) -> None:
    p = float_format(dtype).precision
    # 1 + 2**-p: halfway between 1 (even significand) and 1 + 2**(1-p) (odd) -> 1.
    assert_rounds_to(exact_sum((1, 0), (1, -p)), dtype, 1.0)
    # 1 + 3 * 2**-p: halfway between 1 + 2**(1-p) (odd) and 1 + 2**(2-p) (even) -> up.
    assert_rounds_to(exact_sum((1, 0), (3, -p)), dtype, 1 + 2.0 ** (2 - p))
    assert_rounds_to(neg(exact_sum((1, 0), (3, -p))), dtype, -(1 + 2.0 ** (2 - p)))
    # Just below / above the first tie: the tie decides nothing any more.
    assert_rounds_to(exact_sum((1, 0), (1, -p), (1, -p - 100)), dtype, 1 + 2.0 ** (1 - p))
    assert_rounds_to(exact_sum((1, 0), (1, -p), (-1, -p - 100)), dtype, 1.0)


# ---------------------------------------------------------------------------------------
# Underflow and overflow. Every threshold below is computed from the format's fields
# (precision, emin, emax), which test_float_format_agrees_with_finfo checks against finfo.


@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormal_boundaries(dtype: str) -> None:
    fmt = float_format(dtype)
    p, emin = fmt.precision, fmt.emin
    k = emin - p + 1  # smallest subnormal s = 2**k
    s = fmt.smallest_subnormal
    assert s == 2.0**k
    # s/2 is a tie between 0 (even) and s (odd significand 1): ties-to-even gives 0,
    # keeping the sign.
    assert_rounds_to(dyadic(1, k - 1), dtype, 0.0)
    assert_rounds_to(dyadic(-1, k - 1), dtype, -0.0)
    # A hair above s/2 rounds up to s; a hair below to 0.
    assert_rounds_to(exact_sum((1, k - 1), (1, k - 200)), dtype, s)
    assert_rounds_to(neg(exact_sum((1, k - 1), (1, k - 200))), dtype, -s)
    assert_rounds_to(exact_sum((1, k - 1), (-1, k - 200)), dtype, 0.0)
    # Far below: zero of the right sign.
    assert_rounds_to(dyadic(3, k - 10), dtype, 0.0)
    assert_rounds_to(dyadic(-3, k - 10), dtype, -0.0)
    # Ties among subnormals: 1.5 s -> 2 s (1 is odd), 2.5 s -> 2 s (2 is even).
    assert_rounds_to(dyadic(3, k - 1), dtype, 2 * s)
    assert_rounds_to(dyadic(5, k - 1), dtype, 2 * s)
    # A subnormal with more bits than the subnormal grid: 7/4 s -> 2 s; 5/4 s -> s.
    assert_rounds_to(dyadic(7, k - 2), dtype, 2 * s)
    assert_rounds_to(dyadic(5, k - 2), dtype, s)
    # Largest subnormal (2**(p-1) - 1) s plus s/2: a tie between an odd significand and
    # 2**(p-1) s = 2**emin, the smallest normal: rounds up into the normal range.
    largest_subnormal = exact_sum((2 ** (p - 1) - 1, k))
    assert_rounds_to(largest_subnormal, dtype, (2 ** (p - 1) - 1) * s)
    assert_rounds_to(exact_sum((2 ** (p - 1) - 1, k), (1, k - 1)), dtype, fmt.smallest_normal)
    assert_rounds_to(exact_sum((2 ** (p - 1) - 1, k), (-1, k - 1), (1, k - 90)), dtype,
                     (2 ** (p - 1) - 1) * s)


@pytest.mark.parametrize("dtype", DTYPES)
def test_overflow_thresholds(dtype: str) -> None:
    fmt = float_format(dtype)
    p, emax = fmt.precision, fmt.emax
    # max = (2**p - 1) * 2**(emax - p + 1); ulp(max) = 2**(emax - p + 1).
    # IEEE: overflow iff |x| >= max + ulp(max)/2 = (2**(p+1) - 1) * 2**(emax - p).
    assert fmt.max == math.ldexp(2**p - 1, emax - p + 1)
    threshold = dyadic(2 ** (p + 1) - 1, emax - p)
    hair = dyadic(1, emax - p - 200)
    with mpmath.workprec(400):
        just_below = threshold - hair
        just_above = threshold + hair
    assert_rounds_to(dyadic(2**p - 1, emax - p + 1), dtype, fmt.max)
    assert_rounds_to(threshold, dtype, math.inf)
    assert_rounds_to(neg(threshold), dtype, -math.inf)
    assert_rounds_to(just_above, dtype, math.inf)
    assert_rounds_to(just_below, dtype, fmt.max)
    assert_rounds_to(neg(just_below), dtype, -fmt.max)
    assert_rounds_to(dyadic(1, emax + 1), dtype, math.inf)


@pytest.mark.parametrize("dtype", DTYPES)
def test_astronomical_exponents_are_fast(dtype: str) -> None:
    # Exponents of +-10**12: far outside every format; must not build 10**12-bit integers.
    start = time.perf_counter()
    assert_rounds_to(dyadic(1, -(10**12)), dtype, 0.0)
    assert_rounds_to(dyadic(-(2**200 + 1), -(10**12)), dtype, -0.0)
    assert_rounds_to(dyadic(3, 10**12), dtype, math.inf)
    assert_rounds_to(dyadic(-3, 10**12), dtype, -math.inf)
    err = ulp_error(
        np.array([0.0, float_format(dtype).smallest_subnormal, 1.0, np.inf], dtype=dtype),
        [dyadic(1, -(10**12)), dyadic(1, -(10**12)), dyadic(1, 10**12), dyadic(1, 10**12)],
    )
    # 0 vs 2**-1e12: 2**(-1e12 - k) ulp underflows to 0.0; s vs 2**-1e12: 1 - tiny ulp
    # rounds to 1.0; 1 vs 2**1e12: about 2**(1e12 - emax + p - 1) ulp overflows to inf;
    # inf vs 2**1e12 (which rounds to inf): 0 by convention.
    np.testing.assert_array_equal(err, [0.0, 1.0, np.inf, 0.0])
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------------
# Inputs, specials, shapes


def test_special_values_and_plain_numbers() -> None:
    assert_rounds_to(mpmath.inf, "float16", math.inf)
    assert_rounds_to(-mpmath.inf, "bfloat16", -math.inf)
    assert_rounds_to(mpmath.nan, "float32", math.nan)
    assert_rounds_to(math.nan, "float32", math.nan)
    assert_rounds_to(UNDEFINED, "float64", math.nan)
    assert_rounds_to(mpmath.mpf(0), "float32", 0.0)
    assert_rounds_to(-0.0, "float32", -0.0)
    assert_rounds_to(-math.inf, "float16", -math.inf)
    # Ints are exact: 2**24 + 1 is a float32 tie between 2**24 (even) and 2**24 + 2.
    assert_rounds_to(2**24 + 1, "float32", 2.0**24)
    assert_rounds_to(-(2**24 + 3), "float32", -(2.0**24 + 4))
    assert_rounds_to(np.int64(70000), "float16", math.inf)  # 70000 > 65520 = max + ulp/2
    # NumPy scalars of every width, and an ml_dtypes scalar, are read exactly.
    assert_rounds_to(np.float32(0.1), "float64", float(np.float32(0.1)))
    assert_rounds_to(np.array(3.0, ml_dtypes.bfloat16)[()], "float16", 3.0)
    # Where longdouble has >= 61 significand bits (x87), 1 + 2**-53 + 2**-60 is exact in it
    # and lies above the float64 tie 1 + 2**-53, so it rounds up; float() would give 1.
    ld = np.longdouble(1) + np.longdouble(2.0**-53) + np.longdouble(2.0**-60)
    if ld - 1 == np.longdouble(2.0**-53) + np.longdouble(2.0**-60):
        assert_rounds_to(ld, "float64", 1 + 2**-52)


def test_shapes_dtypes_and_containers() -> None:
    x = np.empty((2, 3), dtype=object)
    x[:] = [[mpmath.mpf(1) / 3, 1, 0.5], [UNDEFINED, -mpmath.inf, 2.0**-30]]
    got = round_to(x, "float16")
    assert got.shape == (2, 3) and got.dtype == np.float16
    # 1/3 in float16: nearest multiple of 2**-12 in [1/4, 1/2) is 1365 * 2**-12
    # (4096 / 3 = 1365.33); 2**-30 is below half the smallest subnormal 2**-24.
    want = np.array([[1365 * 2**-12, 1, 0.5], [np.nan, -np.inf, 0.0]], dtype=np.float16)
    np.testing.assert_array_equal(got, want)
    assert round_to([[1, 2], [3, 4]], np.float32).shape == (2, 2)
    assert round_to([], "bfloat16").shape == (0,)
    assert round_to(np.array([0.1, 0.2]), "float64").tolist() == [0.1, 0.2]
    assert round_to(mpmath.mpf(1), ml_dtypes.bfloat16).dtype == ml_dtypes.bfloat16


def test_rejects_values_that_cannot_be_read_exactly() -> None:
    from fractions import Fraction

    for bad in (Fraction(1, 3), "0.1", mpmath.mpc(1, 1)):
        with pytest.raises(TypeError):
            round_to([bad], "float32")


# ---------------------------------------------------------------------------------------
# Property tests against independent oracles


def scaled_floats(min_exp: int, max_exp: int) -> st.SearchStrategy[float]:
    """Floats m * 2**e, m an arbitrary float in [-2, 2]: spreads over every binade."""
    return st.builds(
        math.ldexp, st.floats(min_value=-2.0, max_value=2.0), st.integers(min_exp, max_exp)
    )


float64s = st.one_of(st.floats(allow_nan=False), scaled_floats(-160, 140))


@fast
@given(st.lists(float64s, min_size=1, max_size=30))
def test_float32_and_float16_match_numpy_casts(xs: list[float]) -> None:
    # Oracle: NumPy's float64 -> float32 (hardware conversion) and float64 -> float16
    # (npy_double_to_half, rounding directly from the double's bits) are correctly rounded,
    # so for values exactly in float64 they are the right answer.
    # The floats themselves are the exact inputs (read bit for bit, -0.0 included); as mpf
    # (mpf(float) is exact, but mpmath has no -0) the values must round the same.
    arr = np.array(xs, dtype=np.float64)
    as_mpf = [mpmath.mpf(x) for x in xs]
    with np.errstate(over="ignore", under="ignore"):
        for dtype in (np.float32, np.float16):
            want = arr.astype(dtype)
            np.testing.assert_array_equal(bits(round_to(xs, dtype)), bits(want))
            np.testing.assert_array_equal(round_to(as_mpf, dtype), want)
    np.testing.assert_array_equal(bits(round_to(arr, np.float64)), bits(arr))


def test_ml_dtypes_bfloat16_oracle_from_float32() -> None:
    # ml_dtypes 0.6.0 converts float64 -> bfloat16 through float32 (double rounding):
    # 1 + 2**-8 + 2**-40 becomes 1 + 2**-8 in float32, a tie, then 1, while the correct
    # answer is 1 + 2**-7. So the bfloat16 property test uses its float32 -> bfloat16 cast,
    # checked here on ties and near-ties that are exact in float32.
    cases = {
        1 + 2**-8: 1.0,  # tie, even down
        1 + 3 * 2**-8: 1 + 2**-6,  # tie, even up
        1 + 2**-8 + 2**-23: 1 + 2**-7,  # above the tie
        2.0**-134: 0.0,  # half the smallest subnormal 2**-133: tie to 0
        3 * 2.0**-134: 2 * 2.0**-133,  # 1.5 subnormals: tie to 2
    }
    got = np.array(list(cases), np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
    assert got.tolist() == list(cases.values())
    assert_rounds_to(exact_sum((1, 0), (1, -8), (1, -40)), "bfloat16", 1 + 2**-7)


float32s = st.one_of(st.floats(width=32, allow_nan=False), scaled_floats(-140, 130))


@fast
@given(st.lists(float32s, min_size=1, max_size=30))
def test_bfloat16_matches_ml_dtypes_from_float32(xs: list[float]) -> None:
    with np.errstate(over="ignore", under="ignore"):
        arr32 = np.array(xs, dtype=np.float64).astype(np.float32)  # inputs exact in float32
        want = arr32.astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(bits(round_to(arr32, "bfloat16")), bits(want))
    as_mpf = [mpmath.mpf(float(x)) for x in arr32]
    np.testing.assert_array_equal(round_to(as_mpf, "bfloat16"), want)


def nearest_by_distance(x: mpmath.mpf, dtype: str) -> np.ndarray:
    """Brute-force oracle: the dtype value nearest to x by exact distance, ties to even.

    Starts from a rough guess (mpmath's float(), then NumPy's cast: at most a step or
    two off), then tries the 7 neighbouring bit patterns. Non-negative bit patterns are
    ordered like the values, and the pattern after max is inf's: for distances it stands
    for 2**(emax + 1), the next value if the exponent were unbounded (its significand is
    even, so the tie at max + ulp/2 goes to inf, as IEEE says).
    """
    fmt = float_format(dtype)
    uint = _UINT[fmt.dtype.itemsize]
    magnitude = neg(x) if x < 0 else x
    with np.errstate(over="ignore", under="ignore"):
        guess = np.array([float(magnitude)]).astype(fmt.dtype)
    inf_bits = int(bits(np.array([np.inf], fmt.dtype))[0])
    start = int(bits(guess)[0])
    best = None
    for b in range(max(start - 3, 0), min(start + 3, inf_bits) + 1):
        value = np.array([b], uint).view(fmt.dtype)
        as_mpf = dyadic(1, fmt.emax + 1) if b == inf_bits else mpmath.mpf(float(value[0]))
        distance = mpmath.fsub(magnitude, as_mpf, exact=True)
        distance = neg(distance) if distance < 0 else distance  # abs() would round
        key = (distance, b % 2)  # nearest, then even pattern (= even significand)
        if best is None or key < best[0]:
            best = (key, value)
    assert best is not None
    return -best[1] if x < 0 or (x == 0 and mpmath.mpf(x)._mpf_[0]) else best[1]


@st.composite
def dyadics(draw: st.DrawFn, dtype: str) -> mpmath.mpf:
    """Exact values with 1..200-bit significands across the whole range of dtype."""
    fmt = float_format(dtype)
    nbits = draw(st.integers(1, 200))
    man = draw(st.integers(2 ** (nbits - 1), 2**nbits - 1))
    top = draw(st.integers(fmt.emin - fmt.precision - 3, fmt.emax + 2))  # floor(log2|x|)
    sign = draw(st.sampled_from([1, -1]))
    return dyadic(sign * man, top - nbits + 1)


@pytest.mark.parametrize("dtype", DTYPES)
@fast
@given(data=st.data())
def test_matches_brute_force_oracle(dtype: str, data: st.DataObject) -> None:
    xs = data.draw(st.lists(dyadics(dtype), min_size=1, max_size=10))
    want = np.concatenate([nearest_by_distance(x, dtype) for x in xs])
    got = round_to(xs, dtype)
    np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"{dtype}: {xs}")


# ---------------------------------------------------------------------------------------
# ulp


@pytest.mark.parametrize("dtype", DTYPES)
def test_ulp_known_values(dtype: str) -> None:
    fmt = float_format(dtype)
    p = fmt.precision
    assert ulp(1, dtype) == mpmath.ldexp(1, 1 - p)  # [1, 2): spacing 2**(1 - p)
    assert ulp(mpmath.mpf(-1.5), dtype) == mpmath.ldexp(1, 1 - p)
    assert ulp(dyadic(2**200 - 1, -200), dtype) == mpmath.ldexp(1, -p)  # just below 1
    assert ulp(0, dtype) == fmt.smallest_subnormal
    assert ulp(fmt.smallest_subnormal, dtype) == fmt.smallest_subnormal  # subnormals
    assert ulp(fmt.smallest_normal, dtype) == fmt.smallest_subnormal  # first binade too
    ulp_max = mpmath.ldexp(1, fmt.emax - p + 1)
    assert ulp(fmt.max, dtype) == ulp_max
    assert ulp(dyadic(1, 10**6), dtype) == ulp_max  # beyond max: max's binade
    assert mpmath.isnan(ulp(mpmath.inf, dtype)) and mpmath.isnan(ulp(UNDEFINED, dtype))


@fast
@given(st.floats(min_value=0.0, exclude_min=True, allow_infinity=False))
def test_ulp_matches_numpy_spacing(x: float) -> None:
    # Oracle: np.spacing(v) = distance from v to the next larger value of v's dtype, which
    # is ulp_d(v) for positive finite v below max.
    with np.errstate(over="ignore", under="ignore"):
        for dtype in (np.float64, np.float32, np.float16):
            v = np.array(x).astype(dtype)
            if 0 < v < np.finfo(dtype).max:
                assert ulp(float(v), dtype) == float(np.spacing(v)), (dtype, float(v))


# ---------------------------------------------------------------------------------------
# ulp_error


def test_ulp_error_known_values() -> None:
    one = np.float32(1)
    up = np.nextafter(one, np.float32(2))  # 1 + 2**-23
    down = np.nextafter(one, np.float32(0))  # 1 - 2**-24
    # |(1 + 2**-23) - 1| / 2**-23 = 1; |(1 - 2**-24) - 1| / ulp(1) = 2**-24 / 2**-23 = 0.5.
    np.testing.assert_array_equal(ulp_error(np.array([up, down, one]), [1, 1, 1]), [1, 0.5, 0])
    # x = 1 + 2**-24 + 2**-60 rounds (correctly) to 1 + 2**-23 in float32, with error
    # (2**-24 - 2**-60) / 2**-23 = 0.5 - 2**-37; the other neighbour, 1, is 0.5 + 2**-37.
    x = exact_sum((1, 0), (1, -24), (1, -60))
    assert round_to(x, "float32") == up
    np.testing.assert_array_equal(ulp_error(np.array([up, one]), [x, x]), [0.5 - 2**-37,
                                                                            0.5 + 2**-37])
    # A float64 candidate and an exact value that is not a float: 1/3 at 200 bits; the
    # float64 nearest 1/3 is 0x1.5555555555555p-2, below 1/3 by (1/3) * 2**-54, i.e.
    # (1/3) * 2**-54 / 2**-54 = 1/3 ulp (ulp at [1/4, 1/2) is 2**-54).
    with mpmath.workprec(200):
        third = mpmath.mpf(1) / 3
    err = ulp_error(np.array([float.fromhex("0x1.5555555555555p-2")]), [third])
    assert abs(err[0] - 1 / 3) < 1e-15


@pytest.mark.parametrize("dtype", DTYPES)
def test_ulp_error_resolves_tiny_errors(dtype: str) -> None:
    p = float_format(dtype).precision
    # exact = 1 + d * 2**(1 - p) with d = mpf(0.001) (the float64 nearest 0.001, exactly);
    # candidate 1 is off by exactly d ulps, and d is a float64, so the answer is d itself.
    d = mpmath.mpf(0.001)
    with mpmath.workprec(200):
        exact = 1 + d * mpmath.ldexp(1, 1 - p)
        tinier = 1 + mpmath.ldexp(1, 1 - p - 100)  # 2**-100 ulp
    got = ulp_error(np.array([1.0, 1.0], dtype=dtype), [exact, tinier])
    np.testing.assert_array_equal(got, [0.001, 2.0**-100])


def test_ulp_error_sticky_term_decides_float64_rounding() -> None:
    # float64, x = 2**1023 + 2**970 (finite, ulp_d(x) = 2**971): x / ulp = 2**52 + 0.5,
    # a tie for float64 rounding of the error. Candidate c = 0: error exactly 2**52 + 0.5,
    # ties-to-even -> 2**52. c = +smallest subnormal: 2**52 + 0.5 - tiny -> 2**52.
    # c = -smallest subnormal: 2**52 + 0.5 + tiny -> 2**52 + 1.
    x = exact_sum((1, 1023), (1, 970))
    s = 2.0**-1074
    got = ulp_error(np.array([0.0, s, -s]), [x, x, x])
    np.testing.assert_array_equal(got, [2.0**52, 2.0**52, 2.0**52 + 1])


def test_ulp_error_conventions() -> None:
    # One row per line of the docstring's table; candidates in float16 (max 65504, and
    # 65520 = max + ulp(max)/2 is the first value that rounds to inf).
    rows = [
        (UNDEFINED, 1.0, np.nan),
        (UNDEFINED, np.nan, np.nan),
        (mpmath.nan, np.nan, 0.0),
        (mpmath.nan, 1.0, np.inf),
        (mpmath.nan, np.inf, np.inf),
        (mpmath.mpf(1), np.nan, np.inf),
        (mpmath.inf, np.nan, np.inf),
        (mpmath.inf, np.inf, 0.0),
        (-mpmath.inf, -np.inf, 0.0),
        (mpmath.inf, 65504.0, np.inf),
        (mpmath.inf, -np.inf, np.inf),
        (mpmath.mpf(65520), np.inf, 0.0),
        (mpmath.mpf(-1e6), -np.inf, 0.0),
        (mpmath.mpf(65519), np.inf, np.inf),  # 65519 rounds to max, not inf
        (mpmath.mpf(1), np.inf, np.inf),
        (mpmath.mpf(65520), -np.inf, np.inf),
        # Finite beyond max, finite candidate: (65520 - 65504) / ulp(max) = 16 / 32.
        (mpmath.mpf(65520), 65504.0, 0.5),
        (0.0, -0.0, 0.0),
        (2.0**-25, 0.0, 0.5),  # ulp near 0 is the smallest subnormal 2**-24
    ]
    exact = np.empty(len(rows), dtype=object)
    exact[:] = [r[0] for r in rows]
    candidate = np.array([r[1] for r in rows], dtype=np.float16)
    got = ulp_error(candidate, exact)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [r[2] for r in rows])


def test_ulp_error_shapes() -> None:
    got = ulp_error(np.ones((2, 2), np.float32), [[1, 1], [1, 2]])
    assert got.shape == (2, 2)
    assert got.tolist() == [[0, 0], [0, 2**22]]  # |1 - 2| / ulp(2) = 1 / 2**-22
    with pytest.raises(ValueError):
        ulp_error(np.ones(3, np.float32), [1, 1])
    assert ulp_error(np.float16(1), 1).shape == ()


@pytest.mark.parametrize("dtype", DTYPES)
@fast
@given(data=st.data())
def test_correct_rounding_is_within_half_ulp(dtype: str, data: st.DataObject) -> None:
    # ulp_error(round_to(x), x) <= 0.5, and both neighbours of round_to(x) are >= 0.5
    # away (so the bound is tight and the error is not, say, always 0).
    fmt = float_format(dtype)
    xs = data.draw(st.lists(dyadics(dtype), min_size=1, max_size=10))
    rounded = round_to(xs, dtype)
    assert (ulp_error(rounded, xs) <= 0.5).all()
    sign_bit = 1 << (8 * fmt.dtype.itemsize - 1)
    inf_bits = int(bits(np.array(np.inf, fmt.dtype)))
    uint = _UINT[fmt.dtype.itemsize]
    for step in (1, -1):
        neighbours, exact = [], []
        for b, x in zip(bits(rounded).tolist(), xs, strict=True):
            magnitude, sign = b & (sign_bit - 1), b & sign_bit
            if magnitude != inf_bits and magnitude + step >= 0:
                neighbours.append(sign | (magnitude + step))
                exact.append(x)
        candidate = np.array(neighbours, dtype=uint).view(fmt.dtype)
        assert (ulp_error(candidate, exact) >= 0.5).all(), (dtype, step)


# ---------------------------------------------------------------------------------------
# Decoded exact values: ExactValues, and ulp_error computed from them with NumPy, which
# must be ulp_error's exact per-element result bit for bit (the oracle is ulp_error on the
# same values as an object array).


def pieces_sum(d: ExactValues, i: int) -> mpmath.mpf:
    """|x| as decoded: (mant + mant_mid + mant_low) * 2**expo, summed exactly."""
    total = mpmath.mpf(0)
    for a in (d.mant, d.mant_mid, d.mant_low):
        total = mpmath.fadd(total, float(a.flat[i]), exact=True)
    return mpmath.ldexp(total, int(d.expo.flat[i]))


def assert_same_errors(candidate: np.ndarray, exact: Any) -> np.ndarray:
    """ulp_error from decoded values is bit for bit the exact path's; returns the fallback
    mask (the elements the decoded path handed to the exact path)."""
    __tracebackhide__ = True
    want = ulp_error(candidate, exact)
    decoded = ExactValues.from_exact(exact)
    got, fallback = _ulp_error_decoded(candidate, decoded, float_format(candidate.dtype))
    assert got.shape == want.shape and got.dtype == np.float64
    differ = bits(got) != bits(want)
    if differ.any():
        i = int(np.flatnonzero(differ.ravel())[0])
        c = float(np.asarray(candidate).astype(np.float64).ravel()[i])
        x = np.asarray(exact, dtype=object).ravel()[i]
        raise AssertionError(
            f"ulp_error({candidate.dtype} {c.hex()}, {x!r}) from decoded values: got "
            f"{got.ravel()[i]!r}, should be {want.ravel()[i]!r} (exact path); "
            f"{int(differ.sum())} of {differ.size} differ")
    np.testing.assert_array_equal(ulp_error(candidate, decoded), want)
    return fallback


def test_decoded_fields() -> None:
    x = np.empty(9, dtype=object)
    x[:] = [mpmath.mpf(3) / 4, -mpmath.inf, mpmath.nan, UNDEFINED, -0.0, 0, -(2**300 + 1),
            dyadic(1, 10**13), dyadic(-3, -(10**30))]
    d = ExactValues.from_exact(x)
    assert d.shape == (9,) and d.ndim == 1 and d.size == 9
    assert d.defined.tolist() == [True] * 3 + [False] + [True] * 5
    assert d.finite.tolist() == [True, False, False, False, True, True, True, True, True]
    assert d.infinite.tolist() == [False, True] + [False] * 7
    assert d.negative.tolist() == [False, True, False, False, True, False, True, False, True]
    clamp = EXPONENT_CLAMP
    assert d.expo.tolist() == [-1, -clamp, -clamp, -clamp, -clamp, -clamp, 300, clamp, -clamp]
    assert d.mant.tolist() == [1.5, 0, 0, 0, 0, 0, 1.0, 1.0, 1.5]
    # 2**300 + 1: 301 bits, the last far beyond the 159 kept; exponents beyond int64 clamp.
    assert d.mant_mid[6] == 0 and d.mant_low[6] == 0 and d.inexact.tolist()[6]
    assert not d.inexact[[0, 7, 8]].any()
    assert d.element(3) is UNDEFINED and d.element(0) == mpmath.mpf(0.75)


@fast
@given(st.lists(st.integers(1, 400).flatmap(
    lambda n: st.tuples(st.integers(2 ** (n - 1), 2**n - 1), st.integers(-1200, 1200))),
    min_size=1, max_size=20))
def test_decoded_pieces_are_the_leading_bits(terms: list[tuple[int, int]]) -> None:
    # mant, mant_mid, mant_low are M's first 3 x 53 bits, truncated: exact up to 159 bits,
    # and below by less than 2**-158 of 2**expo (flagged inexact) beyond.
    xs = [dyadic(man, exp) for man, exp in terms]
    d = ExactValues.from_exact(xs)
    for i, (man, exp) in enumerate(terms):
        top = exp + man.bit_length() - 1
        significant = xs[i]._mpf_[3]  # bits from the leading one to the last one
        assert d.expo[i] == top
        assert 1 <= d.mant[i] < 2 and 0 <= d.mant_mid[i] < 2**-52 and 0 <= d.mant_low[i] < 2**-105
        left_out = mpmath.fsub(xs[i], pieces_sum(d, i), exact=True)
        assert left_out == 0 if significant <= 159 else 0 < left_out < mpmath.ldexp(1, top - 158)
        assert bool(d.inexact[i]) == (significant > 159)


def test_decoded_indexing_and_ulp() -> None:
    x = np.empty((2, 3), dtype=object)
    x[:] = [[mpmath.mpf(1) / 3, 1, 0], [UNDEFINED, -mpmath.inf, dyadic(1, 200)]]
    d = ExactValues.from_exact(x)
    row = d[1]
    assert row.shape == (3,) and row.element(0) is UNDEFINED and row.infinite.tolist()[1]
    one = d[0, 1]
    assert one.shape == () and one.element(()) == 1 and one.mant[()] == 1.0
    assert d[:, 1:].shape == (2, 2)
    for dtype in DTYPES:
        want = [[float(ulp(v, dtype)) for v in r] for r in x]
        np.testing.assert_array_equal(d.ulp(dtype), want)


@st.composite
def dtype_values(draw: st.DrawFn, dtype: str) -> float:
    """Any finite value of dtype (as a float), subnormals and max included."""
    fmt = float_format(dtype)
    inf_bits = int(bits(np.array(np.inf, fmt.dtype)))
    pattern = draw(st.integers(0, inf_bits - 1))
    value = float(np.array(pattern, _UINT[fmt.dtype.itemsize]).view(fmt.dtype))
    return -value if draw(st.booleans()) else value


def step(value: float, dtype: str, steps: int) -> float:
    """The dtype value ``steps`` patterns away from ``value`` in magnitude (same sign),
    stopping at 0 and at max."""
    fmt = float_format(dtype)
    uint = _UINT[fmt.dtype.itemsize]
    pattern = int(bits(np.array(value, fmt.dtype)))
    sign_bit = 1 << (8 * fmt.dtype.itemsize - 1)
    inf_bits = int(bits(np.array(np.inf, fmt.dtype)))
    magnitude = min(max((pattern & (sign_bit - 1)) + steps, 0), inf_bits - 1)
    return float(np.array(magnitude | (pattern & sign_bit), uint).view(fmt.dtype))


def units(v: float, q: int) -> int:
    """v / 2**q as an int (exact: v is a multiple of 2**q)."""
    return int(mpmath.ldexp(mpmath.mpf(v), -q))


@st.composite
def hard_pairs(draw: st.DrawFn, dtype: str) -> tuple[Any, float]:
    """(exact value, candidate) pairs where the float64 path could go wrong: ties and
    near-ties of the dtype, ties of the float64 rounding of the error itself, binade
    edges, subnormals, values far outside the dtype's range, long significands, specials."""
    fmt = float_format(dtype)
    v = draw(dtype_values(dtype))
    q = int(mpmath.log(ulp(v, dtype), 2))  # ulp_dtype(v) = 2**q
    j = draw(st.integers(1, 260))
    kind = draw(st.sampled_from(["tie", "near-tie", "error-tie", "dyadic", "binade", "tiny",
                                 "huge", "special"]))
    sign = draw(st.sampled_from([1, -1]))
    if kind == "tie":  # v + ulp/2, exactly between two dtype values
        x = exact_sum((units(v, q - 1), q - 1), (1, q - 1))
    elif kind == "near-tie":
        x = exact_sum((units(v, q - 1), q - 1), (1, q - 1), (sign, q - 1 - j))
    elif kind == "error-tie":
        # |v - x| / ulp = R + ulp64(R)/2 (+- a hair): a tie for the error's own rounding
        # to float64, when v is the candidate and x stays in v's binade.
        r_man = draw(st.integers(2**52, 2**53 - 1))
        r_exp = draw(st.integers(-60, fmt.precision - 3)) - 52
        tail = [] if draw(st.booleans()) else [(sign, q + r_exp - 1 - j)]
        x = exact_sum((units(v, q), q), (2 * r_man + 1, q + r_exp - 1), *tail)
        return x, v
    elif kind == "dyadic":
        nbits = draw(st.integers(1, 300))
        top = draw(st.integers(fmt.emin - fmt.precision - 60, fmt.emax + 3))
        x = dyadic(sign * draw(st.integers(2 ** (nbits - 1), 2**nbits - 1)), top - nbits + 1)
    elif kind == "binade":
        e = draw(st.sampled_from([fmt.emin - 1, fmt.emin, 0, fmt.emax, fmt.emax + 1]))
        x = exact_sum((sign, e), (draw(st.sampled_from([1, -1])), e - j))
    elif kind == "tiny":  # far below the smallest subnormal: 2**-1100 .. 2**-2300 ulps
        x = exact_sum((sign, fmt.emin - fmt.precision - draw(st.integers(800, 1300))),
                      (1, fmt.emin - fmt.precision - 1400 - j))
    elif kind == "huge":  # far beyond max: up to 2**1100 ulps
        x = exact_sum((sign, fmt.emax + draw(st.integers(1, 1100))), (1, fmt.emax - j))
    else:
        x = draw(st.sampled_from([mpmath.inf, -mpmath.inf, mpmath.nan, UNDEFINED, 0, -0.0,
                                  mpmath.mpf(v), 2**fmt.emax * 3]))
    choice = draw(st.sampled_from(["near", "v", "any", "special"]))
    if choice == "near" and isinstance(x, mpmath.mpf) and mpmath.isfinite(x):
        nearest = float(round_to(x, dtype))
        if math.isinf(nearest):
            return x, nearest
        return x, step(nearest, dtype, draw(st.integers(-3, 3)))
    if choice == "any":
        return x, draw(dtype_values(dtype))
    if choice == "special":
        return x, draw(st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan]))
    return x, v


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=300)
@given(data=st.data())
def test_decoded_ulp_error_is_the_exact_one(dtype: str, data: st.DataObject) -> None:
    pairs = data.draw(st.lists(hard_pairs(dtype), min_size=1, max_size=20))
    exact = np.empty(len(pairs), dtype=object)
    exact[:] = [x for x, _ in pairs]
    candidate = np.array([c for _, c in pairs], dtype=np.float64).astype(float_format(dtype).dtype)
    assert_same_errors(candidate, exact)


@pytest.mark.parametrize("dtype", DTYPES)
def test_decoded_path_takes_the_exact_path_only_where_it_must(dtype: str) -> None:
    fmt = float_format(dtype)
    p = fmt.precision
    # A gold softmax and log_softmax and their dtype neighbours: all vectorized.
    z = np.random.default_rng(7).normal(size=(8, 64)) * 8
    for exact in (gold.softmax(z), gold.log_softmax(z)):
        rounded = round_to(exact, dtype)
        for steps in (0, 1, -2):
            candidate = np.vectorize(lambda v, s=steps: step(float(v), dtype, s),
                                     otypes=[np.float64])(rounded).astype(fmt.dtype)
            assert not assert_same_errors(candidate, exact).any()
    # Exact midpoints held exactly by the three pieces: 0.5 exactly, no exact path.
    x = exact_sum((1, 0), (1, -p))
    fallback = assert_same_errors(np.array([1.0, 1 + 2.0 ** (1 - p)], fmt.dtype), [x, x])
    assert not fallback.any()
    assert ulp_error(np.array([1.0], fmt.dtype), ExactValues.from_exact([x]))[0] == 0.5
    # Each hand-off: an exact tie of the error's float64 rounding with bits beyond the
    # pieces' reach (2**52 + 0.5 ulp and a sticky 2**-200); x far below the subnormals
    # with c = 0 (X = 2**-1000 ulp); x far beyond max (2**1010 ulp).
    k = fmt.emin - p + 1
    hard = [exact_sum((2**53 + 1, 1 - p), (1, -300)), dyadic(1, k - 1000),
            dyadic(1, fmt.emax + 1010)]
    fallback = assert_same_errors(np.array([0.0, 0.0, 1.0], fmt.dtype), hard)
    assert fallback.tolist() == [True, True, True]


@pytest.mark.parametrize("dtype", DTYPES)
@fast
@given(data=st.data())
def test_decoded_floats_are_read_exactly(dtype: str, data: st.DataObject) -> None:
    fmt = float_format(dtype)
    values = data.draw(st.lists(st.one_of(dtype_values(dtype), st.sampled_from(
        [math.inf, -math.inf, math.nan, -0.0])), min_size=1, max_size=20))
    arr = np.array(values, np.float64).astype(fmt.dtype)
    d = ExactValues.from_floats(arr)
    as_objects = np.empty(arr.shape, dtype=object)
    as_objects[:] = values
    # The same values as mpf (exact; mpmath has no -0.0, which stays a float) take the
    # integer decoding, an independent route.
    as_mpf = np.empty(arr.shape, dtype=object)
    as_mpf[:] = [mpmath.mpf(v) if v != 0 or math.copysign(1, v) > 0 else v for v in values]
    e = ExactValues.from_exact(as_mpf)
    for field in ("defined", "finite", "infinite", "negative", "expo", "mant", "mant_mid",
                  "mant_low", "inexact"):
        np.testing.assert_array_equal(getattr(d, field), getattr(e, field), err_msg=field)
    candidate = np.array(data.draw(st.lists(dtype_values(dtype), min_size=arr.size,
                                            max_size=arr.size)), np.float64).astype(fmt.dtype)
    np.testing.assert_array_equal(bits(ulp_error(candidate, d)),
                                  bits(ulp_error(candidate, as_objects)))


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 63, reason="longdouble is not x87 here")
@fast
@given(st.lists(st.tuples(float64s, st.integers(-(2**11), 2**11), st.integers(53, 80)),
                min_size=1, max_size=20))
def test_decoded_longdouble_keeps_every_bit(terms: list[tuple[float, int, int]]) -> None:
    # x = f + t * 2**(e(f) - s): a float64 plus bits that only longdouble holds.
    ld = np.array([np.longdouble(f) + np.ldexp(np.longdouble(t), math.frexp(f)[1] - s)
                   for f, t, s in terms])
    undefined = np.zeros(ld.shape, bool)
    undefined[0] = True
    ld[0] = np.nan
    d = ExactValues.from_floats(ld, undefined=undefined)
    as_objects = np.empty(ld.shape, dtype=object)
    as_objects[:] = list(ld)
    as_objects[0] = UNDEFINED
    for i in range(1, ld.size):
        if np.isfinite(ld[i]) and ld[i] != 0:
            num, den = abs(ld[i]).as_integer_ratio()  # den is a power of two
            assert pieces_sum(d, i) == dyadic(int(num), 1 - int(den).bit_length())
    assert not d.inexact.any()
    # The fast tier's object arrays (longdouble scalars and UNDEFINED) decode the same.
    e = ExactValues.from_exact(as_objects)
    for field in ("defined", "finite", "infinite", "negative", "expo", "mant", "mant_mid",
                  "mant_low", "inexact"):
        np.testing.assert_array_equal(getattr(d, field), getattr(e, field), err_msg=field)
    for dtype in DTYPES:
        with np.errstate(over="ignore", under="ignore"):
            candidate = ld.astype(np.float64).astype(float_format(dtype).dtype)
        np.testing.assert_array_equal(bits(ulp_error(candidate, d)),
                                      bits(ulp_error(candidate, as_objects)))


def test_decoded_floats_reject_what_they_cannot_read() -> None:
    with pytest.raises(TypeError):
        ExactValues.from_floats(np.array([1, 2]))
    with pytest.raises(ValueError):
        ExactValues.from_floats(np.ones(3), undefined=np.zeros(2, bool))
    with pytest.raises(ValueError):
        ulp_error(np.ones(3, np.float32), ExactValues.from_exact([1, 1]))


@pytest.mark.parametrize("dtype", DTYPES)
@fast
@given(data=st.data())
def test_decoded_floats_near_the_candidate_take_the_short_path_exactly(
        dtype: str, data: st.DataObject) -> None:
    """Candidates within a factor 2 of x (where the error is computed as one exact
    difference, Sterbenz's lemma) give the exact path's bits: x near binade edges and
    subnormals, candidates a few of their own ulps away, both source formats."""
    fmt = float_format(dtype)
    xs = data.draw(st.lists(float64s.filter(lambda v: v != 0 and math.isfinite(v)),
                            min_size=1, max_size=20))
    steps = data.draw(st.lists(st.integers(-3, 3), min_size=len(xs), max_size=len(xs)))
    with np.errstate(over="ignore", under="ignore"):
        c = np.array(xs).astype(fmt.dtype)
        c = np.array([np.nextafter(v, np.inf * s, dtype=fmt.dtype) if s else v
                      for v, s in zip(c, steps, strict=True)], fmt.dtype) \
            if fmt.dtype != np.dtype(ml_dtypes.bfloat16) else c
    for source in (np.float64, np.longdouble):
        x = np.array(xs, source)
        if source is np.longdouble:
            x = x + x * np.longdouble(2.0**-60)  # bits beyond float64
        as_objects = np.empty(x.shape, dtype=object)
        as_objects[:] = list(x)
        np.testing.assert_array_equal(bits(ulp_error(c, ExactValues.from_floats(x))),
                                      bits(ulp_error(c, as_objects)))


@fast
@given(xs=st.lists(st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 5e-324, -2.5e-308])),
                   min_size=1, max_size=30),
       es=st.lists(st.integers(-1100, 1100), min_size=30, max_size=30))
def test_ldexp_is_numpys_bit_for_bit(xs: list[float], es: list[int]) -> None:
    """The multiplication by a power of two built from its bits against np.ldexp: results
    that underflow into the subnormals or overflow, NaN, infinities, both zeros, and
    exponents outside [-1022, 1023] (np.ldexp's own path)."""
    x = np.array(xs)
    for e in (np.array(es[:x.size]), np.clip(np.array(es[:x.size]), -1022, 1023)):
        with np.errstate(over="ignore", under="ignore"):
            np.testing.assert_array_equal(bits(ldexp(x, e)), bits(np.ldexp(x, e)))
    with np.errstate(under="ignore"):
        assert bits(ldexp(0.5, np.array([-1022, 0, 1023]))).tolist() == bits(
            np.ldexp(0.5, np.array([-1022, 0, 1023]))).tolist()
