"""The adapter contract of DESIGN.md §3: what an adapter may provide and what a call returns.

An adapter is any object (a module, an instance) exposing a subset of ``FUNCTIONS``;
there is no base class and no registration. Arrays cross the boundary as NumPy arrays of
the case's dtype (bfloat16 through ``ml_dtypes``); class-index targets are int64 ``(N,)``,
probability targets ``(N, K)`` of the case dtype. The options of ``OPTIONS`` are passed to
``cross_entropy``/``cross_entropy_grad`` only when the function's signature accepts them
(or ``**kwargs``); a missing option means its default in ``OPTION_DEFAULTS``.
``cross_entropy_grad`` returns the gradient of the reduced loss (of the sum for
``reduction="none"``). Forward mode and second order (optional like everything else):
``softmax_jvp(logits, tangent)`` and ``log_softmax_jvp(logits, tangent)`` are the
Jacobian-vector products (N, K); ``cross_entropy_jvp(logits, target, tangent, **options)``
the directional derivative of the loss, shaped like the loss; ``cross_entropy_hvp(logits,
target, vector, **options)`` the Hessian of the reduced loss (of the sum for "none") times
``vector`` (N, K). Optional attributes: ``name``, ``dtypes``, ``version``.

Built-in adapter modules expose ``load() -> object`` and raise :class:`AdapterUnavailable`
when what they wrap is not installed.

This module also defines what one call of an adapter function comes back as
(:class:`CallOutcome`, :class:`Fault`) and the checks of the boundary that every call
gets, in-process or in a worker (:func:`invoke`).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

FUNCTIONS: tuple[str, ...] = (
    "logsumexp",
    "softmax",
    "log_softmax",
    "cross_entropy",
    "cross_entropy_grad",
    "softmax_jacobian",
    "cross_entropy_from_probs",
    "cross_entropy_grad_wrt_probs",
    "softmax_jvp",
    "log_softmax_jvp",
    "cross_entropy_jvp",
    "cross_entropy_hvp",
)

#: Keyword options an adapter's ``cross_entropy``/``cross_entropy_grad`` may accept;
#: which ones it accepts is read from its signature.
OPTIONS: tuple[str, ...] = ("label_smoothing", "weight", "ignore_index", "reduction")

#: The functions that take options; every other function is called with arrays only.
FUNCTIONS_WITH_OPTIONS: tuple[str, ...] = (
    "cross_entropy", "cross_entropy_grad", "cross_entropy_jvp", "cross_entropy_hvp")

#: What a missing option means. An option at its default is dropped when the function does
#: not accept it; any other value makes the call "not provided".
OPTION_DEFAULTS: dict[str, Any] = {
    "label_smoothing": 0.0,
    "weight": None,
    "ignore_index": None,
    "reduction": "none",
}

REDUCTIONS: tuple[str, ...] = ("none", "sum", "mean")

#: The case dtypes, by the names ``np.dtype(...).name`` gives them.
DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")

#: Why a call gave no usable value. ``not-provided`` and ``unavailable`` are not failures
#: of the function: the adapter does not have it, or could not be started at all.
FAULT_KINDS: tuple[str, ...] = (
    "raised",  # the function raised: exception type and message
    "crashed",  # the worker died from a signal (SIGSEGV, SIGABRT, ...)
    "exited",  # the worker exited (os._exit, sys.exit, exit() in C): the exit code
    "timeout",  # no answer within the call's timeout; the worker was killed
    "wrong-type",  # returned something that is not a NumPy array (list, None, tensor)
    "wrong-shape",  # returned an array of the wrong shape
    "wrong-dtype",  # returned an array of another dtype than the case's (never upcast)
    "mutated-input",  # an input array differs bitwise after the call
    "not-provided",  # the adapter lacks the function or an option the call needs
    "unavailable",  # the adapter could not be loaded or its worker not (re)started
    "not-run",  # not called: the function (or adapter) is quarantined after hangs/crashes
)


class AdapterUnavailable(Exception):
    """An adapter cannot be used here; the message says why (framework missing, no compiler)."""


class AdapterSpecError(ValueError):
    """An adapter spec cannot be resolved; the one-line message says why (for the CLI)."""


@runtime_checkable
class Adapter(Protocol):
    """The full contract, for type checkers. Real adapters may provide any subset.

    ``target`` is int64 ``(N,)`` class indices or ``(N, K)`` probabilities of the logits'
    dtype. Options are keyword-only and optional; declare only those you support.
    """

    def logsumexp(self, logits: np.ndarray) -> np.ndarray: ...

    def softmax(self, logits: np.ndarray) -> np.ndarray: ...

    def log_softmax(self, logits: np.ndarray) -> np.ndarray: ...

    def cross_entropy(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        *,
        weight: np.ndarray | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray: ...

    def cross_entropy_grad(
        self,
        logits: np.ndarray,
        target: np.ndarray,
        *,
        weight: np.ndarray | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "none",
    ) -> np.ndarray: ...

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray: ...

    def cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray: ...

    def cross_entropy_grad_wrt_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray: ...

    def softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray: ...

    def log_softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray: ...

    def cross_entropy_jvp(
        self, logits: np.ndarray, target: np.ndarray, tangent: np.ndarray, **options: Any
    ) -> np.ndarray: ...

    def cross_entropy_hvp(
        self, logits: np.ndarray, target: np.ndarray, vector: np.ndarray, **options: Any
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter says about itself, or why it cannot be used.

    ``provides`` maps each provided function to the options it accepts (empty for the
    functions without options). ``unavailable`` is ``None`` for a usable adapter.
    """

    name: str
    spec: str
    provides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dtypes: tuple[str, ...] = DTYPES
    version: str | None = None
    unavailable: str | None = None
    source: str = "spec"  # "built-in", "entry point", "spec" or "object"
    #: the documented contract it is graded under (xentcheck.references.dialects)
    dialect: str = "pytorch"


