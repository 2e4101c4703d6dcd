"""xentcheck.references.fd: finite differences against derivatives known in closed form.

Exact derivatives below are mpmath's own closed forms (cos for sin, exp for exp, 1/x for
log, ...) evaluated at 2000 bits, far beyond the 60 digits the estimates are asked for.
"Honest" means the true error is at most the reported error bound.
"""

from __future__ import annotations

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xentcheck.references import fd, gold

EXACT_PREC = 2000  # bits for the closed-form derivatives and the comparisons
DIGITS = fd.DEFAULT_DIGITS


def assert_honest(
    est: fd.FDEstimate, exact: object, *, digits: float = DIGITS, what: str = ""
) -> None:
    """|est - exact| <= est.error <= 10**-digits |exact|, entry by entry (the second
    inequality only for digits >= 0)."""
    __tracebackhide__ = True
    values = np.asarray(est.value, dtype=object).ravel()
    errors = np.asarray(est.error, dtype=object).ravel()
    exacts = np.asarray(exact, dtype=object).ravel()
    with mpmath.workprec(EXACT_PREC):
        for i, (v, e, x) in enumerate(zip(values, errors, exacts, strict=True)):
            x = mpmath.mpf(x)
            true_err = abs(v - x)
            assert true_err <= e, (
                f"{what}[{i}]: dishonest error bound: got {mpmath.nstr(v, 30)}, should be "
                f"{mpmath.nstr(x, 30)}, true error {mpmath.nstr(true_err, 5)} > reported "
                f"{mpmath.nstr(e, 5)}"
            )
            assert digits < 0 or e <= mpmath.mpf(10) ** -digits * abs(x), (
                f"{what}[{i}]: only {mpmath.nstr(-mpmath.log10(e / abs(x)), 4)} digits "
                f"certified, asked {digits}"
            )


# (name, f, f') with f' in closed form
FUNCTIONS = {
    "exp": (mpmath.exp, mpmath.exp),
    "log": (mpmath.log, lambda x: 1 / x),
    "sin": (mpmath.sin, mpmath.cos),
}


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("x0", [1e20, -1e20, 1e-20, -1e-20, 1.5, 1e308, 5e-324])
def test_known_functions_at_extreme_scales(name: str, x0: float) -> None:
    f, df = FUNCTIONS[name]
    if name == "log" and x0 < 0:
        pytest.skip("log is real only for x > 0")
    est = fd.directional_derivative(lambda t: f(t[0]), np.array([x0]), np.array([1.0]))
    assert isinstance(est.value, mpmath.mpf)  # a scalar f gives a scalar estimate
    with mpmath.workprec(EXACT_PREC):
        exact = df(mpmath.mpf(x0))
    assert_honest(est, exact, what=f"d/dx {name}(x) at {x0!r}")


def test_relative_precision_succeeds_where_an_absolute_step_at_fixed_precision_fails() -> None:
    """At |z| = 1e20 a step of 2**-32 vanishes in float64 (and at 1e308 even at 192 bits);
    fd raises the precision with the point, so the perturbed point is exact."""
    z, h = 1e20, 2.0**-32
    assert (z + h) - (z - h) == 0.0  # the absolute step in float64: quotient 0
    with mpmath.workprec(192):
        zz = mpmath.mpf(1e308)
        assert (zz + h) - (zz - h) == 0  # and at 192 bits at 1e308

    def square(t: np.ndarray) -> mpmath.mpf:
        return t[0] ** 2

    for x0 in (1e20, 1e308):
        est = fd.directional_derivative(square, [x0], [1.0])
        assert_honest(est, 2 * mpmath.mpf(x0), what=f"d/dx x^2 at {x0}")
    # Held at 192 bits (no raise allowed) the estimate is useless, and says so.
    stuck = fd.directional_derivative(square, [1e308], [1.0], prec=192, max_prec=192)
    assert stuck.value == 0 and stuck.error > 1e308


def test_unit_scale_for_large_coordinates_because_f_varies_on_unit_scale() -> None:
    """Why the default step is not 2**-k max(1, |x|): sin varies on a scale of 1 at 1e20
    (as softmax does in logit differences at 1e308); a step of ~1e20 * 2**-32 ~ 2e10
    straddles billions of periods and the estimate is garbage."""
    sin = lambda t: mpmath.sin(t[0])  # noqa: E731
    with mpmath.workprec(EXACT_PREC):
        exact = mpmath.cos(mpmath.mpf(1e20))
    assert_honest(fd.directional_derivative(sin, [1e20], [1.0]), exact)
    wrong = fd.directional_derivative(sin, [1e20], [1.0], scale=1e20)
    assert abs(wrong.value - exact) > 0.1


