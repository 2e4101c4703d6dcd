"""The fast tier's compiled engine gives the NumPy engine's bits, on every regime.

A verdict must not depend on whether numba is installed: ``xentcheck.references.fast.jit``
runs the same float64 operations as the NumPy blocks, and its sums are exact on the row
grids, so every output must be bitwise equal (values, signs of zero, NaNs in place).
These tests compare the two engines on every regime's samples (float64 and float32
logits), named extremes, hypothesis draws and column permutations; check that the
compiled code holds no fused multiply-add; round hand-picked double-doubles (ties, powers
of two with a low part of the other sign, tiny and non-finite values) against NumPy's
longdouble arithmetic; and show that the comparison catches a kernel one grid unit off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import fused_multiply_adds
from xentcheck.harness.strategies import REGIMES, sample
from xentcheck.references import fast
from xentcheck.references.fast import doubledouble, jit

pytest.importorskip("numba")
if jit._kernels() is None:
    pytest.skip("the compiled engine needs x87 longdouble", allow_module_level=True)


def _outputs(z: np.ndarray, target: Any = None, options: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """Every output of both works: log_softmax, logsumexp and the loss alone (the compiled
    paths), then a shared Reference (its sums kept for softmax and the gradient)."""
    out: dict[str, Any] = {}
    for work in ("longdouble", "float64"):
        out[f"{work} log_softmax"] = fast.log_softmax(z, work=work)
        out[f"{work} logsumexp"] = fast.logsumexp(z, work=work)
        if target is not None:
            out[f"{work} loss"] = fast.cross_entropy(z, target, work=work, **(options or {}))
        ref = fast.Reference(z, work=work)
        out[f"{work} ref.log_softmax"] = ref.log_softmax()
        out[f"{work} softmax"] = ref.softmax()
        if target is not None:
            out[f"{work} cross_entropy"] = ref.cross_entropy(target, **(options or {}))
            out[f"{work} cross_entropy_grad"] = ref.cross_entropy_grad(target,
                                                                       **(options or {}))
    return out


def _same_bits(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return (a.shape == b.shape and a.dtype == b.dtype
            and bool(np.array_equal(a, b, equal_nan=True))
            and bool(np.array_equal(np.signbit(a), np.signbit(b))))


def assert_engines_agree(z: np.ndarray, target: Any = None,
                         options: dict[str, Any] | None = None) -> None:
    with jit.engine("numpy"):
        numpy_out = _outputs(z, target, options)
    with jit.engine("numba"):
        numba_out = _outputs(z, target, options)
    for name, value in numpy_out.items():
        assert _same_bits(numba_out[name], value), f"{name} differs on {z.shape} logits"


# --------------------------------------------------------------------------- regimes

#: Every regime but no-classes (K = 0 goes to gold); known-defects and long-rows hold rows
#: of 65537 and 131072 classes (fast here: no gold is computed).
COMPARED = tuple(r for r in REGIMES if r != "no-classes")


@pytest.mark.parametrize("regime", COMPARED)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_regime_same_bits(regime: str, dtype: str) -> None:
    for case in sample(regime, dtype=dtype):
        logits = np.asarray(case.logits)  # float32 stays float32 in the float64 work
        if logits.dtype not in (np.float64, np.float32):
            logits = logits.astype(np.float64)
        if logits.shape[0] == 0 or logits.shape[1] == 0:
            continue
        assert_engines_agree(logits, case.target, case.options)


@pytest.mark.parametrize("row", [
    [40.0, 0.0], [1e308, -1e308], [-1e308, -1e308], [0.0, 0.0, 0.0],
    [-745.0, 0.0], [-700.0, 0.0, -720.0, -790.0, -800.0], [-12000.0, 0.0],
    [5e-324, 0.0, -5e-324], [0.0, -np.inf, -np.inf, 1.0], [-np.inf, -np.inf],
    [np.inf, 0.0, np.inf], [np.nan, 0.0], [2.0**1000, 2.0**1000 - 2.0**960], [3.0],
    [-0.6931471805599453, -0.6931471805599453], [2.0**31, 2.0**31 - 1.0, -2.0**31],
])
def test_named_extremes_same_bits(row: list[float]) -> None:
    z = np.array([row, [1.0] * len(row)])
    assert_engines_agree(z, np.array([0, len(row) - 1]), {"label_smoothing": 0.1})


def test_multi_row_blocks_with_mixed_rows() -> None:
    """Narrow rows share a block: one row beyond 2**30 makes the whole block take d - L in
    NumPy; the compiled engine must decide per block too."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((5000, 9)) * 4
    z[17] *= 1e12
    z[2500, 3] = -np.inf
    assert_engines_agree(z, rng.integers(0, 9, 5000))


