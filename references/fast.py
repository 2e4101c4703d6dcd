"""Fast reference tier: softmax and cross-entropy in vectorized extended precision.

The gold tier (:mod:`references.gold`) is exact but costs about 25 µs per element. This
tier computes the same functions with NumPy ``longdouble`` arrays, where that type has a
significand of at least 64 bits (x87 extended precision on x86-64 Linux). Work in
progress (issue 6): it runs at 0.05x the speed of NumPy's float64 shifted log_softmax on
(8, 131072) (goal 0.25x), and it is not yet wired into the engine. Its values are *not*
exact: each is accurate to a few ``longdouble`` ulps, measured against gold at <= 1e-3
float64 ulp for log_softmax, logsumexp and cross_entropy, <= 2e-3 for softmax and up to
3.2e-3 for a weighted-mean gradient near 2**1021 (one longdouble ulp is 2**-11 = 4.9e-4
float64 ulps; the goal is 1e-3 everywhere). :data:`TIER` says which implementation runs:

* ``"longdouble"``: ``np.finfo(np.longdouble).nmant >= 63`` (detected at import, never
  assumed), the vectorized path below;
* ``"gold"``: elsewhere (e.g. on arm64 macOS, where ``longdouble`` is float64, or on
  platforms where it is IEEE binary128 in software); every function then calls
  :mod:`references.gold` and converts its exact values to the nearest ``longdouble``.

Every function returns ``np.longdouble`` arrays (scalars for ``reduction="sum"/"mean"``).

The formulas are gold's cancellation-free ones (see :mod:`references.gold`), carried out in
``longdouble`` with a few error-free transformations where one rounding would cost more
than an ulp:

* d = z - m with m = max z, as an unevaluated sum ``d_hi + d_lo`` (TwoSum: exact, since
  float64 and longdouble inputs are longdouble numbers). exp is ill-conditioned (an
  absolute error in d becomes the same relative error in exp(d)), so the low part matters
  when z and m have different exponents: exp(d) = exp(d_hi) (1 + d_lo).
* s = sum_{k != argmax} exp(d_k); log softmax_i = (d_hi,i - log1p(s)) + d_lo,i: both terms
  are non-positive, and log1p of the off-maximum sum keeps log p_max ~ -s at p_max near 1
  (a plain longdouble log-sum-exp, log(1 + s) after rounding 1 + s, is about 19 float64
  ulps off there).
* softmax_i = exp(d_i) / (1 + s) with 1 + s kept as ``hi + lo`` (TwoSum);
  1 - softmax_i = s / (1 + s) at the argmax and (1 + (s - e_i)) / (1 + s) elsewhere (a sum,
  never 1 - p), so p_t - 1 = -sum_{k != t} p_k keeps all its digits.
* the fused gradient (sum u) p_j - u_j = p_j sum_{i != j} u_i - u_j (1 - p_j), with the
  effective target u of gold (class weights, label smoothing).

Three outputs can still cancel, as in gold, and there this tier is only accurate relative
to their *scale* (about 2 longdouble ulps of it): logsumexp = m + log1p(s) when
m ~ -log1p(s) (scale |m| + log1p(s)); a gradient entry p_j sum_{i != j} u_i - u_j (1 - p_j)
when the two terms nearly cancel (scale: the sum of their magnitudes); a loss with negative
class weights (scale: the sum of the magnitudes of its terms). Values beyond longdouble's
range (|log p| > 1e4932, exp(d) < 1e-4951) are rounded to ±inf or 0.

Semantics are gold's (DESIGN.md §4): a -inf logit with zero target mass contributes 0
(0 log 0 = 0) and gradient 0; with positive mass the loss is +inf; a NaN anywhere in a row
(logits or target) makes that row's outputs NaN; +inf logits give the limit, one-hot over
the +inf entries; an ignored row contributes 0 with gradient 0. Where gold answers
``UNDEFINED`` (an all -inf row; a mean over no weight) this tier answers NaN: use
:func:`undefined_rows` to tell an undefined row from a NaN one.

>>> import numpy as np
>>> TIER in ("longdouble", "gold")
True
>>> float(log_softmax(np.array([40.0, 0.0]))[0])
-4.248354255291589e-18
>>> float(cross_entropy_grad(np.array([[37.42994775023705, 0.0]]), np.array([0]))[0, 0])
-5.551115123125776e-17
"""

