"""Every planted bug fails, caught by the check that names it, with a reproducer.

DESIGN.md §7: "every planted bug must fail" the default profile. Each adapter of
``planted.py`` is run through :func:`xentcheck.harness.runner.run` on the one regime and dtype where
its bug shows (fixed-seed samples, so the inputs are the same on every run), and:

* its verdict is ``fail`` under ``standard`` — or, for the two bugs that only cost ulps,
  ``fail`` under ``strict`` while it *passes* ``standard`` (so the distinction is real);
* each (check, function) listed in :data:`PLANTS` is among its failing results: the bug is
  caught for the right reason, not by accident elsewhere;
* every failing result carries a worst case and a ``python -m xentcheck.harness.repro``
  line, and for
  the value and gradient checks the case in that line, replayed, fails again (except where
  the failure of a row needs the rest of its batch: the reproducer keeps the worst row
  alone, a known limit marked ``xfail(strict=True)`` below).

The comparison is guarded: in the very same runs the textbook adapter (the correct code
every plant is derived from) passes ``standard``, and the careful built-in ``numpy``
passes ``standard`` and, where a plant is judged by ``strict``, the same results under
``strict``. Runs are shared by every plant with the same regime and dtype (the gold of a
case is computed once per run) and judged without accuracy budgets.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import planted
import pytest
from textbook import Textbook

from xentcheck.harness import grading, runner
from xentcheck.harness.adapters import numpy_stable
from xentcheck.harness.repro import load_case
from xentcheck.harness.truth import Truth

Caught = tuple[str, str]  # (check, function) of a result that must fail


@dataclass(frozen=True)
class Plant:
    """A planted bug, where it shows, and the results that must catch it."""

    adapter: type[Textbook]
    regime: str
    dtype: str
    caught_by: tuple[Caught, ...]
    profile: str = "standard"  # "strict": only ulps separate it (it must pass standard)
    whole_batch: bool = False  # the failure of a row depends on the other rows (or on N)

    @property
    def name(self) -> str:
        return self.adapter.name


P = planted
PLANTS: tuple[Plant, ...] = (
    # overflow and the shift
    Plant(P.UnshiftedExp, "large", "float64",
          (("value", "softmax"), ("value", "logsumexp"))),
    Plant(P.UnshiftedLogSoftmax, "large", "float64",
          (("value", "log_softmax"), ("value", "cross_entropy"))),
    Plant(P.LogOfSoftmax, "dominant", "float32",
          (("value", "log_softmax"), ("value", "cross_entropy"))),
    Plant(P.NormaliserAddedFirst, "tiny-spread", "float64",
          (("value", "log_softmax"), ("value", "cross_entropy"))),
    Plant(P.GlobalMaxShift, "large", "float64",
          (("batch-invariance", "softmax"), ("value", "softmax")), whole_batch=True),
    # precision
    Plant(P.Float32Accumulation, "moderate", "float64",
          (("value", "logsumexp"), ("value", "softmax"), ("value", "log_softmax"),
           ("value", "cross_entropy"))),
    Plant(P.Float16Accumulation, "masked", "float16",  # K = 256 .. 512
          (("value", "softmax"), ("normalization", "softmax"))),
    Plant(P.FlushSubnormals, "dominant", "float16", (("value", "softmax"),)),
    Plant(P.DroppedTinyGradient, "dominant", "float64",
          (("gradient", "cross_entropy_grad"),)),
    # the gradient
    Plant(P.PMinusY, "moderate", "float64",
          (("gradient", "cross_entropy_grad"), ("self-fd", "cross_entropy_grad"))),
    Plant(P.NanGradientAtMasked, "masked", "float64",
          (("gradient", "cross_entropy_grad"), ("normalization", "cross_entropy_grad"))),
    Plant(P.MeanGradientForNone, "moderate", "float64",
          (("gradient", "cross_entropy_grad"), ("self-fd", "cross_entropy_grad")),
          whole_batch=True),
    Plant(P.IgnoredMeanNanGradient, "tiny-spread", "float16",  # a case with every row ignored
          (("ignored-mean", "cross_entropy_grad"),)),
    Plant(P.SumReductionNan, "moderate", "float64",
          (("self-fd", "cross_entropy_grad"), ("reduction", "cross_entropy"))),
    Plant(P.SumReductionRaises, "moderate", "float64",
          (("self-fd", "cross_entropy_grad"), ("reduction", "cross_entropy"))),
    # -inf and NaN
    Plant(P.NanLossAtMasked, "masked", "float64", (("value", "cross_entropy"),)),
    Plant(P.ClippedProbs, "masked", "float64",
          (("value", "cross_entropy_from_probs"),
           ("gradient", "cross_entropy_grad_wrt_probs"))),
    Plant(P.NanNotPropagated, "nonfinite", "float64", (("value", "softmax"),)),
    # options
    Plant(P.WeightedMeanOverN, "dominant", "float64",
          (("value", "cross_entropy"), ("gradient", "cross_entropy_grad"))),
    Plant(P.IgnoredRowsInMean, "dominant", "float64",
          (("value", "cross_entropy"), ("gradient", "cross_entropy_grad")), whole_batch=True),
    Plant(P.SmoothingOverKMinus1, "moderate", "float64",
          (("value", "cross_entropy"), ("gradient", "cross_entropy_grad"))),
    Plant(P.LabelSmoothingIgnoredInForward, "moderate", "float64",
          (("value", "cross_entropy"), ("self-fd", "cross_entropy_grad"))),
    Plant(P.MeanOverElements, "moderate", "float64",
          (("reduction", "cross_entropy"), ("value", "cross_entropy"))),
    # invalid targets
    Plant(P.SilentOutOfRangeTarget, "moderate", "float64",
          (("invalid-input", "cross_entropy"), ("invalid-input", "cross_entropy_grad"))),
    # the Jacobian
    Plant(P.JacobianEntryOff, "moderate", "float64", (("gradient", "softmax_jacobian"),)),
    Plant(P.JacobianSignError, "moderate", "float64",
          (("gradient", "softmax_jacobian"), ("chain-rule", "cross_entropy_grad"))),
    # the contract
    Plant(P.MutatesInput, "moderate", "float64", (("contract", "softmax"),)),
    Plant(P.Nondeterministic, "moderate", "float64", (("determinism", "softmax"),)),
    Plant(P.DtypeUpcast, "moderate", "float32", (("contract", "softmax"),)),
    Plant(P.WrongShape, "moderate", "float64", (("contract", "logsumexp"),)),
    # invariants
    Plant(P.Softmin, "moderate", "float64",
          (("order", "softmax"), ("value", "softmax"), ("shift-invariance", "softmax"))),
    Plant(P.NormaliserSignError, "moderate", "float64", (("range", "log_softmax"),)),
    Plant(P.SumOverBatch, "moderate", "float64",
          (("normalization", "softmax"), ("value", "softmax")), whole_batch=True),
    # oracle-free invariants: the value and gradient checks miss these (test below)
    Plant(P.NanScrubbedProbabilities, "nonfinite", "float64",
          (("normalization", "cross_entropy_grad"),)),
    Plant(P.NormaliserReusedPerTarget, "moderate", "float32",
          (("shift-invariance", "cross_entropy"), ("shift-invariance", "cross_entropy_grad"))),
    Plant(P.MeanDivisorOfFirstBatch, "moderate", "float64",
          (("chunk-invariance", "cross_entropy"), ("chunk-invariance", "cross_entropy_grad"))),
    # only ulps: strict
    Plant(P.SoftmaxFromLogSoftmax, "corpus", "float64", (("value", "softmax"),),
          profile="strict"),
    Plant(P.GradientThroughLogSoftmax, "moderate", "float64",
          (("gradient", "cross_entropy_grad"),), profile="strict"),
    # forward mode and second order
    Plant(P.JvpWithoutCentering, "moderate", "float64",
          (("jvp", "log_softmax_jvp"), ("jvp", "softmax_jvp"))),
    Plant(P.HvpDiagonalOnly, "moderate", "float64", (("hvp", "cross_entropy_hvp"),)),
    Plant(P.HvpAssumesNormalizedTarget, "moderate", "float32", (("hvp", "cross_entropy_hvp"),)),
    # input classes (test_input_classes.py: only their own regime shows them)
    Plant(P.LogsumexpWithoutLog1p, "near-zero", "float64", (("value", "logsumexp"),),
          profile="strict"),
    Plant(P.LossAsLseMinusTarget, "ties", "float64", (("value", "cross_entropy"),)),
    Plant(P.BlockTailDropped, "long-rows", "float32",
          (("value", "softmax"), ("value", "logsumexp"))),
    Plant(P.Int16Offsets, "long-rows", "float16", (("value", "softmax"),)),
    Plant(P.IgnoredMeanOverN, "ignored", "float64",
          (("value", "cross_entropy"), ("gradient", "cross_entropy_grad")), whole_batch=True),
    Plant(P.SmoothingOnIgnoredRows, "ignored", "float64", (("value", "cross_entropy"),)),
    Plant(P.AllIgnoredLeaks, "ignored", "float32", (("ignored-mean", "cross_entropy_grad"),),
          whole_batch=True),
    Plant(P.MinusOneWraps, "moderate", "float64",
          (("invalid-input", "cross_entropy"), ("invalid-input", "cross_entropy_grad"))),
    Plant(P.EmptyRowsZero, "no-classes", "float32", (("value", "logsumexp"),)),
)

#: Every check that can fail a result. ``edge`` is not among them: it records what an
#: adapter does where the reference gives no grade (+inf logits, all -inf rows), never fails.
FAILING_CHECKS = frozenset({
    "value", "gradient", "jvp", "hvp", "chain-rule", "self-fd", "reduction", "batch-invariance",
    "shift-invariance", "chunk-invariance", "contract", "range", "normalization", "order",
    "determinism", "invalid-input", "ignored-mean",
})

#: The correct adapters every run holds next to the plants.
TEXTBOOK, NUMPY = Textbook.name, numpy_stable.name

#: Checks whose failing worst case is a call of the function on the case as recorded, so
#: replaying the reproducer's case must fail again (the others call it on variants:
#: invalid targets, other reductions, single rows, shifted logits, finite differences).
REPLAYABLE = ("value", "gradient")

RunKey = tuple[str, str, str]  # (regime, dtype, profile)


@pytest.fixture(scope="module")
def zoo_run(no_budgets: str) -> Callable[[str, str, str], dict[str, dict[str, Any]]]:
    """``zoo_run(regime, dtype, profile)``: each adapter's report (by name) of one run of the
    textbook, ``numpy`` and every plant of that regime and dtype; each run made once."""
    reports: dict[RunKey, dict[str, dict[str, Any]]] = {}

    def get(regime: str, dtype: str, profile: str) -> dict[str, dict[str, Any]]:
        key = (regime, dtype, profile)
        if key not in reports:
            plants = [p.adapter() for p in PLANTS if (p.regime, p.dtype) == (regime, dtype)]
            report = runner.run([Textbook(), numpy_stable, *plants], profile=profile,
                                regimes=[regime], dtypes=[dtype], budgets_path=no_budgets)
            reports[key] = {a["name"]: a for a in report.to_dict()["adapters"]}
        return reports[key]

    return get


def _failing(adapter: dict[str, Any]) -> dict[Caught, dict[str, Any]]:
    return {(r["check"], r["function"]): r for r in adapter["results"] if not r["passed"]}


def _describe(adapter: dict[str, Any]) -> str:
    failing = _failing(adapter)
    if not failing:
        return f"{adapter['name']}: no failing result ({adapter['verdict']})"
    lines = [f"{adapter['name']}: {adapter['verdict']}; failing results:"]
    for (check, function), r in sorted(failing.items()):
        lines.append(f"  {check}/{function} [{r['dtype']}-{r['regime']}]: {r['grade']}, "
                     f"{r['failed']} of {r['cases']} rows; {'; '.join(r['notes'])}")
    return "\n".join(lines)


def _replay(plant: Plant, result: dict[str, Any]) -> None:
    """Rebuild the reproducer's case, call the plant on it and judge it again: it fails."""
    __tracebackhide__ = True
    argv = shlex.split(result["reproducer"])
    assert argv[:3] == ["python", "-m", "xentcheck.harness.repro"] and len(argv) == 6, argv
    function, case = argv[4], load_case(argv[5])
    assert function == result["function"], (function, result["function"])
    truth = Truth(case)
    arrays, options = truth.arguments(function)
    with np.errstate(all="ignore"):
        got = getattr(plant.adapter(), function)(*(a.copy() for a in arrays), **options)
    exact = truth.exact(function)
    if np.shape(got) != np.shape(exact) or np.asarray(got).dtype != arrays[0].dtype:
        return  # the contract's fault (broken): nothing finer to regrade
    graded = grading.grade_elements(function, got, exact, dtype=case.dtype,
                                    **truth.grading_inputs(function))
    verdict = grading.judge(graded, grading.profile(plant.profile))
    assert not verdict.passed, (
        f"{plant.name} {function}: the reproducer's case {case.case_id} passes "
        f"{plant.profile} when replayed (grades {verdict.result.grades})")


