"""The fast tier's public functions: :class:`Reference`, the module functions, the tiers.

:data:`TIER` and :data:`WORKS` name the working precisions, :func:`work_for` the one
adequate for a candidate's dtype; :class:`Reference` runs one evaluator
(:mod:`~xentcheck.references.fast.extended`, :mod:`~xentcheck.references.fast.plain` or
gold) over a batch; :func:`softmax`, :func:`log_softmax`, :func:`logsumexp`,
:func:`cross_entropy` and :func:`cross_entropy_grad` are thin wrappers around it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xentcheck.references import gold
from xentcheck.references.fast.doubledouble import _LD
from xentcheck.references.fast.extended import _Extended
from xentcheck.references.fast.fallback import _from_gold
from xentcheck.references.fast.inputs import _float_array, _Options
from xentcheck.references.fast.plain import _Plain

#: Which implementation ``work=None`` runs on this platform: ``"longdouble"`` where NumPy's
#: longdouble has at least a 64-bit significand (``nmant >= 63``: x87 extended), ``"gold"``
#: elsewhere. 64 bits are 11 more than float64's 53: one final rounding costs 2.4e-4
#: float64 ulp.
TIER: str = "longdouble" if np.finfo(_LD).nmant >= 63 else "gold"

#: The working precisions a caller may ask for (``"gold"`` is what ``"longdouble"`` falls
#: back to where :data:`TIER` is ``"gold"``).
WORKS: tuple[str, ...] = ("longdouble", "float64")


def _resolve_work(work: str | None) -> str:
    if work is None:
        return TIER
    if work not in WORKS:
        raise ValueError(f"work must be one of {WORKS} or None, got {work!r}")
    return "gold" if work == "longdouble" and TIER == "gold" else work


_NARROW = ("float32", "float16", "bfloat16")


def work_for(dtype: Any) -> str:
    """The working precision adequate to grade a candidate computing in ``dtype``.

    ``"longdouble"`` (``"gold"`` where :data:`TIER` is ``"gold"``) for float64 and
    longdouble, ``"float64"`` for float32, float16 and bfloat16 (whose ulps are 2**29 and
    more float64 ulps: a few float64 roundings are invisible there). ``dtype`` may be a
    NumPy dtype, a scalar type or a name.

    >>> work_for("bfloat16"), work_for(np.dtype("float16"))
    ('float64', 'float64')
    """
    name = dtype if isinstance(dtype, str) else getattr(np.dtype(dtype), "name", str(dtype))
    if name in _NARROW:
        return "float64"
    if name in ("float64", "double", "longdouble", "float128", "float96"):
        return TIER
    raise ValueError(f"dtype must be one of float64, longdouble, {', '.join(_NARROW)}; "
                     f"got {dtype!r}")


class Reference:
    """The reference values of one batch of logits, computed once and shared.

    ``logits`` is (N, K) or (K,) in any real float dtype (float64, float32, float16,
    ``ml_dtypes.bfloat16``, longdouble) or integers. The row sums (the softmax's
    denominator) are taken once, on first use, and every method builds its output from
    them, so a caller needing several outputs of one input pays the exponentials once.
    The logits are not copied: do not change them while the object is in use.

    ``work`` is the working precision (module docstring): ``"longdouble"`` (outputs are
    longdouble arrays within 1e-3 float64 ulp of gold), ``"float64"`` (float64 outputs, a
    few float64 ulps) or None for :data:`TIER`. :attr:`work` says which one runs (``"gold"``
    where longdouble is not extended).

    >>> import numpy as np
    >>> ref = Reference(np.array([[0.0, np.log(3.0)]]), work="float64")
    >>> ref.work, [round(float(v), 12) for v in ref.softmax()[0]]
    ('float64', [0.25, 0.75])
    >>> float(ref.cross_entropy(np.array([1]), reduction="mean"))  # -log 0.75
    0.2876820724517809
    """

    def __init__(self, logits: Any, *, work: str | None = None) -> None:
        #: "longdouble", "float64" or "gold"
        self.work: str = _resolve_work(work)
        a, self._single = gold.as_matrix(logits, "logits", kinds="fiuV")
        self._logits = logits
        self._impl: _Extended | _Plain | None = None
        if self.work == "longdouble":
            self._impl = _Extended(_float_array(a, "logits"))
            self._impl.keep = True
        elif self.work == "float64":
            self._impl = _Plain(_float_array(a, "logits"))
            self._impl.keep = True

    def _one(self, values: Any) -> Any:
        return values[0] if self._single else values

    def _options(self, target: Any, weight: Any, ignore_index: int | None,
                 label_smoothing: float, reduction: str) -> _Options:
        assert self._impl is not None
        n, k = self._impl.shape
        return _Options(target, n, k, self._single, weight, ignore_index, label_smoothing,
                        reduction)

    def logsumexp(self) -> Any:
        """log sum_k exp(z_k) per row (a scalar for one row), as m + log1p(s)."""
        if self._impl is None:
            return _from_gold(gold.logsumexp(self._logits))
        return self._one(self._impl.logsumexp())

    def softmax(self) -> np.ndarray:
        """exp(z_i) / sum_k exp(z_k) per row (NaN for all -inf rows)."""
        if self._impl is None:
            return _from_gold(gold.softmax(self._logits))
        return self._one(self._impl.softmax())

    def log_softmax(self) -> np.ndarray:
        """z_i - logsumexp(z) per row, as d_i - log1p(s): no cancellation."""
        if self._impl is None:
            return _from_gold(gold.log_softmax(self._logits))
        return self._one(self._impl.log_softmax())

    def cross_entropy(self, target: Any, *, weight: Any = None,
                      ignore_index: int | None = None, label_smoothing: float = 0.0,
                      reduction: str = "none") -> Any:
        """-sum_c u_c log softmax(z)_c per row (0 log 0 = 0), reduced as gold does.

        ``target`` is class indices (N,) or probabilities (N, K); options as in
        :func:`xentcheck.references.gold.cross_entropy`."""
        if self._impl is None:
            return _from_gold(gold.cross_entropy(
                self._logits, target, weight=weight, ignore_index=ignore_index,
                label_smoothing=label_smoothing, reduction=reduction))
        o = self._options(target, weight, ignore_index, label_smoothing, reduction)
        out = self._impl.cross_entropy(o)
        return self._one(out) if reduction == "none" else out

    def cross_entropy_grad(self, target: Any, *, weight: Any = None,
                           ignore_index: int | None = None, label_smoothing: float = 0.0,
                           reduction: str = "none") -> np.ndarray:
        """The fused gradient (sum u) p - u per row, of the reduced loss."""
        if self._impl is None:
            return _from_gold(gold.cross_entropy_grad(
                self._logits, target, weight=weight, ignore_index=ignore_index,
                label_smoothing=label_smoothing, reduction=reduction))
        o = self._options(target, weight, ignore_index, label_smoothing, reduction)
        return self._one(self._impl.cross_entropy_grad(o))

    def undefined_rows(self) -> np.ndarray:
        """Which rows gold leaves ``UNDEFINED`` (all -inf, no NaN): NaN here."""
        return undefined_rows(self._logits)


def _single_use(logits: Any, work: str | None) -> Reference:
    """A Reference for one output that does not use exp(d) itself: not kept."""
    ref = Reference(logits, work=work)
    if ref._impl is not None:
        ref._impl.keep = False
    return ref


def undefined_rows(logits: Any) -> np.ndarray:
    """Which rows gold leaves ``UNDEFINED`` (all -inf, no NaN); this tier answers NaN there.

    >>> import numpy as np
    >>> undefined_rows(np.array([[-np.inf, -np.inf], [0.0, -np.inf]])).tolist()
    [True, False]
    """
    a, single = gold.as_matrix(logits, "logits", kinds="fiuV")
    z = _float_array(a, "logits")
    out = (z == -np.inf).all(axis=1)
    return out[0] if single else out


def logsumexp(logits: Any, *, work: str | None = None) -> Any:
    """log sum_k exp(z_k) per row, as m + log1p(s) (accurate relative to |m| + log1p(s)).

    >>> import numpy as np
    >>> [float(v) for v in logsumexp(np.array([[0.0, 0.0], [1e308, 1e308]]))]
    [0.6931471805599453, 1e+308]
    """
    return _single_use(logits, work).logsumexp()


def softmax(logits: Any, *, work: str | None = None) -> np.ndarray:
    """exp(z_i) / sum_k exp(z_k) per row (NaN for all -inf rows).

    >>> import numpy as np
    >>> [float(v) for v in softmax(np.array([0.0, 0.0, -np.inf]))]
    [0.5, 0.5, 0.0]
    """
    return Reference(logits, work=work).softmax()


def log_softmax(logits: Any, *, work: str | None = None) -> np.ndarray:
    """z_i - logsumexp(z) per row, as (d_i - log1p(s)): no cancellation.

    >>> import numpy as np
    >>> [float(v) for v in log_softmax(np.array([np.inf, 0.0, np.inf]))]
    [-0.6931471805599453, -inf, -0.6931471805599453]
    """
    return _single_use(logits, work).log_softmax()


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    work: str | None = None,
) -> Any:
    """-sum_c u_c log softmax(z)_c per row (0 log 0 = 0), then reduced as gold does.

    >>> import numpy as np
    >>> float(cross_entropy(np.array([[0.0, -np.inf]]), np.array([[1.0, 0.0]]))[0])
    0.0
    >>> float(cross_entropy(np.array([[0.0, -np.inf]]), np.array([1]))[0])
    inf
    """
    return _single_use(logits, work).cross_entropy(
        target, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
        reduction=reduction)


def cross_entropy_grad(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    work: str | None = None,
) -> np.ndarray:
    """(sum u) p_j - u_j = p_j sum_{i != j} u_i - u_j (1 - p_j) per row, of the reduced loss.

    >>> import numpy as np
    >>> g = cross_entropy_grad(np.array([[0.0, 0.0]]), np.array([[2.0, 0.0]]))
    >>> [float(v) for v in g[0]]
    [-1.0, 1.0]
    """
    return Reference(logits, work=work).cross_entropy_grad(
        target, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
        reduction=reduction)
