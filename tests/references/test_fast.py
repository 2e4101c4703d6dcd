"""The fast tier against gold, on every regime, named extremes and hypothesis draws.

The accuracy measure of the longdouble work is the error in float64 ulps of the gold value,
``|fast - gold| / ulp64(gold)``, with ``ulp64(x) = 2**(max(floor(log2 |x|), -1022) - 52)``:
float64's spacing, its exponent range extended upwards (so a log-probability of -2e308,
beyond float64's range, is measured in its own binade rather than max's) and its subnormal
spacing 2**-1074 kept below 2**-1022 (so values that underflow float64 are graded on an
absolute scale of 2**-1074, which is what they round to). The bound is :data:`BOUND`. The
float64 work is measured the same way in float32 ulps (``ulp32``, :data:`BOUND32`) on
float32 inputs, the candidates it is meant to grade.

Where gold itself cancels (module docstring of ``xentcheck.references.fast``) the error is measured
against the ulp of the output's scale instead: |m| + log1p(s) for logsumexp,
p_c sum_{c' != c} |u_c'| + |u_c| (1 - p_c) for a gradient entry (the magnitudes of its two
terms, and of the target's entries, which have both signs with negative class weights), the
sum of the terms' magnitudes for a loss.
Values that are NaN, infinite or ``UNDEFINED`` in gold must match exactly (NaN for
``UNDEFINED``). Nothing else is excluded.
"""

from __future__ import annotations

import math
import time
from typing import Any

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xentcheck.harness.strategies import REGIMES, sample
from xentcheck.references import fast, gold
from xentcheck.references.gold import UNDEFINED

pytestmark = pytest.mark.skipif(fast.TIER != "longdouble", reason="gold fallback tier")

#: Issue 6's goal for the longdouble work: 1e-3 float64 ulp, i.e. about 2 longdouble ulps
#: (one longdouble ulp is 2**-11 = 4.9e-4 float64 ulp). Every output is computed in
#: double-double (~2**-66 or better) and rounded once (<= 2.44e-4): 3.1e-4 was the most
#: seen over the regimes and ~10000 hypothesis draws.
BOUND = 1e-3
#: The float64 work on float32 inputs: a few float64 roundings (one is 2**-29 = 1.9e-9
#: float32 ulp) and sums over up to 131072 terms stay far below 1e-6 float32 ulp (~1e-8
#: was the most seen).
BOUND32 = 1e-6

FUNCTIONS = ("log_softmax", "softmax", "logsumexp", "cross_entropy", "cross_entropy_grad")


def _exact(x: Any) -> mpmath.mpf:
    """A longdouble (or float) as an exact mpf."""
    num, den = np.longdouble(x).as_integer_ratio()
    with mpmath.workprec(256):
        return mpmath.mpf(num) / den


def ulp64(x: Any) -> mpmath.mpf:
    """float64's spacing at |x|, exponent range unbounded above (module docstring)."""
    if x == 0:
        return mpmath.ldexp(1, -1074)
    e = int(mpmath.floor(mpmath.log(abs(x), 2)))
    return mpmath.ldexp(1, max(e, -1022) - 52)


def ulp32(x: Any) -> mpmath.mpf:
    """float32's spacing at |x|, exponent range unbounded above."""
    if x == 0:
        return mpmath.ldexp(1, -149)
    e = int(mpmath.floor(mpmath.log(abs(x), 2)))
    return mpmath.ldexp(1, max(e, -126) - 23)


