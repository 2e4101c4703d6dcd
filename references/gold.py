"""Exact reference values (mpmath) for softmax, log-softmax, cross-entropy and their derivatives.

Every function takes logits as a NumPy array of shape (N, K) or (K,) in any float dtype
(float64, float32, float16, ``ml_dtypes.bfloat16``, longdouble) or as an object array of
``mpmath.mpf`` of any precision, and returns *exact* values: a NumPy object array of
``mpmath.mpf`` (a scalar ``mpf`` for ``reduction="sum"``/``"mean"`` or for one row).
Inputs are used exactly as given; nothing is rounded on the way in.

How the values stay exact at the extremes
-----------------------------------------
For one row z with maximum m at index j, write d_i = z_i - m (computed exactly, whatever
the exponent gap) and s = sum_{i != j} exp(d_i) >= 0. Then

* logsumexp(z) = m + log1p(s)
* log_softmax(z)_i = d_i - log1p(s)               (two non-positive terms: no cancellation)
* softmax(z)_i = exp(d_i) / (1 + s)
* 1 - softmax(z)_i = sum_{k != i} exp(d_k) / (1 + s)  (computed as a sum, never as 1 - p)

so log p ~ -4.25e-18 at z = [40, 0], log p = -2e308 at z = [1e308, -1e308] and
p - 1 = -5.55e-17 at z = [37.42994775023705, 0] all come out with full relative accuracy
at ``DEFAULT_PREC`` bits. Only three outputs can lose digits to cancellation: the fused
gradient (sum y) p_j - y_j, logsumexp when m ~ -log1p(s), and a loss with negative
weights. Those are computed with a running error bound and recomputed at doubled
precision (Ziv's strategy) until at least ``GOLD_BITS`` bits are certain.

Semantics (DESIGN.md §4 and PyTorch's documented ``cross_entropy`` formulas)
-----------------------------------------------------------------------------
The loss of a row is written with an *effective target* u >= 0:

* class index t:   u_c = (1 - eps) w_t [c = t] + eps w_c / K
* probabilities y: u_c = w_c ((1 - eps) y_c + eps / K)

(w = 1 without weights, eps = ``label_smoothing``). The row loss is -sum_c u_c log p_c
with 0 * log 0 = 0, and its gradient is (sum u) p - u. ``reduction="mean"`` divides the
sum by sum_n w_{t_n} over non-ignored rows for class indices and by N for probabilities.
Rows whose class index equals ``ignore_index`` contribute 0 and have gradient 0.

============================================  ==========================================
situation                                     reference answer
============================================  ==========================================
-inf logit, target mass 0 there               term 0 (0 log 0 = 0), gradient 0 there
-inf logit with target mass > 0               loss +inf, gradient (sum u) p - u (finite)
NaN anywhere in a row (logits or target)      that row's outputs NaN
all -inf row                                  ``UNDEFINED`` (logsumexp is -inf)
+inf logit(s)                                 the limit: one-hot over the +inf entries
every target ignored / N = 0, mean            value ``UNDEFINED`` (0/0), gradient 0
class index out of range, negative prob.      ``ValueError`` naming the row
============================================  ==========================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
from mpmath import mpf
from mpmath.libmp import from_man_exp

from xentcheck.references.precision import standard_precision

__all__ = [
    "DEFAULT_PREC",
    "GOLD_BITS",
    "UNDEFINED",
    "cross_entropy",
    "cross_entropy_from_probs",
    "cross_entropy_grad",
    "cross_entropy_grad_wrt_probs",
    "cross_entropy_hessian",
    "log_softmax",
    "logsumexp",
    "softmax",
    "softmax_jacobian",
]

#: Working precision in bits. 192 bits leave 192 - GOLD_BITS = 82 bits for the rounding
#: errors of sums over up to 2**20 terms (20 bits) with a wide margin; outputs that
#: cancel beyond that are recomputed at higher precision.
DEFAULT_PREC = 192

#: Relative accuracy (in bits) every finite non-zero output is certified to at the default
#: precision (a larger ``prec`` certifies ``prec - 82`` bits). 110 bits is more than twice
#: float64's 53, so rounding the gold value to any supported dtype is correct except
#: within 2**-110 of a rounding boundary (references/data/generate.py refines those).
GOLD_BITS = 110

#: The precision at which the Ziv loop gives up refining (an output that still cancels
#: at 2**16 bits is zero to every purpose of this project).
_MAX_PREC = 1 << 16

_REDUCTIONS = ("none", "sum", "mean")


class _Undefined:
    """The type of :data:`UNDEFINED`: a value the mathematics leaves undefined (0/0)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self) -> str:
        return "UNDEFINED"


#: Marks an output the reference does not define (all -inf row, 0/0 mean). Never graded.
UNDEFINED = _Undefined()

_NAN = mpf("nan")
_INF = mpf("inf")


# --------------------------------------------------------------------------- input


