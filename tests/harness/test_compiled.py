"""The compiled last step of grading (``xentcheck.harness._compiled``) gives NumPy's bits
(its other loop, the order check's radix sort, is tested in test_order_keys.py).

An LLM batch's outputs (16 rows of 131072 classes a block) are graded by one compiled
loop where numba is installed; a verdict must not depend on that. These tests grade the
same candidates with both engines, element by element and field by field (ulp errors,
ratios, allowed errors, broken, grade codes), over every dtype and a spread of candidates
the loop takes and leaves to NumPy (non-finite values, sign errors, errors beyond the
value, zeros, subnormals, ungraded rows), check that the compiled code holds no fused
multiply-add, and that the comparison catches a loop that grades one step off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from conftest import fused_multiply_adds
from xentcheck.harness import grading
from xentcheck.references import fast
from xentcheck.references.fast import jit

pytest.importorskip("numba")

DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16,
          "bfloat16": ml_dtypes.bfloat16}
FIELDS = ("ulp", "ratio", "allowed", "broken", "graded", "codes")


def _spoilt(exact: np.ndarray, dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """The exact values rounded to ``dtype``, then a spread of errors: a few ulps, whole
    factors, sign flips, zeros, non-finite values, subnormals."""
    c = exact.astype(dtype).astype(np.float64)
    pick = rng.random(c.shape)
    steps = rng.integers(-6, 7, c.shape)
    c = np.where(pick < 0.5, c, c * (1 + steps * float(np.finfo(dtype).eps)))
    c = np.where((pick > 0.80) & (pick < 0.83), c * rng.uniform(-3, 3, c.shape), c)
    c = np.where((pick > 0.83) & (pick < 0.85), -c, c)
    c = np.where((pick > 0.85) & (pick < 0.86), 0.0, c)
    c = np.where((pick > 0.86) & (pick < 0.865), -0.0, c)
    c = np.where((pick > 0.865) & (pick < 0.87), np.nan, c)
    c = np.where((pick > 0.87) & (pick < 0.875), np.inf, c)
    c = np.where((pick > 0.875) & (pick < 0.88), -np.inf, c)
    c = np.where((pick > 0.88) & (pick < 0.885), float(np.finfo(dtype).smallest_subnormal), c)
    return c.astype(dtype)


def _logits(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    z = rng.standard_normal((n, k)) * rng.choice([0.1, 3.0, 40.0, 800.0], (n, 1))
    z[0, : k // 2] = -np.inf  # masked entries: zeros in the softmax
    z[1, 3] = np.inf  # a row not graded
    z[2] = -np.inf  # nothing finite: not graded
    z[3, 0] = 1e4  # one entry dominates: underflowing probabilities
    return z


def _cases() -> Iterator[tuple[str, str, np.ndarray, Any, np.ndarray, np.ndarray, float]]:
    rng = np.random.default_rng(11)
    for name, dtype in DTYPES.items():
        z = _logits(rng, 12, 300)
        ref = fast.Reference(z, work="float64")
        labels = rng.integers(0, 300, 12)
        outputs = {"softmax": ref.softmax(), "log_softmax": ref.log_softmax(),
                   "logsumexp": ref.logsumexp(),
                   "cross_entropy_grad": ref.cross_entropy_grad(labels)}
        for function, exact in outputs.items():
            exact = np.asarray(exact, np.float64)
            for budget in (4.0, 1.0, 1e6):
                target = labels if function == "cross_entropy_grad" else None
                yield (function, name, z.astype(dtype), target, exact,
                       _spoilt(exact, dtype, rng), budget)


def _grade(engine: str, function: str, z: np.ndarray, target: Any, exact: np.ndarray,
           candidate: np.ndarray, budget: float) -> grading.ElementGrades:
    with jit.engine(engine):
        return grading.grade_elements(function, candidate, grading.decode(exact), inputs=z,
                                      target=target, ulp_budget=budget)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind != "f":
        return np.array_equal(a, b)
    return bool(np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(
        np.where(np.isnan(a), 0.0, a).view(np.int64), np.where(np.isnan(b), 0.0, b).view(
            np.int64)))


def test_both_engines_grade_every_element_alike() -> None:
    left = taken = 0
    for function, dtype, z, target, exact, candidate, budget in _cases():
        numpy_grades = _grade("numpy", function, z, target, exact, candidate, budget)
        compiled = _grade("numba", function, z, target, exact, candidate, budget)
        for field in FIELDS:
            assert _same(getattr(numpy_grades, field), getattr(compiled, field)), (
                function, dtype, budget, field)
        codes = numpy_grades.codes
        taken += int(np.isin(codes, (0, 1, 2, 3, 4)).sum())
        left += int((codes == 5).sum())
    # both kinds of element were there: graded by the loop, and left to NumPy (broken)
    assert taken > 10_000 and left > 100
    with jit.engine("numba"):  # and the loop did run
        assert grading._loops(grading.decode(np.zeros(3))) is not None


def test_the_loop_is_used_only_for_float64_sources_and_large_outputs() -> None:
    small, large = np.zeros(8), np.zeros(jit.MIN_ELEMENTS)
    with jit.engine("auto"):
        assert grading._loops(grading.decode(small)) is None
        assert grading._loops(grading.decode(large)) is not None
        assert grading._loops(grading.decode(large.astype(np.longdouble))) is None
    with jit.engine("numpy"):
        assert grading._loops(grading.decode(large)) is None


def test_a_loop_one_step_off_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above fails for a loop that grades with the wrong budget."""
    loops = grading._compiled_loops()
    original = loops.grade_into

    def off(*args: Any) -> int:
        args = list(args)
        args[15] = args[15] * 2  # the ulp budget doubled
        return original(*args)

    monkeypatch.setattr(loops, "grade_into", off)
    caught = False
    for function, _, z, target, exact, candidate, budget in _cases():
        if budget != 4.0:
            continue
        a = _grade("numpy", function, z, target, exact, candidate, budget)
        b = _grade("numba", function, z, target, exact, candidate, budget)
        caught |= not _same(a.codes, b.codes)
    assert caught


