"""Built-in adapter ``jax``: ``jax.nn`` softmax, log_softmax, logsumexp, ``grad``, ``jacrev``.

JAX has no cross-entropy, so ``cross_entropy`` is written here on top of
``jax.nn.log_softmax`` following PyTorch's documented ``cross_entropy`` formulas (class
weights, ``ignore_index``, ``label_smoothing``, the three reductions, probability targets),
the way a JAX user writes it: class indices are gathered with ``jnp.take_along_axis`` and
products of a zero coefficient with a log-probability are 0 (``0·log 0 = 0``, as
``jax.scipy.special.xlogy``), so the glue adds no defect of its own; what remains is JAX's.
Gradients come from ``jax.value_and_grad`` of the reduced loss (of the sum for
``reduction="none"``), whose value part is the loss ``cross_entropy`` returns; Jacobians
are ``jax.vmap(jax.jacrev(jax.nn.softmax))``; forward-mode JVPs are ``jax.jvp`` of the
same functions and the Hessian-vector product ``jax.jvp(jax.grad(loss))``.

:func:`load` turns on ``jax_enable_x64`` (float64 is otherwise silently float32).

Compilation, not arithmetic, is what JAX costs here: XLA compiles a jitted function for
every input shape and dtype (0.1-1 s each on a CPU; a compiled call then takes ~0.1 ms),
and a run meets hundreds of shapes. So:

- inputs are padded to bucket shapes: rows to a power of two >= 8, classes to 256, else
  4096, else a power of two (:func:`_col_bucket`; the (N, K, K) Jacobian: a power of two
  >= 16);
- every option is a traced argument: no weight is a weight of ones (the same bits), the
  reduction indexes a ``lax.switch`` whose three branches are torch's three formulas, and
  the true N, 1/K and 1/N are arguments;
- ``cross_entropy`` and ``cross_entropy_grad`` are one compiled ``jax.value_and_grad``, as
  are the two functions of probabilities: the first call at a bucket compiles for both;
- XLA's legacy fusion emitter is used where available (:data:`FAST_COMPILE`).

JAX then compiles once per bucket, dtype and target kind: 58 compilations for the main
job's 4,728 calls instead of 678: 15-26 s (22 s of CPU) instead of ~150 s on a busy 2-core
machine.

Padding adds only exact zeros: extra classes have logit −inf, class weight 0 and no
target mass (probability 1 for the functions of probabilities), so they add 0 to every sum
over classes and leave every maximum as it was, and the smoothing term uses the true K;
extra rows are masked like ignored rows (loss 0, outside the mean's total weight; the
probability-target mean uses the true N), and the other functions treat rows independently.
A division by the static K or N, which XLA folds into a product with the reciprocal, is
written as that product (:func:`_reciprocal`), so it keeps its bits. What padding can move
is the order in which XLA adds a row, which depends on the array's shape. Measured on every
call of the main job against the previous adapter (which padded classes to a power of two,
but not under label smoothing, and rows only for ``reduction="none"``): softmax,
log_softmax, logsumexp, the Jacobian and both functions of probabilities give the same
bits (also at every K checked in 1..4096); of 908 losses, 29 sums or means differ by 1-2
ulp (their rows, now 8, are added in another order) and 40 zero sums or means of one row
are +0 where they were −0; of 510 gradients, 10 with K > 256 differ by at most 5 ulp in
entries far below the row's largest (by at most 7e-10 of it: ``value_and_grad`` fuses them
otherwise than ``grad`` alone), 2 by at most 39 ulp in entries below 1e-3 (7e-9 of the
largest; N = 3 padded to 8, K = 512), and 4 have −0 where they had +0 (ignored rows).
NaNs and infinities are where they were.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import AdapterUnavailable

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")

#: ``reduction`` as the traced index of its ``lax.switch`` branch.
REDUCTIONS: tuple[str, ...] = ("none", "sum", "mean")


def _import_jax() -> Any:
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - exercised only where jax is absent
        raise AdapterUnavailable(f"JAX is not installed ({exc})") from exc
    jax.config.update("jax_enable_x64", True)
    return jax


def _zero_safe_product(coefficient: Any, log_p: Any) -> Any:
    """coefficient · log_p, with 0 · log 0 = 0: 0 where the coefficient is 0 and log_p is
    −inf. Only there: a NaN log_p (a NaN logit) stays NaN, in the value and in its
    forward-mode tangent alike (a wider guard would give a NaN row a tangent of 0)."""
    import jax.numpy as jnp

    zero_log_zero = jnp.logical_and(coefficient == 0, log_p == -jnp.inf)
    return jnp.where(zero_log_zero, jnp.zeros_like(log_p), coefficient * log_p)


def _index_terms(
    logits: Any,
    target: Any,
    weight: Any,
    ignoring: Any,
    ignore_index: Any,
    rows: Any,
) -> tuple[Any, Any, Any, Any]:
    """Per row: the weighted nll, the smoothing sum −Σ_c w_c log p_c (both 0 in ignored
    and padded rows), whether the row counts, and its target's weight."""
    import jax
    import jax.numpy as jnp

    real = jnp.arange(logits.shape[0]) < rows  # padded rows are dropped like ignored ones
    kept = jnp.logical_or(target != ignore_index, jnp.logical_not(ignoring))
    kept = jnp.logical_and(kept, real)
    # rows left out enter log_softmax as zeros: their outputs are dropped below, but a NaN
    # logit there would still make the backward pass NaN (JAX's documented behaviour of
    # where, met with the "double where": the zero cotangent times a NaN Jacobian)
    log_p = jax.nn.log_softmax(jnp.where(kept[:, None], logits, 0), axis=-1)
    safe_target = jnp.where(kept, target, 0)  # the ignored index need not be a valid class
    picked = jnp.take_along_axis(log_p, safe_target[:, None], axis=-1)[:, 0]
    target_weight = weight[safe_target]
    smooth = -jnp.sum(_zero_safe_product(weight, log_p), axis=-1)
    zero = jnp.zeros_like(picked)
    nll = jnp.where(kept, -_zero_safe_product(target_weight, picked), zero)
    smooth = jnp.where(kept, smooth, zero)
    # a NaN logit makes a (kept) row NaN even at weight 0 (DESIGN §4), through a factor so
    # that its derivatives are NaN too (a where with a NaN constant would give tangent 0)
    nan_row = jnp.logical_and(kept, jnp.any(jnp.isnan(logits), axis=-1))
    nll = nll * jnp.where(nan_row, jnp.nan, 1.0).astype(nll.dtype)
    return nll, smooth, kept, target_weight


