"""Built-in adapter ``jax``: ``jax.nn`` softmax, log_softmax, logsumexp, ``grad``, ``jacrev``.

JAX has no cross-entropy, so ``cross_entropy`` is written here on top of
``jax.nn.log_softmax`` following PyTorch's documented ``cross_entropy`` formulas (class
weights, ``ignore_index``, ``label_smoothing``, the three reductions, probability targets),
the way a JAX user writes it: class indices are gathered with ``jnp.take_along_axis`` and
products of a zero coefficient with a log-probability are 0 (``0·log 0 = 0``, as
``jax.scipy.special.xlogy``), so the glue adds no defect of its own; what remains is JAX's.
Gradients are ``jax.grad`` of the reduced loss (of the sum for ``reduction="none"``);
Jacobians are ``jax.vmap(jax.jacrev(jax.nn.softmax))``.

:func:`load` turns on ``jax_enable_x64`` (float64 is otherwise silently float32). Every
function is jitted once per process; the options are traced arguments (no weight is a
weight of ones, which gives the same bits) and only ``reduction`` is static, so JAX
compiles once per shape, dtype, target kind and reduction (0.1-0.3 s each on a CPU) and
later calls cost ~0.1 ms.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from harness.adapters.contract import AdapterUnavailable

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")


def _import_jax() -> Any:
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - exercised only where jax is absent
        raise AdapterUnavailable(f"JAX is not installed ({exc})") from exc
    jax.config.update("jax_enable_x64", True)
    return jax


def _zero_safe_product(coefficient: Any, log_p: Any) -> Any:
    """coefficient · log_p with 0 wherever the coefficient is 0 (also at log_p = −inf)."""
    import jax.numpy as jnp

    return jnp.where(coefficient == 0, jnp.zeros_like(log_p), coefficient * log_p)


def _loss_from_indices(
    logits: Any,
    target: Any,
    weight: Any,
    label_smoothing: Any,
    ignoring: Any,
    ignore_index: Any,
    reduction: str,
) -> Any:
    """PyTorch's class-index formula: (1−ε)·nll + (ε/K)·smooth, ignored rows 0."""
    import jax
    import jax.numpy as jnp

    n_classes = logits.shape[-1]
    log_p = jax.nn.log_softmax(logits, axis=-1)
    kept = jnp.logical_or(target != ignore_index, jnp.logical_not(ignoring))
    safe_target = jnp.where(kept, target, 0)  # the ignored index need not be a valid class
    picked = jnp.take_along_axis(log_p, safe_target[:, None], axis=-1)[:, 0]
    target_weight = weight[safe_target]
    smooth = -jnp.sum(_zero_safe_product(weight, log_p), axis=-1)
    zero = jnp.zeros_like(picked)
    nll = jnp.where(kept, -_zero_safe_product(target_weight, picked), zero)
    smooth = jnp.where(kept, smooth, zero)
    # a NaN logit makes a (kept) row NaN even at weight 0 (DESIGN §4)
    nan_row = jnp.logical_and(kept, jnp.any(jnp.isnan(logits), axis=-1))
    nll = jnp.where(nan_row, jnp.nan, nll)
    if reduction == "none":
        nll_part, smooth_part = nll, smooth
    elif reduction == "sum":
        nll_part, smooth_part = jnp.sum(nll), jnp.sum(smooth)
    else:  # mean: normalised by the total weight of the kept targets, as torch does
        total_weight = jnp.sum(jnp.where(kept, target_weight, zero))
        nll_part, smooth_part = jnp.sum(nll) / total_weight, jnp.sum(smooth) / total_weight
    smoothed = (1 - label_smoothing) * nll_part + smooth_part * (label_smoothing / n_classes)
    # torch adds the smoothing term only when ε > 0: with ε = 0 an infinite smooth_part (a
    # -inf logit anywhere in the row) must not turn into inf·0 = NaN
    return jnp.where(label_smoothing == 0, nll_part, smoothed)


def _loss_from_probs(
    logits: Any, target: Any, weight: Any, label_smoothing: Any, reduction: str
) -> Any:
    """PyTorch's probability formula: −Σ_c w_c y'_c log p_c with y' = (1−ε)y + ε/K."""
    import jax
    import jax.numpy as jnp

    n_classes = logits.shape[-1]
    log_p = jax.nn.log_softmax(logits, axis=-1)
    smoothed = target * (1 - label_smoothing) + label_smoothing / n_classes
    loss = -jnp.sum(_zero_safe_product(smoothed * weight, log_p), axis=-1)
    # a NaN logit makes its row NaN even where no target mass would read it (DESIGN §4)
    loss = jnp.where(jnp.any(jnp.isnan(logits), axis=-1), jnp.nan, loss)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return jnp.sum(loss)
    return jnp.sum(loss) / logits.shape[0]  # torch divides by N for probability targets


def _loss(
    logits: Any,
    target: Any,
    weight: Any,
    label_smoothing: Any,
    ignoring: Any,
    ignore_index: Any,
    reduction: str,
) -> Any:
    """The loss of either target kind; only ``reduction`` (and the shapes) are static."""
    if target.ndim == 1:
        return _loss_from_indices(
            logits, target, weight, label_smoothing, ignoring, ignore_index, reduction
        )
    return _loss_from_probs(logits, target, weight, label_smoothing, reduction)


def _summed_loss(
    logits: Any,
    target: Any,
    weight: Any,
    label_smoothing: Any,
    ignoring: Any,
    ignore_index: Any,
    reduction: str,
) -> Any:
    """The loss that ``cross_entropy_grad`` differentiates: summed when not reduced."""
    import jax.numpy as jnp

    loss = _loss(logits, target, weight, label_smoothing, ignoring, ignore_index, reduction)
    return jnp.sum(loss)