def test_rows_of_four_grids_same_bits() -> None:
    """Rows of 2**18 classes and more are summed on four grids; a row whose terms are all
    near exp(-800) has grids so deep that their unit is subnormal: both against NumPy's
    engine."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((2, 1 << 18)) * 4
    z[1] = -800.0 + rng.uniform(-5.0, 5.0, 1 << 18)
    z[1, 7] = 0.0
    assert sigmas_of(z).shape[0] == 4 and sigmas_of(z).min() < 2.0**-970
    assert_engines_agree(z, np.array([3, 7]))


def sigmas_of(z: np.ndarray) -> np.ndarray:
    """The row grids the longdouble work sums exp(d) on (as extended._Extended.sums)."""
    from xentcheck.references.fast.inputs import _second_max
    from xentcheck.references.fast.kernels import _S

    j = np.argmax(z, axis=1)
    m = z[np.arange(z.shape[0]), j]
    d2 = _second_max(z, j, m)
    return doubledouble._grid_sigmas(doubledouble._grid_bound(d2, _S), z.shape[1])


@st.composite
def rows(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(1, 3))
    k = draw(st.integers(1, 40))
    scale = draw(st.sampled_from([1.0, 30.0, 745.0, 1e4, 1e150, 1e308]))
    values = st.floats(-1.0, 1.0, allow_nan=False) | st.sampled_from([0.0, 1.0, -1.0])
    z = np.array(draw(st.lists(values, min_size=n * k, max_size=n * k))).reshape(n, k) * scale
    if k > 1 and draw(st.booleans()):
        z[:, -1] = np.max(z, axis=1)  # a tie with the maximum
    if k > 2 and draw(st.booleans()):
        z[:, 1] = -np.inf
    return z


@settings(max_examples=80, deadline=None, derandomize=True)
@given(z=rows())
def test_hypothesis_same_bits(z: np.ndarray) -> None:
    assert_engines_agree(z, np.zeros(z.shape[0], dtype=np.int64))


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_column_order_does_not_change_the_sums(name: str) -> None:
    """The grid sums are exact: permuting a row's columns permutes its log_softmax, bit for
    bit (a float64 sum in a fixed order would not promise that)."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((4, 70000)) * 6
    perm = rng.permutation(z.shape[1])
    with jit.engine(name):
        assert _same_bits(fast.log_softmax(z)[:, perm], fast.log_softmax(z[:, perm]))
        assert _same_bits(fast.logsumexp(z), fast.logsumexp(z[:, perm]))


# --------------------------------------------------------------------------- the kernels


def _extremes(a: np.ndarray, name: str) -> tuple[np.ndarray, ...]:
    """argmax, max, min and the largest entry off the argmax as the fast tier's evaluators
    take them (inputs._row_extremes, then _second_max) under engine ``name``."""
    from xentcheck.references.fast import inputs

    with jit.engine(name):
        z, j, m, zmin, _, found = inputs._row_extremes(a)
        assert (found is not None) == (name == "numba")
        return j, m, zmin, inputs._second_max(z, j, m, found)


