"""Built-in adapter ``tensorflow`` (CPU): TensorFlow's ``tf.nn`` functions as they are.

softmax, log_softmax and logsumexp are ``tf.nn.softmax``, ``tf.nn.log_softmax`` and
``tf.math.reduce_logsumexp`` over the last axis; ``cross_entropy`` is
``tf.nn.sparse_softmax_cross_entropy_with_logits`` for class indices and
``tf.nn.softmax_cross_entropy_with_logits`` for probability targets, both per row (TF's
cross-entropies have no class weights, ``ignore_index``, label smoothing or reduction, so
the signatures have none of those options). Gradients come from ``tf.GradientTape`` (of the
sum of the per-row losses), Jacobians from ``GradientTape.batch_jacobian``, forward-mode
JVPs from ``tf.autodiff.ForwardAccumulator`` and the Hessian-vector product from a
``ForwardAccumulator`` over a ``GradientTape`` (forward over reverse, as TF's own guide
writes it). No XLA; everything runs on the CPU.

The values, the gradients and the functions of probabilities run eagerly. The Jacobian and
the forward-mode products run as ``tf.function`` graphs traced once per dtype (and target
kind) with relaxed shapes (``[None, None]``), as ``batch_jacobian``'s documentation advises:
eagerly, ``batch_jacobian`` traces and vectorizes a new ``tf.function`` on every call, and
``ForwardAccumulator`` traces each op's JVP anew per input shape (its first 32 shapes per
op), which cost 0.1-0.2 s a call and most of the adapter's time in a run. Those eager paths
already run their derivative as graphs, and the same ops run in the traced function. Its
outputs are the eager code's bits on every call of the main job, except the sign of some
NaNs (NaN operands are taken in another order): so an output with a NaN, a call that raises,
and an empty batch or row (N = 0 or K = 0) are computed eagerly, as before, and what is
returned is always the eager code's output, bit for bit (checked call by call on the
1,019 such calls a default run's cases give, 87 of which have a NaN and are computed
again; in a run of this adapter alone, 72 s of calls became 24 s on a busy 2-core machine).

TF has no cross-entropy of probabilities; ``cross_entropy_from_probs`` is written the way a
TF user writes it: ``-reduce_sum(tf.math.xlogy(y, p))`` for probability targets (``xlogy``
gives 0·log 0 = 0) and ``-log(tf.gather(p, t, batch_dims=1))`` for class indices, with its
gradient from ``GradientTape``.

Dialect ``tensorflow``: ``softmax_cross_entropy_with_logits`` documents that each row of
``labels`` must be a valid probability distribution (its fused gradient is softmax − labels,
which is the derivative of −Σ y log p only when Σy = 1), where PyTorch accepts any
non-negative targets.

Glue only: NumPy arrays are copied into eager tensors of the same dtype (bfloat16 crosses
as ``ml_dtypes.bfloat16``, which is TF's own NumPy type for it; class indices as int64) and
results come back as NumPy copies in the dtype TF produced. Nothing is fixed up.
tensorflow is imported only by :func:`load` and the methods, never when the harness is
imported; the import helper quiets TF's C++ start-up logging (``TF_CPP_MIN_LOG_LEVEL``,
unless the user set it).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import AdapterUnavailable

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")


def _import_tensorflow() -> Any:
    # "2": no INFO or WARNING lines from TF's C++ side (oneDNN, CPU features) in a run
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - exercised only where TF is absent
        raise AdapterUnavailable(f"tensorflow is not installed ({exc})") from exc
    return tf


def _tensor(array: np.ndarray) -> Any:
    """An eager tensor holding an exact copy of ``array`` (class indices as int64)."""
    tf = _import_tensorflow()
    owned = np.array(array, copy=True, order="C")
    if owned.dtype.kind in "iu":
        owned = owned.astype(np.int64, copy=False)
    return tf.constant(owned)


def _array(tensor: Any) -> np.ndarray:
    """A writable NumPy copy of an eager tensor, in the dtype TF produced."""
    return np.array(tensor.numpy(), copy=True)


def _loss(tf: Any, logits: Any, target: Any) -> Any:
    """TF's per-row cross-entropy: sparse for class indices, dense for probabilities."""
    if target.dtype == tf.int64:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
    return tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits, axis=-1)


def _from_probs(tf: Any, probs: Any, target: Any) -> Any:
    if target.dtype == tf.int64:  # class indices
        return -tf.math.log(tf.gather(probs, target, axis=-1, batch_dims=1))
    return -tf.reduce_sum(tf.math.xlogy(target, probs), axis=-1)


#: The traced functions, by (function, logits dtype, target dtype and rank); per process.
_GRAPHS: dict[tuple[str, ...], Any] = {}


def _spec(tf: Any, tensor: Any) -> Any:
    """A shape-relaxed signature of ``tensor``: its dtype and rank, no sizes."""
    return tf.TensorSpec([None] * tensor.shape.rank, tensor.dtype)


def _graph(name: str, body: Any, *tensors: Any) -> Any:
    """``body`` as a ``tf.function`` traced once per dtype and rank of ``tensors`` (the
    first ``body`` given for a key is kept: the bodies of one name compute the same)."""
    tf = _import_tensorflow()
    specs = [_spec(tf, t) for t in tensors]
    key = (name, *(f"{s.dtype.name}:{s.shape.rank}" for s in specs))
    if key not in _GRAPHS:
        _GRAPHS[key] = tf.function(body, input_signature=specs, autograph=False)
    return _GRAPHS[key]