from __future__ import annotations

from typing import Any

import numpy as np

from references import gold
from references.gold import UNDEFINED

__all__ = [
    "TIER",
    "cross_entropy",
    "cross_entropy_grad",
    "log_softmax",
    "logsumexp",
    "softmax",
    "undefined_rows",
]

_LD = np.longdouble

#: Which implementation this platform runs: ``"longdouble"`` where NumPy's longdouble has
#: at least a 64-bit significand (``nmant >= 63``: x87 extended), ``"gold"`` elsewhere.
#: 64 bits are 11 more than float64's 53, so a few roundings cost ~1e-3 float64 ulp.
TIER: str = "longdouble" if np.finfo(_LD).nmant >= 63 else "gold"

_REDUCTIONS = ("none", "sum", "mean")


# --------------------------------------------------------------------------- input


def _as_longdouble(array: Any, what: str) -> tuple[np.ndarray, bool]:
    """An (N, K) or (K,) float array as (N, K) longdouble (exact), and whether it was 1-D."""
    a, single = gold.as_matrix(array, what, kinds="fiuV")
    if a.dtype != _LD:
        # float64 and every narrower format (bfloat16 through float32) convert exactly
        a = a.astype(np.float64)
    return a.astype(_LD), single


def _check_options(label_smoothing: float, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing!r}")


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) with hi = fl(a + b) and hi + lo = a + b exactly (Knuth's TwoSum).

    lo is set to 0 wherever hi is not finite (where a or b is infinite)."""
    hi = a + b
    bb = hi - a
    lo = (a - (hi - bb)) + (b - bb)
    return hi, np.where(np.isfinite(hi), lo, _LD(0))


# --------------------------------------------------------------------------- rows


class _Softmax:
    """The softmax of each row of an (N, K) longdouble array, with the row kinds.

    Rows are "finite" (at least one finite logit, none NaN or +inf), "nan", "posinf" (the
    limit over the +inf entries) or "undefined" (all -inf); the arrays of the non-finite
    kinds hold their limits (NaN for "nan" and "undefined").
    """

    def __init__(self, z: np.ndarray) -> None:
        n, k = z.shape
        self.nan = np.isnan(z).any(axis=1)
        n_posinf = np.count_nonzero(z == np.inf, axis=1)
        self.posinf = (n_posinf > 0) & ~self.nan
        self.undefined = (z == -np.inf).all(axis=1) & ~self.nan
        special = self.nan | self.posinf | self.undefined
        zz = np.where(special[:, None], _LD(0), z)
        rows = np.arange(n)
        j = np.argmax(zz, axis=1)
        m = zz[rows, j]
        with np.errstate(invalid="ignore", over="ignore"):
            d_hi, d_lo = _two_sum(zz, -m[:, None])
        e_hi = np.exp(d_hi)
        e = e_hi + e_hi * d_lo  # exp(d_hi + d_lo), to second order in d_lo <= 2**-64 |d|
        e[rows, j] = 0
        s = e.sum(axis=1)
        log1p_s = np.log1p(s)
        den_hi, den_lo = _two_sum(np.ones_like(s), s)  # 1 + s exactly
        rel_lo = (den_lo / den_hi)[:, None]  # 1 / (den_hi + den_lo) = (1 - rel_lo) / den_hi
        e_hi[rows, j] = 1
        d_lo[rows, j] = 0
        # one division and one correction (exact where both low parts are 0)
        p = e_hi / den_hi[:, None]
        self.p = p + p * (d_lo - rel_lo)
        # 1 - p_i: (1 + (s - e_i)) / (1 + s), and s / (1 + s) at the argmax
        e[rows, j] = 1
        q_num = 1 + (s[:, None] - e)
        q_num[rows, j] = s
        q = q_num / den_hi[:, None]
        self.q = q - q * rel_lo
        self.logp = (d_hi - log1p_s[:, None]) + d_lo
        self.lse = m + log1p_s
        # the limits of the non-finite kinds
        share = 1 / np.maximum(n_posinf, 1).astype(_LD)
        is_posinf = z == np.inf
        nan = _LD(np.nan)
        kinds = (
            (self.posinf, np.where(is_posinf, share[:, None], _LD(0)),
             np.where(is_posinf, np.log(share)[:, None], -np.inf), np.inf),
            (self.undefined, np.full((n, k), nan), np.full((n, k), nan), -np.inf),
            (self.nan, np.full((n, k), nan), np.full((n, k), nan), nan),
        )
        for mask, p, logp, lse in kinds:
            if mask.any():
                self.p[mask] = p[mask]
                self.q[mask] = 1 - p[mask]
                self.logp[mask] = logp[mask]
                self.lse[mask] = lse


def _effective_target(
    target: Any, n: int, k: int, single: bool, weight: np.ndarray | None,
    eps: float, ignore_index: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The (N, K) effective target u (gold's module docstring), the ignored rows, and the
    class index per row (None for probability targets). Ignored rows have u = 0."""
    t = np.asarray(target)
    w = np.ones(k, dtype=_LD) if weight is None else weight
    keep = _LD(1) - _LD(eps)  # exact: eps is a float64 in [0, 1]
    spread = _LD(eps) / k
    if t.dtype.kind in "iu":
        expected = () if single else (n,)
        if t.shape != expected:
            raise ValueError(f"class-index target must have shape {expected}, got shape {t.shape}")
        index = t.reshape(-1).astype(np.int64)
        ignored = (index == ignore_index) if ignore_index is not None else np.zeros(n, bool)
        bad = ~ignored & ((index < 0) | (index >= k))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"target[{row}] = {index[row]} is out of range for {k} classes (row {row})"
            )
        safe = np.where(ignored, 0, index)
        u = np.broadcast_to(w * spread, (n, k)).copy() if eps else np.zeros((n, k), _LD)
        u[np.arange(n), safe] += keep * w[safe]
        u[ignored] = 0
        return u, ignored, safe
    y, _ = _as_longdouble(t, "probability target")
    if t.shape != ((k,) if single else (n, k)):
        raise ValueError(
            f"probability target must have the logits' shape ({n}, {k}), got shape {t.shape}"
        )
    negative = y < 0
    if negative.any():
        row, c = (int(v[0]) for v in np.nonzero(negative))
        raise ValueError(
            f"target row {row} has a negative probability {float(y[row, c])!r} at class {c}"
        )
    u = w * (keep * y + spread) if eps else w * y
    return u, np.zeros(n, bool), None


