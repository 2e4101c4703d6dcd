"""What checks find: one :class:`Finding` per check, function and case, and their roll-up.

A finding records how many rows a check looked at and how many failed, the rows per
grade, the largest errors and the worst element with everything needed to reproduce it.
:class:`Result` adds findings up per (adapter, check, function, dtype, regime): that is one
row of ``conformance.json``.

The worst element is the one of the worst grade with the largest error in ulps (ties: the
case id and index decide, :func:`worst_key`); a finding's ``max_ulp`` and ``max_ratio``
count every graded element, broken ones (an infinite error) included, so a result's
summary and its worst case describe the same element whenever the largest error lies in
the worst grade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np

from xentcheck.harness.cases import Case, encode_floats
from xentcheck.references.gold import UNDEFINED

#: Row labels of the checks that hold or not (no ulp grading): rows per outcome.
HOLDS, VIOLATED = "holds", "violated"

#: Distinct notes a result keeps (sorted, so that the choice does not depend on order).
MAX_NOTES = 5

#: How many input entries a worst-case record shows (the reproducer has them all).
SHOWN_ENTRIES = 16

#: Rows recorded, not graded, under an adapter's dialect (xentcheck.references.dialects): an input
#: outside the library's documented domain, an exception the library documents for it.
OUTSIDE, REFUSED = "outside contract", "refused"

#: What a passing result's worst case keeps: where its largest error is, and how large.
PASSING_WORST = ("case", "row", "index", "ulp", "ratio", "severity")

#: Every grade, least severe first.
GRADES = (OUTSIDE, REFUSED, "exact", "faithful", "ulp≤N", "stable", "holds", "unstable",
          "violated", "broken")

_SEVERITY = {OUTSIDE: -1, REFUSED: -1, "exact": 0, "faithful": 1, "ulp≤N": 2, "stable": 3,
             "holds": 3, "unstable": 4, "violated": 4, "broken": 5}


@dataclass
class Worst:
    """The worst element a check saw, self-explaining: input, got, should be, numbers."""

    case_id: str
    row: int | None
    index: list[int]
    input: list[str]  # the row's inputs as hex floats (first SHOWN_ENTRIES)
    got: str | None  # the candidate's value as a hex float (None: no value)
    expected: str | None  # the exact value, 25 significant digits
    ulp: float | None
    ratio: float | None
    allowed_ulp: float | None  # the stability bound in ulps at that element
    reproducer: str
    severity: int = 0
    #: what the call took besides the logits (:func:`call_inputs`): ``target_kind``,
    #: ``target`` (the row's, as strings) and ``options``; empty for functions of the
    #: logits alone
    call: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case_id, "row": self.row, "index": self.index, "input": self.input,
            "got": self.got, "expected": self.expected, "ulp": _num(self.ulp),
            "ratio": _num(self.ratio), "allowed_ulp": _num(self.allowed_ulp),
            "severity": self.severity, **self.call,
        }


@dataclass
class Finding:
    """One check of one function on one case."""

    check: str
    function: str
    case: Case
    rows: int
    failed: int
    grades: dict[str, int]
    grade: str | None = None
    max_ulp: float | None = None
    max_ratio: float | None = None
    worst: Worst | None = None
    note: str = ""
    budget: str | None = None


@dataclass
class Result:
    """Findings added up for one (adapter, check, function, dtype, regime)."""

    adapter: str
    check: str
    function: str
    dtype: str
    regime: str
    cases: int = 0  # rows checked
    failed: int = 0  # rows failed
    grades: dict[str, int] = field(default_factory=dict)
    grade: str | None = None
    max_ulp: float | None = None
    max_ratio: float | None = None
    worst: Worst | None = None
    notes: list[str] = field(default_factory=list)
    budget: str | None = None

    @property
    def passed(self) -> bool:
        return self.failed == 0

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.adapter, self.check, self.function, self.dtype, self.regime)

    def add(self, finding: Finding) -> None:
        self.cases += finding.rows
        self.failed += finding.failed
        for grade, count in finding.grades.items():
            self.grades[grade] = self.grades.get(grade, 0) + count
        if finding.grade is not None and (
            self.grade is None or _SEVERITY[finding.grade] > _SEVERITY[self.grade]
        ):
            self.grade = finding.grade
        self.max_ulp = _max(self.max_ulp, finding.max_ulp)
        self.max_ratio = _max(self.max_ratio, finding.max_ratio)
        if finding.worst is not None and (
            self.worst is None or _worse(finding.worst, self.worst)
        ):
            self.worst = finding.worst
        if finding.note and finding.note not in self.notes:
            self.notes = sorted([*self.notes, finding.note])[:MAX_NOTES]
        if finding.budget:
            self.budget = finding.budget

    def _worst_dict(self) -> dict[str, Any] | None:
        """The worst case: in full for a failing result; a passing one's says only where
        its largest error is (:data:`PASSING_WORST`, the report's size)."""
        if self.worst is None:
            return None
        worst = self.worst.to_dict()
        return worst if not self.passed else {k: worst[k] for k in PASSING_WORST}

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check, "function": self.function, "dtype": self.dtype,
            "regime": self.regime, "grade": self.grade, "passed": self.passed,
            "cases": self.cases, "failed": self.failed, "grades": dict(self.grades),
            "max_ulp": _num(self.max_ulp), "max_ratio": _num(self.max_ratio),
            "worst": self._worst_dict(),
            "reproducer": self.worst.reproducer if self.worst else None,
            "notes": list(self.notes), "budget": self.budget,
        }


