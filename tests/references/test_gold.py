"""Gold against an independent recomputation, the semantics table, options, and purity.

The independent recomputation below uses the textbook formulas (shifted exp/sum, log of
the ratio, (sum y) p - y by plain subtraction) at twice the gold's precision, so it shares
none of the gold's cancellation-avoiding rewrites. Agreement is asked to 100 bits relative
(gold certifies 110), with an absolute floor of 2**-300 times the row's scale where a value
cancels to (near) zero.
"""

from __future__ import annotations

import math

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xentcheck.references as ref
from xentcheck.references.gold import DEFAULT_PREC, UNDEFINED

NAIVE_PREC = 2 * DEFAULT_PREC
REL = mpmath.mpf(2) ** -100
FLOOR = mpmath.mpf(2) ** -300


# ------------------------------------------------------------ independent recomputation


def naive_row(z: list[float], y: list[float]) -> dict[str, object]:
    """Textbook formulas at NAIVE_PREC bits plus the exponent range of z (independent of
    xentcheck.references.gold; the extra bits absorb the cancellation in z_i - lse at
    |z| ~ 1e300)."""
    spread = max(math.frexp(v)[1] for v in z if v != 0) if any(z) else 0
    with mpmath.workprec(NAIVE_PREC + max(spread, 0)):
        zs = [mpmath.mpf(v) for v in z]
        m = max(zs)
        e = [mpmath.exp(v - m) for v in zs]
        total = mpmath.fsum(e)
        p = [v / total for v in e]
        lse = m + mpmath.log(total)
        logp = [v - lse for v in zs]
        ys = [mpmath.mpf(v) for v in y]
        sy = mpmath.fsum(ys)
        loss = -mpmath.fsum(yc * lc for yc, lc in zip(ys, logp, strict=True) if yc != 0)
        grad = [sy * pj - yj for pj, yj in zip(p, ys, strict=True)]
        return {"p": p, "logp": logp, "lse": lse, "loss": loss, "grad": grad, "scale": sy + 1}


def assert_agree(gold: object, naive: object, scale: object, what: str, z: list) -> None:
    __tracebackhide__ = True
    with mpmath.workprec(4 * NAIVE_PREC):  # compare without rounding either side
        gold_v, naive_v = mpmath.mpf(gold), mpmath.mpf(naive)
        if mpmath.isinf(gold_v) or mpmath.isinf(naive_v):
            assert gold_v == naive_v, f"{what} at z={z[:8]}: gold {gold_v}, independent {naive_v}"
            return
        tol = REL * max(abs(gold_v), abs(naive_v)) + FLOOR * mpmath.mpf(scale)
        assert abs(gold_v - naive_v) <= tol, (
            f"{what} at z={z[:8]}: gold {mpmath.nstr(gold_v, 40)}, "
            f"independent {mpmath.nstr(naive_v, 40)}"
        )


magnitudes = st.sampled_from([1.0, 10.0, 1e3, 1e8, 1e20, 1e300])
finite_logit = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)


