"""Plans: a regime with the bounds of one request, and the logits drawn from it.

:func:`_plans` checks a request's bounds against what each regime can make and keeps the
regimes that can meet them; :func:`_generate` draws a shape and the logits of a plan from
a source, for a sample (``slot``: the case index) or a strategy.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from xentcheck.harness.options import MAX_CLASSES
from xentcheck.harness.strategies.corpora import DEFAULT_CORPUS, _read_corpus
from xentcheck.harness.strategies.formats import InvalidArgument, _check_count, _Format
from xentcheck.harness.strategies.regimes import (
    IGNORED_SETUPS,
    LONG_SHAPES,
    MASK_TILE,
    REGIMES,
    WIDE_SIZES,
    _Regime,
    _regime,
)
from xentcheck.harness.strategies.sources import _Source


class _Plan(NamedTuple):
    name: str
    spec: _Regime
    rows: tuple[int, int]
    classes: tuple[int, int]
    corpus: tuple[np.ndarray, np.ndarray | None] | None


def _range(
    what: str,
    name: str,
    lo: int | None,
    hi: int | None,
    default: tuple[int, int],
    limits: tuple[int, int],
) -> tuple[int, int]:
    a = default[0] if lo is None else lo
    b = default[1] if hi is None else hi
    if hi is None:
        b = max(b, a)
    if lo is None:
        a = min(a, b)
    a, b = max(a, limits[0]), min(b, limits[1])
    if a > b:
        raise InvalidArgument(
            f"regime {name!r} makes {what} in [{limits[0]}, {limits[1]}]; "
            f"got min_{what}={lo}, max_{what}={hi}"
        )
    return a, b


def _plan(
    name: str,
    min_rows: int | None,
    max_rows: int | None,
    min_classes: int | None,
    max_classes: int | None,
    corpus: str | Path | None,
) -> _Plan:
    spec = _regime(name)
    data = None
    classes = spec.classes
    class_limits = spec.class_limits
    if name == "corpus":
        _, logits, labels = _read_corpus(DEFAULT_CORPUS if corpus is None else corpus)
        data = (logits, labels)
        classes = class_limits = (logits.shape[1], logits.shape[1])
    rows = _range("rows", name, min_rows, max_rows, spec.rows, spec.row_limits)
    cls = _range("classes", name, min_classes, max_classes, classes, class_limits)
    return _Plan(name, spec, rows, cls, data)


def _plans(
    regime: str | None,
    min_rows: int | None,
    max_rows: int | None,
    min_classes: int | None,
    max_classes: int | None,
    corpus: str | Path | None,
) -> tuple[_Plan, ...]:
    for label, value, minimum in (
        ("min_rows", min_rows, 0),
        ("max_rows", max_rows, 0),
        ("min_classes", min_classes, 1),
        ("max_classes", max_classes, 1),
    ):
        if value is not None:
            _check_count(label, value, minimum)
    if max_classes is not None and max_classes > MAX_CLASSES:
        raise InvalidArgument(f"max_classes must be <= {MAX_CLASSES}; got {max_classes}")
    for lo, hi, what in ((min_rows, max_rows, "rows"), (min_classes, max_classes, "classes")):
        if lo is not None and hi is not None and lo > hi:
            raise InvalidArgument(f"min_{what}={lo} is greater than max_{what}={hi}")
    bounds = (min_rows, max_rows, min_classes, max_classes, corpus)
    if regime == "known-defects":
        raise InvalidArgument("known-defects is a fixed corpus, not a strategy: use "
                              "sample('known-defects', dtype=...)")
    if regime is not None:
        return (_plan(regime, *bounds),)
    # drawn from when no regime is named: every one but the fixed corpus of defects and
    # K = 0 (which most code that draws logits does not expect); name them to get them
    names = [r for r in REGIMES if r not in ("known-defects", "no-classes")
             and (r != "corpus" or corpus is not None)]
    plans = []
    for name in names:
        try:
            plans.append(_plan(name, *bounds))
        except InvalidArgument:
            continue  # this regime cannot meet the bounds; the others may
    if not plans:
        raise InvalidArgument("no regime can make logits within the given bounds")
    return tuple(plans)


class _Drawn(NamedTuple):
    logits: np.ndarray
    anchors: np.ndarray | None  # the labels of corpus rows
    setup: int | None  # the ``ignored`` setup (an index of IGNORED_SETUPS)


def _long_shapes(plan: _Plan) -> list[tuple[int, int]]:
    (rlo, rhi), (klo, khi) = plan.rows, plan.classes
    shapes = [(n, k) for n, k in LONG_SHAPES if rlo <= n <= rhi and klo <= k <= khi]
    return shapes or [(rlo, khi)]


def _generate(src: _Source, plan: _Plan, fmt: _Format, slot: int | None) -> _Drawn:
    """Logits of the plan's regime (and the labels of corpus rows), shape drawn first.

    ``slot`` is a sample's case index, which picks the wide size, whether a masked case
    is long, the long-rows shape and the ignored setup; strategies (``slot=None``) draw
    those instead.
    """
    (rlo, rhi), (klo, khi) = plan.rows, plan.classes
    if plan.corpus is not None:
        data, labels = plan.corpus
        n = src.integer(rlo, rhi)
        picked = src.integers(0, data.shape[0] - 1, (n,))
        anchors = None if labels is None else labels[picked]
        return _Drawn(data[picked].astype(fmt.dtype), anchors, None)
    setup = None
    if plan.name == "long-rows":
        shapes = _long_shapes(plan)
        n, k = shapes[src.integer(0, len(shapes) - 1) if slot is None else slot % len(shapes)]
    elif plan.name == "ignored":
        setup = src.integer(0, len(IGNORED_SETUPS) - 1) if slot is None else (
            slot % len(IGNORED_SETUPS))
        rows = IGNORED_SETUPS[setup][4]
        n = min(max(rows, rlo), rhi) if isinstance(rows, int) else src.integer(
            max(rlo, 2), max(rhi, 2))
        k = src.integer(klo, khi)
    elif plan.name == "wide":
        sizes = [s for s in WIDE_SIZES if klo <= s <= khi]
        if slot is None:
            if sizes and src.integer(0, 1) == 0:  # one of the usual vocabulary sizes
                k = sizes[src.integer(0, len(sizes) - 1)]
            else:
                k = src.integer(klo, khi)
            n = src.integer(rlo, rhi)
        else:
            k = sizes[slot % len(sizes)] if sizes else khi
            n = min(max(2 if k <= WIDE_SIZES[0] else 1, rlo), rhi)  # ~6k elements by default
    elif plan.name == "masked":
        long = (src.integer(0, 1) == 0 if slot is None else slot % 2 == 0) and khi > MASK_TILE
        if long:
            tiles = [t for t in range(2 * MASK_TILE, khi + 1, MASK_TILE) if t >= klo]
            if tiles:
                k = tiles[src.integer(0, len(tiles) - 1)]
            else:
                k = src.integer(max(klo, MASK_TILE + 1), khi)
        else:
            k = src.integer(klo, min(khi, max(klo, 16)))
        n = src.integer(rlo, rhi)
    else:
        k = src.integer(klo, khi)
        n = src.integer(rlo, rhi)
    assert plan.spec.build is not None
    return _Drawn(plan.spec.build(src, fmt, n, k), None, setup)