def _index_reduced(
    nll: Any,
    smooth: Any,
    kept: Any,
    target_weight: Any,
    label_smoothing: Any,
    inverse_classes: Any,
    reduction: str,
) -> Any:
    """PyTorch's class-index formula: (1−ε)·nll + (ε/K)·smooth, reduced."""
    import jax.numpy as jnp

    zero = jnp.zeros_like(nll)
    if reduction == "none":
        nll_part, smooth_part = nll, smooth
    elif reduction == "sum":
        nll_part, smooth_part = jnp.sum(nll), jnp.sum(smooth)
    else:  # mean: normalised by the total weight of the kept targets, as torch does
        total_weight = jnp.sum(jnp.where(kept, target_weight, zero))
        nll_part, smooth_part = jnp.sum(nll) / total_weight, jnp.sum(smooth) / total_weight
    smoothed = (1 - label_smoothing) * nll_part + smooth_part * (
        label_smoothing * inverse_classes)
    # torch adds the smoothing term only when ε > 0: with ε = 0 an infinite smooth_part (a
    # -inf logit anywhere in the row) must not turn into inf·0 = NaN
    return jnp.where(label_smoothing == 0, nll_part, smoothed)


def _probs_terms(
    logits: Any,
    target: Any,
    weight: Any,
    label_smoothing: Any,
    inverse_classes: Any,
    rows: Any,
) -> Any:
    """PyTorch's probability formula per row: −Σ_c w_c y'_c log p_c, y' = (1−ε)y + ε/K."""
    import jax
    import jax.numpy as jnp

    log_p = jax.nn.log_softmax(logits, axis=-1)
    smoothed = target * (1 - label_smoothing) + label_smoothing * inverse_classes
    loss = -jnp.sum(_zero_safe_product(smoothed * weight, log_p), axis=-1)
    # a NaN logit makes its row NaN even where no target mass would read it (DESIGN §4),
    # its derivatives too (as above)
    loss = loss * jnp.where(jnp.any(jnp.isnan(logits), axis=-1), jnp.nan, 1.0).astype(
        loss.dtype)
    real = jnp.arange(logits.shape[0]) < rows
    return jnp.where(real, loss, jnp.zeros_like(loss))  # smoothing gives padded rows mass