def _from_probs(probs: Any, target: Any) -> Any:
    import jax.numpy as jnp
    from jax.scipy.special import xlogy

    if target.ndim == 1:  # class indices
        return -jnp.log(jnp.take_along_axis(probs, target[:, None], axis=-1)[:, 0])
    return -jnp.sum(xlogy(target, probs), axis=-1)


def _summed_from_probs(probs: Any, target: Any) -> Any:
    import jax.numpy as jnp

    return jnp.sum(_from_probs(probs, target))


@functools.cache
def _compiled() -> dict[str, Any]:
    """The jitted functions, built once per process."""
    jax = _import_jax()
    static = ("reduction",)

    def softmax_rows(row: Any) -> Any:
        return jax.nn.softmax(row, axis=-1)

    return {
        "logsumexp": jax.jit(functools.partial(jax.nn.logsumexp, axis=-1)),
        "softmax": jax.jit(functools.partial(jax.nn.softmax, axis=-1)),
        "log_softmax": jax.jit(functools.partial(jax.nn.log_softmax, axis=-1)),
        "cross_entropy": jax.jit(_loss, static_argnames=static),
        "cross_entropy_grad": jax.jit(jax.grad(_summed_loss), static_argnames=static),
        "softmax_jacobian": jax.jit(jax.vmap(jax.jacrev(softmax_rows))),
        "cross_entropy_from_probs": jax.jit(_from_probs),
        "cross_entropy_grad_wrt_probs": jax.jit(jax.grad(_summed_from_probs)),
    }


def _bucket(size: int) -> int:
    """The next power of two >= size: inputs are padded to it so that XLA compiles each
    function for a handful of shapes instead of every (N, K) a run meets (a compile costs
    0.1-0.5 s; a run meets hundreds of shapes)."""
    return 1 if size <= 1 else 1 << (size - 1).bit_length()


#: Rows are padded to at least this many, so that small batches share one compilation.
_MIN_ROWS = 8


def _row_bucket(size: int) -> int:
    return max(_MIN_ROWS, _bucket(size))


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


def _numpy(result: Any) -> np.ndarray:
    """A writable NumPy copy of a JAX result, in the dtype JAX produced."""
    return np.array(result)


def _index_target(target: np.ndarray) -> np.ndarray:
    return target.astype(np.int64, copy=False) if target.dtype.kind in "iu" else target


def _check_reduction(reduction: str) -> str:
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"{reduction!r} is not a valid reduction ('none', 'sum', 'mean')")
    return reduction


def _loss_arguments(
    logits: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None,
    ignore_index: int | None,
    label_smoothing: float,
) -> tuple[Any, ...]:
    """The traced arguments of the jitted loss, so that options never force a recompile.

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
        padded = _padded(logits, _row_bucket(n), _bucket(k), -np.inf, 0.0)
        out = _numpy(_compiled()[function](padded))
        return out[:n] if out.ndim == 1 else out[:n, :k] if out.ndim == 2 else out[:n, :k, :k]

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        return self._rowwise("logsumexp", logits)

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        return self._rowwise("softmax", logits)

    def log_softmax(self, logits: np.ndarray) -> np.ndarray:
        return self._rowwise("log_softmax", logits)

    def _loss_call(self, function: str, logits: np.ndarray, target: np.ndarray,
                   weight: np.ndarray | None, ignore_index: int | None,
                   label_smoothing: float, reduction: str) -> np.ndarray:
        """Pad classes (-inf logits, no target mass) unless smoothing spreads mass over K,
        and rows (zero logits, class 0) unless a reduction mixes them."""
        reduction = _check_reduction(reduction)
        n, k = np.shape(logits)
        target = np.asarray(target)
        invalid = False
        if target.ndim == 1:
            outside = (target < 0) | (target >= k)
            if ignore_index is not None:
                outside &= target != ignore_index
            invalid = bool(np.any(outside))
        # no column padding with smoothing (it spreads mass over K) or with an invalid class
        # index (which must meet JAX's own out-of-range behaviour, not a padded column)
        cols = k if label_smoothing or invalid else _bucket(k)
        rows = n if reduction != "none" else _row_bucket(n)
        logits = _padded(np.asarray(logits), rows, cols, -np.inf, 0.0)
        if target.ndim == 2:
            target = _padded(target, rows, cols, 0.0, 0.0)
        else:
            target = _pad_rows(target, rows)
        if weight is not None and cols != k:
            weight = np.concatenate([weight, np.zeros(cols - k, dtype=weight.dtype)])
        arguments = _loss_arguments(logits, target, weight, ignore_index, label_smoothing)
        out = _numpy(_compiled()[function](*arguments, reduction=reduction))
        return out if out.ndim == 0 else out[:n] if out.ndim == 1 else out[:n, :k]

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

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        return self._rowwise("softmax_jacobian", logits)

    def _probs_call(self, function: str, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Pad with probability 1 and no target mass: -log 1 = 0 adds nothing."""
        n, k = probs.shape
        rows, cols = _row_bucket(n), _bucket(k)
        probs = _padded(probs, rows, cols, 1.0, 1.0)
        target = _index_target(np.asarray(target))
        target = _padded(target, rows, cols, 0.0, 0.0) if target.ndim == 2 else _pad_rows(
            target, rows)
        out = _numpy(_compiled()[function](probs, target))
        return out[:n] if out.ndim == 1 else out[:n, :k]

    def cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._probs_call("cross_entropy_from_probs", probs, target)

    def cross_entropy_grad_wrt_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._probs_call("cross_entropy_grad_wrt_probs", probs, target)


def load() -> JaxAdapter:
    """The ``jax`` built-in; turns on x64; AdapterUnavailable when JAX is not installed."""
    return JaxAdapter()
