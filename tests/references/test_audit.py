"""xentcheck.references.audit: the derivation audit holds on gold, and fails on planted
wrong formulas.

Each planted bug replaces one gold function (monkeypatch on ``xentcheck.references.gold``, which the
audit looks up at call time) by a plausible wrong formula; the row that audits that
formula must then fail and ``main`` must return 1. Plants run with ``--quick --only ROW``
to stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
import pytest

from xentcheck.references import audit, gold

REAL = {name: getattr(gold, name) for name in gold.__all__ if callable(getattr(gold, name))}


def _at(prec: int | None) -> mpmath.workprec:
    return mpmath.workprec(prec or gold.DEFAULT_PREC)


def _map(values: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(values, mpmath.mpf):
        return fn(values)
    return np.vectorize(fn, otypes=[object])(values)


# ------------------------------------------------------------------ the plants


def loss_off_by_1e_30(logits: Any, target: Any, *, prec: int | None = None, **kw: Any) -> Any:
    """A loss correct to 30 digits only: beyond float64, below the audit's 40."""
    value = REAL["cross_entropy"](logits, target, prec=prec, **kw)
    with _at(prec):
        return _map(value, lambda v: v * (1 + mpmath.mpf(10) ** -30))


def loss_assuming_sum_y_is_one(
    logits: Any, target: Any, *, prec: int | None = None, **kw: Any
) -> Any:
    """lse(z) - y.z: -sum y (z - lse) with the lse term's factor sum y taken as 1. Its
    gradient is exactly p - y (one row, probability target)."""
    lse = REAL["logsumexp"](logits, prec=prec)
    with _at(prec):
        z = np.asarray(logits, dtype=object)
        y = [mpmath.mpf(float(v)) if not isinstance(v, mpmath.mpf) else v for v in target]
        return lse - mpmath.fsum(yc * zc for yc, zc in zip(y, z, strict=True) if yc != 0)


def grad_wrt_probs_times_1_001(probs: Any, target: Any, *, prec: int | None = None) -> Any:
    value = REAL["cross_entropy_grad_wrt_probs"](probs, target, prec=prec)
    with _at(prec):
        return _map(value, lambda v: v * mpmath.mpf("1.001"))


def jacobian_off_diagonal_sign_flipped(logits: Any, *, prec: int | None = None) -> Any:
    jac = REAL["softmax_jacobian"](logits, prec=prec)
    k = jac.shape[-1]
    off = ~np.eye(k, dtype=bool)
    out = jac.copy()
    out[..., off] = -jac[..., off]
    return out


def jacobian_without_outer_product(logits: Any, *, prec: int | None = None) -> Any:
    """diag(p): the -p p^T term forgotten."""
    p = REAL["softmax"](logits, prec=prec)
    jac = REAL["softmax_jacobian"](logits, prec=prec)
    out = np.full(jac.shape, mpmath.mpf(0), dtype=object)
    for i in range(jac.shape[-1]):
        out[..., i, i] = p[..., i]
    return out


def grad_p_minus_y(logits: Any, target: Any, *, prec: int | None = None, **kw: Any) -> Any:
    """The textbook p - y, right only when sum y = 1 (one row, probability target)."""
    p = REAL["softmax"](logits, prec=prec)
    with _at(prec):
        y = [mpmath.mpf(float(v)) if not isinstance(v, mpmath.mpf) else v for v in target]
        return np.array([pc - yc for pc, yc in zip(p, y, strict=True)], dtype=object)


def hessian_without_sum_y(logits: Any, target: Any, *, prec: int | None = None) -> Any:
    return REAL["softmax_jacobian"](logits, prec=prec)


def log_softmax_without_log_sum(logits: Any, *, prec: int | None = None) -> Any:
    """z - max z: the shift kept, the log-sum-exp of the shifted logits forgotten."""
    with _at(prec):
        z = np.asarray(logits, dtype=np.float64)
        out = np.empty(z.shape, dtype=object)
        for idx, v in np.ndenumerate(z):
            out[idx] = mpmath.mpf(v) - mpmath.mpf(float(z[idx[:-1]].max()))
        return out


def grad_mean_over_rows_not_weights(
    logits: Any, target: Any, *, prec: int | None = None, **kw: Any
) -> Any:
    """reduction="mean" with class weights divided by N instead of sum of w_{t_n}."""
    if kw.get("reduction") == "mean" and kw.get("weight") is not None:
        total = REAL["cross_entropy_grad"](logits, target, prec=prec, **{**kw, "reduction": "sum"})
        with _at(prec):
            return _map(total, lambda v: v / len(logits))
    return REAL["cross_entropy_grad"](logits, target, prec=prec, **kw)


PLANTS = [
    # (row that must fail, gold function replaced, wrong formula)
    ("value", "cross_entropy", loss_off_by_1e_30),
    ("value", "cross_entropy", loss_assuming_sum_y_is_one),
    ("grad-wrt-probs", "cross_entropy_grad_wrt_probs", grad_wrt_probs_times_1_001),
    ("chain-rule", "cross_entropy_grad_wrt_probs", grad_wrt_probs_times_1_001),
    ("softmax-jacobian", "softmax_jacobian", jacobian_off_diagonal_sign_flipped),
    ("chain-rule", "softmax_jacobian", jacobian_without_outer_product),
    ("fused-gradient", "cross_entropy_grad", grad_p_minus_y),
    ("chain-rule", "cross_entropy_grad", grad_p_minus_y),
    ("p-minus-y", "cross_entropy", loss_assuming_sum_y_is_one),
    ("hessian", "cross_entropy_hessian", hessian_without_sum_y),
    ("hessian", "cross_entropy_grad", grad_p_minus_y),
    ("batched", "log_softmax", log_softmax_without_log_sum),
    ("options", "cross_entropy_grad", grad_mean_over_rows_not_weights),
]


