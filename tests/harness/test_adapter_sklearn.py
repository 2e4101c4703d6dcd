"""The built-in adapter ``sklearn`` (``xentcheck.harness.adapters.sklearn_metrics``).

``cross_entropy_from_probs`` (``sklearn.metrics.log_loss`` per row) on a small fixed case
against values computed here with mpmath at 50 digits (``mp.workdps(50)``) in every dtype
the adapter declares; scikit-learn's documented clipping to [eps, 1 − eps]; what is not
provided; and one conformance run through the CLI. scikit-learn is never imported into the
pytest process: the built-in runs in a worker of its own (``framework_worker``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest
from framework_worker import WorkerAdapter, WorkerFault, framework_fixture, require  # noqa: F401

from xentcheck.harness.report import json_report

require("sklearn")

REPO = Path(__file__).resolve().parents[2]

PROBS = [[0.125, 0.5, 0.375], [0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]
LABELS = [1, 2, 0]

#: −log p in the dtype of p: numpy's log is within 1 ulp; the negation is exact; the sum
#: over one row is one term. 2 ulps leave room for the log of a rounded-once argument.
ULPS = {"float64": 2.0, "float32": 2.0, "float16": 2.0}

#: The dtypes the adapter declares (log_loss would turn bfloat16 into float64).
DTYPES = ("float64", "float32", "float16")


@pytest.fixture(scope="module")
def adapter(framework: Callable[[str], WorkerAdapter]) -> WorkerAdapter:
    return framework("sklearn")


def test_declared_dtypes(adapter):
    assert adapter.name == "sklearn" and adapter.dtypes == DTYPES


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_from_probs_against_mpmath(adapter, dtype):
    probs = np.array(PROBS, dtype=dtype)
    with mp.workdps(50):
        expected = [-mp.log(mp.mpf(float(probs[i, t]))) for i, t in enumerate(LABELS)]
    got = adapter.cross_entropy_from_probs(probs, np.array(LABELS, dtype=np.int64))
    assert got.dtype == np.dtype(dtype) and got.shape == (3,)
    want = np.array([float(v) for v in expected])
    error = np.abs(got.astype(np.float64) - want) / np.spacing(want.astype(dtype))
    assert np.all(error <= ULPS[dtype]), f"got {got}, should be {want} ({error.max()} ulp)"


@pytest.mark.parametrize("dtype", DTYPES)
def test_documented_clipping_to_machine_epsilon(adapter, dtype):
    """p = 0 at the target gives −log eps (eps = finfo(dtype).eps), not +inf; p = 1 gives
    −log(1 − eps), not 0: scikit-learn's documented clip."""
    eps = np.finfo(dtype).eps
    probs = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=dtype)
    got = adapter.cross_entropy_from_probs(probs, np.array([0, 0]))
    with mp.workdps(50):
        at_zero = float(-mp.log(mp.mpf(float(eps))))
        at_one = float(-mp.log(1 - mp.mpf(float(eps))))
    np.testing.assert_allclose(got.astype(np.float64), [at_zero, at_one], rtol=4 * eps)


def test_refusals_are_value_errors(adapter):
    """Each refusal is a ValueError raised in the worker: a "raised" fault naming it."""
    probs = np.array([[0.5, 0.5]])
    with pytest.raises(WorkerFault, match=r"^raised: ValueError: .*NaN"):
        adapter.cross_entropy_from_probs(np.array([[np.nan, 0.5]]), np.array([0]))
    with pytest.raises(WorkerFault, match=r"^raised: ValueError: "):
        adapter.cross_entropy_from_probs(probs, np.array([2]))  # not a class
    with pytest.raises(WorkerFault, match=r"^raised: ValueError: "):
        adapter.cross_entropy_from_probs(np.array([[-0.5, 1.5]]), np.array([0]))
    with pytest.raises(WorkerFault, match=r"^raised: ValueError: .*two labels"):
        adapter.cross_entropy_from_probs(np.array([[1.0]]), np.array([0]))  # K = 1


def test_what_is_not_provided(adapter):
    with pytest.raises(WorkerFault, match="probability targets") as fault:
        adapter.cross_entropy_from_probs(np.array(PROBS), np.array(PROBS))
    assert fault.value.kind == "not-provided"
    assert set(adapter.provides) == {"cross_entropy_from_probs"}
    for function in ("cross_entropy", "cross_entropy_grad_wrt_probs", "softmax"):
        with pytest.raises(WorkerFault) as fault:
            getattr(adapter, function)(np.array(PROBS), np.array(LABELS, dtype=np.int64))
        assert fault.value.kind == "not-provided", function
    assert adapter.dialect == "sklearn"
    assert adapter.cross_entropy_from_probs(np.zeros((0, 3)), np.zeros(0, np.int64)).shape == (0,)


def test_runs_through_the_harness(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "xentcheck.harness.cli", "run", "--adapter",
         "harness/adapters/sklearn_metrics.py", "--dtype", "float64", "--regime", "moderate",
         "--jobs", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode in (0, 1), done.stderr  # conformant or not; not 2 or 3
    data = json_report.load(tmp_path / "conformance.json")
    (entry,) = [a for a in data["adapters"] if a["name"] == "sklearn"]
    assert entry["verdict"] in ("pass", "fail")
    assert any(r["function"] == "cross_entropy_from_probs" and r["cases"] > 0
               for r in entry["results"])
