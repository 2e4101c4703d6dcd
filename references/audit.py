"""The derivation audit: every formula of DESIGN.md §1 against an independent estimate.

The seeds derive the softmax / cross-entropy formulas by hand; this module proves each one
on random and extreme inputs. For a derivative the analytic gold value is compared with a
high-precision finite-difference estimate (:mod:`xentcheck.references.fd`) of the function it
differentiates; for the loss value, with independent routes evaluated at four times the
precision. Each formula gives one :class:`AuditRow`: the formula, the hand derivation it
comes from, the inputs tried and the worst digits of agreement over all of them.

Digits of agreement, per compared entry: ``a`` the analytic value, ``v +- e`` the estimate
and its error bound (``e = 0`` for an exact route)::

    digits = -log10(max(|a - v|, e) / max(|a|, |v|))        (inf where a == v)

so an entry counts only the digits the estimate certifies. An entry the finite differences
cannot resolve at all (``e >= max(|a|, |v|)``: e.g. the derivative e**-2e308 of
p_0 = 1 - e**-2e308, which no feasible precision tells from 1, or a derivative that is
exactly zero) is consistent by construction; it is counted in the notes, not in the digits.
Every formula is also tried on random inputs where every entry is resolved. A row holds at
``REQUIRED_DIGITS`` or more, except the p - y row, which holds when p - y *disagrees* with
the finite differences on every input (its digits are the best agreement p - y ever got).

Logits at -inf are held fixed (the finite differences run over the finite coordinates);
the analytic derivative with respect to a -inf logit must then be exactly 0.

>>> from mpmath import mpf
>>> agreement_digits([mpf(2), mpf(0)], [mpf(2.002), mpf(0)])  # exact zeros agree fully
Agreement(digits=3.0..., unresolved=0)
>>> print(format_audit([AuditRow("L = -sum y log p", "CE", ("[40, 0]",), 61.2, True, ">= 40")]))
formula           seed    inputs tried      worst digits  needs    holds
----------------  ------  --------------  --------------  -------  -------
L = -sum y log p  CE      [40, 0]                   61.2  >= 40    yes
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import mpmath
import numpy as np
from tabulate import tabulate

from xentcheck.references import fd, gold
from xentcheck.references.precision import standard_precision

__all__ = [
    "AGREEMENT_PREC",
    "Agreement",
    "AuditRow",
    "FORMULAS",
    "GOLD_PREC",
    "MAX_DISAGREE_DIGITS",
    "REQUIRED_DIGITS",
    "agreement_digits",
    "build_cases",
    "describe_cases",
    "format_audit",
    "main",
    "run_audit",
]

#: Digits every derivation must be confirmed to (the issue's "at least 40").
REQUIRED_DIGITS = 40.0
#: p - y "agrees" with the true gradient on an input if its worst entry keeps more than
#: one digit (10 % relative); the p - y row holds when that never happens.
MAX_DISAGREE_DIGITS = 1.0
#: Precision of the analytic gold values: gold certifies prec - 82 bits (>= 110), so 384
#: bits give ~300 bits (90 digits), far above what the finite differences certify (60).
GOLD_PREC = 384
#: Relative error bound of a gold output at GOLD_PREC (gold: prec - 82 bits, 14 spare).
GOLD_REL_ERR = mpmath.mpf(2) ** -(GOLD_PREC - 96)
#: Independent routes for the loss value run at four times the gold's precision.
ROUTE_PREC = 4 * GOLD_PREC
#: Digits asked of every finite-difference estimate (fd's default).
FD_DIGITS = fd.DEFAULT_DIGITS
#: Precision of the comparison itself; wide enough for any difference of the values here.
AGREEMENT_PREC = 4096
#: Largest K for which full Jacobians are taken; above it one random direction.
FULL_JACOBIAN_MAX_K = 16
#: Seed of the random inputs.
DEFAULT_SEED = 20240601

# ------------------------------------------------------------------ agreement


class Agreement(NamedTuple):
    """Worst digits of agreement over some entries, and how many were unresolvable."""

    digits: float
    unresolved: int


@standard_precision
def agreement_digits(analytic: Any, estimate: Any, error: Any = None) -> Agreement:
    """Worst digits of agreement between ``analytic`` and ``estimate`` (module docstring).

    ``error``: the estimate's error bound per entry (default 0: an exact route). A NaN or an
    infinity on one side only gives 0 digits.

    >>> from mpmath import mpf
    >>> agreement_digits([mpf(1), mpf(0)], [mpf(1), mpf(0)])
    Agreement(digits=inf, unresolved=0)
    >>> agreement_digits([mpf(1e-300)], [mpf(0)], [mpf(1e-200)])  # below FD resolution
    Agreement(digits=inf, unresolved=1)
    >>> agreement_digits([mpf(1)], [mpf(1.001)])[0] < 3.1
    True
    """
    a_flat = np.asarray(analytic, dtype=object).ravel()
    v_flat = np.asarray(estimate, dtype=object).ravel()
    if a_flat.shape != v_flat.shape:
        raise ValueError(f"shapes differ: analytic {a_flat.shape}, estimate {v_flat.shape}")
    e_flat = (
        np.full(a_flat.shape, mpmath.mpf(0), dtype=object)
        if error is None
        else np.asarray(error, dtype=object).ravel()
    )
    worst, unresolved = math.inf, 0
    with mpmath.workprec(AGREEMENT_PREC):
        for a, v, e in zip(a_flat, v_flat, e_flat, strict=True):
            a, v, e = _as_number(a), _as_number(v), mpmath.mpf(e)
            if a == v and not mpmath.isnan(a):
                continue
            if not (mpmath.isfinite(a) and mpmath.isfinite(v)) or mpmath.isnan(e):
                return Agreement(0.0, unresolved)
            ref = max(abs(a), abs(v))
            if e >= ref:
                unresolved += 1
                continue
            digits = -float(mpmath.log10(max(abs(a - v), e) / ref))
            worst = min(worst, digits)
    return Agreement(worst, unresolved)


def _as_number(x: Any) -> mpmath.mpf:
    if isinstance(x, mpmath.mpf):
        return x
    if x is gold.UNDEFINED:
        return mpmath.nan
    return mpmath.mpf(x)


# ------------------------------------------------------------------ rows and table


@dataclass(frozen=True)
class AuditRow:
    """One audited formula: what it is, where it comes from, and how well it held."""

    formula: str
    seed: str
    inputs: tuple[str, ...]
    digits: float
    holds: bool
    expect: str
    notes: str = ""


def _fmt_digits(d: float) -> str:
    return "exact" if d == math.inf else f"{d:.1f}"


def _summarize(inputs: Sequence[str]) -> str:
    """The inputs of a row, the random ones grouped ("rand K=2, rand K=3" -> "rand K=2,3")."""
    ks = [name.split("=", 1)[1] for name in inputs if name.startswith("rand K=")]
    rest = [name for name in inputs if not name.startswith("rand K=")]
    return ", ".join(([f"rand K={','.join(ks)}"] if ks else []) + rest)


def format_audit(rows: Sequence[AuditRow]) -> str:
    """The audit as a text table (tabulate); a notes column appears when a row has notes."""
    with_notes = any(r.notes for r in rows)
    headers = ["formula", "seed", "inputs tried", "worst digits", "needs", "holds"]
    if with_notes:
        headers.append("notes")
    table = []
    for r in rows:
        line = [
            r.formula,
            r.seed,
            _summarize(r.inputs),
            _fmt_digits(r.digits),
            r.expect,
            "yes" if r.holds else "NO",
        ]
        if with_notes:
            line.append(r.notes)
        table.append(line)
    widths = [24, 26, 34, None, 10, None] + ([36] if with_notes else [])
    return tabulate(
        table,
        headers=headers,
        maxcolwidths=widths,
        disable_numparse=True,
        colalign=("left", "left", "left", "right", "left", "left", "left")[: len(headers)],
    )


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Case:
    """One logit row and a probability target (not necessarily summing to one)."""

    name: str
    logits: np.ndarray
    target: np.ndarray
    detail: str = ""

    @property
    def wide(self) -> bool:
        """Too wide for K x K rows: directional derivatives along one direction only."""
        return len(self.logits) > FULL_JACOBIAN_MAX_K

    @property
    def description(self) -> str:
        return self.detail or f"z = {_describe(self.logits)}; y = {_describe(self.target)}"

    @functools.cached_property
    def z(self) -> np.ndarray:
        return _exact(self.logits)

    @functools.cached_property
    def y(self) -> np.ndarray:
        return _exact(self.target)

    @property
    def finite(self) -> np.ndarray:
        return np.array([bool(mpmath.isfinite(v)) for v in self.z])

    @property
    def target_sum(self) -> mpmath.mpf:
        with mpmath.workprec(ROUTE_PREC):
            return mpmath.fsum(self.y)


def _exact(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    for idx, v in np.ndenumerate(a):
        out[idx] = v if isinstance(v, mpmath.mpf) else mpmath.mpf(float(v))
    return out


def _dyadic_target(rng: np.random.Generator, live: np.ndarray, denominator: int = 64) -> np.ndarray:
    """A target with sum exactly 1 on the ``live`` classes: counts / 64 (dyadic, so every
    float operation on it is exact)."""
    counts = np.zeros(len(live))
    counts[live] = rng.multinomial(denominator, rng.dirichlet(np.ones(int(live.sum()))))
    return counts / denominator


def _describe(a: np.ndarray) -> str:
    if a.dtype == object:  # exact mpf: enough digits to show the offsets from 1e20
        return "mpf [" + ", ".join(mpmath.nstr(v, 25) for v in a) + "]"
    dtype = "" if a.dtype == np.float64 else f"{a.dtype} "
    return dtype + "[" + ", ".join(repr(float(v)) for v in a) + "]"


def build_cases(
    *, seed: int = DEFAULT_SEED, random_cases: int = 4, wide: bool = True
) -> list[Case]:
    """Random rows (normal logits, unnormalized targets) and the extremes of the issue."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(random_cases):
        k = (2, 3, 5, 8)[i % 4]
        z = rng.normal(0.0, 4.0, k)
        y = rng.uniform(0.0, 1.0, k)
        if k > 2:
            y[rng.integers(k)] = 0.0  # a class without target mass
        y *= (0.6, 1.75)[i % 2] / y.sum()  # sum y far from 1 (the p - y row needs that)
        cases.append(Case(f"rand K={k}", z, y))
    cases += [
        Case("1e308 a", np.array([1e308, -1e308]), np.array([0.25, 1.5])),
        Case("1e308 b", np.array([1e308, -1e308]), np.array([1.25, 0.0])),
        Case("37.43", np.array([37.42994775023705, 0.0]), np.array([1.0, 0.0])),
        Case("40", np.array([40.0, 0.0]), np.array([0.7, 0.6])),
        Case("f32 1e7", np.array([-1e7, -1e7, -9999999], np.float32), np.array([0.2, 0.5, 0.9])),
        Case(
            "-inf",
            np.array([1.5, -np.inf, -0.5, -np.inf, 3.0]),
            np.array([0.4, 0.0, 0.8, 0.0, 0.1]),
        ),
        Case("dominant a", np.array([0.5, 95.0, -2.0, 1.0]), np.array([0.3, 0.0, 0.6, 0.2])),
        Case("dominant b", np.array([120.0, 0.5, -1.0]), np.array([1.3, 0.0, 0.05])),
        Case(
            "1e20",
            np.array([mpmath.fadd(1e20, d, exact=True) for d in (0.0, 1.5, -0.25)], dtype=object),
            np.array([0.5, 0.25, 1.0]),
        ),
    ]
    if wide:
        y = np.zeros(4096)
        y[[0, 1000, 4095]] = [0.5, 0.75, 0.25]
        cases.append(
            Case(
                "4096 equal",
                np.full(4096, 2.5),
                y,
                detail="z = 2.5 in all 4096 classes; y = 0.5, 0.75, 0.25 at "
                "classes 0, 1000, 4095 (one random direction)",
            )
        )
    return cases