@st.composite
def rows(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    k = draw(st.integers(1, 6))
    scale = draw(magnitudes)
    z = [draw(finite_logit) * scale for _ in range(k)]
    if draw(st.booleans()):  # a dominant class
        z[draw(st.integers(0, k - 1))] = draw(st.floats(30.0, 800.0))
    kind = draw(st.sampled_from(["index", "soft", "unnormalized"]))
    if kind == "index":
        t = draw(st.integers(0, k - 1))
        y = [1.0 if c == t else 0.0 for c in range(k)]
    else:
        y = [draw(st.floats(0.0, 1.0)) for _ in range(k)]
        if kind == "soft" and sum(y) > 0:
            y = [v / sum(y) for v in y]
    return z, y


EXTREME_ROWS = [
    ([1e308, -1e308], [0.0, 1.0]),
    ([37.42994775023705, 0.0], [1.0, 0.0]),
    ([40.0, 0.0], [1.0, 0.0]),
    ([0.0] * 4096, [1.0 / 4096] * 4096),
    ([-1e7, -1e7, -9999999.0], [0.0, 0.0, 1.0]),
    ([-math.log(2), -math.log(2)], [0.5, 0.5]),
]


def check_row(z: list[float], y: list[float]) -> None:
    logits, target = np.array([z]), np.array([y])
    naive = naive_row(z, y)
    scale = naive["scale"]
    for c, (g, n) in enumerate(zip(ref.softmax(logits)[0], naive["p"], strict=True)):
        assert_agree(g, n, 1, f"softmax[{c}]", z)
    for c, (g, n) in enumerate(zip(ref.log_softmax(logits)[0], naive["logp"], strict=True)):
        assert_agree(g, n, 1, f"log_softmax[{c}]", z)
    assert_agree(ref.logsumexp(logits)[0], naive["lse"], 1, "logsumexp", z)
    assert_agree(ref.cross_entropy(logits, target)[0], naive["loss"], scale, "CE", z)
    grad = ref.cross_entropy_grad(logits, target)[0]
    for c, (g, n) in enumerate(zip(grad, naive["grad"], strict=True)):
        assert_agree(g, n, scale, f"grad[{c}] (y={y[:8]})", z)


@settings(max_examples=60, deadline=None)
@given(rows())
def test_gold_agrees_with_independent_recomputation_at_twice_the_precision(row):
    check_row(*row)


@pytest.mark.parametrize("z,y", EXTREME_ROWS, ids=lambda v: str(v)[:30])
def test_gold_agrees_with_independent_recomputation_on_extremes(z, y):
    check_row(z, y)


# ------------------------------------------------------------------ named extremes


def test_log_softmax_beyond_float64_range():
    # log p_1 = -2e308 - log1p(exp(-2e308)) = -2e308 to every digit (exact difference).
    value = ref.log_softmax(np.array([1e308, -1e308]))[1]
    assert value == mpmath.mpf(-1e308) * 2
    # d CE/dz_0 = p_0 - 1 = -e^(-2e308)/(1 + e^(-2e308)) is tiny but not flushed to zero.
    grad = ref.cross_entropy_grad(np.array([[1e308, -1e308]]), np.array([0]))
    assert -mpmath.mpf(10) ** -10**300 < grad[0, 0] < 0


def test_gradient_entry_far_below_the_ulp_of_one():
    # p_0 - 1 = -1/(1 + e^z) at z = 37.42994775023705; mpmath at 300 bits, naive formula.
    with mpmath.workprec(300):
        expected = -1 / (1 + mpmath.exp(mpmath.mpf(37.42994775023705)))
    grad = ref.cross_entropy_grad(np.array([[37.42994775023705, 0.0]]), np.array([0]))
    assert abs(grad[0, 0] / expected - 1) < REL
    assert float(grad[0, 0]) == -5.551115123125776e-17


def test_log_p_of_the_dominant_class_at_40():
    # log p_0 = -log1p(e^-40), mpmath at 300 bits.
    with mpmath.workprec(300):
        expected = -mpmath.log1p(mpmath.exp(-40))
    value = ref.log_softmax(np.array([40.0, 0.0]))[0]
    assert abs(value / expected - 1) < REL
    assert float(value) == pytest.approx(-4.248354255291589e-18, rel=1e-15)


def test_float32_inputs_are_used_exactly():
    z = np.array([-1e7, -1e7, -9999999], dtype=np.float32)
    # float32(-9999999) is exactly -9999999; log p_2 = -log(1 + 2/e), mpmath at 300 bits.
    with mpmath.workprec(300):
        expected = -mpmath.log(1 + 2 * mpmath.exp(-1))
    assert abs(ref.log_softmax(z)[2] / expected - 1) < REL


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
def test_every_dtype_is_accepted_and_converted_exactly(dtype):
    z = np.array([0.1, 2.5, -3.0]).astype(dtype)
    exact = ref.softmax(z)
    same = ref.softmax(np.array([mpmath.mpf(float(v)) for v in z], dtype=object))
    assert list(exact) == list(same)


def test_longdouble_inputs_keep_their_extra_bits():
    z = np.array([np.longdouble(1) + np.longdouble(2) ** -60, np.longdouble(1)])
    if np.finfo(np.longdouble).nmant <= 52:
        pytest.skip("longdouble is float64 here")
    lse = ref.logsumexp(z)
    with mpmath.workprec(300):
        expected = mpmath.log(mpmath.exp(1 + mpmath.mpf(2) ** -60) + mpmath.e)
    assert abs(lse / expected - 1) < REL


# ----------------------------------------------------------- semantics (DESIGN §4)


def f(values) -> list[float]:
    return [float(v) for v in np.ravel(values)]


def test_neg_inf_logit_without_target_mass_contributes_zero():
    logits = np.array([[0.0, -np.inf, 1.0]])
    target = np.array([[0.5, 0.0, 0.5]])
    loss = ref.cross_entropy(logits, target)[0]
    assert mpmath.isfinite(loss)
    assert f(ref.cross_entropy_grad(logits, target))[1] == 0.0


def test_neg_inf_logit_with_target_mass_gives_inf_loss_and_finite_gradient():
    logits = np.array([[0.0, -np.inf]])
    assert f(ref.cross_entropy(logits, np.array([1]))) == [math.inf]
    assert f(ref.cross_entropy_grad(logits, np.array([1]))) == [1.0, -1.0]
    # smoothing puts mass on every class, the -inf one included
    assert f(ref.cross_entropy(np.array([[0.0, -np.inf]]), np.array([0]),
                               label_smoothing=0.1)) == [math.inf]


def test_nan_anywhere_in_a_row_makes_that_row_nan():
    logits = np.array([[0.0, np.nan], [0.0, 0.0]])
    target = np.array([[0.0, 0.0], [1.0, 0.0]])  # all-zero target on the NaN row
    loss = ref.cross_entropy(logits, target)
    assert mpmath.isnan(loss[0]) and float(loss[1]) == pytest.approx(math.log(2))
    assert all(mpmath.isnan(v) for v in ref.cross_entropy_grad(logits, target)[0])
    assert all(mpmath.isnan(v) for v in ref.softmax(logits)[0])
    assert mpmath.isnan(ref.cross_entropy(np.array([[0.0, 1.0]]),
                                          np.array([[np.nan, 1.0]]))[0])


def test_all_neg_inf_row_is_undefined():
    row = np.array([[-np.inf, -np.inf]])
    assert list(ref.softmax(row)[0]) == [UNDEFINED, UNDEFINED]
    assert ref.cross_entropy(row, np.array([0]))[0] is UNDEFINED
    assert ref.cross_entropy(row, np.array([0]), reduction="sum") is UNDEFINED
    assert float(ref.logsumexp(row)[0]) == -math.inf


def test_pos_inf_logits_give_the_limit():
    assert f(ref.softmax(np.array([np.inf, 0.0, np.inf]))) == [0.5, 0.0, 0.5]
    assert f(ref.cross_entropy(np.array([[np.inf, 0.0]]), np.array([0]))) == [0.0]


def test_unnormalized_soft_target_gradient_is_not_p_minus_y():
    g = ref.cross_entropy_grad(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 1.0, 0.5]]))
    p = np.array(f(ref.softmax(np.array([1.0, 2.0, 3.0]))))
    assert f(g) == pytest.approx(list(2.5 * p - np.array([1.0, 1.0, 0.5])), rel=1e-15)


