"""The two reference tiers of the engine: which cases get which, that the fast tier's
values are gold's to within 1e-3 ulp of the case dtype, and that its linear-cost
certificates hold for the right derivative and fail for a planted wrong one."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from xentcheck.harness import truth as truth_module
from xentcheck.harness.cases import Case
from xentcheck.harness.truth import Truth, tier_for
from xentcheck.references import fast, fd, gold, ulp_error

pytestmark = pytest.mark.skipif(fast.TIER != "longdouble", reason="no extended longdouble")


def case(shape: tuple[int, int], dtype: str = "float64", *, seed: int = 0,
         options: dict | None = None, logits: np.ndarray | None = None) -> Case:
    from xentcheck.harness.adapters.contract import case_dtype

    rng = np.random.default_rng(seed)
    z = logits if logits is not None else rng.standard_normal(shape) * 6
    target = rng.integers(0, shape[1], shape[0])
    return Case(np.asarray(z).astype(case_dtype(dtype)), target, "indices",
                dict(options or {}), dtype, "test", f"tier-{dtype}-{shape}")


def test_tier_choice() -> None:
    assert tier_for(case((2, 64))) == "gold"  # small: the Jacobian is checked there
    assert tier_for(case((2, 65))) == "longdouble"
    assert tier_for(case((2, 65), "float32")) == "float64"
    assert tier_for(case((2, 65), "bfloat16")) == "float64"
    z = np.random.default_rng(0).standard_normal((2, 100))
    masked = z.copy()
    masked[0, :50] = -np.inf
    assert tier_for(case((2, 100), logits=masked)) == "longdouble"  # -inf entries are fine
    for special in (np.nan, np.inf):
        bad = z.copy()
        bad[1, 3] = special
        assert tier_for(case((2, 100), logits=bad)) == "gold"
    undefined = z.copy()
    undefined[1] = -np.inf
    assert tier_for(case((2, 100), logits=undefined)) == "gold"
    zero_weight = {"weight": np.zeros(100), "reduction": "mean"}
    assert tier_for(case((2, 100), options=zero_weight)) == "gold"  # mean over no weight


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "reduction": "mean"}])
def test_fast_values_match_gold(dtype: str, options: dict) -> None:
    """Every function of a fast-tier case against gold (192 bits), in the case dtype's
    ulps: the fast tier must be far below the 0.5 ulp at which grades change."""
    z = np.random.default_rng(1).standard_normal((3, 80)) * 6
    z[0, :40] = -np.inf  # masked classes
    c = case((3, 80), dtype, seed=1, options=options, logits=z)
    t = Truth(c)
    assert t.tier != "gold"
    for function in ("logsumexp", "softmax", "log_softmax", "cross_entropy",
                     "cross_entropy_grad", "cross_entropy_from_probs",
                     "cross_entropy_grad_wrt_probs"):
        if not t.applicable(function):
            continue
        args, opts = t.arguments(function) if function != "softmax" else ((c.logits,), {})
        exact = getattr(gold, function)(*args, **opts)
        got = np.asarray(t.exact(function), dtype=object)
        # the fast value, rounded to the case dtype, against gold: the ulp error of the
        # rounded value is at most 0.5 + the fast tier's own error (<= 1e-3)
        rounded = np.asarray(got, dtype=np.longdouble)
        dt = np.dtype(np.float64) if dtype == "float64" else np.dtype(np.float32)
        err = np.asarray(ulp_error(rounded.astype(dt), np.asarray(exact, dtype=object)))
        finite = np.isfinite(err)
        assert np.all(err[finite] <= 0.5 + 1e-3), (function, float(np.max(err[finite])))


@pytest.mark.parametrize("dtype, error", [("float64", 1e-6), ("float32", 1e-4)])
def test_fast_certificate_holds_and_catches_a_wrong_gradient(
        monkeypatch: pytest.MonkeyPatch, dtype: str, error: float) -> None:
    c = case((4, 300), dtype, seed=2, options={"label_smoothing": 0.1})
    t = Truth(c)
    good = t.certificate("cross_entropy_grad")
    needed = truth_module.FAST_CERTIFICATE_DIGITS[t.tier]
    assert good.holds and good.rows == 4 and good.digits >= needed + 1, good
    probs = t.certificate("cross_entropy_grad_wrt_probs")
    assert probs.holds and probs.rows == 4 and probs.digits >= needed + 1, probs

    right = fast.Reference.cross_entropy_grad

    def scaled(self: fast.Reference, target: np.ndarray, **options: object) -> np.ndarray:
        return right(self, target, **options) * (1 + error)  # e.g. a wrong mean divisor

    def unsmoothed(self: fast.Reference, target: np.ndarray, **options: object) -> np.ndarray:
        return right(self, target, **{**options, "label_smoothing": 0.0})  # a lost term

    for plant in (scaled, unsmoothed):
        monkeypatch.setattr(fast.Reference, "cross_entropy_grad", plant)
        bad = Truth(c).certificate("cross_entropy_grad")
        assert not bad.holds, (plant.__name__, bad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fast_certificates_hold_entries_that_cannot_move(dtype: str) -> None:
    """-inf logits (zero probabilities) are held still along the certificates' direction:
    a zero probability stepped either way leaves the loss's domain, so the certificate
    with respect to the probabilities holds only if they are held; the read-only shared
    direction is not changed by it."""
    z = np.random.default_rng(4).standard_normal((3, 300)) * 6
    z[:, ::7] = -np.inf
    target = np.array([1, 2, 3])  # no target at a -inf logit
    c = Case(z.astype(np.float32 if dtype == "float32" else np.float64), target, "indices",
             {}, dtype, "test", f"held-{dtype}")
    t = Truth(c)
    assert t.tier != "gold"
    direction = t._direction(c.shape).copy()
    for function in ("cross_entropy_grad", "cross_entropy_grad_wrt_probs"):
        certificate = t.certificate(function)
        assert certificate.holds and certificate.rows == 3, (function, certificate)
    assert np.array_equal(t._direction(c.shape), direction)


def test_a_fast_certificate_cannot_hold_without_comparing(monkeypatch) -> None:
    """A loss whose finite differences come out NaN where the truth's own loss is finite
    fails the certificate, where it once held with "no finite rows to certify": planted
    as the defect that made longdouble logits with a -inf entry give NaN rows (the
    certificate of a masked float64 case perturbs longdouble copies of its logits). Rows
    whose own loss is infinite (a target at a -inf logit) are still left out."""
    z = np.random.default_rng(7).standard_normal((3, 300)) * 6
    z[:, ::5] = -np.inf
    c = Case(z, np.array([1, 2, 3]), "indices", {}, "float64", "test", "lost-rows")
    assert Truth(c).tier == "longdouble"
    assert Truth(c).certificate("cross_entropy_grad").holds
    right = fast.Reference.cross_entropy

    def nan_for_longdouble(self: fast.Reference, target: np.ndarray, **options: object):
        out = right(self, target, **options)
        masked = np.isneginf(np.asarray(self._logits, np.float64)).any(axis=1)
        return np.where(masked & (np.asarray(self._logits).dtype == np.longdouble), np.nan, out)

    monkeypatch.setattr(fast.Reference, "cross_entropy", nan_for_longdouble)
    lost = Truth(c).certificate("cross_entropy_grad")
    assert not lost.holds and lost.rows == 0 and "not finite on 3 rows" in lost.note, lost
    monkeypatch.undo()
    infinite = Case(z, np.array([0, 5, 10]), "indices", {}, "float64", "test", "inf-rows")
    held = Truth(infinite).certificate("cross_entropy_grad")  # every loss is +inf
    assert held.holds and held.rows == 0 and "no finite rows" in held.note, held


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_probability_certificate_of_class_indices_is_the_one_hot_one(
        monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    """With class indices the probability certificate is taken on each row's target entry
    alone (the loss reads nothing else): every field is the certificate of the same
    targets as dense one-hot rows, which perturbs and sums whole rows. The rows include
    zero probabilities (held) and a target at one (an infinite loss, left out)."""
    from xentcheck.harness.adapters.contract import case_dtype

    rng = np.random.default_rng(8)
    z = rng.standard_normal((5, 400)) * 8
    z[1, ::3] = -np.inf
    z[2] *= 60  # probabilities that underflow to zero
    target = rng.integers(0, 400, 5)
    target[1] = 0  # z[1, 0] = -inf: p = 0 at the target
    direction = rng.uniform(-1.0, 1.0, z.shape)  # one direction for both (a case's own
    monkeypatch.setattr(Truth, "_direction", lambda self, shape: direction)  # is its digest's)
    logits = z.astype(case_dtype(dtype))
    dense = np.zeros(z.shape, case_dtype(dtype))
    dense[np.arange(5), target] = 1
    indices = Truth(Case(logits, target, "indices", {}, dtype, "test", "idx"))
    one_hot = Truth(Case(logits, dense, "one-hot", {}, dtype, "test", "dense"))
    assert indices.tier == one_hot.tier != "gold"
    cert = indices.certificate("cross_entropy_grad_wrt_probs")
    assert cert == one_hot.certificate("cross_entropy_grad_wrt_probs")
    assert cert.holds and 0 < cert.rows < 5, cert


def _certificates(c: Case, engine: str) -> list:
    from xentcheck.references.fast import jit

    with jit.engine(engine):
        t = Truth(c)
        return [t.certificate(f) for f in ("cross_entropy_grad", "cross_entropy_grad_wrt_probs")]


def test_fast_certificates_are_the_same_with_the_compiled_terms(monkeypatch) -> None:
    """The certificates' products (d v, |d x|) come from one compiled pass where numba is:
    every field of both certificates is the NumPy path's (digits bit for bit), and a pass
    with one product off changes them."""
    pytest.importorskip("numba")
    from xentcheck.harness import _compiled

    c = case((4, 3000), "float32", seed=6, options={"label_smoothing": 0.1})
    expected = _certificates(c, "numpy")
    assert _certificates(c, "numba") == expected
    assert all(cert.holds and cert.rows == 4 for cert in expected)
    real = _compiled.certificate_terms_into

    def off(d, v, x, probs, terms, moved):  # noqa: ANN001, ANN202
        ok = real(d, v, x, probs, terms, moved)
        terms[2, -1] *= 1.5
        return ok

    monkeypatch.setattr(_compiled, "certificate_terms_into", off)
    assert _certificates(c, "numba") != expected


def test_gold_tier_still_certifies_small_cases() -> None:
    t = Truth(case((2, 8), "float64", seed=3))
    assert t.tier == "gold"
    cert = t.certificate("cross_entropy_grad")
    assert cert.holds and cert.digits >= truth_module.CERTIFICATE_DIGITS


def test_directional_rows_against_exact_derivative() -> None:
    """d/dt logsumexp(x + t v) = softmax(x) . v, exactly computed with mpmath (60 digits)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 40)) * 10
    v = rng.uniform(-1, 1, x.shape)
    for dtype, digits in ((np.float64, 9), (np.longdouble, 12)):
        est = fd.directional_derivative_rows(
            lambda z: np.log(np.sum(np.exp(z), axis=1)), x.astype(dtype), v.astype(dtype))
        with mpmath.workdps(60):
            for n in range(x.shape[0]):
                e = [mpmath.exp(mpmath.mpf(a)) for a in x[n]]
                dot = mpmath.fsum(ei * mpmath.mpf(vi) for ei, vi in zip(e, v[n], strict=True))
                exact = dot / mpmath.fsum(e)
                err = abs(mpmath.mpf(float(est.value[n])) - exact)
                assert err <= mpmath.mpf(float(est.error[n])) + abs(exact) * 1e-15
                assert err <= abs(exact) * 10.0**-digits