def _probs_reduced(loss: Any, inverse_rows: Any, reduction: str) -> Any:
    """Reduced as torch reduces probability targets: the mean divides by N."""
    import jax.numpy as jnp

    if reduction == "none":
        return loss
    if reduction == "sum":
        return jnp.sum(loss)
    # sum / N with a static N is sum · (1/N) once XLA has folded the constant: the same
    # product, in the dtype XLA computes it in (see _reciprocal)
    return (jnp.sum(loss) * inverse_rows).astype(loss.dtype)


def _loss_objective(
    logits: Any,
    target: Any,
    weight: Any,
    label_smoothing: Any,
    inverse_classes: Any,
    ignoring: Any,
    ignore_index: Any,
    rows: Any,
    inverse_rows: Any,
    reduction: Any,
) -> tuple[Any, Any]:
    """What ``jax.value_and_grad`` differentiates (the reduced loss, summed when not
    reduced) and, as its auxiliary output, the loss as a vector of the padded rows (the
    reduced loss, a scalar, is broadcast to it, which is exact, and read back from row 0).

    The per-row terms are computed once; ``reduction`` (0, 1, 2 for none, sum, mean) picks
    one of three ``lax.switch`` branches, each the formula torch documents for it.
    """
    import jax.numpy as jnp
    from jax import lax

    reduce: Callable[[Any, str], Any]
    if target.ndim == 1:
        terms = _index_terms(logits, target, weight, ignoring, ignore_index, rows)

        def reduce(t: Any, how: str) -> Any:
            return _index_reduced(*t, label_smoothing, inverse_classes, how)
    else:
        terms = _probs_terms(logits, target, weight, label_smoothing, inverse_classes, rows)

        def reduce(t: Any, how: str) -> Any:
            return _probs_reduced(t, inverse_rows, how)

    def branch(how: str) -> Callable[[Any], tuple[Any, Any]]:
        def reduced(t: Any) -> tuple[Any, Any]:
            loss = reduce(t, how)
            # the sum of a scalar is that scalar
            return jnp.sum(loss), jnp.broadcast_to(loss, logits.shape[:1])

        return reduced

    return lax.switch(reduction, [branch(how) for how in REDUCTIONS], terms)


def _from_probs(probs: Any, target: Any) -> Any:
    import jax.numpy as jnp
    from jax.scipy.special import xlogy

    if target.ndim == 1:  # class indices
        return -jnp.log(jnp.take_along_axis(probs, target[:, None], axis=-1)[:, 0])
    return -jnp.sum(xlogy(target, probs), axis=-1)


def _from_probs_objective(probs: Any, target: Any) -> tuple[Any, Any]:
    """The summed loss (differentiated) and the per-row loss (auxiliary)."""
    import jax.numpy as jnp

    loss = _from_probs(probs, target)
    return jnp.sum(loss), loss


#: XLA's legacy fusion emitter compiles a kernel in about 2/3 of the time of the default
#: one (LLVM's optimisation level stays as it is: lowering it changes the bits); with the
#: previous adapter's code both give the same bits on every call of the main job. Used
#: where this XLA knows the option.
FAST_COMPILE: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}


def _compiler_options(jax: Any) -> dict[str, Any] | None:
    """:data:`FAST_COMPILE` if this XLA accepts it (one trivial compilation), else None."""
    try:
        jax.jit(lambda x: x, compiler_options=FAST_COMPILE).lower(np.float32(0)).compile()
    except Exception:  # noqa: BLE001 - an XLA without the option: compile as it does
        return None
    return FAST_COMPILE


