"""The targets and options of a case, drawn from a source for given logits.

Targets sit on a class chosen per row (random, the argmax, the argmin or a -inf entry);
probability targets are exact in the dtype (soft rows sum to exactly 1). The ``ignored``
regime's setups and K = 0 have their own targets and options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from xentcheck.harness.adapters.contract import OPTIONS, REDUCTIONS
from xentcheck.harness.strategies.formats import _Format
from xentcheck.harness.strategies.regimes import IGNORED_SETUPS
from xentcheck.harness.strategies.sources import _Source


class Targets(NamedTuple):
    """A drawn target: its kind (one of :data:`TARGET_KINDS`) and its values."""

    kind: str
    values: np.ndarray


def _anchors(src: _Source, z: np.ndarray) -> np.ndarray:
    """A class per row for the target to sit on: random, the argmax, the argmin or a -inf."""
    n, k = z.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    mode = src.integers(0, 3, (n,))
    out = src.integers(0, k - 1, (n,))
    with np.errstate(invalid="ignore"):  # NaN bit patterns (``bits``)
        wide = z.astype(np.float64)
    for i in range(n):
        row = wide[i]
        finite_or_inf = ~np.isnan(row)
        if mode[i] == 1 and finite_or_inf.any():
            out[i] = int(np.argmax(np.where(finite_or_inf, row, -np.inf)))
        elif mode[i] == 2 and finite_or_inf.any():
            out[i] = int(np.argmin(np.where(finite_or_inf, row, np.inf)))
        elif mode[i] == 3:
            masked = np.flatnonzero(row == -np.inf)
            if masked.size:
                out[i] = int(masked[out[i] % masked.size])
    return out


def _make_targets(
    src: _Source,
    fmt: _Format,
    z: np.ndarray,
    kind: str,
    anchors: np.ndarray | None = None,
    ignore_index: int | None = None,
) -> np.ndarray:
    n, k = z.shape
    anchor = _anchors(src, z) if anchors is None else np.asarray(anchors, dtype=np.int64)
    if kind == "indices":
        t = anchor.copy()
        if ignore_index is not None and n:
            ignored = src.integers(0, 2, (n,)) == 0
            ignored[src.integer(0, n - 1)] = True  # at least one row is ignored
            t[ignored] = ignore_index
        return t
    y = np.zeros((n, k))
    if kind == "one-hot":
        y[np.arange(n), anchor] = 1.0
    elif kind in ("soft", "unnormalized"):
        # Integer counts over 2**m with m = p - 2: every value count / 2**m with count
        # <= 4 * 2**m = 2**p is exact in the dtype, so soft rows sum to exactly 1 and
        # unnormalized rows to exactly T / 2**m with T != 2**m (between 1/8 and 4).
        denominator = 2 ** (fmt.precision - 2)
        for i in range(n):
            support = src.distinct(k, src.integer(1, min(k, 16)))
            if anchor[i] not in support:
                support[0] = anchor[i]
            total = denominator
            if kind == "unnormalized":
                low = src.integer(0, 1) == 0
                scale = src.real(0.125, 0.9375) if low else src.real(1.0625, 4.0)
                total = int(round(scale * denominator))
            cuts = np.sort(src.integers(0, total, (support.size - 1,)))
            counts = np.diff(np.concatenate(([0], cuts, [total])))
            y[i, support] = counts / denominator
    return y.astype(fmt.dtype)


def _ignored_case(src: _Source, fmt: _Format, z: np.ndarray, setup: int
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """Class-index targets and options of an ``ignored`` case (see IGNORED_SETUPS)."""
    n, k = z.shape
    which, reduction, weighted, smoothed, rows = IGNORED_SETUPS[setup]
    ignore = -100 if which == "-100" else src.integer(0, k - 1)
    target = _anchors(src, z)
    if rows == "some":  # at least one row ignored and, with two rows or more, one kept
        ignored = src.integers(0, 1, (n,)) == 1
        ignored[0] = True
        if n > 1:
            ignored[n - 1] = False
            target[n - 1] = (ignore + 1) % k if target[n - 1] == ignore else target[n - 1]
    else:
        ignored = np.ones(n, dtype=bool)
    target[ignored] = ignore
    options: dict[str, Any] = {"ignore_index": ignore, "reduction": reduction}
    if weighted:
        options["weight"] = src.floats(0.25, 2.0, (k,)).astype(fmt.dtype)
    if smoothed:
        options["label_smoothing"] = src.integer(1, 32) / 64
    return target, options


def _make_options(
    src: _Source, fmt: _Format, k: int, kind: str, names: Sequence[str], *, each_maybe: bool
) -> dict[str, Any]:
    """Values for the options in ``names`` (each kept or not at random if ``each_maybe``)."""
    out: dict[str, Any] = {}
    for name in OPTIONS:
        if name not in names or (name == "ignore_index" and kind != "indices"):
            continue
        if each_maybe and src.integer(0, 1) == 0:
            continue
        if name == "weight":
            w = src.floats(0.0, 2.0, (k,))
            w[src.integers(0, 3, (k,)) == 0] = 0.0  # zero weights: whole classes dropped
            out[name] = w.astype(fmt.dtype)
        elif name == "ignore_index":
            out[name] = -100 if src.integer(0, 1) == 0 else src.integer(0, k - 1)
        elif name == "label_smoothing":
            out[name] = src.integer(0, 64) / 64  # exact in every dtype, 0 and 1 included
        else:
            out[name] = REDUCTIONS[src.integer(0, len(REDUCTIONS) - 1)]
    return out


def _targets_and_options(
    src: _Source, fmt: _Format, z: np.ndarray, anchors: np.ndarray | None, setup: int | None,
    kind: str, names: Sequence[str], *, each_maybe: bool
) -> tuple[str, np.ndarray, dict[str, Any]]:
    """(target kind, target, options) of a case: the ``ignored`` setups and K = 0 have
    their own; every other case gets ``kind`` and options among ``names``."""
    if setup is not None:
        target, opts = _ignored_case(src, fmt, z, setup)
        return "indices", target, opts
    if z.shape[1] == 0:  # no classes: no class to index, no option to apply
        return "all-zero", np.zeros(z.shape, dtype=fmt.dtype), {}
    opts = _make_options(src, fmt, z.shape[1], kind, names, each_maybe=each_maybe)
    return kind, _make_targets(src, fmt, z, kind, anchors, opts.get("ignore_index")), opts
