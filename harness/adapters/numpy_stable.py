"""Built-in ``numpy``: the careful softmax / cross-entropy the project recommends.

For one row z with maximum m at index j (the first maximum), write a_i = z_i - m,
s = sum_{k != j} exp(a_k) and L = log1p(s). Then

* logsumexp = m + L, log_softmax_i = a_i - L (two non-positive terms, no cancellation),
* softmax_i = exp(a_i) / (1 + s), so p_j = 1 / (1 + s) and 1 - p_j = s / (1 + s),
* with an effective target u (below) and U = sum u, the loss is U L - sum_i u_i a_i (two
  non-negative terms) and the gradient is U p - u, whose entry at j is computed as
  ((U - u_j) - u_j s) / (1 + s), never as U p_j - u_j: that is how p_t - 1 comes out
  as -sum_{k != t} p_k without cancellation. (Elsewhere p_i <= 1/2, nothing cancels.)

Options follow PyTorch's documented ``cross_entropy``: with eps = ``label_smoothing`` and
weights w (1 without), a class index t gives u_c = (1 - eps) w_t [c = t] + eps w_c / K and
probabilities y give u_c = w_c ((1 - eps) y_c + eps / K). ``reduction="mean"`` divides the
sum by sum_n w_{t_n} over non-ignored rows for class indices, by N for probabilities;
``ignore_index`` (class indices only) zeroes a row's loss and gradient. The gradient is of
the reduced loss (of the sum for ``"none"``); a mean over nothing has value 0/0 = NaN and
gradient 0.

DESIGN.md §4: 0 log 0 = 0 at -inf logits without target mass; +inf loss and a finite
gradient where mass meets -inf; a NaN in a row makes that row NaN; +inf logits give the
limit (one-hot over the +inf entries); an all -inf row has logsumexp -inf and NaN
elsewhere; with no classes (K = 0) logsumexp is -inf and softmax and log_softmax are
empty; invalid class indices and negative probabilities raise ``ValueError``.

Precision: every function computes in the next wider format and rounds once at the end:
float16 and bfloat16 in float32, float32 in float64, float64 in ``np.longdouble`` (x87
80-bit extended on x86-64 Linux; where longdouble is plain float64, float64 inputs are
computed in float64 and may be off by a few ulps). Same-precision arithmetic cannot be
faithful here: NumPy's float32 ``exp`` is up to ~2.1 ulp off (SIMD) and a float64 softmax
carries the exp and division roundings (measured up to ~4 ulp); one wider format makes
every output correctly rounded except within ~2**-11 ulp of a rounding boundary.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import REDUCTIONS, dtype_name

name = "numpy"
dtypes = ("float64", "float32", "float16", "bfloat16")
version = np.__version__

#: The format each case dtype is computed in (see the module docstring).
_EXTENDED = np.longdouble if np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant else None
WORKING_DTYPE: dict[str, Any] = {
    "float64": _EXTENDED or np.float64,
    "float32": np.float64,
    "float16": np.float32,
    "bfloat16": np.float32,
}


def _quiet() -> np.errstate:
    """Silence the floating-point warnings the special cases raise on purpose."""
    return np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore")


def load() -> Any:
    """The adapter: this module."""
    return sys.modules[__name__]


# --------------------------------------------------------------------------- helpers


def _working(array: Any, what: str = "logits", no_classes: bool = False
             ) -> tuple[np.ndarray, np.dtype]:
    """``array`` converted exactly to its working format, and its own dtype (K = 0 only
    with ``no_classes``: the functions the policy defines there)."""
    x = np.asarray(array)
    case = dtype_name(x.dtype)
    if case not in WORKING_DTYPE:
        raise TypeError(f"{what} must be float64, float32, float16 or bfloat16, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{what} must have shape (N, K), got shape {x.shape}")
    if x.shape[1] == 0 and not no_classes:
        raise ValueError(f"{what} must have at least one class (K >= 1), got shape {x.shape}")
    return x.astype(WORKING_DTYPE[case]), x.dtype


class _Rows:
    """The shifted row quantities of the module docstring, NaN where a row is NaN."""

    def __init__(self, z: np.ndarray) -> None:
        n, k = z.shape
        with _quiet():
            m = np.max(z, axis=1) if n else np.zeros(0, z.dtype)
            a = z - m[:, None]
            plus_inf = m == np.inf
            if plus_inf.any():  # the limit: a = 0 on the +inf entries, -inf elsewhere
                limit = np.where(z == np.inf, 0.0, -np.inf).astype(z.dtype)
                a = np.where(plus_inf[:, None], limit, a)
            j = np.argmax(a, axis=1) if n else np.zeros(0, np.intp)
            e = np.exp(a)
            others = e.copy()
            np.put_along_axis(others, j[:, None], 0.0, axis=1)
            s = others.sum(axis=1)
            self.log1p_s = np.log1p(s)
        self.m, self.a, self.j, self.e, self.s = m, a, j, e, s
        self.all_minus_inf = m == -np.inf
        self.k = k

    def softmax(self) -> np.ndarray:
        with _quiet():
            return self.e / (1 + self.s)[:, None]


def _round(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The one rounding, from the working format to the case dtype (overflow gives inf)."""
    with _quiet():
        return np.asarray(value).astype(dtype)


