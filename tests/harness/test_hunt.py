"""Worst-case hunting: Hypothesis finds, shrinks and pins what an adapter gets wrong.

A planted unshifted softmax (exp overflows past log(max)) must be caught and shrunk to a
minimal case whose reproducer replays the failure; the careful ``numpy`` built-in must
come out clean; a hunt must be the same for the same seed; pinning must dedupe, write
atomically, and give back cases that every run replays.
"""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path

import hypothesis
import numpy as np
import pytest

from xentcheck.harness import grading, hunt, repro, runner, strategies
from xentcheck.harness.adapters.registry import open_adapter
from xentcheck.harness.cases import Case
from xentcheck.harness.strategies import overflow_edge, sample

HERE = Path(__file__).resolve()
FIXTURES = HERE.parent / "fixtures"
LOG_MAX_FLOAT64 = overflow_edge("float64")  # 709.78: exp overflows above it


class Unshifted:
    """Planted bug: softmax without the max shift, so exp(z) overflows past log(max)."""

    name = "unshifted"
    dtypes = ("float64", "float32")

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            e = np.exp(logits)
            return e / e.sum(axis=1, keepdims=True)


class ReductionOnly:
    """A correct cross-entropy that accepts ``reduction`` and no other option."""

    name = "reduction-only"
    dtypes = ("float64",)

    def cross_entropy(self, logits: np.ndarray, target: np.ndarray,
                      reduction: str = "none") -> np.ndarray:
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        if target.dtype.kind in "iu":
            losses = -np.take_along_axis(log_p, target[:, None], axis=1)[:, 0]
        else:
            losses = -(target * log_p).sum(axis=1)
        if reduction == "none":
            return losses
        return losses.sum() if reduction == "sum" else losses.mean()


class LogOfOnePlus:
    """Planted bug: logsumexp as m + log(sum exp(z - m)), the maximum's 1 inside the log:
    where every other term is small, log(1 + t) loses t's digits (log1p keeps them)."""

    name = "log-of-one-plus"
    dtypes = ("float32", "float16")

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            m = logits.max(axis=1)
            return m + np.log(np.exp(logits - m[:, None]).sum(axis=1))


def replayed_case(command: str) -> Case:
    """The case a reproducer line carries (its last shell word)."""
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "xentcheck.harness.repro"], command
    return Case.from_json(words[-1])


# --------------------------------------------------------------------- planted bug


def test_unshifted_softmax_overflow_is_found_and_shrunk() -> None:
    result = hunt.hunt(Unshifted(), "softmax", dtype="float64", regime="overflow-edge",
                       max_examples=30, seed=0)
    assert result.found_failure, result.summary()
    failing = result.failing
    assert failing is not None
    # shrunk: one row, a handful of classes, and a logit past log(max) = 709.78
    assert failing.num_rows == 1 and failing.num_classes <= 2, failing
    assert np.max(failing.logits) > LOG_MAX_FLOAT64, failing
    assert not np.all(np.isfinite(Unshifted().softmax(failing.logits)))
    report = result.failure_report
    assert report is not None and report.ulp == math.inf and report.got is not None
    assert report.got.startswith("nan"), report
    assert "xentcheck.harness.repro" in result.reproducer and " softmax " in result.reproducer
    assert replayed_case(result.reproducer).same_as(failing)
    assert result.max_ulp == math.inf and result.worst_grade == "broken"


def test_unshifted_softmax_is_caught_over_all_regimes() -> None:
    result = hunt.hunt(Unshifted(), "softmax", dtype="float32", max_examples=40, seed=0)
    assert result.found_failure, result.summary()
    assert result.failing is not None and result.failing.num_classes <= 2
    assert np.max(result.failing.logits.astype(np.float64)) > overflow_edge("float32")


def test_reproducer_of_a_hunted_failure_replays_it(capsys: pytest.CaptureFixture) -> None:
    spec = f"{HERE}:Unshifted"  # a spec the reproducer can load again
    result = hunt.hunt(spec, "softmax", dtype="float64", regime="overflow-edge",
                       max_examples=20, seed=0)
    assert result.found_failure and result.reproducer is not None
    words = shlex.split(result.reproducer)
    assert words[3:5] == [spec, "softmax"]
    assert repro.main(words[3:]) == 0
    printed = capsys.readouterr().out
    assert "inf ulp" in printed, printed