def _exact_mpf(x: Any) -> mpf:
    """An element as an exact mpf (call with working precision >= 64 bits)."""
    if isinstance(x, mpf):
        return x
    if isinstance(x, np.longdouble) and np.isfinite(x):
        num, den = x.as_integer_ratio()  # den is a power of two
        return mpmath.mp.make_mpf(from_man_exp(num, 1 - den.bit_length()))
    if isinstance(x, (int, np.integer)):
        return mpmath.mp.make_mpf(from_man_exp(int(x), 0))
    return mpmath.mpf(float(x))  # float64 and every narrower format convert exactly


def as_matrix(array: Any, what: str, *, kinds: str = "fiuOV",
              no_classes: bool = False) -> tuple[np.ndarray, bool]:
    """``array`` checked to be (N, K) or (K,) of a real dtype (bfloat16 is kind "V"),
    as (N, K), and whether it was one row. K = 0 is refused unless ``no_classes`` (the
    functions the policy defines there). Shared by the tiers of ``references``."""
    a = np.asarray(array)
    if a.dtype.kind not in kinds or (a.dtype.kind == "V" and a.dtype.itemsize > 8):
        raise ValueError(f"{what} must be a real floating-point array, got dtype {a.dtype}")
    if a.ndim not in (1, 2):
        raise ValueError(f"{what} must have shape (N, K) or (K,), got shape {a.shape}")
    single = a.ndim == 1
    if single:
        a = a[np.newaxis, :]
    if a.shape[1] == 0 and not no_classes:
        raise ValueError(f"{what} must have at least one class (K >= 1), got shape {a.shape}")
    return a, single


def _as_rows(array: Any, what: str, no_classes: bool = False) -> tuple[list[list[mpf]], bool]:
    """An (N, K) or (K,) float array as exact mpf rows; also whether it was one row."""
    a, single = as_matrix(array, what, no_classes=no_classes)
    if a.dtype.kind == "O" or a.dtype == np.longdouble:
        return [[_exact_mpf(x) for x in row] for row in a], single
    # float64 and narrower (float32, float16, bfloat16) and small ints are exact in float64
    with np.errstate(invalid="ignore"):  # a NaN's cast warns in some dtypes (ml_dtypes)
        wide = a.astype(np.float64)
    return [[mpf(x) for x in row] for row in wide.tolist()], single


@dataclass(frozen=True)
class _Target:
    """One row's target: a class index, a probability row, or ignored."""

    index: int | None = None
    probs: list[mpf] | None = None
    ignored: bool = False


def _targets(target: Any, n: int, k: int, single: bool, ignore_index: int | None) -> list[_Target]:
    t = np.asarray(target)
    if t.dtype.kind in "iu" or (t.dtype == object and t.ndim == (0 if single else 1)):
        expected = () if single else (n,)
        if t.shape != expected:
            raise ValueError(
                f"class-index target must have shape {expected}, got shape {t.shape}"
            )
        out = []
        for row, value in enumerate(t.reshape(-1)):
            value = int(value)
            if ignore_index is not None and value == ignore_index:
                out.append(_Target(ignored=True))
            elif not 0 <= value < k:
                raise ValueError(
                    f"target[{row}] = {value} is out of range for {k} classes (row {row})"
                )
            else:
                out.append(_Target(index=value))
        return out
    rows, _ = _as_rows(t, "probability target")
    if t.shape != ((k,) if single else (n, k)):
        raise ValueError(
            f"probability target must have the logits' shape ({n}, {k}), got shape {t.shape}"
        )
    for row, probs in enumerate(rows):
        for c, y in enumerate(probs):
            if y < 0:
                raise ValueError(
                    f"target row {row} has a negative probability {mpmath.nstr(y, 17)} "
                    f"at class {c}"
                )
    return [_Target(probs=probs) for probs in rows]


def _weights(weight: Any, k: int) -> list[mpf] | None:
    if weight is None:
        return None
    if np.ndim(weight) != 1 or np.shape(weight)[0] != k:
        raise ValueError(f"weight must have shape ({k},), got shape {np.shape(weight)}")
    return _as_rows(weight, "weight")[0][0]


def _check_options(label_smoothing: float, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing!r}")


# ---------------------------------------------------------------- one row, exactly


def _exp(d: mpf) -> mpf:
    """exp(d) for d <= 0 without flushing to zero (mpmath's exp does below about -1e18)."""
    if mpmath.isinf(d):
        return mpf(0)
    if d > -1e15:
        return mpmath.exp(d)
    # exp(d) = 2**n * exp(r), n = floor(d / ln 2), r in [0, ln 2): n has ~log2|d| bits.
    guard = int(mpmath.log(-d, 2)) + 16
    with mpmath.extraprec(guard):
        n = int(mpmath.floor(d / mpmath.ln2))
        r = d - n * mpmath.ln2
    return mpmath.ldexp(mpmath.exp(r), n)


