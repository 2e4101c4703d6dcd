"""The built-ins ``numpy``, ``numpy-seed`` and ``scipy``, and the README's Python example,
against gold (``references``, mpmath at its default 192 bits, certified to 110 bits).

* ``numpy`` (the careful one) must be faithful, <= 1 ulp of the case dtype, for every
  function, option and target kind on moderate inputs in all four dtypes, and follow the
  DESIGN.md §4 policy table at the edges.
* ``numpy-seed``, ``scipy`` and the example are smoke-tested: right shape and dtype through
  the contract's checks, and values within a forward-error bound of the textbook formulas.
* The seed stays literal: its known failure modes are pinned so nobody "fixes" the baseline.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import xentcheck.references as gold
from xentcheck.harness.adapters import contract, open_adapter
from xentcheck.harness.adapters.contract import case_dtype
from xentcheck.harness.adapters.isolation import AdapterHandle
from xentcheck.references.rounding import round_to, ulp_error

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "python_adapter" / "my_adapter.py"

DTYPES: dict[str, np.dtype] = {name: case_dtype(name) for name in contract.DTYPES}
K = 5
N = 4


def _moderate(dtype: str, seed: int = 0) -> dict[str, Any]:
    """A fixed moderate case in ``dtype``: logits ~ N(0, 3), every kind of target, weights."""
    rng = np.random.default_rng(seed)
    cast = DTYPES[dtype]
    soft = rng.dirichlet(np.ones(K), N)
    return {
        "logits": (rng.normal(size=(N, K)) * 3).astype(cast),
        "index": np.array([0, 3, 4, 1], dtype=np.int64),
        "soft": soft.astype(cast),
        "unnormalized": (soft * 1.75).astype(cast),  # rows sum to 1.75: (sum y) p - y
        "weight": rng.uniform(0.5, 2.0, K).astype(cast),
    }


OPTION_SETS: dict[str, dict[str, Any]] = {
    "plain": {},
    "sum": {"reduction": "sum"},
    "mean": {"reduction": "mean"},
    "weight-mean": {"weight": "weight", "reduction": "mean"},
    "smoothing": {"label_smoothing": 0.1},
    "weight-smoothing-sum": {"weight": "weight", "label_smoothing": 0.25, "reduction": "sum"},
    "ignore-mean": {"ignore_index": 3, "reduction": "mean"},
}


def _options(name: str, case: dict[str, Any]) -> dict[str, Any]:
    return {k: case[v] if k == "weight" else v for k, v in OPTION_SETS[name].items()}


@pytest.fixture(scope="module")
def numpy_adapter() -> AdapterHandle:
    with open_adapter("numpy", isolated=False) as handle:  # in-process: same contract checks
        yield handle


def _call(handle: AdapterHandle, function: str, *arrays: np.ndarray, **options: Any) -> np.ndarray:
    __tracebackhide__ = True
    outcome = handle.call(function, *arrays, **options)
    if not outcome.ok:
        pytest.fail(f"{handle.name} {function}{options or ''}: {outcome.fault}")
    return outcome.value


def _assert_faithful(
    candidate: np.ndarray, exact: Any, what: str, inputs: np.ndarray, bound: float = 1.0
) -> None:
    __tracebackhide__ = True
    errors = np.atleast_1d(ulp_error(candidate, exact))
    graded = np.where(np.isnan(errors), 0.0, errors)  # NaN: gold says undefined, not graded
    if graded.size and graded.max() > bound:
        worst = np.unravel_index(np.argmax(graded), graded.shape)
        row = worst[0] if np.ndim(candidate) else 0
        hexes = [float(v).hex() for v in np.atleast_2d(inputs)[row].astype(np.float64)]
        pytest.fail(
            f"{what}: {graded.max():.3g} ulp > {bound} at {worst}; got "
            f"{np.atleast_1d(candidate)[worst]!r}, should be "
            f"{np.atleast_1d(round_to(exact, candidate.dtype))[worst]!r}; input row {hexes}"
        )


# --------------------------------------------------------------------------- numpy: faithful


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("function", ["softmax", "log_softmax", "logsumexp", "softmax_jacobian"])
def test_numpy_is_faithful_on_moderate_logits(
    numpy_adapter: AdapterHandle, dtype: str, function: str
) -> None:
    z = _moderate(dtype)["logits"]
    got = _call(numpy_adapter, function, z)
    _assert_faithful(got, getattr(gold, function)(z), f"numpy {function} {dtype}", z)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("target", "options"),
    [
        (target, options)
        for target in ("index", "soft", "unnormalized")
        for options in OPTION_SETS
        if target == "index" or "ignore_index" not in OPTION_SETS[options]  # indices only
    ],
)
def test_numpy_cross_entropy_and_gradient_are_faithful(
    numpy_adapter: AdapterHandle, dtype: str, target: str, options: str
) -> None:
    case = _moderate(dtype)
    z, t, kw = case["logits"], case[target], _options(options, case)
    for function in ("cross_entropy", "cross_entropy_grad"):
        got = _call(numpy_adapter, function, z, t, **kw)
        exact = getattr(gold, function)(z, t, **kw)
        _assert_faithful(got, exact, f"numpy {function} {dtype} {target} {options}", z)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ["index", "soft"])
def test_numpy_probability_route_is_faithful(
    numpy_adapter: AdapterHandle, dtype: str, target: str
) -> None:
    case = _moderate(dtype)
    probs = round_to(gold.softmax(case["logits"]), dtype)
    for function in ("cross_entropy_from_probs", "cross_entropy_grad_wrt_probs"):
        got = _call(numpy_adapter, function, probs, case[target])
        exact = getattr(gold, function)(probs, case[target])
        _assert_faithful(got, exact, f"numpy {function} {dtype} {target}", probs)


# --------------------------------------------------------------------------- numpy: §4

INF, NAN = np.inf, np.nan
EDGES: dict[str, tuple[list[list[float]], Any, dict[str, Any]]] = {
    # name: (logits, target, options), checked against gold in float64 and float32
    "-inf off target": ([[0.0, -INF, 1.0]], [2], {}),
    "-inf on target": ([[0.0, -INF, 1.0]], [1], {}),
    "-inf, soft target 0 there": ([[0.0, -INF, 1.0]], [[0.5, 0.0, 0.5]], {}),
    "-inf, smoothing puts mass there": ([[0.0, -INF, 1.0]], [0], {"label_smoothing": 0.1}),
    "NaN row": ([[0.0, NAN, 1.0], [1.0, 2.0, 3.0]], [0, 1], {"reduction": "sum"}),
    "+inf limit": ([[INF, 0.0, INF]], [0], {}),
    "all -inf row": ([[-INF, -INF], [0.0, 1.0]], [0, 1], {}),
    "K = 1": ([[3.0], [-2.0]], [0, 0], {"reduction": "mean"}),
    "dominant class, p - 1 without cancellation": (
        [[40.0, 0.0], [37.42994775023705, 0.0]],
        [0, 0],
        {},
    ),
    "huge spread": ([[1e30, -1e30, 0.0]], [1], {}),
    "unnormalized soft target": ([[0.0, 1.0]], [[2.0, 0.5]], {}),
    "ignored row with NaN logits": (
        [[NAN, 1.0], [0.0, 1.0]],
        [-100, 1],
        {"ignore_index": -100, "reduction": "mean"},
    ),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("edge", EDGES)
def test_numpy_follows_the_policy_table(
    numpy_adapter: AdapterHandle, edge: str, dtype: str
) -> None:
    rows, target, options = EDGES[edge]
    z = np.array(rows, dtype=dtype)
    t = np.array(target, dtype=np.int64 if np.ndim(target) == 1 else dtype)
    for function in ("softmax", "log_softmax", "logsumexp"):
        got = _call(numpy_adapter, function, z)
        _assert_faithful(got, getattr(gold, function)(z), f"numpy {function} [{edge}]", z)
    for function in ("cross_entropy", "cross_entropy_grad"):
        got = _call(numpy_adapter, function, z, t, **options)
        exact = getattr(gold, function)(z, t, **options)
        _assert_faithful(got, exact, f"numpy {function} [{edge}]", z)


def test_numpy_mean_over_nothing_is_nan_with_zero_gradient(numpy_adapter: AdapterHandle) -> None:
    z, t = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([-100, -100])
    options = {"ignore_index": -100, "reduction": "mean"}
    assert np.isnan(_call(numpy_adapter, "cross_entropy", z, t, **options))
    assert gold.cross_entropy(z, t, **options) is gold.UNDEFINED  # recorded, not graded
    np.testing.assert_array_equal(_call(numpy_adapter, "cross_entropy_grad", z, t, **options), 0)
    empty = np.zeros((0, 3))
    assert _call(numpy_adapter, "cross_entropy", empty, np.zeros(0, np.int64)).shape == (0,)
    assert _call(numpy_adapter, "softmax", empty).shape == (0, 3)


@pytest.mark.parametrize(
    ("function", "arrays", "message"),
    [
        ("cross_entropy", ([[0.0, 1.0]], [2]), "target\\[0\\] = 2 is out of range for 2 classes"),
        ("cross_entropy_grad", ([[0.0, 1.0]], [-1]), "target\\[0\\] = -1 is out of range"),
        ("cross_entropy", ([[0.0, 1.0]], [[1.5, -0.5]]), "negative probability at class 1"),
        ("cross_entropy_from_probs", ([[0.5, 0.5]], [[1.5, -0.5]]), "negative probability"),
        ("cross_entropy_from_probs", ([[1.5, -0.5]], [0]), "probs row 0 has a negative"),
    ],
)
def test_numpy_rejects_invalid_targets(
    numpy_adapter: AdapterHandle, function: str, arrays: tuple, message: str
) -> None:
    z = np.array(arrays[0])
    t = np.array(arrays[1], dtype=np.int64 if np.ndim(arrays[1]) == 1 else np.float64)
    outcome = numpy_adapter.call(function, z, t)
    assert outcome.fault is not None and outcome.fault.kind == "raised"  # raising conforms
    assert outcome.fault.reason.startswith("ValueError: ")
    assert re.search(message, outcome.fault.reason), outcome.fault.reason


def test_numpy_ignore_index_with_probabilities_is_an_error(numpy_adapter: AdapterHandle) -> None:
    outcome = numpy_adapter.call(
        "cross_entropy", np.zeros((1, 2)), np.array([[0.5, 0.5]]), ignore_index=0
    )
    assert outcome.fault.reason == "ValueError: ignore_index applies to class-index targets only"


def test_numpy_probability_route_does_not_clip(numpy_adapter: AdapterHandle) -> None:
    probs, t = np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([1, 0])
    np.testing.assert_array_equal(
        _call(numpy_adapter, "cross_entropy_from_probs", probs, t), [np.inf, np.log(2)]
    )
    np.testing.assert_array_equal(
        _call(numpy_adapter, "cross_entropy_grad_wrt_probs", probs, t), [[0, -np.inf], [-2, 0]]
    )


# --------------------------------------------------------------------------- smoke: the others

#: Smoke bound, in units of eps * (1 + |exact|) * (K + max|z|): the forward error of the
#: textbook softmax/log-softmax/CE formulas is a small multiple of u (n + 2 (max z - min z))
#: in the log domain (Blanchard, Higham & Higham, IMA J. Numer. Anal. 41(4), 2021), and
#: half-precision sums add about K u. Observed worst on these cases: 0.06 (seed, scipy and
#: the example alike); 1 leaves a 16x margin, and a wrong formula is off by O(1), which is
#: ~1/eps (1e2 in bfloat16, 1e15 in float64) of these units.
SMOKE_BOUND = 1.0


def _smoke_error(candidate: np.ndarray, exact: Any, logits: np.ndarray) -> float:
    x = np.asarray(round_to(exact, "float64"), dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    finite = np.isfinite(x)
    assert np.array_equal(np.isfinite(c), finite), "non-finite where gold is finite"
    eps = float(ml_dtypes.finfo(candidate.dtype).eps)
    scale = (1 + np.abs(x[finite])) * (logits.shape[1] + np.abs(logits.astype(float)).max())
    return float((np.abs(c[finite] - x[finite]) / (eps * scale)).max(initial=0.0))


def _smoke(handle: AdapterHandle, dtypes: tuple[str, ...]) -> dict[tuple[str, str, str], float]:
    """Call every provided function in every dtype; the worst smoke error of each."""
    worst = {}
    assert handle.dtypes == dtypes
    for dtype in dtypes:
        case = _moderate(dtype, seed=1)
        z = case["logits"]
        probs = round_to(gold.softmax(z), dtype)
        calls = {
            "logsumexp": [(z,)],
            "softmax": [(z,)],
            "log_softmax": [(z,)],
            "softmax_jacobian": [(z,)],
            "cross_entropy": [(z, case["index"]), (z, case["soft"])],
            "cross_entropy_grad": [(z, case["index"]), (z, case["soft"])],
            "cross_entropy_from_probs": [(probs, case["index"]), (probs, case["soft"])],
            "cross_entropy_grad_wrt_probs": [(probs, case["index"]), (probs, case["soft"])],
        }
        for function in handle.provides:
            for arrays in calls[function]:
                kind = "index" if len(arrays) > 1 and arrays[1].dtype.kind == "i" else "-"
                got = _call(handle, function, *arrays)
                error = _smoke_error(got, getattr(gold, function)(*arrays), z)
                worst[(dtype, function, kind)] = error
    return worst


@pytest.mark.parametrize(
    ("spec", "dtypes"),
    [
        ("numpy-seed", ("float64", "float32", "float16", "bfloat16")),
        ("scipy", ("float64", "float32", "float16")),
    ],
)
def test_smoke_against_gold(spec: str, dtypes: tuple[str, ...]) -> None:
    with open_adapter(spec, isolated=False) as handle:
        assert handle.unavailable is None
        worst = _smoke(handle, dtypes)
    failing = {key: err for key, err in worst.items() if err > SMOKE_BOUND}
    assert not failing, f"{spec}: smoke error above {SMOKE_BOUND}: {failing}"
    expected = 8 if spec == "numpy-seed" else 5
    assert len({function for _, function, _ in worst}) == expected


def test_example_adapter_loads_from_its_file_and_passes_smoke(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)  # the README runs it from the repository root
    with open_adapter("examples/python_adapter/my_adapter.py") as handle:  # a worker
        assert handle.name == "my-adapter"
        assert set(handle.provides) == {"softmax", "log_softmax", "cross_entropy"}
        worst = _smoke(handle, ("float64", "float32"))
    assert max(worst.values()) <= SMOKE_BOUND, worst


# --------------------------------------------------------------------------- the seed is literal


def test_seed_keeps_its_textbook_failures() -> None:
    with open_adapter("numpy-seed", isolated=False) as seed:
        overflow = _call(seed, "softmax", np.array([[1000.0, 0.0]]))
        assert np.isnan(overflow[0, 0])  # exp(1000) = inf, inf / inf: no max shift
        unnormalized = _call(seed, "cross_entropy_grad", np.zeros((1, 2)), np.array([[2.0, 0.0]]))
        np.testing.assert_array_equal(unnormalized, [[-1.5, 0.5]])  # p - y, not (sum y) p - y
        masked = _call(seed, "cross_entropy", np.array([[0.0, -np.inf]]), np.array([[1.0, 0.0]]))
        assert np.isnan(masked[0])  # 0 * log 0 = NaN, literally
        cancelled = _call(seed, "cross_entropy_grad", np.array([[40.0, 0.0]]), np.array([0]))
        assert cancelled[0, 0] == 0.0  # p - 1 cancels; the exact value is -4.25e-18
