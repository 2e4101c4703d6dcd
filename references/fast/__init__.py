"""Fast reference tier: softmax and cross-entropy, vectorized, in extended precision.

The gold tier (:mod:`xentcheck.references.gold`) is exact but costs about 25 µs per element. This
tier computes the same functions with NumPy in two working precisions and one shared
evaluator: :class:`Reference` takes a batch of logits, sums its exponentials once and
gives every output from them; the module functions (:func:`log_softmax`,
:func:`softmax`, :func:`logsumexp`, :func:`cross_entropy`, :func:`cross_entropy_grad`)
are thin wrappers around it, for one output each.

Working precisions (``work=``)
------------------------------
* ``"longdouble"`` (the default where :data:`TIER` is ``"longdouble"``): outputs are
  ``np.longdouble`` arrays (x87 extended precision, a 64-bit significand, on x86-64
  Linux), each computed in double-double arithmetic (unevaluated sums of two float64
  numbers) and rounded once. They are within 1e-3 float64 ulp of gold; one longdouble ulp
  is 2**-11 = 4.9e-4 float64 ulp and the final rounding alone costs up to half of one.
* ``"float64"``: the same formulas in plain float64 (with d = z - m kept exact), returning
  float64 arrays: a few float64 ulps, i.e. ~1e-8 float32 ulp, plenty to grade float32,
  float16 and bfloat16 candidates. :func:`work_for` names the working precision adequate
  for a candidate's dtype.
* ``"gold"``: :mod:`xentcheck.references.gold`'s exact values rounded to ``longdouble``.
  This is what
  ``work=None`` and ``"longdouble"`` give where ``np.finfo(np.longdouble).nmant < 63``
  (arm64 macOS, where longdouble is float64; binary128 platforms): :data:`TIER` says
  which one runs.

How the longdouble work stays accurate
--------------------------------------
For a row z with maximum m at index j, d = z - m is kept exactly as a float64 pair
(TwoSum), s = sum_{k != j} exp(d_k) and

* log softmax_i = d_i - log1p(s), logsumexp = m + log1p(s)  (no cancellation: d_i <= 0);
* softmax_i = exp(d_i) / (1 + s); 1 - softmax_j = s / (1 + s) at the argmax and
  1 - softmax_i (<= 1/2) elsewhere, so p_t - 1 keeps all its digits;
* the loss -sum_c u_c log p_c = (sum u) log1p(s) - sum_c u_c d_c (two non-negative terms
  for non-negative u) and the gradient (sum u) p_c - u_c, at the argmax (and the target
  class) as p_c sum_{c' != c} u_c' - u_c (1 - p_c) with the sum taken directly; u is
  gold's effective target (class weights, label smoothing).

exp(d) is a table-driven double-double kernel (d = k ln2/8192 + r, |r| <= 2**-14.5, an
8192-entry table of 2**(k/8192) as float64 pairs and a degree-4 polynomial in r: below
2**-66 relative); row sums cut each term into pieces on three grids fixed per row
(Rump's error-free extraction, from the row's width and its largest term off the
argmax): the pieces on a grid add up exactly, so the sums are the same bits in any order
and in either engine (below), within 2**-83 of the row's largest term; log1p(s) is a
longdouble log1p refined by one Newton step on a more precise variant of that kernel
(~2**-71; or 2 atanh(s / (2 + s)) for small s); products and quotients are Dekker's; the
final double-double is rounded to longdouble with integer operations. Everything
proportional to exp(d) is carried times 2**128, so outputs down to float64's smallest
normal number stay relatively accurate; outputs below about 2**-1080 (beyond float64's
range, which gold grading measures on float64's subnormal spacing) are accurate in
absolute terms only. The work runs in blocks of 32768 elements that stay in cache.

Three outputs can cancel, as in gold, and there this tier is accurate relative to their
*scale*: logsumexp = m + log1p(s) when m ~ -log1p(s) (scale |m| + log1p(s)); a gradient
entry p_c sum_{c' != c} u_c' - u_c (1 - p_c) when its two terms nearly cancel, or when the
sum does (negative class weights) (scale: p_c sum_{c' != c} |u_c'| + |u_c| (1 - p_c)); a
loss with negative class weights (scale: the sum of the magnitudes of its terms).

Rows outside the range the double-double path is written for are computed by gold, row by
row: logits whose differences overflow float64 (or, with a target, exceed 2**300),
effective targets above 2**300 or infinite, longdouble logits beyond float64's range;
class weights outside [2**-400, 2**400] send the whole call there.

Semantics are gold's (DESIGN.md §4): a -inf logit with zero target mass contributes 0
(0 log 0 = 0) and gradient 0; with positive mass the loss is +inf; a NaN anywhere in a row
(logits or target) makes that row's outputs NaN; +inf logits give the limit, one-hot over
the +inf entries; an ignored row contributes 0 with gradient 0. Where gold answers
``UNDEFINED`` (an all -inf row; a mean over no weight) this tier answers NaN: use
:func:`undefined_rows` to tell an undefined row from a NaN one.

Modules
-------
* :mod:`~xentcheck.references.fast.doubledouble`: error-free transformations and
  double-double arithmetic on float64 arrays, exact row sums;
* :mod:`~xentcheck.references.fast.kernels`: the exp and log kernels and the blocks they
  run on, the rounding of double-doubles to longdouble;
* :mod:`~xentcheck.references.fast.inputs`: validated logits, targets and options, the
  kind of each row;
* :mod:`~xentcheck.references.fast.extended` (with
  :mod:`~xentcheck.references.fast.effective`, gold's effective target) and
  :mod:`~xentcheck.references.fast.plain`: the longdouble and the float64 evaluator;
* :mod:`~xentcheck.references.fast.fallback`: what goes to gold;
* :mod:`~xentcheck.references.fast.jit`: the compiled engine (numba, where installed):
  the row sums of both works and the longdouble log_softmax as compiled loops of the same
  operations, bitwise the NumPy engine's outputs (``XENTCHECK_FAST_ENGINE=numpy`` turns
  it off);
* :mod:`~xentcheck.references.fast.api`: :class:`Reference`, the module functions,
  :data:`TIER` and :func:`work_for` (all re-exported here).

Status (issue 6)
----------------
Accuracy, measured with tests/references/test_fast.py's measure against gold over every
regime (12 cases each, float64 and float32 logits), the named extremes and ~10000
hypothesis draws: the longdouble work is within 3.1e-4 float64 ulp for every function
(goal 1e-3), the float64 work within 8e-9 float32 ulp on float32 logits. Speed, as
elements/s relative to NumPy's float64 ``shifted = z - z.max(1); shifted -
log(exp(shifted).sum(1))`` on the same float64 logits (standard normal times 4), measured
side by side in one process (``benchmarks/run.py``'s ``fast_functions``: thread CPU
time, best of 9) on the 2-core development machine at load 0.7-1.0, with the compiled
engine (numba installed) and, in brackets, the NumPy engine:

==================================  ==============  ==============
(8, K) logits, K =                  131072          16384
==================================  ==============  ==============
longdouble log_softmax              0.86x (0.29x)   0.52x (0.17x)
longdouble softmax                  0.39x (0.24x)   0.22x (0.13x)
longdouble cross_entropy (indices)  1.11x (0.36x)   0.59x (0.22x)
longdouble cross_entropy_grad       0.35x (0.18x)   0.20x (0.13x)
float64 log_softmax                 0.61x (0.29x)   0.38x (0.23x)
float64 softmax                     0.84x (0.29x)   0.72x (0.25x)
float64 cross_entropy (indices)     1.07x (0.34x)   0.68x (0.23x)
float64 cross_entropy_grad          0.81x (0.28x)   0.54x (0.22x)
==================================  ==============  ==============

Before the compiled engine (sums in a fixed order, one extraction per block): longdouble
log_softmax 0.32x, softmax 0.25x, cross_entropy 0.41x, its gradient 0.23x at K = 131072;
the float64 work 0.5-0.7x. The grid sums that make the two engines agree cost the NumPy
engine 15-30% (side by side with the code before them, best of 9, three alternated runs,
load 0.5: float64 log_softmax 0.39-0.46x against 0.48-0.54x at K = 131072, 0.22x
against 0.30x at 16384; longdouble 0.32-0.37x against 0.42-0.44x, and 0.17-0.18x
against 0.24x).



>>> import numpy as np
>>> TIER in ("longdouble", "gold")
True
>>> float(log_softmax(np.array([40.0, 0.0]))[0])
-4.248354255291589e-18
>>> float(cross_entropy_grad(np.array([[37.42994775023705, 0.0]]), np.array([0]))[0, 0])
-5.551115123125776e-17
>>> ref = Reference(np.array([[1.0, 2.0, 3.0]]))
>>> [round(float(v), 6) for v in ref.softmax()[0]]
[0.090031, 0.244728, 0.665241]
>>> float(ref.cross_entropy(np.array([2]))[0]) == -float(ref.log_softmax()[0, 2])
True
>>> work_for("float32"), work_for(np.float64) == TIER
('float64', True)
"""

from __future__ import annotations

from xentcheck.references.fast.api import (
    TIER,
    WORKS,
    Reference,
    cross_entropy,
    cross_entropy_grad,
    log_softmax,
    logsumexp,
    softmax,
    undefined_rows,
    work_for,
)
from xentcheck.references.fast.kernels import log_dd

__all__ = [
    "TIER",
    "WORKS",
    "Reference",
    "cross_entropy",
    "cross_entropy_grad",
    "log_softmax",
    "log_dd",
    "logsumexp",
    "softmax",
    "undefined_rows",
    "work_for",
]