@functools.cache
def _compiled() -> dict[str, Any]:
    """The jitted functions, built once per process. ``cross_entropy`` and its gradient
    share one (``jax.value_and_grad``), as do the two functions of probabilities: the
    first call at a bucket compiles both, later calls of either find the compiled code."""
    jax = _import_jax()
    jit = functools.partial(jax.jit, compiler_options=_compiler_options(jax))

    def softmax_rows(row: Any) -> Any:
        return jax.nn.softmax(row, axis=-1)

    def loss_directional(logits: Any, tangent: Any, *args: Any) -> tuple[Any, Any]:
        """(the JVP of the loss vector along the tangent, the HVP of the reduced loss)."""
        def rows(z: Any) -> Any:
            return _loss_objective(z, *args)[1]

        def total(z: Any) -> Any:
            return _loss_objective(z, *args)[0]

        _, jvp_out = jax.jvp(rows, (logits,), (tangent,))
        _, hvp_out = jax.jvp(jax.grad(total), (logits,), (tangent,))
        return jvp_out, hvp_out

    def rowwise_jvp(function: Callable[..., Any]) -> Callable[[Any, Any], Any]:
        def jvp(logits: Any, tangent: Any) -> Any:
            return jax.jvp(functools.partial(function, axis=-1), (logits,), (tangent,))[1]
        return jvp

    return {
        "softmax_jvp": jit(rowwise_jvp(jax.nn.softmax)),
        "log_softmax_jvp": jit(rowwise_jvp(jax.nn.log_softmax)),
        "loss_directional": jit(loss_directional),
        "logsumexp": jit(functools.partial(jax.nn.logsumexp, axis=-1)),
        "softmax": jit(functools.partial(jax.nn.softmax, axis=-1)),
        "log_softmax": jit(functools.partial(jax.nn.log_softmax, axis=-1)),
        "softmax_jacobian": jit(jax.vmap(jax.jacrev(softmax_rows))),
        "loss": jit(jax.value_and_grad(_loss_objective, has_aux=True)),
        "from_probs": jit(jax.value_and_grad(_from_probs_objective, has_aux=True)),
    }


def _bucket(size: int) -> int:
    """The next power of two >= size."""
    return 1 if size <= 1 else 1 << (size - 1).bit_length()


#: Rows are padded to a power of two, at least _MIN_ROWS.
_MIN_ROWS = 8
#: Classes are padded to the first of these that holds them (beyond: a power of two).
#: Padding a row of up to 256 classes to 256, or a longer one to 4096, gives softmax,
#: log_softmax and logsumexp the bits of padding it to the next power of two (checked at K
#: in 1..4096); padding a short row to 4096 would not (XLA adds long rows in vector lanes).
#: A run meets K in 1..16 and a few K in 256..4096: two buckets, and padding 8 x 3 to
#: 8 x 256 costs microseconds where a compilation costs 0.1-1 s.
_COL_BUCKETS: tuple[int, ...] = (256, 4096)
#: The Jacobian is (N, K, K): its classes are padded to a power of two, at least this.
_MIN_JACOBIAN_COLS = 16


def _row_bucket(size: int) -> int:
    return max(_MIN_ROWS, _bucket(size))


def _col_bucket(size: int) -> int:
    for bucket in _COL_BUCKETS:
        if size <= bucket:
            return bucket
    return _bucket(size)


def _jacobian_col_bucket(size: int) -> int:
    return max(_MIN_JACOBIAN_COLS, _bucket(size))


def _padded(array: np.ndarray, rows: int, cols: int, fill: float, row_fill: float) -> np.ndarray:
    """``array`` (n, k) inside a (rows, cols) array: extra columns ``fill``, extra rows
    ``row_fill``. Padding logits with -inf adds exact zeros to every sum and leaves every
    max as it was, so the row's result is the same computation."""
    n, k = array.shape
    if (rows, cols) == (n, k):
        return array
    out = np.full((rows, cols), fill, dtype=array.dtype)
    out[n:, :] = row_fill
    out[:n, :k] = array
    return out


def _pad_rows(target: np.ndarray, rows: int) -> np.ndarray:
    if target.shape[0] == rows:
        return target
    out = np.zeros((rows,) + target.shape[1:], dtype=target.dtype)
    out[: target.shape[0]] = target
    return out


def _pad_cols(vector: np.ndarray, cols: int) -> np.ndarray:
    """A class weight with weight 0 for the padded classes."""
    vector = np.asarray(vector)
    if vector.shape[0] == cols:
        return vector
    return np.concatenate([vector, np.zeros(cols - vector.shape[0], dtype=vector.dtype)])


def _numpy(result: Any) -> np.ndarray:
    """A writable NumPy copy of a JAX result, in the dtype JAX produced."""
    return np.array(result)


def _index_target(target: np.ndarray) -> np.ndarray:
    return target.astype(np.int64, copy=False) if target.dtype.kind in "iu" else target


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid reduction ('none', 'sum', 'mean')")
    return reduction


