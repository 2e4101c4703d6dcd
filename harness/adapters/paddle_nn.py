"""Built-in adapter ``paddle``: PaddlePaddle's CPU functions as they are.

softmax and log_softmax are ``paddle.nn.functional.softmax``/``log_softmax``, logsumexp is
``paddle.logsumexp``; ``cross_entropy`` is ``paddle.nn.functional.cross_entropy`` with
``weight``, ``ignore_index``, ``label_smoothing`` and ``reduction``, and
``soft_label=True`` for probability targets. The from-probabilities route is the same
function with ``use_softmax=False`` (documented as -log P[label] for class indices and
-sum label * log P for soft labels: the contract's meaning). Gradients come from
``paddle.grad`` (for ``reduction="none"`` with a cotangent of ones: the gradient of the sum).

Glue, all of it:

- NumPy arrays become CPU tensors (copies, ``paddle.to_tensor``) and results come back with
  ``Tensor.numpy()`` in the dtype paddle produced;
- ``ignore_index`` is passed only when the case has one (paddle's default, -100, is
  PyTorch's); ``cross_entropy(..., reduction="none")`` returns (N, 1) for soft labels and
  with label smoothing, which is reshaped to the contract's (N,);
- ``softmax_jacobian`` is one ``paddle.grad`` call through paddle's softmax: the row z is
  repeated K times (N, K, K) and the cotangent is the identity, so the gradient's [n, j]
  row is the vector-Jacobian product with e_j, the Jacobian's row j (``jacrev`` batched).
  ``paddle.autograd.jacobian`` is not used: in paddle 3.3 it asks for a higher-order
  gradient that ``softmax_grad`` does not have and raises.

Not provided: forward-mode JVPs and the Hessian-vector product. Paddle's
``paddle.incubate.autograd.jvp`` and any double backward need the gradient of
``softmax_grad`` / ``cross_entropy_with_softmax_grad``, which paddle 3.3 does not register
(it raises "doesn't have any grad op"). Dtypes: paddle's CPU kernels of softmax,
log_softmax, logsumexp and cross_entropy are registered for float32 and float64 only
(float16 and bfloat16 raise "kernel ... is not registered").

The dialect is ``paddle``: its documentation of ``cross_entropy``
(https://www.paddlepaddle.org.cn/documentation/docs/en/api/paddle/nn/functional/cross_entropy_en.html)
differs from PyTorch's: with soft labels (and so with label smoothing, which turns class
indices into soft labels) a row's loss is multiplied by sum_i weight_i * label_i and the
weighted mean divides by the sum of those factors; ``ignore_index`` applies only to hard
labels; ``mean`` without weights is documented as the sum over N.

paddle is imported only by :func:`load` and the methods, never when the harness is
imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import AdapterUnavailable

DTYPES: tuple[str, ...] = ("float64", "float32")


def _import_paddle() -> Any:
    try:
        import paddle
    except ImportError as exc:  # pragma: no cover - exercised only where paddle is absent
        raise AdapterUnavailable(f"paddle is not installed ({exc})") from exc
    return paddle


class PaddleAdapter:
    """PaddlePaddle on the CPU; holds no tensors, so it pickles."""

    name = "paddle"
    dtypes = DTYPES
    dialect = "paddle"

    def __init__(self) -> None:
        paddle = _import_paddle()
        self.version = paddle.__version__

    def __repr__(self) -> str:
        return "PaddleAdapter()"

    # -- conversions ------------------------------------------------------------------

    @staticmethod
    def _tensor(array: np.ndarray, grad: bool = False) -> Any:
        """An exact CPU copy of ``array`` (int64 for class indices)."""
        import paddle

        owned = np.array(array, copy=True, order="C")
        if owned.dtype.kind in "iu":
            owned = owned.astype(np.int64, copy=False)
        return paddle.to_tensor(owned, place=paddle.CPUPlace(), stop_gradient=not grad)

    @staticmethod
    def _array(tensor: Any) -> np.ndarray:
        return np.array(tensor.detach().numpy(), copy=True)

    # -- values -----------------------------------------------------------------------

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        import paddle

        return self._array(paddle.logsumexp(self._tensor(logits), axis=-1))

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        import paddle.nn.functional as F

        return self._array(F.softmax(self._tensor(logits), axis=-1))

    def log_softmax(self, logits: np.ndarray) -> np.ndarray:
        import paddle.nn.functional as F

        return self._array(F.log_softmax(self._tensor(logits), axis=-1))

    def _cross_entropy(
        self,
        logits: Any,
        target: np.ndarray,
        weight: np.ndarray | None,
        ignore_index: int | None,
        label_smoothing: float,
        reduction: str,
    ) -> Any:
        import paddle.nn.functional as F

        options: dict[str, Any] = {
            "reduction": reduction,
            "label_smoothing": float(label_smoothing),
            "soft_label": target.ndim == 2,
        }
        if weight is not None:
            options["weight"] = self._tensor(weight)
        if ignore_index is not None:  # paddle's own default (-100) applies otherwise
            options["ignore_index"] = int(ignore_index)
        loss = F.cross_entropy(logits, self._tensor(target), **options)
        if reduction == "none":  # soft labels and label smoothing give (N, 1)
            loss = loss.reshape([target.shape[0]])
        return loss

    def cross_entropy(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        weight: np.ndarray | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray:
        loss = self._cross_entropy(
            self._tensor(logits), target, weight, ignore_index, label_smoothing, reduction
        )
        return self._array(loss)

    def cross_entropy_grad(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        weight: np.ndarray | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray:
        import paddle

        z = self._tensor(logits, grad=True)
        loss = self._cross_entropy(z, target, weight, ignore_index, label_smoothing, reduction)
        # reduction="none": a vector-Jacobian product with ones, i.e. the gradient of the sum
        seed = paddle.ones_like(loss) if loss.ndim else None
        (grad,) = paddle.grad(loss, z, grad_outputs=seed)
        return self._array(grad)

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        """Row j of each row's Jacobian: paddle's vector-Jacobian product with e_j."""
        import paddle
        import paddle.nn.functional as F

        n, k = logits.shape
        repeated = np.repeat(np.asarray(logits)[:, None, :], k, axis=1)  # (N, K, K)
        z = self._tensor(repeated, grad=True)
        cotangent = np.broadcast_to(np.eye(k, dtype=logits.dtype), (n, k, k))
        (jac,) = paddle.grad(F.softmax(z, axis=-1), z, grad_outputs=self._tensor(cotangent))
        return self._array(jac)

    # -- the unfused route: cross_entropy(use_softmax=False) ----------------------------

    def _from_probs(self, probs: Any, target: np.ndarray) -> Any:
        import paddle.nn.functional as F

        loss = F.cross_entropy(probs, self._tensor(target), soft_label=target.ndim == 2,
                               use_softmax=False, reduction="none")
        return loss.reshape([target.shape[0]])

    def cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._array(self._from_probs(self._tensor(probs), target))

    def cross_entropy_grad_wrt_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        import paddle

        p = self._tensor(probs, grad=True)
        loss = self._from_probs(p, target)
        (grad,) = paddle.grad(loss, p, grad_outputs=paddle.ones_like(loss))
        return self._array(grad)


def load() -> PaddleAdapter:
    """The ``paddle`` built-in (CPU); AdapterUnavailable when paddle is not installed."""
    return PaddleAdapter()