def _traced(name: str, body: Any, tensors: tuple[Any, ...]) -> np.ndarray:
    """``body(*tensors)`` through its traced graph, or eagerly (the same function called
    directly) for an empty input, an output with a NaN or a call that raises there.

    TF's warnings about retracing (each dtype's graph, and pfor's per eager call) go to
    its Python logger, muted meanwhile."""
    logger = _import_tensorflow().get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        if tensors[0].shape.num_elements() == 0:
            return _array(body(*tensors))
        try:
            out = _array(_graph(name, body, *tensors)(*tensors))
        except Exception:  # noqa: BLE001 - the eager call raises what the adapter reports
            return _array(body(*tensors))
        if np.isnan(out).any():  # NaN signs may differ from the eager code's
            return _array(body(*tensors))
        return out
    finally:
        logger.setLevel(level)


class TensorFlowAdapter:
    """TensorFlow on the CPU; holds no TF objects, so it pickles."""

    name = "tensorflow"
    dtypes = DTYPES
    dialect = "tensorflow"

    def __init__(self) -> None:
        tf = _import_tensorflow()
        self.version = tf.__version__

    def __repr__(self) -> str:
        return "TensorFlowAdapter()"

    # -- values -----------------------------------------------------------------------

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        tf = _import_tensorflow()
        return _array(tf.math.reduce_logsumexp(_tensor(logits), axis=-1))

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        tf = _import_tensorflow()
        return _array(tf.nn.softmax(_tensor(logits), axis=-1))

    def log_softmax(self, logits: np.ndarray) -> np.ndarray:
        tf = _import_tensorflow()
        return _array(tf.nn.log_softmax(_tensor(logits), axis=-1))

    def cross_entropy(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        tf = _import_tensorflow()
        return _array(_loss(tf, _tensor(logits), _tensor(target)))

    # -- reverse mode (GradientTape) ----------------------------------------------------

    def cross_entropy_grad(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The gradient of the summed per-row losses (the tape seeds every row with 1)."""
        tf = _import_tensorflow()
        z, y = _tensor(logits), _tensor(target)
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = _loss(tf, z, y)
        return _array(tape.gradient(loss, z))

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        """``batch_jacobian`` (vectorized by TF's pfor), in a graph traced once per dtype
        (:func:`_traced`; eagerly, pfor traces a new ``tf.function`` per call)."""
        tf = _import_tensorflow()
        z = _tensor(logits)

        def jacobian(z: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(z)
                p = tf.nn.softmax(z, axis=-1)
            return tape.batch_jacobian(p, z)

        return _traced("softmax_jacobian", jacobian, (z,))

    # -- forward mode and second order (ForwardAccumulator) ------------------------------

    def _jvp(self, name: str, function: Any, logits: np.ndarray, tangent: np.ndarray,
             *extra: Any) -> np.ndarray:
        """The JVP of ``function(z, *extra)`` at the logits along the tangent (a graph per
        dtype, see :func:`_traced`)."""
        tf = _import_tensorflow()

        def jvp(z: Any, v: Any, *extra: Any) -> Any:
            with tf.autodiff.ForwardAccumulator(primals=z, tangents=v) as acc:
                out = function(z, *extra)
            return acc.jvp(out, unconnected_gradients=tf.UnconnectedGradients.ZERO)

        return _traced(name, jvp, (_tensor(logits), _tensor(tangent),
                                   *(_tensor(e) for e in extra)))

    def softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        tf = _import_tensorflow()
        return self._jvp("softmax_jvp", lambda z: tf.nn.softmax(z, axis=-1), logits, tangent)

    def log_softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        tf = _import_tensorflow()
        return self._jvp("log_softmax_jvp", lambda z: tf.nn.log_softmax(z, axis=-1),
                         logits, tangent)

    def cross_entropy_jvp(
        self, logits: np.ndarray, target: np.ndarray, tangent: np.ndarray
    ) -> np.ndarray:
        tf = _import_tensorflow()
        return self._jvp("cross_entropy_jvp", lambda z, y: _loss(tf, z, y), logits, tangent,
                         target)

    def cross_entropy_hvp(
        self, logits: np.ndarray, target: np.ndarray, vector: np.ndarray
    ) -> np.ndarray:
        """Forward over reverse: the JVP of the tape's gradient of the summed losses."""
        tf = _import_tensorflow()

        def gradient(z: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(z)
                loss = _loss(tf, z, y)
            return tape.gradient(loss, z)

        return self._jvp("cross_entropy_hvp", gradient, logits, vector, target)

    # -- the unfused route --------------------------------------------------------------

    def cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        tf = _import_tensorflow()
        return _array(_from_probs(tf, _tensor(probs), _tensor(target)))

    def cross_entropy_grad_wrt_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        tf = _import_tensorflow()
        p, y = _tensor(probs), _tensor(target)
        with tf.GradientTape() as tape:
            tape.watch(p)
            loss = _from_probs(tf, p, y)
        return _array(tape.gradient(loss, p, unconnected_gradients=tf.UnconnectedGradients.ZERO))


def load() -> TensorFlowAdapter:
    """The ``tensorflow`` built-in; AdapterUnavailable when TensorFlow is not installed."""
    return TensorFlowAdapter()