def _loss_arguments(
    logits: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None,
    ignore_index: int | None,
    label_smoothing: float,
) -> tuple[Any, ...]:
    """The options as traced arguments, so that they never force a recompile:
    ``(logits, target, weight, label_smoothing, ignoring, ignore_index)``.

    Invalid options are refused here as torch refuses them (reduction is checked by
    :func:`_check_reduction`).

    No weight is a weight of ones (multiplying by 1 is exact: the same bits as leaving it
    out); no ignore_index is ``ignoring=False``. Like PyTorch, a non-negative
    ignore_index with probability targets is refused.
    """
    logits = np.asarray(logits)
    target = _index_target(np.asarray(target))
    if not 0.0 <= label_smoothing <= 1.0:  # torch's checks, made before anything is traced
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if target.ndim != 1 and ignore_index is not None and int(ignore_index) >= 0:
        raise ValueError("ignore_index is not supported for probability targets")
    # JAX has no cross-entropy: this glue refuses what torch refuses, so that the report
    # judges JAX's numerics and not the glue (a jitted gather would clamp a bad index)
    k = logits.shape[-1]
    if target.ndim == 1:
        bad = (target < 0) | (target >= k)
        if ignore_index is not None:
            bad &= target != ignore_index
        if np.any(bad):
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"target[{row}] = {int(target[row])} is out of range for {k} "
                             "classes")
    elif np.any(np.asarray(target, dtype=np.float64) < 0):
        raise ValueError("probability targets must be non-negative")
    if weight is None:
        weight = np.ones(logits.shape[-1:], logits.dtype)
    ignoring = ignore_index is not None
    return (
        logits,
        target,
        weight,
        float(label_smoothing),
        np.bool_(ignoring),
        np.int64(ignore_index if ignoring else 0),
    )


def _reciprocal(count: int, dtype: np.dtype) -> np.ndarray:
    """1/count as XLA's CPU compiler folds a division by the constant ``count`` in
    ``dtype``: rounded to ``dtype``, except bfloat16, whose arithmetic it does in float32
    (inf for 0, as there)."""
    dtype = np.dtype(np.float32) if dtype.name == "bfloat16" else dtype
    with np.errstate(divide="ignore"):
        return np.asarray(np.asarray(1, dtype) / np.asarray(count, dtype), dtype)