@dataclass
class _Softmax:
    """The softmax of one row at the working precision.

    ``kind`` is "finite" (at least one finite logit, none NaN or +inf), "posinf" (the
    limit over the +inf entries), "nan" or "undefined" (all -inf).
    """

    kind: str
    logp: list[mpf]
    p: list[mpf]
    q: list[mpf]  # 1 - p, computed without cancellation
    lse: mpf
    lse_scale: mpf  # |m| + log1p(s): the error bound scale of lse = m + log1p(s)


def _softmax_row(z: Sequence[mpf]) -> _Softmax:
    k = len(z)
    if any(mpmath.isnan(x) for x in z):
        return _Softmax("nan", [_NAN] * k, [_NAN] * k, [_NAN] * k, _NAN, mpf(0))
    n_posinf = sum(1 for x in z if x == _INF)
    if n_posinf:
        share = mpf(1) / n_posinf
        p = [share if x == _INF else mpf(0) for x in z]
        logp = [-mpmath.log(n_posinf) if x == _INF else -_INF for x in z]
        return _Softmax("posinf", logp, p, [1 - v for v in p], _INF, mpf(0))
    if all(x == -_INF for x in z):
        undefined = [UNDEFINED] * k
        return _Softmax("undefined", undefined, undefined, undefined, -_INF, mpf(0))
    j = max(range(k), key=lambda i: z[i])
    m = z[j]
    d = [mpmath.fsub(x, m, exact=True) if x != -_INF else -_INF for x in z]
    e = [_exp(x) for x in d]
    s = mpmath.fsum(e[i] for i in range(k) if i != j)
    log1p_s = mpmath.log1p(s)
    den = 1 + s
    p = [x / den for x in e]
    # 1 - p_i = sum_{k != i} e_k / den; for i != j that is (1 + (s - e_i)) / den, whose
    # subtraction only loses digits of a term that the 1 dominates.
    q = [s / den if i == j else (1 + (s - e[i])) / den for i in range(k)]
    logp = [x - log1p_s for x in d]
    return _Softmax("finite", logp, p, q, m + log1p_s, abs(m) + log1p_s)


def _certain(value: Any, scale: mpf, k: int, bits: int) -> bool:
    """Whether value, computed with absolute error <= (k + 16) 2**-prec * scale, has
    ``bits`` correct bits. Exact zeros are re-checked by the caller."""
    if not isinstance(value, mpf) or not mpmath.isfinite(value) or scale == 0:
        return True
    if value == 0:
        return False
    slack = mpmath.mp.prec - bits - math.ceil(math.log2(k + 16))
    return abs(value) >= mpmath.ldexp(scale, -slack)


def _refined(compute: Callable[[], tuple[list[Any], list[mpf] | None]], prec: int,
             k: int) -> list[Any]:
    """Run ``compute`` at ``prec``; recompute at doubled precision while an output with a
    non-zero error scale is not certain to ``prec - (DEFAULT_PREC - GOLD_BITS)`` bits
    (GOLD_BITS at the default precision; Ziv's strategy). An output that is exactly zero
    at two successive precisions is accepted as zero."""
    bits = prec - (DEFAULT_PREC - GOLD_BITS)
    previous: list[Any] | None = None
    while True:
        with mpmath.workprec(prec):
            values, scales = compute()
            if scales is None:
                return values
            settled = all(
                _certain(v, sc, k, bits) or (v == 0 and previous is not None and previous[i] == 0)
                for i, (v, sc) in enumerate(zip(values, scales, strict=True))
            )
        if settled or prec >= _MAX_PREC:
            return values
        previous, prec = values, prec * 2


def _effective_target(
    target: _Target, k: int, weight: list[mpf] | None, eps: mpf
) -> list[mpf] | None:
    """The row's u (see the module docstring); None for an ignored row."""
    if target.ignored:
        return None
    w = weight if weight is not None else [mpf(1)] * k
    keep = mpmath.fsub(1, eps, exact=True)
    spread = eps / k
    if target.index is not None:
        u = [w[c] * spread for c in range(k)] if eps else [mpf(0)] * k
        u[target.index] += keep * w[target.index]
        return u
    assert target.probs is not None
    return [w[c] * (keep * target.probs[c] + spread) if eps else w[c] * target.probs[c]
            for c in range(k)]


def _loss_terms(u: list[mpf], logp: list[Any]) -> tuple[Any, mpf]:
    """-sum u_c logp_c with 0 * (-inf) = 0, and the sum of |terms| (its error scale)."""
    if any(x is UNDEFINED for x in logp):
        return UNDEFINED, mpf(0)
    if any(mpmath.isnan(x) for x in u):
        return _NAN, mpf(0)
    terms = [-uc * lc for uc, lc in zip(u, logp, strict=True) if uc != 0]
    return mpmath.fsum(terms), mpmath.fsum(abs(t) for t in terms)