@pytest.mark.parametrize("plant", PLANTS, ids=[p.name for p in PLANTS])
def test_planted_bug_is_caught(plant: Plant, zoo_run: Any) -> None:
    adapter = zoo_run(plant.regime, plant.dtype, plant.profile)[plant.name]
    where = f"{plant.name} on {plant.regime}/{plant.dtype} under {plant.profile}"
    assert adapter["verdict"] == "fail", f"{where}: not caught\n{_describe(adapter)}"
    failing = _failing(adapter)
    for caught in plant.caught_by:
        assert caught in failing, (
            f"{where}: {caught[0]}/{caught[1]} should catch it but passed\n"
            f"{_describe(adapter)}")
    for (check, function), result in failing.items():
        worst = result["worst"]
        reproducer = result["reproducer"] or ""
        assert ("python -m xentcheck.harness.repro" in reproducer
                and f" {function} " in reproducer), (
            f"{where}: {check}/{function} failed without a reproducer: {worst!r}")
        if (check in REPLAYABLE and (check, function) in plant.caught_by
                and not plant.whole_batch):
            _replay(plant, result)


BATCH_PLANTS = [p for p in PLANTS if p.whole_batch]


@pytest.mark.parametrize("plant", BATCH_PLANTS, ids=[p.name for p in BATCH_PLANTS])
def test_reproducer_of_whole_batch_bug_fails_again(plant: Plant, zoo_run: Any) -> None:
    adapter = zoo_run(plant.regime, plant.dtype, plant.profile)[plant.name]
    failing = _failing(adapter)
    for check, function in plant.caught_by:
        if check in REPLAYABLE:
            _replay(plant, failing[check, function])