def test_every_target_ignored_with_mean_is_undefined_with_zero_gradient():
    logits, target = np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([-1, -1])
    opts = {"ignore_index": -1, "reduction": "mean"}
    assert ref.cross_entropy(logits, target, **opts) is UNDEFINED
    assert f(ref.cross_entropy_grad(logits, target, **opts)) == [0.0] * 4


def test_single_class_and_empty_batch():
    assert f(ref.cross_entropy(np.array([[3.0]]), np.array([0]))) == [0.0]
    assert f(ref.cross_entropy_grad(np.array([[3.0]]), np.array([0]))) == [0.0]
    empty = np.zeros((0, 5))
    assert ref.cross_entropy(empty, np.zeros(0, dtype=np.int64)).shape == (0,)
    assert ref.cross_entropy_grad(empty, np.zeros(0, dtype=np.int64)).shape == (0, 5)
    assert ref.softmax(empty).shape == (0, 5)
    assert ref.cross_entropy(empty, np.zeros(0, dtype=np.int64), reduction="sum") == 0


def test_invalid_targets_raise_naming_the_row():
    with pytest.raises(ValueError, match=r"target\[1\] = 7 is out of range for 3 classes"):
        ref.cross_entropy(np.zeros((2, 3)), np.array([0, 7]))
    with pytest.raises(ValueError, match=r"target row 0 has a negative probability"):
        ref.cross_entropy_grad(np.zeros((1, 2)), np.array([[1.5, -0.5]]))
    with pytest.raises(ValueError, match="probs row 0 has a negative probability"):
        ref.cross_entropy_from_probs(np.array([[1.5, -0.5]]), np.array([0]))