@dataclass(frozen=True)
class Fault:
    """Why a call gave no usable value: one of ``FAULT_KINDS`` and a one-line reason."""

    kind: str
    reason: str
    detail: str = ""  # a traceback or the like, for reports; may be empty

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}"


@dataclass(frozen=True)
class CallOutcome:
    """One call of one adapter function.

    ``value`` is the returned array whenever one came back, even with a ``wrong-shape``,
    ``wrong-dtype`` or ``mutated-input`` fault (so what came back can still be recorded);
    ``faults`` lists every fault found, most severe first; ``seconds`` is the wall time
    of the call as the caller saw it.
    """

    function: str
    value: np.ndarray | None
    faults: tuple[Fault, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.faults

    @property
    def fault(self) -> Fault | None:
        return self.faults[0] if self.faults else None


# --------------------------------------------------------------------------- the boundary


def dtype_name(dtype: Any) -> str:
    """The name of a dtype-like (``np.float32``, ``"float32"``, ``ml_dtypes.bfloat16``)."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        return "bfloat16"
    return np.dtype(dtype).name


def case_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of a case dtype name (bfloat16 from ``ml_dtypes``)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def expected_shape(
    function: str, first: np.ndarray, options: Mapping[str, Any] | None = None
) -> tuple[int, ...]:
    """The shape ``function`` must return for logits (or probabilities) ``first`` (N, K)."""
    n, k = first.shape[0], first.shape[-1]
    if function == "logsumexp" or function == "cross_entropy_from_probs":
        return (n,)
    if function in ("cross_entropy", "cross_entropy_jvp"):
        reduction = (options or {}).get("reduction", "none")
        return (n,) if reduction == "none" else ()
    if function == "softmax_jacobian":
        return (n, k, k)
    if function in FUNCTIONS:
        return (n, k)
    raise ValueError(f"unknown adapter function {function!r}")


def one_line(text: str, limit: int = 300) -> str:
    """``text`` squeezed to one line of at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def exception_fault(exc: BaseException) -> Fault:
    """A ``raised`` fault (or ``exited`` for ``SystemExit``) describing ``exc``."""
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-12:])
    if isinstance(exc, SystemExit):
        return Fault("exited", f"sys.exit({exc.code!r}) called", detail)
    if isinstance(exc, NotImplementedError):
        # the adapter's way of saying it does not do this (e.g. a C library with the
        # class-index symbol but not the probability one): not provided, not a failure
        return Fault("not-provided", one_line(f"NotImplementedError: {exc}"), detail)
    return Fault("raised", one_line(f"{type(exc).__name__}: {exc}"), detail)


