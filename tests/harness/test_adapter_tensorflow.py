"""The ``tensorflow`` built-in adapter (``harness/adapters/tensorflow_nn.py``) against gold.

Every function the adapter provides, on one small well-conditioned case, in float64 and
float32, in ulps of the dtype against ``references`` (mpmath, exact to >= 110 bits); the
contract (dtype and shape) in the half formats; TF's refusal of a bad class index; and one
in-process run through the harness. TensorFlow is imported once for the module (~10-20 s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest

pytest.importorskip("tensorflow")

import references as gold  # noqa: E402 - after the importorskip
from harness import runner, strategies  # noqa: E402
from harness.adapters import tensorflow_nn  # noqa: E402
from references.rounding import ulp_error  # noqa: E402

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


@pytest.fixture(scope="module")
def adapter() -> tensorflow_nn.TensorFlowAdapter:
    return tensorflow_nn.load()


def test_attributes(adapter: tensorflow_nn.TensorFlowAdapter) -> None:
    import tensorflow as tf

    assert adapter.name == "tensorflow"
    assert adapter.version == tf.__version__
    assert adapter.dtypes == ("float64", "float32", "float16", "bfloat16")
    assert adapter.dialect == "tensorflow"
    # TF's cross-entropies have no options: none may appear in the signature
    import inspect

    for function in ("cross_entropy", "cross_entropy_grad", "cross_entropy_jvp",
                     "cross_entropy_hvp"):
        parameters = inspect.signature(getattr(adapter, function)).parameters
        assert not {"weight", "ignore_index", "label_smoothing", "reduction"} & set(parameters)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("check", list(CHECKS))
def test_against_gold(adapter: tensorflow_nn.TensorFlowAdapter, check: str, dtype: type) -> None:
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
def test_half_dtypes_kept(adapter: tensorflow_nn.TensorFlowAdapter, dtype: type) -> None:
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


def test_bad_class_index_raises(adapter: tensorflow_nn.TensorFlowAdapter) -> None:
    """TF's sparse cross-entropy refuses a class index out of [0, K) on the CPU."""
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError):
        adapter.cross_entropy(LOGITS, np.array([2, 5, 0], dtype=np.int64))


def test_runs_through_the_harness(adapter: tensorflow_nn.TensorFlowAdapter) -> None:
    """The loaded adapter, in this process, through the runner: every check family on
    the first two float64 cases of ``moderate`` (the whole regime takes several times
    longer and grades nothing else of the glue)."""
    cases = strategies.sample("moderate", dtype="float64", seed=0, size=2)
    report = runner.run([adapter], dtypes=["float64"], regimes=[],
                        extra_cases=cases).to_dict()
    (entry,) = report["adapters"]
    assert entry["name"] == "tensorflow" and entry["verdict"] in ("pass", "fail")
    assert entry["reason"] is None and entry["results"]
    assert {"softmax", "cross_entropy", "cross_entropy_hvp"} <= set(entry["provides"])
    graded = {r["function"] for r in entry["results"] if r["check"] == "value"}
    assert {"softmax", "log_softmax", "cross_entropy"} <= graded
