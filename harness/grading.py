"""Error metrics, stability bounds, grades and profiles (DESIGN.md §7).

Every graded output element gets two numbers: its error in ulps of the candidate's dtype
against the exact value (``xentcheck.references.rounding.ulp_error``), and its *stability ratio*,
the error divided by the error the textbook shifted algorithm is allowed on that input:

    allowed = u_w * B + Lambda * lambda_w                      (working format = dtype)
    allowed = u_w * B + Lambda * lambda_w + u_o |x| + lambda_o / 2   (float16, bfloat16)

B is the first-order absolute rounding-error bound of the textbook algorithm in units of
its unit roundoff u_w (derived below), x the exact value. float64 and float32 are computed
in their own format; float16 and bfloat16 in float32 (u_w = 2**-24) and rounded once to
the dtype at the end (u_o |x| + lambda_o / 2: the standard model of that last rounding,
lambda = the format's smallest subnormal), as PyTorch and JAX do, so an implementation
that accumulates in half precision is graded as the defect it is. Lambda * lambda_w
covers results that underflow inside the algorithm (the model fl(a op b) = (a op b)(1 +
delta) + eta, |eta| <= lambda / 2; Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., §2.1): a few subnormal ulps, counted per function below.

The textbook algorithm and its error model
------------------------------------------
Per row z (K entries, n of them finite; -inf entries give exp = 0 exactly and add
nothing to any sum, so only finite logits enter the bounds): m = max z (exact),
d_k = z_k - m <= 0, s = sum_k exp(d_k) in [1, n], l = log s in [0, log n],
p_k = exp(d_k) / s, log p_k = d_k - l, lse = m + l, and the p-weighted spread
D = sum_k p_k |d_k| (<= max z - min z over the finite entries). Each basic operation
rounds with relative error <= u; ``exp`` and ``log`` with <= kappa u (``ELEMENTARY_ERROR``);
a sum of r non-negative terms, recursively or pairwise, with <= (r - 1) u times the sum.
Terms of second order in u are dropped (BHH do the same).

Blanchard, Higham & Higham, "Accurately computing the log-sum-exp and softmax functions",
IMA J. Numer. Anal. 41(4), 2021 ("BHH") bound the shifted algorithm by n + 2 + 2(max z -
min z) (softmax, relative) and, for log-sum-exp, by terms in |lse|, n and the spread of
the logits below the maximum (DESIGN.md quotes it as |lse + n - min z| / |lse|), with
kappa = 1. The forms below are the same derivation kept per element: |d_i| and D stand
where BHH bound both by max z - min z, so they are never larger than BHH's (at kappa = 1)
and much sharper for an entry near the maximum or a row that one entry dominates.

logsumexp: dhat_k = d_k (1 + delta): exp(dhat_k) = exp(d_k)(1 + d_k delta), so each term
    carries (|d_k| + kappa) u; the sum adds (n - 1) u: shat = s (1 + theta),
    |theta| <= (n - 1 + kappa + D) u. log shat = l + theta, plus kappa u l for the log;
    m + log shat rounds once more (u |lse|).
    B = |lse| + kappa l + n - 1 + kappa + D;  Lambda = n / 2 (the underflowing exps).
softmax: p_i = exp(dhat_i) / shat: (|d_i| + kappa) + |theta| / u + 1 (the division).
    B = p_i (n + 2 kappa + 2 |d_i| + (1 + kappa) l + D): the textbook needs only one
    |d_i| and no l; the rest admits exp(log_softmax(z)_i), whose exponent carries the
    log_softmax error below.  Lambda = 1 + n p_i / 2 (exp_i and the division,
    lambda / 2 each, and the sum's n lambda / 2 relative to s >= 1).
    BHH's relative n + 2 + 2(max - min) is this with kappa = 1 and |d_i|, D <= max - min.
log_softmax, computed as (z_i - m) - log s: u |d_i| from dhat_i, |theta| + kappa u l from
    log shat, u |log p_i| = u (|d_i| + l) from the subtraction.
    B = 2 |d_i| + (1 + kappa) l + n - 1 + kappa + D;  Lambda = 0 (nothing can underflow).
    No |m| and no |lse|: a candidate forming z_i - (m + log s) loses u |m| and is unstable
    at |z| ~ 1e8.
cross_entropy, per row L = -sum_k u_k log p_k with the effective target u_k (weights and
    smoothing as in ``xentcheck.references.gold``; U = sum |u_k|, r = #{u_k != 0}): log p_k from the
    log_softmax above, times u_k (one rounding), summed (r - 1): with
    B_ls(k) the log_softmax bound of entry k,
    B = sum_k |u_k| B_ls(k) + r sum_k |u_k log p_k| + sum_k c_k |log p_k|;  Lambda = r / 2,
    where c_k u bounds the error of forming u_k in the working format:
    c_k = tau |u_k| + eps |w_k y_k|, tau = 3 with smoothing eps (u_k = (1 - eps) y_k +
    eps / K: three roundings on either path) plus 2 with weights (their conversion to the
    working format and the product), and eps |w_k y_k| for eps's own conversion, which
    1 - eps amplifies. Ignored rows are 0 exactly (B = 0).
    sum: B = sum_n B_n + (N_r - 1) sum_n |L_n| (N_r the rows that are not ignored);
    mean (divisor den): B = B_sum / den + (nu + 1) |L_mean|, nu = N_r - 1 for the weighted
    divisor sum_n w_{t_n}, else 0 (N is exact); Lambda = Lambda_sum / den + 1/2.
cross_entropy_grad, the fused S p_j - u_j with S = sum_k u_k: phat_j as softmax (beta_j =
    its B), Shat with (r - 1) u S + sum_k c_k u, the product one rounding, u_j its c_j,
    the subtraction u |g_j|.
    B = S beta_j + p_j (r S + sum_k c_k) + c_j + |g_j|;  Lambda = S (1 + n p_j / 2) + 1/2.
    mean: the row's B without its |g_j| divided by den, plus (nu + 2) |g_mean_j| (the
    subtraction, the divisor's nu roundings and the division); Lambda / den + 1/2.
softmax_jacobian, diag(p) - p p^T from phat (beta_i as above):
    off the diagonal -p_i p_j: B = p_j beta_i + p_i beta_j + p_i p_j;
    on it p_i - p_i^2 (or p_i (1 - p_i)): B = |1 - 2 p_i| beta_i + p_i^2 + 2 |J_ii|, which
    covers both spellings (p_i^2 + |J_ii| for the first, 2 |J_ii| for the second);
    Lambda = 5/2 + n/2 (each factor's 1 + n p / 2, the product's 1/2).
cross_entropy_from_probs, -sum_k y_k log yhat_k (the inputs are exact): kappa for each
    log, one rounding for each product, (r - 1) for the sum, r = #{y_k != 0}:
    B = (kappa + r) sum_k |y_k log yhat_k|;  Lambda = r / 2.
cross_entropy_grad_wrt_probs, -y_k / yhat_k: one division. B = |g_k|;  Lambda = 1/2.

Evaluating the bounds
---------------------
Exact values are decoded once into arrays (:func:`decode`, a
``xentcheck.references.rounding.ExactValues``: sign, binary exponent, 159 leading significand bits)
and every candidate graded against them reuses the decoding; the ulp errors computed from
it are ``xentcheck.references.rounding.ulp_error``'s bit for bit.
B uses exact quantities, evaluated in float64: x (the exact output, read from its decoded
exponent and leading bits, so values beyond float64's range cost nothing), and p, d, l
from the logits by the shifted algorithm in float64, whose relative error (about
(n + 750) 2**-53, below 1e-12 for n <= 1e3) is immaterial to a first-order bound. Every
term is formed already multiplied by u_w (``|z_k u_w - m u_w|`` rather than
``|z_k - m|``), so logits of 1e308 overflow nothing; 0 * inf (a masked p_k = 0 times
|d_k| = inf) is taken as 0. The ratio is formed in ulps: error / (allowed / ulp(x)),
with ulp(x) exact, so subnormal and zero exact values are resolved too.

Grades and profiles
-------------------
Per element, best first (``GRADES``): ``exact`` (<= 0.5 ulp), ``faithful`` (<= 1 ulp),
``ulp≤N`` (<= N ulps, N the profile's budget), ``stable`` (ratio <= 1), ``unstable``,
``broken`` (non-finite where a finite value is right, finite or another non-finite where
NaN or an infinity is right: the conventions of ``ulp_error``; callers grade exceptions
and wrong shapes or dtypes with :func:`broken_result`). Exact values that are
``xentcheck.references.gold.UNDEFINED``, and rows of logits holding +inf or only -inf (DESIGN.md §4:
behaviour recorded, not graded; gold's logsumexp of an all -inf row is -inf, the limit,
but the shifted algorithm's NaN there is no defect), are not graded. A row's grade is
its worst element's; a result's, its worst row's. Profile ``standard`` passes ``stable``
or better, ``strict`` ``ulp≤N`` or better.
Per-adapter accuracy budgets (``harness/data/budgets.json``, :func:`load_budgets`) widen
N and the ratio limit for one adapter, function and dtype, never excuse ``broken``, and
say why; :func:`judge` reports when one was needed.

>>> import numpy as np
>>> import xentcheck.references
>>> z = np.array([[0.0, 1.0, 2.0]])
>>> exact = xentcheck.references.softmax(z)
>>> g = grade_elements("softmax", xentcheck.references.round_to(exact, "float64"), exact, inputs=z)
>>> summarize(g).grade
'exact'
>>> off = np.nextafter(np.nextafter(xentcheck.references.round_to(exact, "float64"), 1), 1)
>>> g = grade_elements("softmax", off, exact, inputs=z)
>>> summarize(g).grade, judge(g, STANDARD).passed, judge(g, profile("strict", ulp_budget=1)).passed
('ulp≤N', True, False)
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import DTYPES, FUNCTIONS, dtype_name
from xentcheck.references import portable
from xentcheck.references.rounding import (
    ExactValues,
    FloatFormat,
    chunks,
    float_format,
    ldexp,
    ulp_error,
)

__all__ = [
    "BUDGETS_PATH",
    "DEFAULT_ULP_BUDGET",
    "ELEMENTARY_ERROR",
    "GRADES",
    "STANDARD",
    "STRICT",
    "Budget",
    "BudgetError",
    "ElementGrades",
    "ExactValues",
    "Profile",
    "ResultGrade",
    "Verdict",
    "broken_result",
    "budget_for",
    "classify",
    "decode",
    "grade_elements",
    "grade_label",
    "judge",
    "load_budgets",
    "profile",
    "summarize",
    "working_dtype",
]

#: Element grades, best first. ``ulp≤N`` is read with the profile's N (:func:`grade_label`).
GRADES: tuple[str, ...] = ("exact", "faithful", "ulp≤N", "stable", "unstable", "broken")

_EXACT, _FAITHFUL, _ULP_N, _STABLE, _UNSTABLE, _BROKEN = range(6)
_UNGRADED = -1

#: kappa: the relative error of ``exp`` and ``log`` in units of u. 1 ulp <= 2u relative, and
#: the libraries' elementary functions are within 4 ulps: glibc's exp/log < 1 ulp, NumPy's
#: SIMD float32 exp/log 2.52 and 3.83 ulps (numpy PR #13134 measurements), NumPy's SVML
#: float64 loops promise <= 4 ulps; so 2 * 4 = 8. BHH take 1 (correctly rounded exp/log).
ELEMENTARY_ERROR = 8.0

#: N, the ulps that ``strict`` passes. 4 is the largest error of one elementary-function
#: call in the libraries graded (NumPy's float32 log: 3.83 ulps, SVML's float64 <= 4), so
#: a careful same-precision implementation is not failed for its libm; a float64 softmax
#: in float64 (exp, a sum, a division) measures up to ~4 ulps (harness/adapters/numpy_stable).
DEFAULT_ULP_BUDGET = 4.0

#: The accuracy-budget data file.
BUDGETS_PATH = Path(__file__).resolve().parent / "data" / "budgets.json"

_PROBS_FUNCTIONS = frozenset({"cross_entropy_from_probs", "cross_entropy_grad_wrt_probs"})

def working_dtype(dtype: Any) -> str:
    """The format the textbook algorithm computes a case of ``dtype`` in.

    >>> working_dtype("float16"), working_dtype("float64")
    ('float32', 'float64')
    """
    name = dtype_name(dtype)
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {name}; expected one of {', '.join(DTYPES)}")
    return "float32" if name in ("float16", "bfloat16") else name


def grade_label(grade: str, ulp_budget: float = DEFAULT_ULP_BUDGET) -> str:
    """A grade as shown to people: ``ulp≤N`` with its N written out.

    >>> grade_label("ulp≤N", 4), grade_label("stable", 4)
    ('ulp≤4', 'stable')
    """
    return f"ulp≤{ulp_budget:g}" if grade == "ulp≤N" else grade


# ------------------------------------------------------------------------ exact values


def decode(exact: Any) -> ExactValues:
    """Exact values decoded once for grading (``xentcheck.references.rounding.ExactValues``).

    ``exact``: gold's values (an object array or scalar of mpf, ints, floats and
    ``UNDEFINED``), a float array taken as exact (float64, float32, float16, bfloat16 or
    ``np.longdouble``, as ``xentcheck.references.fast`` returns; NaN is NaN there: to mark
    undefined elements use ``ExactValues.from_floats(values, undefined=mask)``), or
    values already decoded (returned as they are). Decode once and pass the result to
    :func:`grade_elements` for every candidate graded against the same values.

    >>> import xentcheck.references
    >>> decoded = decode(xentcheck.references.softmax(np.array([0.0, 1.0])))
    >>> decoded.shape, decoded.expo.tolist()
    ((2,), [-2, -1])
    """
    if isinstance(exact, ExactValues):
        return exact
    if isinstance(exact, np.ndarray) and exact.dtype != object and exact.dtype.kind not in "iub":
        return ExactValues.from_floats(exact)
    return ExactValues.from_exact(exact)


# ------------------------------------------------------------------------- row quantities


def _mul(a: np.ndarray, b: Any) -> np.ndarray:
    """a * b with 0 * inf = 0 (a masked p_k = 0 or u_k = 0 times an infinite |log p_k|)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(a == 0, 0.0, a * b)