class JaxAdapter:
    """JAX on its default (CPU) backend; holds no JAX objects, so it pickles."""

    name = "jax"
    dtypes = DTYPES

    def __init__(self) -> None:
        jax = _import_jax()
        self.version = jax.__version__

    def __repr__(self) -> str:
        return "JaxAdapter()"

    def _rowwise(self, function: str, logits: np.ndarray) -> np.ndarray:
        n, k = logits.shape
        padded = _padded(logits, _row_bucket(n), _col_bucket(k), -np.inf, 0.0)
        out = _numpy(_compiled()[function](padded))
        return out[:n] if out.ndim == 1 else out[:n, :k]

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        return self._rowwise("logsumexp", logits)

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        return self._rowwise("softmax", logits)

    def log_softmax(self, logits: np.ndarray) -> np.ndarray:
        return self._rowwise("log_softmax", logits)

    def _loss_call(self, function: str, logits: np.ndarray, target: np.ndarray,
                   weight: np.ndarray | None, ignore_index: int | None,
                   label_smoothing: float, reduction: str) -> np.ndarray:
        """Validate at the true shape, then pad classes (-inf logits, weight 0, no target
        mass) and rows (zero logits, class 0, masked out by the true N)."""
        reduction = _check_reduction(reduction)
        logits, target, weight, smoothing, ignoring, ignored = _loss_arguments(
            logits, target, weight, ignore_index, label_smoothing)
        n, k = logits.shape
        rows, cols = _row_bucket(n), _col_bucket(k)
        logits = _padded(logits, rows, cols, -np.inf, 0.0)
        target = _padded(target, rows, cols, 0.0, 0.0) if target.ndim == 2 else _pad_rows(
            target, rows)
        # ε/K is computed in float64 (a weak-typed scalar), as XLA folds ε/K for a static K
        inverse_classes = float(_reciprocal(k, np.dtype(np.float64)))
        (_, loss), grad = _compiled()["loss"](
            logits, target, _pad_cols(weight, cols), smoothing, inverse_classes, ignoring,
            ignored, n, _reciprocal(n, logits.dtype), REDUCTIONS.index(reduction))
        if function == "cross_entropy_grad":
            return _numpy(grad)[:n, :k]
        out = _numpy(loss)
        return out[:n] if reduction == "none" else out[:1].reshape(())

    def cross_entropy(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        weight: np.ndarray | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray:
        return self._loss_call("cross_entropy", logits, target, weight, ignore_index,
                               label_smoothing, reduction)

    def cross_entropy_grad(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        weight: np.ndarray | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray:
        return self._loss_call("cross_entropy_grad", logits, target, weight, ignore_index,
                               label_smoothing, reduction)

    def _jvp_call(self, function: str, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        n, k = logits.shape
        rows, cols = _row_bucket(n), _col_bucket(k)
        out = _compiled()[function](_padded(logits, rows, cols, -np.inf, 0.0),
                                    _padded(np.asarray(tangent), rows, cols, 0.0, 0.0))
        return _numpy(out)[:n, :k]

    def softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        return self._jvp_call("softmax_jvp", logits, tangent)

    def log_softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        return self._jvp_call("log_softmax_jvp", logits, tangent)

    def _directional_call(self, function: str, logits: np.ndarray, target: np.ndarray,
                          tangent: np.ndarray, weight: np.ndarray | None,
                          ignore_index: int | None, label_smoothing: float,
                          reduction: str) -> np.ndarray:
        """``jax.jvp`` of the loss (per row, or the reduced scalar) and of its gradient,
        padded like the loss (the tangent is 0 on the padding): one compilation for both."""
        reduction = _check_reduction(reduction)
        logits, target, weight, smoothing, ignoring, ignored = _loss_arguments(
            logits, target, weight, ignore_index, label_smoothing)
        n, k = logits.shape
        rows, cols = _row_bucket(n), _col_bucket(k)
        padded = _padded(logits, rows, cols, -np.inf, 0.0)
        direction = _padded(np.asarray(tangent), rows, cols, 0.0, 0.0)
        target = _padded(target, rows, cols, 0.0, 0.0) if target.ndim == 2 else _pad_rows(
            target, rows)
        inverse_classes = float(_reciprocal(k, np.dtype(np.float64)))
        jvp_out, hvp_out = _compiled()["loss_directional"](
            padded, direction, target, _pad_cols(weight, cols), smoothing, inverse_classes,
            ignoring, ignored, n, _reciprocal(n, padded.dtype), REDUCTIONS.index(reduction))
        if function == "cross_entropy_hvp":
            return _numpy(hvp_out)[:n, :k]
        out = _numpy(jvp_out)
        return out[:n] if reduction == "none" else out[:1].reshape(())

    def cross_entropy_jvp(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        tangent: np.ndarray,
        weight: np.ndarray | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray:
        return self._directional_call("cross_entropy_jvp", logits, target, tangent, weight,
                                      ignore_index, label_smoothing, reduction)

    def cross_entropy_hvp(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        vector: np.ndarray,
        weight: np.ndarray | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray:
        return self._directional_call("cross_entropy_hvp", logits, target, vector, weight,
                                      ignore_index, label_smoothing, reduction)

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        n, k = logits.shape
        padded = _padded(logits, _row_bucket(n), _jacobian_col_bucket(k), -np.inf, 0.0)
        return _numpy(_compiled()["softmax_jacobian"](padded))[:n, :k, :k]

    def _probs_call(self, function: str, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Pad with probability 1 and no target mass: -log 1 = 0 adds nothing."""
        n, k = probs.shape
        rows, cols = _row_bucket(n), _col_bucket(k)
        probs = _padded(probs, rows, cols, 1.0, 1.0)
        target = _index_target(np.asarray(target))
        target = _padded(target, rows, cols, 0.0, 0.0) if target.ndim == 2 else _pad_rows(
            target, rows)
        (_, loss), grad = _compiled()["from_probs"](probs, target)
        if function == "cross_entropy_grad_wrt_probs":
            return _numpy(grad)[:n, :k]
        return _numpy(loss)[:n]

    def cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._probs_call("cross_entropy_from_probs", probs, target)

    def cross_entropy_grad_wrt_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._probs_call("cross_entropy_grad_wrt_probs", probs, target)


def load() -> JaxAdapter:
    """The ``jax`` built-in; turns on x64; AdapterUnavailable when JAX is not installed."""
    return JaxAdapter()
