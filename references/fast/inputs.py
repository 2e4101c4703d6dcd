"""The inputs of the fast tier, validated, and the kind of each row of logits.

Logits, class weights, targets and options are checked here with gold's messages;
:class:`_Kinds` sorts the rows into NaN, +inf, undefined (all -inf) and finite ones, and
:func:`_row_extremes` finds each row's argmax and the exact difference d = z - m that both
evaluators start from (:func:`_difference_low`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xentcheck.references.fast import jit
from xentcheck.references.fast.doubledouble import _F, _LD, _dd_to_ld
from xentcheck.references.fast.kernels import _blocks, _log1p_dd, _scratch

_REDUCTIONS = ("none", "sum", "mean")


# ------------------------------------------------------------------------- input


def _check_options(label_smoothing: float, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing!r}")


def _float_array(array: Any, what: str) -> np.ndarray:
    """A real array as float64 (exact for every narrower format) or longdouble."""
    a = np.asarray(array)
    if a.dtype == _LD or a.dtype == _F:
        return a
    if a.dtype.kind not in "fiuV" or (a.dtype.kind == "V" and a.dtype.itemsize > 8):
        raise ValueError(f"{what} must be a real floating-point array, got dtype {a.dtype}")
    return a.astype(_F)


def _weights(weight: Any, k: int) -> np.ndarray | None:
    if weight is None:
        return None
    if np.ndim(weight) != 1 or np.shape(weight)[0] != k:
        raise ValueError(f"weight must have shape ({k},), got shape {np.shape(weight)}")
    return _float_array(weight, "weight")


class _Target:
    """A validated target: class indices (with the ignored rows) or a probability array."""

    def __init__(self, target: Any, n: int, k: int, single: bool,
                 ignore_index: int | None) -> None:
        t = np.asarray(target)
        self.index: np.ndarray | None = None
        self.probs: np.ndarray | None = None
        if t.dtype.kind in "iu":
            expected = () if single else (n,)
            if t.shape != expected:
                raise ValueError(
                    f"class-index target must have shape {expected}, got shape {t.shape}")
            index = t.reshape(-1).astype(np.int64)
            self.ignored = ((index == ignore_index) if ignore_index is not None
                            else np.zeros(n, bool))
            bad = ~self.ignored & ((index < 0) | (index >= k))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"target[{row}] = {index[row]} is out of range for {k} classes (row {row})")
            self.index = np.where(self.ignored, 0, index)
            return
        y = _float_array(t, "probability target")
        if t.shape != ((k,) if single else (n, k)):
            raise ValueError(
                f"probability target must have the logits' shape ({n}, {k}), "
                f"got shape {t.shape}")
        y = y.reshape(n, k)
        negative = y < 0
        if negative.any():
            row, c = (int(v[0]) for v in np.nonzero(negative))
            raise ValueError(
                f"target row {row} has a negative probability {float(y[row, c])!r} at class {c}")
        self.probs = y
        self.ignored = np.zeros(n, bool)


class _Options:
    """Validated cross-entropy options with the target."""

    def __init__(self, target: Any, n: int, k: int, single: bool, weight: Any,
                 ignore_index: int | None, label_smoothing: float, reduction: str) -> None:
        _check_options(label_smoothing, reduction)
        self.weight = _weights(weight, k)
        self.target = _Target(target, n, k, single, ignore_index)
        self.eps = float(label_smoothing)
        self.reduction = reduction
        self.raw = {"weight": weight, "ignore_index": ignore_index,
                    "label_smoothing": label_smoothing}


# --------------------------------------------------------------------------- row kinds


class _Kinds:
    """The kind of each row: NaN, +inf (the limit over the +inf entries), undefined (all
    -inf) or finite (at least one finite logit, none NaN or +inf)."""

    def __init__(self, z: np.ndarray, finite: bool | None = None) -> None:
        """``finite``: already known that every entry is finite (or None: look)."""
        n = z.shape[0]
        self.all_finite = finite if finite is not None else (
            bool(np.isfinite(z).all()) if z.size else True)
        if self.all_finite:
            self.nan = self.posinf = self.undefined = np.zeros(n, bool)
            self.n_posinf = np.zeros(n, np.int64)
            self.neginf = False
        else:
            self.nan = np.isnan(z).any(axis=1)
            self.n_posinf = np.count_nonzero(z == np.inf, axis=1)
            self.posinf = (self.n_posinf > 0) & ~self.nan
            self.undefined = (z == -np.inf).all(axis=1) & ~self.nan
            self.neginf = bool((z == -np.inf).any())
        self.special = self.nan | self.posinf | self.undefined
        self.any_special = bool(self.special.any())


def _posinf_limits(z: np.ndarray, n_posinf: np.ndarray, dtype: Any) -> tuple[Any, ...]:
    """softmax, 1 - softmax and log softmax of +inf rows (the limit), in ``dtype``."""
    count = np.maximum(n_posinf, 1)
    share = (1 / count.astype(dtype))[:, None]
    if dtype == _LD:
        lh, ll = _log1p_dd((count - 1).astype(_F), np.zeros(len(count)))
        log_share = -_dd_to_ld(lh, ll)[:, None]
    else:
        log_share = -_log1p_dd((count - 1).astype(_F), np.zeros(len(count)))[0][:, None]
    hit = z == np.inf
    p = np.where(hit, share, dtype(0))
    return p, 1 - p, np.where(hit, log_share, dtype(-np.inf))


# ------------------------------------------------------------- row extremes, d = z - m


def _difference_low(z: np.ndarray, m: np.ndarray, dh: np.ndarray, mode: np.ndarray | None,
                    tmp: np.ndarray, dl: np.ndarray) -> None:
    """dl (in place) with dh + dl = z - m exactly, for dh = fl(z - m): Fast2Sum where
    every row of the block has |z| >= |m| (``mode`` 1) or |z| <= |m| (2), else TwoSum
    (also for ``mode=None``)."""
    if mode is not None and (mode == 1).all():
        np.subtract(dh, z, out=tmp)
        np.subtract(np.negative(m), tmp, out=dl)
    elif mode is not None and (mode == 2).all():
        np.add(dh, m, out=tmp)
        np.subtract(z, tmp, out=dl)
    else:
        np.subtract(dh, z, out=tmp)
        np.subtract(dh, tmp, out=dl)
        np.subtract(z, dl, out=dl)
        np.add(m, tmp, out=tmp)
        np.subtract(dl, tmp, out=dl)


#: Rows at least this long have their second largest entry found row by row, in place
#: (a Python step per row is nothing next to a row's pass); shorter ones block by block.
_WIDE = 4096


def _second_max(z: np.ndarray, j: np.ndarray, m: np.ndarray,
                found: np.ndarray | None = None) -> np.ndarray:
    """Per row of z (N, K): the largest z - m off column j (float64, -inf where there is
    none), block by block, or from ``found``, that largest entry as _row_extremes found
    it; bounds the row sums' terms (doubledouble._grid_bound)."""
    if found is not None:
        with np.errstate(all="ignore"):
            return found - m
    n, k = z.shape
    z2 = np.full(n, -np.inf)
    if k >= _WIDE and n:  # long rows: the two sides of column j, read in place
        for r, c in enumerate(j.tolist()):
            if c > 0:
                z2[r] = z[r, :c].max()
            if c < k - 1:
                z2[r] = max(z2[r], z[r, c + 1:].max())
        with np.errstate(all="ignore"):
            return z2 - m
    for rs, cs in _blocks(n, k):
        block = _scratch((rs.stop - rs.start, cs.stop - cs.start)).f[0]
        block[...] = z[rs, cs]
        col = j[rs] - cs.start
        inside = np.flatnonzero((col >= 0) & (col < cs.stop - cs.start))
        block[inside, col[inside]] = -np.inf
        np.maximum(z2[rs], block.max(axis=1), out=z2[rs])
    with np.errstate(all="ignore"):
        return z2 - m


def _row_extremes(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          _Kinds, np.ndarray | None]:
    """The logits with special rows (NaN, +inf, all -inf) zeroed, and per row the argmax,
    the max, the smallest finite entry (-inf kept out) and the row kinds; then the
    largest entry off the argmax where the compiled engine found it in the same pass
    (every entry finite, the input large enough), else None (:func:`_second_max`)."""
    rows = np.arange(a.shape[0])
    found = jit.finite_row_extremes(a)
    if found is not None:
        j, zmin, off = found
        return a, j, a[rows, j], zmin, _Kinds(a, True), off
    # the max is NaN or +inf, or the min -inf or NaN, exactly where some entry is
    j = np.argmax(a, axis=1)
    m = a[rows, j]
    zmin = a.min(axis=1)
    kinds = _Kinds(a, bool(np.isfinite(m).all() and np.isfinite(zmin).all()))
    z = a
    if kinds.any_special:
        z = np.where(kinds.special[:, None], a.dtype.type(0), a)
        j = np.argmax(z, axis=1)
        m = z[rows, j]
        zmin = z.min(axis=1)
    if kinds.neginf:
        zmin = np.min(np.where(z == -np.inf, np.inf, z), axis=1)
    return z, j, m, zmin, kinds, None