def test_the_compiled_loops_have_no_fused_multiply_add() -> None:
    """Grading's loop and the bounds' loops (whose a * b + c would be a fused
    multiply-add's textbook case) round every product and sum on their own."""
    script = (
        "import numpy as np\n"
        "from xentcheck.harness import grading\n"
        "from xentcheck.references.fast import jit\n"
        "exact = np.linspace(0.1, 3.0, 12).reshape(2, 6)\n"
        "with jit.engine('numba'):\n"
        "    for f in ('log_softmax', 'softmax', 'cross_entropy_grad', 'cross_entropy'):\n"
        "        out = exact[:, 0].copy() if f == 'cross_entropy' else exact\n"
        "        grading.grade_elements(f, out, out, inputs=np.zeros((2, 6)),\n"
        "                               target=np.array([0, 1]), memo={})\n"
        "loops = grading._compiled_loops()\n"
        "loops.allowed_abs_into(exact.ravel(), 1.0, np.zeros(12, np.int64),\n"
        "                       np.ones(12, bool), -126, 127, -23, np.empty(12))\n"
        "for name in ('grade_into', 'softmax_error_into', 'softmax_lambda_into',\n"
        "             'log_softmax_error_into', 'gradient_bounds_into', 'shifted_into',\n"
        "             'softmax_spread_into', 'allowed_abs_into', 'loss_bound_terms_into'):\n"
        "    g = getattr(loops, name)\n"
        "    assert g.signatures, name\n"
        "    print(''.join(g.inspect_asm().values()))\n")
    assert fused_multiply_adds(script) == 0


