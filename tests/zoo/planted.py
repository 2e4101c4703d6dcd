"""The planted-bug zoo: adapters that each carry one real failure class.

Every adapter here is :class:`~textbook.Textbook` (the correct shifted algorithm) with one
step replaced by the way real code gets it wrong; its docstring says where such code comes
from and what the harness must answer. :func:`provides` keeps only the functions a bug
lives in (plus the correct pieces a check needs, e.g. the softmax and the unfused
gradient next to a Jacobian, so the chain-rule check runs), so what fails is the bug.

``tests/zoo/test_planted_bugs.py`` says, for each one, on which regime and dtype it shows
and which check must catch it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
from textbook import Textbook, quiet

from xentcheck.harness.adapters.contract import FUNCTIONS


def provides(*functions: str) -> Callable[[type[Textbook]], type[Textbook]]:
    """Class decorator: the adapter provides only ``functions`` (the rest are ``None``,
    which the contract reads as "not provided")."""
    unknown = set(functions) - set(FUNCTIONS)
    if unknown:
        raise ValueError(f"unknown functions {sorted(unknown)}")

    def decorate(cls: type[Textbook]) -> type[Textbook]:
        for function in FUNCTIONS:
            if function not in functions:
                setattr(cls, function, None)
        return cls

    return decorate


_CE = ("cross_entropy", "cross_entropy_grad")

# ---------------------------------------------------------------------- overflow and shift


@provides("softmax", "logsumexp")
class UnshiftedExp(Textbook):
    """softmax = exp(z) / sum exp(z) and logsumexp = log sum exp(z), without the shift by
    max z: the formulas as written. exp overflows to inf for z > log(max) (709.78 in
    float64), giving inf/inf = NaN; rows far below zero underflow to 0/0."""

    name = "unshifted-exp"

    def shift(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return z, np.zeros(z.shape[0], z.dtype)


@provides("log_softmax", "cross_entropy")
class UnshiftedLogSoftmax(Textbook):
    """log_softmax = z - log(sum exp(z)), unshifted: log(inf) = inf at large logits, so
    every entry becomes -inf (or NaN), and the cross-entropy built on it with it."""

    name = "log-softmax-unshifted"

    def log_softmax_work(self, z: np.ndarray) -> np.ndarray:
        with quiet():
            return z - np.log(np.exp(z).sum(axis=1))[:, None]


@provides("log_softmax", "cross_entropy")
class LogOfSoftmax(Textbook):
    """log_softmax = log(softmax(z)): the composition of two correct functions. Where p
    underflows to 0 the exact log p (e.g. -800) becomes -inf, and a loss on such a class
    +inf; where p is subnormal it has lost its digits before the log."""

    name = "log-of-softmax"

    def log_softmax_work(self, z: np.ndarray) -> np.ndarray:
        with quiet():
            return np.log(self.softmax_work(z))


@provides("log_softmax", "cross_entropy")
class NormaliserAddedFirst(Textbook):
    """log_softmax = z - (m + log s) = z - logsumexp(z): the normaliser is added to the
    huge m before it is subtracted, so the result carries an error of u |m|; at |z| ~ 1e6
    that is ~1e6 ulps of a log-probability of order 1 (the stable form is (z - m) - log s).
    """

    name = "normaliser-added-first"

    def log_softmax_work(self, z: np.ndarray) -> np.ndarray:
        with quiet():
            return z - self.logsumexp_work(z)[:, None]


@provides("softmax")
class GlobalMaxShift(Textbook):
    """The shift is the maximum of the whole batch instead of each row's: harmless while
    every row lives at one scale, but a row far below the batch maximum has every exp
    underflow to 0 and gives 0/0 = NaN. The row alone is fine: the output depends on the
    other rows of the batch."""

    name = "global-max-shift"

    def shift(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with quiet():
            m = np.full(z.shape[0], np.max(z) if z.size else 0, z.dtype)
            return z - m[:, None], m


# ---------------------------------------------------------------------- precision


@provides("logsumexp", "softmax", "log_softmax", "cross_entropy")
class Float32Accumulation(Textbook):
    """float64 inputs computed in float32 (a kernel with a float32 accumulator, or a
    framework's default dtype): ~1e-8 relative error where 1e-16 is due."""

    name = "float32-accumulation"

    def working_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.float32)