def _grad_terms(u: list[mpf], sm: _Softmax) -> tuple[list[Any], list[mpf]]:
    """(sum u) p_j - u_j = p_j (sum_{i != j} u_i) - u_j (1 - p_j), with error scales."""
    k = len(u)
    if sm.kind in ("nan", "undefined") or any(mpmath.isnan(x) for x in u):
        fill = UNDEFINED if sm.kind == "undefined" else _NAN
        return [fill] * k, [mpf(0)] * k
    total = mpf(0)
    for x in u:  # exact: the error scales below then need no term for the sum
        total = mpmath.fadd(total, x, exact=True)
    values, scales = [], []
    for j in range(k):
        others = mpmath.fsub(total, u[j], exact=True)
        values.append(sm.p[j] * others - u[j] * sm.q[j])
        scales.append(sm.p[j] * abs(others) + abs(u[j]) * sm.q[j])
    return values, scales


# ----------------------------------------------------------------- public functions


def _prec(prec: int | None) -> int:
    if prec is None:
        return DEFAULT_PREC
    if int(prec) < 64:
        raise ValueError(f"prec must be at least 64 bits, got {prec}")
    return int(prec)


def _with_prec(prec: int, fn: Callable[[], Any]) -> Any:
    with mpmath.workprec(prec):
        return fn()


def _pack(rows: list[list[Any]], single: bool, k: int) -> np.ndarray:
    out = np.empty((len(rows), k), dtype=object)
    for i, row in enumerate(rows):
        out[i, :] = row
    return out[0] if single else out


def _pack_scalars(values: list[Any], single: bool) -> Any:
    if single:
        return values[0]
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@standard_precision
def logsumexp(logits: Any, *, prec: int | None = None) -> Any:
    """log sum_k exp(z_k) per row, exactly.

    Computed as m + log1p(s) with m = max z (see the module docstring); an all -inf row
    gives -inf, a NaN row NaN, a +inf entry +inf.

    >>> import numpy as np
    >>> float(logsumexp(np.array([0.0, 0.0])))  # log 2
    0.6931471805599453
    >>> lse = logsumexp(np.array([[1e308, 1e308], [-np.inf, -np.inf]]))
    >>> [float(v) for v in lse]
    [1e+308, -inf]
    >>> logsumexp(np.zeros((2, 0))).tolist()  # no classes: the log of an empty sum
    [mpf('-inf'), mpf('-inf')]
    """
    p = _prec(prec)
    rows, single = _with_prec(p, lambda: _as_rows(logits, "logits", no_classes=True))

    def row_lse(z: list[mpf]) -> Any:
        if not z:  # K = 0: the sum of no exponentials is 0, its log -inf
            return -_INF
        def compute() -> tuple[list[Any], list[mpf] | None]:
            sm = _softmax_row(z)
            return [sm.lse], [sm.lse_scale]

        return _refined(compute, p, len(z))[0]

    return _pack_scalars([row_lse(z) for z in rows], single)


@standard_precision
def softmax(logits: Any, *, prec: int | None = None) -> np.ndarray:
    """p_i = exp(z_i) / sum_k exp(z_k) per row, exactly.

    >>> import numpy as np
    >>> [float(v) for v in softmax(np.array([0.0, 0.0, -np.inf]))]
    [0.5, 0.5, 0.0]
    >>> p = softmax(np.array([[37.42994775023705, 0.0]]))
    >>> float(p[0, 0] - 1)  # 1 - p keeps all its digits
    -5.551115123125776e-17
    """
    p = _prec(prec)
    rows, single = _with_prec(p, lambda: _as_rows(logits, "logits", no_classes=True))
    k = np.shape(logits)[-1]
    return _pack([_with_prec(p, lambda z=z: _softmax_row(z).p) if z else [] for z in rows],
                 single, k)


@standard_precision
def log_softmax(logits: Any, *, prec: int | None = None) -> np.ndarray:
    """l_i = z_i - logsumexp(z) per row, exactly (d_i - log1p(s): no cancellation).

    >>> import numpy as np
    >>> l = log_softmax(np.array([40.0, 0.0]))
    >>> float(l[0]), float(l[1])
    (-4.248354255291589e-18, -40.0)
    >>> float(log_softmax(np.array([1e308, -1e308]))[1])  # beyond float64's range
    -inf
    >>> import mpmath
    >>> mpmath.nstr(log_softmax(np.array([1e308, -1e308]))[1], 5)
    '-2.0e+308'
    """
    p = _prec(prec)
    rows, single = _with_prec(p, lambda: _as_rows(logits, "logits", no_classes=True))
    k = np.shape(logits)[-1]
    return _pack([_with_prec(p, lambda z=z: _softmax_row(z).logp) if z else [] for z in rows],
                 single, k)


