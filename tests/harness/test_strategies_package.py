"""The strategies as a package: ``xentcheck.harness.strategies`` keeps its public API.

The strategies were one module (``harness/strategies.py``); their code now lives in
modules by role (regimes, sources, formats, corpora, plans, targets and options, samples,
the Hypothesis strategies). Reproducer lines name ``xentcheck.harness.strategies.sample``
and ``load_corpus``, and importers read the constants from the package: these tests pin
both, and that the built-in corpus is still ``harness/data/``'s.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from xentcheck.harness import repro, strategies

#: ``__all__`` as the single module had it.
ALL = (
    "DEFAULT_CORPUS",
    "HUNT_ONLY_REGIMES",
    "MAX_CLASSES",
    "REGIMES",
    "TARGET_KINDS",
    "WIDE_SIZES",
    "InvalidArgument",
    "Targets",
    "cases",
    "dtypes",
    "load_corpus",
    "logits",
    "options",
    "overflow_edge",
    "release",
    "regime_info",
    "sample",
    "targets",
)
#: Public constants outside ``__all__`` that tests and users read from the package.
CONSTANTS = (
    "BIG_TIES",
    "CORPUS_ROWS_PER_CASE",
    "DOMINANT_MAX_GAP",
    "IGNORED_SETUPS",
    "LONG_SHAPES",
    "MASK_TILE",
    "OVERFLOW_EDGE_HALF_WIDTH",
    "TINY_SPREAD_ULPS",
    "WIDE_DEFAULT_MAX_CLASSES",
)
MODULES = ("corpora", "formats", "hypothesis_strategies", "plans", "regimes", "samples",
           "sources", "target_options")


def test_public_api() -> None:
    assert tuple(strategies.__all__) == ALL
    for name in ALL + CONSTANTS:
        assert hasattr(strategies, name), f"xentcheck.harness.strategies.{name} is missing"
    # the samples' portable stream, which xentcheck.harness.defects draws from
    assert strategies._StreamSource.__module__ == "xentcheck.harness.strategies.sources"


def test_layout() -> None:
    found = sorted(info.name for info in pkgutil.iter_modules(strategies.__path__))
    assert found == sorted(MODULES)
    for name in MODULES:
        module = importlib.import_module(f"xentcheck.harness.strategies.{name}")
        assert module.__doc__ and module.__doc__.strip(), f"strategies.{name} has no docstring"
        lines = len(inspect.getsource(module).splitlines())
        assert lines <= 600, f"strategies.{name} has {lines} lines: split it"


def test_default_corpus_is_in_harness_data() -> None:
    harness = Path(importlib.import_module("xentcheck.harness").__path__[0])
    assert strategies.DEFAULT_CORPUS == harness / "data" / "mnist_presoftmax.npz"
    assert strategies.DEFAULT_CORPUS.is_file()


def test_reproducer_lines_still_load() -> None:
    """The origin of a sampled or loaded case is a line that loads the same case."""
    case = strategies.sample("moderate", dtype="float64", seed=0, size=5)[4]
    assert case.origin.startswith("xentcheck.harness.strategies.sample(")
    again = repro.load_case(case.origin)
    assert again.same_as(case)
    chunk = strategies.load_corpus(strategies.DEFAULT_CORPUS, rows_per_case=1000)[2]
    assert chunk.origin.startswith("xentcheck.harness.strategies.load_corpus(")
    assert repro.load_case(chunk.origin).same_as(chunk)