def _effective_target(
    target: Any,
    z: np.ndarray,
    *,
    weight: Any,
    ignore_index: int | None,
    label_smoothing: float,
) -> tuple[np.ndarray, Any, np.ndarray]:
    """The effective target u (N, K) in the working format, the mean's denominator, and
    which rows are ignored (their loss and gradient are 0 whatever their logits)."""
    n, k = z.shape
    work = z.dtype
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if weight is None:
        w = np.ones(k, dtype=work)
    else:
        w_given = np.asarray(weight)
        if w_given.shape != (k,):
            raise ValueError(f"weight must have shape ({k},), got shape {w_given.shape}")
        w = w_given.astype(work)
    eps = work.type(label_smoothing)
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        if t.shape != (n,):
            raise ValueError(f"class-index target must have shape ({n},), got shape {t.shape}")
        t = t.astype(np.int64)
        ignored = t == ignore_index if ignore_index is not None else np.zeros(n, bool)
        bad = ~ignored & ((t < 0) | (t >= k))
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"target[{row}] = {t[row]} is out of range for {k} classes")
        safe_t = np.where(ignored, 0, t)
        w_t = np.where(ignored, work.type(0), w[safe_t])
        u = np.zeros((n, k), work)
        if label_smoothing:
            u[:] = eps / k * w
            u[ignored] = 0
        at_target = u[np.arange(n), safe_t] + (1 - eps) * w_t
        np.put_along_axis(u, safe_t[:, None], at_target[:, None], axis=1)
        return u, w_t.sum(), ignored
    if ignore_index is not None:
        raise ValueError("ignore_index applies to class-index targets only")
    y_given = np.asarray(target)
    if y_given.shape != (n, k):
        raise ValueError(
            f"probability target must have the logits' shape ({n}, {k}), got shape {y_given.shape}"
        )
    if y_given.dtype.kind not in "fV":
        raise TypeError(f"probability target must be floating point, got {y_given.dtype}")
    y = y_given.astype(work)
    negative = y < 0
    if negative.any():
        row, col = (int(i) for i in np.argwhere(negative)[0])
        raise ValueError(f"target row {row} has a negative probability at class {col}")
    with _quiet():
        u = w * ((1 - eps) * y + eps / k) if label_smoothing else w * y
    return u, work.type(n), np.zeros(n, bool)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _row_losses(rows: _Rows, u: np.ndarray) -> np.ndarray:
    with _quiet():
        ua = np.where(u == 0, 0.0, u * rows.a)  # 0 log 0 = 0
        return u.sum(axis=1) * rows.log1p_s - ua.sum(axis=1)


def _row_gradients(rows: _Rows, u: np.ndarray) -> np.ndarray:
    with _quiet():
        total = u.sum(axis=1)
        grad = total[:, None] * rows.softmax() - u
        j = rows.j[:, None]
        u_j = np.take_along_axis(u, j, axis=1)[:, 0]
        rest = u.copy()
        np.put_along_axis(rest, j, 0.0, axis=1)
        at_max = (rest.sum(axis=1) - u_j * rows.s) / (1 + rows.s)
        np.put_along_axis(grad, j, at_max[:, None], axis=1)
        return grad


# --------------------------------------------------------------------------- the contract


def logsumexp(logits: np.ndarray) -> np.ndarray:
    z, dtype = _working(logits, no_classes=True)
    if z.shape[1] == 0:  # the log of an empty sum
        return np.full(z.shape[0], -np.inf, dtype=dtype)
    rows = _Rows(z)
    with _quiet():
        out = rows.m + rows.log1p_s
    out[rows.all_minus_inf] = -np.inf
    return _round(out, dtype)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z, dtype = _working(logits, no_classes=True)
    if z.shape[1] == 0:
        return np.empty(z.shape, dtype=dtype)
    rows = _Rows(z)
    with _quiet():
        return _round(rows.a - rows.log1p_s[:, None], dtype)


def softmax(logits: np.ndarray) -> np.ndarray:
    z, dtype = _working(logits, no_classes=True)
    if z.shape[1] == 0:
        return np.empty(z.shape, dtype=dtype)
    return _round(_Rows(z).softmax(), dtype)


def softmax_jacobian(logits: np.ndarray) -> np.ndarray:
    z, dtype = _working(logits)
    rows = _Rows(z)
    p = rows.softmax()
    with _quiet():
        jac = -(p[:, :, None] * p[:, None, :])
        one_minus_p = 1 - p
        complement_at_max = rows.s / (1 + rows.s)  # 1 - p_j without cancellation
        np.put_along_axis(one_minus_p, rows.j[:, None], complement_at_max[:, None], axis=1)
        diagonal = p * one_minus_p
    n, k = p.shape
    index = np.arange(k)
    jac[:, index, index] = diagonal
    return _round(jac, dtype)