def same_bits(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether two arrays have one shape, one dtype and the same bits (compared in place,
    as 64-bit words where the size allows; no copy of either)."""
    if before.shape != after.shape or before.dtype != after.dtype:
        return False
    as_bytes = [np.ascontiguousarray(x).reshape(-1).view(np.uint8) for x in (before, after)]
    if before.nbytes % 8 == 0:  # compared as words: an eighth of the comparisons
        as_bytes = [b.view(np.uint64) for b in as_bytes]
    return bool(np.array_equal(*as_bytes))


def check_result(
    function: str,
    result: Any,
    inputs: Sequence[np.ndarray],
    options: Mapping[str, Any],
    after_call: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray | None, tuple[Fault, ...]]:
    """Check what ``function`` returned against the contract.

    ``inputs`` are the input arrays as they were before the call (positional ones, then
    option arrays; the first fixes N, K and the case dtype); ``after_call`` are the arrays
    the function was given, as they are after it. Returns the value as an array (``None``
    when it is not one) and the faults, most severe first. Nothing is converted: a value
    of another dtype is reported as ``wrong-dtype`` naming the dtype that came back.
    """
    faults: list[Fault] = []
    value: np.ndarray | None = None
    if isinstance(result, np.generic):
        value = np.asarray(result)
    elif type(result) is np.ndarray:
        value = result
    elif isinstance(result, np.ndarray):  # np.matrix, a masked array, a custom subclass
        faults.append(Fault("wrong-type", f"returned {_describe_type(result)}, an ndarray "
                                          "subclass, not a plain NumPy array"))
    else:
        faults.append(Fault("wrong-type", f"returned {_describe_type(result)}, not a NumPy array"))
    first = inputs[0]
    if value is not None:
        shape = expected_shape(function, first, options)
        if value.shape != shape:
            faults.append(Fault("wrong-shape", f"returned shape {value.shape}, expected {shape}"))
        if value.dtype != first.dtype:
            faults.append(
                Fault(
                    "wrong-dtype",
                    f"returned dtype {value.dtype.name}, expected {first.dtype.name}",
                )
            )
        if value.dtype.kind not in "fcV" or value.dtype.hasobject or value.dtype.names:
            value = None  # object, integer or structured arrays are not values to grade
    if after_call is not None:
        pairs = enumerate(zip(inputs, after_call, strict=True))
        changed = [i for i, (before, after) in pairs if not same_bits(before, after)]
        if changed:
            names = ", ".join(_input_name(function, i, len(inputs)) for i in changed)
            faults.append(Fault("mutated-input", f"modified its input in place: {names}"))
    return value, tuple(faults)


def _input_name(function: str, index: int, count: int) -> str:
    first = "logits" if "probs" not in function else "probs"
    if function in ("softmax_jvp", "log_softmax_jvp"):
        positional: tuple[str, ...] = (first, "tangent")
    elif function == "cross_entropy_jvp":
        positional = (first, "target", "tangent")
    elif function == "cross_entropy_hvp":
        positional = (first, "target", "vector")
    else:
        positional = (first, "target")
    return positional[index] if index < len(positional) else "weight"


def _describe_type(result: Any) -> str:
    kind = type(result)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    if result is None:
        return "None"
    if isinstance(result, (list, tuple)):
        return f"a {name} of length {len(result)}"
    return f"a {name}"


def call_options(
    function: str, accepted: Sequence[str], options: Mapping[str, Any]
) -> tuple[dict[str, Any], Fault | None]:
    """The keyword arguments to pass, or a ``not-provided`` fault for an unsupported option.

    Options equal to their default (``None``, ``0.0``, ``"none"``) are passed only when
    accepted; ``None`` is never passed.
    """
    unknown = [name for name in options if name not in OPTIONS]
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; the options are {list(OPTIONS)}")
    kwargs: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if function in FUNCTIONS_WITH_OPTIONS and name in accepted:
            kwargs[name] = value
        elif not _is_default(name, value):
            return {}, Fault("not-provided", f"{function} does not accept option {name!r}")
    return kwargs, None


def _is_default(name: str, value: Any) -> bool:
    default = OPTION_DEFAULTS[name]
    if default is None:
        return value is None
    return isinstance(value, (str, float, int)) and value == default


def invoke(
    adapter: Any, function: str, arrays: Sequence[np.ndarray], kwargs: Mapping[str, Any]
) -> tuple[np.ndarray | None, tuple[Fault, ...]]:
    """Call ``adapter.function(*arrays, **kwargs)`` and check the result (no isolation).

    The adapter gets copies of every input array (option arrays included), and the copies
    are compared bitwise with the originals afterwards, so a misbehaving adapter cannot
    change the caller's arrays. Exceptions (``SystemExit`` included) become faults.
    """
    given = [np.array(a, copy=True) for a in arrays]
    given_kwargs = {
        k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()
    }
    originals = [*arrays, *(v for v in kwargs.values() if isinstance(v, np.ndarray))]
    received = [*given, *(v for v in given_kwargs.values() if isinstance(v, np.ndarray))]
    try:
        result = getattr(adapter, function)(*given, **given_kwargs)
    except (Exception, SystemExit) as exc:
        return None, (exception_fault(exc),)
    return check_result(function, result, originals, kwargs, received)
