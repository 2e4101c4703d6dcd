"""The order check's sort: distinct integer keys give stable argsort's permutation, and
so does the compiled radix sort of the same keys (large batches, where numba is); the
compiled check of two outputs at once, sorted with the keys, flags NumPy's rows."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xentcheck.harness.checks.invariants import order_broken, orders_broken, stable_order
from xentcheck.harness.grading import _compiled_loops
from xentcheck.references.fast import jit

DTYPES = (np.float32, np.float16, ml_dtypes.bfloat16, np.float64)
#: The engines to try: the compiled radix sort only where numba is.
ENGINES = ("numpy", "numba") if _compiled_loops() is not None else ("numpy",)

#: Few distinct values (ties in plenty), both zeros, infinities, subnormals of float32.
VALUES = st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-40, -1e-40, 3e38, -3e38,
                          np.inf, -np.inf, 65504.0, 1e-7])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(VALUES, min_size=1, max_size=40), min_size=1, max_size=4)
       .filter(lambda r: len({len(x) for x in r}) == 1))
def test_stable_order_is_stable_argsort(dtype: type, rows: list[list[float]]) -> None:
    with np.errstate(over="ignore", under="ignore"):
        z = np.array(rows, np.float64).astype(dtype)
    expected = np.argsort(z.astype(np.float64), axis=1, kind="stable")
    for engine in ENGINES:
        with jit.engine(engine):
            np.testing.assert_array_equal(stable_order(z), expected)


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_stable_order_on_a_long_row_with_ties(engine: str) -> None:
    # K = 2**17 needs 17 index bits below the value's 32
    if engine not in ENGINES:
        pytest.skip("numba is not installed")
    z = np.random.default_rng(5).integers(-50, 50, (3, 2**17)).astype(np.float32) / 4
    with jit.engine(engine):
        np.testing.assert_array_equal(stable_order(z), np.argsort(z, axis=1, kind="stable"))


@pytest.mark.skipif("numba" not in ENGINES, reason="numba is not installed")
@pytest.mark.parametrize("dtype", DTYPES[:3], ids=lambda d: np.dtype(d).name)
def test_the_radix_sort_is_stable_argsort_on_every_bit_pattern(dtype: type) -> None:
    """Every float32 bit pattern class but NaN (both zeros, subnormals, infinities, every
    exponent, both signs) and many ties, through each of the radix sort's three digits."""
    rng = np.random.default_rng(9)
    bits = rng.integers(0, 2**32, (6, 5000), dtype=np.uint64).astype(np.uint32)
    z = bits.view(np.float32).copy()
    z[np.isnan(z)] = -0.0
    z[:, 2500:] = z[:, :2500]  # every value twice: ties
    z[1, :50] = [0.0, -0.0] * 25
    z[2, :4] = [np.inf, -np.inf, np.inf, -np.inf]
    with np.errstate(over="ignore", under="ignore"):
        z = z.astype(dtype)
    expected = np.argsort(z.astype(np.float64), axis=1, kind="stable")
    with jit.engine("numba"):
        np.testing.assert_array_equal(stable_order(z), expected)


def _planted(dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Softmax-like values of logits with ties, both zeros and infinities, a decrease
    planted in some rows (by a strictly larger logit, or inside a tie, which is no
    violation), NaN values in others."""
    rng = np.random.default_rng(3)
    z = rng.integers(-40, 40, (40, 3000)).astype(np.float64) / 8
    z[:, :5] = [np.inf, -np.inf, -np.inf, 0.0, -0.0]
    value = np.exp(np.minimum(z, 50.0) - 10.0)
    for r in range(0, 40, 3):  # the smallest value at a larger logit: mid-row, last pair
        if r % 2:
            value[r, 0] = 0.0  # at z = +inf, the largest
        else:
            value[r, int(np.argmax(z[r, 5:])) + 5] = 0.0
    for r in range(1, 40, 6):  # decreasing over ties: not a violation
        ties = np.flatnonzero(z[r] == z[r, 10])
        value[r, ties] *= np.linspace(1.5, 1, ties.size)
    value[2::7, 6] = np.nan
    with np.errstate(over="ignore"):
        return z.astype(dtype), value.astype(dtype)


@pytest.mark.skipif("numba" not in ENGINES, reason="numba is not installed")
@pytest.mark.parametrize("dtype", DTYPES[:3], ids=lambda d: np.dtype(d).name)
def test_both_outputs_at_once_flag_the_rows_each_flags(dtype: type) -> None:
    """The compiled check of two outputs sorted with the keys (no order, no gather) flags
    the rows the NumPy check of each output flags on its own, and so with one output."""
    z, value = _planted(dtype)
    other = value.copy()
    other[5, :] = other[5, ::-1]  # a second output broken elsewhere
    order = stable_order(z)
    with jit.engine("numpy"):
        expected = {"a": order_broken(z, order, value), "b": order_broken(z, order, other)}
        assert orders_broken(z, {"a": value, "b": other}).keys() == expected.keys()
    with jit.engine("numba"):
        got = orders_broken(z, {"a": value, "b": other})
        alone = orders_broken(z, {"b": other})
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    np.testing.assert_array_equal(alone["b"], expected["b"])
    assert not np.array_equal(expected["a"], expected["b"]) and 5 < expected["a"].sum() < 35


@pytest.mark.skipif("numba" not in ENGINES, reason="numba is not installed")
def test_the_paired_check_swapping_its_outputs_is_caught(monkeypatch) -> None:
    """The comparison above is not vacuous: a loop that unpacks its two outputs the wrong
    way round fails it."""
    from xentcheck.harness import _compiled

    real = _compiled.orders_broken_into

    def swapped(bits, first, second, out):  # noqa: ANN001, ANN202
        real(bits, second, first, out)

    monkeypatch.setattr(_compiled, "orders_broken_into", swapped)
    with pytest.raises(AssertionError):
        test_both_outputs_at_once_flag_the_rows_each_flags(np.float32)


@pytest.mark.skipif("numba" not in ENGINES, reason="numba is not installed")
@pytest.mark.parametrize("dtype", DTYPES[:3], ids=lambda d: np.dtype(d).name)
def test_the_compiled_order_check_flags_the_rows_numpy_flags(dtype: type) -> None:
    """The planted rows (:func:`_planted`): the same rows flagged by either engine."""
    z, value = _planted(dtype)
    order = stable_order(z)
    with jit.engine("numpy"):
        expected = order_broken(z, order, value)
    with jit.engine("numba"):
        got = order_broken(z, order, value)
    np.testing.assert_array_equal(got, expected)
    assert 5 < expected.sum() < 35