def _extreme_rows(dtype: type, k: int) -> list[np.ndarray]:
    rng = np.random.default_rng(k)
    plain = (rng.standard_normal((4, k)) * 4).astype(dtype)
    ties = plain.copy()
    ties[0] = 0.0
    ties[0, ::3] = -0.0  # a zero maximum of both signs, -0 first: argmax takes it
    ties[1, -1] = ties[1].max() + 1  # the maximum in the last (partial) block
    ties[2] = 7.0  # every entry the maximum
    ties[3, k // 2] = dtype(1e30)
    zeros = np.zeros((2, k), dtype)
    zeros[1, k - 1:] = -0.0
    return [plain, ties, zeros]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 2, 1023, 1024, 1025, 3000])
def test_compiled_row_extremes_are_numpys(dtype: type, k: int) -> None:
    """The one-pass extremes (integer keys, block maxima) give NumPy's argmax (the first
    of ties, -0 before +0 counted equal), its max with its sign, and the min and the
    largest entry off the argmax by value (their sign of zero feeds only comparisons and
    the grid bound's ceil), at block edges and in the tail."""
    for a in _extreme_rows(dtype, k):
        got, want = _extremes(a, "numba"), _extremes(a, "numpy")
        for g, w, name in zip(got, want, ("argmax", "max", "min", "off the argmax"),
                                 strict=True):
            assert g.dtype == w.dtype and np.array_equal(g, w), (name, a.shape, g, w)
        assert _same_bits(got[1], want[1])


def test_compiled_row_extremes_leave_non_finite_input_to_numpy() -> None:
    """One NaN or infinity anywhere (the last entry here) sends the input NumPy's way,
    which sorts the rows into their kinds."""
    with jit.engine("numba"):
        assert jit.finite_row_extremes(np.zeros((2, 5000))) is not None
        for bad in (np.nan, np.inf, -np.inf):
            a = np.zeros((2, 5000))
            a[1, -1] = bad
            assert jit.finite_row_extremes(a) is None
            assert jit.finite_row_extremes(a.astype(np.float32)) is None



def test_longdouble_words_round_correctly() -> None:
    """_ld_words against NumPy's longdouble sum hi + lo (x87: correctly rounded)."""
    from xentcheck.references.fast import _jit_kernels as kernels

    eps = 2.0**-53
    pairs = [(1.0, eps / 2**11), (1.0, 3 * eps / 2**11), (1.0, -eps / 2**12),  # ties, even
             (1.0, -eps / 2**11), (-1.0, eps / 2**12), (2.0, -eps / 3), (-4.0, 1e-30),
             (0.75, 2.0**-70), (1e-300, 1e-317), (2.0**-1000, -2.0**-1070), (5e-324, 0.0),
             (0.0, 0.0), (-0.0, 0.0), (1.5e308, 1e292), (-np.inf, 0.0), (np.inf, 0.0),
             (np.nan, 0.0), (3.0, 2.0**-52 * 3 / 2**12)]
    for hi, lo in pairs:
        w0, w1 = kernels._ld_words(hi, lo)
        got = np.array([w0 & 0xFFFFFFFFFFFFFFFF, w1], dtype=np.uint64).view(np.longdouble)[0]
        should = doubledouble._dd_to_ld(np.float64(hi), np.float64(lo))
        assert _same_bits(got, should), (hi, lo, got, should)


def test_compiled_code_has_no_fused_multiply_add() -> None:
    """An FMA would round once where NumPy rounds twice: compile afresh and read the code."""
    script = (
        "import numpy as np\n"
        "from xentcheck.references import fast\n"
        "from xentcheck.references.fast import _jit_kernels as k\n"
        "fast.log_softmax(np.array([[0.0, 1.0, -np.inf], [2.0, 2.0, 3.0]]))\n"
        "fast.log_softmax(np.array([[0.0, 1.0, -np.inf]]), work='float64')\n"
        "print(''.join(a for f in (k.row_sums, k.plain_row_sums, k.log_softmax_rows)\n"
        "              for a in f.inspect_asm().values()))\n")
    assert fused_multiply_adds(script) == 0