@pytest.mark.parametrize("k", [1, 2, 300])
def test_compiled_rows_are_numpys_bits(k: int) -> None:
    """``grading._rows`` (the float64 softmax, |z - m| u, the row sums the bounds are
    built from) compiled is the NumPy passes' bits, field for field, with NaN rows, +inf
    rows, rows of -inf only, masked entries, zeros of either sign and huge logits."""
    rng = np.random.default_rng(4)
    z = _logits(rng, 12, 300)[:, :k] if k > 2 else rng.standard_normal((12, k)) * 50
    z[5, 0] = np.nan
    z[6] = -0.0
    z[7, : (k + 1) // 2] = 0.0
    z[8] = 1e308 if k > 1 else -1e308
    z[9, -1] = -np.inf
    z[10] = np.inf
    rows = {}
    for engine in ("numpy", "numba"):
        with jit.engine(engine):
            rows[engine] = grading._rows(z, 2.0**-53)
    for name in ("p", "du", "n", "ell", "spread", "lse", "ungraded"):
        assert _same(getattr(rows["numpy"], name), getattr(rows["numba"], name)), (name, k)
    assert rows["numba"].ungraded[10] and not rows["numba"].ungraded[5]


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_compiled_allowed_errors_are_numpys_bits(dtype: str) -> None:
    """``checks.allowed_abs``' arithmetic compiled (``_compiled.allowed_abs_into``) is the
    NumPy formula's bits: NaN, +-inf and values either side of the floor among the
    allowed ulps, exact values from subnormal to huge, zeros, infinities and NaN."""
    from xentcheck.harness import _compiled
    from xentcheck.references.rounding import ExactValues, float_format

    rng = np.random.default_rng(8)
    n = 20_000
    exact = np.ldexp(rng.uniform(-2, 2, n), rng.integers(-1074, 1024, n))
    exact[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1.7976931348623157e308, 1.0]
    decoded = ExactValues.from_floats(exact)
    allowed = np.abs(rng.standard_normal(n)) * rng.choice([1e-3, 1.0, 1e3, 1e300], n)
    allowed[:6] = [np.nan, np.inf, -np.inf, 0.5, 4.0, 3.999]
    allowed[rng.integers(0, n, 500)] = np.nan
    floor = 4.0
    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.maximum(np.nan_to_num(allowed, nan=0.0), floor) * decoded.ulp(dtype)
    fmt = float_format(dtype)
    got = np.empty(n)
    _compiled.allowed_abs_into(allowed, floor, decoded.expo, decoded.finite, fmt.emin,
                               fmt.emax, 1 - fmt.precision, got)
    assert _same(expected, got) and np.isnan(got[2:5]).all()


def test_compiled_chunk_comparison_finds_numpys_rows() -> None:
    """The chunk-invariance comparison compiled (``_compiled.rows_off_limit_into``) marks
    the rows the NumPy formula marks: entries just inside and just outside their limit,
    NaN and infinite values, entries not graded, rows with nothing off."""
    from xentcheck.harness import _compiled

    rng = np.random.default_rng(12)
    whole = rng.standard_normal((40, 500))
    limit = np.abs(rng.standard_normal(whole.shape)) * 1e-6
    combined = whole + rng.choice([0.0, 1.0, -1.0], whole.shape, p=[0.998, 0.001, 0.001]
                                  ) * rng.choice([0.5, 1.0, 2.0], whole.shape) * limit
    combined[3, 7], combined[4, 9], whole[5, 2] = np.nan, np.inf, np.inf
    combined[6, :] = whole[6, :] + 2 * limit[6, :]  # every entry off
    graded = rng.random(whole.shape) > 0.01
    graded[6, :] = False  # but none graded
    with np.errstate(invalid="ignore"):
        expected = (graded & ~(np.abs(combined - whole) <= limit)).any(axis=1)
    bad = np.empty(len(whole), bool)
    found = _compiled.rows_off_limit_into(combined, whole, limit, graded, bad)
    assert 0 < expected.sum() < len(whole) and not expected[6]  # else this proves little
    np.testing.assert_array_equal(bad, expected)
    assert found == bool(expected.any())
    bad[:] = True
    finite = np.where(np.isfinite(whole), whole, 0.0)  # (inf - inf is NaN: off)
    assert not _compiled.rows_off_limit_into(finite, finite, limit, graded, bad)
    assert not bad.any()


_BOUND_OPTIONS = [
    {},
    {"reduction": "mean"},
    {"reduction": "sum", "label_smoothing": 0.1},
    {"reduction": "mean", "ignore_index": 2, "weight": "w"},
    {"reduction": "none", "ignore_index": 2, "label_smoothing": 0.05, "weight": "w"},
]


@pytest.mark.parametrize("options", _BOUND_OPTIONS)
@pytest.mark.parametrize("function", ["softmax", "log_softmax", "cross_entropy",
                                      "cross_entropy_grad", "softmax_jvp",
                                      "cross_entropy_hvp"])
def test_compiled_bounds_are_numpys_bits(function: str, options: dict) -> None:
    """The stability bounds and Lambdas of the large outputs (softmax's, log_softmax's, the
    gradient's in one compiled pass each; the JVPs' through softmax's) are the NumPy
    formulas' bits, with every kind of row: masked entries, underflowing probabilities,
    rows not graded, ignored rows, weights, smoothing, each reduction."""
    rng = np.random.default_rng(3)
    z = _logits(rng, 12, 300)
    labels = rng.integers(0, 300, 12)
    labels[[4, 7]] = 2  # the ignored class, when there is one
    opts = {k: (rng.uniform(0.5, 2.0, 300) if v == "w" else v) for k, v in options.items()}
    tangent = rng.standard_normal(z.shape)
    exact = np.asarray(fast.Reference(z, work="float64").softmax(), np.float64)
    xu = np.abs(exact).ravel() * 2.0**-53
    out = {}
    for engine in ("numpy", "numba"):
        with jit.engine(engine), np.errstate(all="ignore"):
            out[engine] = grading._bounds(function, z, labels, opts, 2.0**-53, xu,
                                          tangent, {})
    for a, b in zip(out["numpy"], out["numba"], strict=True):
        assert _same(np.broadcast_to(a, np.shape(b)), b), (function, options)


def test_the_branch_free_ldexp_is_numpys_over_its_whole_range() -> None:
    """``_compiled._ldexp`` (three exact products and one rounding, no branch) is
    ``np.ldexp``'s bits for every exponent of its range, -2045 ... 2046, and for values
    whose scaled result rounds into the subnormals (where a product in the wrong order
    rounds twice), overflows, or is zero, NaN or infinite."""
    from numba import njit

    from xentcheck.harness import _compiled

    one = _compiled._ldexp

    @njit
    def scaled(x: np.ndarray, e: np.ndarray) -> np.ndarray:
        out = np.empty(x.size)
        for i in range(x.size):
            out[i] = one(x[i], e[i])
        return out

    rng = np.random.default_rng(11)
    tiny = float(np.finfo(np.float64).smallest_subnormal)
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, tiny, -tiny, 1.0, -1.5,
                        np.finfo(np.float64).max, 2.0 ** -1022, 2.0 ** -1022 * (1 - 2 ** -52)])
    exponents = np.arange(-2045, 2047)
    for _ in range(4):  # random significands over the whole exponent range
        x = np.ldexp(rng.uniform(1, 2, exponents.size) * rng.choice([-1, 1], exponents.size),
                     rng.integers(-1074, 1024, exponents.size))
        x = np.concatenate([x, np.resize(special, exponents.size)])
        e = np.concatenate([exponents, rng.permutation(exponents)])
        with np.errstate(all="ignore"):
            want = np.ldexp(x, e)
        got = scaled(x, e)
        same = (got.view(np.int64) == want.view(np.int64)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), (x[~same][:3], e[~same][:3])
    # results that round into the subnormals: M 2**t, M < 2**53, t from -1130 to -1075,
    # ties (an odd number of half-steps, M = 2j + 1 at t = -1075) included
    m = rng.integers(0, 2 ** 53, 4096).astype(np.float64)
    t = rng.integers(-1130, -1074, m.size)
    m[:512] = 2 * rng.integers(0, 2 ** 40, 512) + 1
    t[:512] = -1075
    for shift in (-1023, -1086, -1500, -2000, -2045):
        x = np.ldexp(m, t - shift)
        e = np.full(x.size, shift)
        assert np.array_equal(scaled(x, e).view(np.int64), np.ldexp(x, e).view(np.int64))