@dataclass(frozen=True)
class _Rows:
    """The exact quantities of the shifted algorithm per row, in float64, u-scaled where
    they are magnitudes of logits (see the module docstring)."""

    p: np.ndarray  # (N, K) softmax
    du: np.ndarray  # (N, K) u |z_k - m|; inf where z_k = -inf
    n: np.ndarray  # (N,) finite logits
    ell: np.ndarray  # (N,) l = log s
    spread: np.ndarray  # (N,) u D = u sum_k p_k |z_k - m|
    lse: np.ndarray  # (N,) u |m + l|
    ungraded: np.ndarray  # (N,) rows with a +inf logit or all -inf (DESIGN.md §4)


def _rows(z: np.ndarray, uw: float) -> _Rows:
    loops = compiled_loops(z.size)
    if loops is not None and z.ndim == 2:
        return _compiled_rows(loops, np.ascontiguousarray(z, np.float64), uw)
    nan = np.isnan(z).any(axis=1)
    posinf = (z == np.inf).any(axis=1)
    # (a row of no classes, K = 0, is not one: its logsumexp -inf is graded)
    all_minus_inf = ~np.isfinite(z).any(axis=1) & ~nan & ~posinf & (z.shape[1] > 0)
    # NaN rows have NaN exact values, graded by the ulp conventions alone; +inf and all
    # -inf rows are not graded: a benign stand-in keeps the arithmetic quiet.
    bad = nan | posinf | all_minus_inf
    z = np.where(bad[:, None], 0.0, z)
    finite = np.isfinite(z)
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        m = np.max(np.where(finite, z, -np.inf), axis=1, initial=-np.inf)
        d = np.where(finite, z - m[:, None], -np.inf)  # may overflow to -inf: exp = 0
        e = portable.exp(d)  # not np.exp: its last bits change with the CPU
        s = e.sum(axis=1)
        p = e / s[:, None]
        ell = portable.log(s)
        du = np.where(finite, np.abs(z * uw - (m * uw)[:, None]), np.inf)
        spread = _mul(p, du).sum(axis=1)
        lse = np.abs(m * uw + ell * uw)
    return _Rows(p, du, finite.sum(axis=1).astype(np.float64), ell, spread, lse,
                 posinf | all_minus_inf)


