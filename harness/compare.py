"""The regression guard: compare a conformance report with a baseline (``xentcheck compare``,
``xentcheck run --baseline``).

A result is identified by (adapter, check, function, dtype, regime). The comparison is a
*regression* when any of these holds:

- a result that passed in the baseline fails now;
- a result that is new (absent from the baseline) fails: nothing in the baseline accepted
  that failure, so it is newly failing too;
- an adapter's verdict went from ``pass`` to ``fail``/``error``, or from ``fail`` to
  ``error`` (it could not be run at all any more), or an adapter new to the report is not
  ``pass``;
- a result's largest error in ulps grew beyond the slack (below).

Known failures recorded in the baseline (failing then, failing now) are *not* regressions:
that is what lets a project with a known defect keep a green CI job while still being
guarded against anything getting worse.

**The ulp slack.** ``max_ulp`` is the largest error found, in units in the last place. With
the same seed and inputs it is deterministic, but a library update may reorder a
summation and move the worst case by a fraction of an ulp or a small factor without any
real loss of accuracy. A growth counts as a regression when::

    current > max(baseline * ulp_slack, baseline + ulp_floor)

with ``ulp_slack = 2.0`` (error doubled: one bit of accuracy lost) and ``ulp_floor = 1.0``
(a change within one ulp is rounding noise, which matters for baselines near 0 where a
factor means nothing). A finite baseline that became ``inf`` or ``nan`` always counts;
a result that had no ulp measurement in the baseline (``None``) is not compared. The
mirror image (``baseline > max(current * ulp_slack, current + ulp_floor)``) is listed as
an improvement.

Results or adapters present in the baseline but missing now are listed (coverage shrank)
but are not regressions by themselves; an adapter that could not run shows up as verdict
``error``, which is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: Default multiplicative slack on max_ulp growth (2.0: one bit of accuracy).
ULP_SLACK = 2.0
#: Default absolute slack on max_ulp growth, in ulps (rounding noise).
ULP_FLOOR = 1.0

Key = tuple[str, str, str, str, str]


def _key_text(key: Key) -> str:
    adapter, check, function, dtype, regime = key
    return f"{adapter}: {check} {function}[{dtype}-{regime}]"


def _ulp_value(value: Any) -> float | None:
    """max_ulp as a float (JSON carries inf/nan as strings); None when not measured."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _ulp_text(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value < 10:
        return f"{value:.2f}"
    if value < 1e5:
        return f"{value:.0f}"
    return f"{value:.1e}"


def _grew(before: float | None, after: float | None, slack: float, floor: float) -> bool:
    """Whether ``after`` is worse than ``before`` beyond the slack (see the module doc)."""
    if before is None or after is None:
        return False
    if math.isnan(after):
        return not math.isnan(before)
    if math.isnan(before):
        return False
    if math.isinf(before):
        return False
    if math.isinf(after):
        return True
    return after > max(before * slack, before + floor)


@dataclass(frozen=True)
class Change:
    """One difference between the baseline and the current report."""

    kind: str  # "newly failing", "ulp growth", "verdict", "fixed", "ulp shrink", "new", ...
    subject: str
    detail: str

    def line(self) -> str:
        return f"{self.subject}: {self.detail}" if self.detail else self.subject


@dataclass
class Comparison:
    """What changed from a baseline report to the current one."""

    ulp_slack: float
    ulp_floor: float
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    new: list[Change] = field(default_factory=list)
    missing: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared: int = 0

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def format(self) -> str:
        """A readable listing of what changed, regressions first."""
        rule = (f"max_ulp growth counts when current > max(baseline x {self.ulp_slack:g}, "
                f"baseline + {self.ulp_floor:g} ulp)")
        lines: list[str] = []
        if self.regressed:
            lines.append(f"REGRESSED: {len(self.regressions)} regression(s) in "
                         f"{self.compared} results compared ({rule})")
        else:
            lines.append(f"no regressions in {self.compared} results compared ({rule})")
        lines += [f"note: {note}" for note in self.notes]
        for title, changes in (("regressions", self.regressions),
                               ("improvements", self.improvements),
                               ("new (not in the baseline)", self.new),
                               ("missing (in the baseline, not now)", self.missing)):
            if changes:
                lines.append(f"{title} ({len(changes)}):")
                lines += [f"  - [{c.kind}] {c.line()}" for c in changes]
        if len(lines) == 1 + len(self.notes):
            lines.append("unchanged")
        return "\n".join(lines)