STRICT_PLANTS = [p for p in PLANTS if p.profile == "strict"]


@pytest.mark.parametrize("plant", STRICT_PLANTS, ids=[p.name for p in STRICT_PLANTS])
def test_strict_only_bug_passes_standard(plant: Plant, zoo_run: Any) -> None:
    """Only ulps separate it: within the textbook's stability bound everywhere it ran."""
    adapter = zoo_run(plant.regime, plant.dtype, "standard")[plant.name]
    assert adapter["verdict"] == "pass", (
        f"{plant.name} on {plant.regime}/{plant.dtype} fails standard, so strict is not "
        f"what separates it\n{_describe(adapter)}")


@pytest.mark.parametrize("plant", STRICT_PLANTS, ids=[p.name for p in STRICT_PLANTS])
def test_careful_numpy_passes_strict_where_strict_catches(plant: Plant, zoo_run: Any) -> None:
    """The strict results that catch the plant are passed by a careful implementation on
    the same inputs: strict asks for what can be had, not for the impossible."""
    careful = _failing(zoo_run(plant.regime, plant.dtype, "strict")[NUMPY])
    for caught in plant.caught_by:
        assert caught not in careful, (
            f"numpy fails strict {caught[0]}/{caught[1]} on {plant.regime}/{plant.dtype}: "
            f"{careful[caught]['grade']}, {careful[caught]['notes']}")