def worst_key(severity: int, ulp: float | None, case_id: str, index: list[int]) -> tuple:
    """A total order on worst elements (larger is worse), independent of the order in
    which cases are met, so that merged shards pick the same worst as a single run."""
    u = ulp if ulp is not None and not math.isnan(ulp) else -1.0
    return (severity, u, [-ord(c) for c in case_id], [-i for i in index])


def _worse(a: Worst, b: Worst) -> bool:
    return worst_key(a.severity, a.ulp, a.case_id, a.index) > worst_key(
        b.severity, b.ulp, b.case_id, b.index)


def _max(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None and not math.isnan(v)]
    return max(values) if values else None


def _num(value: float | None) -> float | str | None:
    """JSON has no inf or NaN: those travel as strings."""
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def severity(grade: str | None) -> int:
    return -1 if grade is None else _SEVERITY[grade]


def hex_value(value: Any) -> str | None:
    if value is None:
        return None
    return encode_floats(np.asarray(value).reshape(1))[0]


def exact_text(value: Any) -> str:
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, mpmath.mpf):
        with mpmath.workprec(96):  # rounded first: an exact value may carry a long mantissa
            return mpmath.nstr(+value, 25)
    if isinstance(value, np.floating):  # a fast-tier value (longdouble): its own digits
        return np.format_float_scientific(value, unique=True, trim="-")
    return repr(value)


#: Functions whose call takes the case's target (the others take logits or a tangent).
TARGET_FUNCTIONS = ("cross_entropy", "cross_entropy_grad", "cross_entropy_from_probs",
                    "cross_entropy_grad_wrt_probs", "cross_entropy_jvp", "cross_entropy_hvp")
#: Functions whose call takes the case's options (as the adapter contract passes them).
OPTION_FUNCTIONS = ("cross_entropy", "cross_entropy_grad", "cross_entropy_jvp",
                    "cross_entropy_hvp")


def call_inputs(case: Case, function: str, row: int | None) -> dict[str, Any]:
    """What a worst-case record shows of the call besides the logits: for a function that
    takes a target, ``target_kind`` and the target of ``row`` (every row's when ``row`` is
    None, e.g. a reduced loss), as strings (class indices, or hex floats, first
    :data:`SHOWN_ENTRIES`); for one that takes options, ``options`` as the case's JSON writes
    them (floats as hex floats; ``weight`` cut to its first entries). Empty otherwise.

    >>> case = Case(np.array([[0.0, 1.0]]), np.array([1]), "indices",
    ...             {"label_smoothing": 0.25, "reduction": "mean"}, "float64", "moderate", "c")
    >>> shown = call_inputs(case, "cross_entropy", 0)
    >>> shown["target_kind"], shown["target"], shown["options"]["reduction"]
    ('indices', ['1'], 'mean')
    >>> shown["options"]["label_smoothing"]
    '0x1.0000000000000p-2'
    >>> call_inputs(case, "softmax", 0)
    {}
    """
    out: dict[str, Any] = {}
    if function not in TARGET_FUNCTIONS:
        return out
    out["target_kind"] = case.target_kind
    if case.target_kind == "indices":
        flat = np.asarray(case.target).reshape(-1)
        if row is not None and 0 <= row < flat.size:
            out["target"] = [str(int(flat[row]))]
        else:
            out["target"] = [str(int(t)) for t in flat[:SHOWN_ENTRIES]]
            if flat.size > SHOWN_ENTRIES:
                out["target"].append(f"... ({flat.size} entries)")
    else:
        out["target"] = input_row(case.target, row)
    if function in OPTION_FUNCTIONS:
        out["options"] = {
            key: (input_row(np.asarray(value), None) if key == "weight"
                  else float.hex(float(value)) if key == "label_smoothing" else value)
            for key, value in case.options.items()}
    return out


def input_row(array: np.ndarray, row: int | None) -> list[str]:
    if row is not None and array.ndim > 1 and not 0 <= row < array.shape[0]:
        return []  # an empty batch (N = 0) has no row to show
    values = array if row is None or array.ndim == 1 else array[row]
    flat = np.asarray(values).reshape(-1)
    shown = encode_floats(flat[:SHOWN_ENTRIES])
    if flat.size > SHOWN_ENTRIES:
        shown.append(f"... ({flat.size} entries)")
    return shown
