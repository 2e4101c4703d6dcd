"""The built-in adapter ``paddle`` (``xentcheck.harness.adapters.paddle_nn``) against exact values.

Every function the adapter provides, in each dtype it declares, on one small
well-conditioned case, in ulps of that dtype against ``references`` (mpmath at the
references' own precision, 110 bits); then the options PyTorch and paddle agree on, one
documented paddle rule (weights with soft labels), and a run through the CLI. paddle runs
in a worker of its own (``framework_worker``): its import crashes a process that holds
TensorFlow, so it is never imported here.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from framework_worker import WorkerAdapter, framework_fixture, require  # noqa: F401
from framework_worker import assert_ulps as _assert_ulps

import xentcheck.references as gold
from xentcheck.harness.report import json_report

require("paddle")

REPO = Path(__file__).resolve().parents[2]

# Logits of moderate size, max p < 0.6, no entry below 1e-3 of the largest in any output
# used here, so every output is a few well-conditioned roundings.
LOGITS = np.array([
    [0.5, -1.0, 2.0, 0.25],
    [1.5, 0.75, -0.5, 1.0],
    [-2.0, 0.0, 1.25, 0.5],
])
INDEX = np.array([2, 0, 3], dtype=np.int64)
# Soft targets with |p_j - y_j| >= max(p_j, y_j) / 2 in every gradient entry: at most one
# bit lost to cancellation. Each row sums to 1, as paddle's docs require of soft labels
# (for other sums paddle's gradient is p - y, not the loss's (sum y) p - y).
SOFT = np.array([
    [0.75, 0.25, 0.0, 0.0],
    [0.0, 0.0, 0.875, 0.125],
    [0.5, 0.5, 0.0, 0.0],
])
WEIGHT = np.array([1.0, 2.0, 0.5, 1.5])

# The textbook shifted formulas round a handful of times per output (exp, a sum of positive
# terms, one log or division): a relative error of a few u, i.e. <= 4 ulp of the result.
# Gradients and Jacobian entries combine two such values (p_i and p_j or p - y with one bit
# of cancellation at most here): twice that.
ULP_BOUND = 4.0
ULP_BOUND_DERIVATIVE = 8.0


@pytest.fixture(scope="module")
def adapter(framework: Any) -> WorkerAdapter:
    return framework("paddle")


def test_declares_what_paddle_has(adapter: WorkerAdapter) -> None:
    assert adapter.name == "paddle"
    assert adapter.version == importlib.metadata.version("paddlepaddle")
    assert adapter.dtypes == ("float64", "float32")  # CPU kernels: no float16/bfloat16
    assert adapter.dialect == "paddle"  # documented soft-label weights differ from torch's
    for missing in ("softmax_jvp", "log_softmax_jvp", "cross_entropy_jvp", "cross_entropy_hvp"):
        assert missing not in adapter.provides


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_values_and_derivatives_against_gold(
    adapter: WorkerAdapter, dtype: str
) -> None:
    dt = np.dtype(dtype)
    x = LOGITS.astype(dt)
    soft = SOFT.astype(dt)
    probs = np.array([[float(v) for v in row] for row in gold.softmax(x)]).astype(dt)
    checks = {
        "logsumexp": (adapter.logsumexp(x), gold.logsumexp(x), ULP_BOUND),
        "softmax": (adapter.softmax(x), gold.softmax(x), ULP_BOUND),
        "log_softmax": (adapter.log_softmax(x), gold.log_softmax(x), ULP_BOUND),
        "cross_entropy[index]": (adapter.cross_entropy(x, INDEX),
                                 gold.cross_entropy(x, INDEX), ULP_BOUND),
        "cross_entropy[soft]": (adapter.cross_entropy(x, soft),
                                gold.cross_entropy(x, soft), ULP_BOUND),
        "cross_entropy_grad[index]": (adapter.cross_entropy_grad(x, INDEX),
                                      gold.cross_entropy_grad(x, INDEX), ULP_BOUND_DERIVATIVE),
        "cross_entropy_grad[soft]": (adapter.cross_entropy_grad(x, soft),
                                     gold.cross_entropy_grad(x, soft), ULP_BOUND_DERIVATIVE),
        "softmax_jacobian": (adapter.softmax_jacobian(x), gold.softmax_jacobian(x),
                             ULP_BOUND_DERIVATIVE),
        "cross_entropy_from_probs[index]": (adapter.cross_entropy_from_probs(probs, INDEX),
                                            gold.cross_entropy_from_probs(probs, INDEX),
                                            ULP_BOUND),
        "cross_entropy_from_probs[soft]": (adapter.cross_entropy_from_probs(probs, soft),
                                           gold.cross_entropy_from_probs(probs, soft),
                                           ULP_BOUND),
        "cross_entropy_grad_wrt_probs": (adapter.cross_entropy_grad_wrt_probs(probs, soft),
                                         gold.cross_entropy_grad_wrt_probs(probs, soft),
                                         ULP_BOUND),
    }
    for what, (got, exact, bound) in checks.items():
        _assert_ulps(got, exact, bound, what, dt)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_options_paddle_shares_with_pytorch(
    adapter: WorkerAdapter, reduction: str
) -> None:
    """Class weights and a class as ignore_index with hard labels: PyTorch's formulas."""
    target = np.array([2, 1, 3], dtype=np.int64)  # row 1 is ignored
    options = {"weight": WEIGHT, "ignore_index": 1, "reduction": reduction}
    got = adapter.cross_entropy(LOGITS, target, **options)
    _assert_ulps(got, gold.cross_entropy(LOGITS, target, **options), ULP_BOUND,
                 f"cross_entropy({options})", np.dtype("float64"))
    grad = adapter.cross_entropy_grad(LOGITS, target, **options)
    exact = gold.cross_entropy_grad(LOGITS, target, **options)
    assert np.all(grad[1] == 0), f"ignored row's gradient: got {grad[1]}, should be 0"
    _assert_ulps(grad, exact, ULP_BOUND_DERIVATIVE, f"cross_entropy_grad({options})",
                 np.dtype("float64"))


def test_soft_label_weights_follow_paddles_documented_rule(
    adapter: WorkerAdapter,
) -> None:
    """Paddle's docs: with soft labels a row's loss is multiplied by sum_i w_i y_i (PyTorch
    weights each term instead); the adapter passes weight through, so that rule shows."""
    got = adapter.cross_entropy(LOGITS, SOFT, weight=WEIGHT)
    unweighted = gold.cross_entropy(LOGITS, SOFT)
    factor = SOFT @ WEIGHT  # exact: dyadic values
    exact = [u * float(f) for u, f in zip(unweighted, factor, strict=True)]
    _assert_ulps(got, np.array(exact, dtype=object), ULP_BOUND, "cross_entropy(weight, soft)",
                 np.dtype("float64"))


def test_a_run_through_the_cli_grades_paddle(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "xentcheck.harness.cli", "run", "--adapter",
               str(REPO / "harness" / "adapters" / "paddle_nn.py"), "--dtype", "float64",
               "--regime", "moderate", "--jobs", "1", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), f"exit {done.returncode}: {done.stderr[-2000:]}"
    report = json_report.load(tmp_path / "conformance.json")
    (entry,) = [a for a in report["adapters"] if a["name"] == "paddle"]
    assert entry["results"], "paddle was loaded but nothing was graded"
    graded = {r["function"] for r in entry["results"]}
    assert {"softmax", "cross_entropy", "cross_entropy_grad"} <= graded
