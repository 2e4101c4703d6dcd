"""Built-in adapter ``tinygrad``: tinygrad's ``Tensor`` methods on its CPU device, as they are.

softmax, log_softmax and logsumexp are ``Tensor.softmax``/``log_softmax``/``logsumexp``;
``cross_entropy`` is ``Tensor.sparse_categorical_crossentropy`` for class indices (with
``ignore_index``, ``label_smoothing`` and ``reduction``; tinygrad has no class weights)
and ``Tensor.cross_entropy`` for probability targets (``label_smoothing`` and
``reduction``). Gradients are ``Tensor.gradient`` (tinygrad's reverse mode; for
``reduction="none"`` with a cotangent of ones: the gradient of the sum) and the
Hessian-vector product is reverse over reverse: the gradient of <gradient, v>. The
from-probabilities route exists only for class indices, as a tinygrad user writes it:
``probs.log().nll_loss(target)``; tinygrad has no 0·log 0-safe product for probability
targets, so those calls raise NotImplementedError ("not provided").

Glue, all of it:

- every call runs under ``Context(DEV="CPU", PARALLEL=0)`` (tinygrad's own context
  manager): the constants tinygrad creates land on the CPU device, and kernels are
  compiled in this process instead of a pool of spawned processes that would outlive the
  call (the same kernels either way); nothing is set process-wide;
- NumPy arrays become tensors by copy (bfloat16 crosses as its 16-bit pattern and is
  ``bitcast``), results come back with ``Tensor.numpy()`` in the dtype tinygrad produced;
- ``ignore_index`` is passed only when the case has one. tinygrad's default, -1, means
  "ignore nothing" (a class index of -1 is then not refused: its one-hot row is all zeros);
- ``softmax_jacobian`` is one ``Tensor.gradient`` call through ``Tensor.softmax``: the row z
  is repeated K times (N, K, K) and the cotangent is the identity, so the gradient's
  [n, j] row is the vector-Jacobian product with e_j, the Jacobian's row j.

Not provided: forward-mode JVPs (tinygrad has no forward mode) and class weights.

The CPU device compiles its kernels with ``clang`` (the ``CC`` environment variable, else
``clang``; gcc does not accept the ``--target`` flag tinygrad passes): without it
:func:`load` raises AdapterUnavailable (Debian/Ubuntu: ``apt-get install clang``).
bfloat16 is offered only where that clang compiles ``__bf16`` for x86 (clang 14 does not:
"__bf16 is not supported on this target"); :func:`load` tries one bfloat16 kernel.

The dialect is ``pytorch``: tinygrad's documentation of ``sparse_categorical_crossentropy``
and ``cross_entropy`` points at PyTorch's ``CrossEntropyLoss``/``cross_entropy``.

tinygrad is imported only by :func:`load` and the methods, never when the harness is
imported.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np

from xentcheck.harness.adapters.contract import AdapterUnavailable

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
DEVICE = "CPU"


def _import_tinygrad() -> Any:
    try:
        import tinygrad
    except ImportError as exc:  # pragma: no cover - exercised only where tinygrad is absent
        raise AdapterUnavailable(f"tinygrad is not installed ({exc})") from exc
    return tinygrad


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("tinygrad")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkouts
        return "unknown"


def _on_device() -> Any:
    """tinygrad's context manager that makes the CPU device the default for this call and
    compiles in this process (``PARALLEL=0``: no pool of compiler processes left running)."""
    from tinygrad.helpers import Context

    return Context(DEV=DEVICE, PARALLEL=0)


class TinygradAdapter:
    """tinygrad on its CPU device; holds only the dtypes found usable, so it pickles."""

    name = "tinygrad"
    dialect = "pytorch"

    def __init__(self, dtypes: tuple[str, ...]) -> None:
        self.dtypes = dtypes
        self.version = _version()

    def __repr__(self) -> str:
        return f"TinygradAdapter(dtypes={self.dtypes!r})"

    # -- conversions ------------------------------------------------------------------

    @staticmethod
    def _tensor(array: np.ndarray) -> Any:
        """An exact tinygrad copy of ``array`` on the CPU device (int64 for indices)."""
        from tinygrad import Tensor, dtypes

        owned = np.array(array, copy=True, order="C")
        if owned.dtype == BFLOAT16:
            return Tensor(owned.view(np.uint16), device=DEVICE).bitcast(dtypes.bfloat16)
        if owned.dtype.kind in "iu":
            owned = owned.astype(np.int64, copy=False)
        return Tensor(owned, device=DEVICE)

    @staticmethod
    def _array(tensor: Any) -> np.ndarray:
        from tinygrad import dtypes

        if tensor.dtype == dtypes.bfloat16:
            return np.array(tensor.bitcast(dtypes.uint16).numpy(), copy=True).view(BFLOAT16)
        return np.array(tensor.numpy(), copy=True)

    # -- values -----------------------------------------------------------------------

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        with _on_device():
            return self._array(self._tensor(logits).logsumexp(axis=-1))

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        with _on_device():
            return self._array(self._tensor(logits).softmax(axis=-1))

    def log_softmax(self, logits: np.ndarray) -> np.ndarray:
        with _on_device():
            return self._array(self._tensor(logits).log_softmax(axis=-1))

    def _cross_entropy(
        self,
        z: Any,
        target: np.ndarray,
        ignore_index: int | None,
        label_smoothing: float,
        reduction: str,
    ) -> Any:
        y = self._tensor(target)
        if target.ndim == 2:  # probability targets
            if ignore_index is not None:
                raise ValueError("ignore_index applies to class indices only")
            return z.cross_entropy(y, reduction=reduction,
                                   label_smoothing=float(label_smoothing))
        options: dict[str, Any] = {"reduction": reduction,
                                   "label_smoothing": float(label_smoothing)}
        if ignore_index is not None:  # tinygrad's default (-1) ignores nothing
            options["ignore_index"] = int(ignore_index)
        return z.sparse_categorical_crossentropy(y, **options)

    def cross_entropy(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray:
        with _on_device():
            loss = self._cross_entropy(self._tensor(logits), target, ignore_index,
                                       label_smoothing, reduction)
            return self._array(loss)

    def cross_entropy_grad(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray:
        with _on_device():
            z = self._tensor(logits)
            loss = self._cross_entropy(z, target, ignore_index, label_smoothing, reduction)
            return self._array(self._gradient(loss, z))

    @staticmethod
    def _gradient(loss: Any, z: Any) -> Any:
        """d loss / d z; for a vector loss the vector-Jacobian product with ones."""
        from tinygrad import Tensor

        seed = Tensor.ones(*loss.shape, dtype=loss.dtype, device=DEVICE) if loss.ndim else None
        (grad,) = loss.gradient(z, gradient=seed)
        return grad

    def cross_entropy_hvp(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        vector: np.ndarray,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray:
        """Reverse over reverse: the gradient of <gradient of the reduced loss, vector>."""
        with _on_device():
            z = self._tensor(logits)
            loss = self._cross_entropy(z, target, ignore_index, label_smoothing, reduction)
            grad = self._gradient(loss, z)
            (hvp,) = (grad * self._tensor(vector)).sum().gradient(z)
            return self._array(hvp)

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        """Row j of each row's Jacobian: tinygrad's vector-Jacobian product with e_j."""
        n, k = logits.shape
        repeated = np.repeat(np.asarray(logits)[:, None, :], k, axis=1)  # (N, K, K)
        cotangent = np.broadcast_to(np.eye(k, dtype=logits.dtype), (n, k, k))
        with _on_device():
            z = self._tensor(repeated)
            (jac,) = z.softmax(axis=-1).gradient(z, gradient=self._tensor(cotangent))
            return self._array(jac)

    # -- the unfused route (class indices only) -------------------------------------------

    def _from_probs(self, probs: Any, target: np.ndarray) -> Any:
        if target.ndim != 1:
            raise NotImplementedError(
                "tinygrad has no cross-entropy of probabilities with probability targets")
        return probs.log().nll_loss(self._tensor(target), reduction="none")

    def cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        with _on_device():
            return self._array(self._from_probs(self._tensor(probs), target))

    def cross_entropy_grad_wrt_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        with _on_device():
            p = self._tensor(probs)
            return self._array(self._gradient(self._from_probs(p, target), p))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null: a failed probe's compiler errors are not printed."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _usable_dtypes() -> tuple[str, ...]:
    """The dtypes whose kernels the CPU device compiles here (float64 and float32 must)."""
    found: list[str] = []
    for name in ("float64", "float32", "float16", "bfloat16"):
        try:
            with _on_device(), _quiet_stderr():
                probe = np.zeros((1, 2), dtype=BFLOAT16 if name == "bfloat16" else name)
                TinygradAdapter._array(TinygradAdapter._tensor(probe).softmax(axis=-1))
        except Exception as exc:
            if name in ("float64", "float32"):
                reason = (str(exc).strip().splitlines() or [""])[-1][:200]
                raise AdapterUnavailable(
                    f"tinygrad's CPU device is not usable here ({type(exc).__name__}: "
                    f"{reason}); it compiles kernels with clang (apt-get install clang)"
                ) from exc
            continue  # a half-precision dtype this compiler cannot build
        found.append(name)
    return tuple(found)


def load() -> TinygradAdapter:
    """The ``tinygrad`` built-in (CPU device); AdapterUnavailable when tinygrad is not
    installed or its CPU device cannot compile (no clang)."""
    _import_tinygrad()
    return TinygradAdapter(_usable_dtypes())