@pytest.mark.parametrize("kernel", ["row_sums", "plain_row_sums"])
def test_a_kernel_one_grid_unit_off_is_caught(monkeypatch: pytest.MonkeyPatch,
                                              kernel: str) -> None:
    """The comparison is not vacuous: sums one unit of the first grid off change bits."""
    real = getattr(jit, kernel)

    def off(ext: Any, sigmas: np.ndarray, *shift: int) -> np.ndarray:
        acc = real(ext, sigmas, *shift)
        acc[0] += np.ldexp(sigmas[0], -52)  # one unit of the first grid
        return acc

    monkeypatch.setattr(jit, kernel, off)
    z = np.random.default_rng(1).standard_normal((3, 5000))
    with pytest.raises(AssertionError, match="differs"):
        assert_engines_agree(z)


def test_engine_choice() -> None:
    with jit.engine("numpy"):
        assert jit.active() == "numpy"
    with jit.engine("numba"):
        assert jit.active() == "numba"
    with pytest.raises(ValueError, match="engine must be"):
        with jit.engine("fortran"):
            pass
    env = dict(os.environ, XENTCHECK_FAST_ENGINE="gpu")
    done = subprocess.run([sys.executable, "-c", "import xentcheck.references.fast"],
                          capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "XENTCHECK_FAST_ENGINE must be" in done.stderr


def test_grid_sums_are_exact_within_their_bound() -> None:
    """The grid sum against mpmath's exact sum of the same terms (hi + lo): within the
    2**-83 2**E the docstring states (E from the row's largest term)."""
    import mpmath

    rng = np.random.default_rng(9)
    hi = np.abs(rng.standard_normal((2, 131072))) * 2.0**100
    lo = hi * rng.uniform(-2.0**-60, 2.0**-60, hi.shape)
    e_max = np.ceil(np.log2(hi.max(axis=1))).astype(np.int64)
    sigmas = doubledouble._grid_sigmas(e_max, hi.shape[1])
    acc = np.zeros(sigmas.shape)
    doubledouble._grid_add(hi.copy(), lo.copy(), sigmas, acc, np.empty_like(hi),
                           np.empty_like(hi))
    sh, sl = doubledouble._grid_total(acc)
    with mpmath.workprec(1200):  # exact for these terms (exponents within 2**-200 .. 2**120)
        for r in range(2):
            exact = mpmath.fsum(mpmath.mpf(float(v)) for v in hi[r]) + mpmath.fsum(
                mpmath.mpf(float(v)) for v in lo[r])
            error = abs(mpmath.mpf(float(sh[r])) + mpmath.mpf(float(sl[r])) - exact)
            assert error <= mpmath.ldexp(1, int(e_max[r]) - 83)
    assert sigmas.shape[0] == 3  # three levels at this width


def test_auto_leaves_small_inputs_to_numpy() -> None:
    """With "auto", inputs below MIN_ELEMENTS never import numba (its ~150 MB and its
    load time are paid back on large inputs only); a large one runs compiled."""
    script = (
        "import sys, numpy as np\n"
        "from xentcheck.references import fast\n"
        "from xentcheck.references.fast import jit\n"
        "fast.log_softmax(np.zeros((64, 1000)))\n"
        "fast.softmax(np.zeros((64, 1000), np.float32), work='float64')\n"
        "small = 'numba' in sys.modules\n"
        "fast.log_softmax(np.zeros((8, jit.MIN_ELEMENTS // 8)))\n"
        "print(small, 'numba' in sys.modules)\n")
    env = dict(os.environ, XENTCHECK_FAST_ENGINE="auto")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True"]
