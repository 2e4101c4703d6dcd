"""numba loops of the harness (imported only where numba is, for arrays of
``jit.MIN_ELEMENTS`` elements and more): the stability bounds and the last step of
grading, the order check (a batch's stable order and its comparison), the certificates'
products, and a finding's roll-ups (largest errors, worst element). Each gives the NumPy
code's results, element for element.

**Bounds** (:func:`softmax_error_into`, :func:`softmax_lambda_into`,
:func:`log_softmax_error_into`, :func:`gradient_bounds_into`, for
``grading._bounds``; :func:`loss_bound_terms_into` for the cross-entropy's row bound,
whose sums stay NumPy's): each formula's elementwise part, row terms given, in one pass
where NumPy makes five to ten; the same operations in the same order, no FMA
(``tests/harness/test_compiled.py`` compares them over every kind of row and option).

**Rows** (:func:`row_scan`, :func:`shifted_into`, :func:`softmax_spread_into`, for
``grading._rows``): the float64 softmax and |z - m| u the bounds are built from, in three
passes where NumPy makes some twenty; its sums stay NumPy's (pairwise), so the bits are
the same (``tests/harness/test_compiled.py``).

**Allowed errors** (:func:`allowed_abs_into`, for ``checks.allowed_abs``): the allowed
ulps times the output format's ulp of each exact value, one pass for some ten.

**Chunk invariance** (:func:`rows_off_limit_into`): which rows of a gradient put back
together from pieces of the batch stray beyond their limit, one pass for some six.

**Certificates** (:func:`certificate_terms_into`, for ``truth._certify_fast``): the
products d v and |d x| of the reference gradient d, the direction v and the logits (or
probabilities) x, and whether any entry is to be held, in one pass for some nine; the
row sums stay NumPy's (``tests/harness/test_truth_tiers.py``).

**Grading** (:func:`grade_into`, for :func:`xentcheck.harness.grading.grade_elements`).
For every element: the allowed error in ulps, and, for a graded element whose candidate
and exact value are finite and within a factor of two with one sign (or both zeros), its
ulp error (Sterbenz's exact difference, as ``rounding._sterbenz_errors``), stability ratio
and grade code (as ``grading._ratios`` and ``grading.classify``). The same float64
operations in the same order, none fused into an FMA, and ldexp exact either way: NumPy's
bits (``tests/harness/test_compiled.py``), in one pass instead of some forty over
the output. Every other graded element (a non-finite value, a sign error, an error of
more than the value itself) is left to the NumPy path, which the loop marks. The loop
has no branch (its ldexp is three exact products and one rounding, :func:`_ldexp`), so
it vectorizes: a float32 output's allowed error scales ``lam`` into the subnormals, where
a call of libm's ldexp per element had taken half of the loop's time.

**Stable order** (:func:`stable_order_into`, for
``xentcheck.harness.checks.invariants.stable_order``): ``np.argsort(z, axis=1,
kind="stable")`` of logits of 32 bits or fewer, as a least-significant-digit radix sort
of each row's order-preserving 32-bit keys (three passes of 11, 11 and 10 bits; a radix
sort is stable by construction), where NumPy sorts the same keys in about four times
the time. The same order, element for element (``tests/harness/test_order_keys.py``,
which also compares :func:`order_broken_into` with the NumPy check; the roll-ups are
compared in ``tests/harness/test_grading.py``). :func:`orders_broken_into` checks a
batch's two outputs (softmax, log_softmax) in one sort that carries both values, packed
in the payload the order's index takes otherwise, so that the neighbours are compared
without gathering anything: the check of both in about 13 ms on 16 x 131072 where the
order and two gathering checks take about 34.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from xentcheck.references._portable_jit import _power_of_two
from xentcheck.references.fast._numba_options import NJIT_OPTIONS as _OPTS

#: Grade codes (indices into ``grading.GRADES``; -1 = not graded).
_UNGRADED, _EXACT, _FAITHFUL, _ULP_N, _STABLE, _UNSTABLE = -1, 0, 1, 2, 3, 4


@njit(inline="always", **_OPTS)
def _ldexp(x: float, e: int) -> float:
    """x * 2**e correctly rounded (``np.ldexp``) for -2045 <= e <= 2046, without a branch
    (so that a loop of it vectorizes): a = e clamped to the normal exponents and
    b = e - a (in [-1023, 1023]) in two halves, x * 2**b1 * 2**b2 * 2**a. The first two
    products are exact unless they overflow (then so does x 2**e) or fall below 2**-1022
    (then |x 2**e| < 2**-2044, which rounds to the zero the last product gives too); the
    last rounds once."""
    a = min(max(e, -1022), 1023)
    b = e - a
    b1 = b >> 1
    return x * _power_of_two(b1) * _power_of_two(b - b1) * _power_of_two(a)


@njit(inline="always", **_OPTS)
def _clip(e: int) -> int:
    return max(-2000, min(2000, e))


@njit(**_OPTS)
def scaled_into(x: np.ndarray, shift: int, out: np.ndarray) -> None:
    """``out = np.ldexp(mant, np.clip(expo + shift, -2000, 2000))`` for the exact values
    decoded from the float64 array ``x`` (scaled by the unit roundoff, which the bounds
    are built from): |x| 2**shift where x is finite, one correctly rounded product as
    2**shift (-53 or -24) is a normal float64; 0 elsewhere, where the significand is."""
    scale = _ldexp(1.0, shift)
    for i in range(x.size):
        v = x[i]
        out[i] = abs(v) * scale if (v - v) == 0.0 else 0.0


@njit(**_OPTS)
def grade_into(c: np.ndarray, x: np.ndarray, expo: np.ndarray, mant: np.ndarray,
               bound: np.ndarray, lam: np.ndarray, graded: np.ndarray, defined: np.ndarray,
               finite: np.ndarray, emin: int, emax: int, precision: int, tiny_w: int,
               tiny_o: int, mixed: bool, ulp_budget: float, allowed: np.ndarray,
               ratio: np.ndarray, ulp: np.ndarray, broken: np.ndarray, codes: np.ndarray,
               rest: np.ndarray) -> int:
    """Fill the flat outputs ``allowed`` (every element), ``ratio``, ``ulp``, ``broken``
    and ``codes`` (every element but those of ``rest``, which the loop sets True and
    counts: graded elements it leaves to the NumPy path). ``c``: the candidate (float32
    or float64, read exactly);
    ``x``: the exact values as float64; the output format's ``emin``, ``emax`` and
    ``precision``; ``tiny_w``/``tiny_o``: log2 of the working and output formats'
    smallest subnormals; ``mixed``: they differ (the last rounding's terms are added)."""
    left = 0
    for i in range(c.size):  # branch-free, so that it vectorizes
        k = min(max(expo[i], emin), emax) - (precision - 1)
        a = _ldexp(bound[i], _clip(-k)) + _ldexp(lam[i], tiny_w - k)
        if mixed:  # the same for every element: the loop is unswitched
            a += _ldexp(mant[i], _clip(expo[i] - precision - k))
            a += _ldexp(0.5, tiny_o - k)
        allowed[i] = a
        broken[i] = False
        ci = c[i]
        xi = x[i]
        ax = abs(xi)
        ac = abs(ci)
        same = (math.copysign(1.0, xi) < 0.0) == (math.copysign(1.0, ci) < 0.0)
        near = (same & (ax != 0.0) & (ac <= 2 * ax) & (ax <= 2 * ac)) | (
            (ax == 0.0) & (ac == 0.0))
        g = graded[i]
        left_here = g & (not (defined[i] & finite[i] & ((ci - ci) == 0.0) & near))
        rest[i] = left_here
        left += left_here
        u = _ldexp(abs(ci - xi), -k)
        r = 0.0 if u == 0.0 else u / a
        code = _EXACT if u <= 0.5 else (_FAITHFUL if u <= 1.0 else (
            _ULP_N if u <= ulp_budget else (_STABLE if r <= 1.0 else _UNSTABLE)))
        # what the loop leaves, the NumPy path overwrites
        ulp[i] = u if g else math.nan
        ratio[i] = r if g else math.nan
        codes[i] = code if g else _UNGRADED
    return left


@njit(**_OPTS)
def row_scan(z: np.ndarray, nan: np.ndarray, posinf: np.ndarray, top: np.ndarray,
             count: np.ndarray) -> None:
    """Per row of ``z`` (N, K): whether it holds a NaN, a +inf, its largest finite
    entry (-inf: none) and how many entries are finite (``grading._rows``' first
    passes; a maximum and counts, so in any order)."""
    for r in range(z.shape[0]):
        has_nan = False
        has_posinf = False
        largest = -math.inf
        finite = 0
        for i in range(z.shape[1]):
            v = z[r, i]
            if v != v:
                has_nan = True
            elif v == math.inf:
                has_posinf = True
            elif v != -math.inf:
                finite += 1
                if v > largest:
                    largest = v
        nan[r] = has_nan
        posinf[r] = has_posinf
        top[r] = largest
        count[r] = finite


@njit(**_OPTS)
def shifted_into(z: np.ndarray, bad: np.ndarray, m: np.ndarray, mu: np.ndarray, uw: float,
                 d: np.ndarray, du: np.ndarray) -> None:
    """``grading._rows``' d = z - m and du = |z uw - m uw| (-inf and inf where z is not
    finite), a row in ``bad`` read as zeros; ``mu`` = m uw."""
    for r in range(z.shape[0]):
        for i in range(z.shape[1]):
            v = 0.0 if bad[r] else z[r, i]
            finite = (v - v) == 0.0
            d[r, i] = v - m[r] if finite else -math.inf
            du[r, i] = abs(v * uw - mu[r]) if finite else math.inf


@njit(**_OPTS)
def softmax_spread_into(e: np.ndarray, s: np.ndarray, du: np.ndarray,
                        p: np.ndarray) -> None:
    """p = e / s per row, and e overwritten by ``grading._mul(p, du)`` (0 where p = 0)."""
    for r in range(e.shape[0]):
        for i in range(e.shape[1]):
            q = e[r, i] / s[r]
            p[r, i] = q
            e[r, i] = 0.0 if q == 0.0 else q * du[r, i]


@njit(**_OPTS)
def allowed_abs_into(allowed: np.ndarray, floor: float, expo: np.ndarray,
                     finite: np.ndarray, emin: int, emax: int, shift: int,
                     out: np.ndarray) -> None:
    """``checks.allowed_abs``: ``np.maximum(np.nan_to_num(allowed, nan=0.0), floor)``
    times the output format's ulp of the exact value (2**(clip(expo, emin, emax) +
    shift), NaN where it is not finite), all flat."""
    for i in range(allowed.size):
        a = allowed[i]
        if a != a:
            a = 0.0
        elif a == math.inf:
            a = 1.7976931348623157e308
        elif a == -math.inf:
            a = -1.7976931348623157e308
        a = a if a >= floor else floor
        out[i] = a * _ldexp(1.0, min(max(expo[i], emin), emax) + shift) if finite[i] \
            else math.nan


@njit(**_OPTS)
def rows_off_limit_into(combined: np.ndarray, whole: np.ndarray, limit: np.ndarray,
                        graded: np.ndarray, bad: np.ndarray) -> bool:
    """The chunk-invariance comparison (``checks.consistency``) of (N, K) arrays:
    ``bad[r]`` = some graded entry of row r has ``not |combined - whole| <= limit`` (NaN
    included); returns whether any row is bad."""
    rows, k = combined.shape
    found = False
    for r in range(rows):
        out = False
        for j in range(k):
            out |= graded[r, j] and not (abs(combined[r, j] - whole[r, j]) <= limit[r, j])
        bad[r] = out
        found |= out
    return found


@njit(**_OPTS)
def softmax_error_into(p: np.ndarray, du: np.ndarray, shared: np.ndarray,
                       out: np.ndarray) -> None:
    """softmax's error bound ``_mul(p, shared[:, None] + 2 * du)`` (``grading.
    _softmax_error``): 0 where p = 0, else p times the row's term plus twice the
    element's."""
    rows, k = p.shape
    for r in range(rows):
        s = shared[r]
        for j in range(k):
            pj = p[r, j]
            t = s + 2.0 * du[r, j]
            out[r, j] = 0.0 if pj == 0.0 else pj * t


@njit(**_OPTS)
def softmax_lambda_into(p: np.ndarray, n: np.ndarray, out: np.ndarray) -> None:
    """softmax's Lambda ``1 + p * n[:, None] / 2`` (``grading._softmax_lambda``)."""
    rows, k = p.shape
    for r in range(rows):
        nr = n[r]
        for j in range(k):
            out[r, j] = 1.0 + p[r, j] * nr / 2.0


@njit(**_OPTS)
def log_softmax_error_into(du: np.ndarray, shared: np.ndarray, out: np.ndarray) -> None:
    """log_softmax's error bound ``2 * du + shared[:, None]``."""
    rows, k = du.shape
    for r in range(rows):
        s = shared[r]
        for j in range(k):
            out[r, j] = 2.0 * du[r, j] + s


@njit(**_OPTS)
def loss_bound_terms_into(du: np.ndarray, ell_u: np.ndarray, u: np.ndarray, c: np.ndarray,
                          mass: np.ndarray, spread: np.ndarray, costs: np.ndarray) -> None:
    """The cross-entropy bound's elementwise terms (``grading._bounds``), with log_u =
    du + ell_u[:, None] (u |log p|): ``mass`` = _mul(u, log_u), ``spread`` = _mul(u, 2 du)
    and ``costs`` = _mul(c, log_u), each 0 where its first factor is."""
    rows, k = du.shape
    for r in range(rows):
        lr = ell_u[r]
        for j in range(k):
            d = du[r, j]
            log_u = d + lr
            uj = u[r, j]
            cj = c[r, j]
            mass[r, j] = 0.0 if uj == 0.0 else uj * log_u
            spread[r, j] = 0.0 if uj == 0.0 else uj * (2.0 * d)
            costs[r, j] = 0.0 if cj == 0.0 else cj * log_u


@njit(**_OPTS)
def gradient_bounds_into(beta: np.ndarray, p: np.ndarray, c: np.ndarray,
                         lam_softmax: np.ndarray, gu: np.ndarray, total: np.ndarray,
                         row_term: np.ndarray, ignored: np.ndarray, uw: float,
                         mean: bool, den: float, gu_scale: float, bound: np.ndarray,
                         lam: np.ndarray) -> None:
    """The cross-entropy gradient's bound and Lambda (``grading._bounds``): inner =
    total beta + p row_term + uw c and total Lambda_softmax + 1/2 (0 and 1/2 in an
    ignored row), then inner + gu, or under a mean inner / den + gu_scale gu and
    Lambda / den + 1/2."""
    rows, k = p.shape
    for r in range(rows):
        tr = total[r]
        rt = row_term[r]
        skip = ignored[r]
        for j in range(k):
            if skip:
                inner = 0.0
                lr = 0.5
            else:
                inner = tr * beta[r, j] + p[r, j] * rt + uw * c[r, j]
                lr = tr * lam_softmax[r, j] + 0.5
            if mean:
                bound[r, j] = inner / den + gu_scale * gu[r, j]
                lam[r, j] = lr / den + 0.5
            else:
                bound[r, j] = inner + gu[r, j]
                lam[r, j] = lr


_DIGITS = ((0, 11), (11, 11), (22, 10))  # (shift, bits) of the three passes


@njit(inline="always", **_OPTS)
def _keys_into(row: np.ndarray, keys: np.ndarray) -> None:
    """The order-preserving uint32 keys of a row of float32 bits (as int32): negative
    values reversed below the positive ones, -0 as +0."""
    for j in range(row.size):
        b = row[j]
        if b == -(1 << 31):  # -0 sorts as +0
            b = 0
        keys[j] = np.uint32(~b) if b < 0 else np.uint32(b) | np.uint32(1 << 31)


@njit(**_OPTS)
def _radix_sort(keys: np.ndarray, payload: np.ndarray, spare_keys: np.ndarray,
                spare_payload: np.ndarray, counts: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sort the uint32 ``keys`` ascending, carrying the int64 ``payload``, stably (three
    least-significant-digit passes); the arrays (of the four given) that hold the result."""
    src_k, src_p, dst_k, dst_p = keys, payload, spare_keys, spare_payload
    k = keys.size
    for shift, width in _DIGITS:
        mask = np.uint32((1 << width) - 1)
        counts[:] = 0
        for j in range(k):
            counts[(src_k[j] >> np.uint32(shift)) & mask] += 1
        total = 0
        for d in range(1 << width):
            c = counts[d]
            counts[d] = total
            total += c
        for j in range(k):
            d = (src_k[j] >> np.uint32(shift)) & mask
            at = counts[d]
            counts[d] = at + 1
            dst_k[at] = src_k[j]
            dst_p[at] = src_p[j]
        src_k, src_p, dst_k, dst_p = dst_k, dst_p, src_k, src_p
    return src_k, src_p


@njit(**_OPTS)
def stable_order_into(bits: np.ndarray, order: np.ndarray) -> None:
    """``order[r]`` = the stable ascending order of row r of ``bits`` (the float32 bits
    of the logits, as int32; no NaN: a row with one gets some permutation)."""
    n, k = bits.shape
    keys, spare_keys = np.empty(k, np.uint32), np.empty(k, np.uint32)
    index, spare_index = np.empty(k, np.int64), np.empty(k, np.int64)
    counts = np.empty(1 << 11, np.int64)
    for r in range(n):
        _keys_into(bits[r], keys)
        for j in range(k):
            index[j] = j
        _, sorted_index = _radix_sort(keys, index, spare_keys, spare_index, counts)
        for j in range(k):
            order[r, j] = sorted_index[j]


@njit(**_OPTS)
def orders_broken_into(bits: np.ndarray, first: np.ndarray, second: np.ndarray,
                       out: np.ndarray) -> None:
    """``order_broken_into`` for two outputs at once (``first``, ``second``: float32 bits as
    int32, the logits' shape), without an order: each row's keys are sorted carrying both
    values, packed in one int64, so that the neighbours are compared in one sequential
    pass, with no gather. ``out[0, r]``, ``out[1, r]``: the rows each output breaks. The
    same stable order, so the same neighbours, as :func:`stable_order_into`; the logits
    compared as their keys (whose order is theirs, -0 and +0 one key, as they are equal)."""
    n, k = bits.shape
    keys, spare_keys = np.empty(k, np.uint32), np.empty(k, np.uint32)
    both, spare_both = np.empty(k, np.int64), np.empty(k, np.int64)
    counts = np.empty(1 << 11, np.int64)
    low = np.int64(0xFFFFFFFF)
    for r in range(n):
        _keys_into(bits[r], keys)
        for j in range(k):
            both[j] = (np.int64(first[r, j]) << 32) | (np.int64(second[r, j]) & low)
        sorted_keys, sorted_both = _radix_sort(keys, both, spare_keys, spare_both, counts)
        broken_first = broken_second = False
        if k:
            ka = sorted_keys[0]
            pa = sorted_both[0]
            fa = np.int32(pa >> 32).view(np.float32)
            sa = np.int32(pa & low).view(np.float32)
            for j in range(1, k):
                kb = sorted_keys[j]
                pb = sorted_both[j]
                fb = np.int32(pb >> 32).view(np.float32)
                sb = np.int32(pb & low).view(np.float32)
                if ka < kb:
                    broken_first |= fb < fa
                    broken_second |= sb < sa
                ka, fa, sa = kb, fb, sb
        out[0, r] = broken_first
        out[1, r] = broken_second


@njit(**_OPTS)
def order_broken_into(z: np.ndarray, order: np.ndarray, v: np.ndarray,
                      out: np.ndarray) -> None:
    """``out[r]``: some neighbours of row r's ``order`` have strictly increasing logits
    ``z`` and decreasing values ``v`` (as ``np.diff`` of both, gathered, would say: a
    difference is negative or positive exactly when the comparison is, infinities and
    NaN included)."""
    n, k = z.shape
    for r in range(n):
        broken = False
        if k:
            a = order[r, 0]
            za, va = z[r, a], v[r, a]
            for j in range(1, k):  # each entry gathered once, kept for the next pair
                b = order[r, j]
                zb, vb = z[r, b], v[r, b]
                if za < zb and vb < va:
                    broken = True
                    break
                za, va = zb, vb
        out[r] = broken


_LOWEST_KEY = np.int64(-(1 << 63))  # below every float's key: "none yet"
_BLOCK = 1024  # first_largest's blocks: in cache for the second look


@njit(inline="always", **_OPTS)
def _key(v: float) -> np.int64:
    """An integer whose order is the float's (-0 just below +0; NaN not to be given):
    maxima of keys vectorize where float maxima, with their NaN rules, do not."""
    b = np.float64(v).view(np.int64)
    return b ^ ((b >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))


@njit(inline="always", **_OPTS)
def _unkey(k: np.int64) -> float:
    """The float of a key (the same map: it is its own inverse); -inf for none."""
    if k == _LOWEST_KEY:
        return -math.inf
    return np.int64(k ^ ((k >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))).view(np.float64)


@njit(**_OPTS)
def masked_max(values: np.ndarray, mask: np.ndarray, skip_nan: bool) -> tuple[bool, float]:
    """(found, max of ``values[mask]``) over flat arrays, as ``grading.masked_max``: NaN
    if one of them is (unless ``skip_nan``: then they are left out). Branch-free, on the
    values' integer keys (a zero maximum of both signs is +0; NumPy's leaves that open)."""
    found = seen_nan = False
    top = _LOWEST_KEY
    for i in range(values.size):
        v = values[i]
        m = mask[i]
        nan = v != v
        found |= m & (not (nan & skip_nan))
        seen_nan |= m & nan
        top = max(top, _key(v) if m & (not nan) else _LOWEST_KEY)
    if seen_nan and not skip_nan:
        return True, math.nan
    return found, _unkey(top)


@njit(**_OPTS)
def largest(ulp: np.ndarray, ratio: np.ndarray, graded: np.ndarray, broken: np.ndarray
            ) -> tuple[bool, float, float, bool, float, bool, float]:
    """``ElementGrades.largest`` in one pass over flat arrays: (any graded element not
    broken, its largest ulp error and ratio, NaN if one is), then (any non-NaN ulp error
    of a graded element, the largest; the same for the ratio): ``masked_max``'s four
    answers (a NaN is sticky in the first two, left out of the last two). Branch-free,
    as ``masked_max``."""
    some = some_ulp = some_ratio = nan_ulp = nan_ratio = False
    top_ulp = top_ratio = any_ulp = any_ratio = _LOWEST_KEY
    for i in range(ulp.size):
        g = graded[i]
        ok = g & (not broken[i])
        u = ulp[i]
        r = ratio[i]
        u_nan = u != u
        r_nan = r != r
        ku = _key(u)
        kr = _key(r)
        some |= ok
        nan_ulp |= ok & u_nan
        nan_ratio |= ok & r_nan
        top_ulp = max(top_ulp, ku if ok & (not u_nan) else _LOWEST_KEY)
        top_ratio = max(top_ratio, kr if ok & (not r_nan) else _LOWEST_KEY)
        some_ulp |= g & (not u_nan)
        some_ratio |= g & (not r_nan)
        any_ulp = max(any_ulp, ku if g & (not u_nan) else _LOWEST_KEY)
        any_ratio = max(any_ratio, kr if g & (not r_nan) else _LOWEST_KEY)
    return (some, math.nan if nan_ulp else _unkey(top_ulp),
            math.nan if nan_ratio else _unkey(top_ratio), some_ulp, _unkey(any_ulp),
            some_ratio, _unkey(any_ratio))


@njit(inline="always", **_OPTS)
def _read(v: float, nan: float, nan_given: bool) -> float:
    """A key as ``first_largest`` reads it: with ``nan_given``, NaN as ``nan`` and -inf as
    float64's lowest (without, no NaN is left to read, and -inf is not a maximum)."""
    if nan_given:
        return nan if v != v else (-1.7976931348623157e308 if v == -math.inf else v)
    return v


@njit(**_OPTS)
def first_largest(key: np.ndarray, mask: np.ndarray, nan: float, nan_given: bool) -> int:
    """``grading.first_largest`` over flat arrays: the first index of the largest ``key``
    where ``mask`` (elsewhere -inf), the first NaN if there is one, NaN read as ``nan``
    when ``nan_given`` (and -inf as float64's lowest, as ``np.nan_to_num`` does).

    One pass of blocks of :data:`_BLOCK`, each without a branch: the largest integer key
    (-0 read as +0, so that equal floats have equal keys) and the first NaN as a minimum
    of indices; the first block whose maximum is the largest so far is kept, and its
    first equal entry is the answer. The whole blocks and the tail are two copies of one
    loop body: only a literal trip count and the ``nan_given`` test as a statement let
    numba's LLVM vectorize it (helpers, even inlined, left it five times slower)."""
    size = key.size
    top = _LOWEST_KEY
    at = 0
    whole = size - size % _BLOCK
    for base in range(0, whole, _BLOCK):
        block = _LOWEST_KEY
        first_nan = size
        for i in range(_BLOCK):
            v = key[base + i]
            m = mask[base + i]
            is_nan = v != v
            first_nan = min(first_nan, base + i if m & is_nan & (not nan_given) else size)
            if nan_given:
                v = nan if is_nan else (-1.7976931348623157e308 if v == -math.inf else v)
            v = v + 0.0
            block = max(block, _key(v) if m & (v == v) else _LOWEST_KEY)
        if first_nan < size:
            return first_nan
        if block > top:
            top, at = block, base
    block = _LOWEST_KEY
    first_nan = size
    for i in range(whole, size):  # the tail: the same body
        v = key[i]
        m = mask[i]
        is_nan = v != v
        first_nan = min(first_nan, i if m & is_nan & (not nan_given) else size)
        if nan_given:
            v = nan if is_nan else (-1.7976931348623157e308 if v == -math.inf else v)
        v = v + 0.0
        block = max(block, _key(v) if m & (v == v) else _LOWEST_KEY)
    if first_nan < size:
        return first_nan
    if block > top:
        top, at = block, whole
    best = _unkey(top)
    if not best > -math.inf:  # nothing above -inf: the first index, as argmax of -inf
        return 0
    for i in range(at, min(at + _BLOCK, size)):
        if mask[i] and _read(key[i], nan, nan_given) == best:
            return i
    return 0  # (not reached: the block holds its maximum)


@njit(**_OPTS)
def certificate_terms_into(d: np.ndarray, v: np.ndarray, x: np.ndarray, probs: bool,
                           terms: np.ndarray, moved: np.ndarray) -> bool:
    """``truth._certify_fast``'s elementwise products in one pass over (N, K) float64
    arrays: terms = d v and moved = |d x|, as NumPy's ``d * v`` and ``abs(d * x)``; False
    (and the arrays not meaningful) if an entry would be held (x not finite, or zero with
    ``probs``) or v is zero somewhere, where the NumPy path zeroes such entries."""
    n, k = x.shape
    odd = 0
    for r in range(n):
        for i in range(k):
            xi = x[r, i]
            vi = v[r, i]
            di = d[r, i]
            odd += (not math.isfinite(xi)) | (probs & (xi == 0.0)) | (vi == 0.0)
            terms[r, i] = di * vi
            moved[r, i] = abs(di * xi)
    return odd == 0