def ulp_errors(got: Any, should: Any, scale: Any = None,
               ulp: Any = ulp64) -> tuple[float, int]:
    """The largest ulp error of ``got`` against ``should`` (gold), each error measured
    against ``ulp`` of max(|should|, scale); and its flat index."""
    got_a = np.asarray(got, dtype=np.longdouble)
    should_a = np.asarray(should, dtype=object).ravel()
    scale_a = (np.zeros(got_a.size) if scale is None else
               np.broadcast_to(np.asarray(scale, dtype=np.float64), got_a.shape).ravel())
    got_a = got_a.ravel()
    worst, where = 0.0, -1
    with mpmath.workprec(256):
        for i, (g, x, sc) in enumerate(zip(got_a, should_a, scale_a, strict=True)):
            if x is UNDEFINED or mpmath.isnan(x):
                err = 0.0 if np.isnan(g) else math.inf
            elif mpmath.isinf(x):
                err = 0.0 if g == float(x) else math.inf
            elif not np.isfinite(g):
                # beyond longdouble's range gold may be finite (|log p| ~ 1e5000): none here
                err = math.inf
            else:
                ref = max(abs(x), mpmath.mpf(float(sc)))
                err = float(abs(_exact(g) - x) / ulp(ref))
            if err > worst or where < 0:
                worst, where = err, i
    return worst, where


def assert_close(name: str, got: Any, should: Any, logits: np.ndarray, scale: Any = None,
                 work: str = "longdouble") -> float:
    __tracebackhide__ = True
    ulp, bound, unit = ((ulp64, BOUND, "float64") if work == "longdouble"
                        else (ulp32, BOUND32, "float32"))
    worst, where = ulp_errors(got, should, scale, ulp)
    if worst > bound:
        flat_got = np.asarray(got).ravel()[where]
        flat_should = np.asarray(should, dtype=object).ravel()[where]
        z2 = np.atleast_2d(logits)
        row = where // z2.shape[1] if np.ndim(got) == 2 else where
        raise AssertionError(
            f"fast.{name} (work={work}): got {flat_got!r}, should be {flat_should} (gold): "
            f"{worst:.3g} {unit} ulp > {bound} at flat index {where}; row "
            f"{[float.hex(float(v)) for v in z2[row][:8]]}..."
        )
    return worst


def effective_target(logits: np.ndarray, target: np.ndarray,
                     options: dict[str, Any]) -> np.ndarray:
    """Gold's effective target u in float64 (for the error scales only)."""
    n, k = logits.shape
    w = options.get("weight")
    w = np.ones(k) if w is None else np.asarray(w, np.float64)
    eps = float(options.get("label_smoothing", 0.0))
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        ignored = t == options.get("ignore_index", object())
        idx = np.where(ignored, 0, t)
        u = np.broadcast_to(w * eps / k, (n, k)).copy()
        u[np.arange(n), idx] += (1 - eps) * w[idx]
        u[ignored] = 0
        return u
    return w * ((1 - eps) * np.asarray(t, np.float64) + eps / k)


def _gold(name: str, z: np.ndarray, target: Any, options: dict[str, Any]) -> Any:
    if name in ("log_softmax", "softmax", "logsumexp"):
        return getattr(gold, name)(z)
    return getattr(gold, name)(z, target, **options)


def _fast(ref: fast.Reference, name: str, target: Any, options: dict[str, Any]) -> Any:
    if name in ("log_softmax", "softmax", "logsumexp"):
        return getattr(ref, name)()
    return getattr(ref, name)(target, **options)


def check_all(logits: np.ndarray, target: np.ndarray | None = None,
              options: dict[str, Any] | None = None,
              works: tuple[str, ...] = ("longdouble",)) -> float:
    """Every function of one shared Reference per work against gold; the largest error."""
    __tracebackhide__ = True
    options = dict(options or {})
    z = np.asarray(logits)
    names = FUNCTIONS if target is not None else FUNCTIONS[:3]
    if target is not None:
        try:
            gold.cross_entropy(z, target, **options)
        except ValueError:
            for work in works:
                with pytest.raises(ValueError):
                    fast.cross_entropy(z, target, **options, work=work)
            names = FUNCTIONS[:3]
    should = {name: _gold(name, z, target, options) for name in names}
    worst = 0.0
    for work in works:
        ref = fast.Reference(z, work=work)
        got = {name: _fast(ref, name, target, options) for name in names}
        scales = _scales(z, got, target, options)
        for name in names:
            worst = max(worst, assert_close(name, got[name], should[name], z,
                                            scales.get(name), work))
    return worst