def _compiled_rows(loops: Any, z: np.ndarray, uw: float) -> _Rows:
    """:func:`_rows` with its elementwise passes compiled (three instead of some
    twenty) and its sums NumPy's own (pairwise: the same bits)."""
    n, k = z.shape
    nan, posinf = np.empty(n, bool), np.empty(n, bool)
    m, count = np.empty(n), np.empty(n, np.int64)
    loops.row_scan(z, nan, posinf, m, count)
    all_minus_inf = (count == 0) & ~nan & ~posinf & (k > 0)
    bad = nan | posinf | all_minus_inf
    m[bad] = 0.0  # (the rows read as zeros)
    count[bad] = k
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        d, du = np.empty((n, k)), np.empty((n, k))
        loops.shifted_into(z, bad, m, m * uw, uw, d, du)
        e = portable.exp(d)
        del d
        s = e.sum(axis=1)
        p = np.empty((n, k))
        loops.softmax_spread_into(e, s, du, p)
        spread = e.sum(axis=1)
        ell = portable.log(s)
        lse = np.abs(m * uw + ell * uw)
    return _Rows(p, du, count.astype(np.float64), ell, spread, lse, posinf | all_minus_inf)


def _kept(memo: dict[Any, Any] | None, key: tuple[Any, ...], owners: tuple[Any, ...],
          make: Callable[[], Any]) -> Any:
    """``make()``, kept in ``memo`` under ``key`` for the next output graded on the same
    ``owners`` (the arrays it is computed from, held and compared by identity: an id can
    be reused once its object is gone). Its arrays are made read-only: every output that
    shares them only reads."""
    if memo is None:
        return make()
    kept = memo.get(key)
    if kept is None or any(a is not b for a, b in zip(kept[0], owners, strict=True)):
        made = make()
        for value in [made] if isinstance(made, np.ndarray) else vars(made).values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        kept = memo[key] = (owners, made)
    return kept[1]


def _kept_rows(x: np.ndarray, uw: float, memo: dict[Any, Any] | None) -> _Rows:
    """:func:`_rows` of ``x``, kept for the next output graded on the same array (every
    output of a case is graded on its logits: one softmax, not one each)."""
    return _kept(memo, ("rows", uw), (x,), lambda: _rows(x.astype(np.float64), uw))


@dataclass(frozen=True)
class _Targets:
    """The effective target u (N, K) in float64 and what forming it costs."""

    u: np.ndarray  # |u_k|
    c: np.ndarray  # c_k: the error of uhat_k is <= c_k u (module docstring)
    ignored: np.ndarray  # (N,)
    den: float  # the divisor of reduction="mean"
    nu: int  # roundings in computing that divisor


def _targets(target: Any, options: Mapping[str, Any], n_rows: int, k: int) -> _Targets:
    weight = options.get("weight")
    eps = float(options.get("label_smoothing") or 0.0)
    ignore_index = options.get("ignore_index")
    w = np.ones(k) if weight is None else np.abs(np.asarray(weight).astype(np.float64))
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        t = t.reshape(n_rows).astype(np.int64)
        ignored = t == ignore_index if ignore_index is not None else np.zeros(n_rows, bool)
        safe = np.where(ignored | (t < 0) | (t >= k), 0, t)
        y = np.zeros((n_rows, k))
        y[np.arange(n_rows), safe] = 1.0
        weighted = weight is not None
        den = float(w[safe][~ignored].sum()) if weighted else float((~ignored).sum())
        nu = max(int((~ignored).sum()) - 1, 0) if weighted else 0
    else:
        y = np.abs(np.asarray(target).astype(np.float64).reshape(n_rows, k))
        ignored = np.zeros(n_rows, bool)
        den, nu = float(n_rows), 0
    with np.errstate(invalid="ignore", over="ignore"):
        u = w * ((1 - eps) * y + eps / k) if eps else w * y
    u[ignored] = 0.0
    tau = (3.0 if eps else 0.0) + (2.0 if weight is not None else 0.0)  # c_k: module docstring
    c = tau * u + (eps * _mul(w, y) if eps else 0.0)
    c[ignored] = 0.0
    return _Targets(u, c, ignored, den, nu)


def _kept_targets(target: Any, options: Mapping[str, Any], n_rows: int, k: int,
                  memo: dict[Any, Any] | None) -> _Targets:
    """:func:`_targets`, kept for the next output graded with the same target and options
    (a case's loss, gradient, JVP and HVP share one)."""
    weight = options.get("weight")
    key = ("targets", id(target), id(weight), options.get("label_smoothing"),
           options.get("ignore_index"), n_rows, k)
    return _kept(memo, key, (target, weight), lambda: _targets(target, options, n_rows, k))


# ------------------------------------------------------------------------------- bounds


def _softmax_error(r: _Rows, uw: float) -> np.ndarray:
    """beta: u-scaled absolute error bound of phat,
    p_i (u (n + 2 kappa) + 2 u |d_i| + u (1 + kappa) l + u D).

    The textbook exp(d_i)/s needs only u (n + 2 kappa + |d_i|) + u D; the second |d_i| and
    the (1 + kappa) l admit the other standard route, exp(log_softmax(z)_i), whose
    exponent carries log_softmax's error u (|d_i| + (1 + kappa) l + n - 1 + kappa) + u D
    (see log_softmax below) into a relative error of p_i. Both are correct algorithms.
    """
    kappa = ELEMENTARY_ERROR
    shared = uw * (r.n + 2 * kappa + (1 + kappa) * r.ell) + r.spread
    loops = compiled_loops(r.p.size)
    if loops is not None:  # one pass, the same bits
        out = np.empty(r.p.shape)
        loops.softmax_error_into(r.p, r.du, shared, out)
        return out
    return _mul(r.p, shared[:, None] + 2 * r.du)


def _kept_softmax_error(r: _Rows, uw: float, memo: dict[Any, Any] | None) -> np.ndarray:
    """:func:`_softmax_error`, kept for the next output graded on the same rows (softmax
    and the cross-entropy gradient both need it)."""
    return _kept(memo, ("softmax error", uw), (r,), lambda: _softmax_error(r, uw))


def _softmax_lambda(r: _Rows, memo: dict[Any, Any] | None) -> np.ndarray:
    """Lambda of softmax, 1 + n p_i / 2 (module docstring), kept like the error."""

    def make() -> np.ndarray:
        loops = compiled_loops(r.p.size)
        if loops is None:
            return 1 + r.p * r.n[:, None] / 2
        out = np.empty(r.p.shape)
        loops.softmax_lambda_into(r.p, r.n, out)
        return out

    return _kept(memo, ("softmax lambda",), (r,), make)


def _log_softmax_error(r: _Rows, uw: float) -> np.ndarray:
    kappa = ELEMENTARY_ERROR
    shared = uw * (r.n - 1 + kappa + (1 + kappa) * r.ell) + r.spread
    loops = compiled_loops(r.du.size)
    if loops is not None:
        out = np.empty(r.du.shape)
        loops.log_softmax_error_into(r.du, shared, out)
        return out
    return 2 * r.du + shared[:, None]


