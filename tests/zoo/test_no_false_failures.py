"""No false failures: correct implementations pass ``standard`` on every input the samples hold.

DESIGN.md §7: "the textbook shifted algorithm must pass `standard` on every input the
harness can generate". One run (:func:`xentcheck.harness.runner.run`, the default samples: every
regime of ``xentcheck.harness.strategies.REGIMES`` in every dtype, the pinned cases included) judges
the textbook adapter of ``textbook.py`` (float64 and float32 in their own format, float16
and bfloat16 in float32 rounded once) and the careful built-in ``numpy``, without accuracy
budgets. Each (adapter, dtype, regime) is one test, so an accusation names exactly where it
happened, with every failing result, its worst input, got, should be and the reproducer.

A false accusation found here is not to be loosened away: it is marked in
:data:`KNOWN_FALSE_ACCUSATIONS` with ``xfail(strict=True)`` and the reason, so the suite
stays green and honest until the check or the bound is fixed (and then fails, to be
unmarked). None is known on the default samples. The samples of other seeds hold inputs
the default ones do not; those where a check was found to accuse a correct adapter are
pinned in :data:`OTHER_SEEDS` the same way.
"""

from __future__ import annotations

from typing import Any

import pytest
from textbook import Textbook

from xentcheck.harness import runner, strategies
from xentcheck.harness.adapters import contract, numpy_stable

ADAPTERS = (Textbook.name, numpy_stable.name)

#: (adapter, dtype, regime) -> why the check accusing it is wrong. Empty: none known.
KNOWN_FALSE_ACCUSATIONS: dict[tuple[str, str, str], str] = {}

#: Regimes whose sample holds no row at all (N = 0): nothing to grade, only the contract.
EMPTY_REGIMES = ("empty",)


@pytest.fixture(scope="module")
def default_run(no_budgets: str) -> dict[str, Any]:
    """The one shared run over the default samples (about a minute: gold for every case)."""
    report = runner.run([Textbook(), numpy_stable], profile="standard",
                        regimes=strategies.REGIMES, dtypes=contract.DTYPES,
                        budgets_path=no_budgets)
    return report.to_dict()


def _results(run: dict[str, Any], adapter: str, dtype: str, regime: str) -> list[dict]:
    (found,) = [a for a in run["adapters"] if a["name"] == adapter]
    assert found["reason"] is None, f"{adapter} could not be run: {found['reason']}"
    return [r for r in found["results"] if (r["dtype"], r["regime"]) == (dtype, regime)]


def _accusation(result: dict[str, Any]) -> str:
    worst = result["worst"] or {}
    return (f"{result['check']}/{result['function']} [{result['dtype']}-{result['regime']}]: "
            f"{result['grade']}, {result['failed']} of {result['cases']} rows failed; "
            f"max {result['max_ulp']} ulp, ratio {result['max_ratio']}; "
            f"{'; '.join(result['notes'])}\n"
            f"    worst: case {worst.get('case')} index {worst.get('index')}: got "
            f"{worst.get('got')}, should be {worst.get('expected')} ({worst.get('ulp')} ulp, "
            f"ratio {worst.get('ratio')}, bound {worst.get('allowed_ulp')} ulp)\n"
            f"    input: {' '.join(worst.get('input') or [])}\n"
            f"    reproduce: {worst.get('reproducer')}")


def _params() -> list[Any]:
    params = []
    for adapter in ADAPTERS:
        for dtype in contract.DTYPES:
            for regime in strategies.REGIMES:
                if not strategies.sample(regime, dtype=dtype):
                    continue  # no case of that dtype (the defect corpus has no float16 one)
                key = (adapter, dtype, regime)
                marks = []
                if key in KNOWN_FALSE_ACCUSATIONS:
                    marks.append(pytest.mark.xfail(strict=True,
                                                   reason=KNOWN_FALSE_ACCUSATIONS[key]))
                params.append(pytest.param(*key, marks=marks, id="-".join(key)))
    return params


@pytest.mark.parametrize(("adapter", "dtype", "regime"), _params())
def test_correct_adapter_passes_standard(adapter: str, dtype: str, regime: str,
                                         default_run: dict[str, Any]) -> None:
    results = _results(default_run, adapter, dtype, regime)
    accused = [r for r in results if not r["passed"]]
    assert not accused, (f"{adapter} falsely accused on {dtype}/{regime}:\n"
                         + "\n".join(_accusation(r) for r in accused))
    # not vacuous: the sample was graded against gold
    graded = sum(r["cases"] for r in results if r["check"] in ("value", "gradient"))
    if regime in EMPTY_REGIMES:
        assert results, f"{adapter}: no result at all on {dtype}/{regime}"
    else:
        assert graded > 0, f"{adapter}: nothing graded against gold on {dtype}/{regime}"


def test_the_run_covered_every_regime_and_dtype(default_run: dict[str, Any]) -> None:
    settings = default_run["settings"]
    assert set(settings["regimes"]) == set(strategies.REGIMES)
    assert set(settings["dtypes"]) == set(contract.DTYPES)
    assert settings["profile"] == "standard"
    for adapter in default_run["adapters"]:
        assert set(adapter["dtypes"]) == set(contract.DTYPES), adapter["name"]
        assert set(adapter["provides"]) == set(contract.FUNCTIONS), adapter["name"]
        # pinned cases may carry regimes of their own: they are judged all the same
        elsewhere = [r for r in adapter["results"]
                     if r["regime"] not in strategies.REGIMES and not r["passed"]]
        assert not elsewhere, (f"{adapter['name']} falsely accused on pinned cases:\n"
                               + "\n".join(_accusation(r) for r in elsewhere))