def _index(report: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[Key, dict[str, Any]]]:
    adapters: dict[str, dict[str, Any]] = {}
    results: dict[Key, dict[str, Any]] = {}
    for adapter in report.get("adapters", []):
        name = str(adapter["name"])
        adapters[name] = adapter
        for r in adapter.get("results", []):
            key = (name, str(r["check"]), str(r["function"]), str(r["dtype"]), str(r["regime"]))
            results[key] = r
    return adapters, results


def _result_detail(result: dict[str, Any]) -> str:
    parts = [f"grade {result.get('grade')}",
             f"{result.get('failed', '?')}/{result.get('cases', '?')} rows failing",
             f"max_ulp {_ulp_text(_ulp_value(result.get('max_ulp')))}"]
    text = ", ".join(parts)
    if result.get("reproducer"):
        text += f"\n      reproduce: {result['reproducer']}"
    return text


def _settings_notes(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    notes = []
    before, after = baseline.get("settings") or {}, current.get("settings") or {}
    for name in ("profile", "seed", "ulp_budget", "max_classes", "cases_file"):
        if before.get(name) != after.get(name):
            notes.append(f"setting {name!r} differs: baseline {before.get(name)!r}, "
                         f"current {after.get(name)!r}")
    if baseline.get("schema") != current.get("schema"):
        notes.append(f"schema differs: baseline {baseline.get('schema')!r}, "
                     f"current {current.get('schema')!r}")
    return notes


def compare(baseline: dict[str, Any], current: dict[str, Any], *,
            ulp_slack: float = ULP_SLACK, ulp_floor: float = ULP_FLOOR) -> Comparison:
    """Compare ``current`` against ``baseline`` (both conformance.json structures)."""
    if ulp_slack < 1.0:
        raise ValueError(f"ulp_slack must be >= 1, got {ulp_slack}")
    if ulp_floor < 0.0:
        raise ValueError(f"ulp_floor must be >= 0, got {ulp_floor}")
    out = Comparison(ulp_slack=ulp_slack, ulp_floor=ulp_floor)
    out.notes = _settings_notes(baseline, current)
    base_adapters, base_results = _index(baseline)
    cur_adapters, cur_results = _index(current)

    for name, adapter in cur_adapters.items():
        verdict = adapter.get("verdict")
        reason = f" ({adapter['reason']})" if adapter.get("reason") else ""
        if name not in base_adapters:
            change = Change("new adapter", name, f"verdict {verdict}{reason}")
            (out.new if verdict == "pass" else out.regressions).append(change)
            continue
        before = base_adapters[name].get("verdict")
        if before == verdict:
            continue
        change = Change("verdict", name, f"{before} -> {verdict}{reason}")
        if verdict == "error" or (before == "pass" and verdict != "pass"):
            out.regressions.append(change)
        elif verdict == "pass":
            out.improvements.append(change)
        else:
            out.improvements.append(change)  # error -> fail: it runs again
    for name in base_adapters:
        if name not in cur_adapters:
            out.missing.append(Change("adapter", name, "not in the current report"))

    for key, now in cur_results.items():
        subject = _key_text(key)
        if key not in base_results:
            if key[0] not in base_adapters and now.get("passed"):
                continue  # covered by the "new adapter" line
            if now.get("passed"):
                out.new.append(Change("new", subject, f"passes, grade {now.get('grade')}"))
            else:
                out.regressions.append(Change("newly failing", subject,
                                              f"new and failing: {_result_detail(now)}"))
            continue
        out.compared += 1
        then = base_results[key]
        if then.get("passed") and not now.get("passed"):
            out.regressions.append(Change(
                "newly failing", subject,
                f"was grade {then.get('grade')}, now {_result_detail(now)}"))
        elif not then.get("passed") and now.get("passed"):
            out.improvements.append(Change(
                "fixed", subject, f"was grade {then.get('grade')} failing, now grade "
                                  f"{now.get('grade')} passing"))
        u_then, u_now = _ulp_value(then.get("max_ulp")), _ulp_value(now.get("max_ulp"))
        text = f"max_ulp {_ulp_text(u_then)} -> {_ulp_text(u_now)}"
        if _grew(u_then, u_now, ulp_slack, ulp_floor):
            worst = now.get("reproducer")
            out.regressions.append(Change(
                "ulp growth", subject, text + (f"\n      reproduce: {worst}" if worst else "")))
        elif _grew(u_now, u_then, ulp_slack, ulp_floor):
            out.improvements.append(Change("ulp shrink", subject, text))
    for key in base_results:
        adapter = cur_adapters.get(key[0])
        if key not in cur_results and adapter is not None and adapter.get("verdict") != "error":
            out.missing.append(Change("result", _key_text(key), "not in the current report"))
    return out
