"""Built-in adapter ``onnxruntime``: single-node ONNX graphs run by ONNX Runtime on CPU.

Each function is one ONNX operator in a graph of its own, built with ``onnx.helper`` and
run by ``onnxruntime.InferenceSession`` on the ``CPUExecutionProvider``:

- ``softmax`` and ``log_softmax``: ``Softmax`` and ``LogSoftmax`` with ``axis=-1``;
- ``logsumexp``: ``ReduceLogSumExp`` over the last axis (the ``axes`` input, ``keepdims=0``);
- ``cross_entropy``: ``SoftmaxCrossEntropyLoss`` with class-index labels, its optional
  ``weights`` input, its ``ignore_index`` attribute (left out when the harness gives none,
  which is ONNX's "no class is ignored") and its ``reduction`` attribute
  (``none``/``sum``/``mean``).

ONNX has no label smoothing and ``SoftmaxCrossEntropyLoss`` takes class indices only, so
``cross_entropy`` has no ``label_smoothing`` option and raises ``NotImplementedError``
("not provided") for probability targets. ONNX Runtime is an inference engine: no
gradients, Jacobians, JVPs or Hessian-vector products are provided.

The graphs use the default ONNX domain at opset :data:`OPSET` (18: the first with the
``axes`` input of ``ReduceLogSumExp``; ``Softmax``/``LogSoftmax`` are their opset-13
definitions, ``SoftmaxCrossEntropyLoss`` its opset-13 one). Declared dtypes are those ONNX
Runtime's CPU provider runs: float64, float32 and float16 (bfloat16 fails at session
creation: no CPU kernel for the ``ReduceMax`` that the operators' function bodies expand
to). Where ONNX Runtime has no kernel of its own it runs the operator's ONNX function body
(measured on the optimised graphs of 1.32): ``SoftmaxCrossEntropyLoss`` in every dtype
(its kernel is in the training build only: ``LogSoftmax`` then ``GatherElements``), and in
float16 all four (``Softmax``/``LogSoftmax`` cast to float32 and back; ``ReduceLogSumExp``
casts to float64 and takes ``Exp`` without a shift, as its ONNX body is written). What that
computes is graded as it is.

Glue, all of it: one graph per (operator, dtype, options), its session built once and
cached on the adapter (sessions are not pickled; a copy of the adapter rebuilds them);
sessions use ONNX Runtime's default graph optimisations and one intra-op thread (the
harness runs several workers side by side; softmax and the reductions are row-parallel in
ONNX Runtime, so the thread count does not change a row's arithmetic); arrays go in and
come out as NumPy arrays of the case's dtype, unchanged. onnx and onnxruntime are imported
only by :func:`load` and the methods, never when the harness is imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import AdapterUnavailable

DTYPES: tuple[str, ...] = ("float64", "float32", "float16")

#: The default-domain opset of every graph (ONNX Runtime 1.14 and later run it).
OPSET = 18

REDUCTIONS: tuple[str, ...] = ("none", "sum", "mean")


def _import_onnxruntime() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - exercised only where it is absent
        raise AdapterUnavailable(f"onnxruntime is not installed ({exc})") from exc
    return onnx, onnxruntime


def _tensor_type(dtype: np.dtype) -> int:
    """The ONNX element type of a NumPy dtype among :data:`DTYPES`."""
    from onnx import TensorProto

    types = {"float64": TensorProto.DOUBLE, "float32": TensorProto.FLOAT,
             "float16": TensorProto.FLOAT16}
    if dtype.name not in types:
        raise TypeError(f"onnxruntime adapter: dtype {dtype.name} is not supported")
    return types[dtype.name]


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid reduction ('none', 'sum', 'mean')")
    return reduction


class OnnxRuntimeAdapter:
    """ONNX Runtime's CPU provider; its session cache is left out of a pickle."""

    name = "onnxruntime"
    dtypes = DTYPES
    #: ONNX documents SoftmaxCrossEntropyLoss's weight, ignore_index and reductions as
    #: PyTorch does (it lacks label smoothing and probability targets: absent, not other).
    dialect = "pytorch"

    def __init__(self) -> None:
        _, onnxruntime = _import_onnxruntime()
        self.version = onnxruntime.__version__
        self._sessions: dict[tuple[Any, ...], Any] = {}

    def __repr__(self) -> str:
        return "OnnxRuntimeAdapter()"

    def __getstate__(self) -> dict[str, Any]:
        return {"version": self.version}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.version = state["version"]
        self._sessions = {}

    # -- graphs and sessions --------------------------------------------------------------

    def _session(self, op: str, dtype: np.dtype, **attributes: Any) -> Any:
        """The cached session of the one-node graph ``op`` in ``dtype`` (built on first use).

        Inputs: ``x`` (N, K), for the loss ``labels`` (N,) int64 and, when
        ``attributes["weighted"]``, ``weights`` (K,); output ``y``.
        """
        key = (op, dtype.name, tuple(sorted(attributes.items())))
        session = self._sessions.get(key)
        if session is not None:
            return session
        _, onnxruntime = _import_onnxruntime()
        from onnx import TensorProto, helper

        element = _tensor_type(dtype)
        inputs = [helper.make_tensor_value_info("x", element, ["N", "K"])]
        initializers = []
        attributes = dict(attributes)
        if op == "ReduceLogSumExp":
            node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)
            initializers.append(helper.make_tensor("axes", TensorProto.INT64, [1], [-1]))
            output = helper.make_tensor_value_info("y", element, ["N"])
        elif op == "SoftmaxCrossEntropyLoss":
            names = ["x", "labels"]
            inputs.append(helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"]))
            if attributes.pop("weighted"):
                names.append("weights")
                inputs.append(helper.make_tensor_value_info("weights", element, ["K"]))
            if attributes.get("ignore_index") is None:
                attributes.pop("ignore_index", None)  # absent: no class is ignored
            node = helper.make_node(op, names, ["y"], **attributes)
            output = helper.make_tensor_value_info("y", element, None)
        else:
            node = helper.make_node(op, ["x"], ["y"], axis=-1)
            output = helper.make_tensor_value_info("y", element, ["N", "K"])
        graph = helper.make_graph([node], op.lower(), inputs, [output], initializers)
        opsets = [helper.make_opsetid("", OPSET)]
        model = helper.make_model(graph, opset_imports=opsets,
                                  ir_version=helper.find_min_ir_version_for(opsets))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # fatal only: errors come back as exceptions
        session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        self._sessions[key] = session
        return session

    def _run(self, op: str, feeds: dict[str, np.ndarray], **attributes: Any) -> np.ndarray:
        logits = feeds["x"]
        session = self._session(op, logits.dtype, **attributes)
        (out,) = session.run(["y"], {k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return np.array(out, copy=True)

    # -- values ---------------------------------------------------------------------------

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        return self._run("ReduceLogSumExp", {"x": logits})

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        return self._run("Softmax", {"x": logits})

    def log_softmax(self, logits: np.ndarray) -> np.ndarray:
        return self._run("LogSoftmax", {"x": logits})

    def cross_entropy(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        weight: np.ndarray | None = None,
        ignore_index: int | None = None,
        reduction: str = "none",
    ) -> np.ndarray:
        """``SoftmaxCrossEntropyLoss``; class indices only (probability targets: not
        provided, ONNX has no such form)."""
        target = np.asarray(target)
        if target.ndim != 1:
            raise NotImplementedError(
                "ONNX SoftmaxCrossEntropyLoss takes class indices only")
        feeds = {"x": logits, "labels": target.astype(np.int64, copy=False)}
        if weight is not None:
            feeds["weights"] = np.asarray(weight, dtype=logits.dtype)
        return self._run(
            "SoftmaxCrossEntropyLoss", feeds, weighted=weight is not None,
            ignore_index=None if ignore_index is None else int(ignore_index),
            reduction=_check_reduction(reduction))


def load() -> OnnxRuntimeAdapter:
    """The ``onnxruntime`` built-in; AdapterUnavailable when onnx or onnxruntime is absent."""
    return OnnxRuntimeAdapter()