@standard_precision
def softmax_jacobian(logits: Any, *, prec: int | None = None) -> np.ndarray:
    """J_ij = dp_i/dz_j = p_i (delta_ij - p_j), i.e. diag(p) - p p^T, per row: (N, K, K).

    The diagonal p_i (1 - p_i) uses the cancellation-free 1 - p_i.

    >>> import numpy as np
    >>> J = softmax_jacobian(np.array([0.0, 0.0]))
    >>> [[float(v) for v in row] for row in J]
    [[0.25, -0.25], [-0.25, 0.25]]
    """
    p = _prec(prec)
    rows, single = _with_prec(p, lambda: _as_rows(logits, "logits"))

    def row_jacobian(z: list[mpf]) -> np.ndarray:
        sm = _softmax_row(z)
        k = len(z)
        out = np.empty((k, k), dtype=object)
        for i in range(k):
            for j in range(k):
                if sm.kind == "undefined":
                    out[i, j] = UNDEFINED
                else:
                    out[i, j] = sm.p[i] * sm.q[i] if i == j else -sm.p[i] * sm.p[j]
        return out

    blocks = [_with_prec(p, lambda z=z: row_jacobian(z)) for z in rows]
    if single:
        return blocks[0]
    k = np.shape(logits)[-1]
    out = np.empty((len(rows), k, k), dtype=object)
    for n, block in enumerate(blocks):
        out[n] = block
    return out


@dataclass
class _Prepared:
    rows: list[list[mpf]]
    single: bool
    targets: list[_Target]
    weight: list[mpf] | None
    eps: mpf


def _prepare(logits: Any, target: Any, weight: Any, ignore_index: int | None,
             label_smoothing: float, reduction: str) -> _Prepared:
    _check_options(label_smoothing, reduction)
    rows, single = _as_rows(logits, "logits")
    k = len(rows[0]) if rows else np.shape(logits)[-1]
    targets = _targets(target, len(rows), k, single, ignore_index)
    return _Prepared(rows, single, targets, _weights(weight, k), mpmath.mpf(label_smoothing))


def _denominator(prep: _Prepared) -> mpf:
    """The divisor of reduction="mean" (PyTorch's documented formulas)."""
    total = mpf(0)
    for t in prep.targets:
        if t.ignored:
            continue
        if t.index is not None and prep.weight is not None:
            total = mpmath.fadd(total, prep.weight[t.index], exact=True)
        else:
            total += 1
    return total


@standard_precision
def cross_entropy(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    prec: int | None = None,
) -> Any:
    """The cross-entropy loss -sum_c u_c log softmax(z)_c per row, then reduced.

    ``target`` is class indices (N,) or probabilities (N, K) (not necessarily summing to
    one); options follow PyTorch's documented formulas (module docstring).

    >>> import numpy as np
    >>> float(cross_entropy(np.array([[0.0, 0.0]]), np.array([1]))[0])  # log 2
    0.6931471805599453
    >>> float(cross_entropy(np.array([[0.0, -np.inf]]), np.array([[1.0, 0.0]]))[0])
    0.0
    >>> float(cross_entropy(np.array([[0.0, -np.inf]]), np.array([1]))[0])
    inf
    >>> float(cross_entropy(np.zeros((2, 4)), np.array([0, 1]), reduction="mean",
    ...                     label_smoothing=0.1))  # log 4
    1.3862943611198906
    """
    p = _prec(prec)
    prep = _with_prec(p, lambda: _prepare(logits, target, weight, ignore_index,
                                          label_smoothing, reduction))

    def row_loss(z: list[mpf], t: _Target) -> Any:
        def compute() -> tuple[list[Any], list[mpf] | None]:
            u = _effective_target(t, len(z), prep.weight, prep.eps)
            if u is None:
                return [mpf(0)], None
            sm = _softmax_row(z)
            if sm.kind == "nan":
                return [_NAN], None
            value, scale = _loss_terms(u, sm.logp)
            return [value], [scale]

        return _refined(compute, p, len(z))[0]

    losses = [row_loss(z, t) for z, t in zip(prep.rows, prep.targets, strict=True)]
    if reduction == "none":
        return _pack_scalars(losses, prep.single)
    if any(v is UNDEFINED for v in losses):
        return UNDEFINED
    with mpmath.workprec(p):
        total = mpmath.fsum(losses) if losses else mpf(0)
        if reduction == "sum":
            return total
        den = _denominator(prep)
        return UNDEFINED if den == 0 else total / den


