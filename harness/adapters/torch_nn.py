"""Built-in adapters ``torch`` (CPU) and ``torch-cuda``: PyTorch's functions as they are.

softmax, log_softmax and logsumexp are ``torch``'s own; ``cross_entropy`` is
``torch.nn.functional.cross_entropy`` with every option; gradients come from autograd,
Jacobians from ``torch.func.vmap(torch.func.jacrev(...))``, forward-mode JVPs from
``torch.func.jvp`` and Hessian-vector products from ``jvp(grad(loss))``. The
from-probabilities route is written the way a PyTorch user writes it:
``-xlogy(y, p).sum(-1)`` for probability targets (``torch.xlogy`` gives 0·log 0 = 0) and
``-log(p.gather(t))`` for class indices.

Nothing is fixed up: what PyTorch computes is what the harness grades. NumPy arrays are
converted exactly (bfloat16 crosses as its 16-bit pattern) and results come back in the
dtype PyTorch produced. torch is imported only by :func:`load`/:func:`load_cuda` and the
methods, never when the harness is imported.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import AdapterUnavailable


def _bfloat16() -> np.dtype:
    """ml_dtypes' bfloat16, imported on first need (most of a second of CPU)."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only where torch is absent
        raise AdapterUnavailable(f"PyTorch is not installed ({exc})") from exc
    return torch


class TorchAdapter:
    """PyTorch on one device; holds only the device name, so it pickles."""

    dtypes = DTYPES

    def __init__(self, device: str = "cpu") -> None:
        torch = _import_torch()
        self.device = device
        self.name = "torch" if device == "cpu" else f"torch-{device}"
        self.version = torch.__version__

    def __repr__(self) -> str:
        return f"TorchAdapter(device={self.device!r})"

    # -- conversions ------------------------------------------------------------------

    def _tensor(self, array: np.ndarray) -> Any:
        """A torch tensor of ``array``'s values on this device. On the CPU it shares the
        memory of a writable C-contiguous native array (the harness gives an adapter its
        own copy of each input and compares it afterwards: a framework writing to its
        input is reported as ``mutated-input``), else that of a copy."""
        import torch

        shareable = (array.flags.c_contiguous and array.flags.writeable
                     and array.dtype.isnative)
        owned = array if shareable else np.array(array, copy=True, order="C")
        if owned.dtype.kind == "V" and owned.dtype == _bfloat16():
            tensor = torch.from_numpy(owned.view(np.int16)).view(torch.bfloat16)
        elif owned.dtype.kind in "iu":
            tensor = torch.from_numpy(owned.astype(np.int64, copy=False))
        else:
            tensor = torch.from_numpy(owned)
        return tensor if self.device == "cpu" else tensor.to(self.device)

    @staticmethod
    def _array(tensor: Any) -> np.ndarray:
        """The tensor as a NumPy array of the same dtype (bfloat16 through ml_dtypes)."""
        import torch

        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.contiguous().view(torch.int16).numpy().view(_bfloat16())
        return tensor.numpy()

    # -- values -----------------------------------------------------------------------

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._array(torch.logsumexp(self._tensor(logits), dim=-1))

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._array(torch.softmax(self._tensor(logits), dim=-1))

    def log_softmax(self, logits: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._array(torch.log_softmax(self._tensor(logits), dim=-1))

    def _cross_entropy(
        self,
        logits: Any,
        target: np.ndarray,
        weight: np.ndarray | None,
        ignore_index: int | None,
        label_smoothing: float,
        reduction: str,
    ) -> Any:
        import torch.nn.functional as F

        options: dict[str, Any] = {
            "reduction": reduction,
            "label_smoothing": float(label_smoothing),
        }
        if weight is not None:
            options["weight"] = self._tensor(weight)
        if ignore_index is not None:  # torch's own default (-100) applies otherwise
            options["ignore_index"] = int(ignore_index)
        return F.cross_entropy(logits, self._tensor(target), **options)

    def cross_entropy(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        weight: np.ndarray | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray:
        import torch

        with torch.no_grad():
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
        import torch

        z = self._tensor(logits).requires_grad_(True)
        loss = self._cross_entropy(z, target, weight, ignore_index, label_smoothing, reduction)
        # reduction="none": a vector-Jacobian product with ones, i.e. the gradient of the sum
        seed = torch.ones_like(loss) if loss.ndim else None
        (grad,) = torch.autograd.grad(loss, z, grad_outputs=seed)
        return self._array(grad)

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        import torch
        from torch.func import jacrev, vmap

        def row_softmax(row: Any) -> Any:
            return torch.softmax(row, dim=-1)

        return self._array(vmap(jacrev(row_softmax))(self._tensor(logits)))

    # -- forward mode and second order (torch.func) --------------------------------------

    def softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        import torch
        from torch.func import jvp

        _, out = jvp(lambda z: torch.softmax(z, dim=-1), (self._tensor(logits),),
                     (self._tensor(tangent),))
        return self._array(out)

    def log_softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        import torch
        from torch.func import jvp

        _, out = jvp(lambda z: torch.log_softmax(z, dim=-1), (self._tensor(logits),),
                     (self._tensor(tangent),))
        return self._array(out)

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
        from torch.func import jvp

        def loss(z: Any) -> Any:
            return self._cross_entropy(z, target, weight, ignore_index, label_smoothing,
                                       reduction)

        _, out = jvp(loss, (self._tensor(logits),), (self._tensor(tangent),))
        return self._array(out)

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
        """Forward over reverse: the JVP of the gradient (of the sum for "none")."""
        from torch.func import grad, jvp

        def loss(z: Any) -> Any:
            out = self._cross_entropy(z, target, weight, ignore_index, label_smoothing,
                                      reduction)
            return out.sum() if out.ndim else out

        _, out = jvp(grad(loss), (self._tensor(logits),), (self._tensor(vector),))
        return self._array(out)

    # -- the unfused route --------------------------------------------------------------

    def _from_probs(self, probs: Any, target: np.ndarray) -> Any:
        import torch

        y = self._tensor(target)
        if y.ndim == 1:  # class indices
            return -torch.log(probs.gather(-1, y.unsqueeze(-1))).squeeze(-1)
        return -torch.xlogy(y, probs).sum(dim=-1)

    def cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._array(self._from_probs(self._tensor(probs), target))

    def cross_entropy_grad_wrt_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        import torch

        p = self._tensor(probs).requires_grad_(True)
        loss = self._from_probs(p, target)
        (grad,) = torch.autograd.grad(loss, p, grad_outputs=torch.ones_like(loss))
        return self._array(grad)


def load() -> TorchAdapter:
    """The ``torch`` built-in (CPU); AdapterUnavailable when PyTorch is not installed."""
    return TorchAdapter("cpu")


def load_cuda() -> TorchAdapter:
    """The ``torch-cuda`` built-in; AdapterUnavailable unless a CUDA device is usable.

    On Linux a machine without the NVIDIA driver's device node is answered at once,
    without importing torch (seconds of start-up that every default run would pay)."""
    if sys.platform.startswith("linux") and not os.path.exists("/dev/nvidiactl"):
        raise AdapterUnavailable("no CUDA device: no NVIDIA driver here (no /dev/nvidiactl)")
    torch = _import_torch()
    if not torch.cuda.is_available():
        raise AdapterUnavailable(f"no CUDA device available to torch {torch.__version__}")
    return TorchAdapter("cuda")