def _scales(z: np.ndarray, got: dict[str, Any], target: Any,
            options: dict[str, Any]) -> dict[str, Any]:
    """The scales of the outputs that may cancel (module docstring), from fast's values."""
    with np.errstate(all="ignore"):
        z64 = np.asarray(z, np.float64)
        p = np.asarray(got["softmax"], np.float64)
        m = np.max(np.where(np.isnan(z64), 0, z64), axis=1) if z64.size else np.zeros(0)
        lse = np.asarray(got["logsumexp"], np.float64)
        out = {"logsumexp": np.nan_to_num(np.abs(m) + np.abs(lse - m))}
        if "cross_entropy" not in got:
            return out
        u = effective_target(z64, target, options)
        logp = np.asarray(got["log_softmax"], np.float64)
        loss = np.nansum(np.where(u != 0, np.abs(u * logp), 0), axis=1)
        mass = np.abs(u)  # with negative weights sum_{c' != c} u_c' cancels too
        grad = p * (mass.sum(axis=1, keepdims=True) - mass) + mass * (1 - p)
        if options.get("reduction") == "mean":
            den = _denominator(u, target, options)
            grad, loss = (grad / abs(den), loss / abs(den)) if den else (grad, loss)
        if options.get("reduction") in ("sum", "mean"):
            loss = np.nansum(loss)
        out["cross_entropy"] = np.nan_to_num(loss, posinf=0.0)
        out["cross_entropy_grad"] = np.nan_to_num(grad, posinf=0.0)
        return out


def _denominator(u: np.ndarray, target: Any, options: dict[str, Any]) -> float:
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        return float(len(t))
    kept = t != options.get("ignore_index", object())
    w = options.get("weight")
    return float(np.count_nonzero(kept)) if w is None else float(np.asarray(w)[t[kept]].sum())


# --------------------------------------------------------------------------- regimes


#: Regimes whose samples the fast tier is measured against gold on: every one but those
#: whose gold costs minutes (long-rows: 2**17 elements; known-defects: a row of 65537) or
#: that the fast tier never sees (no-classes: K = 0 goes to gold).
MEASURED = tuple(r for r in REGIMES if r not in ("long-rows", "no-classes", "known-defects"))


@pytest.mark.parametrize("regime", MEASURED)
def test_every_regime_within_bound(regime: str) -> None:
    for case in sample(regime, dtype="float64"):
        logits = case.logits.astype(np.float64)
        if logits.shape[0] == 0:
            assert fast.log_softmax(logits).shape == logits.shape
            continue
        check_all(logits, case.target, case.options)


@pytest.mark.parametrize("regime", [r for r in MEASURED if r not in ("empty", "wide")])
def test_float32_inputs_both_works(regime: str) -> None:
    """float32 logits: the longdouble work within 1e-3 float64 ulp, the float64 work
    within 1e-6 float32 ulp ("wide" is left out for time: gold costs ~25 µs an element)."""
    for case in sample(regime, dtype="float32"):
        check_all(case.logits.astype(np.float32), case.target, case.options,
                  works=("longdouble", "float64"))


def test_blocks_of_several_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows wider than a block (as on (8, 131072) logits) are split in column blocks;
    with a block of 128 elements the masked regime (K up to 512) exercises that path."""
    monkeypatch.setattr(fast.kernels, "_BLOCK", 128)
    for regime in ("masked", "dominant"):
        for case in sample(regime, dtype="float64"):
            check_all(case.logits.astype(np.float64), case.target, case.options)


def test_a_wide_row_against_gold() -> None:
    """K = 40000 at the real block size (three column blocks): logsumexp against gold,
    log_softmax and softmax at sampled classes from gold's logsumexp."""
    rng = np.random.default_rng(11)
    z = rng.standard_normal((1, 40000)) * 4
    z[0, 123] = 30.0
    ref = fast.Reference(z)
    lse = gold.logsumexp(z)[0]
    assert ulp_errors(ref.logsumexp(), [lse])[0] <= BOUND
    cols = np.r_[0, 123, rng.integers(0, 40000, 30), 39999]
    with mpmath.workprec(256):
        logp = [mpmath.mpf(float(z[0, c])) - lse for c in cols]
        p = [mpmath.exp(v) for v in logp]
    assert ulp_errors(ref.log_softmax()[0, cols], logp)[0] <= BOUND
    assert ulp_errors(ref.softmax()[0, cols], p)[0] <= BOUND