@pytest.mark.parametrize(
    ("row", "name", "plant"), PLANTS, ids=[f"{r}-{p.__name__}" for r, _, p in PLANTS]
)
def test_planted_wrong_formula_fails_its_row(
    row: str,
    name: str,
    plant: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(gold, name, plant)
    rows = audit.run_audit([row], random_cases=2, wide=False)  # what --quick runs
    (result,) = rows
    assert not result.holds, audit.format_audit(rows)
    if row == "p-minus-y":
        assert result.digits > audit.MAX_DISAGREE_DIGITS
    else:
        assert result.digits < audit.REQUIRED_DIGITS
    # main turns the failed row into exit code 1 (the rows above, not run a second time)
    monkeypatch.setattr(audit, "run_audit", lambda *args, **kwargs: rows)
    assert audit.main(["--quick", "--only", row]) == 1
    out = capsys.readouterr().out
    assert "1 FAILED" in out and "NO" in out, out


def test_every_formula_has_a_plant() -> None:
    assert {row for row, _, _ in PLANTS} == set(audit.FORMULAS)


def test_plants_are_right_where_they_should_be() -> None:
    """The p - y plant is wrong only through sum y: with sum y = 1 it is the gradient, so
    the audit's failure is about the formula, not a broken test helper."""
    z, y = np.array([0.3, -1.0, 2.0]), np.array([0.25, 0.5, 0.25])
    with mpmath.workprec(400):
        for a, b in zip(
            grad_p_minus_y(z, y, prec=400), REAL["cross_entropy_grad"](z, y, prec=400), strict=True
        ):
            assert abs(a - b) < mpmath.mpf(10) ** -100


def test_main_returns_0_and_prints_the_table_on_gold(capsys: pytest.CaptureFixture[str]) -> None:
    assert audit.main([]) == 0
    out = capsys.readouterr().out
    for formula in ("diag(p) - p p^T", "(sum y) p - y", "-y / yhat", "P - Y", "chain rule"):
        assert formula in out
    for name in ("1e308 a", "37.43", "f32 1e7", "-inf", "4096 equal", "1e20"):
        assert name in out
    assert "9 formulas, all hold" in out


def test_rows_report_inputs_and_digits() -> None:
    rows = audit.run_audit(["softmax-jacobian", "p-minus-y"], random_cases=1, wide=False)
    jac, pmy = rows
    assert jac.holds and jac.digits >= audit.REQUIRED_DIGITS
    assert "1e308 a" in jac.inputs and "rand K=2" in jac.inputs
    assert pmy.holds and pmy.digits <= audit.MAX_DISAGREE_DIGITS
    assert "37.43" not in pmy.inputs  # sum y = 1 there: p - y is right, not tried


# ------------------------------------------------------------------ agreement_digits

mpf = mpmath.mpf


def test_agreement_of_exact_zeros_and_equal_values_is_infinite() -> None:
    assert audit.agreement_digits([mpf(0), mpf(3)], [mpf(0), mpf(3)]) == (math.inf, 0)
    assert audit.agreement_digits([mpf("inf")], [mpf("inf")]) == (math.inf, 0)


def test_agreement_counts_the_estimates_error_bound() -> None:
    """Agreement is never claimed beyond what the estimate certifies."""
    digits, _ = audit.agreement_digits([mpf(1)], [mpf(1)], [mpf(10) ** -30])
    assert digits == math.inf  # equal values: nothing to doubt
    with mpmath.workprec(400):
        close = mpf(1) + mpf(10) ** -70
    digits, _ = audit.agreement_digits([mpf(1)], [close], [mpf(10) ** -30])
    assert digits == pytest.approx(30)
    digits, _ = audit.agreement_digits([mpf(1)], [close])
    assert digits == pytest.approx(70)


def test_agreement_zero_against_nonzero_and_non_finite() -> None:
    assert audit.agreement_digits([mpf(0)], [mpf(1e-300)]).digits == 0
    assert audit.agreement_digits([mpf(1)], [mpf("nan")]).digits == 0
    assert audit.agreement_digits([mpf(1)], [mpf("inf")]).digits == 0
    assert audit.agreement_digits([gold.UNDEFINED], [mpf(1)]).digits == 0


def test_unresolved_entries_are_counted_not_scored() -> None:
    result = audit.agreement_digits(
        [mpf("1e-400"), mpf(2)], [mpf(0), mpf(2)], [mpf("1e-300"), mpf(0)]
    )
    assert result == (math.inf, 1)
    with pytest.raises(ValueError, match="shapes differ"):
        audit.agreement_digits([mpf(1)], [mpf(1), mpf(2)])


def test_format_and_unknown_formula() -> None:
    row = audit.AuditRow("f", "seed", ("a", "rand K=2", "rand K=3"), math.inf, True, ">= 40")
    table = audit.format_audit([row])
    assert "rand K=2,3, a" in table and "exact" in table
    with pytest.raises(ValueError, match="unknown formula"):
        audit.run_audit(["no-such-row"])
