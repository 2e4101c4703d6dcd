"""High-precision finite differences: central differences with Richardson extrapolation.

Two entry points, both returning an :class:`FDEstimate` ``(value, error)``:

- ``directional_derivative(f, x, v)``: d/dt f(x + t v) at t = 0. It costs two evaluations
  of ``f`` per Richardson level (a handful of levels), so O(K) per direction for the gold
  row functions.
- ``jacobian(f, x)``: every partial derivative, one unit direction per entry of ``x``;
  the result has shape ``f(x).shape + x.shape``.

``f`` maps a NumPy object array of ``mpmath.mpf`` (the shape of ``x``) to an object array
of ``mpf`` or to one ``mpf``. It is called inside ``mpmath.workprec(wp)`` and should compute
at ``mpmath.mp.prec`` bits: a closure over the gold functions passes
``prec=mpmath.mp.prec``. The points ``x +- h v`` are formed exactly (no rounding), so ``f``
sees exactly the perturbed point.

**The method.** With steps ``h_j = h_0 / 2**j`` the central differences
``D_j = (f(x + h_j v) - f(x - h_j v)) / (2 h_j) = f'(x; v) + c_1 h_j**2 + c_2 h_j**4 + ...``
are extrapolated (Richardson, ratio 2, eliminating ``h**2, h**4, ...``) along the diagonal
of the tableau. Level j removes j error terms: with ``h_0 = 2**-32`` of the scale over which
``f`` varies, level 3 is already below 2**-250 for analytic ``f``, so 4 to 6 levels (8 to 12
evaluations) reach the default 60 digits.

**The step.** ``h_0 = 2**-step_bits * s``, rounded down to a power of two, where ``s`` is the
length along ``v`` over which ``f`` may change by O(1) of itself. By default
``s = min over i with v_i != 0 of min(1, |x_i|) / |v_i|`` (``x_i = 0`` counts as 1): a unit
scale for large coordinates, the coordinate's own size for small ones. Unit for large
coordinates because softmax and cross-entropy depend on logit *differences*: at
z = [1e308, -1e308] they still vary on a scale of 1, and a step proportional to ``|z|``
(``2**-k * max(1, |z|)``, the usual float rule) would leave the region where the Taylor
series converges unless k > 1024. Relative for small coordinates because functions like
``log x`` at x = 1e-20 vary on the scale of x itself (a unit step crosses the singularity).
Pass ``scale=`` for a function that varies faster (e.g. ``sin(1000 x)``: ``scale=1e-3``).

**The precision.** What an absolute step gets wrong at |z| >= 1e20 is not its size but its
representability: at a fixed precision p, ``z + h == z`` once ``h < |z| 2**-p`` (float64:
``1e20 + 2**-32 == 1e20``), and the difference quotient is 0. Here the working precision is
raised *relative to the point*: the starting precision is

    wp = target + guard_bits + 32 + step_bits + max_levels + max(0, log2 |x|_inf)

bits (``target = ceil(digits * log2 10)`` = 200 for 60 digits), so that the difference
``f(x+hv) - f(x-hv)`` - which cancels about ``log2(|f| / (h |f'|))`` leading bits, i.e.
``step_bits + max_levels + log2 |x|`` for a function with ``|f| ~ |x| |f'|`` - keeps
``target + guard_bits`` bits, and ``f`` may lose up to ``guard_bits`` (default 96: the gold
functions certify ``prec - 82``) to its own rounding. At z ~ 1e308 that is ~1400 bits,
~400 at |z| <= 1. The points ``x +- h v`` are formed exactly whatever the precision.
The cancellation is then *measured* on the first pair of evaluations: if some component
lost more bits than the budget (e.g. a loss of size 2e308 whose derivative is 1, at a
point of size 1), the evaluations are repeated at the precision it needs (at least 1.5
times the last; twice while the two values are equal), up to ``max_prec``.

**The error estimate.** For each component, ``error = |T_jj - T_(j-1)(j-1)| + 4 * noise_j``,
where the first term is the change made by the last extrapolation level (an estimate of the
error of the *previous* level, so generous for the current one) and
``noise_j = F * 2**(guard_bits - wp) / h_j`` bounds the rounding of ``f`` (``F`` the largest
``|f|`` seen) carried through the extrapolation (whose coefficients sum to less than 2 in
absolute value). Levels continue until every component satisfies
``error <= 10**-digits * |value|`` or is at the rounding floor, or ``max_levels`` is reached;
each component reports the level with the smallest error. A component the differences
cannot resolve (e.g. the derivative e**-2e308 of p_0 = 1 - e**-2e308, which no feasible
precision distinguishes from 1) comes back as 0 with an error that says so.

>>> import mpmath, numpy as np
>>> est = directional_derivative(lambda x: mpmath.sin(x[0]), np.array([1e20]), np.array([1.0]))
>>> with mpmath.workprec(400):
...     exact = mpmath.cos(mpmath.mpf(1e20))
...     bool(abs(est.value - exact) <= est.error <= mpmath.mpf(10) ** -60 * abs(exact))
True
>>> jac = jacobian(lambda x: x * x[::-1], np.array([2.0, 3.0]))
>>> [[mpmath.nstr(d, 10) for d in row] for row in jac.value]
[['3.0', '2.0'], ['3.0', '2.0']]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import mpmath
import numpy as np

from xentcheck.references.precision import standard_precision

__all__ = [
    "DEFAULT_DIGITS",
    "FDEstimate",
    "RowEstimate",
    "directional_derivative",
    "directional_derivative_rows",
    "jacobian",
]

#: Correct digits asked of every estimate by default (60 digits = 200 bits).
DEFAULT_DIGITS = 60
#: h_0 = 2**-STEP_BITS * scale: small enough that the O(h**2) term is already 2**-64 of the
#: derivative, so each Richardson level adds ~64+ bits; large enough to cost only 32 bits
#: of extra precision.
DEFAULT_STEP_BITS = 32
#: At most this many halvings of the step (the estimate normally converges by level 4-6).
DEFAULT_MAX_LEVELS = 10
#: Bits the function itself may lose to rounding (gold certifies prec - 82 bits).
DEFAULT_GUARD_BITS = 96
#: Spare bits on top of every precision budget.
_MARGIN_BITS = 32
#: Bound on the sum of |coefficients| of the Richardson diagonal (prod (4^m+1)/(4^m-1) < 2),
#: doubled for safety, times the rounding noise of one difference quotient.
_NOISE_FACTOR = 4

Function = Callable[[np.ndarray], Any]


class FDEstimate(NamedTuple):
    """A finite-difference derivative and a bound on its error.

    ``value`` and ``error`` are object arrays of ``mpmath.mpf`` of the same shape (or single
    ``mpf`` when ``f`` returns a scalar and the derivative is directional). ``error >= 0``;
    a component where ``f`` was not finite has ``value`` NaN and ``error`` inf.
    """

    value: Any
    error: Any


# ------------------------------------------------------------------ argument handling


def _as_point(a: Any, name: str) -> np.ndarray:
    """``a`` as an object array of finite mpf, exactly (no rounding of any entry)."""
    arr = np.asarray(a)
    if arr.dtype.kind in "biu" or _is_float_dtype(arr.dtype):
        convert = int if arr.dtype.kind in "biu" else float
        out = np.empty(arr.shape, dtype=object)
        for idx, item in np.ndenumerate(arr):
            out[idx] = mpmath.mpf(convert(item))  # exact: every float dtype fits in a double
    elif arr.dtype == object:
        out = np.empty(arr.shape, dtype=object)
        for idx, item in np.ndenumerate(arr):
            if isinstance(item, mpmath.mpf):
                out[idx] = item
            elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                out[idx] = mpmath.mpf(int(item))
            elif isinstance(item, (float, np.floating)):
                out[idx] = mpmath.mpf(float(item))
            else:
                raise ValueError(
                    f"{name} must hold real numbers (floats or mpmath.mpf); "
                    f"{name}[{_fmt_index(idx)}] is {type(item).__name__} {item!r}"
                )
    else:
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    for idx, item in np.ndenumerate(out):
        if not mpmath.isfinite(item):
            raise ValueError(
                f"{name} must be finite; {name}[{_fmt_index(idx)}] = {item} "
                "(differentiate in the finite coordinates and hold the others fixed)"
            )
    return out


def _is_float_dtype(dtype: np.dtype) -> bool:
    """True for NumPy float dtypes and the ml_dtypes ones (bfloat16, float8 ...)."""
    if dtype.kind == "f":
        return True
    if dtype.kind != "V":
        return False
    import ml_dtypes  # (here: an array of its dtypes has imported it already)

    try:
        ml_dtypes.finfo(dtype)
    except (TypeError, ValueError):
        return False
    return True


def _fmt_index(idx: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in idx)


def _validate_options(digits: float, step_bits: int, max_levels: int, guard_bits: int) -> int:
    if not (isinstance(digits, (int, float)) and 0 < digits <= 1000):
        raise ValueError(f"digits must be a number in (0, 1000], got {digits!r}")
    if not (isinstance(step_bits, int) and 1 <= step_bits <= 4096):
        raise ValueError(f"step_bits must be an int in [1, 4096], got {step_bits!r}")
    if not (isinstance(max_levels, int) and 1 <= max_levels <= 64):
        raise ValueError(f"max_levels must be an int in [1, 64], got {max_levels!r}")
    if not (isinstance(guard_bits, int) and 0 <= guard_bits <= 100_000):
        raise ValueError(f"guard_bits must be a non-negative int, got {guard_bits!r}")
    return math.ceil(digits * math.log2(10))


def _scale_exponent(x: np.ndarray, v: np.ndarray, scale: Any) -> int:
    """An exponent e with 2**e <= s, the length over which f varies along v (module doc)."""
    support = [(xi, vi) for xi, vi in zip(x.flat, v.flat, strict=True) if vi != 0]
    if scale is not None:
        try:
            s = mpmath.mpf(scale)
        except (TypeError, ValueError):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}") from None
        if not (mpmath.isfinite(s) and s > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        # 2**(mag(s) - 1) <= s and 1/|v_i| >= 2**-mag(v_i).
        return int(mpmath.mag(s)) - 1 - max(int(mpmath.mag(vi)) for _, vi in support)
    exps = []
    for xi, vi in support:
        own = min(0, int(mpmath.mag(xi)) - 1) if xi != 0 else 0
        exps.append(own - int(mpmath.mag(vi)))
    return min(exps)


def _call(f: Function, point: np.ndarray) -> np.ndarray:
    """f(point) as an object array of mpf (0-d for a scalar result)."""
    out = f(point.copy())
    arr = np.asarray(out, dtype=object)
    res = np.empty(arr.shape, dtype=object)
    for idx, item in np.ndenumerate(arr):
        if isinstance(item, mpmath.mpf):
            res[idx] = item
        elif isinstance(item, (int, float, np.integer, np.floating)) and not isinstance(item, bool):
            res[idx] = mpmath.mpf(item)
        else:
            raise ValueError(
                f"f must return mpmath.mpf values; got {type(item).__name__} at "
                f"[{_fmt_index(idx)}] (an undefined value cannot be differentiated)"
            )
    return res


# ------------------------------------------------------------------ the estimator


def _needed_prec(fp: np.ndarray, fm: np.ndarray, wp: int, keep_bits: int) -> int:
    """Precision that keeps ``keep_bits`` after the cancellation seen in fp - fm."""
    need = 0
    for a, b in zip(fp.flat, fm.flat, strict=True):
        if not (mpmath.isfinite(a) and mpmath.isfinite(b)):
            continue
        if a == b:
            if a != 0:  # equal at this precision: the difference is below its resolution
                need = max(need, 2 * wp)
            continue
        lost = max(int(mpmath.mag(a)), int(mpmath.mag(b))) - int(mpmath.mag(a - b)) + 1
        need = max(need, lost + keep_bits)
    return need


def _perturbed(x: np.ndarray, v: np.ndarray, exp: int, sign: int) -> np.ndarray:
    """x + sign * 2**exp * v, exactly."""
    out = np.empty(x.shape, dtype=object)
    for idx in np.ndindex(x.shape):
        vi = v[idx]
        if vi == 0:
            out[idx] = x[idx]
        else:
            out[idx] = mpmath.fadd(x[idx], mpmath.ldexp(sign * vi, exp), exact=True)
    return out


@standard_precision
def directional_derivative(
    f: Function,
    x: Any,
    v: Any,
    *,
    digits: float = DEFAULT_DIGITS,
    scale: Any = None,
    step_bits: int = DEFAULT_STEP_BITS,
    max_levels: int = DEFAULT_MAX_LEVELS,
    prec: int | None = None,
    max_prec: int | None = None,
    guard_bits: int = DEFAULT_GUARD_BITS,
) -> FDEstimate:
    """The derivative of ``f`` at ``x`` along ``v``, d/dt f(x + t v) at t = 0.

    ``x`` and ``v``: arrays of the same shape, of any real float dtype or object arrays of
    ``mpf`` (used exactly); ``x`` finite, ``v`` finite and not all zero. ``digits``: correct
    digits asked (60 by default). ``scale``: the length along ``v`` over which ``f`` varies
    (module docstring; default from ``x``). ``step_bits``: ``h_0 = 2**-step_bits * scale``.
    ``prec``: the starting working precision in bits (default from the point, the step and
    ``digits``); ``max_prec``: the most it may be raised to (default ``max(4 * prec, 4096)``;
    pass ``max_prec=prec`` to fix it). ``guard_bits``: bits ``f`` may lose to its own rounding.

    >>> import mpmath, numpy as np
    >>> x = np.array([1e-20])
    >>> est = directional_derivative(lambda t: mpmath.log(t[0]), x, [1.0])
    >>> with mpmath.workprec(400):
    ...     exact = 1 / mpmath.mpf(x[0])
    ...     mpmath.nstr(est.value, 15), bool(abs(est.value - exact) <= est.error < 1e-60 * exact)
    ('1.0e+20', True)
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    target = _validate_options(digits, step_bits, max_levels, guard_bits)
    xm = _as_point(x, "x")
    vm = _as_point(v, "v")
    if xm.shape != vm.shape:
        raise ValueError(f"x and v must have the same shape, got {xm.shape} and {vm.shape}")
    if not any(vi != 0 for vi in vm.flat):
        raise ValueError("v must not be all zero")

    h0_exp = _scale_exponent(xm, vm, scale) - step_bits
    h_min_exp = h0_exp - max_levels
    support = [(xi, vi) for xi, vi in zip(xm.flat, vm.flat, strict=True) if vi != 0]
    mag_x = max([0] + [int(mpmath.mag(xi)) for xi, _ in support if xi != 0])
    keep_bits = target + guard_bits + _MARGIN_BITS
    # Cancellation in f(x + hv) - f(x - hv) ~ log2(|f| / (h |f'|)): about step_bits +
    # max_levels for f varying on the scale of the step, plus log2 |x| for the usual
    # |f| ~ |x| |f'| (a loss of size 1e308 with derivative 1). Measured and raised below.
    wp0 = keep_bits + step_bits + max_levels + mag_x
    if prec is not None:
        if not (isinstance(prec, int) and prec >= 53):
            raise ValueError(f"prec must be an int >= 53 bits, got {prec!r}")
        wp0 = prec
    if max_prec is None:
        max_prec = max(4 * wp0, 4096)
    elif not (isinstance(max_prec, int) and max_prec >= wp0):
        raise ValueError(f"max_prec must be an int >= the starting precision {wp0}")
    # x_i +- h v_i is formed exactly; refuse a step so far below |x_i| that it would not fit.
    for xi, vi in support:
        if xi != 0:
            span = int(mpmath.mag(xi)) - (h_min_exp + int(mpmath.mag(vi)))
            if span > 8 * max_prec:
                raise ValueError(
                    f"the step along v is 2**{span} times smaller than |x_i| = "
                    f"{mpmath.nstr(xi, 5)}; pass a larger scale= or split the direction"
                )

    # Level 0, repeated at a higher precision while the cancellation in it needs one.
    wp = wp0
    while True:
        with mpmath.workprec(wp):
            fp = _call(f, _perturbed(xm, vm, h0_exp, 1))
            fm = _call(f, _perturbed(xm, vm, h0_exp, -1))
        if fp.shape != fm.shape:
            raise ValueError(f"f returned shapes {fp.shape} and {fm.shape} at nearby points")
        need = _needed_prec(fp, fm, wp, keep_bits)
        if need <= wp or wp >= max_prec:
            break
        wp = min(max(need, wp + wp // 2), max_prec)

    with mpmath.workprec(wp):
        return _richardson(f, xm, vm, fp, fm, h0_exp, wp, target, guard_bits, max_levels)


def _richardson(
    f: Function,
    x: np.ndarray,
    v: np.ndarray,
    fp: np.ndarray,
    fm: np.ndarray,
    h0_exp: int,
    wp: int,
    target: int,
    guard_bits: int,
    max_levels: int,
) -> FDEstimate:
    shape = fp.shape
    finite = np.vectorize(lambda a: bool(mpmath.isfinite(a)), otypes=[bool])
    ok = finite(fp) & finite(fm)
    zero = mpmath.mpf(0)
    tol = mpmath.mpf(2) ** -target
    big = np.vectorize(lambda a, b: max(abs(a), abs(b)), otypes=[object])

    def quotient(a: np.ndarray, b: np.ndarray, j: int) -> np.ndarray:
        d = np.where(ok, a, zero) - np.where(ok, b, zero)
        return d * mpmath.ldexp(1, -(h0_exp - j) - 1)  # / (2 h_j), exact scaling

    f_max = np.where(ok, big(fp, fm), zero)
    row = [quotient(fp, fm, 0)]
    best_val = row[0]
    best_err = np.full(shape, mpmath.inf, dtype=object)
    for j in range(1, max_levels + 1):
        a = _call(f, _perturbed(x, v, h0_exp - j, 1))
        b = _call(f, _perturbed(x, v, h0_exp - j, -1))
        if a.shape != shape or b.shape != shape:
            raise ValueError(f"f returned shapes {a.shape} and {b.shape}, earlier {shape}")
        ok &= finite(a) & finite(b)
        f_max = np.maximum(f_max, np.where(ok, big(a, b), zero))
        new_row = [quotient(a, b, j)]
        for m in range(1, j + 1):
            prev = new_row[m - 1]
            new_row.append(prev + (prev - row[m - 1]) / (4**m - 1))
        diag, prev_diag = new_row[j], row[j - 1]
        noise = f_max * (_NOISE_FACTOR * mpmath.ldexp(1, guard_bits - wp - (h0_exp - j)))
        err = np.vectorize(abs, otypes=[object])(diag - prev_diag) + noise
        better = np.vectorize(lambda e, be: e < be, otypes=[bool])(err, best_err)
        best_val = np.where(better, diag, best_val)
        best_err = np.where(better, err, best_err)
        row = new_row
        done = np.vectorize(
            lambda e, val, nz: bool(e <= tol * abs(val) or e <= 2 * nz), otypes=[bool]
        )(err, diag, noise)
        if bool(np.all(done | ~ok)):
            break
    value = np.where(ok, best_val, mpmath.nan)
    error = np.where(ok, best_err, mpmath.inf)
    if shape == ():
        return FDEstimate(value[()], error[()])
    return FDEstimate(value, error)


@standard_precision
def jacobian(f: Function, x: Any, **options: Any) -> FDEstimate:
    """All partial derivatives of ``f`` at ``x``: shape ``f(x).shape + x.shape``.

    One :func:`directional_derivative` per entry of ``x`` along its unit vector (so each
    entry gets its own step scale and precision); ``options`` are passed on.

    >>> import mpmath, numpy as np
    >>> jac = jacobian(lambda x: mpmath.exp(x[0]) * x[1], np.array([0.0, 2.0]))
    >>> [mpmath.nstr(d, 15) for d in jac.value]
    ['2.0', '1.0']
    """
    xm = _as_point(x, "x")
    if xm.size == 0:
        raise ValueError("x must have at least one entry")
    columns = []
    for idx in np.ndindex(xm.shape):
        unit = np.zeros(xm.shape, dtype=object)
        unit[...] = mpmath.mpf(0)
        unit[idx] = mpmath.mpf(1)
        columns.append(directional_derivative(f, xm, unit, **options))
    out_shape = np.shape(columns[0].value)
    value = np.empty(out_shape + xm.shape, dtype=object)
    error = np.empty(out_shape + xm.shape, dtype=object)
    for col, idx in zip(columns, np.ndindex(xm.shape), strict=True):
        if np.shape(col.value) != out_shape:
            raise ValueError("f returned different shapes along different directions")
        for oidx in np.ndindex(out_shape):
            value[oidx + idx] = np.asarray(col.value, dtype=object)[oidx]
            error[oidx + idx] = np.asarray(col.error, dtype=object)[oidx]
    return FDEstimate(value, error)


# ------------------------------------------------------------------ the vectorized tier


class RowEstimate(NamedTuple):
    """Per-row directional derivatives in a NumPy float type and a bound on their error
    (both arrays of shape (N,); NaN and inf where a row's values were not finite)."""

    value: np.ndarray
    error: np.ndarray


def _perturbation(x: np.ndarray, v: np.ndarray, every: bool
                  ) -> Callable[[np.ndarray, float], np.ndarray] | None:
    """For float64 (N, K) arrays that the fast tier's engine choice compiles loops for: a
    function of the steps h (N, 1) and a sign giving x + sign h v (x where v is 0), the
    bits NumPy's ``x + h * v`` gives, in one pass (``_portable_jit.perturbed_into``),
    into one of two arrays that it reuses (each level's points are evaluated before the
    next level's are made); else None."""
    from xentcheck.references.fast import jit

    loops = jit.elementwise(x.size)
    if loops is None or x.dtype != np.float64 or x.ndim != 2:
        return None
    x, v = np.ascontiguousarray(x), np.ascontiguousarray(v)
    buffers = {1.0: np.empty_like(x), -1.0: np.empty_like(x)}

    def points(h: np.ndarray, sign: float) -> np.ndarray:
        out = buffers[sign]
        loops.perturbed_into(x, v, np.ascontiguousarray(h[:, 0]), sign, every, out)
        return out

    return points


def directional_derivative_rows(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    v: np.ndarray,
    *,
    levels: int = 3,
    scale: np.ndarray | None = None,
    sensitivity: np.ndarray | None = None,
    enough: Callable[[RowEstimate], bool] | None = None,
) -> RowEstimate:
    """d/dt f(x + t v)_n at t = 0 for every row n, in the float type of ``x``.

    The linear-cost counterpart of :func:`directional_derivative` for large inputs (the
    fast reference tier, ``xentcheck.references.fast``): ``f`` maps an (N, K) array to N row values
    (e.g. per-row losses), every row is differentiated along its own row of ``v`` at once,
    and each evaluation costs O(N K) vectorized operations. Central differences at steps
    ``h_j = h_0 / 2**j`` (j = 0..levels) are extrapolated by Richardson as above.

    The step balances truncation against rounding for the type's unit roundoff u:
    ``h_0 = 2**round(log2(u**(1/5))) * scale_n`` (after one extrapolation level the
    truncation is O(h**4)), the row's ``scale`` (the length along v over which f varies,
    rounded down to a power of two) being 1 by default: softmax and cross-entropy vary on
    the scale of logit differences, so the step is absolute; pass a smaller one where f
    varies faster (``log p`` near a small p: ``min p_k / |v_k|``).

    The error bound of a row is the last level's change ``|T_jj - T_(j-1)(j-1)|`` plus
    the rounding term ``4 u (F + S) / h_j``: F is the largest |f| seen (the rounding of f
    itself) and S bounds what the rounding of the perturbed points ``x +- h v`` (each
    entry moved by up to u |x_k|) can change f by: ``sensitivity`` when given (a per-row
    bound of ``sum_k |df/dx_k| |x_k|`` over the moving entries), else the largest
    difference quotient per unit of ``|v|_1`` seen times ``|x|_1``. Entries held fixed
    (-inf logits, zero probabilities) need ``v = 0`` there.

    ``enough``: called with the estimate so far after each extrapolation level (from the
    first on); True stops there (a certificate that already holds needs no finer step:
    each level costs two evaluations of ``f``). Without it every level is computed.

    ``f`` must not keep the array it is given past its return: on large float64 input
    the points are written into two arrays reused from one level to the next.

    >>> import numpy as np
    >>> x = np.array([[0.0, 1.0], [2.0, -1.0]])
    >>> est = directional_derivative_rows(lambda z: np.sum(np.exp(z), axis=1), x,
    ...                                   np.ones_like(x))
    >>> bool(np.all(np.abs(est.value - np.exp(x).sum(axis=1)) <= est.error))
    True
    >>> bool(np.all(est.error < 1e-10 * np.exp(x).sum(axis=1)))
    True
    """
    x = np.asarray(x)
    v = np.asarray(v, dtype=x.dtype)
    if x.ndim != 2 or x.shape != v.shape:
        raise ValueError(f"x and v must be (N, K) arrays of one shape, got {x.shape}, {v.shape}")
    if not isinstance(levels, int) or not 1 <= levels <= 10:
        raise ValueError(f"levels must be an int in [1, 10], got {levels!r}")
    u = float(np.finfo(x.dtype).eps) / 2
    rows = np.ones(x.shape[0]) if scale is None else np.asarray(scale, np.float64)
    if rows.shape != (x.shape[0],) or not np.all((rows > 0) & np.isfinite(rows)):
        raise ValueError("scale must hold one positive finite length per row")
    # h0 = 2**(round(log2(u) / 5) + floor(log2(scale))): both exponents read exactly
    # (frexp), never through a log whose last bit could move the step with the machine
    h0 = np.ldexp(1.0, round((math.frexp(u)[1] - 1) / 5) + (np.frexp(rows)[1] - 1))[:, None]
    moving = v != 0
    every = bool(moving.all())  # (then no np.where: the same values, passes saved)
    if sensitivity is None:  # (else |x|_1 is not needed: two passes saved)
        xs = x if every else np.where(moving, x, 0)
        x_size = np.sum(np.abs(xs), axis=1).astype(np.float64)
    v_size = np.sum(np.abs(v), axis=1).astype(np.float64)
    with np.errstate(all="ignore"):
        table: list[np.ndarray] = []
        best_val = np.full(x.shape[0], np.nan, x.dtype)
        best_err = np.full(x.shape[0], np.inf)
        f_max = np.zeros(x.shape[0])
        slope = np.zeros(x.shape[0])
        ok = np.ones(x.shape[0], bool)
        points = _perturbation(x, v, every)
        for j in range(levels + 1):
            h = (h0 / 2**j).astype(x.dtype)
            if points is not None:  # the same points, compiled
                plus = np.asarray(f(points(h, 1.0)))
                minus = np.asarray(f(points(h, -1.0)))
            else:
                step = h * v
                plus = np.asarray(f(x + step if every else np.where(moving, x + step, x)))
                minus = np.asarray(f(x - step if every else np.where(moving, x - step, x)))
            ok &= np.isfinite(plus) & np.isfinite(minus)
            f_max = np.maximum(f_max, np.maximum(np.abs(plus), np.abs(minus)).astype(float))
            quotient = (plus - minus) / (2 * h[:, 0])
            per_v = np.abs(quotient.astype(np.float64)) / np.maximum(v_size, 1e-300)
            slope = np.maximum(slope, per_v)
            row = [quotient]
            for m in range(1, j + 1):
                row.append(row[m - 1] + (row[m - 1] - table[m - 1]) / (4**m - 1))
            if j:
                change = np.abs((row[j] - table[j - 1]).astype(np.float64))
                moved = slope * x_size if sensitivity is None else sensitivity
                noise = _NOISE_FACTOR * u * (f_max + moved) / h[:, 0].astype(float)
                err = change + noise
                better = err < best_err
                best_val = np.where(better, row[j], best_val)
                best_err = np.where(better, err, best_err)
                if enough is not None and j < levels and enough(RowEstimate(
                        np.where(ok, best_val, np.nan), np.where(ok, best_err, np.inf))):
                    break
            table = row
    return RowEstimate(np.where(ok, best_val, np.nan), np.where(ok, best_err, np.inf))