@provides("logsumexp", "softmax")
class Float16Accumulation(Textbook):
    """A half-precision kernel that accumulates the row sum in float16, term by term (no
    float32 accumulator). Once the running sum is large, small terms are rounded away:
    with K >= 64 classes the sum, and everything divided by it, is off by many ulps
    (PyTorch and JAX accumulate in float32)."""

    name = "float16-accumulation"

    def working_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(dtype)

    def exp_sum(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with quiet():
            e = np.exp(d)
            if d.shape[1] == 0:
                return e, e.sum(axis=1)
            # a running sum in the dtype itself: cumsum stores every partial sum in it
            return e, np.cumsum(e, axis=1, dtype=d.dtype)[:, -1]


@provides("softmax", "cross_entropy_grad")
class FlushSubnormals(Textbook):
    """Subnormal results flushed to zero (FTZ/DAZ: -ffast-math, or a GPU's FTZ mode for
    half precision). A probability or gradient entry of 1e-6 in float16 (subnormal below
    6.1e-5) comes back as 0: all of its digits are lost."""

    name = "flush-subnormals"

    def finish(self, value: Any, dtype: np.dtype) -> np.ndarray:
        out = super().finish(value, dtype)
        tiny = float(ml_dtypes.finfo(out.dtype).tiny)  # the smallest normal number
        with quiet():
            flushed = np.abs(out.astype(np.float64)) < tiny
        out = np.array(out, copy=True)
        out[flushed] = 0
        return out


@provides(*_CE)
class DroppedTinyGradient(Textbook):
    """Gradient entries below 2**-53 times the row's largest are set to 0 ("they cannot
    change anything"; sparse-gradient thresholding). But each entry is its own output,
    owed to full relative accuracy: p_j = 1e-20 replaced by 0 is a relative error of 1.
    """

    name = "dropped-tiny-gradient"

    def row_gradients(self, p: np.ndarray, u: np.ndarray) -> np.ndarray:
        grad = super().row_gradients(p, u)
        with quiet():
            largest = np.max(np.abs(grad), axis=1, keepdims=True, initial=0)
            grad[np.abs(grad) < 2.0**-53 * largest] = 0
        return grad


# ---------------------------------------------------------------------- the gradient


@provides(*_CE)
class PMinusY(Textbook):
    """The fused gradient as p - y for every target. It is (sum y) p - y: p - y is right
    only when the effective target sums to 1, and wrong for unnormalized or all-zero
    targets, weights and smoothing."""

    name = "p-minus-y"

    def row_gradients(self, p: np.ndarray, u: np.ndarray) -> np.ndarray:
        with quiet():
            return p - u


@provides(*_CE)
class NanGradientAtMasked(Textbook):
    """The gradient formed through the unfused route's product, p_j (S - u_j / p_j): equal
    to S p_j - u_j wherever p_j > 0, but at a -inf (masked) logit p_j = 0 and the
    gradient is 0 * (S - 0/0) = NaN, where 0 (or -u_j) is right."""

    name = "nan-gradient-at-masked"

    def row_gradients(self, p: np.ndarray, u: np.ndarray) -> np.ndarray:
        with quiet():
            return p * (u.sum(axis=1)[:, None] - u / p)


@provides(*_CE)
class MeanGradientForNone(Textbook):
    """For reduction="none" the gradient of the mean is returned (divided by N), as when
    the backward always assumes the default reduction. The contract: for "none" it is the
    gradient of the sum."""

    name = "mean-gradient-for-none"

    def reduce_gradient(self, grad: np.ndarray, denominator: Any, reduction: str
                        ) -> np.ndarray:
        if reduction == "none":
            with quiet():
                return grad / grad.dtype.type(max(grad.shape[0], 1))
        return super().reduce_gradient(grad, denominator, reduction)


@provides(*_CE)
class IgnoredMeanNanGradient(Textbook):
    """When every target is ignored, the mean's gradient is computed as 0 / 0 = NaN; the
    value is 0/0 indeed, but the gradient of a loss that does not depend on the logits is
    0 (DESIGN.md §4)."""

    name = "ignored-mean-nan-gradient"

    def reduce_gradient(self, grad: np.ndarray, denominator: Any, reduction: str
                        ) -> np.ndarray:
        if reduction == "mean":
            with quiet():
                return grad / denominator
        return grad


@provides(*_CE)
class SumReductionNan(Textbook):
    """reduction="sum" accumulates in a way that gives NaN (an uninitialized or
    overflowing accumulator); "none" and the gradient are right. The self-consistency
    differences call the forward with "sum" and must report the NaN, not skip the check."""

    name = "sum-reduction-nan"

    def reduce_loss(self, losses: np.ndarray, denominator: Any, reduction: str) -> Any:
        if reduction == "sum":
            return losses.dtype.type(np.nan)
        return super().reduce_loss(losses, denominator, reduction)


@provides(*_CE)
class SumReductionRaises(Textbook):
    """The signature accepts ``reduction`` but "sum" raises (only "none" and "mean" were
    implemented): a declared option that fails is a finding of every check that uses it."""

    name = "sum-reduction-raises"

    def reduce_loss(self, losses: np.ndarray, denominator: Any, reduction: str) -> Any:
        if reduction == "sum":
            raise RuntimeError("reduction='sum' is not implemented")
        return super().reduce_loss(losses, denominator, reduction)


# ---------------------------------------------------------------------- -inf and NaN


@provides("cross_entropy")
class NanLossAtMasked(Textbook):
    """The loss as -sum(u * log_softmax) without the 0 log 0 = 0 convention: a masked
    (-inf) logit with no target mass gives 0 * -inf = NaN, and the whole row is NaN."""

    name = "nan-loss-at-masked"

    def row_losses(self, logp: np.ndarray, u: np.ndarray) -> np.ndarray:
        with quiet():
            return -(u * logp).sum(axis=1)


@provides("cross_entropy_from_probs", "cross_entropy_grad_wrt_probs")
class ClippedProbs(Textbook):
    """Probabilities clipped to [1e-7, 1 - 1e-7] before the log and the division (Keras'
    epsilon): a target on a probability of exactly 0 gives a loss of 16.1 instead of +inf
    and a gradient of -1e7 instead of -inf, and p = 1 gives 1e-7 instead of 0."""

    name = "clipped-probs"

    def probability_inputs(self, probs: np.ndarray, target: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
        p, y = super().probability_inputs(probs, target)
        return np.clip(p, 1e-7, 1 - 1e-7).astype(p.dtype), y


@provides("softmax")
class NanNotPropagated(Textbook):
    """Outputs passed through nan_to_num "for safety": a row with a NaN logit gives
    finite probabilities (0) instead of NaN, hiding the bad input."""

    name = "nan-not-propagated"

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        return np.nan_to_num(super().softmax(logits), nan=0.0)


# ---------------------------------------------------------------------- options


@provides(*_CE)
class WeightedMeanOverN(Textbook):
    """reduction="mean" with class weights divides by the number of rows instead of
    sum_n w_{t_n} (PyTorch's documented denominator): (w[t] * loss).sum() / N."""

    name = "weighted-mean-over-n"

    def effective_target(self, target: np.ndarray, z: np.ndarray, **options: Any
                         ) -> tuple[np.ndarray, Any, np.ndarray]:
        u, denominator, ignored = super().effective_target(target, z, **options)
        if np.asarray(target).dtype.kind in "iu":
            denominator = z.dtype.type(np.count_nonzero(~ignored))
        return u, denominator, ignored


@provides(*_CE)
class IgnoredRowsInMean(Textbook):
    """Ignored rows are zeroed in the sum but still counted in the mean: the targets are
    made safe to index with where(t == ignore_index, 0, t), and the denominator
    sum w[safe_t] then counts every ignored row as class 0."""

    name = "ignored-rows-in-mean"

    def effective_target(self, target: np.ndarray, z: np.ndarray, **options: Any
                         ) -> tuple[np.ndarray, Any, np.ndarray]:
        u, denominator, ignored = super().effective_target(target, z, **options)
        t = np.asarray(target)
        if t.dtype.kind in "iu":
            weight = options.get("weight")
            w = np.ones(z.shape[1], z.dtype) if weight is None else weight.astype(z.dtype)
            denominator = w[np.where(ignored, 0, t)].sum()
        return u, denominator, ignored


@provides(*_CE)
class SmoothingOverKMinus1(Textbook):
    """Label smoothing spread as eps / (K - 1) (the "other classes" convention of some
    papers) where the documented formula is eps / K: every smoothed loss is off."""

    name = "smoothing-over-k-minus-1"

    def smoothing(self, eps: Any, k: int, work: np.dtype) -> Any:
        with quiet():
            return eps / work.type(k - 1)


@provides(*_CE)
class LabelSmoothingIgnoredInForward(Textbook):
    """The forward accepts label_smoothing and ignores it, while the hand-written backward
    applies it: the loss is wrong, and the gradient is not the derivative of the loss
    (a forward and a backward that were written apart)."""

    name = "label-smoothing-ignored"

    def cross_entropy(self, logits: np.ndarray, target: np.ndarray, *,
                      weight: np.ndarray | None = None, ignore_index: int | None = None,
                      label_smoothing: float = 0.0, reduction: str = "none") -> np.ndarray:
        return super().cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                                     reduction=reduction)


@provides(*_CE)
class MeanOverElements(Textbook):
    """reduction="mean" as the mean of the (N, K) matrix of terms -u log p, i.e. divided
    by N K instead of N (or sum w_t): `(-y * log_softmax(z)).mean()`."""

    name = "mean-over-elements"

    def cross_entropy(self, logits: np.ndarray, target: np.ndarray, *,
                      weight: np.ndarray | None = None, ignore_index: int | None = None,
                      label_smoothing: float = 0.0, reduction: str = "none") -> np.ndarray:
        options = {"weight": weight, "ignore_index": ignore_index,
                   "label_smoothing": label_smoothing}
        if reduction != "mean":
            return super().cross_entropy(logits, target, reduction=reduction, **options)
        z = self.to_working(logits)
        u, _, ignored = self.effective_target(target, z, **options)
        logp = self.log_softmax_work(z)
        with quiet():
            terms = np.where((u == 0) & (logp == -np.inf), 0, -u * logp)
            terms[ignored] = 0
            return self.finish(terms.mean() if terms.size else np.nan, logits.dtype)


# ---------------------------------------------------------------------- invalid targets


@provides(*_CE)
class SilentOutOfRangeTarget(Textbook):
    """Class indices are not checked and wrap around (t % K, as np.take(mode="wrap") or
    Python's negative indexing do): class K is read as class 0 and -2 as K - 2, and a
    plausible finite loss comes back for an invalid target."""

    name = "silent-out-of-range-target"

    def check_target(self, target: np.ndarray, k: int, ignore_index: int | None) -> None:
        return None

    def class_targets(self, target: np.ndarray, n: int, k: int, work: np.dtype,
                      ignored: np.ndarray) -> np.ndarray:
        return super().class_targets(target % k, n, k, work, ignored)


# ---------------------------------------------------------------------- the Jacobian

_JACOBIAN = ("softmax", "softmax_jacobian", "cross_entropy_grad_wrt_probs")


@provides(*_JACOBIAN)
class JacobianEntryOff(Textbook):
    """One entry of each row's softmax Jacobian off by 1e-3 (an indexing slip in a
    hand-written backward). gradcheck's fast mode projects the Jacobian on random vectors
    and misses it; comparing every entry with gold does not."""

    name = "jacobian-entry-off"

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        jac = super().softmax_jacobian(logits).copy()
        if jac.size:
            jac[:, 0, -1] += jac.dtype.type(1e-3)
        return jac


@provides(*_JACOBIAN)
class JacobianSignError(Textbook):
    """The off-diagonal entries as +p_i p_j: the minus sign of diag(p) - p pᵀ lost on the
    off-diagonal (the diagonal p (1 - p) is right)."""

    name = "jacobian-sign-error"

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        p = self.softmax_work(self.to_working(logits))
        with quiet():
            jac = p[:, :, None] * p[:, None, :]
            k = p.shape[1]
            jac[:, np.arange(k), np.arange(k)] = p * (1 - p)
        return self.finish(jac, logits.dtype)


# ---------------------------------------------------------------------- the contract


@provides("softmax")
class MutatesInput(Textbook):
    """The shift done in place on the caller's array (logits -= max; exp(logits,
    out=logits)) to save memory: the result is right, the caller's logits are gone."""

    name = "mutates-input"

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        if logits.dtype != self.working_dtype(logits.dtype):
            return super().softmax(logits)
        with quiet():
            logits -= np.max(logits, axis=1, keepdims=True)
            np.exp(logits, out=logits)
            return logits / logits.sum(axis=1, keepdims=True)


@provides("softmax")
class Nondeterministic(Textbook):
    """The last bit of each output depends on the run (atomics in a parallel reduction
    finishing in another order): each value is within 1 ulp, but the same input does not
    give the same bits twice."""

    name = "nondeterministic"

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        out = np.array(super().softmax(logits), copy=True)
        bits = out.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[out.dtype.itemsize])
        noise = np.random.default_rng().integers(0, 2, size=bits.shape)  # fresh entropy
        bits ^= noise.astype(bits.dtype)
        return out