def _bounds(function: str, inputs: np.ndarray, target: Any, options: Mapping[str, Any],
            uw: float, xu: np.ndarray, tangent: np.ndarray | None = None,
            memo: dict[Any, Any] | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u_w B, Lambda, rows not graded) for the flattened output; ``xu`` = u_w |x|."""
    x = np.asarray(inputs)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    n_rows, k = x.shape
    reduction = options.get("reduction") or "none"
    kappa = ELEMENTARY_ERROR
    none = np.zeros(n_rows, bool)

    if function in _PROBS_FUNCTIONS:
        y = _kept_targets(target, {}, n_rows, k, memo).u
        if function == "cross_entropy_grad_wrt_probs":
            return xu, np.full(xu.shape, 0.5), none
        log_u = _scaled_logs(x, y != 0, uw)
        r_count = (y != 0).sum(axis=1)
        return (kappa + r_count) * _mul(y, log_u).sum(axis=1), r_count / 2.0, none

    r = _kept_rows(x, uw, memo)
    if function == "logsumexp":
        bound = r.lse + uw * (kappa * r.ell + r.n - 1 + kappa) + r.spread
        return bound, r.n / 2, r.ungraded
    if function == "softmax":
        return _kept_softmax_error(r, uw, memo), _softmax_lambda(r, memo), r.ungraded
    if function == "log_softmax":
        return _log_softmax_error(r, uw), np.zeros_like(r.p), r.ungraded
    if function == "softmax_jacobian":
        beta = _softmax_error(r, uw)
        p = r.p
        bound = p[:, None, :] * beta[:, :, None] + p[:, :, None] * beta[:, None, :]
        bound += uw * p[:, :, None] * p[:, None, :]
        diag = np.abs(1 - 2 * p) * beta + uw * p * p + 2 * xu.reshape(n_rows, k, k).diagonal(
            axis1=1, axis2=2)
        index = np.arange(k)
        bound[:, index, index] = diag
        lam = np.broadcast_to((2.5 + r.n / 2)[:, None, None], bound.shape)
        return bound, lam, r.ungraded

    if function in _TANGENT_FUNCTIONS:
        return _jvp_bounds(function, r, uw, xu, tangent, n_rows, k)

    t = _kept_targets(target, options, n_rows, k, memo)
    r_count = (t.u != 0).sum(axis=1)
    if function in _TARGET_TANGENT_FUNCTIONS:
        return _ce_directional_bounds(function, r, t, r_count, uw, xu, tangent, n_rows, k,
                                      reduction)
    if function == "cross_entropy":
        loops = compiled_loops(r.p.size)
        if loops is not None:  # the products below in one pass, NumPy's sums: the same bits
            mass, spread, costs = (np.empty(r.p.shape) for _ in range(3))
            loops.loss_bound_terms_into(r.du, uw * r.ell, np.ascontiguousarray(t.u),
                                        np.ascontiguousarray(t.c), mass, spread, costs)
        else:
            log_u = r.du + uw * r.ell[:, None]  # u |log p_k|
            mass, spread, costs = _mul(t.u, log_u), _mul(t.u, 2 * r.du), _mul(t.c, log_u)
        magnitude = mass.sum(axis=1)  # u |L_n|
        row = (spread.sum(axis=1)
               + t.u.sum(axis=1) * (uw * (r.n - 1 + kappa + (1 + kappa) * r.ell) + r.spread)
               + r_count * magnitude + costs.sum(axis=1))
        lam = r_count / 2.0
        row[t.ignored], magnitude[t.ignored], lam[t.ignored] = 0.0, 0.0, 0.0
        if reduction == "none":
            return row, lam, r.ungraded
        total = row.sum() + max(int((~t.ignored).sum()) - 1, 0) * magnitude.sum()
        ungraded = np.array([r.ungraded.any()])
        if reduction == "sum":
            return np.array([total]), np.array([lam.sum()]), ungraded
        den = abs(t.den) or 1.0  # den = 0: the exact mean is UNDEFINED, not graded
        bound = total / den + (t.nu + 1) * magnitude.sum() / den
        return np.array([bound]), np.array([lam.sum() / den + 0.5]), ungraded

    if function == "cross_entropy_grad":
        total = t.u.sum(axis=1)
        beta = _kept_softmax_error(r, uw, memo)
        loops = compiled_loops(r.p.size)
        if loops is not None:  # the lines below in one pass, the same bits
            mean = reduction == "mean" and t.den != 0
            bound, lam = np.empty(r.p.shape), np.empty(r.p.shape)
            loops.gradient_bounds_into(
                beta, r.p, t.c, _softmax_lambda(r, memo), xu.reshape(n_rows, k), total,
                uw * r_count * total + uw * t.c.sum(axis=1), t.ignored, uw, mean,
                abs(t.den) if mean else 1.0, float(t.nu + 2), bound, lam)
            return bound, lam, r.ungraded
        inner = (total[:, None] * beta
                 + r.p * (uw * r_count * total + uw * t.c.sum(axis=1))[:, None]
                 + uw * t.c)
        lam = total[:, None] * _softmax_lambda(r, memo) + 0.5
        inner[t.ignored], lam[t.ignored] = 0.0, 0.5
        gu = xu.reshape(n_rows, k)
        if reduction == "mean" and t.den != 0:
            den = abs(t.den)
            return inner / den + (t.nu + 2) * gu, lam / den + 0.5, r.ungraded
        return inner + gu, lam, r.ungraded
    raise ValueError(f"unknown function {function!r}; expected one of {', '.join(FUNCTIONS)}")


def _scaled_logs(x: np.ndarray, needed: np.ndarray, uw: float) -> np.ndarray:
    """u |log x| where ``needed`` (the entries a target weighs; 0 elsewhere, where only a
    product with a zero target reads it): a one-hot target needs one log per row."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if needed.mean() >= 0.5:
            return np.abs(portable.log(x.astype(np.float64))) * uw
        out = np.zeros(x.shape)
        out[needed] = np.abs(portable.log(x[needed].astype(np.float64))) * uw
        return out


_TANGENT_FUNCTIONS = ("softmax_jvp", "log_softmax_jvp")
_TARGET_TANGENT_FUNCTIONS = ("cross_entropy_jvp", "cross_entropy_hvp")


