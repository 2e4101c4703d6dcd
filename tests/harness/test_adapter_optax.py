"""The ``optax`` and ``optax-safe`` built-in adapters (``harness/adapters/optax_losses.py``).

Every function each adapter provides, on one small well-conditioned case, in float64 and
float32, in ulps of the dtype against ``references`` (mpmath, exact to >= 110 bits); the
contract in the half formats; ``optax-safe``'s 0·log 0 = 0 on a −inf logit; and one run
through the harness. All calls share one shape per dtype and target kind, so JAX compiles
each function a few times only. optax and JAX are never imported into the pytest process:
each built-in runs in a worker of its own (``framework_worker``), started on first use.
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
from xentcheck.references.rounding import ulp_error

require("optax")

# One case: logits within a few units of each other (every p in [0.015, 0.64]), class
# indices and soft targets summing to 1 (optax's documented target domain), chosen so that
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

# A loss is a handful of rounded operations (exp, a sum of positive terms, a log, one
# subtraction that cancels little at these magnitudes): <= 4 ulp. Gradients, JVPs and HVPs
# combine two such values and lose up to a bit to cancellation here: 16 ulp leaves a
# factor 2.
VALUE_ULPS = 4.0
DERIVATIVE_ULPS = 16.0


def _target(kind: str, dtype: type) -> np.ndarray:
    return INDEX if kind == "index" else SOFT.astype(dtype)


# name -> (call of the adapter, call of gold, allowed ulps); each takes (z, target, dtype)
CHECKS: dict[str, tuple[Callable[..., Any], Callable[..., Any], float]] = {
    "cross_entropy": (lambda a, z, y, dt: a.cross_entropy(z, y),
                      lambda z, y, dt: gold.cross_entropy(z, y), VALUE_ULPS),
    "cross_entropy_grad": (lambda a, z, y, dt: a.cross_entropy_grad(z, y),
                           lambda z, y, dt: gold.cross_entropy_grad(z, y), DERIVATIVE_ULPS),
    "cross_entropy_jvp": (lambda a, z, y, dt: a.cross_entropy_jvp(z, y, TANGENT.astype(dt)),
                          lambda z, y, dt: gold.cross_entropy_jvp(z, y, TANGENT.astype(dt)),
                          DERIVATIVE_ULPS),
    "cross_entropy_hvp": (lambda a, z, y, dt: a.cross_entropy_hvp(z, y, TANGENT.astype(dt)),
                          lambda z, y, dt: gold.cross_entropy_hvp(z, y, TANGENT.astype(dt)),
                          DERIVATIVE_ULPS),
}


Adapters = Callable[[str], WorkerAdapter]


@pytest.fixture(scope="module")
def adapters(framework: Callable[[str], WorkerAdapter]) -> Adapters:
    """``adapters("optax")`` / ``adapters("optax-safe")``: the built-in in its worker,
    started on first use (so one that is unavailable skips only the tests that use it)."""
    started: dict[str, WorkerAdapter] = {}

    def adapter(name: str) -> WorkerAdapter:
        if name not in started:
            started[name] = framework(name)
        return started[name]

    return adapter


@pytest.mark.parametrize("name", ["optax", "optax-safe"])
def test_attributes(adapters: Adapters, name: str) -> None:
    adapter = adapters(name)
    # optax.__version__ is its distribution's version
    assert adapter.name == name and adapter.version == importlib.metadata.version("optax")
    assert adapter.dtypes == ("float64", "float32", "float16", "bfloat16")
    assert adapter.dialect == "optax"
    # optax has no softmax, logsumexp or Jacobian of its own: only the loss and its
    # derivatives are provided
    assert set(adapter.provides) == set(CHECKS)
    for function in CHECKS:  # optax's losses have no options
        assert not {"weight", "ignore_index", "label_smoothing", "reduction"} & set(
            adapter.provides[function])
    for what, call in [("softmax", lambda: adapter.softmax(LOGITS)),
                           ("logsumexp", lambda: adapter.logsumexp(LOGITS)),
                           ("reduction", lambda: adapter.cross_entropy(LOGITS, SOFT,
                                                                       reduction="sum"))]:
        with pytest.raises(WorkerFault) as fault:
            call()
        assert fault.value.kind == "not-provided", what


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kind", ["index", "soft"])
@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", ["optax", "optax-safe"])
def test_against_gold(adapters: Adapters, name: str, check: str, kind: str,
                      dtype: type) -> None:
    if name == "optax-safe" and kind == "index":
        pytest.skip("optax.safe_softmax_cross_entropy takes probability targets only")
    call, exact, allowed = CHECKS[check]
    logits = LOGITS.astype(dtype)
    target = _target(kind, dtype)
    got = call(adapters(name), logits, target, dtype)
    truth = exact(logits, target, dtype)  # gold: mpmath at >= 110 bits
    assert got.dtype == np.dtype(dtype) and got.shape == truth.shape, check
    errors = ulp_error(got, truth)
    assert float(np.max(errors)) <= allowed, (
        f"{name} {check}[{kind}] [{np.dtype(dtype).name}]: max {float(np.max(errors)):.3g} "
        f"ulp > {allowed}; got {got!r}")


def test_safe_refuses_class_indices(adapters: Adapters) -> None:
    """NotImplementedError: reported as "not provided" by the harness, never as a failure."""
    with pytest.raises(WorkerFault) as fault:
        adapters("optax-safe").cross_entropy(LOGITS, INDEX)
    assert fault.value.kind == "not-provided", str(fault.value)
    assert "NotImplementedError" in str(fault.value)


def test_zero_label_on_minus_inf_logit(adapters: Adapters) -> None:
    """optax-896: softmax_cross_entropy gives 0·(−inf) = NaN; the safe variant the exact
    −log p_1 = log(1 + e^-2) (mpmath at 50 digits: 0.126928011042972496...)."""
    logits = np.array([[-np.inf, 2.0, 0.0]])
    labels = np.array([[0.0, 1.0, 0.0]])
    assert np.isnan(adapters("optax").cross_entropy(logits, labels)[0])
    got = adapters("optax-safe").cross_entropy(logits, labels)
    assert abs(got[0] - 0.12692801104297249) <= 4 * np.spacing(0.12692801104297249)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_half_dtypes_kept(adapters: Adapters, dtype: type) -> None:
    """Half formats go in and come back in their dtype and shape (bfloat16 via ml_dtypes),
    close to the exact values (within 3%: a few ulps of an 8-bit significand)."""
    logits = LOGITS.astype(dtype)
    adapter = adapters("optax")
    for got, truth in [
        (adapter.cross_entropy(logits, INDEX), gold.cross_entropy(logits, INDEX)),
        (adapter.cross_entropy_grad(logits, SOFT.astype(dtype)),
         gold.cross_entropy_grad(logits, SOFT.astype(dtype))),
    ]:
        assert got.dtype == np.dtype(dtype) and got.shape == truth.shape
        want = np.array(truth, dtype=np.float64)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=0.03, atol=2e-3)


def test_runs_through_the_harness() -> None:
    """The built-in, in a worker of the runner's own, through the runner: every check
    family on the first two float64 cases of ``moderate`` (the whole regime takes several
    times longer and grades nothing else of the glue)."""
    cases = strategies.sample("moderate", dtype="float64", seed=0, size=2)
    report = runner.run(["optax"], dtypes=["float64"], regimes=[],
                        extra_cases=cases).to_dict()
    (entry,) = report["adapters"]
    assert entry["name"] == "optax" and entry["verdict"] in ("pass", "fail")
    assert entry["reason"] is None and entry["results"]
    assert set(entry["provides"]) == set(CHECKS)
    graded = {r["function"] for r in entry["results"] if r["check"] == "value"}
    assert "cross_entropy" in graded
