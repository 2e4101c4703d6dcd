"""The built-in adapter ``tinygrad`` (``xentcheck.harness.adapters.tinygrad_tensor``)
against exact values.

Every function the adapter provides on one small well-conditioned float64 case, and the
values in each narrower dtype it declares, in ulps of that dtype against ``references``
(mpmath at the references' own precision, 110 bits); then ``ignore_index`` with label
smoothing, what is not provided, and a run through the CLI. tinygrad compiles a kernel
per operation, shape and dtype (a few seconds each time here), so the cases are few. It
runs in a worker of its own (``framework_worker``), never in this process; without clang
its CPU device cannot compile, the built-in is unavailable and the tests of it skip.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from framework_worker import WorkerAdapter, WorkerFault, framework_fixture, require  # noqa: F401
from framework_worker import assert_ulps as _assert_ulps

import xentcheck.references as gold
from xentcheck.harness.report import json_report

require("tinygrad")
if shutil.which("clang") is None:  # its CPU device compiles with clang: unavailable here
    pytest.skip("tinygrad's CPU device needs clang (apt-get install clang)",
                allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]

# Logits of moderate size, max p < 0.6, no entry below 1e-3 of the largest in any output
# used here, so every output is a few well-conditioned roundings.
LOGITS = np.array([
    [0.5, -1.0, 2.0, 0.25],
    [1.5, 0.75, -0.5, 1.0],
    [-2.0, 0.0, 1.25, 0.5],
])
INDEX = np.array([2, 0, 3], dtype=np.int64)
# Soft targets with |(sum y) p_j - y_j| >= max((sum y) p_j, y_j) / 2 in every gradient
# entry: at most one bit lost to cancellation; the last row sums to 1.5.
SOFT = np.array([
    [0.75, 0.25, 0.0, 0.0],
    [0.0, 0.0, 0.875, 0.125],
    [0.75, 0.75, 0.0, 0.0],
])
VECTOR = np.array([
    [1.0, -0.5, 0.25, 2.0],
    [0.5, 0.5, -1.0, 0.0],
    [-2.0, 1.0, 0.5, 0.25],
])

# The textbook shifted formulas round a handful of times per output (exp, a sum of positive
# terms, one log or division): a relative error of a few u, i.e. <= 4 ulp of the result.
ULP_BOUND = 4.0
# Gradients and Jacobian entries combine two such values (p_i and p_j, or p - y with one
# bit of cancellation at most here): twice that.
ULP_BOUND_DERIVATIVE = 8.0
# Hessian-vector entries (sum u) p_i (v_i - <p, v>): the difference v_i - <p, v> cancels
# up to 2 bits on VECTOR, on top of the derivative's 8 ulp (measured: 13.2 ulp, float64).
ULP_BOUND_HVP = 32.0
# float16: tinygrad computes half-precision tensors in float16 (no float32 accumulation);
# on these 4-term rows that costs a few roundings of float16 (measured: 1.03 ulp).
ULP_BOUND_HALF = 4.0


@pytest.fixture(scope="module")
def adapter(framework: Any) -> WorkerAdapter:
    # no clang: tinygrad's CPU device cannot compile, the worker reports the built-in
    # unavailable and WorkerAdapter skips the module's tests of it
    return framework("tinygrad")


def test_declares_what_tinygrad_has(adapter: WorkerAdapter) -> None:
    assert adapter.name == "tinygrad"
    assert adapter.version == importlib.metadata.version("tinygrad")
    assert adapter.dtypes[:2] == ("float64", "float32")
    assert set(adapter.dtypes) <= {"float64", "float32", "float16", "bfloat16"}
    assert adapter.dialect == "pytorch"
    for missing in ("softmax_jvp", "log_softmax_jvp", "cross_entropy_jvp"):
        assert missing not in adapter.provides  # tinygrad has no forward mode
    for function in ("cross_entropy", "cross_entropy_grad", "cross_entropy_hvp"):
        assert "weight" not in adapter.provides[function]  # tinygrad has no class weights
        assert {"ignore_index", "label_smoothing", "reduction"} <= set(
            adapter.provides[function])


def test_every_function_against_gold_in_float64(
    adapter: WorkerAdapter,
) -> None:
    dt = np.dtype("float64")
    x = LOGITS
    probs = np.array([[float(v) for v in row] for row in gold.softmax(x)])
    checks = {
        "logsumexp": (adapter.logsumexp(x), gold.logsumexp(x), ULP_BOUND),
        "softmax": (adapter.softmax(x), gold.softmax(x), ULP_BOUND),
        "log_softmax": (adapter.log_softmax(x), gold.log_softmax(x), ULP_BOUND),
        "cross_entropy[index]": (adapter.cross_entropy(x, INDEX),
                                 gold.cross_entropy(x, INDEX), ULP_BOUND),
        "cross_entropy[soft]": (adapter.cross_entropy(x, SOFT),
                                gold.cross_entropy(x, SOFT), ULP_BOUND),
        "cross_entropy_grad[index]": (adapter.cross_entropy_grad(x, INDEX),
                                      gold.cross_entropy_grad(x, INDEX), ULP_BOUND_DERIVATIVE),
        "cross_entropy_grad[soft]": (adapter.cross_entropy_grad(x, SOFT),
                                     gold.cross_entropy_grad(x, SOFT), ULP_BOUND_DERIVATIVE),
        "softmax_jacobian": (adapter.softmax_jacobian(x), gold.softmax_jacobian(x),
                             ULP_BOUND_DERIVATIVE),
        "cross_entropy_hvp[soft]": (adapter.cross_entropy_hvp(x, SOFT, VECTOR),
                                    gold.cross_entropy_hvp(x, SOFT, VECTOR), ULP_BOUND_HVP),
        "cross_entropy_from_probs[index]": (adapter.cross_entropy_from_probs(probs, INDEX),
                                            gold.cross_entropy_from_probs(probs, INDEX),
                                            ULP_BOUND),
        "cross_entropy_grad_wrt_probs[index]": (
            adapter.cross_entropy_grad_wrt_probs(probs, INDEX),
            gold.cross_entropy_grad_wrt_probs(probs, INDEX), ULP_BOUND),
    }
    for what, (got, exact, bound) in checks.items():
        _assert_ulps(got, exact, bound, what, dt)


def test_values_in_the_narrower_dtypes(adapter: WorkerAdapter) -> None:
    for dtype in adapter.dtypes[1:]:
        dt = np.dtype(dtype) if dtype != "bfloat16" else np.dtype(ml_dtypes.bfloat16)
        x = LOGITS.astype(dt)
        bound = ULP_BOUND if dtype == "float32" else ULP_BOUND_HALF
        _assert_ulps(adapter.log_softmax(x), gold.log_softmax(x), bound, "log_softmax", dt)
        _assert_ulps(adapter.cross_entropy(x, INDEX), gold.cross_entropy(x, INDEX), bound,
                     "cross_entropy[index]", dt)


def test_ignore_index_with_label_smoothing_and_mean(
    adapter: WorkerAdapter,
) -> None:
    """A class as ignore_index, smoothing, mean over the rows kept: PyTorch's formula."""
    target = np.array([2, 1, 3], dtype=np.int64)  # row 1 is ignored
    options = {"ignore_index": 1, "label_smoothing": 0.25, "reduction": "mean"}
    _assert_ulps(adapter.cross_entropy(LOGITS, target, **options),
                 gold.cross_entropy(LOGITS, target, **options), ULP_BOUND,
                 f"cross_entropy({options})", np.dtype("float64"))
    grad = adapter.cross_entropy_grad(LOGITS, target, **options)
    assert np.all(grad[1] == 0), f"ignored row's gradient: got {grad[1]}, should be 0"
    _assert_ulps(grad, gold.cross_entropy_grad(LOGITS, target, **options),
                 ULP_BOUND_DERIVATIVE, f"cross_entropy_grad({options})", np.dtype("float64"))


def test_probability_targets_from_probs_are_not_provided(
    adapter: WorkerAdapter,
) -> None:
    probs = np.full((1, 4), 0.25)
    with pytest.raises(WorkerFault) as fault:
        adapter.cross_entropy_from_probs(probs, SOFT[:1])
    assert fault.value.kind == "not-provided"  # NotImplementedError, not a failure


def test_a_run_through_the_cli_grades_tinygrad(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "xentcheck.harness.cli", "run", "--adapter",
               str(REPO / "harness" / "adapters" / "tinygrad_tensor.py"), "--dtype", "float64",
               "--regime", "empty", "--jobs", "1", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), f"exit {done.returncode}: {done.stderr[-2000:]}"
    report = json_report.load(tmp_path / "conformance.json")
    (entry,) = [a for a in report["adapters"] if a["name"] == "tinygrad"]
    assert entry["results"], "tinygrad was loaded but nothing was graded"
    graded = {r["function"] for r in entry["results"]}
    assert {"softmax", "cross_entropy", "cross_entropy_grad"} <= graded