def test_softmax_derivative_at_plus_minus_1e308() -> None:
    """d logsumexp / dz = softmax = [1 - e**-2e308, e**-2e308] at [1e308, -1e308]. The
    function is ~1e308 and the first derivative 1, so ~1070 bits cancel: the measured
    cancellation raises the precision and that entry gets its 60 digits. The second entry
    is 1e308 orders of magnitude below what differences of a 1e308-sized function can
    resolve: its error bound must still cover it."""
    z = np.array([1e308, -1e308])
    est = fd.jacobian(lambda x: gold.logsumexp(x, prec=mpmath.mp.prec), z)
    exact = gold.softmax(z, prec=400)
    assert_honest(fd.FDEstimate(est.value[:1], est.error[:1]), exact[:1], what="dlse/dz0")
    assert_honest(est, exact, digits=-1e6, what="dlse/dz (bound only)")


def test_precision_is_raised_to_the_cancellation_measured() -> None:
    """A derivative of 1 under an offset of 2**3000: 3000 bits cancel in f(x+h) - f(x-h)."""
    offset = mpmath.ldexp(1, 3000)
    est = fd.directional_derivative(lambda t: t[0] * 3 + offset, [0.5], [1.0])
    assert_honest(est, 3, what="d/dx (3x + 2**3000)")


def test_unresolvable_derivative_comes_back_as_zero_with_an_error_that_covers_it() -> None:
    """p_0(z) = 1 / (1 + e**(-2e308 - z)) is 1 to every feasible precision; its derivative
    ~e**-2e308 cannot be resolved, and the estimate's error bound says so."""

    def p0(t: np.ndarray) -> mpmath.mpf:
        return 1 / (1 + mpmath.exp(mpmath.mpf("-2e308") - t[0]))

    est = fd.directional_derivative(p0, [0.0], [1.0])
    assert est.value == 0
    with mpmath.workprec(EXACT_PREC):
        exact = mpmath.exp(mpmath.mpf("-2e308"))
        assert exact <= est.error


def test_directional_equals_gradient_dot_direction() -> None:
    """f(x) = sum sin(x_i) x_{i+1}: gradient in closed form, dotted with v."""

    def f(x: np.ndarray) -> mpmath.mpf:
        return mpmath.fsum(mpmath.sin(x[i]) * x[i + 1] for i in range(len(x) - 1))

    x = np.array([0.3, -1.2, 2.5, 1e-3])
    v = np.array([1.0, -0.5, 0.25, 2.0])
    with mpmath.workprec(EXACT_PREC):
        xs = [mpmath.mpf(t) for t in x]
        grad = [mpmath.mpf(0)] * 4
        for i in range(3):
            grad[i] += mpmath.cos(xs[i]) * xs[i + 1]
            grad[i + 1] += mpmath.sin(xs[i])
        exact = mpmath.fsum(g * mpmath.mpf(t) for g, t in zip(grad, v, strict=True))
    assert_honest(fd.directional_derivative(f, x, v), exact)
    jac = fd.jacobian(f, x)
    assert np.shape(jac.value) == (4,)
    assert_honest(jac, grad, what="gradient")


def test_jacobian_shape_is_output_then_input() -> None:
    """f: (2, 2) -> (3,); J[i, j, k] = d f_i / d x_jk."""

    def f(x: np.ndarray) -> np.ndarray:
        return np.array([x[0, 0] * x[1, 1], mpmath.exp(x[0, 1]), x[1, 0] ** 3], dtype=object)

    x = np.array([[2.0, 0.5], [-1.0, 3.0]])
    jac = fd.jacobian(f, x)
    assert jac.value.shape == jac.error.shape == (3, 2, 2)
    exact = np.zeros((3, 2, 2), dtype=object)
    exact[...] = mpmath.mpf(0)
    with mpmath.workprec(EXACT_PREC):
        exact[0, 0, 0], exact[0, 1, 1] = mpmath.mpf(3), mpmath.mpf(2)
        exact[1, 0, 1] = mpmath.exp(mpmath.mpf(0.5))
        exact[2, 1, 0] = mpmath.mpf(3)
    # the exact zeros come back exactly 0 (f does not move along those directions)
    for idx in zip(*np.nonzero(exact == 0), strict=True):
        assert jac.value[idx] == 0
    nonzero = exact != 0
    assert_honest(fd.FDEstimate(jac.value[nonzero], jac.error[nonzero]), exact[nonzero])


def test_points_passed_to_f_are_exact_and_precision_is_restored() -> None:
    seen: list[mpmath.mpf] = []

    def record(t: np.ndarray) -> mpmath.mpf:
        seen.append(t[0])
        return t[0]

    before = mpmath.mp.prec
    fd.directional_derivative(record, [1e308], [1.0])
    assert mpmath.mp.prec == before
    with mpmath.workprec(4000):
        offsets = sorted(abs(s - mpmath.mpf(1e308)) for s in seen)
    assert all(o > 0 and o == mpmath.ldexp(1, int(mpmath.log(o, 2))) for o in offsets)

    def boom(t: np.ndarray) -> mpmath.mpf:
        raise RuntimeError("inside f")

    with pytest.raises(RuntimeError):
        fd.directional_derivative(boom, [1.0], [1.0])
    assert mpmath.mp.prec == before


@pytest.mark.parametrize("dtype", [np.float16, np.float32, ml_dtypes.bfloat16, np.float64])
def test_any_float_dtype_is_read_exactly(dtype: type) -> None:
    x = np.array([0.1], dtype=dtype)
    est = fd.directional_derivative(lambda t: t[0] ** 2, x, np.array([1.0], dtype=dtype))
    assert_honest(est, 2 * mpmath.mpf(float(x[0])))