def test_bit_patterns_reach_the_near_zero_class_unprompted() -> None:
    """Hunting the dtype's bit patterns (regime ``bits``: sign, exponent and mantissa
    drawn independently) finds what the ``near-zero`` class of inputs was added for: a
    row whose maximum is 0 with the rest below it, where log(1 + t) drops t's digits.
    A few seeds of a short search (deterministic for each seed): the class is reached."""
    found = []
    for seed in range(4):
        result = hunt.hunt(LogOfOnePlus(), "logsumexp", dtype="float16", regime="bits",
                           profile="strict", max_examples=150, seed=seed)
        if result.found_failure:
            found.append(result.failing.logits.astype(np.float64)[0])
    assert any(row.max() == 0 and np.all(row[row != 0] < 0) for row in found), found


def test_hunting_draws_bit_patterns_when_no_regime_is_named() -> None:
    drawn = hypothesis.find(strategies.cases(dtype="float16"), lambda c: c.regime == "bits",
                            settings=hypothesis.settings(max_examples=2000, database=None))
    assert drawn.regime == "bits"
    assert "bits" not in runner.DEFAULT_REGIMES  # a search space, not a default sample


# --------------------------------------------------------------------- correct adapters


@pytest.mark.parametrize(("function", "dtype"), [("softmax", "float64"),
                                                 ("cross_entropy", "float32")])
def test_numpy_builtin_has_no_failure(function: str, dtype: str) -> None:
    handle = open_adapter("numpy")
    try:
        result = hunt.hunt(handle, function, dtype=dtype, max_examples=25, seed=0)
        assert handle.provides  # a handle it did not open is left open
    finally:
        handle.close()
    assert not result.found_failure and result.failing is None, result.summary()
    assert result.worst is not None and result.examples > 0
    assert result.max_ulp is not None and result.max_ulp <= 1, result.summary()
    assert result.reproducer is not None and replayed_case(result.reproducer).same_as(
        result.worst)


def test_unsupported_options_are_left_out_not_reported() -> None:
    result = hunt.hunt(ReductionOnly(), "cross_entropy", dtype="float64", regime="moderate",
                       max_examples=25, seed=2)
    assert not result.found_failure, result.summary()
    assert result.worst is not None and set(result.worst.options) <= {"reduction"}


def test_target_is_given_both_observations(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, float]] = []
    real = hunt.hypothesis.target

    def spy(observation: float, *, label: str = "") -> float:
        seen.append((label, observation))
        return real(observation, label=label)

    monkeypatch.setattr(hunt.hypothesis, "target", spy)
    hunt.hunt(Unshifted(), "softmax", dtype="float64", regime="large", max_examples=10)
    labels = {label for label, _ in seen}
    assert labels == {"softmax: log2 failure margin", "softmax: log2 ulp"}
    assert all(math.isfinite(v) and abs(v) <= hunt.LOG2_CAP for _, v in seen)
    assert max(v for label, v in seen if "margin" in label) == hunt.LOG2_CAP  # broken


@pytest.mark.parametrize("name", ["standard", "strict"])
def test_failure_margin_is_positive_exactly_when_the_profile_fails(name: str) -> None:
    policy = grading.profile(name)
    ulps = np.array([0.0, 0.5, 1.0, 3.0, 4.0, 4.5, 8.0, 1e6, np.inf])
    ratios = np.array([0.0, 0.25, 1.0, 1.5, 1e3, np.inf])
    ulp, ratio = (a.ravel() for a in np.meshgrid(ulps, ratios))
    broken = np.isinf(ulp)
    ratio = np.where(broken, np.inf, ratio)
    graded = np.ones(ulp.shape, bool)
    codes = grading.classify(ulp, ratio, broken, graded, ulp_budget=policy.ulp_budget)
    grades = grading.ElementGrades("softmax", "float64", ulp, ratio, np.ones_like(ulp), broken,
                                   graded, codes, policy.ulp_budget)
    margins = hunt._margins(grades, policy, None)
    fails = np.array([not policy.passes(grading.GRADES[c]) for c in codes])
    np.testing.assert_array_equal(margins > 0, fails)


