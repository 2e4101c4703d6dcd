"""The dialect rules of ``xentcheck.references.dialects`` against gold computed here by
hand in mpmath."""

from __future__ import annotations

import math

import ml_dtypes
import mpmath
import numpy as np
import pytest

import xentcheck.references as ref
from xentcheck.references import dialects
from xentcheck.references.gold import UNDEFINED

LOGITS = np.array([[0.5, -1.25, 2.0], [3.0, 0.0, -0.75]])
TARGET = np.array([[0.25, 0.5, 0.25], [0.0, 0.125, 0.875]])
WEIGHT = np.array([2.0, 0.5, 1.5])


def _paddle_by_hand(reduction: str) -> mpmath.mpf | list[mpmath.mpf]:
    """Paddle's documented soft-label rule, in mpmath at 60 digits: row loss
    (Σ_c w_c y_c) · (−Σ_c y_c log softmax(z)_c); the mean divides by Σ_rows Σ_c w_c y_c."""
    with mpmath.workdps(60):
        rows, masses = [], []
        for z, y in zip(LOGITS.tolist(), TARGET.tolist(), strict=True):
            lse = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in z))
            pairs = list(zip(z, y, strict=True))
            ce = -mpmath.fsum(mpmath.mpf(t) * (mpmath.mpf(v) - lse) for v, t in pairs)
            m = mpmath.fsum(mpmath.mpf(w) * mpmath.mpf(t)
                            for w, t in zip(WEIGHT.tolist(), y, strict=True))
            rows.append(m * ce)
            masses.append(m)
        if reduction == "none":
            return rows
        total = mpmath.fsum(rows)
        return total / mpmath.fsum(masses) if reduction == "mean" else total


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_soft_label_weight_scales_unweighted_rows(reduction):
    unweighted = ref.cross_entropy(LOGITS, TARGET, reduction="none")
    got = dialects.scale_rows(unweighted, dialects.row_mass(TARGET, WEIGHT), reduction)
    want = _paddle_by_hand(reduction)
    for g, w in zip(np.atleast_1d(got).tolist(), np.atleast_1d(np.array(want, object)).tolist(),
                    strict=True):
        assert abs(g - w) <= abs(w) * mpmath.mpf(2) ** -100
    # and it is not PyTorch's weighting: the same options there give another loss
    torch_style = ref.cross_entropy(LOGITS, TARGET, weight=WEIGHT, reduction=reduction)
    assert abs(np.atleast_1d(torch_style)[0] - np.atleast_1d(got)[0]) > 1e-3


def test_soft_label_weight_scales_gradient_rows_and_divides_the_mean():
    grad0 = ref.cross_entropy_grad(LOGITS, TARGET, reduction="none")
    masses = dialects.row_mass(TARGET, WEIGHT)
    got = dialects.scale_rows(grad0, masses, "mean")
    total = sum(masses)  # exact here: binary fractions
    with mpmath.workprec(200):
        for i in range(2):
            for k in range(3):
                want = grad0[i, k] * masses[i] / total
                assert abs(got[i, k] - want) <= abs(want) * mpmath.mpf(2) ** -150


def test_row_mass_is_exact_and_a_mean_over_no_mass_is_undefined():
    # 0.1 * 3 is not 0.3 in float64; the exact sum of the exact products is
    assert dialects.row_mass(np.array([[0.1, 0.2]]), [3.0, 1.5]) == [
        float(mpmath.mpf(0.1) * 3 + mpmath.mpf(0.2) * mpmath.mpf(1.5))]
    assert math.isnan(dialects.row_mass(np.array([[np.nan, 0.0]]), [1.0, 1.0])[0])
    assert dialects.scale_rows(np.array([mpmath.mpf(1)], object), [0.0], "mean") is UNDEFINED
    assert dialects.scale_rows(np.array([UNDEFINED, mpmath.mpf(1)], object), [1.0, 1.0],
                               "sum") is UNDEFINED


@pytest.mark.parametrize("dtype, eps", [(np.float64, 2.0**-52), (np.float32, 2.0**-23),
                                        (np.float16, 2.0**-10), (ml_dtypes.bfloat16, 2.0**-7)])
def test_clipping_bounds_are_the_dtype_epsilon(dtype, eps):
    p = np.array([0.0, 1.0, 0.5, np.nan], dtype=dtype)
    clipped = dialects.clip_probabilities(p).astype(np.float64)
    assert clipped[0] == eps and clipped[1] == 1.0 - eps and clipped[2] == 0.5
    assert np.isnan(clipped[3])
    # the sklearn-dialect loss of p = 0 at the target is -log eps, not +inf
    loss = ref.cross_entropy_from_probs(dialects.clip_probabilities(p[:2].reshape(1, 2)),
                                        np.array([0]))
    assert float(loss[0]) == pytest.approx(-math.log(eps), rel=1e-15)


def test_distribution_rows():
    y = np.array([[0.25, 0.75], [0.0, 0.0], [1.5, -0.5], [0.5, 0.5000001], [np.nan, 1.0]])
    assert dialects.distribution_rows(y, "float64").tolist() == [True, False, False, False,
                                                                  False]
    # within K ulps of 1 in the case dtype is a distribution (rounded softmax outputs)
    assert dialects.distribution_rows(np.array([[0.5, 0.5 + 2.0**-11]]), "float16").all()


def test_unknown_dialects_are_named():
    assert dialects.dialect(None) is dialects.DEFAULT
    with pytest.raises(ValueError, match="unknown dialect 'keras'; known: pytorch, paddle"):
        dialects.dialect("keras")
    for name, d in dialects.DIALECTS.items():
        assert d.name == name
        for rule in d.rules:
            assert rule.source.startswith("https://") and rule.says and rule.pytorch


def test_row_mass_of_smoothed_labels():
    """Paddle's soft labels from class indices with smoothing ε: y' = (1 − ε)·onehot + ε/K;
    the mass Σ w·y' by hand in fractions."""
    from fractions import Fraction

    eps, w = 0.25, [2.0, 0.5, 1.5]
    want = [float(Fraction(3, 4) * Fraction(w[t]) + Fraction(1, 4) / 3 * Fraction(sum(w)))
            for t in (0, 2)]
    assert dialects.row_mass(np.array([0, 2]), w, eps) == want
    # an ignored row is left out: no loss, no mass
    assert dialects.row_mass(np.array([0, -100]), w, eps, ignore_index=-100)[1] == 0.0
    soft = dialects.row_mass(np.array([[0.5, 0.5, 0.0]]), w, eps)
    assert soft == [float(Fraction(3, 4) * Fraction(5, 4) + Fraction(1, 12) * 4)]