def test_empty_batches() -> None:
    z = np.zeros((0, 5))
    for work in ("longdouble", "float64"):
        ref = fast.Reference(z, work=work)
        assert ref.log_softmax().shape == ref.softmax().shape == (0, 5)
        assert ref.logsumexp().shape == ref.cross_entropy(np.zeros(0, int)).shape == (0,)
        assert ref.cross_entropy_grad(np.zeros(0, int), reduction="mean").shape == (0, 5)
        assert ref.cross_entropy(np.zeros(0, int), reduction="sum") == 0
        assert np.isnan(ref.cross_entropy(np.zeros((0, 5)), reduction="mean"))


def test_pairs_round_once_to_longdouble() -> None:
    """The integer-built longdouble of hi + lo equals x87's rounding of the sum, also at
    the binade edges (hi a power of two, lo of either sign; carries) and after 2**-128."""
    rng = np.random.default_rng(5)
    n = 50000
    mant = np.where(rng.random(n) < 0.5, 1.0, np.nextafter(1.0, 2.0) ** rng.integers(0, 3, n))
    mant = np.where(rng.random(n) < 0.2, np.nextafter(2.0, 0.0), mant)
    hi = np.ldexp(mant, rng.integers(-900, 900, n)) * np.where(rng.random(n) < 0.5, -1, 1)
    lo = hi * (rng.random(n) - 0.5) * 2.0 ** -rng.integers(52, 70, n)
    lo[::7] = 0
    lo[1::7] = np.ldexp(hi[1::7], -64)  # exact ties
    for shift in (0, 128):
        out = np.empty(n, np.longdouble)
        fast.kernels._to_ld_into(hi, lo, out, fast.kernels._Scratch((n,)), shift)
        should = (hi.astype(np.longdouble) + lo) * np.longdouble(2.0) ** -shift
        assert np.array_equal(out, should)


# --------------------------------------------------------------------------- named extremes


@pytest.mark.parametrize("row", [
    [40.0, 0.0],
    [37.42994775023705, 0.0],
    [1e308, -1e308],
    [1e308, 1e308, -1e308],
    [-1e308, -1e308],
    [0.0, 0.0, 0.0],
    [3.7, 1.234e-4, -2.5e-9, 700.0],
    [-745.0, 0.0],
    [-700.0, 0.0, -720.0, -790.0, -800.0],
    [-12000.0, 0.0],
    [5e-324, 0.0, -5e-324],
    [0.0, -np.inf, -np.inf, 1.0],
    [-np.inf, -np.inf],
    [np.inf, 0.0, np.inf],
    [np.nan, 0.0],
    [-0.6931471805599453, -0.6931471805599453],
    [1e-300, -1e-300],
    [2.0**1000, 2.0**1000 - 2.0**960],
])
def test_named_extremes(row: list[float]) -> None:
    z = np.array([row])
    k = z.shape[1]
    check_all(z, np.array([0]))
    check_all(z, np.array([k - 1]), {"label_smoothing": 0.1})
    check_all(z, np.array([k - 1]), {"weight": np.linspace(0.5, 2.0, k), "reduction": "mean"})
    check_all(z, np.full((1, k), 1.0 / k), {"weight": np.linspace(0.5, 2.0, k)})


def test_dominant_class_uses_log1p() -> None:
    """Regression: a plain longdouble log-sum-exp is ~19 float64 ulps off at p_max ~ 1."""
    z = np.array([[40.0, 0.0]])
    assert ulp_errors(fast.log_softmax(z), gold.log_softmax(z))[0] <= BOUND
    g = fast.cross_entropy_grad(np.array([[37.42994775023705, 0.0]]), np.array([0]))
    assert float(g[0, 0]) == -5.551115123125776e-17  # p_t - 1 as -sum_{k != t} p_k