@standard_precision
def cross_entropy_grad(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    prec: int | None = None,
) -> np.ndarray:
    """The fused gradient d(loss)/dz = (sum u) p - u per row, of the reduced loss.

    For ``reduction="none"`` it is the gradient of the sum of the per-row losses. It is
    p - y only when the target sums to one.

    >>> import numpy as np
    >>> g = cross_entropy_grad(np.array([[0.0, 0.0]]), np.array([[2.0, 0.0]]))
    >>> [float(v) for v in g[0]]  # (sum y) p - y, not p - y = [-1.5, 0.5]
    [-1.0, 1.0]
    >>> g = cross_entropy_grad(np.array([[37.42994775023705, 0.0]]), np.array([0]))
    >>> float(g[0, 0])
    -5.551115123125776e-17
    """
    p = _prec(prec)
    prep = _with_prec(p, lambda: _prepare(logits, target, weight, ignore_index,
                                          label_smoothing, reduction))
    den = _with_prec(p, lambda: _denominator(prep)) if reduction == "mean" else mpf(1)

    def row_grad(z: list[mpf], t: _Target) -> list[Any]:
        def compute() -> tuple[list[Any], list[mpf] | None]:
            u = _effective_target(t, len(z), prep.weight, prep.eps)
            if u is None:
                return [mpf(0)] * len(z), None
            return _grad_terms(u, _softmax_row(z))

        g = _refined(compute, p, len(z))
        if den == 1:
            return g
        with mpmath.workprec(p):
            return [_divide(v, den) for v in g]

    return _pack([row_grad(z, t) for z, t in zip(prep.rows, prep.targets, strict=True)],
                 prep.single, np.shape(logits)[-1])


def _divide(value: Any, den: mpf) -> Any:
    if value is UNDEFINED:
        return UNDEFINED
    if den == 0:
        return mpf(0) if value == 0 else UNDEFINED
    return value / den


@standard_precision
def cross_entropy_hessian(logits: Any, target: Any, *, prec: int | None = None) -> np.ndarray:
    """The Hessian of the row loss wrt the logits: (sum y) (diag(p) - p p^T), (N, K, K).

    >>> import numpy as np
    >>> H = cross_entropy_hessian(np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]]))
    >>> [[float(v) for v in row] for row in H[0]]
    [[0.5, -0.5], [-0.5, 0.5]]
    """
    p = _prec(prec)
    prep = _with_prec(p, lambda: _prepare(logits, target, None, None, 0.0, "none"))
    jac = softmax_jacobian(np.array(prep.rows, dtype=object).reshape(len(prep.rows), -1),
                           prec=p)
    out = np.empty_like(jac)
    with mpmath.workprec(p):
        for n, t in enumerate(prep.targets):
            u = _effective_target(t, jac.shape[-1], None, mpf(0))
            assert u is not None
            total = mpmath.fsum(u)
            out[n] = [[_scale(total, v) for v in row] for row in jac[n]]
    return out[0] if prep.single else out


def _scale(factor: mpf, value: Any) -> Any:
    if value is UNDEFINED:
        return UNDEFINED
    return factor * value


# ----------------------------------------------------------- forward mode, second order


def _tangent_rows(tangent: Any, shape: tuple[int, int], what: str = "tangent"
                  ) -> list[list[mpf]]:
    rows, _ = _as_rows(tangent, what)
    if (len(rows), len(rows[0]) if rows else shape[1]) != shape:
        raise ValueError(f"{what} must have the logits' shape {shape}, got {np.shape(tangent)}")
    for n, row in enumerate(rows):
        if not all(mpmath.isfinite(x) for x in row):
            raise ValueError(f"{what} row {n} is not finite")
    return rows


def _jvp_terms(sm: _Softmax, v: list[mpf]) -> tuple[list[Any], list[mpf]]:
    """log_softmax's JVP v_i - <p, v> as sum_k p_k (v_i - v_k) (sum p = 1), with error
    scales sum_k p_k |v_i - v_k|; UNDEFINED at a -inf logit (log p is -inf there)."""
    values, scales = [], []
    for i in range(len(v)):
        if sm.logp[i] == -_INF:
            values.append(UNDEFINED)
            scales.append(mpf(0))
            continue
        diffs = [mpmath.fsub(v[i], v[k], exact=True) for k in range(len(v))]
        values.append(mpmath.fsum(pk * dk for pk, dk in zip(sm.p, diffs, strict=True)))
        scales.append(mpmath.fsum(pk * abs(dk) for pk, dk in zip(sm.p, diffs, strict=True)))
    return values, scales


def _special_row(sm: _Softmax, k: int) -> list[Any] | None:
    """The outputs of a row the derivatives do not grade: NaN, all -inf, +inf limits."""
    if sm.kind == "nan":
        return [_NAN] * k
    if sm.kind in ("undefined", "posinf"):
        return [UNDEFINED] * k
    return None


def _row_jvps(logits: Any, tangent: Any, prec: int | None, softmax: bool) -> np.ndarray:
    p = _prec(prec)
    rows, single = _with_prec(p, lambda: _as_rows(logits, "logits"))
    k = np.shape(logits)[-1]
    v_rows = _with_prec(p, lambda: _tangent_rows(tangent, (len(rows), k)))

    def row(z: list[mpf], v: list[mpf]) -> list[Any]:
        def compute() -> tuple[list[Any], list[mpf] | None]:
            sm = _softmax_row(z)
            special = _special_row(sm, k)
            if special is not None:
                return special, None
            values, scales = _jvp_terms(sm, v)
            if not softmax:
                return values, scales
            return ([mpf(0) if x is UNDEFINED else sm.p[i] * x for i, x in enumerate(values)],
                    [sm.p[i] * sc for i, sc in enumerate(scales)])

        return _refined(compute, p, k)

    return _pack([row(z, v) for z, v in zip(rows, v_rows, strict=True)], single, k)


