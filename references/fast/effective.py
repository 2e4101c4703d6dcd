"""Gold's effective target u of one cross-entropy call, in double-double arithmetic.

Used by the longdouble evaluator (:mod:`xentcheck.references.fast.extended`): class
weights, label smoothing and ignored rows folded into u, scaled by 2**_S like every
exp-proportional quantity there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xentcheck.references.fast.doubledouble import (
    _LD,
    _dd_add,
    _dd_div,
    _dd_full,
    _dd_mul,
    _ld_to_dd,
    _row_sums,
    _two_sum,
)
from xentcheck.references.fast.fallback import _BIG
from xentcheck.references.fast.inputs import _Options
from xentcheck.references.fast.kernels import _S

if TYPE_CHECKING:
    from xentcheck.references.fast.extended import _Extended


class _Effective:
    """Gold's effective target u of one call, times 2**_S, in double-double arithmetic.

    Class indices: u_c = A_c + B [c = t] with A = spread w (label smoothing, spread =
    eps / K) and B = (1 - eps) w_t; probabilities: u = w ((1 - eps) y + spread), dense."""

    def __init__(self, ext: _Extended, o: _Options) -> None:
        n, k = ext.shape
        sc = 2.0**_S
        eps = np.float64(o.eps)
        self.options = o
        self.index = o.target.index
        self.ignored = o.target.ignored
        keep = _two_sum(np.float64(1.0), -eps)  # exact
        spread = _dd_div(eps, np.float64(0.0), np.float64(k), np.float64(0.0))
        self.spread = spread
        w = o.weight
        self.w = None if w is None else (_ld_to_dd(w) if w.dtype == _LD else (w, np.zeros(k)))
        with np.errstate(all="ignore"):
            if self.index is not None:
                idx = self.index
                if self.w is None:
                    self.B = _dd_full((keep[0] * sc, keep[1] * sc), n)
                else:
                    bh, bl = _dd_mul(keep[0], keep[1], self.w[0][idx], self.w[1][idx])
                    self.B = (bh * sc, bl * sc)
                if eps:
                    if self.w is None:
                        self.A: tuple[np.ndarray, np.ndarray] | None = (
                            np.full(k, spread[0] * sc), np.full(k, spread[1] * sc))
                        self.U = _dd_full((sc, 0.0), n)  # (1 - eps) + K eps / K = 1
                        self.W = (np.float64(k), np.float64(0.0))
                    else:
                        ah, al = _dd_mul(spread[0], spread[1], *self.w)
                        self.A = (ah * sc, al * sc)
                        wh, wl = _row_sums(self.w[0][None, :], self.w[1][None, :])
                        self.W = (wh[0], wl[0])
                        xh, xl = _dd_mul(spread[0], spread[1], wh[0], wl[0])
                        self.U = _dd_add(np.full(n, xh * sc), np.full(n, xl * sc), *self.B)
                    big = np.full(n, not (np.abs(self.A[0]) <= _BIG * sc).all())
                else:
                    self.A = None
                    self.U = self.B
                    big = np.zeros(n, bool)
                self.nan = np.isnan(self.U[0])
                self.big = (big | ~(np.abs(self.B[0]) <= _BIG * sc)) & ~self.nan
            else:
                y = o.target.probs
                assert y is not None
                yh, yl = _ld_to_dd(y) if y.dtype == _LD else (y, np.zeros_like(y))
                yh, yl = yh * sc, yl * sc
                if eps or self.w is not None:
                    yh, yl = _dd_mul(np.full_like(yh, keep[0]), np.full_like(yh, keep[1]),
                                     yh, yl)
                    if eps:
                        yh, yl = _dd_add(yh, yl, np.full_like(yh, spread[0] * sc),
                                         np.full_like(yh, spread[1] * sc))
                    if self.w is not None:
                        yh, yl = _dd_mul(yh, yl, np.broadcast_to(self.w[0], yh.shape),
                                         np.broadcast_to(self.w[1], yh.shape))
                self.u = (yh, yl)
                self.A = None
                rows = np.arange(n)
                self.uj = (yh[rows, ext.j], yl[rows, ext.j])
                off_h, off_l = yh.copy(), yl.copy()
                off_h[rows, ext.j] = 0
                off_l[rows, ext.j] = 0
                self.others_j = _row_sums(off_h, off_l)
                self.U = _dd_add(*self.others_j, *self.uj)
                self.nan = np.isnan(yh).any(axis=1) | np.isnan(yl).any(axis=1)
                self.big = ~(np.abs(yh) <= _BIG * sc).all(axis=1) & ~self.nan

    def u_at(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """u (scaled) at one column per row."""
        n = len(cols)
        rows = np.arange(n)
        if self.index is None:
            return self.u[0][rows, cols], self.u[1][rows, cols]
        hit = cols == self.index
        if self.A is None:
            return np.where(hit, self.B[0], 0.0), np.where(hit, self.B[1], 0.0)
        ah, al = self.A[0][cols], self.A[1][cols]
        sh, sl = _dd_add(ah, al, *self.B)
        return np.where(hit, sh, ah), np.where(hit, sl, al)

    def others_at(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sum_{c' != c} u_c' (scaled) at one column per row (the argmax for
        probabilities), summed rather than U - u_c, which may cancel."""
        if self.index is None:
            return self.others_j
        n = len(cols)
        off_target = cols != self.index
        bh = np.where(off_target, self.B[0], 0.0)
        bl = np.where(off_target, self.B[1], 0.0)
        if self.A is None:
            return bh, bl
        sc = 2.0**_S
        if self.w is None:
            rest = (np.full(n, self.W[0] - 1), np.zeros(n))  # K - 1, exact
        else:
            rest = _dd_add(np.full(n, self.W[0]), np.full(n, self.W[1]),
                           -self.w[0][cols], -self.w[1][cols])
        ah, al = _dd_mul(np.full(n, self.spread[0] * sc), np.full(n, self.spread[1] * sc),
                         *rest)
        return _dd_add(ah, al, bh, bl)

    def infinite_terms(self, ext: _Extended) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a term u_c log p_c = +inf (u_c > 0 at a -inf logit) or -inf."""
        at = ext.zh == -np.inf
        if self.index is None:
            sign = np.sign(self.u[0])
        else:
            n, k = ext.shape
            sign = (np.zeros((n, k)) if self.A is None
                    else np.broadcast_to(np.sign(self.A[0]), (n, k)).copy())
            uh, _ = self.u_at(self.index)
            sign[np.arange(n), self.index] = np.sign(uh)
        return (at & (sign > 0)).any(axis=1), (at & (sign < 0)).any(axis=1)

    def target_rows(self, rows: np.ndarray) -> np.ndarray:
        """The caller's target at some rows (for gold)."""
        if self.index is not None:
            return self.index[rows]
        assert self.options.target.probs is not None
        return self.options.target.probs[rows]

    def denominator(self) -> tuple[np.float64, np.float64]:
        """The divisor of reduction="mean": sum of w_t over kept rows, or their count."""
        kept = ~self.ignored
        if self.index is not None and self.w is not None:
            idx = self.index[kept]
            h, lo = _row_sums(self.w[0][idx][None, :], self.w[1][idx][None, :])
            return np.float64(h[0]), np.float64(lo[0])
        return np.float64(np.count_nonzero(kept)), np.float64(0.0)
