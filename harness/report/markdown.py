"""``conformance.md``: the scoreboard, max-ulp tables per dtype, edge behaviour, failures.

Rendered with tabulate from the JSON-ready run data, so it can be re-rendered later from
``conformance.json`` (``xentcheck report``). Every value from the data (adapter names,
versions, reasons, notes, inputs, reproducers: a report may come from anyone) goes
through :func:`harness.text.markdown_cell` or :func:`harness.text.markdown_code`, so no
raw HTML, ``|`` or newline reaches the rendered page.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.adapters.contract import FUNCTIONS
from harness.findings import GRADES, OUTSIDE, REFUSED
from harness.report import write_atomic
from harness.text import markdown_cell as _c
from harness.text import markdown_code as _code
from references import dialects

FILENAME = "conformance.md"

#: Checks whose grades make up the scoreboard and the max-ulp tables (accuracy against
#: gold); the others appear in the failure list.
ACCURACY_CHECKS = ("value", "gradient", "jvp", "hvp")

_ORDER = GRADES


def _rank(grade: str | None) -> int:
    return -1 if grade is None else _ORDER.index(grade)


def _ulp(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if value < 10:
        return f"{value:.2f}"
    if value < 1e5:
        return f"{value:.0f}"
    return f"{value:.1e}"


def _label(adapter: dict[str, Any]) -> str:
    version = adapter.get("version")
    return _c(f"{adapter['name']} {version}" if version else adapter["name"])


def verdicts(data: dict[str, Any]) -> str:
    rows = []
    for a in data["adapters"]:
        failing = sum(1 for r in a["results"] if not r["passed"])
        rows.append([_c(a["name"]), _c(a.get("version") or ""),
                     _c(a.get("dialect") or "pytorch"), _c(a["verdict"]),
                     failing, len(a["results"]), _c(a.get("reason") or "")])
    table = tabulate(rows, ["adapter", "version", "dialect", "verdict", "failing results",
                            "results", "reason"], tablefmt="github")
    quarantined = [f"- **{_c(a['name'])}** {_code(n['function'])}: {n['calls']} calls not "
                   f"run: {_c(n['reason'])}"
                   for a in data["adapters"] for n in a.get("not_run") or ()]
    if quarantined:
        table += ("\n\nNot run (the function or adapter hung or crashed again and again, "
                  "and was not called any more):\n\n" + "\n".join(quarantined))
    left_out = [f"- **{_c(s['name'])}**: {_c(s.get('reason') or '')}"
                for s in data.get("skipped") or ()]
    if left_out:
        table += "\n\nBuilt-ins left out of this run:\n\n" + "\n".join(left_out)
    return table


def difference_rows(data: dict[str, Any]) -> list[list[str]]:
    """One row per documented difference of each adapter graded under another dialect than
    PyTorch's: adapter, rule, what the library documents, PyTorch's convention, the
    source, and the rows it left recorded, not graded (outside contract or refused)."""
    rows = []
    for a in data["adapters"]:
        name = a.get("dialect") or dialects.DEFAULT.name
        if name not in dialects.DIALECTS or name == dialects.DEFAULT.name:
            continue
        for rule in dialects.DIALECTS[name].rules:
            grade = _RULE_RECORDS.get(rule.key)
            count = sum(r["grades"].get(f"{grade}: {rule.key}", 0) for r in a["results"])
            rows.append([a["name"], rule.key, rule.says, rule.pytorch, rule.source,
                         f"{count} {grade}" if grade else "graded under it"])
    return rows


#: The grade each rule records rows under (the others change the graded truth).
_RULE_RECORDS = {"target-distribution": OUTSIDE, "two-classes": OUTSIDE,
                 "refuses-nonfinite": REFUSED}
DIFFERENCE_HEAD = ["adapter", "rule", "the library documents", "the PyTorch convention",
                   "source", "rows"]


def differences(data: dict[str, Any]) -> str:
    rows = difference_rows(data)
    if not rows:
        return "Every adapter is graded under PyTorch's convention."
    return ("Adapters graded under their library's documented contract (`dialect`): these "
            "differences are not defects; failures above are defects under the library's "
            "own contract.\n\n" + tabulate([[_c(x) for x in row] for row in rows],
                                            DIFFERENCE_HEAD, tablefmt="github"))


def scoreboard(data: dict[str, Any]) -> str:
    """Adapter × function: the worst accuracy grade over every dtype and regime, with a
    mark when some result failed."""
    adapters = [a for a in data["adapters"] if a["verdict"] != "error"]
    rows = []
    for function in FUNCTIONS:
        row = [function]
        for a in adapters:
            results = [r for r in a["results"]
                       if r["function"] == function and r["check"] in ACCURACY_CHECKS]
            if not results:
                row.append("—" if function not in a["provides"] else "")
                continue
            worst = max((r["grade"] for r in results), key=_rank)
            failed = any(not r["passed"] for r in results)
            row.append(f"{worst}{' ✗' if failed else ''}")
        rows.append(row)
    return tabulate(rows, ["function"] + [_c(a["name"]) for a in adapters], tablefmt="github")


def max_ulp_tables(data: dict[str, Any]) -> str:
    """Per dtype, the largest error found (ulps) per function and adapter."""
    adapters = [a for a in data["adapters"] if a["verdict"] != "error"]
    parts = []
    for dtype in data["settings"]["dtypes"]:
        rows = []
        for function in FUNCTIONS:
            row = [function]
            for a in adapters:
                values = [r["max_ulp"] for r in a["results"]
                          if r["function"] == function and r["dtype"] == dtype
                          and r["check"] in ACCURACY_CHECKS]
                broken = any(r["grade"] == "broken" for r in a["results"]
                             if r["function"] == function and r["dtype"] == dtype
                             and r["check"] in ACCURACY_CHECKS)
                numeric = [v for v in values if isinstance(v, (int, float))]
                infinite = any(v == "inf" for v in values)
                if not values:
                    row.append("—")
                elif broken:  # NaN where finite is right (or the reverse): infinite error
                    row.append("inf (broken)")
                elif infinite:
                    row.append("inf")
                else:
                    row.append(_c(_ulp(max(numeric))) if numeric else "—")
            rows.append(row)
        parts.append(f"### {dtype}\n\n" + tabulate(
            rows, ["function"] + [_label(a) for a in adapters], tablefmt="github"))
    return "\n\n".join(parts)


def behaviour(data: dict[str, Any]) -> str:
    """What each adapter does where the reference leaves the answer ungraded."""
    seen: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    adapters = [a["name"] for a in data["adapters"] if a["verdict"] != "error"]
    for a in data["adapters"]:
        for r in a["results"]:
            if r["check"] != "edge":
                continue
            for note in r["notes"]:
                situation, _, what = note.partition(": ")
                seen[(situation, r["function"])][a["name"]].add(what)
    if not seen:
        return "No ungraded situations came up in this run."
    rows = [[_c(situation), _c(function)]
            + [_c(", ".join(sorted(seen[(situation, function)][name]))) or "—"
               for name in adapters]
            for situation, function in sorted(seen)]
    return tabulate(rows, ["situation", "function"] + [_c(a) for a in adapters],
                    tablefmt="github")


def failures(data: dict[str, Any], limit: int = 200) -> str:
    lines = []
    count = 0
    for a in data["adapters"]:
        name = _c(a["name"])
        if a["verdict"] == "error":
            lines.append(f"- **{name}**: could not be run: {_c(a.get('reason'))}")
            continue
        for r in a["results"]:
            if r["passed"]:
                continue
            count += 1
            if count > limit:
                continue
            w = r.get("worst") or {}
            head = (f"- **{name}** {_code(r['function'])} [{_c(r['dtype'])}-{_c(r['regime'])}] "
                    f"check {_code(r['check'])}: {_c(r['grade'])}, {r['failed']} of "
                    f"{r['cases']} rows failed; max {_c(_ulp(r['max_ulp']))} ulp, ratio "
                    f"{_c(_ulp(r['max_ratio']))}")
            lines.append(head)
            if r["notes"]:
                lines.append(f"  - {_c(r['notes'][0])}")
            reproducer = w.get("reproducer") or ""
            shown = reproducer[:300] + ("..." if len(reproducer) > 300 else "")
            if w and w["got"] is None and w["expected"] is None:
                lines.append(f"  - case {_code(w['case'])} row {_c(w['row'])}")
                lines.append(f"  - input: {_code(' '.join(w.get('input') or []))}")
                lines.append(f"  - reproduce: {_code(shown)}")
            elif w:
                lines.append(f"  - worst: case {_code(w['case'])} row {_c(w['row'])} index "
                             f"{_c(w['index'])}: got {_code(w['got'])}, should be "
                             f"{_code(w['expected'])} ({_c(_ulp(w['ulp']))} ulp, ratio "
                             f"{_c(_ulp(w['ratio']))}, bound {_c(_ulp(w['allowed_ulp']))} ulp)")
                lines.append(f"  - input: {_code(' '.join(w.get('input') or []))}")
                lines.append(f"  - reproduce: {_code(shown)}")
    if count > limit:
        lines.append(f"- ... and {count - limit} more (see conformance.json)")
    return "\n".join(lines) if lines else "None: every adapter passed."


def render(data: dict[str, Any]) -> str:
    s = data["settings"]
    p = data["platform"]
    return "\n\n".join([
        "# xentcheck conformance report",
        f"Profile {_code(s['profile'])} (N = {_c(s['ulp_budget'])} ulp), seed {_c(s['seed'])}, "
        f"{data['cases']} cases, dtypes {_c(', '.join(s['dtypes']))}, "
        f"regimes {_c(', '.join(s['regimes']))}. Python {_c(p['python'])}, NumPy "
        f"{_c(p['numpy'])}, mpmath {_c(p['mpmath'])} on {_c(p['machine'])}. Report "
        f"{_code(data.get('report_id', '-'))} (every file of the set carries it).",
        "## Verdicts", verdicts(data),
        "## Scoreboard\n\nWorst accuracy grade against the exact truth over every dtype and "
        "regime (checks `value`, `gradient`, `jvp` and `hvp`); ✗ marks a failing result, "
        "— not provided.",
        scoreboard(data),
        "## Documented differences from the PyTorch convention", differences(data),
        "## Largest error found, in ulps of the dtype", max_ulp_tables(data),
        "## Behaviour where the reference gives no grade", behaviour(data),
        "## Failures", failures(data),
    ]) + "\n"


def write(data: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / FILENAME
    write_atomic(path, render(data))
    return path
