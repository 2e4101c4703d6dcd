"""The compiled loops of ``portable.exp``, ``portable.log``, the float64 decoding of
exact values and the finite-difference points of ``fd.directional_derivative_rows`` give
NumPy's bits.

Large arrays (an LLM batch's block: the stability bounds' softmax, the logs of
probabilities, the decoded exact values) take :mod:`xentcheck.references._portable_jit`
where numba is installed;
a verdict must not depend on that. These tests compare the two on sweeps of the whole
float64 range (subnormal results, overflow, the table's every entry, non-finite and
negative inputs), on arrays of other shapes and layouts, check the engine choice, that
the compiled code holds no fused multiply-add, and that the comparison catches a loop
one ulp off.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from conftest import fused_multiply_adds
from xentcheck.references import portable
from xentcheck.references.fast import jit

pytest.importorskip("numba")

_SPECIAL = np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, 5e-324, -5e-324,
                     2.2250738585072014e-308, 1e-310, 1.0, -1.0, 0.5, 2.0, 1e308, -1e308,
                     709.782712893384, 709.7827128933841, -745.1332191019411,
                     -745.1332191019412, -708.3964185322641, 800.0, -800.0, 800.5,
                     -1100.0, 1e-17, -1e-17])


def _exp_inputs() -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.concatenate([
        _SPECIAL,
        np.linspace(-760.0, 720.0, 300_001),  # subnormal results to overflow
        rng.standard_normal(100_000) * 30,
        np.arange(-2048, 2049) / 64.0,  # every table entry, k exact
        np.ldexp(rng.uniform(-1, 1, 20_000), rng.integers(-1074, 10, 20_000)),
    ])


def _log_inputs() -> np.ndarray:
    rng = np.random.default_rng(6)
    return np.concatenate([
        _SPECIAL,
        np.ldexp(rng.uniform(0.5, 1.0, 300_000), rng.integers(-1074, 1024, 300_000)),
        np.ldexp(1.0, np.arange(-1074, 1024)),  # powers of two
        np.nextafter(np.sqrt(0.5), [0.0, 1.0]),  # either side of the range switch
        1.0 + np.ldexp(1.0, -np.arange(1, 53)),
        -rng.uniform(0, 10, 1000),
        rng.uniform(0.0, 1.0, 100_000),  # probabilities
    ])


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.int64)


def assert_engines_agree(function: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> None:
    with jit.engine("numpy"):
        expected = function(x)
    with jit.engine("numba"):
        got = function(x)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    same = _bits(got) == _bits(expected)
    if not same.all():
        i = int(np.argmin(same.ravel()))
        raise AssertionError(f"{function.__name__} differs at {x.ravel()[i]!r}: "
                             f"{got.ravel()[i]!r} != {expected.ravel()[i]!r}")


@pytest.mark.parametrize("name", ["exp", "log"])
def test_compiled_loops_give_numpys_bits(name: str) -> None:
    x = _exp_inputs() if name == "exp" else _log_inputs()
    assert_engines_agree(getattr(portable, name), x)


@pytest.mark.parametrize("name", ["exp", "log"])
def test_shapes_and_layouts(name: str) -> None:
    """2-d blocks, a transposed (non-contiguous) view, float32 input, 0-d and empty."""
    function = getattr(portable, name)
    x = np.random.default_rng(8).standard_normal((64, 300)) * 20
    x = np.abs(x) if name == "log" else x
    for case in (x, x.T, x[:, ::3], x.astype(np.float32), np.array(2.5), np.empty((0, 3))):
        assert_engines_agree(function, case)


def test_engine_choice() -> None:
    """auto leaves arrays below MIN_ELEMENTS to NumPy (numba is not even loaded for them),
    the numpy choice every array."""
    with jit.engine("auto"):
        assert jit.elementwise(jit.MIN_ELEMENTS - 1) is None
        assert jit.elementwise(jit.MIN_ELEMENTS) is not None
    with jit.engine("numpy"):
        assert jit.elementwise(10 * jit.MIN_ELEMENTS) is None
    with jit.engine("numba"):
        assert jit.elementwise(1) is not None


def test_a_loop_one_ulp_off_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is not vacuous: one output element one ulp off fails it."""
    from xentcheck.references import _portable_jit

    real = _portable_jit.exp_into

    def off(x: np.ndarray, out: np.ndarray, *args: object) -> None:
        real(x, out, *args)
        out[len(out) // 2] = np.nextafter(out[len(out) // 2], np.inf)

    monkeypatch.setattr(_portable_jit, "exp_into", off)
    with pytest.raises(AssertionError, match="exp differs"):
        assert_engines_agree(portable.exp, np.linspace(-5.0, 5.0, 1001))


def _decode_inputs() -> np.ndarray:
    rng = np.random.default_rng(9)
    with np.errstate(over="ignore"):  # some overflow to infinities, as wanted
        wide = np.ldexp(rng.uniform(-1, 1, 300_000), rng.integers(-1080, 1030, 300_000))
    x = np.concatenate([
        _SPECIAL,
        np.array([np.nextafter(2.2250738585072014e-308, 0), 1.7976931348623157e308]),
        wide,
        np.exp(rng.standard_normal(100_000) * 3 - 12),  # probabilities
        -np.ldexp(1.0, np.arange(-1074, 1024)),  # powers of two, subnormal ones too
    ])
    payload = np.array([0x7FF8_0000_0000_0001, -0x0007_FFFF_FFFF_FFFF], np.int64)
    return np.concatenate([x, payload.view(np.float64)])  # NaNs of either sign bit


def test_decoding_gives_numpys_arrays() -> None:
    """Every array of ``rounding._decode_floats`` (flags, exponent, the three pieces,
    inexact), bit for bit, on zeros, subnormals, the largest finite values, infinities and
    NaNs of either sign, in contiguous and strided layouts."""
    from xentcheck.references import rounding

    x = _decode_inputs()
    for case in (x, x[::3], x[: 64 * 300].reshape(64, 300).T):
        with jit.engine("numpy"):
            expected = rounding._decode_floats(case)
        with jit.engine("numba"):
            got = rounding._decode_floats(case)
        assert len(got) == len(expected) == 8
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert a.shape == b.shape and a.dtype == b.dtype, i
            same = np.ascontiguousarray(a).view(np.uint8) == np.ascontiguousarray(b).view(
                np.uint8)
            assert same.all(), (i, case.ravel()[np.argmin(same.reshape(a.size, -1).all(1))])


def test_a_decoding_off_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoding comparison is not vacuous: a subnormal's exponent off by one fails."""
    from xentcheck.references import _portable_jit

    real = _portable_jit.decode_float64_into

    def off(x: np.ndarray, bits: np.ndarray, *arrays: object) -> None:
        real(x, bits, *arrays)
        expo = arrays[3]
        assert isinstance(expo, np.ndarray)
        expo[np.flatnonzero((np.abs(x) < 2.2250738585072014e-308) & (x != 0))[:1]] += 1

    monkeypatch.setattr(_portable_jit, "decode_float64_into", off)
    with pytest.raises(AssertionError):
        test_decoding_gives_numpys_arrays()


def test_compiled_code_has_no_fused_multiply_add() -> None:
    """An FMA would round once where NumPy rounds twice: compile afresh and read the code."""
    script = (
        "import numpy as np\n"
        "from xentcheck.references import portable, _portable_jit as k\n"
        "portable.exp(np.linspace(-3.0, 3.0, 11)); portable.log(np.linspace(0.1, 3.0, 11))\n"
        "x = np.ones((2, 3)); k.perturbed_into(x, x, np.ones(2), 1.0, True, x.copy())\n"
        "print(''.join(a for f in (k.exp_into, k.log_into, k.perturbed_into)\n"
        "              for a in f.inspect_asm().values()))\n")
    assert fused_multiply_adds(script) == 0


def _points_seen(x: np.ndarray, v: np.ndarray, engine: str) -> list[np.ndarray]:
    """Every point ``fd.directional_derivative_rows`` evaluates f at, under ``engine``."""
    from xentcheck.references import fd

    seen: list[np.ndarray] = []

    def f(z: np.ndarray) -> np.ndarray:
        seen.append(z.copy())
        return np.nansum(np.where(np.isfinite(z), z, 0.0) ** 2, axis=1)

    with jit.engine(engine):
        fd.directional_derivative_rows(f, x, v, levels=2)
    return seen


@pytest.mark.parametrize("held", [False, True], ids=["every-entry-moves", "some-held"])
def test_finite_difference_points_give_numpys_bits(held: bool) -> None:
    """x + h v and x - h v at every level, compiled or not: the same bits, with zeros of
    both signs, infinities, NaN, subnormals and huge entries, and entries held (v = 0:
    x itself, -0 kept) or not."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((6, 4000)) * np.ldexp(1.0, rng.integers(-30, 30, (6, 1)))
    x[:, :12] = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -1e-310, 1e308, -1e308,
                 1e-300, 3.0, -7.5]
    v = rng.uniform(-1.0, 1.0, x.shape)
    if held:
        v[:, :8] = 0.0
        v[::2, 100:200] = 0.0
    expected, got = _points_seen(x, v, "numpy"), _points_seen(x, v, "numba")
    assert len(got) == len(expected) == 6
    for a, b in zip(got, expected, strict=True):
        assert _bits(a).tolist() == _bits(b).tolist()
    if held:  # a held -0 stays -0 (-0 + 0 would be +0)
        assert _bits(got[0][:, 1]).tolist() == _bits(x[:, 1]).tolist()


def test_finite_difference_points_off_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above is not vacuous: one point an ulp off fails it."""
    from xentcheck.references import _portable_jit

    real = _portable_jit.perturbed_into

    def off(x: np.ndarray, v: np.ndarray, h: np.ndarray, sign: float, every: bool,
            out: np.ndarray) -> None:
        real(x, v, h, sign, every, out)
        out[1, 30] = np.nextafter(out[1, 30], np.inf)

    monkeypatch.setattr(_portable_jit, "perturbed_into", off)
    with pytest.raises(AssertionError):
        test_finite_difference_points_give_numpys_bits(False)
