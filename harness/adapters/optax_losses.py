"""Built-in adapters ``optax`` and ``optax-safe``: optax's softmax cross-entropies as they are.

``optax``: ``cross_entropy`` is ``optax.softmax_cross_entropy_with_integer_labels`` for class
indices and ``optax.softmax_cross_entropy`` for probability targets, per row. ``optax-safe``
(:func:`load_safe`): ``optax.safe_softmax_cross_entropy`` (optax >= 0.2.4), which treats a
zero label on a −inf logit as 0 (0·log 0 = 0); it takes probability targets only, so a
class-index call raises ``NotImplementedError`` (reported as "not provided").

optax's losses have no class weights, ``ignore_index``, label smoothing (``optax.smooth_labels``
is a separate transform of the labels, not an option of the loss) or reduction, so the
signatures have none of those options. optax has no softmax, logsumexp or Jacobian of its
own (it calls ``jax.nn``, graded by the ``jax`` adapter), so only the loss and its
derivatives are provided. Derivatives come from JAX, as an optax user gets them:
``jax.value_and_grad`` of the summed per-row losses (whose value part is the loss
``cross_entropy`` returns), ``jax.jvp`` of the per-row losses and ``jax.jvp(jax.grad(sum))``
for the Hessian-vector product.

Glue only: every call goes through a ``jax.jit``-compiled function (how optax losses run in
a training step), compiled once per shape, dtype and target kind and cached per process; the
arrays are handed to JAX as they arrive (bfloat16 as ``ml_dtypes.bfloat16``, class indices
as int64) and come back as NumPy copies in the dtype JAX produced. No padding (a padded
class of −inf logit and zero label would itself be the 0·(−inf) case), no validation of
class indices (what optax does with one out of range is optax's), no fix-up.
:func:`load` turns on ``jax_enable_x64`` as the ``jax`` adapter does (float64 is otherwise
silently float32).

Dialect ``optax``: both probability-target functions document their labels as valid
probability distributions (non-negative, summing to 1), where PyTorch accepts any
non-negative targets.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import AdapterUnavailable

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")


def _import_optax() -> Any:
    try:
        import jax
        import optax
    except ImportError as exc:  # pragma: no cover - exercised only where optax is absent
        raise AdapterUnavailable(f"optax is not installed ({exc})") from exc
    jax.config.update("jax_enable_x64", True)
    return optax


def _per_row_loss(safe: bool) -> Any:
    """optax's per-row loss for (logits, target): integer labels or probabilities."""
    optax = _import_optax()

    def loss(logits: Any, target: Any) -> Any:
        if np.issubdtype(target.dtype, np.integer):
            if safe:  # pragma: no cover - refused before tracing
                raise NotImplementedError
            return optax.softmax_cross_entropy_with_integer_labels(logits, target)
        if safe:
            return optax.safe_softmax_cross_entropy(logits, target)
        return optax.softmax_cross_entropy(logits, target)

    return loss


@functools.cache
def _compiled(safe: bool) -> dict[str, Any]:
    """The jitted functions of one variant, built once per process."""
    import jax

    loss = _per_row_loss(safe)

    def objective(logits: Any, target: Any) -> tuple[Any, Any]:
        rows = loss(logits, target)
        return rows.sum(), rows

    def directional(logits: Any, target: Any, tangent: Any) -> tuple[Any, Any]:
        """(the JVP of the per-row losses, the HVP of their sum) along ``tangent``."""
        _, jvp_out = jax.jvp(lambda z: loss(z, target), (logits,), (tangent,))
        _, hvp_out = jax.jvp(jax.grad(lambda z: objective(z, target)[0]), (logits,),
                             (tangent,))
        return jvp_out, hvp_out

    return {
        "loss": jax.jit(jax.value_and_grad(objective, has_aux=True)),
        "directional": jax.jit(directional),
    }


def _target(target: np.ndarray) -> np.ndarray:
    target = np.asarray(target)
    return target.astype(np.int64, copy=False) if target.dtype.kind in "iu" else target


class OptaxAdapter:
    """optax's cross-entropy under ``jax.jit`` (CPU); holds no JAX objects, so it pickles."""

    dtypes = DTYPES
    dialect = "optax"

    def __init__(self, safe: bool = False) -> None:
        optax = _import_optax()
        if safe and not hasattr(optax, "safe_softmax_cross_entropy"):
            raise AdapterUnavailable(
                f"optax {optax.__version__} has no safe_softmax_cross_entropy (optax >= 0.2.4)")
        self.safe = safe
        self.name = "optax-safe" if safe else "optax"
        self.version = optax.__version__

    def __repr__(self) -> str:
        return f"OptaxAdapter(safe={self.safe!r})"

    def _arguments(self, logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, ...]:
        target = _target(target)
        if self.safe and target.ndim == 1:
            raise NotImplementedError(
                "optax.safe_softmax_cross_entropy takes probability targets only")
        return np.asarray(logits), target

    def cross_entropy(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        (_, rows), _ = _compiled(self.safe)["loss"](*self._arguments(logits, target))
        return np.array(rows)

    def cross_entropy_grad(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The gradient of the summed per-row losses."""
        _, grad = _compiled(self.safe)["loss"](*self._arguments(logits, target))
        return np.array(grad)

    def cross_entropy_jvp(
        self, logits: np.ndarray, target: np.ndarray, tangent: np.ndarray
    ) -> np.ndarray:
        jvp_out, _ = _compiled(self.safe)["directional"](
            *self._arguments(logits, target), np.asarray(tangent))
        return np.array(jvp_out)

    def cross_entropy_hvp(
        self, logits: np.ndarray, target: np.ndarray, vector: np.ndarray
    ) -> np.ndarray:
        """Forward over reverse: ``jax.jvp`` of ``jax.grad`` of the summed losses."""
        _, hvp_out = _compiled(self.safe)["directional"](
            *self._arguments(logits, target), np.asarray(vector))
        return np.array(hvp_out)


def load() -> OptaxAdapter:
    """The ``optax`` built-in; turns on x64; AdapterUnavailable when optax is not installed."""
    return OptaxAdapter()


def load_safe() -> OptaxAdapter:
    """The ``optax-safe`` built-in (``optax.safe_softmax_cross_entropy``, probability targets)."""
    return OptaxAdapter(safe=True)