def _weights(weight: Any, k: int) -> np.ndarray | None:
    if weight is None:
        return None
    if np.ndim(weight) != 1 or np.shape(weight)[0] != k:
        raise ValueError(f"weight must have shape ({k},), got shape {np.shape(weight)}")
    return _as_longdouble(weight, "weight")[0][0]


# --------------------------------------------------------------------------- gold fallback


def _from_gold(values: Any) -> Any:
    """Gold's exact values as the nearest longdouble (UNDEFINED as NaN)."""
    def one(v: Any) -> Any:
        return _LD("nan") if v is UNDEFINED else _LD(str(v)) if v == v else _LD("nan")

    if isinstance(values, np.ndarray):
        return np.vectorize(one, otypes=[_LD])(values) if values.size else values.astype(_LD)
    return one(values)


# --------------------------------------------------------------------------- public


def undefined_rows(logits: Any) -> np.ndarray:
    """Which rows gold leaves ``UNDEFINED`` (all -inf, no NaN); this tier answers NaN there.

    >>> import numpy as np
    >>> undefined_rows(np.array([[-np.inf, -np.inf], [0.0, -np.inf]])).tolist()
    [True, False]
    """
    z, single = _as_longdouble(logits, "logits")
    out = (z == -np.inf).all(axis=1)
    return out[0] if single else out


def logsumexp(logits: Any) -> Any:
    """log sum_k exp(z_k) per row, as m + log1p(s) (accurate relative to |m| + log1p(s)).

    >>> import numpy as np
    >>> [float(v) for v in logsumexp(np.array([[0.0, 0.0], [1e308, 1e308]]))]
    [0.6931471805599453, 1e+308]
    """
    if TIER == "gold":
        return _from_gold(gold.logsumexp(logits))
    z, single = _as_longdouble(logits, "logits")
    lse = _Softmax(z).lse
    return lse[0] if single else lse