@provides("softmax")
class DtypeUpcast(Textbook):
    """float32 (and half) inputs computed in float64 and returned in float64: the result
    is accurate, but of another dtype than the input (the contract: never upcast)."""

    name = "dtype-upcast"

    def working_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.float64)

    def finish(self, value: Any, dtype: np.dtype) -> np.ndarray:
        return np.asarray(value)


@provides("logsumexp")
class WrongShape(Textbook):
    """logsumexp with keepdims=True: (N, 1) where the contract says (N,)."""

    name = "wrong-shape"

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        return super().logsumexp(logits)[:, None]


# ---------------------------------------------------------------------- invariants


@provides("softmax")
class Softmin(Textbook):
    """softmax(-z): the logits' sign flipped (distances mistaken for scores). The largest
    logit gets the smallest probability."""

    name = "softmin"

    def softmax_work(self, z: np.ndarray) -> np.ndarray:
        return super().softmax_work(-z)


@provides("log_softmax")
class NormaliserSignError(Textbook):
    """log_softmax = (z - m) + log s: the normaliser added instead of subtracted, so the
    log-probabilities of the largest logits come out positive."""

    name = "normaliser-sign-error"

    def log_softmax_work(self, z: np.ndarray) -> np.ndarray:
        d, _ = self.shift(z)
        _, s = self.exp_sum(d)
        with quiet():
            return d + np.log(s)[:, None]


