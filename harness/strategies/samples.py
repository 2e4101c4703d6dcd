"""Fixed-seed samples: :func:`sample`, the same cases byte for byte on every run.

Case ``i`` of a regime and dtype comes from its own ``PCG64`` stream seeded with
``SeedSequence([seed, crc32(regime), crc32(dtype), i])``; target kinds and option sets
are cycled through the cases.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from xentcheck.harness.adapters.contract import DTYPES
from xentcheck.harness.cases import TARGET_KINDS, Case
from xentcheck.harness.options import MAX_CLASSES
from xentcheck.harness.strategies.formats import InvalidArgument, _check_count, _format
from xentcheck.harness.strategies.plans import _generate, _long_shapes, _plan
from xentcheck.harness.strategies.regimes import (
    IGNORED_SETUPS,
    REGIMES,
    WIDE_DEFAULT_MAX_CLASSES,
    WIDE_SIZES,
    _regime,
)
from xentcheck.harness.strategies.sources import _StreamSource
from xentcheck.harness.strategies.target_options import _targets_and_options

# Samples cycle the target kind and a set of options through their cases, offset by regime
# and dtype, so that every regime and dtype meets every target kind and the default
# samples cross every option with every target kind (ignore_index only with indices).
_OPTION_PROFILES: tuple[tuple[str, ...], ...] = (
    (),
    ("reduction",),
    ("weight",),
    ("label_smoothing",),
    ("ignore_index",),
    ("weight", "ignore_index", "reduction"),
    ("label_smoothing", "weight", "ignore_index", "reduction"),
)
_DEFAULT_SAMPLE_SIZE = 5  # = len(TARGET_KINDS): each regime and dtype meets each kind once


def _entropy(seed: int, regime: str, dtype: str, index: int) -> list[int]:
    return [seed, zlib.crc32(regime.encode()), zlib.crc32(dtype.encode()), index]


def sample(
    regime: str,
    *,
    dtype: Any = "float64",
    seed: int = 0,
    size: int | None = None,
    max_classes: int | None = None,
    corpus: str | Path | None = None,
) -> list[Case]:
    """The fixed-seed sample of a regime: ``size`` cases, the same bytes on every run.

    ``size`` defaults to 5 (one case per target kind; 3 for ``empty``; for ``wide``, one
    case per size of :data:`WIDE_SIZES` up to ``max_classes``). ``max_classes`` caps K in
    every regime and sets the largest ``wide`` size (default 4096; pass 131072 for
    vocabulary-sized rows). ``corpus`` is the file of the ``corpus`` regime (default: the
    built-in MNIST logits); its sample draws rows at random, keeping their labels.
    Target kinds and options are cycled through the cases (see the module notes).

    >>> [c.case_id for c in sample("ties", dtype="float16", size=2)]
    ['ties-float16-s0-0', 'ties-float16-s0-1']
    """
    spec = _regime(regime)
    fmt = _format(dtype)
    _check_count("seed", seed, 0)
    if size is not None:
        _check_count("size", size, 0)
    if regime == "known-defects":  # a fixed corpus: the seed picks nothing
        from xentcheck.harness import defects

        chosen = [c for c in defects.cases(fmt.name)
                  if max_classes is None or c.num_classes <= max_classes]
        return chosen if size is None else chosen[:size]
    if max_classes is not None:
        _check_count("max_classes", max_classes, 1)
        if max_classes > MAX_CLASSES:
            raise InvalidArgument(f"max_classes must be <= {MAX_CLASSES}; got {max_classes}")
    if regime == "wide":
        cap = WIDE_DEFAULT_MAX_CLASSES if max_classes is None else max_classes
        plan = _plan(regime, None, None, min(spec.classes[0], cap), cap, None)
        sizes = [s for s in WIDE_SIZES if s <= cap]
        default_size = max(len(sizes), 1)
    else:
        cap = None if max_classes is None else min(spec.classes[1], max_classes)
        if regime == "corpus":
            plan = _plan(regime, None, None, None, None, corpus)
            if max_classes is not None and plan.classes[0] > max_classes:
                raise InvalidArgument(f"the corpus has K = {plan.classes[0]} > max_classes")
        else:
            plan = _plan(regime, None, None, None, cap, None)
        default_size = {"empty": 3, "long-rows": len(_long_shapes(plan)),
                        "ignored": len(IGNORED_SETUPS)}.get(regime, _DEFAULT_SAMPLE_SIZE)
    count = default_size if size is None else size
    r, d = REGIMES.index(regime), DTYPES.index(fmt.name)
    call = f"xentcheck.harness.strategies.sample({regime!r}, dtype={fmt.name!r}, seed={seed}"
    if max_classes is not None:
        call += f", max_classes={max_classes}"
    if corpus is not None:
        call += f", corpus={str(Path(corpus).resolve())!r}"
    out = []
    for i in range(count):
        src = _StreamSource(_entropy(seed, regime, fmt.name, i))
        z, anchors, setup = _generate(src, plan, fmt, slot=i)
        kind, target, opts = _targets_and_options(
            src, fmt, z, anchors, setup, TARGET_KINDS[(i + r) % len(TARGET_KINDS)],
            _OPTION_PROFILES[(i + 3 * r + 2 * d) % len(_OPTION_PROFILES)], each_maybe=False)
        out.append(
            Case(
                logits=z,
                target=target,
                target_kind=kind,
                options=opts,
                dtype=fmt.name,
                regime=regime,
                case_id=f"{regime}-{fmt.name}-s{seed}-{i}",
                seed=seed,
                origin=f"{call}, size={i + 1})[{i}]",
            )
        )
    return out
