"""The fast tier's fallback to gold: rows and calls outside the double-double range.

Rows whose logit differences overflow float64 (or, with a target, exceed 2**300),
effective targets above 2**300 and class weights outside [2**-400, 2**400] are computed
by :mod:`xentcheck.references.gold` and rounded once to longdouble (:func:`_from_gold`).
"""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np

from xentcheck.references import gold
from xentcheck.references.fast.doubledouble import _F, _LD
from xentcheck.references.fast.inputs import _Options
from xentcheck.references.gold import UNDEFINED

#: Magnitude limits of the double-double path (products stay inside float64's range).
_BIG = 2.0**300
_W_RANGE = (2.0**-400, 2.0**400)


_LD_HUGE = mpmath.mpf(2) ** 16384  # longdouble's range (rounding at its edges aside)
_LD_TINY = mpmath.mpf(2) ** -16446


def _from_gold(values: Any) -> Any:
    """Gold's exact values as the nearest longdouble (UNDEFINED as NaN)."""
    def one(v: Any) -> Any:
        if v is UNDEFINED or v != v:
            return _LD("nan")
        if not mpmath.isfinite(v) or abs(v) > _LD_HUGE:
            return _LD(np.inf) if v > 0 else _LD(-np.inf)
        if abs(v) < _LD_TINY:
            return _LD(0.0) if v >= 0 else _LD(-0.0)
        return _LD(mpmath.nstr(v, 40, strip_zeros=False))  # 40 digits: correctly rounded

    if isinstance(values, np.ndarray):
        return np.vectorize(one, otypes=[_LD])(values) if values.size else values.astype(_LD)
    return one(values)


def _weights_in_range(w: np.ndarray) -> bool:
    """Whether class weights suit the double-double path (else the call goes to gold)."""
    a = np.abs(w[~np.isnan(w)].astype(_F))
    a = a[a != 0]
    return bool(((a >= _W_RANGE[0]) & (a <= _W_RANGE[1])).all())


def _gold_cross_entropy(a: np.ndarray, o: _Options, name: str) -> Any:
    """A whole call by gold (class weights outside the double-double path's range)."""
    t = o.target.index if o.target.index is not None else o.target.probs
    if o.target.index is not None:
        t = np.where(o.target.ignored, o.raw["ignore_index"] if o.raw["ignore_index"]
                     is not None else 0, t)
    return _from_gold(getattr(gold, name)(a, t, **o.raw, reduction=o.reduction))
