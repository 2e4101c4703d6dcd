"""The fast tier's longdouble evaluator: double-double work, outputs rounded once.

:class:`_Extended` takes the row sums of exp(d) once and builds every output from them
(the formulas of the package docstring's "How the longdouble work stays accurate"); rows
outside the double-double range go to gold (:mod:`xentcheck.references.fast.fallback`).
"""

from __future__ import annotations

import functools
from typing import Any

import mpmath
import numpy as np

from xentcheck.references import gold
from xentcheck.references.fast import jit
from xentcheck.references.fast.doubledouble import (
    _F,
    _LD,
    _SPLIT,
    _dd_add,
    _dd_div,
    _dd_full,
    _dd_mul,
    _dd_to_ld,
    _extract,
    _fast_two_sum,
    _grid_add,
    _grid_bound,
    _grid_sigmas,
    _grid_total,
    _ld_to_dd,
    _row_sums,
    _split,
    _two_prod_split,
    _two_sum,
)
from xentcheck.references.fast.effective import _Effective
from xentcheck.references.fast.fallback import (
    _BIG,
    _from_gold,
    _gold_cross_entropy,
    _weights_in_range,
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
    _DEEP,
    _S,
    _blocks,
    _exp_into,
    _log1p_dd,
    _Scratch,
    _scratch,
    _to_ld_into,
)