def test_longdouble_logits() -> None:
    """longdouble inputs are used exactly: values float64 cannot hold."""
    eps = np.longdouble(2.0) ** -60
    z = np.array([[1 + eps, 1, 1 - eps], [0, -eps, 40]], dtype=np.longdouble)
    check_all(z, np.array([0, 1]), {"label_smoothing": 0.2})
    check_all(z, np.array([[0.5, 0.25, 0.25], [0, 1, 0]], dtype=np.longdouble))


@pytest.mark.parametrize("regime", MEASURED)
def test_longdouble_logits_of_float64_values_change_nothing(regime: str) -> None:
    """The same values as longdouble logits give the same outputs as float64 logits, bit
    for bit (masked rows included: a -inf logit once made every output of its row NaN
    on the longdouble route)."""
    for case in sample(regime, dtype="float64"):
        z = case.logits.astype(np.float64)
        if z.shape[0] == 0:
            continue
        wide = z.astype(np.longdouble)
        for name in ("log_softmax", "softmax", "logsumexp"):
            a, b = getattr(fast, name)(wide), getattr(fast, name)(z)
            assert np.array_equal(a, b, equal_nan=True), (name, case.name)
        options = {k: v for k, v in case.options.items() if k != "reduction"}
        for name in ("cross_entropy", "cross_entropy_grad"):
            a = getattr(fast, name)(wide, case.target, **options)
            b = getattr(fast, name)(z, case.target, **options)
            assert np.array_equal(a, b, equal_nan=True), (name, case.name)


def test_longdouble_logits_with_targets_at_minus_infinity() -> None:
    """A target at a -inf logit (infinite loss, finite gradient): the longdouble route
    reads d there as the float64 one does."""
    z = np.random.default_rng(4).standard_normal((3, 300)) * 6
    z[:, ::7] = -np.inf
    for target in (np.array([0, 7, 14]), np.array([1, 7, 3])):
        for options in ({}, {"label_smoothing": 0.1}):
            for name in ("cross_entropy", "cross_entropy_grad"):
                a = getattr(fast, name)(z.astype(np.longdouble), target, **options)
                b = getattr(fast, name)(z, target, **options)
                assert np.array_equal(a, b, equal_nan=True), (name, target, options)


def test_longdouble_logits_beyond_float64() -> None:
    big = np.longdouble(2.0) ** 2000
    z = np.array([[big, np.longdouble(0.0), -big], [1.0, 2.0, 3.0]], dtype=np.longdouble)
    check_all(z, np.array([1, 0]), {"label_smoothing": 0.1})


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_narrow_inputs_both_works(dtype: str) -> None:
    for case in sample("moderate", dtype=dtype)[:3] + sample("dominant", dtype=dtype)[:2]:
        check_all(case.logits, case.target, case.options, works=("longdouble", "float64"))


def test_extreme_weights_and_targets_go_to_gold() -> None:
    z = np.array([[3.0, -1.0, 0.5], [1e200, 0.0, -1e200]])
    check_all(z, np.array([0, 1]), {"weight": np.array([1e-200, 1.0, 1e200])})
    check_all(z, np.array([[1e305, 0, 1], [0.5, 0.5, 0]]))
    check_all(z, np.array([0, 2]), {"weight": np.array([-1.0, 2.0, 0.0]), "reduction": "sum"})


