"""Every class of input the depth issue added is in the default run, and needed there.

For each class a planted bug that only it shows (``planted.py``, section "input
classes"): run on the regimes that existed before the class was added, the check that
catches it passes; run on the regime that carries the class, it fails, caught by that
check on a case of that class. So that check would miss each of these bugs without its
class. (Other checks may reach a class otherwise: chunk invariance splits a batch into
parts, and a part may hold only ignored rows.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import planted
import pytest
from textbook import Textbook

from xentcheck.harness import runner, strategies

#: The regimes of the default run before the depth issue's inputs (``ties`` then had no
#: ties at large magnitudes: its big-ties rows are checked by their magnitude below).
OLD_REGIMES = ("moderate", "large", "overflow-edge", "huge", "dominant", "tiny-spread",
               "masked", "nonfinite", "wide", "single-class", "empty", "corpus")


@dataclass(frozen=True)
class InputClass:
    plant: type[Textbook]
    regime: str
    dtype: str
    caught_by: tuple[str, str]  # (check, function)
    profile: str = "standard"


CLASSES = (
    InputClass(planted.LogsumexpWithoutLog1p, "near-zero", "float64", ("value", "logsumexp"),
               profile="strict"),
    InputClass(planted.BlockTailDropped, "long-rows", "float32", ("value", "softmax")),
    InputClass(planted.Int16Offsets, "long-rows", "float16", ("value", "softmax")),
    InputClass(planted.SmoothingOnIgnoredRows, "ignored", "float64",
               ("value", "cross_entropy")),
    InputClass(planted.AllIgnoredLeaks, "ignored", "float32",
               ("ignored-mean", "cross_entropy_grad")),
    InputClass(planted.EmptyRowsZero, "no-classes", "float32", ("value", "logsumexp")),
)


def _failing(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["adapters"][0]["results"] if not r["passed"]]


@pytest.mark.parametrize("item", CLASSES, ids=lambda c: c.plant.name)
def test_only_the_new_class_catches_the_plant(item: InputClass, no_budgets: str) -> None:
    settings = dict(dtypes=[item.dtype], profile=item.profile, budgets_path=no_budgets)
    old = runner.run([item.plant()], regimes=list(OLD_REGIMES), **settings).to_dict()
    missed = [r for r in _failing(old) if (r["check"], r["function"]) == item.caught_by]
    assert not missed, [(r["check"], r["function"], r["regime"]) for r in missed]
    new = runner.run([item.plant()], regimes=[item.regime], **settings).to_dict()
    caught = [r for r in _failing(new) if (r["check"], r["function"]) == item.caught_by]
    assert caught, [(r["check"], r["function"]) for r in _failing(new)]


def test_ties_at_large_magnitudes_catch_the_cancelling_loss(no_budgets: str) -> None:
    """logsumexp(z) - z_t cancels at a large magnitude: caught on a row of ``ties`` at a
    magnitude of 1e4 or more (``huge``'s constant rows reached this class before: the
    plant is not unique to it, the rows are what the test shows)."""
    report = runner.run([planted.LossAsLseMinusTarget()], regimes=["ties"],
                        dtypes=["float64"], budgets_path=no_budgets).to_dict()
    caught = [r for r in _failing(report) if (r["check"], r["function"]) == (
        "value", "cross_entropy")]
    assert caught
    worst = caught[0]["worst"]
    case = next(c for c in strategies.sample("ties", dtype="float64")
                if c.case_id == worst["case"])
    assert np.max(np.abs(case.logits[worst["row"]].astype(np.float64))) >= 1e4


def test_invalid_index_minus_one_is_tried(no_budgets: str) -> None:
    """Class index -1 is one of the invalid targets tried: the plant refuses K and -2 (the
    indices tried before) but wraps -1, and the invalid-input check catches it."""
    plant = planted.MinusOneWraps()
    z = np.zeros((2, 3))
    for bad in (3, -2):
        with pytest.raises(ValueError):
            plant.cross_entropy(z, np.array([bad, 0]))
    assert np.isfinite(plant.cross_entropy(z, np.array([-1, 0]))).all()
    report = runner.run([plant], regimes=["moderate", "ignored"], dtypes=["float64"],
                        budgets_path=no_budgets).to_dict()
    notes = [n for r in _failing(report) if r["check"] == "invalid-input" for n in r["notes"]]
    assert any(n.startswith("class index -1 with") for n in notes), notes
