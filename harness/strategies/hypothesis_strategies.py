"""The Hypothesis strategies: :func:`dtypes`, :func:`logits`, :func:`targets`,
:func:`options` and :func:`cases`, for property tests with shrinking and ``target()``.

Every argument is checked when the strategy is built (:class:`InvalidArgument`); the
draws run the regimes on a :class:`~xentcheck.harness.strategies.sources._DrawSource`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np

from xentcheck.harness.adapters.contract import DTYPES, OPTIONS
from xentcheck.harness.cases import TARGET_KINDS, Case
from xentcheck.harness.strategies.formats import (
    InvalidArgument,
    _check_count,
    _Format,
    _format,
)
from xentcheck.harness.strategies.plans import _generate, _Plan, _plans
from xentcheck.harness.strategies.sources import _DrawSource
from xentcheck.harness.strategies.target_options import (
    Targets,
    _make_options,
    _make_targets,
    _targets_and_options,
)


def dtypes(*, names: Sequence[str] = DTYPES) -> st.SearchStrategy[str]:
    """The case dtypes by name, shrinking towards float64."""
    names = tuple(names)
    if not names:
        raise InvalidArgument("names must not be empty")
    for name in names:
        _format(name)
    return st.sampled_from(names)


def logits(
    *,
    dtype: Any = "float64",
    regime: str | None = None,
    min_rows: int | None = None,
    max_rows: int | None = None,
    min_classes: int | None = None,
    max_classes: int | None = None,
    corpus: str | Path | None = None,
) -> st.SearchStrategy[np.ndarray]:
    """``(N, K)`` logits of ``dtype`` from a regime (any of them, ``corpus`` aside, if None).

    A bound left as None takes the regime's default range (e.g. K in 1..16 for
    ``moderate``, 1024..4096 for ``wide``); one that is given replaces it and is checked
    against what the regime can make at all (``single-class`` has K = 1, ``empty`` has
    N = 0; K <= 131072). ``corpus`` is the file of the ``corpus`` regime (rows are drawn
    from it; default: the built-in MNIST logits); with ``regime=None`` it adds ``corpus``
    to the regimes drawn from. Invalid arguments raise :class:`InvalidArgument` at once.
    """
    fmt = _format(dtype)
    plans = _plans(regime, min_rows, max_rows, min_classes, max_classes, corpus)
    return _logits_draws(fmt, plans)


@st.composite
def _logits_draws(draw: Any, fmt: _Format, plans: tuple[_Plan, ...]) -> np.ndarray:
    plan = draw(st.sampled_from(plans))
    return _generate(_DrawSource(draw), plan, fmt, slot=None).logits


def targets(
    logits_array: np.ndarray,
    *,
    kind: str | None = None,
    dtype: Any = None,
    ignore_index: int | None = None,
) -> st.SearchStrategy[Targets]:
    """Targets for ``logits_array``: :class:`Targets` ``(kind, values)``.

    ``kind`` is one of :data:`TARGET_KINDS` (drawn if None). Class indices are int64
    ``(N,)``; the probability kinds are ``(N, K)`` of ``dtype`` (default: the logits'
    dtype). Each row's class, or the centre of its mass, is drawn among a random class,
    the row's argmax, its argmin and one of its -inf entries. Soft rows sum to exactly 1,
    unnormalized rows to exactly something else in [1/8, 4]. With ``ignore_index`` (index
    targets only) at least one row is set to it.
    """
    z = np.asarray(logits_array)
    if z.ndim != 2:
        raise InvalidArgument(f"logits must be 2-D (N, K); got shape {z.shape}")
    _format(z.dtype)
    fmt = _format(z.dtype if dtype is None else dtype)
    if kind is not None and kind not in TARGET_KINDS:
        raise InvalidArgument(f"kind must be one of {', '.join(TARGET_KINDS)}; got {kind!r}")
    kinds = TARGET_KINDS if kind is None else (kind,)
    if ignore_index is not None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int | np.integer):
            raise InvalidArgument(f"ignore_index must be an int; got {ignore_index!r}")
        if kind not in (None, "indices"):
            raise InvalidArgument(f"ignore_index applies to class indices, not {kind} targets")
        kinds = ("indices",)
    return _target_draws(z.copy(), fmt, kinds, None if ignore_index is None else int(ignore_index))


@st.composite
def _target_draws(
    draw: Any, z: np.ndarray, fmt: _Format, kinds: tuple[str, ...], ignore_index: int | None
) -> Targets:
    kind = draw(st.sampled_from(kinds))
    return Targets(kind, _make_targets(_DrawSource(draw), fmt, z, kind, None, ignore_index))


def options(
    *,
    num_classes: int,
    dtype: Any = "float64",
    target_kind: str = "indices",
    names: Sequence[str] = OPTIONS,
) -> st.SearchStrategy[dict[str, Any]]:
    """Options for ``cross_entropy``: a dict holding some of ``names`` (maybe none).

    ``weight``: ``(num_classes,)`` of ``dtype`` in [0, 2], about a third of them 0;
    ``ignore_index`` (index targets only): -100 or a class; ``label_smoothing``: a multiple
    of 1/64 in [0, 1]; ``reduction``: ``"none"``, ``"sum"`` or ``"mean"``.
    """
    _check_count("num_classes", num_classes, 1)
    fmt = _format(dtype)
    if target_kind not in TARGET_KINDS:
        raise InvalidArgument(
            f"target_kind must be one of {', '.join(TARGET_KINDS)}; got {target_kind!r}"
        )
    unknown = sorted(set(names) - set(OPTIONS))
    if unknown:
        raise InvalidArgument(f"unknown option names {unknown}; known: {', '.join(OPTIONS)}")
    return _option_draws(int(num_classes), fmt, target_kind, tuple(names))


@st.composite
def _option_draws(
    draw: Any, k: int, fmt: _Format, kind: str, names: tuple[str, ...]
) -> dict[str, Any]:
    return _make_options(_DrawSource(draw), fmt, k, kind, names, each_maybe=True)


def cases(
    *,
    dtype: Any = None,
    regime: str | None = None,
    target_kinds: Sequence[str] = TARGET_KINDS,
    with_options: bool = True,
    min_rows: int | None = None,
    max_rows: int | None = None,
    min_classes: int | None = None,
    max_classes: int | None = None,
    corpus: str | Path | None = None,
) -> st.SearchStrategy[Case]:
    """Whole :class:`~xentcheck.harness.cases.Case` s: logits of a regime, a target, maybe options.

    ``dtype`` and ``regime`` are drawn when None (``dtypes()``; every regime but
    ``corpus`` unless ``corpus`` is given); the bounds are those of :func:`logits`. A
    drawn case's id is ``f"{regime}-{dtype}-h{digest}"``, stable for the same contents,
    and its ``seed`` is None: Hypothesis' own seed and database reproduce it.
    """
    fmts = tuple(_format(d) for d in (DTYPES if dtype is None else (dtype,)))
    kinds = tuple(target_kinds)
    if not kinds:
        raise InvalidArgument("target_kinds must not be empty")
    for kind in kinds:
        if kind not in TARGET_KINDS:
            raise InvalidArgument(
                f"target kinds must be among {', '.join(TARGET_KINDS)}; got {kind!r}"
            )
    if not isinstance(with_options, bool):
        raise InvalidArgument(f"with_options must be a bool; got {with_options!r}")
    plans = _plans(regime, min_rows, max_rows, min_classes, max_classes, corpus)
    return _case_draws(fmts, plans, kinds, with_options)


@st.composite
def _case_draws(
    draw: Any,
    fmts: tuple[_Format, ...],
    plans: tuple[_Plan, ...],
    kinds: tuple[str, ...],
    with_options: bool,
) -> Case:
    fmt = draw(st.sampled_from(fmts))
    plan = draw(st.sampled_from(plans))
    src = _DrawSource(draw)
    z, anchors, setup = _generate(src, plan, fmt, slot=None)
    kind, target, opts = _targets_and_options(
        src, fmt, z, anchors, setup if with_options else None, draw(st.sampled_from(kinds)),
        OPTIONS if with_options else (), each_maybe=True)
    case = Case(
        logits=z,
        target=target,
        target_kind=kind,
        options=opts,
        dtype=fmt.name,
        regime=plan.name,
        case_id="pending",
    )
    return dataclasses.replace(case, case_id=f"{plan.name}-{fmt.name}-h{case.digest()}")