class _Extended:
    """The longdouble work: double-double arithmetic, outputs rounded once to longdouble.

    The row sums of exp(d) are taken once, on first use (optionally keeping exp(d) for the
    outputs that need it); every output is built from them."""

    def __init__(self, a: np.ndarray) -> None:
        n, k = a.shape
        self.a = a
        self.shape = (n, k)
        self.ld_input = a.dtype == _LD
        with np.errstate(all="ignore"):
            zz, self.j, m, zmin, self.kinds, self.off = _row_extremes(a)
            if self.ld_input:
                self.zh, self.zl = _ld_to_dd(zz)
                self.mh, self.ml = _ld_to_dd(m)
                beyond = (~np.isfinite(self.zh) & np.isfinite(zz)).any(axis=1)
                self.m_ld = m
            else:
                self.zh, self.zl = zz, None
                self.mh, self.ml = m, np.zeros(n)
                beyond = np.zeros(n, bool)
                self.m_ld = m.astype(_LD)
            spread = np.where(np.isfinite(zmin), self.mh - zmin.astype(_F), 0.0)
            #: max |d| over the finite entries of each row (inf where d overflows)
            self.spread = np.where(beyond | np.isnan(spread), np.inf, spread)
            #: per row: 1 if m <= 0 (so |z| >= |m|), 2 if |z| <= m, else 0 (see _d_block)
            self.d_mode = np.where(self.mh <= 0, 1, np.where(zmin >= -self.mh, 2, 0))
        self.clamp = self.kinds.neginf or bool((self.spread[~self.kinds.special] > -_DEEP).any())
        self._sums: tuple[np.ndarray, np.ndarray] | None = None
        self.eh: np.ndarray | None = None
        self.el: np.ndarray | None = None
        #: keep exp(d) from the row sums even for an output that does not need it (a
        #: shared Reference: softmax and the gradient then skip recomputing it)
        self.keep = False

    # ---------------------------------------------------------------- blocks

    def _d_block(self, rs: slice, cs: slice, ws: _Scratch) -> tuple[np.ndarray, np.ndarray]:
        """d = z - m on a block, exactly, as (dh, dl) in ws.f[0], ws.f[1]: Fast2Sum where
        every row of the block has |z| >= |m| (m <= 0) or |z| <= |m|, else TwoSum."""
        dh, dl, tmp = ws.f[0], ws.f[1], ws.f[2]
        z = self.zh[rs, cs]
        m = self.mh[rs, None]
        np.subtract(z, m, out=dh)
        mode = self.d_mode[rs]
        _difference_low(z, m, dh, None if self.zl is not None else mode, tmp, dl)
        if self.zl is not None:  # longdouble input: add the low parts and renormalize
            if self.clamp:  # z = -inf: dh stays -inf only if dl is finite
                np.copyto(dl, 0.0, where=~np.isfinite(dl))
            np.subtract(self.zl[rs, cs], self.ml[rs, None], out=tmp)
            dl += tmp
            b, c = ws.f[3], ws.f[4]
            np.add(dh, dl, out=tmp)
            np.subtract(tmp, dh, out=b)
            np.subtract(tmp, b, out=c)
            np.subtract(dh, c, out=c)
            np.subtract(dl, b, out=dl)
            dl += c
            dh[...] = tmp
        if self.clamp:
            np.copyto(dl, 0.0, where=~np.isfinite(dl))
        return dh, dl

    def _exp_block(self, rs: slice, cs: slice, ws: _Scratch, hi: np.ndarray,
                   lo: np.ndarray) -> None:
        """exp(d) 2**_S on a block into (hi, lo); ws.f[0], ws.f[1] hold d afterwards."""
        dh, dl = self._d_block(rs, cs, ws)
        x = dh
        if self.clamp:  # exp is 0 below _CLAMP: the low part (up to ulp(d)) must not count
            x = np.maximum(dh, _CLAMP, out=ws.f[2])
            np.copyto(dl, 0.0, where=dh < _CLAMP)
        _exp_into(x, dl, hi, lo, ws, _S, self.clamp)

    def _clear_max(self, rs: slice, cs: slice, hi: np.ndarray) -> None:
        """Zero the argmax entry of each row of the block (its exp is exactly 2**_S)."""
        col = self.j[rs] - cs.start
        inside = (col >= 0) & (col < cs.stop - cs.start)
        if inside.all():
            hi[np.arange(len(col)), col] = 0.0
        elif inside.any():
            hi[np.flatnonzero(inside), col[inside]] = 0.0

    def sums(self, keep: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """2**_S s as a double-double per row: the sum of exp(d) off the argmax. With
        ``keep`` (on the first call) exp(d) 2**_S is kept for the outputs that use it.

        The terms are added on the row grids of :func:`_grid_sigmas` (exactly, in any
        order: the compiled engine, where there is one, gives the same bits)."""
        if self._sums is not None:
            return self._sums
        n, k = self.shape
        d2 = _second_max(self.zh, self.j, self.mh, self.off)
        sigmas = _grid_sigmas(_grid_bound(d2, _S), k)
        if keep or self.keep:
            self.eh, self.el = np.empty((n, k)), np.empty((n, k))
        if jit.usable(self):
            self._sums = _grid_total(jit.row_sums(self, sigmas))
            return self._sums
        acc = np.zeros(sigmas.shape)
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                if self.eh is not None and self.el is not None:
                    hi, lo = self.eh[rs, cs], self.el[rs, cs]
                else:
                    hi, lo = ws.f[5], ws.f[6]
                self._exp_block(rs, cs, ws, hi, lo)
                self._clear_max(rs, cs, hi)
                if self.eh is not None:  # the kept exp(d) stays as it is
                    np.copyto(ws.f[7], hi)
                    np.copyto(ws.f[8], lo)
                    hi, lo = ws.f[7], ws.f[8]
                _grid_add(hi, lo, sigmas[:, rs], acc[:, rs], ws.f[2], ws.f[3])
            self._sums = _grid_total(acc)
        return self._sums

    def _products(self, c: tuple[np.ndarray, np.ndarray], minus: Any = None,
                  sign: int = 0) -> np.ndarray:
        """exp(d) 2**_S c - minus per element, times 2**-_S, rounded once to longdouble.

        ``c`` is a double-double per row; ``minus`` None or a function of a block's
        (rows, columns) giving the double-double to subtract there; ``sign`` as in
        :func:`_to_ld_into`."""
        n, k = self.shape
        ch, cl = c
        # c = c1 + rest with c1 of 26 bits: for hi = h1 + h2 (26 + 27 bits, Veltkamp),
        # h1 c1 and h2 c1 are exact, and hi rest, lo c are ~2**-26 of the product
        c1, rest = _split(ch)
        rest = rest + cl
        out = np.empty((n, k), _LD)
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                if self.eh is not None and self.el is not None:
                    hi, lo = self.eh[rs, cs], self.el[rs, cs]
                else:
                    hi, lo = ws.f[5], ws.f[6]
                    self._exp_block(rs, cs, ws, hi, lo)
                ph, pl, h1, h2, t = ws.f[0:5]
                a1 = c1[rs, None]
                np.multiply(hi, _SPLIT, out=h1)
                np.subtract(h1, hi, out=h2)
                np.subtract(h1, h2, out=h1)
                np.subtract(hi, h1, out=h2)
                np.multiply(h1, a1, out=ph)
                np.multiply(h2, a1, out=pl)
                np.multiply(hi, rest[rs, None], out=h1)
                pl += h1
                np.multiply(lo, ch[rs, None], out=h1)
                pl += h1
                if minus is not None:  # (ph, pl) - (mh, ml), TwoSum on the leading parts
                    mh, ml = minus(rs, cs)
                    np.subtract(ph, mh, out=h1)
                    np.subtract(h1, ph, out=h2)
                    np.subtract(h1, h2, out=t)
                    np.subtract(ph, t, out=t)
                    h2 += mh
                    t -= h2
                    pl -= ml
                    pl += t
                    np.add(h1, pl, out=ph)  # renormalize: h1 may have cancelled
                    np.subtract(ph, h1, out=h2)
                    np.subtract(pl, h2, out=pl)
                _to_ld_into(ph, pl, out[rs, cs], ws, _S, sign=sign)
        return out

    # ------------------------------------------------------------- per row

    @functools.cached_property
    def row(self) -> dict[str, Any]:
        """Per row: s and log1p(s) scaled by 2**_S ("s", "Ls"), log1p(s) ("L") and
        1 / (1 + s) ("inv") as double-doubles; log1p(s) as a longdouble ("L_ld")."""
        sh, sl = self.sums()
        sc = 2.0**_S
        with np.errstate(all="ignore"):
            lh, ll = _log1p_dd(sh / sc, sl / sc)  # loses bits below 2**-1022: "tiny" rows
            tiny = sh < 2.0 ** (_S - 40)
            th, tl = _fast_two_sum(sh, sl - sh * (sh / sc / 2))  # s (1 - s/2) to 2**-80
            lsh = np.where(tiny, th, lh * sc)
            lsl = np.where(tiny, tl, ll * sc)
            den_h, den_l = _dd_add(np.full_like(sh, sc), np.zeros_like(sh), sh, sl)
            inv = _dd_div(np.full_like(sh, sc), np.zeros_like(sh), den_h, den_l)
        return {"s": (sh, sl), "L": (lh, ll), "Ls": (lsh, lsl), "L_ld": _dd_to_ld(lsh, lsl, _S),
                "tiny": tiny, "inv": inv}

    def _gather(self, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """d (double-double, -inf kept) and exp(d) 2**_S at one column per row."""
        n = self.shape[0]
        rows = np.arange(n)
        with np.errstate(all="ignore"):
            dh, dl = _two_sum(self.zh[rows, cols], -self.mh)
            if self.zl is not None:
                dl = np.where(np.isfinite(dl), dl, 0.0)  # z = -inf: dh stays -inf
                dh, dl = _two_sum(dh, dl + (self.zl[rows, cols] - self.ml))
            dl = np.where(np.isfinite(dl), dl, 0.0)
            x = np.maximum(np.where(np.isnan(dh), 0.0, dh), _CLAMP)
            dlx = np.where(dh < _CLAMP, 0.0, dl)
            hi, lo = np.empty(n), np.empty(n)
            _exp_into(x, dlx, hi, lo, _scratch((n,)), _S, True)
            eh, el = _fast_two_sum(hi, lo)
        return dh, dl, eh, el

    # ----------------------------------------------------------------- outputs

    def _limits(self) -> tuple[Any, Any, Any]:
        return _posinf_limits(self.a, self.kinds.n_posinf, _LD)

    def logsumexp(self) -> np.ndarray:
        row = self.row
        lh, ll = row["L"]
        with np.errstate(all="ignore"):
            h, e = _two_sum(self.mh, lh)
            out = _dd_to_ld(h, e + (self.ml + ll))
            tiny = row["tiny"]
            out[tiny] = self.m_ld[tiny] + row["L_ld"][tiny]
        kinds = self.kinds
        out[kinds.nan] = np.nan
        out[kinds.undefined] = -np.inf
        out[kinds.posinf] = np.inf
        return self._gold_fill(out, "logsumexp")

    def log_softmax(self) -> np.ndarray:
        n, k = self.shape
        lh, ll = self.row["L"]
        out = np.empty((n, k), _LD)
        with np.errstate(all="ignore"):
            # z - (m + L) with m + L as a double-double M: off the argmax |log p| >=
            # log 2, so M's error 2**-105 |M| is negligible for |M| <= 2**30; the argmax
            # entry, -L, is set below. Larger |M|: d - L with d exact.
            big_h, big_l = _dd_add(self.mh, self.ml, lh, ll)
            fused = np.abs(big_h) <= 2.0**30
            # z <= m <= M: Fast2Sum(z, -Mh) if Mh <= 0, Fast2Sum(-Mh, z) if every |z| <= Mh
            zmin = self.mh - self.spread
            mode = np.where(big_h <= 0, 1, np.where(zmin >= -big_h, 2, 0))
            blocks = _blocks(n, k)
            if jit.usable(self):  # the same operations, compiled (a block is fused or not)
                whole = np.empty(n, bool)
                for rs, _ in blocks:
                    whole[rs] = fused[rs].all()
                jit.log_softmax_into(self, big_h, big_l, whole, lh, ll, out)
                blocks = []
            for rs, cs in blocks:
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                oh, bb, ol = ws.f[2], ws.f[3], ws.f[4]
                if fused[rs].all():
                    z, mb = self.zh[rs, cs], big_h[rs, None]
                    np.subtract(z, mb, out=oh)
                    if self.zl is None and (mode[rs] == 1).all():
                        np.subtract(oh, z, out=bb)
                        np.subtract(-mb, bb, out=ol)
                    elif self.zl is None and (mode[rs] == 2).all():
                        np.add(oh, mb, out=bb)
                        np.subtract(z, bb, out=ol)
                    else:  # TwoSum(z, -Mh)
                        np.subtract(oh, z, out=bb)
                        np.subtract(oh, bb, out=ol)
                        np.subtract(z, ol, out=ol)
                        bb += mb
                        ol -= bb
                    ol -= big_l[rs, None]
                    if self.zl is not None:
                        ol += self.zl[rs, cs]
                else:
                    dh, dl = self._d_block(rs, cs, ws)
                    lb = lh[rs, None]
                    np.subtract(dh, lb, out=oh)  # TwoSum(dh, -L)
                    np.subtract(oh, dh, out=bb)
                    np.subtract(oh, bb, out=ol)
                    np.subtract(dh, ol, out=ol)
                    bb += lb
                    ol -= bb
                    ol += dl
                    ol -= ll[rs, None]
                _to_ld_into(oh, ol, out[rs, cs], ws, 0, check_range=False, sign=-1)
        out[np.arange(n), self.j] = -self.row["L_ld"]
        if self.kinds.neginf:
            out[self.zh == -np.inf] = -np.inf
        kinds = self.kinds
        out[kinds.nan | kinds.undefined] = np.nan
        if kinds.posinf.any():
            out[kinds.posinf] = self._limits()[2][kinds.posinf]
        return self._gold_fill(out, "log_softmax")

    def softmax(self) -> np.ndarray:
        self.sums(keep=True)
        row = self.row
        out = self._products(row["inv"], sign=1)
        n = self.shape[0]
        out[np.arange(n), self.j] = _dd_to_ld(*row["inv"])
        kinds = self.kinds
        out[kinds.nan | kinds.undefined] = np.nan
        if kinds.posinf.any():
            out[kinds.posinf] = self._limits()[0][kinds.posinf]
        return self._gold_fill(out, "softmax")

    def _gold_fill(self, out: np.ndarray, name: str) -> np.ndarray:
        """Rows outside the double-double range (d overflows float64), from gold."""
        rows = self.gold_rows(False)
        if rows.any():
            out[rows] = _from_gold(getattr(gold, name)(self.a[rows]))
        return out

    def gold_rows(self, targets: bool) -> np.ndarray:
        """Finite rows outside the double-double path's range (computed by gold): d
        overflows float64, or (with targets) exceeds 2**300 (products with u overflow)."""
        limit = _BIG if targets else np.inf
        return ~self.kinds.special & ~(self.spread < limit)

    # -------------------------------------------------------------- targets

    def cross_entropy(self, o: _Options) -> Any:
        n, k = self.shape
        if o.weight is not None and not _weights_in_range(o.weight):
            return _gold_cross_entropy(self.a, o, "cross_entropy")
        eff = _Effective(self, o)
        sc = 2.0**_S
        lsh, lsl = self.row["Ls"]
        with np.errstate(all="ignore"):
            uh, ul = eff.U
            t1h, t1l = _dd_mul(uh, ul, lsh, lsl)  # U L, scaled twice
            t1h, t1l = t1h / sc, t1l / sc
            if eff.index is not None:
                dh, dl, _, _ = self._gather(eff.index)
                dh = np.where(dh == -np.inf, 0.0, dh)  # such rows are +-inf rows below
                bh, bl = eff.B
                sh, sl = _dd_mul(bh, bl, dh, dl)
                if eff.A is not None:
                    wd = self._weighted_d(eff.w)
                    xh, xl = _dd_mul(eff.spread[0] * sc, eff.spread[1] * sc, *wd)
                    sh, sl = _dd_add(sh, sl, xh, xl)
            else:
                sh, sl = self._u_dot_d(eff.u)
            lh, ll = _dd_add(t1h, t1l, -sh, -sl)  # U L - sum u d: two terms >= 0 for u >= 0
            losses = _dd_to_ld(lh, ll, _S)
            regular = np.ones(n, bool)
            if self.kinds.neginf:
                pos, neg = eff.infinite_terms(self)
                both = pos & neg
                losses[pos] = np.inf
                losses[neg] = -np.inf
                losses[both] = np.nan
                regular &= ~(pos | neg)
        row_nan = self.kinds.nan | self.kinds.undefined | eff.nan
        losses[row_nan] = np.nan
        regular &= ~row_nan
        ignored = eff.ignored
        gold_rows = (self.gold_rows(True) | eff.big | self.kinds.posinf) & ~row_nan & ~ignored
        gold_values: dict[int, Any] = {}
        if gold_rows.any():
            exact = gold.cross_entropy(self.a[gold_rows], eff.target_rows(gold_rows),
                                       **o.raw, reduction="none")
            gold_values = dict(zip(np.flatnonzero(gold_rows).tolist(), exact, strict=True))
            losses[gold_rows] = _from_gold(exact)
            regular &= ~gold_rows
        losses[ignored] = 0
        regular |= ignored
        lh, ll = np.where(ignored, 0.0, lh), np.where(ignored, 0.0, ll)
        if o.reduction == "none":
            return losses
        den = eff.denominator() if o.reduction == "mean" else (np.float64(1.0), np.float64(0.0))
        if o.reduction == "mean" and den[0] == 0:
            return _LD(np.nan)
        if not regular.all():
            odd = losses[~regular & ~gold_rows]
            if odd.size and not np.isfinite(odd).all():
                return _LD(odd.sum() / _LD(float(den[0])))
            with mpmath.workprec(400):
                total = mpmath.fsum(
                    [gold_values[i] if i in gold_values else
                     mpmath.ldexp(mpmath.mpf(float(lh[i])) + mpmath.mpf(float(ll[i])), -_S)
                     for i in range(n)])
                return _from_gold(total / (mpmath.mpf(float(den[0])) + mpmath.mpf(float(den[1]))))
        th, tl = _row_sums(lh[None, :], ll[None, :])
        if o.reduction == "mean":
            th, tl = _dd_div(th, tl, np.float64(den[0]), np.float64(den[1]))
        return _dd_to_ld(th, tl, _S)[0]

    def cross_entropy_grad(self, o: _Options) -> np.ndarray:
        n, k = self.shape
        if o.weight is not None and not _weights_in_range(o.weight):
            return _gold_cross_entropy(self.a, o, "cross_entropy_grad")
        eff = _Effective(self, o)
        self.sums(keep=True)
        row = self.row
        sc = 2.0**_S
        one = (np.float64(1.0), np.float64(0.0))
        den = eff.denominator() if o.reduction == "mean" else one
        zero_den = o.reduction == "mean" and den[0] == 0
        if zero_den or o.reduction != "mean":
            f = one
        else:
            if abs(den[0]) < 2.0**-300:
                return _gold_cross_entropy(self.a, o, "cross_entropy_grad")
            f = _dd_div(np.float64(1.0), np.float64(0.0), np.float64(den[0]), np.float64(den[1]))
        ih, il = row["inv"]
        with np.errstate(all="ignore"):
            ch, cl = _dd_mul(ih, il, *eff.U)
            ch, cl = _dd_mul(ch / sc, cl / sc, *_dd_full(f, n))
            minus = None
            if eff.index is not None and eff.A is not None:
                mh, ml = _dd_mul(*eff.A, *_dd_full(f, k))
                minus = lambda rs, cs: (mh[None, cs], ml[None, cs])  # noqa: E731
            elif eff.index is None:
                uh, ul = eff.u
                if f is not one:
                    uh, ul = _dd_mul(uh, ul, np.full_like(uh, f[0]), np.full_like(uh, f[1]))
                minus = lambda rs, cs: (uh[rs, cs], ul[rs, cs])  # noqa: E731
            out = self._products((ch, cl), minus)
            # the argmax column, and the target column of class indices: p_c (U - u_c)
            # - u_c (1 - p_c) with 1 - p_j = s / (1 + s)
            rows = np.arange(n)
            sh, sl = row["s"]
            fix_cols = [(self.j, (ih * sc, il * sc), _dd_mul(sh, sl, ih, il))]
            if eff.index is not None:
                _, _, eth, etl = self._gather(eff.index)
                pth, ptl = _dd_mul(eth, etl, ih, il)
                qth, qtl = _dd_add(np.full(n, sc), np.zeros(n), -pth, -ptl)
                fix_cols.insert(0, (eff.index, (pth, ptl), (qth, qtl)))
            for cols, (ph, pl), (qh, ql) in fix_cols:
                uch, ucl = eff.u_at(cols)
                oh, ol = eff.others_at(cols)
                ah, al = _dd_mul(ph, pl, oh, ol)
                bh, bl = _dd_mul(uch, ucl, qh, ql)
                gh, gl = _dd_add(ah, al, -bh, -bl)
                gh, gl = _dd_mul(gh / sc, gl / sc, *_dd_full(f, n))
                out[rows, cols] = _dd_to_ld(gh, gl, _S)
        row_nan = self.kinds.nan | self.kinds.undefined | eff.nan
        out[row_nan] = np.nan
        gold_rows = (self.gold_rows(True) | eff.big | self.kinds.posinf) & ~row_nan & ~eff.ignored
        if gold_rows.any():
            exact = gold.cross_entropy_grad(self.a[gold_rows], eff.target_rows(gold_rows),
                                            **o.raw, reduction="none")
            values = _from_gold(exact)
            if o.reduction == "mean" and not zero_den:  # exact / den, rounded once
                with mpmath.workprec(400):
                    d = mpmath.mpf(float(den[0])) + mpmath.mpf(float(den[1]))
                    values = _from_gold(np.array([v / d for v in exact.ravel()],
                                                 dtype=object).reshape(exact.shape))
            out[gold_rows] = values
        out[eff.ignored] = 0
        if zero_den:
            out = np.where(out == 0, _LD(0), _LD(np.nan))
        return out

    def _weighted_d(self, w: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, ...]:
        """sum_k w_k d_k per row (double-double; -inf entries count as 0)."""
        n, k = self.shape
        acc_h, acc_l, acc_r = np.zeros(n), np.zeros(n), np.zeros(n)
        if w is not None:
            w1, w2 = _split(w[0])
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                dh, dl = self._d_block(rs, cs, ws)
                if self.kinds.neginf:
                    np.copyto(dh, 0.0, where=dh == -np.inf)
                if w is None:
                    ph, pl = dh, dl
                else:
                    ph, pl = _two_prod_split(dh, w[0][None, cs], w1[None, cs], w2[None, cs])
                    pl += dh * w[1][None, cs] + dl * w[0][None, cs]
                q, rest = _extract(ph, pl, ws.f[7], ws.f[6])
                acc_h[rs], e = _two_sum(acc_h[rs], q)
                acc_l[rs] += e
                acc_r[rs] += rest
        return _two_sum(acc_h, acc_l + acc_r)

    def _u_dot_d(self, u: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """sum_k u_k d_k per row (double-double; -inf entries count as 0)."""
        n, k = self.shape
        acc_h, acc_l, acc_r = np.zeros(n), np.zeros(n), np.zeros(n)
        uh, ul = u
        with np.errstate(all="ignore"):
            for rs, cs in _blocks(n, k):
                ws = _scratch((rs.stop - rs.start, cs.stop - cs.start))
                dh, dl = self._d_block(rs, cs, ws)
                if self.kinds.neginf:
                    np.copyto(dh, 0.0, where=dh == -np.inf)
                ph, pl = _dd_mul(uh[rs, cs], ul[rs, cs], dh, dl)
                q, rest = _extract(ph, pl)
                acc_h[rs], e = _two_sum(acc_h[rs], q)
                acc_l[rs] += e
                acc_r[rs] += rest
        return _two_sum(acc_h, acc_l + acc_r)