@standard_precision
def log_softmax_jvp(logits: Any, tangent: Any, *, prec: int | None = None) -> np.ndarray:
    """The forward-mode derivative of log_softmax along ``tangent``: v_i - <p, v> per row,
    exactly; UNDEFINED at -inf logits (log p is -inf for every t) and on rows with +inf
    or only -inf logits, NaN on NaN rows.

    >>> import numpy as np
    >>> [float(x) for x in log_softmax_jvp(np.array([0.0, 0.0]), np.array([1.0, -1.0]))]
    [1.0, -1.0]
    """
    return _row_jvps(logits, tangent, prec, softmax=False)


@standard_precision
def softmax_jvp(logits: Any, tangent: Any, *, prec: int | None = None) -> np.ndarray:
    """The forward-mode derivative of softmax along ``tangent``: p_i (v_i - <p, v>) per
    row, i.e. (diag(p) - p p^T) v, exactly (0 at -inf logits).

    >>> import numpy as np
    >>> [float(x) for x in softmax_jvp(np.array([0.0, 0.0]), np.array([1.0, -1.0]))]
    [0.5, -0.5]
    """
    return _row_jvps(logits, tangent, prec, softmax=True)


def _reduced(values: list[Any], scales_sum: Any, reduction: str, den: mpf) -> Any:
    if any(x is UNDEFINED for x in values):
        return UNDEFINED
    total = mpmath.fsum(values)
    if reduction == "sum":
        return total
    return UNDEFINED if den == 0 else total / den


@standard_precision
def cross_entropy_jvp(
    logits: Any,
    target: Any,
    tangent: Any,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    prec: int | None = None,
) -> Any:
    """The forward-mode derivative of the cross-entropy along ``tangent``: per row
    -sum_j u_j (v_j - <p, v>) = <(sum u) p - u, v> (the gradient applied to the tangent),
    exactly; reduced like the loss (``"sum"``, ``"mean"``). UNDEFINED where the loss is
    infinite or undefined, 0 for an ignored row.

    >>> import numpy as np
    >>> float(cross_entropy_jvp(np.array([0.0, 0.0]), np.array(0), np.array([1.0, 0.0])))
    -0.5
    """
    p = _prec(prec)
    prep = _with_prec(p, lambda: _prepare(logits, target, weight, ignore_index,
                                          label_smoothing, reduction))
    k = np.shape(logits)[-1]
    v_rows = _with_prec(p, lambda: _tangent_rows(tangent, (len(prep.rows), k)))

    def row(z: list[mpf], t: _Target, v: list[mpf]) -> Any:
        def compute() -> tuple[list[Any], list[mpf] | None]:
            u = _effective_target(t, k, prep.weight, prep.eps)
            if u is None:
                return [mpf(0)], None
            sm = _softmax_row(z)
            special = _special_row(sm, k)
            if special is not None or any(mpmath.isnan(x) for x in u):
                return [special[0] if special else _NAN], None
            terms, scales = _jvp_terms(sm, v)
            if any(uj != 0 and x is UNDEFINED for uj, x in zip(u, terms, strict=True)):
                return [UNDEFINED], None  # mass on a -inf logit: the loss is +inf
            used = [(uj, x, sc) for uj, x, sc in zip(u, terms, scales, strict=True) if uj != 0]
            return ([-mpmath.fsum(uj * x for uj, x, _ in used)],
                    [mpmath.fsum(abs(uj) * sc for uj, _, sc in used)])

        return _refined(compute, p, k)[0]

    values = [row(z, t, v) for z, t, v in zip(prep.rows, prep.targets, v_rows, strict=True)]
    if reduction == "none":
        return _pack_scalars(values, prep.single)
    with mpmath.workprec(p):
        den = _denominator(prep) if reduction == "mean" else mpf(1)
        return _reduced(values, None, reduction, den)


