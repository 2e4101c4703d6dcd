"""Dialects in the harness: each dialect's careful numpy passes under it, and every rule
decides a verdict both ways (the PyTorch-convention numpy fails under the dialect where
the rule applies, and the dialect's numpy fails under PyTorch's convention); a dialect's
truth takes from PyTorch's only what the dialect's rules leave alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from xentcheck.harness import runner, truth
from xentcheck.harness.adapters import numpy_stable
from xentcheck.harness.adapters.contract import AdapterSpecError
from xentcheck.harness.adapters.numpy_dialects import NumpyInDialect
from xentcheck.harness.adapters.registry import describe
from xentcheck.harness.report import markdown
from xentcheck.references import dialects


def _run(adapter: Any, *regimes: str) -> runner.AdapterReport:
    return runner.run([adapter], dtypes=("float64",), regimes=regimes).adapters[0]


def _failing(report: runner.AdapterReport) -> set[tuple[str, str]]:
    return {(r.check, r.function) for r in report.results.values() if not r.passed}


def _rows(report: runner.AdapterReport, grade: str) -> int:
    return sum(r.grades.get(grade, 0) for r in report.results.values())


class Declared(NumpyInDialect):
    """The numpy of dialect ``computes``, declaring dialect ``declares``."""

    def __init__(self, computes: str, declares: str) -> None:
        super().__init__(computes)
        self._computes = computes
        self.dialect = declares
        self.name = f"numpy-{computes}-as-{declares}"

    def _rules(self) -> dialects.Dialect:
        return dialects.dialect(self._computes)


def test_soft_label_weight_decides_the_verdict_both_ways():
    own = _run(NumpyInDialect("paddle"), "moderate")
    assert own.dialect == "paddle" and own.verdict == "pass", _failing(own)
    assert ("value", "cross_entropy") in _failing(_run(Declared("pytorch", "paddle"),
                                                       "moderate"))
    assert ("value", "cross_entropy") in _failing(_run(Declared("paddle", "pytorch"),
                                                       "moderate"))


def test_clipping_decides_the_verdict_both_ways():
    own = _run(NumpyInDialect("sklearn"), "dominant")
    assert own.verdict == "pass", _failing(own)
    assert ("value", "cross_entropy_from_probs") in _failing(
        _run(Declared("pytorch", "sklearn"), "dominant"))
    assert ("value", "cross_entropy_from_probs") in _failing(
        _run(Declared("sklearn", "pytorch"), "dominant"))


def test_a_documented_refusal_is_recorded_not_failed():
    own = _run(NumpyInDialect("sklearn"), "nonfinite")
    assert own.verdict == "pass", _failing(own)
    assert _rows(own, "refused") > 0
    refusing = _run(Declared("sklearn", "pytorch"), "nonfinite")
    assert ("value", "cross_entropy_from_probs") in _failing(refusing)
    assert _rows(refusing, "refused") == 0


class PMinusY(NumpyInDialect):
    """A gradient p − y: right only where the target sums to 1."""

    def __init__(self, declares: str) -> None:
        super().__init__(declares)

    def cross_entropy_grad(self, logits: np.ndarray, target: np.ndarray, *,
                           reduction: str = "none") -> np.ndarray:
        if np.asarray(target).dtype.kind in "iu":
            raise NotImplementedError
        grad = numpy_stable.softmax(logits).astype(np.float64) - target
        if reduction == "mean":
            grad = grad / len(grad)
        return grad.astype(logits.dtype)


def test_targets_outside_the_domain_are_recorded_not_graded():
    run = runner.run([PMinusY("tensorflow")], dtypes=("float64",), regimes=("moderate",))
    outside = run.adapters[0]
    (row,) = markdown.difference_rows(run.to_dict())  # the report's tally, per rule
    assert row[:2] == ["numpy-tensorflow", "target-distribution"]
    assert row[5] == f"{_rows(outside, 'outside contract')} outside contract"
    assert outside.verdict == "pass", _failing(outside)
    assert _rows(outside, "outside contract") > 0
    graded = [r for r in outside.results.values()
              if r.check == "gradient" and r.grades.get("outside contract", 0) < r.cases]
    assert graded  # the rows that are distributions are still graded
    assert ("gradient", "cross_entropy_grad") in _failing(_run(PMinusY("pytorch"), "moderate"))


def test_one_class_is_outside_the_sklearn_contract():
    report = _run(NumpyInDialect("sklearn"), "single-class")
    assert report.verdict == "pass" and _rows(report, "outside contract") > 0


def test_an_unknown_dialect_is_a_one_line_spec_error():
    class Keras:
        dialect = "keras"

        def softmax(self, logits: np.ndarray) -> np.ndarray:
            return numpy_stable.softmax(logits)

    with pytest.raises(AdapterSpecError, match="unknown dialect 'keras'"):
        describe(Keras(), spec="<keras>")
    assert describe(numpy_stable, spec="numpy").dialect == "pytorch"


def test_dialects_share_what_they_leave_as_pytorchs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The truths of a run over several dialects take from each case's PyTorch-convention
    truth what their rules leave as PyTorch's, computed once (the case's softmax below),
    and the reports are those of truths that share nothing. A plant that shares what a
    rule changes too (soft-label weights, clipped probabilities) changes them."""
    made: list[truth.Truth] = []
    real_init = truth.Truth.__init__

    def counting_init(self: truth.Truth, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    def adapters() -> list[Any]:  # (a class each: a run refuses one spec twice)
        return [type(f"Numpy_{d}", (NumpyInDialect,), {})(d)
                for d in ("pytorch", "paddle", "sklearn")]

    settings: dict[str, Any] = dict(dtypes=("float64",), regimes=("moderate", "dominant"))
    monkeypatch.setattr(truth.Truth, "__init__", counting_init)
    shared = runner.run(adapters(), **settings).to_dict()
    ruled = [t for t in made if t.dialect.name != "pytorch"]
    assert ruled and all(t.base is not None and t.base.dialect.name == "pytorch"
                         for t in ruled)
    asked = [t for t in ruled if "softmax" in t.base._values]
    assert asked and not any("softmax" in t._values for t in asked)
    monkeypatch.undo()

    with monkeypatch.context() as m:
        m.setattr(truth.Truth, "_shares", lambda self, function: False)
        apart = runner.run(adapters(), **settings).to_dict()
    assert shared["adapters"] == apart["adapters"]
    with monkeypatch.context() as m:  # the plant: the rules ignored when sharing
        m.setattr(truth.Truth, "_shares", lambda self, function: self.base is not None)
        planted = runner.run(adapters(), **settings).to_dict()
    assert planted["adapters"] != apart["adapters"]
