"""The fast tier's float64 evaluator: the same formulas in plain float64, float64 outputs.

:class:`_Plain` keeps d = z - m exact as a pair, so exp(d) stays relatively accurate, and
runs the table-driven exp kernel (:func:`_plain_exp_into`) block by block: a few float64
ulps, enough to grade float32, float16 and bfloat16 candidates.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from xentcheck.references.fast import jit
from xentcheck.references.fast.doubledouble import (
    _F,
    _grid_add,
    _grid_bound,
    _grid_sigmas,
    _grid_total,
    _two_sum,
)
from xentcheck.references.fast.inputs import (
    _difference_low,
    _Options,
    _posinf_limits,
    _row_extremes,
    _second_max,
)
from xentcheck.references.fast.kernels import (
    _CLAMP,
    _blocks,
    _exp_into,
    _log1p_dd,
    _Scratch,
    _scratch,
)

#: The float64 work's exp carries its values times 2**_PLAIN_S inside the kernel, so that
#: results down to float64's subnormals come out of one final scaling.
_PLAIN_S = 64


def _plain_exp_into(dh: np.ndarray, dl: np.ndarray, out: np.ndarray, ws: _Scratch) -> None:
    """out = exp(dh + dl) in float64 for d = dh + dl <= 0 (or NaN), with the table kernel:
    within about an ulp, and the same bits on every machine (NumPy's exp is not)."""
    x = np.maximum(dh, _CLAMP, out=ws.f[3])  # exp is 0 below _CLAMP; NaN stays NaN
    low = None
    if dl is not None:
        low = ws.f[4]
        np.copyto(low, dl)
        np.copyto(low, 0.0, where=dh < _CLAMP)
    _exp_into(x, low, out, ws.f[6], ws, _PLAIN_S, True)
    out += ws.f[6]
    out *= 2.0**-_PLAIN_S


class _Plain:
    """The float64 work: the same formulas in plain float64 (d = z - m kept exact, so
    exp(d) = exp(dh) (1 + dl) stays relatively accurate), in blocks, float64 outputs."""

    def __init__(self, a: np.ndarray) -> None:
        z = a if a.dtype in (_F, np.float32) else a.astype(_F)
        n, k = z.shape
        self.a = z
        self.shape = (n, k)
        with np.errstate(all="ignore"):
            z, self.j, m, zmin, self.kinds, self.off = _row_extremes(z)
            self.z = z
            self.m = m.astype(_F)
            zmin = zmin.astype(_F)
            #: per row: 1 if m <= 0 (so |z| >= |m|), 2 if |z| <= m, else 0 (see _d_block)
            self.d_mode = np.where(self.m <= 0, 1, np.where(zmin >= -self.m, 2, 0))
        self.keep = False
        self.e: np.ndarray | None = None
        self._sums: np.ndarray | None = None

    def _d_block(self, rs: slice, cs: slice, ws: _Scratch) -> tuple[np.ndarray, np.ndarray]:
        """d = z - m on a block as dh + dl (Fast2Sum or TwoSum; dl = 0 where not finite)."""
        dh, dl, tmp = ws.f[0], ws.f[1], ws.f[2]
        z = self.z[rs, cs]
        m = self.m[rs, None]
        np.subtract(z, m, out=dh)
        mode = self.d_mode[rs]
        _difference_low(z, m, dh, mode, tmp, dl)
        if not self.kinds.all_finite:
            np.copyto(dl, 0.0, where=~np.isfinite(dl))
        return dh, dl

    def sums(self, keep: bool = False) -> np.ndarray:
        """s per row: the sum of exp(d) off the argmax (with ``keep``, exp(d) is kept).

        The terms are added on the row grids of
        :func:`~xentcheck.references.fast.doubledouble._grid_sigmas` (exactly, in any
        order; s is their sum rounded once): the compiled engine, where there is one,
        gives the same bits."""
        if self._sums is not None:
            return self._sums
        n, k = self.shape
        sigmas = _grid_sigmas(_grid_bound(_second_max(self.z, self.j, self.m, self.off), 0), k)
        if keep or self.keep:
            self.e = np.empty((n, k))
        if jit.usable(self):
            self._sums = _grid_total(jit.plain_row_sums(self, sigmas, _PLAIN_S))[0]
            return self._sums
        acc = np.zeros(sigmas.shape)
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                dh, dl = self._d_block(rs, cs, ws)
                e = self.e[rs, cs] if self.e is not None else ws.f[5]
                _plain_exp_into(dh, dl, e, ws)
                col = self.j[rs] - cs.start
                inside = np.flatnonzero((col >= 0) & (col < cs.stop - cs.start))
                e[inside, col[inside]] = 0.0
                terms = e
                if self.e is not None:  # the kept exp(d) stays as it is
                    terms = ws.f[7]
                    np.copyto(terms, e)
                _grid_add(terms, None, sigmas[:, rs], acc[:, rs], ws.f[2], ws.f[3])
                e[inside, col[inside]] = 1.0
        self._sums = _grid_total(acc)[0]
        return self._sums

    @functools.cached_property
    def L(self) -> np.ndarray:
        s = self.sums()
        with np.errstate(all="ignore"):
            return np.where(np.isfinite(s), _log1p_dd(s, np.zeros_like(s))[0], s)

    def _special(self, out: np.ndarray, which: int) -> np.ndarray:
        kinds = self.kinds
        out[kinds.nan | kinds.undefined] = np.nan
        if kinds.posinf.any():
            out[kinds.posinf] = _posinf_limits(self.a, kinds.n_posinf, _F)[which][kinds.posinf]
        return out

    def logsumexp(self) -> np.ndarray:
        out = self.m + self.L
        kinds = self.kinds
        out[kinds.nan] = np.nan
        out[kinds.undefined] = -np.inf
        out[kinds.posinf] = np.inf
        return out

    def _log_softmax_block(self, rs: slice, cs: slice, ws: _Scratch, out: np.ndarray) -> None:
        """(d - log1p(s)) + dl on a block (the row sums must be taken: they use ws too)."""
        dh, dl = self._d_block(rs, cs, ws)
        np.subtract(dh, self.L[rs, None], out=out)
        out += dl

    def log_softmax(self) -> np.ndarray:
        n, k = self.shape
        self.sums()
        out = np.empty((n, k))
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                self._log_softmax_block(rs, cs, ws, out[rs, cs])
        out[np.arange(n), self.j] = -self.L
        return self._special(out, 2)

    def _p_block(self, rs: slice, cs: slice, ws: _Scratch, out: np.ndarray) -> None:
        if self.e is not None:
            np.divide(self.e[rs, cs], self.den[rs, None], out=out)
            return
        dh, dl = self._d_block(rs, cs, ws)
        _plain_exp_into(dh, dl, out, ws)
        out /= self.den[rs, None]

    @functools.cached_property
    def den(self) -> np.ndarray:
        return 1 + self.sums()

    def _e_at(self, cols: np.ndarray) -> np.ndarray:
        """exp(d) at one column per row."""
        rows = np.arange(self.shape[0])
        with np.errstate(all="ignore"):
            dh, dl = _two_sum(self.z[rows, cols].astype(_F), -self.m)
            e = np.empty(len(rows))
            _plain_exp_into(dh, np.where(np.isfinite(dl), dl, 0.0), e, _scratch(e.shape))
            return e

    def softmax(self) -> np.ndarray:
        self.sums(keep=True)
        n, k = self.shape
        out = np.empty((n, k))
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                self._p_block(rs, cs, _scratch((rs.stop - rs.start, cs.stop - cs.start)),
                              out[rs, cs])
            out[np.arange(n), self.j] = 1 / self.den
        return self._special(out, 0)

    # -------------------------------------------------------------- targets

    def _u(self, o: _Options, rows: Any = slice(None), cols: Any = slice(None)) -> np.ndarray:
        """The effective target at some rows (and columns), dense."""
        k = self.shape[1]
        w = np.ones(k) if o.weight is None else o.weight.astype(_F)
        eps = o.eps
        if o.target.index is not None:
            idx = o.target.index[rows]
            width = len(np.arange(k)[cols])
            u = (np.broadcast_to(w[cols] * (eps / k), (len(idx), width)).copy() if eps
                 else np.zeros((len(idx), width)))
            at = idx - (cols.start or 0)
            hit = np.flatnonzero((at >= 0) & (at < width))
            u[hit, at[hit]] += (1 - eps) * w[idx[hit]]
        else:
            assert o.target.probs is not None
            y = o.target.probs[rows, cols].astype(_F)
            u = w[cols] * ((1 - eps) * y + eps / k) if eps else w[cols] * y
        u[o.target.ignored[rows]] = 0
        return u

    def _den(self, o: _Options) -> float:
        kept = ~o.target.ignored
        if o.target.index is not None and o.weight is not None:
            return float(o.weight.astype(_F)[o.target.index][kept].sum())
        return float(np.count_nonzero(kept))

    def _u_rows(self, o: _Options) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row: sum u, u at the argmax, sum_{c != j} u_c, and whether u holds a NaN."""
        n, k = self.shape
        total, uj, nan = np.zeros(n), np.zeros(n), np.zeros(n, bool)
        for rs, cs in _blocks(n, k):
            u = self._u(o, rs, cs)
            total[rs] += u.sum(axis=1)
            nan[rs] |= np.isnan(u).any(axis=1)
            col = self.j[rs] - cs.start
            inside = np.flatnonzero((col >= 0) & (col < cs.stop - cs.start))
            uj[rs.start + inside] = u[inside, col[inside]]
        with np.errstate(all="ignore"):
            others = total - uj
            if o.target.index is None:  # summed without u_j (it may hold nearly all of it)
                others = np.zeros(n)
                for rs, cs in _blocks(n, k):
                    u = self._u(o, rs, cs)
                    col = self.j[rs] - cs.start
                    inside = np.flatnonzero((col >= 0) & (col < cs.stop - cs.start))
                    u[inside, col[inside]] = 0
                    others[rs] += u.sum(axis=1)
        return total, uj, others, nan

    def _index_terms(self, o: _Options) -> tuple[Any, ...]:
        """Class-index targets: u_c = A_c + B [c = t] (A = eps w / K, B = (1 - eps) w_t),
        U = sum u, W = sum w, and the rows whose u holds a NaN."""
        n, k = self.shape
        w = np.ones(k) if o.weight is None else o.weight.astype(_F)
        idx = o.target.index
        assert idx is not None
        eps = o.eps
        b = (1 - eps) * w[idx]
        if eps:
            a = w * (eps / k)
            total = w.sum()
            u_total = eps * total / k + b
            nan = np.isnan(u_total)
        else:
            a, total, u_total, nan = None, 0.0, b, np.isnan(b)
        return a, b, u_total, total, w, nan

    def cross_entropy(self, o: _Options) -> Any:
        n, k = self.shape
        ignored = o.target.ignored
        rows = np.arange(n)
        with np.errstate(all="ignore"):
            if o.target.index is not None and not o.eps:
                # -u_t log p_t = B (log1p(s) - d_t), 0 where B = 0
                t = o.target.index
                _, b, _, _, _, u_nan = self._index_terms(o)
                zt = self.z[rows, t].astype(_F)
                dh, dl = _two_sum(zt, -self.m)
                dl = np.where(np.isfinite(dl), dl, 0.0)
                logp_t = np.where(t == self.j, -self.L, (dh - self.L) + dl)
                if self.kinds.posinf.any():
                    limit = _posinf_limits(self.a, self.kinds.n_posinf, _F)[2]
                    logp_t = np.where(self.kinds.posinf, limit[rows, t], logp_t)
                losses = np.where(b != 0, -b * logp_t, 0.0)
            else:
                self.sums()
                losses, u_nan = np.zeros(n), np.zeros(n, bool)
                limits = (_posinf_limits(self.a, self.kinds.n_posinf, _F)[2]
                          if self.kinds.posinf.any() else None)
                for rs, cs in _blocks(n, k):
                    ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                    logp = ws.f[5]
                    self._log_softmax_block(rs, cs, ws, logp)
                    col = self.j[rs] - cs.start
                    inside = np.flatnonzero((col >= 0) & (col < cs.stop - cs.start))
                    logp[inside, col[inside]] = -self.L[rs][inside]
                    if limits is not None:
                        logp[...] = np.where(self.kinds.posinf[rs, None], limits[rs, cs], logp)
                    u = self._u(o, rs, cs)
                    u_nan[rs] |= np.isnan(u).any(axis=1)
                    losses[rs] += np.where(u != 0, -u * logp, 0.0).sum(axis=1)
        losses[(self.kinds.nan | self.kinds.undefined | u_nan) & ~ignored] = np.nan
        losses[ignored] = 0
        if o.reduction == "none":
            return losses
        total = np.float64(losses.sum())
        if o.reduction == "sum":
            return total
        den = self._den(o)
        return np.float64(np.nan) if den == 0 else np.float64(total / den)

    def cross_entropy_grad(self, o: _Options) -> np.ndarray:
        """Off the argmax p_c (U - u_c) - u_c (1 - p_c) = p_c U - u_c; the argmax column
        (and the target column of class indices) with that formula, 1 - p_j = s / (1 + s)
        and sum_{c != j} u_c summed directly."""
        self.sums(keep=True)
        n, k = self.shape
        rows, j = np.arange(n), self.j
        g = np.empty((n, k))
        with np.errstate(all="ignore"):
            if o.target.index is not None:
                t = o.target.index
                a, b, u_total, total, w, u_nan = self._index_terms(o)
                for rs, cs in _blocks(n, k):
                    block = g[rs, cs]
                    self._p_block(rs, cs, _scratch(block.shape), block)
                    block *= u_total[rs, None]
                    if a is not None:
                        block -= a[cs]
                pt = self._e_at(t) / self.den
                for cols, p, q in ((t, pt, 1 - pt), (j, 1 / self.den, self.sums() / self.den)):
                    hit = cols == t
                    uc = (a[cols] if a is not None else 0.0) + np.where(hit, b, 0.0)
                    others = np.where(hit, 0.0, b)
                    if a is not None:
                        others = others + (total - w[cols]) * (o.eps / k)
                    g[rows, cols] = p * others - uc * q
            else:
                u_total, uj, others, u_nan = self._u_rows(o)
                for rs, cs in _blocks(n, k):
                    block = g[rs, cs]
                    self._p_block(rs, cs, _scratch(block.shape), block)
                    block *= u_total[rs, None]
                    block -= self._u(o, rs, cs)
                pj = 1 / self.den
                g[rows, j] = pj * others - uj * (self.sums() / self.den)
            posinf = self.kinds.posinf
            if posinf.any():  # the limit; where one +inf holds p = 1, its others summed
                p, q, _ = _posinf_limits(self.a[posinf], self.kinds.n_posinf[posinf], _F)
                u = self._u(o, posinf)
                others = u.sum(axis=1, keepdims=True) - u
                r = np.flatnonzero(self.kinds.n_posinf[posinf] == 1)
                c = np.argmax(self.a[posinf][r] == np.inf, axis=1)
                uc = u[r, c]
                u[r, c] = 0
                others[r, c] = u[r].sum(axis=1)
                u[r, c] = uc
                g[posinf] = p * others - u * q
        g[self.kinds.nan | self.kinds.undefined | u_nan] = np.nan
        g[o.target.ignored] = 0
        if o.reduction == "mean":
            den = self._den(o)
            with np.errstate(all="ignore"):
                if den == 0:
                    g = np.where(g == 0, 0.0, np.nan)
                else:
                    g /= den
        return g