def softmax(logits: Any) -> np.ndarray:
    """exp(z_i) / sum_k exp(z_k) per row (NaN for all -inf rows).

    >>> import numpy as np
    >>> [float(v) for v in softmax(np.array([0.0, 0.0, -np.inf]))]
    [0.5, 0.5, 0.0]
    """
    if TIER == "gold":
        return _from_gold(gold.softmax(logits))
    z, single = _as_longdouble(logits, "logits")
    p = _Softmax(z).p
    return p[0] if single else p


def log_softmax(logits: Any) -> np.ndarray:
    """z_i - logsumexp(z) per row, as (d_i - log1p(s)): no cancellation.

    >>> import numpy as np
    >>> [float(v) for v in log_softmax(np.array([np.inf, 0.0, np.inf]))]
    [-0.6931471805599453, -inf, -0.6931471805599453]
    """
    if TIER == "gold":
        return _from_gold(gold.log_softmax(logits))
    z, single = _as_longdouble(logits, "logits")
    logp = _Softmax(z).logp
    return logp[0] if single else logp


def _prepare(logits: Any, target: Any, weight: Any, ignore_index: int | None,
             label_smoothing: float, reduction: str) -> tuple[Any, ...]:
    _check_options(label_smoothing, reduction)
    z, single = _as_longdouble(logits, "logits")
    n, k = z.shape
    w = _weights(weight, k)
    u, ignored, index = _effective_target(target, n, k, single, w, float(label_smoothing),
                                          ignore_index)
    return z, single, u, ignored, index, w


def _denominator(u_ignored: np.ndarray, index: np.ndarray | None,
                 w: np.ndarray | None) -> Any:
    """The divisor of reduction="mean": sum of w_{t_n} over kept rows, or N."""
    if index is not None and w is not None:
        return w[index][~u_ignored].sum()
    return _LD(np.count_nonzero(~u_ignored))


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
) -> Any:
    """-sum_c u_c log softmax(z)_c per row (0 log 0 = 0), then reduced as gold does.

    >>> import numpy as np
    >>> float(cross_entropy(np.array([[0.0, -np.inf]]), np.array([[1.0, 0.0]]))[0])
    0.0
    >>> float(cross_entropy(np.array([[0.0, -np.inf]]), np.array([1]))[0])
    inf
    """
    if TIER == "gold":
        return _from_gold(gold.cross_entropy(
            logits, target, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing, reduction=reduction))
    z, single, u, ignored, index, w = _prepare(logits, target, weight, ignore_index,
                                               label_smoothing, reduction)
    sm = _Softmax(z)
    with np.errstate(invalid="ignore"):
        terms = np.where(u != 0, -u * sm.logp, _LD(0))
    losses = terms.sum(axis=1)
    row_nan = sm.nan | sm.undefined | np.isnan(u).any(axis=1)
    losses[row_nan & ~ignored] = np.nan
    losses[ignored] = 0
    if reduction == "none":
        return losses[0] if single else losses
    total = losses.sum() if losses.size else _LD(0)
    if reduction == "sum":
        return total
    den = _denominator(ignored, index, w)
    return _LD(np.nan) if den == 0 else total / den


def cross_entropy_grad(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
) -> np.ndarray:
    """(sum u) p_j - u_j = p_j sum_{i != j} u_i - u_j (1 - p_j) per row, of the reduced loss.

    >>> import numpy as np
    >>> g = cross_entropy_grad(np.array([[0.0, 0.0]]), np.array([[2.0, 0.0]]))
    >>> [float(v) for v in g[0]]
    [-1.0, 1.0]
    """
    if TIER == "gold":
        return _from_gold(gold.cross_entropy_grad(
            logits, target, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing, reduction=reduction))
    z, single, u, ignored, index, w = _prepare(logits, target, weight, ignore_index,
                                               label_smoothing, reduction)
    sm = _Softmax(z)
    total = u.sum(axis=1, keepdims=True)
    # sum_{i != j} u_i: exact subtraction error is second order next to p_j's own error
    others = total - u
    with np.errstate(invalid="ignore"):
        g = sm.p * others - u * sm.q
    row_nan = sm.nan | sm.undefined | np.isnan(u).any(axis=1)
    g[row_nan] = np.nan
    g[ignored] = 0
    if reduction == "mean":
        den = _denominator(ignored, index, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(g == 0, _LD(0), g / den) if den == 0 else g / den
    return g[0] if single else g