def test_tiny_smoothing_at_a_dominant_target() -> None:
    """Regression: (sum u) - u_t cancels when the target holds almost all the mass and
    1 - p_t is tiny: the gradient there sums the other classes' u instead."""
    z = np.array([[0.0, 10.0], [0.0, 50.0], [3.0, 80.0]])
    for eps in (1e-9, 1e-30):
        check_all(z, np.array([1, 1, 1]), {"label_smoothing": eps, "reduction": "mean"})
        check_all(z, np.array([1, 1, 1]), {"label_smoothing": eps,
                                           "weight": np.array([1.0, 3.0])})
        check_all(z.astype(np.float32), np.array([1, 1, 1]), {"label_smoothing": eps},
                  works=("longdouble", "float64"))
    check_all(z, np.array([[1e-30, 1.0], [0.0, 1.0], [1e-20, 2.0]]))
    # the limit of a +inf row: p = 1 at the +inf class, the rest of u summed there too
    z = np.array([[-np.inf, 0.0, np.inf, -np.inf], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    check_all(z, np.array([2, 1]), {"label_smoothing": 1e-9, "reduction": "mean"},
              works=("longdouble", "float64"))


def test_semantics() -> None:
    z = np.array([[0.0, -np.inf], [-np.inf, -np.inf], [np.nan, 1.0], [np.inf, 0.0]])
    t = np.array([0, 0, 0, 1])
    for work in ("longdouble", "float64"):
        ref = fast.Reference(z, work=work)
        loss = ref.cross_entropy(t)
        assert loss[0] == 0 and np.isnan(loss[1]) and np.isnan(loss[2]) and loss[3] == np.inf
        assert ref.undefined_rows().tolist() == [False, True, False, False]
        assert fast.cross_entropy(z[:1], np.array([1]), work=work)[0] == np.inf
        g = ref.cross_entropy_grad(t)
        assert g[0].tolist() == [0, 0] and np.isnan(g[1]).all() and np.isnan(g[2]).all()
        assert g[3].tolist() == [1, -1]
        # rows 0-2 ignored: the mean is row 3's loss, +inf (class 1 has no mass in the limit)
        assert ref.cross_entropy(t, ignore_index=0, reduction="mean") == np.inf
        assert np.isnan(fast.cross_entropy(z[:1], np.array([0]), ignore_index=0,
                                           reduction="mean", work=work))
        assert (ref.cross_entropy_grad(np.array([0, 0, 0, 0]), ignore_index=0,
                                       reduction="mean") == 0).all()
        lse = ref.logsumexp()
        assert lse[1] == -np.inf and np.isnan(lse[2]) and lse[3] == np.inf


def test_output_types() -> None:
    z = np.array([[1.0, 2.0], [0.5, 0.0]])
    t = np.array([0, 1])
    ld, f64 = fast.Reference(z), fast.Reference(z, work="float64")
    assert ld.work == "longdouble" and f64.work == "float64"
    for name in FUNCTIONS:
        a, b = _fast(ld, name, t, {}), _fast(f64, name, t, {})
        assert np.asarray(a).dtype == np.longdouble and np.asarray(b).dtype == np.float64
        assert np.shape(a) == np.shape(b)
    assert np.ndim(ld.cross_entropy(t, reduction="mean")) == 0
    assert fast.log_softmax(z[0]).shape == (2,) and np.ndim(fast.logsumexp(z[0])) == 0


def test_reference_shares_one_evaluation() -> None:
    """The methods of one Reference, in any order, equal the module functions bit for bit."""
    z = np.random.default_rng(3).standard_normal((3, 40)) * 8
    t = np.array([1, 5, 39])
    options = {"label_smoothing": 0.1, "weight": np.linspace(1, 2, 40), "reduction": "mean"}
    for work in ("longdouble", "float64"):
        ref = fast.Reference(z, work=work)
        first = [ref.cross_entropy_grad(t, **options), ref.softmax(), ref.log_softmax()]
        again = [fast.cross_entropy_grad(z, t, **options, work=work),
                 fast.softmax(z, work=work), fast.log_softmax(z, work=work)]
        for a, b in zip(first, again, strict=True):
            assert np.array_equal(a, b)
        assert ref.cross_entropy(t, **options) == fast.cross_entropy(z, t, **options, work=work)
        assert np.array_equal(ref.logsumexp(), fast.logsumexp(z, work=work))


def test_work_for_and_validation() -> None:
    import ml_dtypes

    assert fast.work_for("float64") == fast.work_for(np.float64) == "longdouble"
    assert fast.work_for(np.longdouble) == "longdouble"
    for dtype in ("float32", np.float16, ml_dtypes.bfloat16, np.dtype("float32"), "bfloat16"):
        assert fast.work_for(dtype) == "float64"
    with pytest.raises(ValueError):
        fast.work_for("int32")
    with pytest.raises(ValueError, match="work must be"):
        fast.Reference(np.zeros((1, 2)), work="float32")
    with pytest.raises(ValueError, match="reduction"):
        fast.cross_entropy(np.zeros((1, 2)), np.array([0]), reduction="avg")
    with pytest.raises(ValueError, match="out of range"):
        fast.Reference(np.zeros((2, 2))).cross_entropy_grad(np.array([0, 2]))
    with pytest.raises(ValueError, match="negative probability"):
        fast.cross_entropy(np.zeros((1, 2)), np.array([[1.0, -0.5]]), work="float64")


def test_gold_tier_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where longdouble is not extended, TIER is "gold": work=None and "longdouble" give
    gold's exact values rounded to longdouble; "float64" still runs."""
    monkeypatch.setattr(fast.api, "TIER", "gold")
    z = np.array([[40.0, 0.0, -np.inf], [1.0, 2.0, 3.0]])
    t = np.array([0, 2])
    assert fast.work_for("float64") == "gold"
    assert fast.Reference(z).work == fast.Reference(z, work="longdouble").work == "gold"
    assert fast.Reference(z, work="float64").work == "float64"
    for name in FUNCTIONS:
        got = _fast(fast.Reference(z), name, t, {"reduction": "sum"})
        assert np.asarray(got).dtype == np.longdouble
        assert ulp_errors(got, _gold(name, z, t, {"reduction": "sum"}))[0] <= 0.5 ** 11


# --------------------------------------------------------------------------- hypothesis


@st.composite
def adversarial_rows(draw: st.DrawFn) -> np.ndarray:
    """(N, K) float64 logits mixing scales, dominant classes, -inf runs and ties."""
    n = draw(st.integers(1, 3))
    k = draw(st.integers(1, 24))
    scale = draw(st.sampled_from([1.0, 10.0, 40.0, 745.0, 1e4, 1e150, 1e308]))
    values = st.floats(-1.0, 1.0, allow_nan=False) | st.sampled_from([0.0, 1.0, -1.0])
    z = np.array(draw(st.lists(values, min_size=n * k, max_size=n * k)),
                 dtype=np.float64).reshape(n, k) * scale
    if draw(st.booleans()):  # a dominant class
        z[:, 0] = np.max(z, axis=1) + draw(st.sampled_from([40.0, 37.43, 745.0, 1e300]))
    if k > 2 and draw(st.booleans()):  # a masked run
        start = draw(st.integers(0, k - 1))
        z[:, start:start + draw(st.integers(1, k))] = -np.inf
    if k > 1 and draw(st.booleans()):  # a tie with the maximum
        z[:, -1] = np.max(z, axis=1)
    return z


@settings(max_examples=60, deadline=None, derandomize=True)  # the same inputs in every CI run
@given(z=adversarial_rows(), data=st.data())
def test_hypothesis_within_bound(z: np.ndarray, data: st.DataObject) -> None:
    n, k = z.shape
    t = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    options = data.draw(st.sampled_from([
        {}, {"label_smoothing": 0.25}, {"reduction": "mean", "weight": np.linspace(1, 3, k)},
        {"reduction": "sum", "label_smoothing": 0.1, "weight": np.linspace(3, 0.5, k)},
        {"reduction": "mean", "ignore_index": 0, "label_smoothing": 1e-9},
        {"weight": np.linspace(-1, 2, k), "label_smoothing": 0.5},  # negative weights
    ]))
    if data.draw(st.booleans()):
        t = np.abs(np.sin(np.arange(n * k).reshape(n, k) + t[:, None]))  # soft targets
    float32 = data.draw(st.booleans())
    if float32:
        with np.errstate(over="ignore"):
            z = z.astype(np.float32)
    check_all(z, t, options, works=("longdouble", "float64") if float32 else ("longdouble",))


def test_throughput_is_reported() -> None:
    """Not asserted (tests assert accuracy, never time); printed with ``-s``."""
    z = np.random.default_rng(0).standard_normal((8, 16384)) * 5

    def best(f: Any) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return min(times)

    def numpy_log_softmax() -> np.ndarray:
        shifted = z - z.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    base = best(numpy_log_softmax)
    for work in ("longdouble", "float64"):
        ratio = base / best(lambda work=work: fast.log_softmax(z, work=work))
        print(f"fast.log_softmax(work={work!r}) on (8, 16384): {ratio:.2f}x NumPy's speed")