@provides("softmax")
class SumOverBatch(Textbook):
    """The normaliser summed over the whole batch (np.sum(e) without axis=1): rows no
    longer sum to 1 once the batch has more than one row."""

    name = "sum-over-batch"

    def exp_sum(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with quiet():
            e = np.exp(d)
            return e, np.full(d.shape[0], e.sum(), d.dtype)


# ---------------------------------------------------------------------- only ulps (strict)


@provides("softmax")
class SoftmaxFromLogSoftmax(Textbook):
    """softmax = exp(log_softmax(z)): stable, and within the textbook's bound (which
    admits it), but exp turns the absolute error u |log p| of its argument into a relative
    error of |log p| u: tens of ulps for small probabilities. Only `strict` separates it
    from a careful implementation."""

    name = "softmax-from-log-softmax"

    def softmax_work(self, z: np.ndarray) -> np.ndarray:
        with quiet():
            return np.exp(self.log_softmax_work(z))


@provides(*_CE)
class GradientThroughLogSoftmax(Textbook):
    """The fused gradient (sum u) exp(log_softmax(z)) - u: the backward of
    nll_loss(log_softmax(z)) as frameworks chain it. Stable (the bound admits p formed as
    exp(log p)), but p_j carries a relative error of |log p_j| u: tens of ulps where a
    careful implementation is within one. Only `strict` separates it."""

    name = "gradient-through-log-softmax"

    def softmax_work(self, z: np.ndarray) -> np.ndarray:
        with quiet():
            return np.exp(self.log_softmax_work(z))


# ---------------------------------------------------------------------- forward mode, second order


@provides("log_softmax_jvp", "softmax_jvp")
class JvpWithoutCentering(Textbook):
    """The tangent of log_softmax taken as v itself, the -<p, v> forgotten (the JVP of
    z - m without the normaliser's own tangent): wrong wherever <p, v> != 0."""

    name = "jvp-without-centering"

    def jvp_work(self, z: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.softmax_work(z), v


@provides("cross_entropy_hvp")
class HvpDiagonalOnly(Textbook):
    """The Hessian-vector product with the Hessian's diagonal only, (sum u) p v: the
    rank-one -p p^T part forgotten (a Gauss-Newton shortcut taken for the Hessian)."""

    name = "hvp-diagonal-only"

    def hvp_rows(self, z: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        p = self.softmax_work(z)
        with quiet():
            return u.sum(axis=1)[:, None] * np.where(p == 0, 0, p * v)


@provides("cross_entropy_hvp")
class HvpAssumesNormalizedTarget(Textbook):
    """The Hessian-vector product without the sum u factor: right only where the target
    sums to one, as p - y is for the gradient."""

    name = "hvp-assumes-normalized-target"

    def hvp_rows(self, z: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        p, t = self.jvp_work(z, v)
        with quiet():
            return np.where(p == 0, 0, p * t)


# ---------------------------------------------------------------------- input classes
# Bugs that only one class of input shows: each is missed by every regime that existed
# before that class was added, and caught by it (test_input_classes.py proves both).


@provides("logsumexp")
class LogsumexpWithoutLog1p(Textbook):
    """logsumexp = m + log(sum exp(z - m)), the sum taken with the maximum's 1 in it
    (SciPy before 1.15): log throws away a sum of 1 + tiny, so logsumexp([0, -40]) comes
    back as 0 instead of 4.2e-18. Within the textbook's bound (it is the textbook's own
    formula): only `strict` and a maximum near 0 (``near-zero``) separate it."""

    name = "logsumexp-without-log1p"


@provides("cross_entropy")
class LossAsLseMinusTarget(Textbook):
    """The loss as logsumexp(z) - z_t, one format wider (PyTorch's issue 11752: two
    logits of 1e8 gave 0 instead of ln 2): the logsumexp is formed at the logits'
    magnitude, where the ln 2 it carries is below its ulp. Ties at large magnitudes
    (``ties``) show it; so did ``huge``'s constant rows before them."""

    name = "loss-as-lse-minus-target"

    def working_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.float64)

    def row_losses(self, logp: np.ndarray, u: np.ndarray) -> np.ndarray:
        z = self._z
        with quiet():
            lse = self.logsumexp_work(z)
            terms = np.where(u == 0, 0.0, u * (z - lse[:, None]))
            return -terms.sum(axis=1)

    def cross_entropy(self, logits: np.ndarray, target: np.ndarray, **options: Any
                      ) -> np.ndarray:
        self._z = self.to_working(logits)
        return super().cross_entropy(logits, target, **options)


@provides("softmax", "log_softmax", "logsumexp")
class BlockTailDropped(Textbook):
    """The row sum is taken in blocks of 1024 and a last block holding a single element
    is dropped (an off-by-one in a kernel's tail loop): only K = 1025, 2049, 65537, ...
    (``long-rows``) show it."""

    name = "block-tail-dropped"

    def exp_sum(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, s = super().exp_sum(d)
        k = d.shape[1]
        if k > 1024 and k % 1024 == 1:
            with quiet():
                s = s - e[:, -1]
        return e, s


@provides("softmax", "log_softmax")
class Int16Offsets(Textbook):
    """Half-precision arrays are addressed with int16 element offsets: beyond 32767
    elements the offsets wrap and elements are read from the wrong place (large
    half-precision arrays are where upstream reports found garbage and NaN): only arrays
    of 2**16 elements and more (``long-rows``) show it."""

    name = "int16-offsets"

    def to_working(self, array: np.ndarray) -> np.ndarray:
        work = super().to_working(array)
        if array.dtype == np.float32 or array.dtype == np.float64 or work.size <= 32767:
            return work
        flat = work.reshape(-1)
        offsets = np.arange(flat.size).astype(np.int16).astype(np.int64) % flat.size
        return flat[offsets].reshape(work.shape)


@provides(*_CE)
class IgnoredMeanOverN(Textbook):
    """reduction="mean" with an ignore_index and no class weights divides by N, the rows
    ignored included (PaddlePaddle's issue 48663): only a mean over ignored rows without
    weights (``ignored``) shows it."""

    name = "ignored-mean-over-n"

    def effective_target(self, target: np.ndarray, z: np.ndarray, **options: Any
                         ) -> tuple[np.ndarray, Any, np.ndarray]:
        u, denominator, ignored = super().effective_target(target, z, **options)
        if options.get("weight") is None and options.get("ignore_index") is not None:
            denominator = z.dtype.type(z.shape[0])
        return u, denominator, ignored


@provides(*_CE)
class SmoothingOnIgnoredRows(Textbook):
    """Ignored rows keep the label-smoothing part of their loss and gradient (PyTorch's
    issue 73205, tinygrad's pull 3574): only ignore_index with label smoothing and no
    weights (``ignored``) shows it here."""

    name = "smoothing-on-ignored-rows"

    def effective_target(self, target: np.ndarray, z: np.ndarray, **options: Any
                         ) -> tuple[np.ndarray, Any, np.ndarray]:
        u, denominator, ignored = super().effective_target(target, z, **options)
        eps = options.get("label_smoothing") or 0.0
        if eps and options.get("weight") is None and ignored.any():
            u = u.copy()
            u[ignored] = self.smoothing(z.dtype.type(eps), z.shape[1], z.dtype)
            ignored = np.zeros_like(ignored)
        return u, denominator, ignored


@provides(*_CE)
class MinusOneWraps(Textbook):
    """Class indices are checked with ``t < -1`` instead of ``t < 0``: -1 slips through
    and wraps to the last class (ONNX Runtime: label -1 scores class C - 1); K and -2 are
    refused. Only the invalid index -1 shows it."""

    name = "minus-one-wraps"

    def check_target(self, target: np.ndarray, k: int, ignore_index: int | None) -> None:
        t = np.asarray(target)
        if t.dtype.kind in "iu" and np.any(t == -1):
            t = np.where(t == -1, 0, t)
        super().check_target(t, k, ignore_index)

    def class_targets(self, target: np.ndarray, n: int, k: int, work: np.dtype,
                      ignored: np.ndarray) -> np.ndarray:
        return super().class_targets(np.where(target == -1, k - 1, target), n, k, work,
                                     ignored)


@provides(*_CE)
class AllIgnoredLeaks(Textbook):
    """When every row of a mean is ignored, the first row's loss and gradient leak out as
    if it were kept (a fallback for the empty mean): the mean over no target is 0/0 and
    its gradient 0. Only batches whose every target is ignored (``ignored``) show it."""

    name = "all-ignored-leaks"

    def effective_target(self, target: np.ndarray, z: np.ndarray, **options: Any
                         ) -> tuple[np.ndarray, Any, np.ndarray]:
        u, denominator, ignored = super().effective_target(target, z, **options)
        if ignored.size and ignored.all():
            u = np.zeros_like(u)
            u[0, 0] = 1
            ignored = np.zeros_like(ignored)
            denominator = z.dtype.type(1)
        return u, denominator, ignored


@provides("logsumexp")
class EmptyRowsZero(Textbook):
    """logsumexp of a row with no classes (K = 0) is 0, as if the maximum of nothing were
    0 and the sum 1: only K = 0 (``no-classes``) shows it; it is -inf."""

    name = "empty-rows-zero"

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        if logits.shape[1] == 0:
            return np.zeros(logits.shape[0], dtype=logits.dtype)
        return super().logsumexp(logits)


# ---------------------------------------------------------------------- invariants
# Bugs the value and gradient checks cannot see on the default inputs (they are exact
# there, or the truth is undefined there): only an oracle-free invariant shows them.


@provides(*_CE)
class NanScrubbedProbabilities(Textbook):
    """A guard for rows the maximum cannot shift (an +inf logit, or nothing but -inf):
    their probabilities are set to 0 to keep NaN out of the backward pass, so the gradient
    there is -u. Such rows are not graded (DESIGN.md §4: NaN, or the one-hot limit's
    (sum u) e - u, are both fine), but a finite gradient row must still sum to 0, and -u
    sums to -sum u."""

    name = "nan-scrubbed-probabilities"

    def cross_entropy_grad(self, logits: np.ndarray, target: np.ndarray, *,
                           weight: np.ndarray | None = None, ignore_index: int | None = None,
                           label_smoothing: float = 0.0, reduction: str = "none"
                           ) -> np.ndarray:
        z = self.to_working(logits)
        u, denominator, ignored = self.effective_target(
            target, z, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing)
        p = self.softmax_work(z)
        unshiftable = np.any(z == np.inf, axis=1) | np.all(z == -np.inf, axis=1)
        p[unshiftable] = 0
        grad = self.row_gradients(p, u)
        grad[ignored] = 0
        return self.finish(self.reduce_gradient(grad, denominator, reduction), logits.dtype)


@provides(*_CE)
class NormaliserReusedPerTarget(Textbook):
    """The row maxima and log-normalisers of the first call are kept, keyed by the target
    array (and shape, dtype, options), and reused by later calls with the same target: a
    fused kernel's saved forward state used by a backward on other logits. A second call
    on the same logits is right (the values, the gradient and determinism pass); logits
    that moved, e.g. shifted by a constant, get the old normaliser."""

    name = "normaliser-reused-per-target"

    def __init__(self) -> None:
        self.saved: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
        self.key: tuple[Any, ...] | None = None

    def _with_saved(self, method: Any, logits: np.ndarray, target: np.ndarray,
                    options: dict[str, Any]) -> Any:
        t = np.asarray(target)
        self.key = (t.tobytes(), t.dtype.str, logits.shape, logits.dtype.str,
                    repr(sorted(options.items(), key=lambda kv: kv[0])))
        try:
            return method(logits, target, **options)
        finally:
            self.key = None

    def log_softmax_work(self, z: np.ndarray) -> np.ndarray:
        if self.key is None:
            return super().log_softmax_work(z)
        if self.key not in self.saved:
            d, m = self.shift(z)
            _, s = self.exp_sum(d)
            with quiet():
                self.saved[self.key] = (m, np.log(s))
        m, log_s = self.saved[self.key]
        with quiet():
            return z - m[:, None] - log_s[:, None]

    def softmax_work(self, z: np.ndarray) -> np.ndarray:
        if self.key is None:
            return super().softmax_work(z)
        with quiet():
            return np.exp(self.log_softmax_work(z))

    def cross_entropy(self, logits: np.ndarray, target: np.ndarray, **options: Any
                      ) -> np.ndarray:
        return self._with_saved(super().cross_entropy, logits, target, options)

    def cross_entropy_grad(self, logits: np.ndarray, target: np.ndarray, **options: Any
                           ) -> np.ndarray:
        return self._with_saved(super().cross_entropy_grad, logits, target, options)


@provides(*_CE)
class MeanDivisorOfFirstBatch(Textbook):
    """A kernel specialised (compiled) for the first batch it sees, cached by the number
    of classes and the options but not by the batch: the mean's divisor of that first
    batch is baked in. A whole batch gets its own divisor; the same batch in chunks (as
    fused LLM kernels and gradient accumulation call it) gets the whole batch's."""

    name = "mean-divisor-of-first-batch"

    def __init__(self) -> None:
        self.compiled: dict[tuple[Any, ...], Any] = {}

    def effective_target(self, target: np.ndarray, z: np.ndarray, **options: Any
                         ) -> tuple[np.ndarray, Any, np.ndarray]:
        u, denominator, ignored = super().effective_target(target, z, **options)
        key = (z.shape[1], z.dtype.str, np.asarray(target).dtype.kind,
               repr(sorted((k, str(v)) for k, v in options.items())))
        denominator = self.compiled.setdefault(key, denominator)
        return u, denominator, ignored


#: Every planted adapter class, in the order of this module.
ZOO: tuple[type[Textbook], ...] = tuple(
    value for value in list(globals().values())
    if isinstance(value, type) and issubclass(value, Textbook) and value is not Textbook
)