def cross_entropy(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
) -> np.ndarray:
    _check_reduction(reduction)
    z, dtype = _working(logits)
    u, denominator, ignored = _effective_target(
        target, z, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
    losses = _row_losses(_Rows(z), u)
    losses[ignored] = 0
    if reduction == "none":
        return _round(losses, dtype)
    with _quiet():
        total = losses.sum()
        return _round(total / denominator if reduction == "mean" else total, dtype)


def cross_entropy_grad(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
) -> np.ndarray:
    _check_reduction(reduction)
    z, dtype = _working(logits)
    u, denominator, ignored = _effective_target(
        target, z, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
    grad = _row_gradients(_Rows(z), u)
    grad[ignored] = 0
    if reduction == "mean":
        if denominator == 0:
            grad = np.zeros_like(grad)  # 0/0 mean: the value is NaN, the gradient 0
        else:
            with _quiet():
                grad = grad / denominator
    return _round(grad, dtype)


def _probability_inputs(
    probs: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.dtype]:
    p, dtype = _working(probs, "probs")
    n, k = p.shape
    if (p < 0).any():
        row, col = (int(i) for i in np.argwhere(p < 0)[0])
        raise ValueError(f"probs row {row} has a negative probability at class {col}")
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        if t.shape != (n,):
            raise ValueError(f"class-index target must have shape ({n},), got shape {t.shape}")
        bad = (t < 0) | (t >= k)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"target[{row}] = {t[row]} is out of range for {k} classes")
        y = np.zeros_like(p)
        np.put_along_axis(y, t.astype(np.int64)[:, None], 1.0, axis=1)
    else:
        y, _ = _working(t, "target")
        if y.shape != (n, k):
            raise ValueError(f"probability target must have shape ({n}, {k}), got {y.shape}")
        negative = y < 0
        if negative.any():
            row, col = (int(i) for i in np.argwhere(negative)[0])
            raise ValueError(f"target row {row} has a negative probability at class {col}")
    nan_rows = np.isnan(p).any(axis=1) | np.isnan(y).any(axis=1)
    return p, y, nan_rows, dtype


def cross_entropy_from_probs(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    p, y, nan_rows, dtype = _probability_inputs(probs, target)
    with _quiet():
        terms = np.where(y == 0, 0.0, y * np.log(p))  # 0 log 0 = 0; no clipping of p = 0
        losses = -terms.sum(axis=1)
    losses[nan_rows] = np.nan
    return _round(losses, dtype)


def cross_entropy_grad_wrt_probs(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    p, y, nan_rows, dtype = _probability_inputs(probs, target)
    with _quiet():
        grad = np.where(y == 0, 0.0, -y / p)
    grad[nan_rows] = np.nan
    return _round(grad, dtype)


# --------------------------------------------------------------------------- forward mode


def _tangent(tangent: np.ndarray, like: np.ndarray) -> np.ndarray:
    v = np.asarray(tangent)
    if v.shape != like.shape:
        raise ValueError(f"tangent must have the logits' shape {like.shape}, got {v.shape}")
    return v.astype(like.dtype)


def _log_softmax_tangent(rows: _Rows, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, v - <p, v>): log_softmax's JVP in the working format."""
    p = rows.softmax()
    with _quiet():
        s = np.where(p == 0, 0.0, p * v).sum(axis=1)
        return p, v - s[:, None]


def log_softmax_jvp(logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
    z, dtype = _working(logits)
    _, out = _log_softmax_tangent(_Rows(z), _tangent(tangent, z))
    return _round(out, dtype)


def softmax_jvp(logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
    z, dtype = _working(logits)
    p, t = _log_softmax_tangent(_Rows(z), _tangent(tangent, z))
    with _quiet():
        return _round(np.where(p == 0, 0.0, p * t), dtype)


def cross_entropy_jvp(
    logits: np.ndarray,
    target: np.ndarray,
    tangent: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
) -> np.ndarray:
    """-sum_j u_j (v_j - <p, v>) per row: forward mode through log_softmax."""
    _check_reduction(reduction)
    z, dtype = _working(logits)
    u, denominator, ignored = _effective_target(
        target, z, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
    _, t = _log_softmax_tangent(_Rows(z), _tangent(tangent, z))
    with _quiet():
        rows = -(u * t).sum(axis=1)  # t is finite in a finite row; a NaN row stays NaN
    rows[ignored] = 0
    if reduction == "none":
        return _round(rows, dtype)
    with _quiet():
        total = rows.sum()
        return _round(total / denominator if reduction == "mean" else total, dtype)


def cross_entropy_hvp(
    logits: np.ndarray,
    target: np.ndarray,
    vector: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
) -> np.ndarray:
    """(sum u) p (v - <p, v>) per row: the Hessian (sum u)(diag(p) - p p^T) times v."""
    _check_reduction(reduction)
    z, dtype = _working(logits)
    u, denominator, ignored = _effective_target(
        target, z, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
    p, t = _log_softmax_tangent(_Rows(z), _tangent(vector, z))
    with _quiet():
        out = u.sum(axis=1)[:, None] * np.where(p == 0, 0.0, p * t)
    out[ignored] = 0
    if reduction == "mean":
        if denominator == 0:
            out = np.zeros_like(out)
        else:
            with _quiet():
                out = out / denominator
    return _round(out, dtype)
