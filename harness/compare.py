"""The regression guard: compare a conformance report with a baseline (``xentcheck compare``,
``xentcheck run --baseline``).

A result is identified by (adapter, check, function, dtype, regime). Results are compared
only on the same inputs: every report fingerprints the cases it graded (``inputs``), and a
result whose (dtype, regime) was graded on other cases in the two reports (another seed,
a changed sample, another corpus, hunted cases) is listed as *not comparable*, never as a
regression. The comparison is a *regression* when any of these holds on comparable
results:

- a result that passed in the baseline fails now;
- a result that is new (absent from the baseline) fails: nothing in the baseline accepted
  that failure, so it is newly failing too;
- an adapter's verdict went from ``pass`` to ``fail``/``error``, or from ``fail`` to
  ``error`` (it could not be run at all any more), or an adapter new to the report is not
  ``pass``;
- an adapter of the baseline is gone (a built-in that stopped importing), or a result of
  it is gone from inputs the current run graded too (a function no longer provided, a
  check that stopped running): what is not checked any more cannot pass. Results of a
  dtype and regime the current run did not ask for, or of a check its ``--check`` left
  out, are listed as missing;
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

**Across platforms.** The harness's own arithmetic gives the same bits on every machine,
but a candidate's need not: NumPy, PyTorch and XLA pick SIMD code by the CPU, and their
last bits move with it. When the two reports come from different platforms (operating
system, architecture or NumPy's SIMD targets), a max_ulp growth of a result whose grade
and pass/fail did not change is listed as *moved with the platform*, not as a regression;
everything else is judged as above.
"""

from __future__ import annotations

import hashlib
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
    not_comparable: list[Change] = field(default_factory=list)
    moved: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared: int = 0
    adapters: int = 0
    input_sets: int = 0

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def format(self) -> str:
        """A readable listing of what changed, regressions first."""
        rule = (f"max_ulp growth counts when current > max(baseline x {self.ulp_slack:g}, "
                f"baseline + {self.ulp_floor:g} ulp)")
        scope = (f"{self.compared} results of {self.adapters} adapters compared on "
                 f"{self.input_sets} identical input sets (dtype, regime)")
        if self.not_comparable:
            scope += f"; {len(self.not_comparable)} results not comparable (other inputs)"
        lines: list[str] = []
        if self.regressed:
            lines.append(f"REGRESSED: {len(self.regressions)} regression(s); {scope} ({rule})")
        else:
            lines.append(f"no regressions; {scope} ({rule})")
        lines += [f"note: {note}" for note in self.notes]
        for title, changes in (("regressions", self.regressions),
                               ("improvements", self.improvements),
                               ("new (not in the baseline)", self.new),
                               ("missing (in the baseline, not now)", self.missing),
                               ("moved with the platform (same grade)", self.moved),
                               ("not comparable (graded on other inputs)",
                                self.not_comparable)):
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


def input_sets(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    """The fingerprint of the cases of each (dtype, regime) a report graded (its
    ``inputs``): equal fingerprints, the same inputs."""
    digests: dict[tuple[str, str], list[str]] = {}
    for _, dtype, regime, digest in report.get("inputs") or ():
        digests.setdefault((dtype, regime), []).append(digest)
    out = {}
    for key, values in digests.items():
        h = hashlib.sha256()
        for value in sorted(values):
            h.update(value.encode())
        out[key] = h.hexdigest()
    return out


#: What tells two platforms apart for a candidate's last bits.
_PLATFORM_KEYS = ("system", "machine", "simd")


def _platform(report: dict[str, Any]) -> tuple[Any, ...]:
    p = report.get("platform") or {}
    return tuple(str(p.get(k)) for k in _PLATFORM_KEYS)


def compare(baseline: dict[str, Any], current: dict[str, Any], *,
            ulp_slack: float = ULP_SLACK, ulp_floor: float = ULP_FLOOR) -> Comparison:
    """Compare ``current`` against ``baseline`` (both conformance.json structures).

    Raises ``ValueError`` when either report records no input fingerprints (written by
    xentcheck before 0.2): their results could not be matched with their inputs."""
    if ulp_slack < 1.0:
        raise ValueError(f"ulp_slack must be >= 1, got {ulp_slack}")
    if ulp_floor < 0.0:
        raise ValueError(f"ulp_floor must be >= 0, got {ulp_floor}")
    for what, report in (("the baseline", baseline), ("the current report", current)):
        if "inputs" not in report:
            raise ValueError(f"{what} records no input fingerprints (written by xentcheck "
                             "before 0.2); make it again with this version")
    out = Comparison(ulp_slack=ulp_slack, ulp_floor=ulp_floor)
    out.notes = _settings_notes(baseline, current)
    base_sets, cur_sets = input_sets(baseline), input_sets(current)
    same_inputs = {key for key in base_sets if cur_sets.get(key) == base_sets[key]}
    out.input_sets = len(same_inputs)
    cross_platform = _platform(baseline) != _platform(current)
    if cross_platform:
        out.notes.append(
            "the reports come from different platforms ({} vs {}): candidates' last bits "
            "may move with the CPU".format(
                "/".join(_platform(baseline)), "/".join(_platform(current))))
    base_adapters, base_results = _index(baseline)
    cur_adapters, cur_results = _index(current)
    skipped = {s["name"]: s.get("reason") for s in current.get("skipped") or ()}

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
            why = (f"left out of the current run: {skipped[name]}" if name in skipped
                   else "not in the current report")
            out.regressions.append(Change("adapter gone", name, why))

    compared_adapters: set[str] = set()
    for key, now in cur_results.items():
        subject = _key_text(key)
        if (key[3], key[4]) not in same_inputs and (key[3], key[4]) in base_sets:
            out.not_comparable.append(Change("other inputs", subject, ""))
            continue
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
        compared_adapters.add(key[0])
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
            same_standing = (then.get("grade") == now.get("grade")
                             and then.get("passed") == now.get("passed"))
            if cross_platform and same_standing:
                out.moved.append(Change("ulp growth", subject, text))
                continue
            worst = now.get("reproducer")
            out.regressions.append(Change(
                "ulp growth", subject, text + (f"\n      reproduce: {worst}" if worst else "")))
        elif _grew(u_now, u_then, ulp_slack, ulp_floor):
            out.improvements.append(Change("ulp shrink", subject, text))
    out.adapters = len(compared_adapters)
    asked = (current.get("settings") or {}).get("checks")  # None: every check
    for key in base_results:
        adapter = cur_adapters.get(key[0])
        if key in cur_results or adapter is None or adapter.get("verdict") == "error":
            continue  # an adapter gone or in error is one regression above, not many
        if asked is not None and (key[1] not in asked or key[1] == "contract"):
            # (``contract`` covers the outputs the checks run called: fewer with fewer)
            why = (f"the current run's --check leaves {key[1]} out" if key[1] not in asked
                   else f"the current run's checks did not call {key[2]}")
            out.missing.append(Change("not run", _key_text(key), why))
            continue
        if (key[3], key[4]) not in same_inputs:
            if (key[3], key[4]) in cur_sets:
                out.not_comparable.append(Change("other inputs", _key_text(key), ""))
            else:  # the run did not ask for this dtype and regime (settings differ)
                out.missing.append(Change("not run", _key_text(key),
                                          f"no {key[3]} {key[4]} cases in the current run"))
            continue
        out.regressions.append(Change("result gone", _key_text(key),
                                      "not in the current report"))
    return out