@pytest.mark.parametrize("work", ["float64", "longdouble"])
def test_index_targets_from_probs_equal_the_one_hot_sum(work: str) -> None:
    """The class-index shortcut of the from-probabilities references (one log per row)
    gives the bits of the general -sum y log p and -y / p with the one-hot y, signs of zero,
    infinities (p_t = 0) and NaN included."""
    rng = np.random.default_rng(7)
    for trial in range(12):
        n, k = 6, int(rng.integers(1, 40))
        p = rng.random((n, k))
        p /= p.sum(axis=1, keepdims=True)
        p[rng.random((n, k)) < 0.15] = 0.0
        p[0, 0], p[1, -1] = (np.nan, 1.0) if trial % 2 else (0.0, 0.5)
        t = rng.integers(0, k, n)
        y = np.zeros((n, k))
        y[np.arange(n), t] = 1.0
        for function in ("cross_entropy_from_probs", "cross_entropy_grad_wrt_probs"):
            short = truth_module._from_probs(function, p, t, work)
            general = truth_module._from_probs(function, p, y, work)
            assert short.dtype == general.dtype
            assert np.array_equal(short, general, equal_nan=True)
            assert np.array_equal(np.signbit(short), np.signbit(general))


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_overflowing_rows_against_their_definition(dtype: str) -> None:
    """A row overflows where a shifted logit z_i - max z is beyond the dtype's largest
    value at a class with target mass; the quick look at each row's spread must not
    hide one. Rows: ordinary; the widest spread that still fits; one that does not,
    at the target; the same off the target."""
    from xentcheck.references import float_format

    big = float_format(dtype).max
    z = np.zeros((4, 70))
    z[1, :2] = [0.75 * big, -0.2 * big]  # a spread beyond big / 2 that still fits
    z[2, :2], z[3, :2] = [big, -big], [big, -big]  # gap 2 big at class 1
    c = case((4, 70), dtype, logits=z)
    c = Case(c.logits, np.array([0, 1, 1, 0]), "indices", {}, dtype, "test", "overflow")
    assert truth_module.overflowing_rows(c).tolist() == [False, False, True, False]
    smoothed = Case(c.logits, c.target, "indices", {"label_smoothing": 0.1}, dtype,
                    "test", "overflow-smoothed")  # every class has mass
    assert truth_module.overflowing_rows(smoothed).tolist() == [False, False, True, True]


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_finite_rows_are_the_float64_formula_taken_once(dtype: str) -> None:
    """``Truth.finite_rows`` (the rows the invariant checks judge: no NaN, no +inf, some
    finite entry) reads float32 and float64 logits as they are, and gives the float64
    formula's rows in every dtype; it is taken once and read-only."""
    z = np.random.default_rng(3).standard_normal((6, 5))
    z[1, 2] = np.nan
    z[2, 0] = np.inf
    z[3] = -np.inf
    z[4, :4] = -np.inf
    z[5, 1] = -np.inf
    truth = Truth(case(z.shape, dtype, logits=z))
    wide = truth.case.logits.astype(np.float64)
    want = ~np.any(np.isnan(wide) | (wide == np.inf), axis=1) & np.any(np.isfinite(wide),
                                                                       axis=1)
    rows = truth.finite_rows()
    assert rows.tolist() == want.tolist() == [True, False, False, False, True, True]
    assert truth.finite_rows() is rows and not rows.flags.writeable
