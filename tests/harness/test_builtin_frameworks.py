"""The built-in framework adapters ``torch``, ``jax``, ``c`` (and ``c-seed``) against gold.

Smoke comparisons: every contract function of every built-in, in every dtype it declares,
on a few fixed moderate cases, in ulps of that dtype against the exact values of
``references`` (mpmath). Then PyTorch's cross-entropy options (and the JAX glue that follows
PyTorch's formulas), the seed's C function, users' C adapters (the README's example, a
library with no xentcheck symbol, a compile error, a prebuilt .so) and the missing-compiler
path. Each built-in is loaded once for the module (importing torch and jax is slow); the
JAX checks reuse one shape per dtype so that JAX compiles each function once.
"""

from __future__ import annotations

import ctypes
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import xentcheck.references as gold
from xentcheck.harness.adapters import c_ctypes, contract, jax_nn, torch_nn
from xentcheck.harness.adapters.contract import FUNCTIONS, AdapterUnavailable, case_dtype
from xentcheck.references.rounding import ulp_error

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_C = REPO / "examples" / "c_adapter" / "my_softmax.c"

DTYPES: dict[str, np.dtype] = {name: case_dtype(name) for name in contract.DTYPES}
HALF = ("float16", "bfloat16")
BUILTINS: dict[str, Callable[[], Any]] = {
    "c": c_ctypes.load,
    "torch": torch_nn.load,
    "jax": jax_nn.load,
}


# -- the moderate cases -------------------------------------------------------------------


class Case(NamedTuple):
    logits: np.ndarray  # (N, K) float64; rounded to each dtype before use
    index: np.ndarray  # (N,) int64 class indices
    soft: np.ndarray  # (N, K) float64 probability targets, some rows not summing to 1


def _moderate_row(rng: np.random.Generator, k: int, mass: float) -> tuple[np.ndarray, np.ndarray]:
    """One row drawn until it is well conditioned for every function checked here.

    - logits ~ N(1, 1): logsumexp >= 1, far from the cancellation at lse = 0;
    - max p < 0.6: p_t - 1 and 1 - p_i lose under 2 bits to cancellation;
    - soft targets (Dirichlet(0.3), scaled to ``mass``) with every gradient entry
      |(sum y) p_j - y_j| >= max((sum y) p_j, y_j) / 2: at most one bit lost.
    """
    while True:
        z = rng.normal(1.0, 1.0, k)
        y = rng.dirichlet(np.full(k, 0.3)) * mass
        p = np.exp(z - z.max())
        p /= p.sum()
        terms = np.maximum(y.sum() * p, y)
        if p.max() < 0.6 and np.all(np.abs(y.sum() * p - y) >= 0.5 * terms):
            return z, y


def _moderate_cases(seed: int = 20240601, count: int = 3, n: int = 4, k: int = 6) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        rows = [_moderate_row(rng, k, mass) for mass in (1.0, 1.0, 0.5, 1.75)[:n]]
        logits = np.array([z for z, _ in rows])
        soft = np.array([y for _, y in rows])
        cases.append(Case(logits, rng.integers(0, k, n), soft))
    return cases


CASES = _moderate_cases()


