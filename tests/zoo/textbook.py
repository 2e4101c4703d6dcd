"""The textbook shifted algorithm: the correct adapter every planted bug is derived from.

This is the algorithm whose rounding-error bound the grading divides by (Blanchard, Higham
& Higham, "Accurately computing the log-sum-exp and softmax functions", IMA J. Numer.
Anal. 41(4), 2021, and ``xentcheck.harness.grading``'s docstring). Per row z, in the working format:

* m = max z, d = z - m, s = sum exp(d)
* logsumexp = m + log s, softmax = exp(d) / s, log_softmax = d - log s
* cross-entropy = -sum_k u_k log_softmax_k with the effective target u (PyTorch's
  documented options, as in ``xentcheck.references.gold``; 0 * log 0 = 0), and the fused gradient
  (sum u) softmax - u
* softmax Jacobian diag(p) - p pᵀ (the diagonal as p (1 - p))
* from probabilities: -sum y log ŷ (0 log 0 = 0, no clipping) and -y / ŷ (0 where y = 0)
* forward mode: log_softmax's JVP v - <p, v>, softmax's p (v - <p, v>), the loss's
  -sum u (v - <p, v>); the Hessian-vector product (sum u) p (v - <p, v>)

The working format is the case dtype for float64 and float32; float16 and bfloat16 are
computed in float32 and rounded once at the end, as PyTorch and JAX do (DESIGN.md §7).
Nothing is done to be more accurate than the textbook: no log1p, no extended precision.
Invalid targets (out-of-range class indices, negative probabilities) raise ``ValueError``.

Every step is a method, so that each planted bug in ``planted.py`` replaces exactly one of
them and inherits the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import DTYPES, dtype_name


def quiet() -> np.errstate:
    """Silence the floating-point warnings the special cases (-inf, 0 log 0) raise."""
    return np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore")


class Textbook:
    """The textbook shifted algorithm (see the module docstring), for every case dtype."""

    name = "textbook"
    dtypes: tuple[str, ...] = DTYPES

    # ------------------------------------------------------------------ the steps

    def working_dtype(self, dtype: np.dtype) -> np.dtype:
        """The format a case of ``dtype`` is computed in."""
        if dtype_name(dtype) in ("float16", "bfloat16"):
            return np.dtype(np.float32)
        return np.dtype(dtype)

    def to_working(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array).astype(self.working_dtype(np.asarray(array).dtype))

    def finish(self, value: Any, dtype: np.dtype) -> np.ndarray:
        """The one rounding at the end, to the case dtype."""
        with quiet():
            return np.asarray(value).astype(dtype)

    def shift(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(d, m): the shifted logits z - max z and the row maxima."""
        with quiet():
            m = np.max(z, axis=1, initial=-np.inf) if z.shape[0] else np.zeros(0, z.dtype)
            return z - m[:, None], m

    def exp_sum(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(exp d, s = sum exp d) per row."""
        with quiet():
            e = np.exp(d)
            return e, e.sum(axis=1)

    def log_softmax_work(self, z: np.ndarray) -> np.ndarray:
        d, _ = self.shift(z)
        _, s = self.exp_sum(d)
        with quiet():
            return d - np.log(s)[:, None]

    def softmax_work(self, z: np.ndarray) -> np.ndarray:
        d, _ = self.shift(z)
        e, s = self.exp_sum(d)
        with quiet():
            return e / s[:, None]

    def logsumexp_work(self, z: np.ndarray) -> np.ndarray:
        d, m = self.shift(z)
        _, s = self.exp_sum(d)
        with quiet():
            return m + np.log(s)

    def check_target(self, target: np.ndarray, k: int, ignore_index: int | None) -> None:
        """Raise ``ValueError`` for an out-of-range class index or a negative probability."""
        t = np.asarray(target)
        if t.dtype.kind in "iu":
            bad = (t < 0) | (t >= k)
            if ignore_index is not None:
                bad &= t != ignore_index
            if bad.any():
                row = int(np.argmax(bad))
                raise ValueError(f"target[{row}] = {t[row]} is out of range for {k} classes")
        elif np.any(t.astype(np.float64) < 0):
            raise ValueError("a target probability is negative")

    def class_targets(self, target: np.ndarray, n: int, k: int, work: np.dtype,
                      ignored: np.ndarray) -> np.ndarray:
        """One-hot rows of the class indices (ignored rows all zero)."""
        y = np.zeros((n, k), work)
        rows = np.flatnonzero(~ignored)
        y[rows, target[rows]] = 1
        return y

    def effective_target(self, target: np.ndarray, z: np.ndarray, *, weight: Any,
                         ignore_index: int | None, label_smoothing: float
                         ) -> tuple[np.ndarray, Any, np.ndarray]:
        """(u, the mean's denominator, ignored rows): u_c = (1 - eps) w_t [c = t] +
        eps w_c / K for class indices, w_c ((1 - eps) y_c + eps / K) for probabilities;
        the mean divides by sum_n w_{t_n} over the rows not ignored, or by N."""
        n, k = z.shape
        work = z.dtype
        self.check_target(target, k, ignore_index)
        w = np.ones(k, work) if weight is None else np.asarray(weight).astype(work)
        eps = work.type(label_smoothing)
        t = np.asarray(target)
        with quiet():
            if t.dtype.kind in "iu":
                t = t.astype(np.int64)
                ignored = (t == ignore_index) if ignore_index is not None else np.zeros(n, bool)
                y = self.class_targets(t, n, k, work, ignored)
                w_t = (y * w).sum(axis=1)  # w at the target, 0 for an ignored row
                u = (1 - eps) * w_t[:, None] * y
                if label_smoothing:
                    u = u + self.smoothing(eps, k, work) * w * (~ignored)[:, None]
                return u, w_t.sum(), ignored
            y = t.astype(work)
            if label_smoothing:
                u = w * ((1 - eps) * y + self.smoothing(eps, k, work))
            else:
                u = w * y
            return u, work.type(n), np.zeros(n, bool)

    def smoothing(self, eps: Any, k: int, work: np.dtype) -> Any:
        """The smoothing mass every class gets: eps / K."""
        return eps / work.type(k)

    def row_losses(self, logp: np.ndarray, u: np.ndarray) -> np.ndarray:
        """-sum_k u_k log p_k per row, with 0 log 0 = 0 (a NaN row stays NaN)."""
        with quiet():
            terms = np.where((u == 0) & (logp == -np.inf), 0, u * logp)
            return -terms.sum(axis=1)

    def row_gradients(self, p: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The fused gradient (sum u) p - u per row."""
        with quiet():
            return u.sum(axis=1)[:, None] * p - u

    def reduce_loss(self, losses: np.ndarray, denominator: Any, reduction: str) -> Any:
        with quiet():
            if reduction == "sum":
                return losses.sum()
            if reduction == "mean":
                return losses.sum() / denominator
        return losses

    def reduce_gradient(self, grad: np.ndarray, denominator: Any, reduction: str) -> np.ndarray:
        if reduction != "mean":
            return grad
        if denominator == 0:
            return np.zeros_like(grad)  # a mean over nothing: value 0/0, gradient 0
        with quiet():
            return grad / denominator

    # ------------------------------------------------------------------ the contract

    def logsumexp(self, logits: np.ndarray) -> np.ndarray:
        if logits.shape[1] == 0:  # no classes: the log of an empty sum
            return np.full(logits.shape[0], -np.inf, dtype=logits.dtype)
        return self.finish(self.logsumexp_work(self.to_working(logits)), logits.dtype)

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        return self.finish(self.softmax_work(self.to_working(logits)), logits.dtype)

    def log_softmax(self, logits: np.ndarray) -> np.ndarray:
        return self.finish(self.log_softmax_work(self.to_working(logits)), logits.dtype)

    def softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        p = self.softmax_work(self.to_working(logits))
        with quiet():
            jac = -(p[:, :, None] * p[:, None, :])
            k = p.shape[1]
            jac[:, np.arange(k), np.arange(k)] = p * (1 - p)
        return self.finish(jac, logits.dtype)

    def cross_entropy(self, logits: np.ndarray, target: np.ndarray, *,
                      weight: np.ndarray | None = None, ignore_index: int | None = None,
                      label_smoothing: float = 0.0, reduction: str = "none") -> np.ndarray:
        z = self.to_working(logits)
        u, denominator, ignored = self.effective_target(
            target, z, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing)
        losses = self.row_losses(self.log_softmax_work(z), u)
        losses[ignored] = 0
        return self.finish(self.reduce_loss(losses, denominator, reduction), logits.dtype)

    def cross_entropy_grad(self, logits: np.ndarray, target: np.ndarray, *,
                           weight: np.ndarray | None = None, ignore_index: int | None = None,
                           label_smoothing: float = 0.0, reduction: str = "none"
                           ) -> np.ndarray:
        z = self.to_working(logits)
        u, denominator, ignored = self.effective_target(
            target, z, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing)
        grad = self.row_gradients(self.softmax_work(z), u)
        grad[ignored] = 0
        return self.finish(self.reduce_gradient(grad, denominator, reduction), logits.dtype)

    # ------------------------------------------------------------------ forward mode

    def jvp_work(self, z: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p, v - <p, v>): the tangent of log_softmax, in the working format."""
        p = self.softmax_work(z)
        with quiet():
            s = np.where(p == 0, 0, p * v).sum(axis=1)
            return p, v - s[:, None]

    def log_softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        _, t = self.jvp_work(self.to_working(logits), self.to_working(tangent))
        return self.finish(t, logits.dtype)

    def softmax_jvp(self, logits: np.ndarray, tangent: np.ndarray) -> np.ndarray:
        p, t = self.jvp_work(self.to_working(logits), self.to_working(tangent))
        with quiet():
            return self.finish(np.where(p == 0, 0, p * t), logits.dtype)

    def cross_entropy_jvp(self, logits: np.ndarray, target: np.ndarray, tangent: np.ndarray,
                          *, weight: np.ndarray | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0, reduction: str = "none") -> np.ndarray:
        z = self.to_working(logits)
        u, denominator, ignored = self.effective_target(
            target, z, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing)
        _, t = self.jvp_work(z, self.to_working(tangent))
        with quiet():
            rows = -(u * t).sum(axis=1)  # t is finite where the row is: 0 u stays 0, NaN NaN
        rows[ignored] = 0
        return self.finish(self.reduce_loss(rows, denominator, reduction), logits.dtype)

    def cross_entropy_hvp(self, logits: np.ndarray, target: np.ndarray, vector: np.ndarray,
                          *, weight: np.ndarray | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0, reduction: str = "none") -> np.ndarray:
        z = self.to_working(logits)
        u, denominator, ignored = self.effective_target(
            target, z, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing)
        out = self.hvp_rows(z, u, self.to_working(vector))
        out[ignored] = 0
        return self.finish(self.reduce_gradient(out, denominator, reduction), logits.dtype)

    def hvp_rows(self, z: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(sum u) p (v - <p, v>) per row."""
        p, t = self.jvp_work(z, v)
        with quiet():
            return u.sum(axis=1)[:, None] * np.where(p == 0, 0, p * t)

    def probability_inputs(self, probs: np.ndarray, target: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
        """(ŷ, y) in the working format; class indices become one-hot rows."""
        p = self.to_working(probs)
        n, k = p.shape
        self.check_target(target, k, None)
        t = np.asarray(target)
        if t.dtype.kind in "iu":
            return p, self.class_targets(t.astype(np.int64), n, k, p.dtype, np.zeros(n, bool))
        return p, t.astype(p.dtype)

    def cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        p, y = self.probability_inputs(probs, target)
        with quiet():
            logp = np.log(p)
            terms = np.where((y == 0) & (logp == -np.inf), 0, y * logp)
            return self.finish(-terms.sum(axis=1), probs.dtype)

    def cross_entropy_grad_wrt_probs(self, probs: np.ndarray, target: np.ndarray
                                     ) -> np.ndarray:
        p, y = self.probability_inputs(probs, target)
        with quiet():
            grad = -(y / p)
            grad[(y == 0) & (p == 0)] = 0  # no mass there: 0, not 0/0
        return self.finish(grad, probs.dtype)