# ------------------------------------------------------------------ samples of other seeds

_SELF_FD_STEP = (
    "self-fd steps by h = 2**-18 max(1, 2**-30 max|z|): at |z| ~ 1e209 that moves logit "
    "differences by ~1e194, where the loss is piecewise linear, so the Richardson estimate "
    "agrees with itself (error ~0.02) but not with the gradient at z (huge-float64-s1-1: "
    "four equal logits -0x1.13bc0c43e6ab1p+696, all-zero target, smoothing 0.6875: the "
    "gradient is exactly 0, the difference quotient -0.146)")
_SELF_FD_NO_FLOOR = (
    "self-fd's error estimate |d2 - d1| + 4 u max|L| / h has no absolute floor: the "
    "textbook's loss 6.0e-19 comes out as exactly 0 at every step (log s with s = 1 + "
    "6e-19 rounded to 1, within its stability bound), so the estimate is 0 +- 0 and a "
    "correct gradient·v = 3.8e-20 is accused (dominant-float64-s2-2: one row, the one-hot "
    "target on the logit 39.24, every other logit 43 to 47 below it)")
_REDUCTION_OVERFLOW = (
    "reduction: the float16 sum of finite per-row losses 181602.56 rounds to inf, which is "
    "the correctly rounded answer; the check wants a finite value near 181602.56 "
    "(huge-float16-s3-4, no reduction option; both adapters round once from float32)")
_MEAN_OVERFLOW = (
    "reduction: per-row float32 losses summing to 6.8e38 > max: the sum rounds to inf, which "
    "is correct, and the textbook's mean, (sum in float32) / N, overflows in that "
    "intermediate sum (as Truth excuses for an overflowing z - max z) while the mean "
    "1.36e38 is finite; the check wants finite values for both (huge-float32-s6-3)")
_REDUCTION_CRASH = (
    "the reduction check's math.fsum of per-row losses 6.46e307 (three rows) raises "
    "OverflowError: 'intermediate overflow in fsum', and the whole run aborts "
    "(harness/checks/consistency.py _reductions; huge-float64-s6-1, all-zero target, "
    "smoothing 0.359375, the numpy adapter's finite losses)")

#: (seed, regime, dtype) -> {adapter: why a check accused it}: samples beyond the default
#: seed 0 where a correct adapter was found accused, one per cause. All five causes are
#: fixed in the checks (self-fd: an absolute step, |z| <= 2**20, the loss's allowed
#: rounding in its error; reduction: overflowing sums are not compared, fsum's
#: OverflowError is caught); the samples stay as regression tests. Seeds 1 to 8 of every
#: regime and dtype were swept; the same causes also showed at huge/float64 with seeds 2,
#: 3, 4, 5, 7 and 8 (self-fd's step) and large/float64 with seed 1 (self-fd's floor);
#: every other (seed, regime, dtype) passed.
OTHER_SEEDS: dict[tuple[int, str, str], dict[str, str]] = {
    (1, "huge", "float64"): {Textbook.name: _SELF_FD_STEP, numpy_stable.name: _SELF_FD_STEP},
    (2, "dominant", "float64"): {Textbook.name: _SELF_FD_NO_FLOOR},
    (3, "huge", "float16"): {Textbook.name: _REDUCTION_OVERFLOW,
                             numpy_stable.name: _REDUCTION_OVERFLOW},
    (6, "huge", "float32"): {Textbook.name: _MEAN_OVERFLOW, numpy_stable.name: _MEAN_OVERFLOW},
    (6, "huge", "float64"): {Textbook.name: _REDUCTION_CRASH,
                             numpy_stable.name: _REDUCTION_CRASH},
}


@pytest.fixture(scope="module")
def seed_run(no_budgets: str) -> Any:
    """``seed_run(seed, regime, dtype)``: the run of both adapters on that sample (once)."""
    runs: dict[tuple[int, str, str], Any] = {}

    def get(seed: int, regime: str, dtype: str) -> dict[str, Any]:
        key = (seed, regime, dtype)
        if key not in runs:
            try:
                runs[key] = runner.run([Textbook(), numpy_stable], seed=seed,
                                       regimes=[regime], dtypes=[dtype],
                                       budgets_path=no_budgets).to_dict()
            except Exception as exc:  # kept, so both adapters' tests see the same failure
                runs[key] = exc
        if isinstance(runs[key], Exception):
            raise runs[key]
        return runs[key]

    return get


def _seed_params() -> list[Any]:
    params = []
    for seed, regime, dtype in OTHER_SEEDS:
        for adapter in ADAPTERS:
            # each was a false accusation (the reason in OTHER_SEEDS), since fixed in the
            # check: kept as a regression test named after the sample that showed it
            params.append(pytest.param(adapter, seed, regime, dtype,
                                       id=f"{adapter}-{dtype}-{regime}-seed{seed}"))
    return params


@pytest.mark.parametrize(("adapter", "seed", "regime", "dtype"), _seed_params())
def test_correct_adapter_passes_standard_on_other_seeds(adapter: str, seed: int, regime: str,
                                                        dtype: str, seed_run: Any) -> None:
    results = _results(seed_run(seed, regime, dtype), adapter, dtype, regime)
    accused = [r for r in results if not r["passed"]]
    assert not accused, (f"{adapter} falsely accused on {dtype}/{regime}, seed {seed}:\n"
                         + "\n".join(_accusation(r) for r in accused))
