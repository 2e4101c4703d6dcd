"""The shift of the shift-invariance check: a constant c with z + c exact for every finite
logit. It looks at the first entries before all of them; the answer must be the one a
look at all of them gives (planted: trusting the first entries alone)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from xentcheck.harness.checks.consistency import _SAMPLE, _shift


def _by_definition(z: np.ndarray) -> float | None:
    finite = z[np.isfinite(z.astype(np.float64))].astype(np.float64)
    for c in (1.0, 0.5, 0.25, 2.0, 16.0):
        moved = (finite + c).astype(z.dtype).astype(np.float64)
        if finite.size and np.all(moved - c == finite) and np.all(np.isfinite(moved)):
            return c
    return None


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16])
def test_a_shift_is_exact_for_every_logit_not_only_the_first(dtype) -> None:
    rng = np.random.default_rng(0)
    whole = rng.integers(-8, 8, (4, 3 * _SAMPLE)).astype(dtype)  # +1 exact everywhere
    assert _shift(whole) == _by_definition(whole) == 1.0
    late = whole.copy()
    late[3, -1] = np.asarray(1.0 / 3.0).astype(dtype)  # z + 1 rounds: only here
    assert _shift(late) == _by_definition(late)
    assert _shift(late) != 1.0
    late[:, :5] = np.inf
    assert _shift(late) == _by_definition(late)
    fine = rng.standard_normal((2, 3 * _SAMPLE)).astype(dtype)  # the first entries decide
    assert _shift(fine) == _by_definition(fine)
    assert _shift(np.full((2, 3), -np.inf, dtype)) is None
