"""Hypothesis strategies and fixed-seed samples of the named input regimes (DESIGN.md §5).

Strategies, for property tests with shrinking and ``target()``: :func:`dtypes`,
:func:`logits`, :func:`targets`, :func:`options` and :func:`cases`. Fixed-seed samples, so
that every adapter gets the same inputs and tables compare like with like: :func:`sample`
for a regime, :func:`load_corpus` for a user's own logits. :data:`REGIMES` names the
regimes and :func:`regime_info` describes one in a line.

Each regime is written once, against a small source of randomness that runs either on
Hypothesis' draws (a strategy: shrinkable) or on a PCG64 bit stream seeded with
``SeedSequence([seed, crc32(regime), crc32(dtype), index])`` (a sample). A sample uses
only the raw 64-bit outputs of ``PCG64`` and ``SeedSequence``, whose streams NumPy keeps
stable across versions, and turns them into numbers itself, so the same seed gives the
same cases byte for byte on every run and machine, independent of Hypothesis and its
database; case ``i`` does not depend on how many cases are asked for.

Samples are portable: only operations that IEEE 754 rounds exactly (integers, ``+ - * /``,
``ldexp``, casts) and constants computed with mpmath go into them, never NumPy's or the
libm's ``exp``/``log``/``cos``, whose last bits change with the CPU's SIMD code
(:mod:`xentcheck.references.portable`; normal deviates come from integer sums).
``harness/data/sample_fingerprints.json`` holds the SHA-256 of
every default sample; the tests regenerate them, also with NumPy's SIMD dispatch turned off.

Logits are generated in float64 and cast to the case dtype with ``astype`` (ml_dtypes
rounds float64 to bfloat16 through float32), except where a regime needs exact values of
the dtype: the neighbours of log(max) in ``overflow-edge``, the ulp steps of
``tiny-spread``, the repeated maxima and rows of ``ties``, ±max in ``huge``. A case holds
the rounded values, and the gold is computed from exactly those.

Modules: :mod:`~xentcheck.harness.strategies.regimes` (the regimes' constants, builders
and descriptions), :mod:`~xentcheck.harness.strategies.sources` (the two sources of
randomness), :mod:`~xentcheck.harness.strategies.formats` (dtypes as formats, argument
checks), :mod:`~xentcheck.harness.strategies.corpora` (:func:`load_corpus`),
:mod:`~xentcheck.harness.strategies.plans` (a regime with a request's bounds, the logits
drawn from it), :mod:`~xentcheck.harness.strategies.target_options` (targets and options),
:mod:`~xentcheck.harness.strategies.samples` (:func:`sample`) and
:mod:`~xentcheck.harness.strategies.hypothesis_strategies` (the strategies); this package
re-exports their public names, so ``xentcheck.harness.strategies.sample(...)`` in a
reproducer line keeps working.

>>> [(c.case_id, c.shape, c.target_kind) for c in sample("ties", dtype="bfloat16", size=2)]
[('ties-bfloat16-s0-0', (4, 10), 'indices'), ('ties-bfloat16-s0-1', (4, 8), 'one-hot')]
>>> round(overflow_edge("float16"), 2), round(overflow_edge("bfloat16"), 2)
(11.09, 88.72)
"""

from __future__ import annotations

from xentcheck.harness.cases import TARGET_KINDS
from xentcheck.harness.options import MAX_CLASSES

# Besides __all__, the public constants (CORPUS_ROWS_PER_CASE, BIG_TIES, ...) and the
# samples' portable stream, which xentcheck.harness.defects draws from too.
from xentcheck.harness.strategies.corpora import (  # noqa: F401
    BLOCK_ELEMENTS,
    CORPUS_ROWS_PER_CASE,
    DEFAULT_CORPUS,
    load_corpus,
    release,
)
from xentcheck.harness.strategies.formats import InvalidArgument, overflow_edge
from xentcheck.harness.strategies.hypothesis_strategies import (
    cases,
    dtypes,
    logits,
    options,
    targets,
)
from xentcheck.harness.strategies.regimes import (  # noqa: F401
    BIG_TIES,
    DOMINANT_MAX_GAP,
    HUNT_ONLY_REGIMES,
    IGNORED_SETUPS,
    LONG_SHAPES,
    MASK_TILE,
    OVERFLOW_EDGE_HALF_WIDTH,
    REGIMES,
    TINY_SPREAD_ULPS,
    WIDE_DEFAULT_MAX_CLASSES,
    WIDE_SIZES,
    regime_info,
)
from xentcheck.harness.strategies.samples import sample
from xentcheck.harness.strategies.sources import _StreamSource  # noqa: F401
from xentcheck.harness.strategies.target_options import Targets

__all__ = [
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
]