@pytest.mark.parametrize(
    "call",
    [
        lambda: ref.softmax(np.zeros((2, 2, 2))),
        lambda: ref.cross_entropy(np.zeros((2, 0)), np.zeros(2, dtype=int)),  # K = 0
        lambda: ref.cross_entropy(np.zeros((2, 3)), np.zeros(2, dtype=int), reduction="avg"),
        lambda: ref.cross_entropy(np.zeros((2, 3)), np.zeros(2, dtype=int), label_smoothing=2),
        lambda: ref.cross_entropy(np.zeros((2, 3)), np.zeros(2, dtype=int), weight=np.ones(2)),
        lambda: ref.cross_entropy(np.zeros((2, 3)), np.zeros((2, 2))),
        lambda: ref.softmax(np.array(["a"])),
        lambda: ref.softmax(np.zeros(3), prec=10),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_from_probs_has_no_clipping():
    assert f(ref.cross_entropy_from_probs(np.array([[1.0, 0.0]]), np.array([1]))) == [math.inf]
    assert f(ref.cross_entropy_grad_wrt_probs(np.array([[1.0, 0.0]]), np.array([1]))) == [
        0.0, -math.inf]
    assert f(ref.cross_entropy_from_probs(np.array([[1.0, 0.0]]), np.array([0]))) == [0.0]


# ----------------------------------------------------------- options vs PyTorch


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("form", ["index", "probs"])
def test_options_follow_pytorch_formulas(reduction, smoothing, form):
    """PyTorch's float64 cross_entropy is an independent implementation of the documented
    formulas; gold must agree with it to float64 accuracy on moderate inputs."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(5, 4)) * 3
    weight = rng.uniform(0.2, 2.0, size=4)
    if form == "index":
        target = np.array([0, 3, -5, 1, 2])
        extra = {"ignore_index": -5}
    else:
        target = rng.uniform(0, 1, size=(5, 4))
        extra = {}
    opts = dict(weight=weight, label_smoothing=smoothing, reduction=reduction, **extra)
    tz = torch.tensor(logits, requires_grad=True)
    tt = torch.tensor(target)
    tloss = torch.nn.functional.cross_entropy(tz, tt, weight=torch.tensor(weight),
                                              label_smoothing=smoothing, reduction=reduction,
                                              **extra)
    tloss.sum().backward()
    gold = ref.cross_entropy(logits, target, **opts)
    np.testing.assert_allclose(np.array(f(gold)), tloss.detach().numpy().ravel(), rtol=1e-12)
    grad = ref.cross_entropy_grad(logits, target, **opts)
    np.testing.assert_allclose(np.array(f(grad)).reshape(5, 4), tz.grad.numpy(), rtol=1e-10,
                               atol=1e-14)


# ------------------------------------------------------------------------ purity


def test_functions_are_pure():
    before = mpmath.mp.prec
    logits = np.array([[1.0, 2.0, 3.0]])
    copy = logits.copy()
    ref.cross_entropy_grad(logits, np.array([[0.2, 0.3, 0.5]]), prec=400)
    with pytest.raises(ValueError):
        ref.cross_entropy(logits, np.array([9]))
    assert mpmath.mp.prec == before
    assert np.array_equal(logits, copy)


def test_hessian_and_jacobian_relation():
    logits, target = np.array([[0.3, -1.2, 2.0]]), np.array([[0.5, 0.25, 0.75]])
    jac = ref.softmax_jacobian(logits)[0]
    hess = ref.cross_entropy_hessian(logits, target)[0]
    with mpmath.workprec(4 * DEFAULT_PREC):  # h = 1.5 j rounded once at DEFAULT_PREC bits
        for h, j in zip(hess.ravel(), jac.ravel(), strict=True):
            assert abs(h - 1.5 * j) <= abs(h) * mpmath.mpf(2) ** (1 - DEFAULT_PREC)