RUNS = sorted({(p.regime, p.dtype) for p in PLANTS})


@pytest.mark.parametrize("run", RUNS, ids=[f"{r}-{d}" for r, d in RUNS])
@pytest.mark.parametrize("correct", [TEXTBOOK, NUMPY])
def test_correct_adapters_pass_the_zoo_runs(run: tuple[str, str], correct: str,
                                            zoo_run: Any) -> None:
    """The guard: the plants fail for their bug, not for the inputs or the grading."""
    adapter = zoo_run(*run, "standard")[correct]
    assert adapter["verdict"] == "pass", _describe(adapter)


def test_every_planted_adapter_is_tested() -> None:
    tested = [p.adapter for p in PLANTS]
    assert sorted(c.__name__ for c in planted.ZOO) == sorted(c.__name__ for c in tested)
    assert len(set(tested)) == len(tested) >= 20
    assert len({p.name for p in PLANTS}) == len(PLANTS), "adapter names must be unique"


def test_every_check_that_can_fail_catches_a_planted_bug() -> None:
    """No check is dead weight: each one that can fail is what catches some plant."""
    assert {check for p in PLANTS for check, _ in p.caught_by} == FAILING_CHECKS


#: The plants only an oracle-free invariant catches (the depth issue's item 4).
INVARIANT_PLANTS = [p for p in PLANTS if p.adapter in (
    P.NanScrubbedProbabilities, P.NormaliserReusedPerTarget, P.MeanDivisorOfFirstBatch)]