def _directions(r: _Rows, uw: float, tangent: np.ndarray, n_rows: int, k: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(v, s = <p, v>, u-scaled error of s, log_softmax's JVP v - s, its u-scaled error):
    s from phat (beta each) and K products summed (K u sum |p v|), the subtraction one
    rounding (u (|v| + |s|): either order of the operations)."""
    v = np.asarray(tangent, np.float64).reshape(n_rows, k)
    beta = _softmax_error(r, uw)
    av = np.abs(v)
    s = (r.p * v).sum(axis=1)
    err_s = _mul(beta, av).sum(axis=1) + uw * k * _mul(r.p, av).sum(axis=1)
    ljvp = v - s[:, None]
    ljvp_err = err_s[:, None] + uw * (av + np.abs(s)[:, None])
    return v, s, err_s, ljvp, ljvp_err


def _jvp_bounds(function: str, r: _Rows, uw: float, xu: np.ndarray, tangent: Any,
                n_rows: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log_softmax's JVP v_i - <p, v>: B = err_s + (|v_i| + |s|).
    softmax's JVP p_i (v_i - s), or p_i v_i - p_i s: B = p_i err_s + beta_i (|v_i| + |s|)
    + p_i (|v_i| + |s|) (the product) + |J_i| (the last rounding): both orders covered.
    Lambda = 1 + n / 2 (the products' underflows, as softmax's)."""
    if tangent is None:
        raise ValueError(f"{function} is graded with its tangent")
    v, s, err_s, ljvp, ljvp_err = _directions(r, uw, tangent, n_rows, k)
    lam = np.broadcast_to((1 + r.n / 2)[:, None], (n_rows, k))
    if function == "log_softmax_jvp":
        return ljvp_err, lam, r.ungraded
    beta = _softmax_error(r, uw)
    spread = np.abs(v) + np.abs(s)[:, None]
    bound = (_mul(r.p, err_s[:, None]) + _mul(beta, spread) + uw * _mul(r.p, spread)
             + xu.reshape(n_rows, k))
    return bound, lam, r.ungraded


def _ce_directional_bounds(function: str, r: _Rows, t: _Targets, r_count: np.ndarray,
                           uw: float, xu: np.ndarray, tangent: Any, n_rows: int, k: int,
                           reduction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cross_entropy_jvp, per row J = -sum_j u_j (v_j - s) (forward mode through
    log_softmax) or <S p - u, v> (the gradient applied to v): both routes' errors,
    B = sum_j |u_j| lerr_j + sum_j c_j |v_j - s| + (r + K) sum_j |u_j| (|v_j| + |s|)
      + sum_j Bgrad_j |v_j|, Bgrad as cross_entropy_grad's; reduced as the loss is.
    cross_entropy_hvp, S p_i (v_i - s) (S = sum u): S times softmax's JVP bound, its
    magnitude times S's own error (r S + sum c), one rounding; mean as the gradient.
    Lambda = (S + 1)(1 + n / 2) + r / 2 + 1/2 (the underflows of every product)."""
    if tangent is None:
        raise ValueError(f"{function} is graded with its tangent")
    v, s, err_s, ljvp, ljvp_err = _directions(r, uw, tangent, n_rows, k)
    total = t.u.sum(axis=1)
    beta = _softmax_error(r, uw)
    lam_row = (total + 1) * (1 + r.n / 2) + r_count / 2 + 0.5
    spread = np.abs(v) + np.abs(s)[:, None]
    if function == "cross_entropy_hvp":
        sjvp = np.abs(r.p * ljvp)
        sjvp_err = _mul(r.p, err_s[:, None]) + _mul(beta, spread) + uw * _mul(r.p, spread)
        inner = (total[:, None] * sjvp_err
                 + sjvp * (uw * r_count * total + uw * t.c.sum(axis=1))[:, None])
        inner[t.ignored] = 0.0
        lam = np.broadcast_to(lam_row[:, None], (n_rows, k)).copy()
        lam[t.ignored] = 0.5
        hu = xu.reshape(n_rows, k)
        if reduction == "mean" and t.den != 0:
            den = abs(t.den)
            return inner / den + (t.nu + 2) * hu, lam / den + 0.5, r.ungraded
        return inner + hu, lam, r.ungraded
    grad_bound = (total[:, None] * beta
                  + r.p * (uw * r_count * total + uw * t.c.sum(axis=1))[:, None]
                  + uw * t.c + uw * np.abs(total[:, None] * r.p - t.u))
    row = (_mul(t.u, ljvp_err).sum(axis=1) + uw * _mul(t.c, np.abs(ljvp)).sum(axis=1)
           + uw * (r_count + k) * _mul(t.u, spread).sum(axis=1)
           + _mul(grad_bound, np.abs(v)).sum(axis=1))
    magnitude = uw * _mul(t.u, spread).sum(axis=1)
    row[t.ignored], magnitude[t.ignored], lam_row[t.ignored] = 0.0, 0.0, 0.0
    if reduction == "none":
        return row + xu.reshape(n_rows), lam_row, r.ungraded
    bound = row.sum() + max(int((~t.ignored).sum()) - 1, 0) * magnitude.sum() + xu.sum()
    ungraded = np.array([r.ungraded.any()])
    if reduction == "sum":
        return np.array([bound]), np.array([lam_row.sum()]), ungraded
    den = abs(t.den) or 1.0  # den = 0: the exact mean is UNDEFINED, not graded
    return (np.array([bound / den + (t.nu + 1) * magnitude.sum() / den]),
            np.array([lam_row.sum() / den + 0.5]), ungraded)


# ------------------------------------------------------------------------------ grading


def check_ulp_budget(ulp_budget: float) -> None:
    """Raise ``ValueError`` unless ``ulp_budget`` (the N of "<= N ulp") is at least 1."""
    if not ulp_budget >= 1:
        raise ValueError(f"ulp_budget must be at least 1, got {ulp_budget}")


def classify(ulp: np.ndarray, ratio: np.ndarray, broken: np.ndarray, graded: np.ndarray, *,
             ulp_budget: float = DEFAULT_ULP_BUDGET, ratio_limit: float = 1.0) -> np.ndarray:
    """Grade codes (indices into ``GRADES``; -1 = not graded) from the two numbers.

    >>> classify(np.array([0.5, 0.51, 3.0, 9.0, 9.0]), np.array([0, 0, 0, 0.5, 2.0]),
    ...          np.zeros(5, bool), np.ones(5, bool))
    array([0, 1, 2, 3, 4], dtype=int8)
    """
    check_ulp_budget(ulp_budget)
    codes = np.full(np.shape(ulp), _UNSTABLE, np.int8)
    with np.errstate(invalid="ignore"):
        codes[ratio <= ratio_limit] = _STABLE
        codes[ulp <= ulp_budget] = _ULP_N
        codes[ulp <= 1.0] = _FAITHFUL
        codes[ulp <= 0.5] = _EXACT
    codes[broken] = _BROKEN
    codes[~graded] = _UNGRADED
    return codes


@dataclass(frozen=True, eq=False)
class ElementGrades:
    """Per-element numbers of one graded output (all arrays have the output's shape).

    ``ulp``: error in ulps of ``dtype`` (NaN where not graded). ``ratio``: stability ratio
    (NaN where not graded, inf where broken). ``allowed``: the allowed error in ulps (the
    ratio's denominator). ``codes``: grades under ``ulp_budget`` (:func:`classify`).
    """

    function: str
    dtype: str
    ulp: np.ndarray
    ratio: np.ndarray
    allowed: np.ndarray
    broken: np.ndarray
    graded: np.ndarray
    codes: np.ndarray
    ulp_budget: float = DEFAULT_ULP_BUDGET

    @functools.cached_property
    def largest(self) -> tuple[float | None, float | None, float | None, float | None]:
        """The largest ulp error and ratio over graded elements that are not broken (NaN
        if one of them is: :func:`summarize`'s), then over every graded element, NaN left
        out (a finding's figures); None where there is none. Whatever the thresholds, so
        taken once, in one pass (compiled where the output is large enough)."""
        ulp, ratio = self.ulp.ravel(), self.ratio.ravel()
        graded, broken = self.graded.ravel(), self.broken.ravel()
        loops = (compiled_loops(ulp.size) if ulp.dtype == ratio.dtype == np.float64
                 else None)
        if loops is not None:
            some, top_ulp, top_ratio, some_ulp, any_ulp, some_ratio, any_ratio = (
                loops.largest(ulp, ratio, graded, broken))
            return (float(top_ulp) if some else None, float(top_ratio) if some else None,
                    float(any_ulp) if some_ulp else None,
                    float(any_ratio) if some_ratio else None)
        accurate = graded & ~broken
        return (masked_max(ulp, accurate), masked_max(ratio, accurate),
                masked_max(ulp, graded, skip_nan=True), masked_max(ratio, graded, skip_nan=True))


def grade_elements(
    function: str,
    candidate: np.ndarray,
    exact: Any,
    *,
    inputs: np.ndarray,
    target: Any = None,
    options: Mapping[str, Any] | None = None,
    dtype: Any = None,
    ulp_budget: float = DEFAULT_ULP_BUDGET,
    tangent: np.ndarray | None = None,
    memo: dict[Any, Any] | None = None,
) -> ElementGrades:
    """Ulp error, stability ratio and grade of every element of one output.

    ``function``: a contract function (``xentcheck.harness.adapters.contract.FUNCTIONS``).
    ``candidate``: the adapter's output, already checked for shape and dtype (wrong ones
    are :func:`broken_result`). ``exact``: the gold values (object array of mpf and
    ``UNDEFINED``, the candidate's shape), or the same decoded once by :func:`decode`
    (then nothing is decoded here: grade many candidates against one decoding).
    ``inputs``: the logits, or the probabilities for ``cross_entropy_from_probs`` /
    ``cross_entropy_grad_wrt_probs``, (N, K) or (K,). ``target``, ``options``
    (``weight``, ``ignore_index``, ``label_smoothing``, ``reduction``): as passed to the
    adapter. ``tangent``: the direction of a JVP or the vector of an HVP. ``dtype``: the
    case dtype (default: the candidate's; a mismatch raises ``ValueError``).

    The ulp errors are ``xentcheck.references.rounding.ulp_error``'s, bit for bit, computed with
    NumPy from the decoded values.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"unknown function {function!r}; expected one of {', '.join(FUNCTIONS)}")
    cand = np.asarray(candidate)
    name = dtype_name(cand.dtype)
    if dtype is not None and dtype_name(dtype) != name:
        raise ValueError(f"{function}: candidate has dtype {name}, the case {dtype_name(dtype)}")
    work = float_format(working_dtype(name))
    out = float_format(name)
    decoded = decode(exact)
    if decoded.shape != cand.shape:
        raise ValueError(f"{function}: candidate has shape {cand.shape}, exact {decoded.shape}")

    check_ulp_budget(ulp_budget)
    loops = _loops(decoded)
    size = cand.size
    defined, finite, negative = (a.ravel() for a in (decoded.defined, decoded.finite,
                                                     decoded.negative))
    expo, mant = decoded.expo.ravel(), decoded.mant.ravel()
    uw = math.ldexp(1.0, -work.precision)
    xu = np.empty(size)
    if loops:
        loops.scaled_into(decoded.source.ravel(), -work.precision, xu)
    else:
        with np.errstate(over="ignore", under="ignore"):
            for part in chunks(size):
                xu[part] = ldexp(mant[part], np.clip(expo[part] - work.precision, -2000, 2000))
    with np.errstate(all="ignore"):  # inf and NaN bounds belong to non-finite exact values
        bound, lam, ungraded = _bounds(function, inputs, target, options or {}, uw, xu,
                                       tangent, memo)
    bound = np.asarray(bound, np.float64).reshape(cand.shape).ravel()
    lam = np.asarray(lam, np.float64).reshape(cand.shape).ravel()

    graded = decoded.defined.copy()
    if function not in _PROBS_FUNCTIONS and ungraded.any():
        if cand.ndim == 0 or np.ndim(inputs) == 1:
            graded[...] = False  # a reduction over, or the only row of, such a row
        else:
            graded[ungraded] = False
    graded = graded.ravel()

    # The ratio in ulps of x: ulp(x) = 2**k exactly (zero: the smallest subnormal). The
    # compiled loop takes every element it can and leaves the rest to the NumPy path; the
    # NumPy path goes a chunk of elements at a time (their temporaries stay in cache).
    allowed, ratio, graded_ulp = (np.empty(size) for _ in range(3))
    broken, codes = np.empty(size, bool), np.empty(size, np.int8)
    flat = np.ascontiguousarray(cand).reshape(-1)
    if loops:
        rest = np.empty(size, bool)
        left = loops.grade_into(
            flat if name in ("float32", "float64") else flat.astype(np.float64),
            decoded.source.ravel(), expo, mant, bound, lam, graded, defined, finite,
            out.emin, out.emax, out.precision, work.emin - work.precision + 1,
            out.emin - out.precision + 1, work.dtype != out.dtype, float(ulp_budget),
            allowed, ratio, graded_ulp, broken, codes, rest)
        if left:  # what the loop leaves: the whole NumPy path, on those elements
            at = np.flatnonzero(rest)
            picked = decoded[np.unravel_index(at, cand.shape)]
            allowed[at], ratio[at], graded_ulp[at], broken[at], codes[at] = _ratios(
                ulp_error(flat[at], picked), bound[at], lam[at], mant[at], expo[at],
                picked.ulp_exponent(out.dtype), flat[at].astype(np.float64), finite[at],
                defined[at], negative[at], graded[at], work, out, ulp_budget)
    else:
        ulp = ulp_error(cand, decoded).ravel()
        k = decoded.ulp_exponent(out.dtype).ravel()
        c64 = flat.astype(np.float64)
        for part in chunks(size):
            allowed[part], ratio[part], graded_ulp[part], broken[part], codes[part] = _ratios(
                ulp[part], bound[part], lam[part], mant[part], expo[part], k[part], c64[part],
                finite[part], defined[part], negative[part], graded[part], work, out,
                ulp_budget)
    shape = cand.shape
    return ElementGrades(function, name, graded_ulp.reshape(shape), ratio.reshape(shape),
                         allowed.reshape(shape), broken.reshape(shape), graded.reshape(shape),
                         codes.reshape(shape), float(ulp_budget))


def compiled_loops(size: int) -> Any:
    """The harness's compiled loops (:mod:`xentcheck.harness._compiled`) for arrays of
    ``size`` elements under the fast tier's engine choice (numba there, and arrays this
    large), else None: NumPy's results either way."""
    from xentcheck.references.fast import jit

    if jit.elementwise(size) is None:
        return None
    return _compiled_loops()


def _loops(decoded: ExactValues) -> Any:
    """:func:`compiled_loops` for grading against exact values decoded from float64."""
    if decoded.source.dtype != np.float64:
        return None
    return compiled_loops(decoded.size)


@functools.cache
def _compiled_loops() -> Any:
    try:
        from xentcheck.harness import _compiled
    except ImportError:
        return None
    return _compiled


def _ratios(ulp: np.ndarray, bound: np.ndarray, lam: np.ndarray, mant: np.ndarray,
            expo: np.ndarray, k: np.ndarray, c64: np.ndarray, finite: np.ndarray,
            defined: np.ndarray, negative: np.ndarray, graded: np.ndarray,
            work: FloatFormat, out: FloatFormat, ulp_budget: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """allowed, ratio, ulp (NaN where not graded), broken (graded ones) and grade codes of
    flat elements: :func:`grade_elements`' last step."""
    tiny_w = work.emin - work.precision + 1  # log2 of lambda_w
    tiny_o = out.emin - out.precision + 1
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        allowed = ldexp(bound, np.clip(-k, -2000, 2000)) + ldexp(lam, tiny_w - k)
        if work.dtype != out.dtype:
            allowed += ldexp(mant, np.clip(expo - out.precision - k, -2000, 2000))
            allowed += ldexp(0.5, tiny_o - k)
        both_finite = np.isfinite(c64) & finite
        broken = defined & np.isinf(ulp) & ~both_finite
        ratio = np.where(ulp == 0, 0.0, ulp / allowed)
        # Both overflowed (|c - x| >= 2**1024 ulps, and allowed too): absolute values.
        overflow = both_finite & np.isinf(ulp) & np.isinf(allowed)
        if overflow.any():
            absolute = bound + np.ldexp(lam, tiny_w)
            if work.dtype != out.dtype:
                absolute += np.ldexp(mant, np.clip(expo - out.precision, -2000, 2000))
                absolute += math.ldexp(0.5, tiny_o)
            x64 = np.where(negative, -1.0, 1.0) * np.ldexp(mant, np.clip(expo, -2000, 2000))
            ratio[overflow] = (np.abs(c64 - x64) / absolute)[overflow]
    ratio[broken] = np.inf
    ratio[~graded] = np.nan
    ulp = np.where(graded, ulp, np.nan)
    codes = classify(ulp, ratio, broken, graded, ulp_budget=ulp_budget)
    return allowed, ratio, ulp, broken & graded, codes


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ResultGrade:
    """One graded output: its grade (the worst row's; None when nothing was graded), rows
    per grade, the largest ulp error and ratio over graded elements that are not broken
    (None if none), and the worst element (index into the output, its numbers)."""

    grade: str | None
    grades: dict[str, int]
    rows: int
    ungraded: int
    max_ulp: float | None
    max_ratio: float | None
    worst_index: tuple[int, ...] | None
    worst_ulp: float | None
    worst_ratio: float | None
    worst_allowed: float | None
    broken_elements: int
    ulp_budget: float = DEFAULT_ULP_BUDGET

    def failed(self, profile: Profile) -> int:
        """Rows whose grade ``profile`` does not pass (graded with the profile's N)."""
        if profile.ulp_budget != self.ulp_budget:
            raise ValueError(f"graded with N = {self.ulp_budget:g}, profile {profile.name!r} "
                             f"has N = {profile.ulp_budget:g}: summarize with its N")
        return sum(count for grade, count in self.grades.items() if not profile.passes(grade))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``cases`` = graded rows; infinite numbers as the strings "inf")."""
        def num(v: float | None) -> float | str | None:
            return v if v is None or math.isfinite(v) else str(v)

        return {
            "grade": self.grade,
            "grades": dict(self.grades),
            "cases": self.rows,
            "ungraded": self.ungraded,
            "max_ulp": num(self.max_ulp),
            "max_ratio": num(self.max_ratio),
            "worst_index": list(self.worst_index) if self.worst_index is not None else None,
            "worst_ulp": num(self.worst_ulp),
            "worst_ratio": num(self.worst_ratio),
            "worst_allowed_ulp": num(self.worst_allowed),
            "broken_elements": self.broken_elements,
            "ulp_budget": self.ulp_budget,
        }


def masked_max(values: np.ndarray, mask: np.ndarray, *, skip_nan: bool = False
               ) -> float | None:
    """``max(values[mask])`` (NaN if one of them is, unless ``skip_nan``: then NaN are left
    out), None when nothing is left; a chunk at a time, so that nothing of the output's
    size is copied.

    >>> masked_max(np.array([1.0, np.nan, 3.0]), np.array([True, True, False]))
    nan
    >>> masked_max(np.array([1.0, np.nan, 3.0]), np.array([True, True, False]), skip_nan=True)
    1.0
    """
    flat, keep = np.ravel(values), np.ravel(mask)
    loops = compiled_loops(flat.size) if flat.dtype == np.float64 else None
    if loops is not None:
        some, largest = loops.masked_max(flat, keep, skip_nan)
        return float(largest) if some else None
    found = []
    for part in chunks(flat.size):
        picked = flat[part][keep[part]]
        if skip_nan:
            picked = picked[~np.isnan(picked)]
        if picked.size:
            found.append(picked.max())
    return float(np.max(found)) if found else None


def first_largest(key: np.ndarray, mask: np.ndarray, *, nan: float | None = None) -> int:
    """``int(np.argmax(np.where(mask, key, -np.inf)))`` over the flattened arrays (the
    first of equals; the first NaN if there is one), with NaN in ``key`` read as ``nan``
    when given (as ``np.nan_to_num(key, nan=nan, posinf=np.inf)``); a chunk at a time.

    >>> first_largest(np.array([5.0, 2.0, 7.0, 7.0]), np.array([True, True, False, True]))
    3
    """
    flat, keep = np.ravel(key), np.ravel(mask)
    loops = compiled_loops(flat.size) if flat.dtype == np.float64 else None
    if loops is not None:
        return int(loops.first_largest(flat, keep, 0.0 if nan is None else nan,
                                       nan is not None))
    best, where = -np.inf, 0
    for part in chunks(flat.size):
        piece = flat[part]
        if nan is not None:
            piece = np.nan_to_num(piece, nan=nan, posinf=np.inf)
        piece = np.where(keep[part], piece, -np.inf)
        i = int(np.argmax(piece))
        if np.isnan(piece[i]):
            return part.start + i
        if piece[i] > best:
            best, where = piece[i], part.start + i
    return where


def codes_under(grades: ElementGrades, ulp_budget: float, ratio_limit: float = 1.0
                ) -> np.ndarray:
    """The grade codes of ``grades`` under ``ulp_budget`` and ``ratio_limit``: the ones it
    was graded with when those are its thresholds, else :func:`classify`'s anew."""
    if ulp_budget == grades.ulp_budget and ratio_limit == 1.0:
        return grades.codes
    return classify(grades.ulp, grades.ratio, grades.broken, grades.graded,
                    ulp_budget=ulp_budget, ratio_limit=ratio_limit)


def summarize(grades: ElementGrades, rows_axis: int = 0, *, ulp_budget: float | None = None,
              ratio_limit: float = 1.0) -> ResultGrade:
    """Roll element grades up to rows (along ``rows_axis``; a 0-d output is one row).

    A row's grade is the worst of its graded elements; a row with none is ``ungraded``.
    ``ulp_budget``/``ratio_limit`` regrade with other thresholds (default: as graded).
    """
    budget = grades.ulp_budget if ulp_budget is None else float(ulp_budget)
    codes = codes_under(grades, budget, ratio_limit)
    by_row = codes.reshape(1, -1) if codes.ndim == 0 else np.moveaxis(codes, rows_axis, 0)
    by_row = by_row.reshape(by_row.shape[0], int(np.prod(by_row.shape[1:])))
    row_codes = by_row.max(axis=1, initial=_UNGRADED)
    counts = {g: int((row_codes == c).sum()) for c, g in enumerate(GRADES)}
    counts = {g: n for g, n in counts.items() if n}
    graded_rows = int((row_codes >= 0).sum())
    worst = int(codes.max(initial=_UNGRADED))
    worst_index = worst_ulp = worst_ratio = worst_allowed = None
    if worst >= 0:
        key = grades.ulp if worst <= _ULP_N else grades.ratio
        candidates = codes == worst
        if worst == _BROKEN:
            flat = int(np.argmax(candidates.ravel()))
        else:
            flat = first_largest(key, candidates)
        worst_index = tuple(int(i) for i in np.unravel_index(flat, codes.shape))
        worst_ulp = float(grades.ulp.ravel()[flat])
        worst_ratio = float(grades.ratio.ravel()[flat])
        worst_allowed = float(grades.allowed.ravel()[flat])
    return ResultGrade(
        grade=GRADES[worst] if worst >= 0 else None,
        grades=counts,
        rows=graded_rows,
        ungraded=int(row_codes.shape[0]) - graded_rows,
        max_ulp=grades.largest[0],
        max_ratio=grades.largest[1],
        worst_index=worst_index,
        worst_ulp=worst_ulp,
        worst_ratio=worst_ratio,
        worst_allowed=worst_allowed,
        broken_elements=int(grades.broken.sum()),
        ulp_budget=budget,
    )


def broken_result(rows: int = 1, *, ulp_budget: float = DEFAULT_ULP_BUDGET) -> ResultGrade:
    """The grade of an output that is wrong as a whole (an exception, a crash, a wrong
    shape, dtype or type): every one of its ``rows`` broken.

    >>> broken_result(3).grades
    {'broken': 3}
    """
    return ResultGrade("broken", {"broken": rows}, rows, 0, None, None, None, None, None, None,
                       0, ulp_budget)


# ----------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """A pass rule: grades up to ``worst_passing`` pass; ``ulp≤N`` is read with N =
    ``ulp_budget``."""

    name: str
    worst_passing: str
    ulp_budget: float = DEFAULT_ULP_BUDGET

    def __post_init__(self) -> None:
        if self.worst_passing not in GRADES:
            raise ValueError(f"unknown grade {self.worst_passing!r}; expected one of {GRADES}")
        if not self.ulp_budget >= 1:
            raise ValueError(f"ulp_budget must be at least 1, got {self.ulp_budget}")

    def passes(self, grade: str | None) -> bool:
        """Whether ``grade`` passes (None, nothing graded, passes)."""
        if grade is None:
            return True
        if grade not in GRADES:
            raise ValueError(f"unknown grade {grade!r}; expected one of {GRADES}")
        return GRADES.index(grade) <= GRADES.index(self.worst_passing)


#: Passes ``stable`` or better: within N ulps, or within the textbook algorithm's bound.
STANDARD = Profile("standard", "stable")
#: Passes within N ulps only.
STRICT = Profile("strict", "ulp≤N")

_PROFILES = {p.name: p for p in (STANDARD, STRICT)}


def profile(name: str, *, ulp_budget: float | None = None) -> Profile:
    """The profile called ``name`` (``standard`` or ``strict``), with another N if given.

    >>> profile("strict", ulp_budget=1)
    Profile(name='strict', worst_passing='ulp≤N', ulp_budget=1.0)
    """
    try:
        base = _PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(_PROFILES)}"
                         ) from None
    if ulp_budget is None:
        return base
    return Profile(base.name, base.worst_passing, float(ulp_budget))


# ------------------------------------------------------------------------------ budgets


class BudgetError(ValueError):
    """The budgets file is malformed; the one-line message names the entry."""


@dataclass(frozen=True)
class Budget:
    """A documented accuracy allowance of one adapter for one function and dtype.

    Within it an element passes at up to ``max_ulp`` ulps or a ratio up to ``max_ratio``
    (whichever are given; never ``broken``), in the listed ``regimes`` (None: all).
    """

    adapter: str
    function: str
    dtype: str
    reason: str
    max_ulp: float | None = None
    max_ratio: float | None = None
    regimes: tuple[str, ...] | None = None

    def covers(self, regime: str | None) -> bool:
        """Whether the budget applies in ``regime`` (None: a case of no named regime)."""
        return self.regimes is None or regime in self.regimes

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"adapter": self.adapter, "function": self.function,
                               "dtype": self.dtype, "reason": self.reason}
        for key in ("max_ulp", "max_ratio"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.regimes is not None:
            out["regimes"] = list(self.regimes)
        return out


_BUDGET_KEYS = frozenset({"max_ulp", "max_ratio", "regimes", "reason"})


def _budget(where: str, adapter: str, function: str, dtype: str, entry: Any) -> Budget:
    if not isinstance(entry, dict):
        raise BudgetError(f"{where}: expected an object, got {type(entry).__name__}")
    unknown = set(entry) - _BUDGET_KEYS
    if unknown:
        raise BudgetError(f"{where}: unknown keys {sorted(unknown)}; allowed: "
                          f"{sorted(_BUDGET_KEYS)}")
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise BudgetError(f"{where}: a budget needs a non-empty 'reason'")
    limits: dict[str, float | None] = {}
    for key, least in (("max_ulp", 1.0), ("max_ratio", 1.0)):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not least <= value < math.inf):
            raise BudgetError(f"{where}: {key} must be a finite number >= {least:g}, "
                              f"got {value!r}")
        limits[key] = None if value is None else float(value)
    if limits["max_ulp"] is None and limits["max_ratio"] is None:
        raise BudgetError(f"{where}: a budget needs max_ulp or max_ratio")
    regimes = entry.get("regimes")
    if regimes is not None and (not isinstance(regimes, list)
                                or not all(isinstance(r, str) for r in regimes)):
        raise BudgetError(f"{where}: regimes must be a list of regime names")
    return Budget(adapter, function, dtype, reason.strip(), limits["max_ulp"],
                  limits["max_ratio"], tuple(regimes) if regimes is not None else None)


def load_budgets(path: str | Path | None = None) -> dict[tuple[str, str, str], Budget]:
    """The budgets of ``path`` (default ``BUDGETS_PATH``) by (adapter, function, dtype).

    The file maps adapter -> function -> dtype -> ``{"max_ulp", "max_ratio", "regimes",
    "reason"}``; keys starting with "_" are comments at every level.
    """
    source = Path(path) if path is not None else BUDGETS_PATH
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BudgetError(f"{source}: cannot read budgets: {exc}") from None
    if not isinstance(data, dict):
        raise BudgetError(f"{source}: expected an object of adapters")
    budgets: dict[tuple[str, str, str], Budget] = {}
    for adapter, functions in data.items():
        if adapter.startswith("_"):
            continue
        if not isinstance(functions, dict):
            raise BudgetError(f"{source}: {adapter}: expected an object of functions")
        for function, dtypes in functions.items():
            if function.startswith("_"):
                continue
            where = f"{source.name}: {adapter}.{function}"
            if function not in FUNCTIONS:
                raise BudgetError(f"{where}: unknown function; expected one of "
                                  f"{', '.join(FUNCTIONS)}")
            if not isinstance(dtypes, dict):
                raise BudgetError(f"{where}: expected an object of dtypes")
            for dtype, entry in dtypes.items():
                if dtype.startswith("_"):
                    continue
                if dtype not in DTYPES:
                    raise BudgetError(f"{where}.{dtype}: unknown dtype; expected one of "
                                      f"{', '.join(DTYPES)}")
                budgets[adapter, function, dtype] = _budget(
                    f"{where}.{dtype}", adapter, function, dtype, entry)
    return budgets


def budget_for(budgets: Mapping[tuple[str, str, str], Budget], adapter: str, function: str,
               dtype: str, regime: str | None = None) -> Budget | None:
    """The budget of (adapter, function, dtype) if there is one and it covers ``regime``."""
    found = budgets.get((adapter, function, dtype))
    return found if found is not None and found.covers(regime) else None


@dataclass(frozen=True)
class Verdict:
    """A result judged by a profile: ``passed``, ``failed`` rows, ``result`` (the grades
    under the profile) and, when the profile alone failed it and a budget was given,
    ``budget`` and ``budgeted`` (the grades under the budget's thresholds)."""

    profile: str
    passed: bool
    failed: int
    result: ResultGrade
    budget: Budget | None = None
    budgeted: ResultGrade | None = field(default=None)

    @property
    def budget_used(self) -> bool:
        """Whether the result passes only thanks to its budget."""
        return self.passed and self.budget is not None

    def to_dict(self) -> dict[str, Any]:
        out = self.result.to_dict()
        out.update(profile=self.profile, passed=self.passed, failed=self.failed,
                   budget=self.budget.to_dict() if self.budget is not None else None,
                   budget_used=self.budget_used)
        if self.budgeted is not None:
            out["budgeted_grade"] = self.budgeted.grade
            out["budgeted_grades"] = dict(self.budgeted.grades)
        return out


def judge(grades: ElementGrades, policy: Profile = STANDARD, *, budget: Budget | None = None,
          rows_axis: int = 0) -> Verdict:
    """Judge graded elements by a profile, then, if they fail and ``budget`` is given, by
    the budget: N becomes max(N, max_ulp) and the ratio limit max(1, max_ratio), element
    by element. ``broken`` is never within a budget.
    """
    result = summarize(grades, rows_axis, ulp_budget=policy.ulp_budget)
    failed = result.failed(policy)
    if not failed or budget is None:
        return Verdict(policy.name, not failed, failed, result)
    if (budget.function, budget.dtype) != (grades.function, grades.dtype):
        raise ValueError(f"budget for {budget.function}/{budget.dtype} applied to "
                         f"{grades.function}/{grades.dtype}")
    widened = max(policy.ulp_budget, budget.max_ulp or 0.0)
    limit = max(1.0, budget.max_ratio or 0.0)
    relaxed = summarize(grades, rows_axis, ulp_budget=widened, ratio_limit=limit)
    relaxed_failed = relaxed.failed(Profile(policy.name, policy.worst_passing, widened))
    return Verdict(policy.name, not relaxed_failed, relaxed_failed, result, budget, relaxed)
