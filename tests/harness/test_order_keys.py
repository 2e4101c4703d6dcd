"""The order check's sort: distinct integer keys give stable argsort's permutation."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xentcheck.harness.checks.invariants import stable_order

DTYPES = (np.float32, np.float16, ml_dtypes.bfloat16, np.float64)

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
    np.testing.assert_array_equal(stable_order(z), expected)


def test_stable_order_on_a_long_row_with_ties() -> None:
    # K = 2**17 needs 17 index bits below the value's 32
    z = np.random.default_rng(5).integers(-50, 50, (3, 2**17)).astype(np.float32) / 4
    np.testing.assert_array_equal(stable_order(z), np.argsort(z, axis=1, kind="stable"))