def _exact_probs(logits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Softmax of ``logits`` correctly rounded to ``dtype``: valid inputs for the from-probs
    route (rounding the float64 of an mpf to float16/bfloat16 can double-round, which only
    perturbs an input, never the gold computed from it)."""
    exact = gold.softmax(logits)
    return np.array([[float(v) for v in row] for row in exact]).astype(dtype)


# -- bounds -------------------------------------------------------------------------------

# float64/float32: PyTorch and JAX evaluate the textbook shifted formulas; each output is a
# few rounded operations (exp, a sum of positive terms, one division or log) whose relative
# errors add up to about 4u at most (u = 2^-p, the unit roundoff), i.e. <= 4 ulp of the
# result (an ulp is between u and 2u relative to the value). Measured worst on these
# cases: 3.4 ulp (torch CE grad, float64).
ULP_BOUND = 4.0
# Soft-target gradients (sum y) p - y: the cases keep cancellation to one bit (see
# _moderate_row), which can double the 4-ulp budget. Jacobian entries p_i (delta_ij - p_j)
# are products of two softmax values, each within 4 ulp: 8. Measured: 6.7 (jax soft grad,
# float64), 5.2 (Jacobian, float32).
ULP_BOUND_DOUBLED = 8.0
# float16/bfloat16: both libraries compute in float32 and round once per op, but the
# backward passes reuse the forward output already rounded to the half dtype (e.g. torch's
# log_softmax backward takes exp of the rounded log-probabilities), each reuse adding up
# to ~1 ulp of the half dtype: 8 ulp. Measured worst: 4.5 (torch float16 CE grad).
ULP_BOUND_HALF = 8.0

DOUBLED = {"cross_entropy_grad[soft]", "softmax_jacobian"}
# Fused gradients by autograd reuse the rounded forward output: the gradient's p_j is
# exp(l^_j) with |l^_j - l_j| <= u |l_j| (l = log p rounded to the dtype), a relative error
# of u |log p_j| on top of the softmax's own, i.e. up to 2 |log p_j| more ulp (doubled again
# for soft targets, whose one bit of cancellation doubles everything). Measured: 4.95 ulp
# at p = 0.0123 (|log p| = 4.4), torch float32.
LOG_P_ULPS = 2.0


# The C reference computes in long double and rounds each output once: faithful (measured
# <= 0.55 ulp over every regime of DESIGN section 5). Where long double is plain double
# (e.g. macOS on arm64) it falls back to the library bounds above.
C_ULP_BOUND = 1.0 if ctypes.sizeof(ctypes.c_longdouble) > 8 else None


def _bound(name: str, check: str, dtype: str, x: np.ndarray) -> float | np.ndarray:
    if name == "c" and C_ULP_BOUND is not None:
        return C_ULP_BOUND
    base = ULP_BOUND_HALF if dtype in HALF else ULP_BOUND
    doubling = 2.0 if check in DOUBLED and dtype not in HALF else 1.0
    if not check.startswith("cross_entropy_grad["):
        return base * doubling
    log_p = np.array([[float(v) for v in row] for row in gold.log_softmax(x)])
    return (base + LOG_P_ULPS * np.abs(log_p)) * doubling


# check name -> (candidate call, gold call), each taking (adapter or gold, logits, case, dtype)
def _checks() -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    def soft(case: Case, dt: np.dtype) -> np.ndarray:
        return case.soft.astype(dt)

    return {
        "logsumexp": (lambda a, x, c, dt: a.logsumexp(x), lambda x, c, dt: gold.logsumexp(x)),
        "softmax": (lambda a, x, c, dt: a.softmax(x), lambda x, c, dt: gold.softmax(x)),
        "log_softmax": (
            lambda a, x, c, dt: a.log_softmax(x),
            lambda x, c, dt: gold.log_softmax(x),
        ),
        "cross_entropy[index]": (
            lambda a, x, c, dt: a.cross_entropy(x, c.index),
            lambda x, c, dt: gold.cross_entropy(x, c.index),
        ),
        "cross_entropy[soft]": (
            lambda a, x, c, dt: a.cross_entropy(x, soft(c, dt)),
            lambda x, c, dt: gold.cross_entropy(x, soft(c, dt)),
        ),
        "cross_entropy_grad[index]": (
            lambda a, x, c, dt: a.cross_entropy_grad(x, c.index),
            lambda x, c, dt: gold.cross_entropy_grad(x, c.index),
        ),
        "cross_entropy_grad[soft]": (
            lambda a, x, c, dt: a.cross_entropy_grad(x, soft(c, dt)),
            lambda x, c, dt: gold.cross_entropy_grad(x, soft(c, dt)),
        ),
        "softmax_jacobian": (
            lambda a, x, c, dt: a.softmax_jacobian(x),
            lambda x, c, dt: gold.softmax_jacobian(x),
        ),
        "cross_entropy_from_probs[soft]": (
            lambda a, x, c, dt: a.cross_entropy_from_probs(_exact_probs(x, dt), soft(c, dt)),
            lambda x, c, dt: gold.cross_entropy_from_probs(_exact_probs(x, dt), soft(c, dt)),
        ),
        "cross_entropy_from_probs[index]": (
            lambda a, x, c, dt: a.cross_entropy_from_probs(_exact_probs(x, dt), c.index),
            lambda x, c, dt: gold.cross_entropy_from_probs(_exact_probs(x, dt), c.index),
        ),
        "cross_entropy_grad_wrt_probs": (
            lambda a, x, c, dt: a.cross_entropy_grad_wrt_probs(_exact_probs(x, dt), soft(c, dt)),
            lambda x, c, dt: gold.cross_entropy_grad_wrt_probs(_exact_probs(x, dt), soft(c, dt)),
        ),
    }


CHECKS = _checks()


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private compiled-library cache for the whole module (never ~/.cache)."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("xdg-cache")
        patch.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


@pytest.fixture(scope="module")
def builtins(compile_cache: Path) -> dict[str, Any]:
    """Each built-in loaded once: the adapter, or the reason it is unavailable."""
    loaded: dict[str, Any] = {}
    for name, load in BUILTINS.items():
        try:
            loaded[name] = load()
        except AdapterUnavailable as exc:
            loaded[name] = exc
    return loaded


def _builtin(builtins: dict[str, Any], name: str) -> Any:
    adapter = builtins[name]
    if isinstance(adapter, AdapterUnavailable):
        pytest.skip(f"built-in {name!r} unavailable: {adapter}")
    return adapter


def _declared(name: str) -> list[str]:
    # what each built-in declares (c: double and float only); checked in test_builtin_loads
    return ["float64", "float32"] if name == "c" else list(DTYPES)


def _assert_close_in_ulps(got: Any, exact: Any, bound: float | np.ndarray, what: str) -> None:
    """Every element within ``bound`` ulps (a number, or one bound per element)."""
    __tracebackhide__ = True
    errors = ulp_error(got, exact)
    excess = errors - np.broadcast_to(bound, errors.shape)
    if errors.size and not np.all(excess <= 0):
        at = np.unravel_index(
            int(np.nanargmax(np.where(np.isnan(excess), np.inf, excess))), errors.shape
        )
        raise AssertionError(
            f"{what}: {errors[at]:.3g} ulp > {np.broadcast_to(bound, errors.shape)[at]:.3g} "
            f"at {at}: got {float(np.asarray(got)[at])!r}, "
            f"should be {np.asarray(exact, dtype=object)[at]}"
        )


# -- smoke comparisons --------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads(builtins: dict[str, Any], name: str) -> None:
    adapter = _builtin(builtins, name)
    assert adapter.name == name
    assert tuple(adapter.dtypes) == tuple(_declared(name))
    assert isinstance(adapter.version, str) and adapter.version
    missing = [f for f in FUNCTIONS if not callable(getattr(adapter, f, None))]
    # the C header has no forward-mode or Hessian-vector functions; the frameworks have
    expected = [] if name in ("torch", "jax") else [
        "softmax_jvp", "log_softmax_jvp", "cross_entropy_jvp", "cross_entropy_hvp"]
    assert missing == expected, f"{name} does not provide {missing}"


SMOKE = [
    pytest.param(name, dtype, check, id=f"{name}-{dtype}-{check}")
    for name in BUILTINS
    for dtype in _declared(name)
    for check in CHECKS
]


@pytest.mark.parametrize(("name", "dtype", "check"), SMOKE)
def test_smoke_against_gold(builtins: dict[str, Any], name: str, dtype: str, check: str) -> None:
    adapter = _builtin(builtins, name)
    candidate, exact = CHECKS[check]
    dt = DTYPES[dtype]
    for number, case in enumerate(CASES):
        x = case.logits.astype(dt)
        before = x.copy()
        got = candidate(adapter, x, case, dt)
        what = f"{name}.{check} {dtype} case {number}"
        assert isinstance(got, np.ndarray), f"{what}: returned {type(got).__name__}"
        assert got.dtype == dt, f"{what}: returned {got.dtype}, should be {dt}"
        assert x.tobytes() == before.tobytes(), f"{what}: mutated its input"
        want = exact(x, case, dt)
        assert got.shape == want.shape, f"{what}: shape {got.shape}, should be {want.shape}"
        _assert_close_in_ulps(got, want, _bound(name, check, dtype, x), what)


@pytest.mark.parametrize("name", BUILTINS)
def test_adapters_pickle(builtins: dict[str, Any], name: str) -> None:
    adapter = _builtin(builtins, name)
    copy = pickle.loads(pickle.dumps(adapter))
    x = CASES[0].logits
    assert copy.name == adapter.name
    np.testing.assert_array_equal(copy.softmax(x), adapter.softmax(x))


def test_torch_shares_its_given_copy_and_a_write_to_it_is_caught() -> None:
    """The torch adapter hands the framework the array it was given (no second copy of an
    LLM batch); the harness gives it a private copy and checks it afterwards, so a
    framework op that wrote to its input is reported as ``mutated-input`` and the
    caller's array is untouched."""
    pytest.importorskip("torch")
    z = np.random.default_rng(0).standard_normal((4, 8))
    assert np.shares_memory(torch_nn.TorchAdapter()._tensor(z).numpy(), z)
    frozen = z.copy()
    frozen.flags.writeable = False  # (torch refuses to share a read-only array: a copy)
    assert not np.shares_memory(torch_nn.TorchAdapter()._tensor(frozen).numpy(), frozen)

    class WritesItsInput(torch_nn.TorchAdapter):
        def softmax(self, logits: np.ndarray) -> np.ndarray:
            self._tensor(logits).mul_(2.0)
            return super().softmax(logits)

    before = z.copy()
    value, faults = contract.invoke(WritesItsInput(), "softmax", [z], {})
    assert [f.kind for f in faults] == ["mutated-input"] and value is not None
    assert np.array_equal(z, before)


def test_torch_cuda_is_unavailable_without_cuda() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        adapter = torch_nn.load_cuda()
        assert adapter.name == "torch-cuda"
        got = adapter.softmax(CASES[0].logits)
        _assert_close_in_ulps(got, gold.softmax(CASES[0].logits), ULP_BOUND, "torch-cuda")
    else:
        with pytest.raises(AdapterUnavailable, match="CUDA"):
            torch_nn.load_cuda()


# -- cross-entropy options (PyTorch's, and the JAX glue that follows its formulas) ---------

# The options tests check formulas, not last bits: a wrong weight, smoothing or mean
# denominator is an O(1) relative error, while these smoothed and weighted sums of positive
# terms stay within a few ulp; 16 eps of the largest output separates the two by more than
# 10 orders of magnitude in float64 and 4 in float32. (Gradients may cancel elementwise,
# hence the normwise measure.)
OPTIONS_EPS = 16.0

_N, _K = CASES[0].logits.shape
OPTION_SETS = [
    {},
    {"weight": np.array([0.5, 2.0, 1.0, 0.25, 3.0, 1.5])},
    {"label_smoothing": 0.2},
    {"ignore_index": int(CASES[0].index[1])},
    {"weight": np.array([0.5, 2.0, 1.0, 0.25, 3.0, 1.5]), "label_smoothing": 0.1},
    {
        "weight": np.array([0.5, 2.0, 1.0, 0.25, 3.0, 1.5]),
        "label_smoothing": 0.3,
        "ignore_index": int(CASES[0].index[0]),
    },
]
# JAX compiles once per option set (0.1-0.3 s each), so its glue is checked in float64 only;
# its formulas do not depend on the dtype.
OPTIONS = [
    pytest.param(
        name, dtype, target, reduction, options, id=f"{name}-{dtype}-{target}-{reduction}-{number}"
    )
    for name, dtypes in (("torch", ("float64", "float32")), ("jax", ("float64",)))
    for dtype in dtypes
    for target in ("index", "soft")
    for reduction in ("none", "sum", "mean")
    for number, options in enumerate(OPTION_SETS)
    if not (target == "soft" and "ignore_index" in options)
]


def _assert_normwise(got: Any, exact: Any, dtype: np.dtype, what: str) -> None:
    """Non-finite entries identical; finite ones within OPTIONS_EPS eps of the largest."""
    __tracebackhide__ = True
    want = np.asarray(np.asarray(exact, dtype=object).tolist(), dtype=np.float64)
    got64 = np.asarray(got, dtype=np.float64)
    assert got64.shape == want.shape, f"{what}: shape {got64.shape}, should be {want.shape}"
    finite = np.isfinite(want)
    same = np.array_equal(got64[~finite], want[~finite], equal_nan=True)
    assert same, f"{what}: non-finite entries differ; got {got64}, want {want}"
    if not finite.any():
        return
    scale = float(np.max(np.abs(want[finite])))
    error = float(np.max(np.abs(got64[finite] - want[finite])))
    bound = OPTIONS_EPS * float(np.finfo(dtype).eps) * scale
    assert error <= bound, f"{what}: max error {error:.3g} > {bound:.3g}; got {got64}, want {want}"


@pytest.mark.parametrize(("name", "dtype", "target", "reduction", "options"), OPTIONS)
def test_cross_entropy_options(
    builtins: dict[str, Any],
    name: str,
    dtype: str,
    target: str,
    reduction: str,
    options: dict[str, Any],
) -> None:
    adapter = _builtin(builtins, name)
    dt = DTYPES[dtype]
    case = CASES[0]
    x = case.logits.astype(dt)
    y = case.index if target == "index" else case.soft.astype(dt)
    given = {k: (v.astype(dt) if isinstance(v, np.ndarray) else v) for k, v in options.items()}
    what = f"{name} {dtype} {target} reduction={reduction} {options}"
    loss = adapter.cross_entropy(x, y, reduction=reduction, **given)
    grad = adapter.cross_entropy_grad(x, y, reduction=reduction, **given)
    assert loss.dtype == dt and grad.dtype == dt, what
    _assert_normwise(loss, gold.cross_entropy(x, y, reduction=reduction, **given), dt, what)
    want = gold.cross_entropy_grad(x, y, reduction=reduction, **given)
    _assert_normwise(grad, want, dt, f"{what} (gradient)")


def test_ignored_rows_have_zero_loss_and_gradient(builtins: dict[str, Any]) -> None:
    case = CASES[0]
    ignored = case.index == case.index[1]
    for name in ("torch", "jax"):
        adapter = _builtin(builtins, name)
        loss = adapter.cross_entropy(case.logits, case.index, ignore_index=int(case.index[1]))
        grad = adapter.cross_entropy_grad(case.logits, case.index, ignore_index=int(case.index[1]))
        assert np.all(loss[ignored] == 0) and np.all(loss[~ignored] > 0), name
        assert np.all(grad[ignored] == 0), name


def test_jax_glue_adds_no_nan_at_masked_logits(builtins: dict[str, Any]) -> None:
    # JAX has no cross-entropy; the glue written in jax_nn must keep 0 * log 0 = 0 (a
    # regression: the smoothing term times eps = 0 once gave inf * 0 = NaN here). The
    # shapes, dtype and reductions are those of the options tests: no new JAX compiles.
    jax = _builtin(builtins, "jax")
    x = CASES[0].logits.copy()
    masked = (np.arange(_N), np.array([1, 3, 4, 0]))
    x[masked] = -np.inf
    index = np.array([0, 2, 1, 5])  # never a masked class
    soft = CASES[0].soft.copy()
    soft[masked] = 0.0
    weight = np.array([1.0, 0.0, 1.0, 0.5, 1.0, 2.0])  # zero weight on row 0's -inf class
    f64 = DTYPES["float64"]
    for target, options in [
        (index, {}),
        (index, {"reduction": "mean"}),
        (soft, {}),
        (soft, {"reduction": "mean"}),
        # smoothing puts mass on every class: +inf where the masked class has weight > 0
        (index, {"weight": weight, "label_smoothing": 0.1}),
    ]:
        what = f"jax, masked logits, {options}"
        loss = jax.cross_entropy(x, target, **options)
        _assert_normwise(loss, gold.cross_entropy(x, target, **options), f64, what)
        grad = jax.cross_entropy_grad(x, target, **options)
        want = gold.cross_entropy_grad(x, target, **options)
        _assert_normwise(grad, want, f64, f"{what} (gradient)")
    assert np.isfinite(loss[0]) and np.all(np.isinf(loss[1:])), loss


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_ignore_index_with_probability_targets_is_refused(
    builtins: dict[str, Any], name: str
) -> None:
    adapter = _builtin(builtins, name)
    with pytest.raises((ValueError, RuntimeError), match="ignore_index"):
        adapter.cross_entropy(CASES[0].logits, CASES[0].soft, ignore_index=0)


# -- the C reference: special values and the seed -----------------------------------------


def test_c_reference_follows_the_policy_table(builtins: dict[str, Any]) -> None:
    c = _builtin(builtins, "c")
    inf, nan = np.inf, np.nan
    # -inf logit off the target: a finite loss and a zero gradient there (0 log 0 = 0)
    masked = np.array([[0.5, -inf, 1.0]])
    assert np.isfinite(c.cross_entropy(masked, np.array([0]))).all()
    assert c.cross_entropy_grad(masked, np.array([[0.25, 0.0, 0.75]]))[0, 1] == 0.0
    # target mass on a -inf logit: loss +inf, gradient finite
    assert c.cross_entropy(masked, np.array([1]))[0] == inf
    assert np.isfinite(c.cross_entropy_grad(masked, np.array([[0.5, 0.5, 0.0]]))).all()
    # NaN anywhere in a row: that row's outputs NaN, the other rows untouched
    rows = np.array([[0.0, nan, 1.0], [0.0, 1.0, 2.0]])
    assert np.isnan(c.softmax(rows)[0]).all() and np.isfinite(c.softmax(rows)[1]).all()
    assert np.isnan(c.cross_entropy(rows, np.array([0, 0]))[0])
    # K = 1: loss 0, gradient 0; N = 0: empty outputs
    assert c.cross_entropy(np.array([[3.0]]), np.array([0]))[0] == 0.0
    assert c.cross_entropy_grad(np.array([[3.0]]), np.array([0]))[0, 0] == 0.0
    assert c.cross_entropy(np.zeros((0, 4)), np.zeros(0, np.int64)).shape == (0,)
    assert c.softmax_jacobian(np.zeros((0, 4))).shape == (0, 4, 4)
    # +inf logits: the limit, one-hot over the +inf entries
    np.testing.assert_array_equal(c.softmax(np.array([[inf, 0.0, inf]])), [[0.5, 0.0, 0.5]])


def test_c_reference_stays_exact_where_p_is_nearly_one(builtins: dict[str, Any]) -> None:
    # the dominant class: -log p_t = log1p(e^-40) = 4.25e-18 and p_t - 1 = -4.25e-18,
    # which the textbook 1 - p (or log of a rounded p) turns into 0
    c = _builtin(builtins, "c")
    x = np.array([[40.0, 0.0], [0.0, -745.0]])
    t = np.array([0, 0])
    _assert_close_in_ulps(c.cross_entropy(x, t), gold.cross_entropy(x, t), 0.5, "c CE")
    want = gold.cross_entropy_grad(x, t)
    _assert_close_in_ulps(c.cross_entropy_grad(x, t), want, 0.5, "c CE grad")
    _assert_close_in_ulps(c.log_softmax(x), gold.log_softmax(x), 0.5, "c log_softmax")


def test_c_refuses_invalid_inputs(builtins: dict[str, Any]) -> None:
    c = _builtin(builtins, "c")
    x = CASES[0].logits
    with pytest.raises(ValueError, match="class index"):
        c.cross_entropy(x, np.array([0, 1, 6, 2]))
    with pytest.raises(ValueError, match="class index"):
        c.cross_entropy_grad(x, np.array([0, -1, 2, 2]))
    negative = CASES[0].soft.copy()
    negative[2, 3] = -0.25
    with pytest.raises(ValueError, match="negative"):
        c.cross_entropy(x, negative)
    with pytest.raises(TypeError, match="float16"):
        c.softmax(x.astype(np.float16))
    with pytest.raises(ValueError, match="shape"):
        c.cross_entropy(x, np.array([0, 1]))


def test_c_seed_function_computes_p_minus_y(builtins: dict[str, Any]) -> None:
    c = _builtin(builtins, "c")
    p = np.array([0.25, 0.5, 0.125, 0.125])
    np.testing.assert_array_equal(
        c.softmax_cross_entropy_loss_derivative(p, np.array([0, 1, 0, 0])),
        [0.25, -0.5, 0.125, 0.125],
    )
    # row by row on a batch, each row exactly p - y in double
    batch = np.array([[0.75, 0.25], [0.5, 0.5]])
    np.testing.assert_array_equal(
        c.softmax_cross_entropy_loss_derivative(batch, np.array([[1, 0], [0, 1]])),
        [[-0.25, 0.25], [0.5, -0.5]],
    )


def test_c_seed_adapter_is_the_seed_composed_with_softmax(
    builtins: dict[str, Any], compile_cache: Path
) -> None:
    _builtin(builtins, "c")
    seed = c_ctypes.load_seed()
    assert (seed.name, seed.dtypes) == ("c-seed", ("float64",))
    assert not hasattr(seed, "cross_entropy_grad_wrt_probs")
    case = CASES[0]
    p = builtins["c"].softmax(case.logits)
    one_hot = np.eye(_K)[case.index]
    np.testing.assert_array_equal(seed.cross_entropy_grad(case.logits, case.index), p - one_hot)
    _assert_close_in_ulps(
        seed.cross_entropy_grad(case.logits, case.index),
        gold.cross_entropy_grad(case.logits, case.index),
        ULP_BOUND,
        "c-seed",
    )
    # the seed assumes sum y = 1: with integer targets summing to 2 it still gives p - y
    twice = 2.0 * np.eye(_K)[case.index]
    np.testing.assert_array_equal(seed.cross_entropy_grad(case.logits, twice), p - twice)
    with pytest.raises(NotImplementedError, match="soft"):  # reported "not provided"
        seed.cross_entropy_grad(case.logits, case.soft)
    assert pickle.loads(pickle.dumps(seed)).name == "c-seed"


# -- users' C adapters --------------------------------------------------------------------


def test_user_c_example_compiles_and_works(compile_cache: Path) -> None:
    user = c_ctypes.load_user(f"c:{os.path.relpath(EXAMPLE_C)}")
    assert user.name.startswith("c:") and user.name.endswith("my_softmax.c")
    assert user.dtypes == ("float64",)
    provided = [f for f in FUNCTIONS if hasattr(user, f)]
    assert provided == ["softmax", "cross_entropy"]
    for number, case in enumerate(CASES):
        what = f"my_softmax.c case {number}"
        _assert_close_in_ulps(user.softmax(case.logits), gold.softmax(case.logits), 4, what)
        got = user.cross_entropy(case.logits, case.index)
        _assert_close_in_ulps(got, gold.cross_entropy(case.logits, case.index), 4, what)
    with pytest.raises(ValueError, match="class index"):
        user.cross_entropy(CASES[0].logits, np.array([0, 0, 0, 9]))
    with pytest.raises(NotImplementedError, match="xc_softmax_f32"):
        user.softmax(CASES[0].logits.astype(np.float32))
    with pytest.raises(NotImplementedError, match="xc_cross_entropy_probs"):
        user.cross_entropy(CASES[0].logits, CASES[0].soft)


def test_user_prebuilt_library_loads(compile_cache: Path) -> None:
    library = c_ctypes.compile_library(EXAMPLE_C)
    assert library.parent == compile_cache / "xentcheck"
    user = c_ctypes.load_user(str(library))
    x = CASES[1].logits
    _assert_close_in_ulps(user.softmax(x), gold.softmax(x), 4, "prebuilt my_softmax")


def test_compiled_libraries_are_cached(
    compile_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = c_ctypes.compile_library(EXAMPLE_C)
    stamp = first.stat().st_mtime_ns

    def no_compiling(command: list[str], **kwargs: Any) -> Any:
        if "--version" not in command and "-E" not in command:
            raise AssertionError(f"recompiled a cached library: {command}")
        return _real_run(command, **kwargs)

    _real_run = c_ctypes.subprocess.run
    monkeypatch.setattr(c_ctypes.subprocess, "run", no_compiling)
    assert c_ctypes.compile_library(EXAMPLE_C) == first
    assert first.stat().st_mtime_ns == stamp


def test_editing_an_included_header_rebuilds_the_library(
    compile_cache: Path, tmp_path: Path
) -> None:
    """The cache key covers what the compiler read: a header the source includes, edited
    after a first build, gives a new library (a stale one would keep the old behaviour)."""
    header = tmp_path / "my_scale.h"
    source = tmp_path / "scaled.c"
    source.write_text(
        '#include "xentcheck.h"\n#include "my_scale.h"\n'
        "int xc_logsumexp(const double *x, double *out, int64_t n, int64_t k) {\n"
        "  for (int64_t i = 0; i < n; i++) out[i] = SCALE * x[i * k];\n  return 0;\n}\n")
    x = np.array([[3.0, 1.0]])
    header.write_text("#define SCALE 1.0\n")
    first = c_ctypes.compile_library(source)
    assert c_ctypes.load_user(str(source)).logsumexp(x).tolist() == [3.0]
    header.write_text("#define SCALE 2.0\n")
    assert c_ctypes.compile_library(source) != first
    assert c_ctypes.load_user(str(source)).logsumexp(x).tolist() == [6.0]


def test_user_library_without_xentcheck_symbols_is_refused(
    compile_cache: Path, tmp_path: Path
) -> None:
    source = tmp_path / "unrelated.c"
    source.write_text("int unrelated(int x) { return x + 1; }\n")
    with pytest.raises(c_ctypes.CAdapterError, match="defines none of the xentcheck C functions"):
        c_ctypes.load_user(str(source))


def test_user_compile_error_is_reported(compile_cache: Path, tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int xc_softmax(const double *logits, double *out, int64_t n\n")
    with pytest.raises(c_ctypes.CAdapterError, match="compiling .*broken.c failed") as raised:
        c_ctypes.load_user(str(source))
    assert isinstance(raised.value, AdapterUnavailable)
    assert not list((compile_cache / "xentcheck").glob(".*.tmp"))


def test_user_c_file_that_does_not_exist(compile_cache: Path) -> None:
    with pytest.raises(c_ctypes.CAdapterError, match="no such file"):
        c_ctypes.load_user("c:nowhere/none.c")


@pytest.mark.parametrize("cc", ["/nonexistent/bin/cc", None])
def test_missing_compiler_makes_c_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cc: str | None
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no cc, gcc or clang
    if cc is None:
        monkeypatch.delenv("CC", raising=False)
    else:
        monkeypatch.setenv("CC", cc)
    with pytest.raises(AdapterUnavailable, match=r"no C compiler found \(set CC\)"):
        c_ctypes.load()
    with pytest.raises(AdapterUnavailable, match=r"no C compiler found \(set CC\)"):
        c_ctypes.load_user(str(EXAMPLE_C))