# --------------------------------------------------------------------- determinism


def test_a_hunt_is_the_same_for_a_seed() -> None:
    def digest(seed: int) -> dict:
        found = hunt.hunt(Unshifted(), "softmax", dtype="float64", max_examples=25, seed=seed)
        data = found.to_dict()
        data.pop("seconds")
        return data

    first = digest(7)
    assert first == digest(7)
    assert first["worst"] != digest(8)["worst"]


# --------------------------------------------------------------------- pinning


def test_pin_dedupes_by_contents(tmp_path: Path) -> None:
    a, b, c = sample("moderate", dtype="float64", size=3)
    path = tmp_path / "data" / "pinned.jsonl"
    assert hunt.pin([a, b, a], path) == 2
    renamed = Case.from_json(a.to_json().replace(a.case_id, "another-name"))
    assert hunt.pin([renamed, c], path) == 1  # same contents, other id: not new
    assert hunt.pin([], path) == 0
    pinned = runner.load_pinned(path)
    assert [p.case_id for p in pinned] == [a.case_id, b.case_id, c.case_id]
    assert all(p.same_as(q) for p, q in zip(pinned, (a, b, c), strict=True))


def test_pin_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = sample("ties", dtype="float32", size=2)
    path = tmp_path / "pinned.jsonl"
    hunt.pin([a], path)
    before = path.read_bytes()

    def interrupted(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(hunt.os, "replace", interrupted)
    with pytest.raises(OSError, match="disk full"):
        hunt.pin([b], path)
    assert path.read_bytes() == before  # untouched, and no temporary left behind
    assert os.listdir(tmp_path) == ["pinned.jsonl"]


def test_hunted_cases_are_pinned_and_replayed_by_every_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pinned_cases.jsonl"
    results = hunt.hunt_all([Unshifted()], dtypes=["float64", "float32"],
                            regimes=["overflow-edge"], max_examples=15, pin_path=path)
    assert [(r.function, r.dtype) for r in results] == [("softmax", "float64"),
                                                        ("softmax", "float32")]
    assert all(r.found_failure for r in results)
    pinned = runner.load_pinned(path)
    for result in results:
        for case in result.cases():
            assert any(case.same_as(p) for p in pinned), case.case_id
    assert hunt.hunt_all([Unshifted()], dtypes=["float64", "float32"],
                         regimes=["overflow-edge"], max_examples=15, pin_path=path)
    assert len(runner.load_pinned(path)) == len(pinned)  # the same hunt pins nothing new

    load = runner.load_pinned
    monkeypatch.setattr(runner, "load_pinned", lambda **only: load(path, **only))
    report = runner.run([Unshifted()], dtypes=["float64"], regimes=["overflow-edge"])
    sampled = len(sample("overflow-edge", dtype="float64"))
    assert report.cases == sampled + sum(1 for p in pinned if p.dtype == "float64")
    failed = [r for r in report.adapters[0].results.values() if not r.passed]
    assert any(r.check == "value" and r.function == "softmax" for r in failed)


# --------------------------------------------------------------------- errors


def test_hunt_refuses_what_it_cannot_do() -> None:
    with pytest.raises(hunt.HuntError, match="unknown function"):
        hunt.hunt(Unshifted(), "softmin")
    with pytest.raises(hunt.HuntError, match="does not provide log_softmax"):
        hunt.hunt(Unshifted(), "log_softmax")
    with pytest.raises(hunt.HuntError, match="does not take float16"):
        hunt.hunt(Unshifted(), "softmax", dtype="float16")
    with pytest.raises(hunt.HuntError, match="unknown regime"):
        hunt.hunt(Unshifted(), "softmax", regime="galactic")
    with pytest.raises(hunt.HuntError, match="max_examples"):
        hunt.hunt(Unshifted(), "softmax", max_examples=0)


def test_an_unavailable_adapter_is_one_error_result() -> None:
    results = hunt.hunt_all([str(FIXTURES / "unavailable_adapter.py")], max_examples=5)
    assert len(results) == 1 and results[0].function == "*"
    assert "frobnitz is not installed" in (results[0].error or "")