def test_non_finite_output_component_is_nan_with_infinite_error() -> None:
    est = fd.directional_derivative(
        lambda t: np.array([t[0], mpmath.inf], dtype=object), [1.0], [1.0]
    )
    assert est.value[0] == 1 and mpmath.isnan(est.value[1]) and mpmath.isinf(est.error[1])


@settings(max_examples=25, deadline=None)
@given(
    x0=st.floats(min_value=1e-30, max_value=1e30),
    a=st.floats(min_value=-3.0, max_value=3.0),
)
def test_error_bound_is_honest_on_random_points(x0: float, a: float) -> None:
    """f(x) = exp(a x / (1 + x)) log(1 + x) at x in (1e-30, 1e30)."""

    def f(t: np.ndarray) -> mpmath.mpf:
        x = t[0]
        return mpmath.exp(a * x / (1 + x)) * mpmath.log1p(x)

    with mpmath.workprec(EXACT_PREC):
        x = mpmath.mpf(x0)
        exact = mpmath.diff(lambda u: mpmath.exp(a * u / (1 + u)) * mpmath.log1p(u), x)
    est = fd.directional_derivative(f, [x0], [1.0])
    assert_honest(est, exact, digits=DIGITS, what=f"x={x0!r}, a={a!r}")


# ------------------------------------------------------------------ argument validation


def _identity(t: np.ndarray) -> object:
    return t


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": [np.inf], "v": [1.0]}, r"x must be finite; x\[0\] = \+inf"),
        ({"x": [1.0, np.nan], "v": [1.0, 1.0]}, r"x must be finite; x\[1\]"),
        ({"x": [1.0], "v": [np.inf]}, "v must be finite"),
        ({"x": [1.0, 2.0], "v": [1.0]}, "same shape"),
        ({"x": [1.0, 2.0], "v": [0.0, 0.0]}, "must not be all zero"),
        ({"x": ["a"], "v": [1.0]}, "real numeric array"),
        ({"x": [1 + 2j], "v": [1.0]}, "real numeric array"),
        ({"x": np.array([mpmath.mpc(1, 1)], dtype=object), "v": [1.0]}, "real numbers"),
        ({"x": [1.0], "v": [1.0], "digits": 0}, "digits"),
        ({"x": [1.0], "v": [1.0], "scale": -1.0}, "scale must be a positive"),
        ({"x": [1.0], "v": [1.0], "scale": np.inf}, "scale must be a positive"),
        ({"x": [1.0], "v": [1.0], "step_bits": 0}, "step_bits"),
        ({"x": [1.0], "v": [1.0], "max_levels": 0}, "max_levels"),
        ({"x": [1.0], "v": [1.0], "prec": 20}, "prec must be"),
        ({"x": [1.0], "v": [1.0], "prec": 500, "max_prec": 400}, "max_prec"),
    ],
)
def test_invalid_arguments_raise_clear_value_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fd.directional_derivative(_identity, **kwargs)


def test_invalid_f_raises() -> None:
    with pytest.raises(TypeError, match="callable"):
        fd.directional_derivative("not a function", [1.0], [1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="undefined value cannot be differentiated"):
        fd.directional_derivative(lambda t: gold.UNDEFINED, [1.0], [1.0])
    with pytest.raises(ValueError, match="at least one entry"):
        fd.jacobian(_identity, np.zeros(0))
    with pytest.raises(ValueError, match="x must be finite"):
        fd.jacobian(_identity, [1.0, -np.inf])


def test_rows_stop_at_the_level_that_is_enough() -> None:
    """``enough`` ends the extrapolation at the first level it accepts (two evaluations
    of f per level saved), sees every level otherwise, and never changes an estimate
    that runs to the end."""
    x = np.array([[0.0, 1.0, -2.0], [2.0, -1.0, 0.5]])
    v = np.array([[1.0, -0.5, 0.25], [0.5, 1.0, -1.0]])
    calls: list[int] = []

    def f(z: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.log(np.sum(np.exp(z), axis=1))

    full = fd.directional_derivative_rows(f, x, v)
    assert len(calls) == 8  # levels 0..3, two evaluations each
    seen: list[float] = []

    def never(estimate: fd.RowEstimate) -> bool:
        seen.append(float(np.max(estimate.error)))
        return False

    calls.clear()
    again = fd.directional_derivative_rows(f, x, v, enough=never)
    assert len(calls) == 8 and len(seen) == 2  # asked after levels 1 and 2 (3 is the last)
    assert np.array_equal(again.value, full.value) and np.array_equal(again.error, full.error)
    calls.clear()
    early = fd.directional_derivative_rows(f, x, v, enough=lambda e: True)
    assert len(calls) == 4  # stopped after level 1
    exact = np.sum(np.exp(x) / np.sum(np.exp(x), axis=1, keepdims=True) * v, axis=1)
    assert np.all(np.abs(early.value - exact) <= early.error)