@standard_precision
def cross_entropy_hvp(
    logits: Any,
    target: Any,
    vector: Any,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    prec: int | None = None,
) -> np.ndarray:
    """The Hessian of the reduced loss (of the sum for ``"none"``) applied to ``vector``:
    per row (sum u) p_i (v_i - <p, v>) = (sum u)(diag(p) - p p^T) v, exactly; 0 for an
    ignored row, divided by the mean's divisor for ``"mean"``.

    >>> import numpy as np
    >>> h = cross_entropy_hvp(np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]]),
    ...                       np.array([[1.0, -1.0]]))
    >>> [float(x) for x in h[0]]
    [1.0, -1.0]
    """
    p = _prec(prec)
    prep = _with_prec(p, lambda: _prepare(logits, target, weight, ignore_index,
                                          label_smoothing, reduction))
    k = np.shape(logits)[-1]
    v_rows = _with_prec(p, lambda: _tangent_rows(vector, (len(prep.rows), k), "vector"))
    den = _with_prec(p, lambda: _denominator(prep)) if reduction == "mean" else mpf(1)

    def row(z: list[mpf], t: _Target, v: list[mpf]) -> list[Any]:
        def compute() -> tuple[list[Any], list[mpf] | None]:
            u = _effective_target(t, k, prep.weight, prep.eps)
            if u is None:
                return [mpf(0)] * k, None
            sm = _softmax_row(z)
            special = _special_row(sm, k)
            if special is not None or any(mpmath.isnan(x) for x in u):
                return special or [_NAN] * k, None
            total = mpf(0)
            for x in u:
                total = mpmath.fadd(total, x, exact=True)
            terms, scales = _jvp_terms(sm, v)
            return ([mpf(0) if x is UNDEFINED else total * sm.p[i] * x
                     for i, x in enumerate(terms)],
                    [abs(total) * sm.p[i] * sc for i, sc in enumerate(scales)])

        h = _refined(compute, p, k)
        if den == 1:
            return h
        with mpmath.workprec(p):
            return [_divide(x, den) for x in h]

    return _pack([row(z, t, v) for z, t, v in zip(prep.rows, prep.targets, v_rows,
                                                   strict=True)], prep.single, k)


def _probs_rows(probs: Any, target: Any) -> tuple[list[list[mpf]], list[_Target], bool]:
    rows, single = _as_rows(probs, "probs")
    for n, row in enumerate(rows):
        for c, v in enumerate(row):
            if v < 0:
                raise ValueError(
                    f"probs row {n} has a negative probability {mpmath.nstr(v, 17)} at class {c}"
                )
    k = len(rows[0]) if rows else np.shape(probs)[-1]
    return rows, _targets(target, len(rows), k, single, None), single


@standard_precision
def cross_entropy_from_probs(probs: Any, target: Any, *, prec: int | None = None) -> Any:
    """L = -sum_i y_i log(yhat_i) per row from probabilities (no clipping: y > 0 at
    yhat = 0 gives +inf; 0 log 0 = 0).

    >>> import numpy as np
    >>> float(cross_entropy_from_probs(np.array([[0.5, 0.5]]), np.array([0]))[0])
    0.6931471805599453
    >>> float(cross_entropy_from_probs(np.array([[1.0, 0.0]]), np.array([1]))[0])
    inf
    """
    p = _prec(prec)
    rows, targets, single = _with_prec(p, lambda: _probs_rows(probs, target))

    def row_loss(yhat: list[mpf], t: _Target) -> Any:
        def compute() -> tuple[list[Any], list[mpf] | None]:
            y = _effective_target(t, len(yhat), None, mpf(0))
            assert y is not None
            if any(mpmath.isnan(v) for v in yhat):
                return [_NAN], None
            logs = [mpmath.log(v) if yc != 0 else mpf(0) for v, yc in zip(yhat, y, strict=True)]
            value, scale = _loss_terms(y, logs)
            return [value], [scale]

        return _refined(compute, p, len(yhat))[0]

    return _pack_scalars([row_loss(r, t) for r, t in zip(rows, targets, strict=True)], single)


@standard_precision
def cross_entropy_grad_wrt_probs(probs: Any, target: Any, *,
                                 prec: int | None = None) -> np.ndarray:
    """dL/dyhat_i = -y_i / yhat_i per row: the unfused route (0 where y_i = 0).

    >>> import numpy as np
    >>> g = cross_entropy_grad_wrt_probs(np.array([[0.25, 0.75]]), np.array([0]))
    >>> [float(v) for v in g[0]]
    [-4.0, 0.0]
    """
    p = _prec(prec)

    def compute() -> np.ndarray:
        rows, targets, single = _probs_rows(probs, target)
        out = []
        for yhat, t in zip(rows, targets, strict=True):
            y = _effective_target(t, len(yhat), None, mpf(0))
            assert y is not None
            if any(mpmath.isnan(v) for v in yhat):
                out.append([_NAN] * len(yhat))
                continue
            out.append([_neg_ratio(yc, v) for v, yc in zip(yhat, y, strict=True)])
        return _pack(out, single, np.shape(probs)[-1])

    return _with_prec(p, compute)


def _neg_ratio(y: mpf, yhat: mpf) -> mpf:
    """-y / yhat with the 0 log 0 = 0 convention: 0 where y = 0, -inf where only yhat = 0."""
    if y == 0:
        return mpf(0)
    if yhat == 0:
        return -_INF if y > 0 else _NAN
    return -y / yhat
