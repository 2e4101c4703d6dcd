"""The ``tensorflow`` built-in adapter (``harness/adapters/tensorflow_nn.py``) against gold.

Every function the adapter provides, on one small well-conditioned case, in float64 and
float32, in ulps of the dtype against ``references`` (mpmath, exact to >= 110 bits); the
contract (dtype and shape) in the half formats; TF's refusal of a bad class index; and one
run through the harness. TensorFlow is never imported into the pytest process (PaddlePaddle's
import segfaults after TensorFlow's): the built-in runs in a worker of its own
(``framework_worker``), which imports TensorFlow once for the module (~10-20 s).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from framework_worker import WorkerAdapter, WorkerFault, framework_fixture, require  # noqa: F401

import xentcheck.references as gold
from xentcheck.harness import runner, strategies
from xentcheck.harness.adapters.contract import FUNCTIONS, FUNCTIONS_WITH_OPTIONS
from xentcheck.references.rounding import ulp_error

require("tensorflow")

# One case: logits within a few units of each other (every p in [0.015, 0.64]), class
# indices and soft targets summing to 1 (TF's documented target domain), chosen so that
# every soft-gradient entry has |p - y| >= 0.46 max(p, y): at most one bit cancels.
LOGITS = np.array([
    [0.5, -1.25, 2.0, 0.75, -0.3],
    [1.5, 1.0, -0.5, 0.25, 2.25],
    [-2.0, 0.0, 0.5, 1.75, -0.75],
])
INDEX = np.array([2, 0, 4], dtype=np.int64)
SOFT = np.array([
    [0.25, 0.0, 0.25, 0.375, 0.125],
    [0.0, 0.75, 0.0, 0.25, 0.0],
    [0.125, 0.0, 0.5, 0.125, 0.25],
])
TANGENT = np.array([
    [1.0, -0.5, 0.25, 0.0, 2.0],
    [-1.0, 0.5, 0.75, -0.25, 0.125],
    [0.5, 0.5, -1.5, 1.0, -0.375],
])

# Each output is a handful of rounded operations (exp, a sum of positive terms, a division
# or log, the autodiff products) whose relative errors add to a few u (u = 2^-p): <= 4 ulp
# of a value that does not cancel. Gradients, Jacobians, JVPs and HVPs combine two such
# values and lose up to a bit to cancellation on this case: 16 ulp leaves a factor 2.
VALUE_ULPS = 4.0
DERIVATIVE_ULPS = 16.0


def _probs(dtype: type) -> np.ndarray:
    """The exact softmax of LOGITS, rounded to ``dtype``: valid inputs for the from-probs
    route (gold is then computed from these very probabilities)."""
    return np.asarray(gold.round_to(gold.softmax(LOGITS), dtype))


# name -> (call of the adapter, call of gold, allowed ulps); both take the case's dtype
CHECKS: dict[str, tuple[Callable[..., Any], Callable[..., Any], float]] = {
    "logsumexp": (lambda a, z, dt: a.logsumexp(z), lambda z, dt: gold.logsumexp(z),
                  VALUE_ULPS),
    "softmax": (lambda a, z, dt: a.softmax(z), lambda z, dt: gold.softmax(z), VALUE_ULPS),
    "log_softmax": (lambda a, z, dt: a.log_softmax(z), lambda z, dt: gold.log_softmax(z),
                    VALUE_ULPS),
    "cross_entropy[index]": (lambda a, z, dt: a.cross_entropy(z, INDEX),
                             lambda z, dt: gold.cross_entropy(z, INDEX), VALUE_ULPS),
    "cross_entropy[soft]": (lambda a, z, dt: a.cross_entropy(z, SOFT.astype(dt)),
                            lambda z, dt: gold.cross_entropy(z, SOFT.astype(dt)), VALUE_ULPS),
    "cross_entropy_grad[index]": (lambda a, z, dt: a.cross_entropy_grad(z, INDEX),
                                  lambda z, dt: gold.cross_entropy_grad(z, INDEX),
                                  DERIVATIVE_ULPS),
    "cross_entropy_grad[soft]": (lambda a, z, dt: a.cross_entropy_grad(z, SOFT.astype(dt)),
                                 lambda z, dt: gold.cross_entropy_grad(z, SOFT.astype(dt)),
                                 DERIVATIVE_ULPS),
    "softmax_jacobian": (lambda a, z, dt: a.softmax_jacobian(z),
                         lambda z, dt: gold.softmax_jacobian(z), DERIVATIVE_ULPS),
    "softmax_jvp": (lambda a, z, dt: a.softmax_jvp(z, TANGENT.astype(dt)),
                    lambda z, dt: gold.softmax_jvp(z, TANGENT.astype(dt)), DERIVATIVE_ULPS),
    "log_softmax_jvp": (lambda a, z, dt: a.log_softmax_jvp(z, TANGENT.astype(dt)),
                        lambda z, dt: gold.log_softmax_jvp(z, TANGENT.astype(dt)),
                        DERIVATIVE_ULPS),
    "cross_entropy_jvp": (lambda a, z, dt: a.cross_entropy_jvp(z, INDEX, TANGENT.astype(dt)),
                          lambda z, dt: gold.cross_entropy_jvp(z, INDEX, TANGENT.astype(dt)),
                          DERIVATIVE_ULPS),
    "cross_entropy_hvp": (lambda a, z, dt: a.cross_entropy_hvp(z, SOFT.astype(dt),
                                                               TANGENT.astype(dt)),
                          lambda z, dt: gold.cross_entropy_hvp(z, SOFT.astype(dt),
                                                               TANGENT.astype(dt)),
                          DERIVATIVE_ULPS),
    "cross_entropy_from_probs[index]": (
        lambda a, z, dt: a.cross_entropy_from_probs(_probs(dt), INDEX),
        lambda z, dt: gold.cross_entropy_from_probs(_probs(dt), INDEX), VALUE_ULPS),
    "cross_entropy_from_probs[soft]": (
        lambda a, z, dt: a.cross_entropy_from_probs(_probs(dt), SOFT.astype(dt)),
        lambda z, dt: gold.cross_entropy_from_probs(_probs(dt), SOFT.astype(dt)), VALUE_ULPS),
    "cross_entropy_grad_wrt_probs": (
        lambda a, z, dt: a.cross_entropy_grad_wrt_probs(_probs(dt), SOFT.astype(dt)),
        lambda z, dt: gold.cross_entropy_grad_wrt_probs(_probs(dt), SOFT.astype(dt)),
        VALUE_ULPS),
}


#: The distributions TensorFlow's CPU builds are published as (one is installed).
TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos",
                    "tf-nightly", "tf-nightly-cpu")


def _installed_tf_version() -> str | None:
    """The installed TensorFlow's version, from its distribution's metadata (no import)."""
    for distribution in TF_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@pytest.fixture(scope="module")
def adapter(framework: Callable[[str], WorkerAdapter]) -> WorkerAdapter:
    return framework("tensorflow")


def test_attributes(adapter: WorkerAdapter) -> None:
    assert adapter.name == "tensorflow"
    installed = _installed_tf_version()
    if installed is not None:  # tf.__version__ is its distribution's version
        assert adapter.version == installed
    assert adapter.dtypes == ("float64", "float32", "float16", "bfloat16")
    assert adapter.dialect == "tensorflow"
    assert set(adapter.provides) == set(FUNCTIONS)  # every function of the contract
    # TF's cross-entropies have no options: none is accepted
    for function in FUNCTIONS_WITH_OPTIONS:
        assert not {"weight", "ignore_index", "label_smoothing", "reduction"} & set(
            adapter.provides[function])
    with pytest.raises(WorkerFault) as fault:
        adapter.cross_entropy(LOGITS, INDEX, reduction="sum")
    assert fault.value.kind == "not-provided"


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("check", list(CHECKS))
def test_against_gold(adapter: WorkerAdapter, check: str, dtype: type) -> None:
    call, exact, allowed = CHECKS[check]
    logits = LOGITS.astype(dtype)
    got = call(adapter, logits, dtype)
    truth = exact(logits, dtype)  # gold: mpmath at >= 110 bits
    assert got.dtype == np.dtype(dtype) and got.shape == truth.shape, check
    errors = ulp_error(got, truth)
    assert float(np.max(errors)) <= allowed, (
        f"{check} [{np.dtype(dtype).name}]: max {float(np.max(errors)):.3g} ulp > {allowed}; "
        f"got {got!r}")


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_half_dtypes_kept(adapter: WorkerAdapter, dtype: type) -> None:
    """Half formats go in and come back in their dtype and shape (bfloat16 via ml_dtypes),
    close to the exact values (within 2% here: a few ulps of an 8-bit significand)."""
    logits = LOGITS.astype(dtype)
    for got, truth in [
        (adapter.softmax(logits), gold.softmax(logits)),
        (adapter.cross_entropy(logits, INDEX), gold.cross_entropy(logits, INDEX)),
        (adapter.cross_entropy_grad(logits, SOFT.astype(dtype)),
         gold.cross_entropy_grad(logits, SOFT.astype(dtype))),
    ]:
        assert got.dtype == np.dtype(dtype) and got.shape == truth.shape
        want = np.array(truth, dtype=np.float64)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=0.02, atol=1e-3)


def test_bad_class_index_raises(adapter: WorkerAdapter) -> None:
    """TF's sparse cross-entropy refuses a class index out of [0, K) on the CPU
    (``tf.errors.InvalidArgumentError``, raised in the worker)."""
    with pytest.raises(WorkerFault) as fault:
        adapter.cross_entropy(LOGITS, np.array([2, 5, 0], dtype=np.int64))
    assert fault.value.kind == "raised"
    assert str(fault.value).startswith("raised: InvalidArgumentError:"), str(fault.value)


def test_runs_through_the_harness() -> None:
    """The built-in, in a worker of the runner's own, through the runner: every check
    family on the first two float64 cases of ``moderate`` (the whole regime takes several
    times longer and grades nothing else of the glue)."""
    cases = strategies.sample("moderate", dtype="float64", seed=0, size=2)
    report = runner.run(["tensorflow"], dtypes=["float64"], regimes=[],
                        extra_cases=cases).to_dict()
    (entry,) = report["adapters"]
    assert entry["name"] == "tensorflow" and entry["verdict"] in ("pass", "fail")
    assert entry["reason"] is None and entry["results"]
    assert {"softmax", "cross_entropy", "cross_entropy_hvp"} <= set(entry["provides"])
    graded = {r["function"] for r in entry["results"] if r["check"] == "value"}
    assert {"softmax", "log_softmax", "cross_entropy"} <= graded
