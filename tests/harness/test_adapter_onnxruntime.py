"""The built-in adapter ``onnxruntime`` (``xentcheck.harness.adapters.onnxruntime_graphs``).

Each function on a small fixed case against values computed here with mpmath at 50 digits
(``mp.workdps(50)``), in every dtype the adapter declares; the glue (options mapped to the
ONNX attributes and inputs, probability targets not provided, a cached session reused for
another shape); and one conformance run through the CLI. ONNX Runtime runs in a worker of
its own (``framework_worker``), never in this process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import mpmath as mp
import numpy as np
import pytest
from framework_worker import WorkerAdapter, WorkerFault, framework_fixture, require  # noqa: F401

from xentcheck.harness.report import json_report

require("onnx", "onnxruntime")

REPO = Path(__file__).resolve().parents[2]

LOGITS = [[1.5, -0.25, 3.0, 0.75], [-2.0, 0.5, 0.5, 1.25], [0.0, 0.0, -3.5, 2.0]]
LABELS = [2, 0, 3]
WEIGHT = [0.5, 2.0, 1.0, 0.25]

#: Allowed error in ulps of the dtype. The operators are one or two roundings of a short
#: shifted sum in float64/float32; float16 is computed in float32 (or float64) and rounded
#: once: 0.5 ulp plus the wider type's error, so 1 ulp covers it. 4 ulps leave room for the
#: few roundings of an exp, a sum of 4 terms and a log, as the textbook bound does.
ULPS = {"float64": 4.0, "float32": 4.0, "float16": 1.0}

#: The dtypes ONNX Runtime's CPU provider runs (``onnxruntime_graphs.DTYPES``; bfloat16 has
#: no CPU kernel); test_options_the_library_lacks_are_not_provided checks the declaration.
DTYPES = ("float64", "float32", "float16")


@pytest.fixture(scope="module")
def adapter(framework: Any) -> WorkerAdapter:
    return framework("onnxruntime")


def _exact_rows(dtype: str) -> list[list[mp.mpf]]:
    """The logits as the dtype holds them, exactly, as mpmath numbers."""
    return [[mp.mpf(float(v)) for v in row] for row in np.array(LOGITS, dtype=dtype)]


def _lse(row: list[mp.mpf]) -> mp.mpf:
    return mp.log(mp.fsum(mp.exp(v) for v in row))


def _assert_close(got: np.ndarray, expected: list, dtype: str, scale: float = 0.0) -> None:
    """got within ULPS[dtype] ulps of the exact values, in ulps of max(|exact|, scale).

    ``scale`` is the size of what the result is computed from: log p = z − logsumexp(z)
    and the loss logsumexp(z) − z_t cancel, and their rounding error is one of the size
    of logsumexp(z), not of the (smaller) difference (the textbook bound says so too)."""
    __tracebackhide__ = True
    assert got.dtype == np.dtype(dtype), f"dtype {got.dtype}, should be {dtype}"
    want = np.array([float(v) for v in np.ravel(np.array(expected, dtype=object))])
    assert got.shape == np.shape(expected), f"shape {got.shape}, should be {np.shape(expected)}"
    size = np.maximum(np.abs(want), scale).astype(dtype)
    spacing = np.spacing(size).astype(np.float64)
    error = np.abs(got.astype(np.float64).ravel() - want) / spacing
    assert np.all(error <= ULPS[dtype]), (
        f"got {got.ravel()}, should be {want} ({error.max():.2f} ulp > {ULPS[dtype]})")


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_softmax_log_softmax_against_mpmath(adapter, dtype):
    x = np.array(LOGITS, dtype=dtype)
    with mp.workdps(50):
        rows = _exact_rows(dtype)
        lse = [_lse(r) for r in rows]
        log_p = [[v - s for v in r] for r, s in zip(rows, lse, strict=True)]
        p = [[mp.exp(v) for v in r] for r in log_p]
    _assert_close(adapter.logsumexp(x), lse, dtype)
    _assert_close(adapter.log_softmax(x), log_p, dtype, scale=float(max(lse)))
    _assert_close(adapter.softmax(x), p, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_cross_entropy_with_weight_and_ignore_index_against_mpmath(adapter, dtype, reduction):
    """PyTorch's (and ONNX's) formulas: loss_i = −w_{t_i} log p_{t_i}, 0 where t_i is
    ignored; the mean divides by the total weight of the rows kept."""
    x = np.array(LOGITS, dtype=dtype)
    labels = np.array(LABELS, dtype=np.int64)
    weight = np.array(WEIGHT, dtype=dtype)
    ignored = 0  # the second row's label
    with mp.workdps(50):
        rows = _exact_rows(dtype)
        w = [mp.mpf(float(v)) for v in weight]
        kept = [t != ignored for t in LABELS]
        lse = [_lse(r) for r in rows]
        losses = [w[t] * (s - r[t]) if k else mp.mpf(0)
                  for r, s, t, k in zip(rows, lse, LABELS, kept, strict=True)]
        total = mp.fsum(w[t] for t, k in zip(LABELS, kept, strict=True) if k)
        expected = {"none": losses, "sum": mp.fsum(losses),
                    "mean": mp.fsum(losses) / total}[reduction]
    got = adapter.cross_entropy(x, labels, weight=weight, ignore_index=ignored,
                                reduction=reduction)
    # scale: the largest logsumexp times the largest weight (the terms' size)
    _assert_close(got, expected, dtype, scale=float(max(lse) * max(w)))
    assert got.shape == (() if reduction != "none" else (3,))


def test_cross_entropy_without_options_is_the_plain_loss(adapter):
    x = np.array(LOGITS)
    with mp.workdps(50):
        rows = _exact_rows("float64")
        expected = [_lse(r) - r[t] for r, t in zip(rows, LABELS, strict=True)]
        scale = float(max(_lse(r) for r in rows))
    _assert_close(adapter.cross_entropy(x, np.array(LABELS)), expected, "float64", scale)


def test_probability_targets_are_not_provided(adapter):
    x = np.array(LOGITS)
    with pytest.raises(WorkerFault, match="class indices") as fault:
        adapter.cross_entropy(x, np.full(x.shape, 0.25))
    assert fault.value.kind == "not-provided"  # NotImplementedError, not a failure


def test_options_the_library_lacks_are_not_provided(adapter):
    accepted = adapter.provides["cross_entropy"]
    assert "label_smoothing" not in accepted
    assert {"weight", "ignore_index", "reduction"} <= set(accepted)
    with pytest.raises(WorkerFault) as fault:
        adapter.cross_entropy(np.array(LOGITS), np.array(LABELS), label_smoothing=0.25)
    assert fault.value.kind == "not-provided"
    assert set(adapter.provides) == {"logsumexp", "softmax", "log_softmax", "cross_entropy"}
    assert "cross_entropy_grad" not in adapter.provides  # inference only
    assert adapter.dtypes == DTYPES
    assert adapter.name == "onnxruntime" and adapter.dialect == "pytorch"


def test_a_cached_session_serves_another_shape(adapter):
    """One session per (operator, dtype, options), N and K symbolic in its graph: a call
    on another shape, and the first call again, give the same rows, bit for bit."""
    x = np.array(LOGITS, dtype=np.float32)
    first = adapter.softmax(x)
    np.testing.assert_array_equal(adapter.softmax(x[:1]), first[:1])
    np.testing.assert_array_equal(adapter.softmax(x), first)


def test_runs_through_the_harness(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "xentcheck.harness.cli", "run", "--adapter",
         "harness/adapters/onnxruntime_graphs.py", "--dtype", "float64", "--regime",
         "moderate", "--jobs", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    # 0 or 1: conformant or not (ONNX Runtime accepts class index -1 silently); not 2 or 3
    assert done.returncode in (0, 1), done.stderr
    data = json_report.load(tmp_path / "conformance.json")
    (entry,) = [a for a in data["adapters"] if a["name"] == "onnxruntime"]
    assert entry["verdict"] in ("pass", "fail")
    functions = {r["function"] for r in entry["results"]}
    assert {"logsumexp", "softmax", "log_softmax", "cross_entropy"} <= functions