def describe_cases(cases: Sequence[Case]) -> str:
    """One line per input: its name, logits and target."""
    return "\n".join(f"  {c.name:11s} {c.description}" for c in cases)


# ------------------------------------------------------------------ shared evaluations


def _at_wp(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn evaluated at the precision fd is running (mpmath.mp.prec)."""
    return lambda *args, **kwargs: fn(*args, prec=mpmath.mp.prec, **kwargs)


def _embed(full: np.ndarray, mask: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """x (the entries of ``full`` where ``mask``) -> ``full`` with those entries replaced."""

    def embed(x: np.ndarray) -> np.ndarray:
        out = full.copy()
        out[mask] = x
        return out

    return embed


class _Context:
    """Finite-difference estimates shared by several rows, computed once per case."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._cache: dict[tuple[str, str], Any] = {}

    def cached(self, key: tuple[str, str], compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def direction(self, case: Case) -> np.ndarray:
        """A fixed random direction for the wide case (positive entries: see p - y row)."""
        rng = np.random.default_rng(self.seed + len(case.logits))
        return rng.uniform(0.5, 1.5, len(case.logits))

    def loss_gradient(self, case: Case) -> fd.FDEstimate:
        """FD of the row loss L(z) = cross_entropy(z, y), the full gradient (0 at -inf
        logits, error 0 there) or, for a wide case, the derivative along direction()."""

        def compute() -> fd.FDEstimate:
            mask = case.finite
            embed = _embed(case.z, mask)

            def loss(x: np.ndarray) -> Any:
                return _at_wp(gold.cross_entropy)(embed(x), case.y)

            if case.wide:
                est = fd.directional_derivative(
                    loss, case.z, self.direction(case), digits=FD_DIGITS
                )
                return fd.FDEstimate(
                    np.array([est.value], dtype=object), np.array([est.error], dtype=object)
                )
            est = fd.jacobian(loss, case.z[mask], digits=FD_DIGITS)
            return _scatter(est, mask)

        return self.cached((case.name, "loss_gradient"), compute)


def _scatter(est: fd.FDEstimate, mask: np.ndarray) -> fd.FDEstimate:
    """Place a Jacobian over the finite coordinates (its last axis) into the full one,
    with exact zeros (error 0) at the -inf coordinates."""
    value = np.asarray(est.value, dtype=object)
    error = np.asarray(est.error, dtype=object)
    shape = value.shape[:-1] + (len(mask),)
    full_v = np.full(shape, mpmath.mpf(0), dtype=object)
    full_e = np.full(shape, mpmath.mpf(0), dtype=object)
    full_v[..., mask] = value
    full_e[..., mask] = error
    return fd.FDEstimate(full_v, full_e)


def _dot(a: Iterable[Any], b: Iterable[Any]) -> mpmath.mpf:
    with mpmath.workprec(ROUTE_PREC):
        return mpmath.fsum(x * y for x, y in zip(a, b, strict=True))


def _project(analytic: np.ndarray, case: Case, ctx: _Context) -> np.ndarray:
    """The analytic gradient in the form loss_gradient() has for this case."""
    if case.wide:
        return np.array([_dot(analytic, _exact(ctx.direction(case)))], dtype=object)
    return analytic


# ------------------------------------------------------------------ one row per formula


@dataclass
class _Tally:
    """Agreements over the inputs of one row."""

    inputs: list[str] = field(default_factory=list)
    worst: float = math.inf
    best: float = -math.inf
    unresolved: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, *agreements: Agreement) -> None:
        if name not in self.inputs:
            self.inputs.append(name)
        for a in agreements:
            self.worst = min(self.worst, a.digits)
            self.unresolved += a.unresolved

    def add_per_input(self, name: str, agreement: Agreement) -> None:
        """For the must-disagree row: the best agreement over inputs counts."""
        self.inputs.append(name)
        self.best = max(self.best, agreement.digits)

    def row(self, formula: str, seed: str, *, disagree: bool = False) -> AuditRow:
        notes = list(self.notes)
        if self.unresolved:
            notes.append(f"{self.unresolved} entries below FD resolution")
        if disagree:
            digits = self.best
            holds = bool(self.inputs) and digits <= MAX_DISAGREE_DIGITS
            expect = f"<= {MAX_DISAGREE_DIGITS:.0f} (must disagree)"
        else:
            digits = self.worst
            holds = bool(self.inputs) and digits >= REQUIRED_DIGITS
            expect = f">= {REQUIRED_DIGITS:.0f}"
        return AuditRow(formula, seed, tuple(self.inputs), digits, holds, expect, "; ".join(notes))


def _route_through_p(
    p: Sequence[mpmath.mpf], y: Sequence[mpmath.mpf], prec: int, bits: int
) -> mpmath.mpf | None:
    """-sum y log p at ``prec`` from ``p`` known to ``bits`` bits relative; None where that
    may not give the loss to FD_DIGITS digits. An error of 2**-bits relative in p_i is one of
    2**-bits absolute in log p_i, which swamps a loss that is itself that small: p_i = 1 -
    e**-2e308 rounds to 1 and -log p_i = e**-2e308 becomes 0."""
    with mpmath.workprec(prec):
        logs = [(yc, mpmath.log(pc)) for yc, pc in zip(y, p, strict=True) if yc != 0]
        loss = -mpmath.fsum(yc * lc for yc, lc in logs)
        bound = mpmath.fsum(yc * (1 + abs(lc)) for yc, lc in logs) * mpmath.ldexp(1, 2 - bits)
        if bound > abs(loss) * mpmath.mpf(10) ** -FD_DIGITS:
            return None
        return loss


def _naive_loss(case: Case) -> mpmath.mpf | None:
    """-sum y log(e^z / sum e^z), unshifted, at ROUTE_PREC plus the exponent of z."""
    extra = max([0] + [int(mpmath.mag(v)) for v in case.z if mpmath.isfinite(v) and v != 0])
    prec = ROUTE_PREC + extra
    with mpmath.workprec(prec):
        e = [mpmath.exp(v) for v in case.z]
        total = mpmath.fsum(e)
        # each p_i = e_i / total within (K + 2) roundings: 16 bits for K <= 2**14
        return _route_through_p([v / total for v in e], case.y, prec, prec - 16)


def _pairwise_loss(case: Case) -> mpmath.mpf:
    """sum_i y_i log1p(sum_{k != i} e^{z_k - z_i}): -log p_i without any shift by max z."""
    extra = max([0] + [int(mpmath.mag(v)) for v in case.z if mpmath.isfinite(v) and v != 0])
    with mpmath.workprec(ROUTE_PREC + extra):
        terms = []
        for i, yi in enumerate(case.y):
            if yi == 0:
                continue
            s = mpmath.fsum(mpmath.exp(case.z[k] - case.z[i]) for k in range(len(case.z)) if k != i)
            terms.append(yi * mpmath.log1p(s))
        return mpmath.fsum(terms)


def _row_value(cases: Sequence[Case], ctx: _Context) -> AuditRow:
    tally = _Tally()
    skipped: list[str] = []
    for case in cases:
        loss = gold.cross_entropy(case.logits, case.target, prec=GOLD_PREC)
        routes = [agreement_digits([loss], [_pairwise_loss(case)])]
        naive = _naive_loss(case)
        from_probs = None
        p = gold.softmax(case.logits, prec=GOLD_PREC)
        if _route_through_p(p, case.y, GOLD_PREC, GOLD_PREC - 96) is not None:
            from_probs = gold.cross_entropy_from_probs(p, case.target, prec=GOLD_PREC)
        for route in (naive, from_probs):
            if route is None:
                skipped.append(case.name)
            else:
                routes.append(agreement_digits([loss], [route]))
        tally.add(case.name, *routes)
    tally.notes.append(
        "gold vs 3 routes: sum y log1p(sum e^(z_k - z_i)); naive e^z / sum e^z; from_probs(softmax)"
    )
    if skipped:
        tally.notes.append(
            "routes via p skipped at "
            + ", ".join(dict.fromkeys(skipped))
            + " (p_max = 1 - e**-2e308 rounds to 1)"
        )
    return tally.row("L = -sum y log softmax(z)", "CE as -sum y_i log p_i, log p via the max shift")


def _row_grad_wrt_probs(cases: Sequence[Case], ctx: _Context) -> AuditRow:
    tally = _Tally()
    for case in cases:
        if case.wide:
            continue
        probs = gold.softmax(case.z, prec=GOLD_PREC)
        analytic = gold.cross_entropy_grad_wrt_probs(probs, case.y, prec=GOLD_PREC)
        mask = np.array([v > 0 for v in probs])
        embed = _embed(probs, mask)
        est = fd.jacobian(
            lambda q, embed=embed, y=case.y: _at_wp(gold.cross_entropy_from_probs)(embed(q), y),
            probs[mask],
            digits=FD_DIGITS,
        )
        full = _scatter(est, mask)
        tally.add(case.name, agreement_digits(analytic, full.value, full.error))
    return tally.row("dL/dyhat = -y / yhat", "unfused route: d/dyhat_i of -sum y log yhat")


def _row_softmax_jacobian(cases: Sequence[Case], ctx: _Context) -> AuditRow:
    tally = _Tally()
    for case in cases:
        if case.wide:
            continue
        analytic = gold.softmax_jacobian(case.logits, prec=GOLD_PREC)
        mask = case.finite
        embed = _embed(case.z, mask)
        est = fd.jacobian(
            lambda x, embed=embed: _at_wp(gold.softmax)(embed(x)), case.z[mask], digits=FD_DIGITS
        )
        full = _scatter(est, mask)
        tally.add(case.name, agreement_digits(analytic, full.value, full.error))
    return tally.row("dp/dz = diag(p) - p p^T", "quotient rule on e^z_i / sum_k e^z_k")


def _chain_product(case: Case) -> np.ndarray:
    """(-y / yhat)^T J from the gold pieces, summed at ROUTE_PREC."""
    probs = gold.softmax(case.z, prec=GOLD_PREC)
    outer = gold.cross_entropy_grad_wrt_probs(probs, case.y, prec=GOLD_PREC)
    jac = gold.softmax_jacobian(case.z, prec=GOLD_PREC)
    k = len(case.z)
    return np.array([_dot(outer, jac[:, j]) for j in range(k)], dtype=object)


def _row_chain_rule(cases: Sequence[Case], ctx: _Context) -> AuditRow:
    tally = _Tally()
    for case in cases:
        if case.wide:
            continue
        chain = _chain_product(case)
        fused = gold.cross_entropy_grad(case.logits, case.target, prec=GOLD_PREC)
        fdg = ctx.loss_gradient(case)
        tally.add(
            case.name, agreement_digits(chain, fdg.value, fdg.error), agreement_digits(chain, fused)
        )
    tally.notes.append("vs FD of L and vs gold's fused gradient")
    return tally.row("(-y/yhat)^T J = dL/dz", "chain rule through softmax")


def _fused_formula(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(sum y) p - y evaluated literally from the gold softmax, and its error bound: the
    subtraction keeps the absolute error of (sum y) p_j, at most GOLD_REL_ERR relative, so
    an entry that cancels below it (p_j rounded to 1 at [1e308, -1e308]) is unresolved."""
    p = gold.softmax(case.z, prec=GOLD_PREC)
    total = case.target_sum
    with mpmath.workprec(ROUTE_PREC):
        value = np.array([total * pj - yj for pj, yj in zip(p, case.y, strict=True)], dtype=object)
        error = np.array([total * pj * GOLD_REL_ERR for pj in p], dtype=object)
    return value, error


def _row_fused_gradient(cases: Sequence[Case], ctx: _Context) -> AuditRow:
    tally = _Tally()
    for case in cases:
        fdg = ctx.loss_gradient(case)
        gold_grad = gold.cross_entropy_grad(case.logits, case.target, prec=GOLD_PREC)
        formula, formula_err = _fused_formula(case)
        if case.wide:  # |<err, v>| <= <err, |v|>, v > 0
            formula_err = _project(formula_err, case, ctx)
        tally.add(
            case.name,
            agreement_digits(_project(formula, case, ctx), fdg.value, fdg.error + formula_err),
            agreement_digits(_project(gold_grad, case, ctx), fdg.value, fdg.error),
        )
    tally.notes.append("formula and gold's cross_entropy_grad, vs FD of L")
    return tally.row("dL/dz = (sum y) p - y", "fused gradient: sum_i y_i (delta_ij - p_j)")


def _row_p_minus_y(cases: Sequence[Case], ctx: _Context) -> AuditRow:
    tally = _Tally()
    for case in cases:
        with mpmath.workprec(ROUTE_PREC):
            if abs(case.target_sum - 1) < mpmath.mpf("0.25"):
                continue
        p = gold.softmax(case.z, prec=GOLD_PREC)
        with mpmath.workprec(ROUTE_PREC):
            wrong = np.array([pj - yj for pj, yj in zip(p, case.y, strict=True)], dtype=object)
        fdg = ctx.loss_gradient(case)
        tally.add_per_input(
            case.name, agreement_digits(_project(wrong, case, ctx), fdg.value, fdg.error)
        )
    tally.notes.append("inputs with |sum y - 1| >= 0.25")
    return tally.row("dL/dz != p - y if sum y != 1", "p - y assumes sum y = 1", disagree=True)


def _row_hessian(cases: Sequence[Case], ctx: _Context) -> AuditRow:
    tally = _Tally()
    for case in cases:
        if case.wide:
            continue
        analytic = gold.cross_entropy_hessian(case.logits, case.target, prec=GOLD_PREC)
        jac = gold.softmax_jacobian(case.z, prec=GOLD_PREC)
        total = case.target_sum
        with mpmath.workprec(ROUTE_PREC):
            formula = np.vectorize(lambda v, total=total: total * v, otypes=[object])(jac)
        mask = case.finite
        embed = _embed(case.z, mask)
        est = fd.jacobian(
            lambda x, embed=embed, y=case.y: _at_wp(gold.cross_entropy_grad)(embed(x), y),
            case.z[mask],
            digits=FD_DIGITS,
        )
        full = _scatter(est, mask)
        tally.add(
            case.name,
            agreement_digits(analytic, full.value, full.error),
            agreement_digits(formula, full.value, full.error),
        )
    tally.notes.append("gold Hessian and the formula, vs FD of gold's fused gradient")
    return tally.row(
        "d2L/dz2 = (sum y)(diag(p) - p p^T)", "the fused gradient differentiated once more"
    )


def _batch(cases: Sequence[Case], seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The narrow K=5 cases stacked plus random rows, with dyadic targets (sum y = 1)."""
    rng = np.random.default_rng(seed + 1)
    narrow = [c for c in cases if len(c.logits) == 5 and not c.wide]
    rows = [c.logits.astype(np.float64) for c in narrow]
    names = [c.name for c in narrow if not c.name.startswith("rand")]
    while len(rows) < 4:
        rows.append(rng.normal(0.0, 4.0, 5))
    names.append(f"{len(rows) - len(names)} random rows")
    rows.append(np.array([40.0, 0.0, -1.0, 2.0, 0.5]))
    names.append("[40, 0, -1, 2, 0.5]")
    z = np.stack(rows)
    y = np.stack([_dyadic_target(rng, np.isfinite(row)) for row in z])
    return z, y, names


def _row_batched(cases: Sequence[Case], ctx: _Context) -> AuditRow:
    tally = _Tally()
    z, y, names = _batch(cases, ctx.seed)
    name = f"{z.shape[0]}x{z.shape[1]} batch: {', '.join(names)}; dyadic Y"
    energy = gold.cross_entropy(z, y, reduction="sum", prec=GOLD_PREC)
    logp = gold.log_softmax(z, prec=GOLD_PREC)
    with mpmath.workprec(ROUTE_PREC):
        by_formula = -mpmath.fsum(
            yv * lv for yv, lv in zip(y.ravel(), logp.ravel(), strict=True) if yv != 0
        )
    p = gold.softmax(z, prec=GOLD_PREC)
    with mpmath.workprec(ROUTE_PREC):
        p_minus_y = p - _exact(y)
        p_err = p * GOLD_REL_ERR  # what a p_j rounded near 1 may lose to the subtraction
    mask = np.isfinite(z)
    zm = _exact(z)
    est = fd.jacobian(
        lambda x: _at_wp(gold.cross_entropy)(_embed(zm, mask)(x), y, reduction="sum"),
        zm[mask],
        digits=FD_DIGITS,
    )
    full_v = np.full(z.shape, mpmath.mpf(0), dtype=object)
    full_e = np.full(z.shape, mpmath.mpf(0), dtype=object)
    full_v[mask], full_e[mask] = est.value, est.error
    grad = gold.cross_entropy_grad(z, y, reduction="sum", prec=GOLD_PREC)
    tally.add(
        name,
        agreement_digits([energy], [by_formula]),
        agreement_digits(p_minus_y, full_v, full_e + p_err),
        agreement_digits(grad, full_v, full_e),
    )
    tally.notes.append("E vs -sum Y*log_softmax; P - Y and gold grad vs FD of E")
    return tally.row("E = -sum Y.L, grad_Z E = P - Y", "batched form, rows with sum y = 1")


_OPTION_SETS: tuple[tuple[str, dict[str, Any], bool], ...] = (
    ("weight / mean", {"weight": np.array([0.5, 2.0, 1.0, 0.25, 3.0]), "reduction": "mean"}, True),
    (
        "smoothing 0.1 / ignore_index / mean",
        {"label_smoothing": 0.1, "ignore_index": -100, "reduction": "mean"},
        True,
    ),
    (
        "weight / smoothing 0.2 / soft y / sum",
        {
            "weight": np.array([1.5, 0.5, 1.0, 2.0, 0.75]),
            "label_smoothing": 0.2,
            "reduction": "sum",
        },
        False,
    ),
    (
        "weight / smoothing 0.05 / ignore_index / none",
        {
            "weight": np.array([0.5, 2.0, 1.0, 0.25, 3.0]),
            "label_smoothing": 0.05,
            "ignore_index": 3,
            "reduction": "none",
        },
        True,
    ),
)


def _row_options(cases: Sequence[Case], ctx: _Context) -> AuditRow:
    tally = _Tally()
    rng = np.random.default_rng(ctx.seed + 2)
    z = rng.normal(0.0, 3.0, (4, 5))
    z[1, 0] = 45.0  # a dominant class
    for name, options, indices in _OPTION_SETS:
        if indices:
            target = np.array([0, 2, 4, 1])
            if "ignore_index" in options:
                target[2] = options["ignore_index"]
        else:
            target = rng.uniform(0.0, 1.0, z.shape)
        zm = _exact(z)

        def loss(x: np.ndarray, target: Any = target, options: dict = options) -> Any:
            value = _at_wp(gold.cross_entropy)(x, target, **options)
            if options.get("reduction", "none") == "none":
                return mpmath.fsum(value)
            return value

        est = fd.jacobian(loss, zm, digits=FD_DIGITS)
        grad = gold.cross_entropy_grad(z, target, prec=GOLD_PREC, **options)
        tally.add(name, agreement_digits(grad, est.value, est.error))
    tally.notes.append("gold's cross_entropy_grad vs FD of gold's reduced loss, 4x5 batch")
    return tally.row(
        "grad of the reduced loss, options", "effective target u: (sum u) p - u, / sum w for mean"
    )


#: The audited formulas by key, in the order of DESIGN §1.
FORMULAS: dict[str, Callable[[Sequence[Case], _Context], AuditRow]] = {
    "value": _row_value,
    "grad-wrt-probs": _row_grad_wrt_probs,
    "softmax-jacobian": _row_softmax_jacobian,
    "chain-rule": _row_chain_rule,
    "fused-gradient": _row_fused_gradient,
    "p-minus-y": _row_p_minus_y,
    "hessian": _row_hessian,
    "batched": _row_batched,
    "options": _row_options,
}


@standard_precision
def run_audit(
    only: Iterable[str] | None = None,
    *,
    seed: int = DEFAULT_SEED,
    random_cases: int = 4,
    wide: bool = True,
) -> list[AuditRow]:
    """Audit the formulas named in ``only`` (keys of :data:`FORMULAS`; default all)."""
    keys = list(FORMULAS) if only is None else list(only)
    unknown = [k for k in keys if k not in FORMULAS]
    if unknown:
        raise ValueError(f"unknown formula {unknown[0]!r}; choose from {', '.join(FORMULAS)}")
    cases = build_cases(seed=seed, random_cases=random_cases, wide=wide)
    ctx = _Context(seed)
    return [FORMULAS[k](cases, ctx) for k in keys]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the audit table; 0 if every row holds, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="xentcheck audit",
        description="Prove the formulas of DESIGN §1 against high-precision finite differences.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 random inputs (K=2, 3), no 4096-wide input"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(FORMULAS),
        metavar="FORMULA",
        help=f"audit only this formula (repeatable): {', '.join(FORMULAS)}",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of random inputs")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = run_audit(
        args.only, seed=args.seed, random_cases=2 if args.quick else 4, wide=not args.quick
    )
    elapsed = time.perf_counter() - start
    print(format_audit(rows))
    print(f"\ninputs (random ones from --seed {args.seed}):")
    print(
        describe_cases(
            build_cases(seed=args.seed, random_cases=2 if args.quick else 4, wide=not args.quick)
        )
    )
    failed = [r.formula for r in rows if not r.holds]
    verdict = "all hold" if not failed else f"{len(failed)} FAILED: " + "; ".join(failed)
    print(f"\n{len(rows)} formulas, {verdict} ({elapsed:.1f} s)")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