@pytest.mark.parametrize("plant", INVARIANT_PLANTS, ids=[p.name for p in INVARIANT_PLANTS])
def test_invariant_plants_pass_the_value_and_gradient_checks(plant: Plant, zoo_run: Any
                                                             ) -> None:
    """In the very run where the invariant catches it, no value or gradient result of the
    plant fails: without the invariant the bug would go unseen."""
    adapter = zoo_run(plant.regime, plant.dtype, plant.profile)[plant.name]
    seen = [(check, function) for check, function in _failing(adapter)
            if check in ("value", "gradient")]
    graded = [r for r in adapter["results"] if r["check"] in ("value", "gradient")
              and r["function"] in ("cross_entropy", "cross_entropy_grad")]
    assert graded and not seen, _describe(adapter)


def test_both_engines_judge_a_chunk_plant_alike() -> None:
    """The chunk-invariance comparison and the bounds run compiled under numba's engine
    (an LLM block's size picks it) and as NumPy passes otherwise: on the planted
    chunk-dependent mean, every result of the run is the same either way."""
    from xentcheck.references.fast import jit

    pytest.importorskip("numba")
    reports = []
    for engine in ("numpy", "numba"):
        with jit.engine(engine):
            report = runner.run([planted.MeanDivisorOfFirstBatch()], dtypes=["float64"],
                                regimes=["moderate"]).to_dict()
        reports.append(report["adapters"][0]["results"])
    assert reports[0] == reports[1]
    chunked = [r for r in reports[1] if r["check"] == "chunk-invariance"]
    assert chunked and all(not r["passed"] for r in chunked)
