"""``conformance.md``: adapters, grade legend, scoreboards, max-ulp tables, edge behaviour,
failures.

Rendered with tabulate from the JSON-ready run data, so it can be re-rendered later from
``conformance.json`` (``xentcheck report``). Every value from the data (adapter names,
versions, reasons, notes, inputs, targets, options, reproducers: a report may come from
anyone) goes through :func:`xentcheck.harness.text.markdown_cell` or
:func:`xentcheck.harness.text.markdown_code`, so no raw HTML, ``|`` or newline reaches the
rendered page. The only fenced code (the ``jq`` line that lists the failures not shown)
holds no text from the data, only an adapter's index.

The layout: the adapters once, with their versions (tables elsewhere name them by their
short name only); what each grade means; the scoreboard over every dtype and one per
dtype; the largest errors; what each adapter does where the reference gives no grade
(calls never made marked apart from calls that raised); then the failures of every
adapter, worst first, at most :data:`FAILURES_PER_ADAPTER` each, each with its worst
element, the target and options it was called with, and where to find the rest.

The helpers without a leading underscore return plain (unescaped) text and are shared
with the HTML writer, so both formats say the same thing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from xentcheck.harness.adapters.contract import FUNCTIONS
from xentcheck.harness.findings import GRADES, OUTSIDE, REFUSED, severity
from xentcheck.harness.report import write_atomic
from xentcheck.harness.text import markdown_cell as _c
from xentcheck.harness.text import markdown_code as _code
from xentcheck.references import dialects

FILENAME = "conformance.md"

#: Checks whose grades make up the scoreboard and the max-ulp tables (accuracy against
#: gold); the others appear in the failure list.
ACCURACY_CHECKS = ("value", "gradient", "jvp", "hvp")

#: Failing results shown per adapter, worst first (the rest: ``conformance.json``).
FAILURES_PER_ADAPTER = 20

#: Failing results the HTML report shows per adapter (a table that scrolls less than
#: Markdown prose does).
FAILURES_PER_ADAPTER_HTML = 40

#: Longest reproducer shown in full (a longer one is cut; the JSON has it whole).
REPRODUCER_SHOWN = 300

#: The edge-behaviour mark of a call that was never made (the adapter does not accept
#: the function or an option the case needs), and what the edge check records then
#: (:data:`xentcheck.harness.checks.edges.NOT_OFFERED`).
NOT_OFFERED_MARK, NOT_OFFERED = "—", "not offered"

_ORDER = GRADES

#: What every grade of :data:`xentcheck.harness.findings.GRADES` means ("N": the profile's
#: ulp budget). A test checks that no grade is left out.
GRADE_MEANINGS: dict[str, str] = {
    OUTSIDE: "the input lies outside the library's documented domain (its dialect, see "
             "the documented differences): recorded, not graded",
    REFUSED: "the library raised the exception it documents for this input (its dialect): "
             "recorded, not graded",
    "exact": "every element within 0.5 ulp of the exact value (correctly rounded)",
    "faithful": "every element within 1 ulp of the exact value",
    "ulp≤N": "every element within N ulps of the exact value",
    "stable": "more than N ulps, but within the error bound of the textbook shifted "
              "algorithm for that input (stability ratio ≤ 1)",
    "holds": "a property check (invariant, consistency, determinism, ...) held on the row",
    "unstable": "more than N ulps and beyond the textbook algorithm's bound (stability "
                "ratio > 1)",
    "violated": "a property check did not hold on the row",
    "broken": "no usable value: NaN or inf where the exact value is finite (an infinite "
              "error in ulps), or the reverse, an exception, a crash, a timeout, a wrong "
              "shape, dtype or type, a mutated input",
}

#: Grades that are recorded, never passed or failed.
_RECORDED = (OUTSIDE, REFUSED)
#: Grades of the property checks (hold or not, no ulps).
_BOOLEAN = {"holds": True, "violated": False}


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


def _figure(value: Any) -> float | None:
    """A JSON figure (a number, "inf", "nan" or null) as a float; None for null."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _runnable(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in data["adapters"] if a["verdict"] != "error"]


# ------------------------------------------------------------------- shared helpers


def adapter_rows(data: dict[str, Any]) -> list[list[Any]]:
    """One row per adapter: name, version (the only place versions and compiler strings
    are shown), spec, dialect, verdict, failing results, results, seconds (its part of
    the run) and seconds in its own calls (blank where the report has no timing), reason."""
    rows = []
    timing = data.get("timing") or {}
    for a in data["adapters"]:
        failing = sum(1 for r in a["results"] if not r["passed"])
        spent = timing.get(a["name"]) or {}
        rows.append([a["name"], a.get("version") or "", a.get("spec") or "",
                     a.get("dialect") or dialects.DEFAULT.name, a["verdict"], failing,
                     len(a["results"]), _seconds(spent.get("seconds")),
                     _seconds(spent.get("call_seconds")), a.get("reason") or ""])
    return rows


def _seconds(value: Any) -> str:
    figure = _figure(value)
    return "" if figure is None else f"{figure:.1f}"


ADAPTER_HEAD = ["adapter", "version", "spec", "dialect", "verdict", "failing results",
                "results", "seconds", "in its calls (s)", "reason"]

_ADAPTER_ALIGN = {h: "right" for h in ("failing results", "results", "seconds",
                                       "in its calls (s)")}

#: What the adapters table's two times are.
TIMING_NOTE = ("Seconds: each adapter's part of the run (its loading, its calls and their "
               "grading, and the exact values of the cases where it is the first adapter to "
               "need them); in its calls: the time its own calls took, each a round trip to "
               "its worker. Both are summed over the run's processes (--jobs) and differ "
               "from run to run (the results do not).")


def grade_rows(settings: dict[str, Any]) -> list[list[str]]:
    """One row per grade, least severe first: grade, meaning (N filled in), and what it
    counts as under the run's profile."""
    from xentcheck.harness import grading

    budget = _figure(settings.get("ulp_budget"))
    n = f"{budget:g}" if budget is not None else "N"
    try:
        profile = grading.profile(str(settings.get("profile")),
                                  ulp_budget=_figure(settings.get("ulp_budget")))
    except (ValueError, TypeError):
        profile = None
    rows = []
    for grade in GRADES:
        if grade in _RECORDED:
            counts = "recorded, not graded"
        elif grade in _BOOLEAN:
            counts = "pass" if _BOOLEAN[grade] else "fail"
        elif profile is None:
            counts = "?"
        else:
            counts = "pass" if profile.passes(grade) else "fail"
        rows.append([grade, GRADE_MEANINGS[grade].replace("N ulps", f"N = {n} ulps"), counts])
    return rows


def grade_head(settings: dict[str, Any]) -> list[str]:
    return ["grade", "meaning", f"under profile {settings.get('profile')}"]


def scoreboard_cells(data: dict[str, Any], dtype: str | None = None
                     ) -> list[tuple[str, list[tuple[str | None, bool, bool]]]]:
    """Per function, per runnable adapter: (worst accuracy grade, some result failed,
    the adapter provides the function), over every dtype or over ``dtype`` only."""
    rows = []
    for function in FUNCTIONS:
        cells = []
        for a in _runnable(data):
            results = [r for r in a["results"]
                       if r["function"] == function and r["check"] in ACCURACY_CHECKS
                       and (dtype is None or r["dtype"] == dtype)]
            provided = function in a["provides"] and (dtype is None or dtype in a["dtypes"])
            graded = [r["grade"] for r in results if r["grade"] is not None]
            worst = max(graded, key=_rank) if graded else None
            cells.append((worst, any(not r["passed"] for r in results), provided))
        rows.append((function, cells))
    return rows


def max_ulp_text(results: list[dict[str, Any]]) -> str:
    """The largest error of some results, in ulps ("inf (broken)" when one is broken)."""
    values = [r["max_ulp"] for r in results]
    if not values:
        return "—"
    if any(r["grade"] == "broken" for r in results):
        return "inf (broken)"  # NaN where finite is right (or the reverse): infinite error
    if any(v == "inf" for v in values):
        return "inf"
    numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return _ulp(max(numeric)) if numeric else "—"


def behaviour_rows(data: dict[str, Any]) -> list[list[str]]:
    """Situation, function, then per runnable adapter what it did (sorted, comma
    separated), :data:`NOT_OFFERED_MARK` last for calls never made (not offered, or no
    record at all: the adapter lacks the function)."""
    seen: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    names = [a["name"] for a in _runnable(data)]
    for a in data["adapters"]:
        for r in a["results"]:
            if r["check"] != "edge":
                continue
            for note in r["notes"]:
                situation, _, what = str(note).partition(": ")
                seen[(situation, r["function"])][a["name"]].add(what)
    rows = []
    for situation, function in sorted(seen):
        row = [situation, function]
        for name in names:
            done = seen[(situation, function)][name]
            marks = sorted(done - {NOT_OFFERED}) + [NOT_OFFERED_MARK] * (NOT_OFFERED in done)
            row.append(", ".join(marks) or NOT_OFFERED_MARK)
        rows.append(row)
    return rows


BEHAVIOUR_LEGEND = (
    f"{NOT_OFFERED_MARK}: not offered, the call was never made (the adapter does not "
    "provide the function or accept an option the case needs); raised: the call was made "
    "and raised an exception; nan, inf, finite: what the output row held; limit: the "
    "one-hot limit of the +inf entries; crashed, timeout, wrong-shape, ...: the call was "
    "made and failed so; not run: the function was quarantined after hangs or crashes.")


def failure_key(result: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key of failing results, worst first: the grade's severity, the worst
    element's error in ulps (no value at all counts as infinite), the rows failed, then
    the names (a stable order)."""
    w = result.get("worst") or {}
    ulp = _figure(w.get("ulp")) if w else None
    if ulp is None:
        ulp = _figure(result.get("max_ulp"))
    if ulp is None or math.isnan(ulp):
        ulp = math.inf if result.get("grade") == "broken" else -1.0
    return (-severity(result.get("grade") if result.get("grade") in GRADES else None),
            -ulp, -int(result.get("failed") or 0), str(result["function"]),
            str(result["dtype"]), str(result["regime"]), str(result["check"]))


def failing_results(adapter: dict[str, Any]) -> list[dict[str, Any]]:
    """An adapter's failing results, worst first (:func:`failure_key`)."""
    return sorted((r for r in adapter["results"] if not r["passed"]), key=failure_key)


def jq_command(index: int) -> str:
    """A shell command that lists every failing result of the adapter at ``index`` of
    ``conformance.json`` (one tab-separated line each; no text from the report in it)."""
    return ("jq -r '.adapters[" + str(int(index)) + "] | .name as $a | .results[] "
            "| select(.passed | not) | [$a, .grade, .check, .function, .dtype, .regime, "
            "\"\\(.failed)/\\(.cases) rows\", (.worst.ulp // \"-\"), (.reproducer // \"\")] "
            "| @tsv' conformance.json")


def option_text(name: str, value: Any) -> str:
    """One option as ``name=value`` (a label smoothing's hex float read back as decimal;
    a weight's entries as recorded)."""
    if name == "label_smoothing" and isinstance(value, str):
        try:
            value = repr(float.fromhex(value))
        except (ValueError, OverflowError):
            pass
    elif isinstance(value, list):
        value = "[" + ", ".join(str(v) for v in value) + "]"
    return f"{name}={value}"


def call_text(worst: dict[str, Any]) -> tuple[str, str]:
    """What the worst case's call took besides the logits: (target, options), as plain
    text; empty strings when the record has none (a function of the logits alone, or a
    report written before targets and options were recorded)."""
    target = ""
    if worst.get("target") is not None:
        kind = worst.get("target_kind") or "target"
        values = " ".join(str(v) for v in worst.get("target") or [])
        target = f"{kind} {values}".strip()
    options = worst.get("options")
    shown = ""
    if isinstance(options, dict):
        shown = ", ".join(option_text(k, v) for k, v in options.items()) or "none (defaults)"
    return target, shown


def largest_differs(result: dict[str, Any]) -> bool:
    """Whether the result's largest error or ratio lies at another element than its worst
    case (one of a less severe grade: the worst case is the worst grade's largest error)."""
    w = result.get("worst") or {}
    if not w:
        return False
    for mine, theirs in (("max_ulp", "ulp"), ("max_ratio", "ratio")):
        a, b = _figure(result.get(mine)), _figure(w.get(theirs))
        if a is None or b is None:
            continue
        if not (a == b or (math.isnan(a) and math.isnan(b))):
            return True
    return False


# ------------------------------------------------------------------- sections


def adapters(data: dict[str, Any]) -> str:
    rows = [[_c(x) for x in row] for row in adapter_rows(data)]
    # as written: a version such as "2.10" is not the number 2.1, and 0.0 s stays "0.0"
    table = tabulate(rows, ADAPTER_HEAD, tablefmt="github", disable_numparse=True,
                     colalign=[_ADAPTER_ALIGN.get(h, "left") for h in ADAPTER_HEAD])
    if data.get("timing"):
        table += "\n\n" + TIMING_NOTE
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


def grades(data: dict[str, Any]) -> str:
    s = data["settings"]
    return tabulate([[_c(x) for x in row] for row in grade_rows(s)], grade_head(s),
                    tablefmt="github")


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
            "differences are not defects; failures below are defects under the library's "
            "own contract.\n\n" + tabulate([[_c(x) for x in row] for row in rows],
                                            DIFFERENCE_HEAD, tablefmt="github"))


def scoreboard(data: dict[str, Any], dtype: str | None = None) -> str:
    """Adapter × function: the worst accuracy grade over every dtype and regime (or over
    ``dtype``'s), with a mark when some result failed; — not provided."""
    rows = []
    for function, cells in scoreboard_cells(data, dtype):
        row = [function]
        for worst, failed, provided in cells:
            if worst is None:
                row.append("" if provided else "—")
            else:
                row.append(f"{_c(worst)}{' ✗' if failed else ''}")
        rows.append(row)
    return tabulate(rows, ["function"] + [_c(a["name"]) for a in _runnable(data)],
                    tablefmt="github")


def scoreboards(data: dict[str, Any]) -> str:
    """The scoreboard over every dtype, then one per dtype of the run."""
    parts = ["### All dtypes\n\n" + scoreboard(data)]
    for dtype in data["settings"]["dtypes"]:
        parts.append(f"### {_c(dtype)}\n\n" + scoreboard(data, dtype))
    return "\n\n".join(parts)


def max_ulp_tables(data: dict[str, Any]) -> str:
    """Per dtype, the largest error found (ulps) per function and adapter."""
    runnable = _runnable(data)
    parts = []
    for dtype in data["settings"]["dtypes"]:
        rows = []
        for function in FUNCTIONS:
            rows.append([function] + [
                _c(max_ulp_text([r for r in a["results"]
                                 if r["function"] == function and r["dtype"] == dtype
                                 and r["check"] in ACCURACY_CHECKS]))
                for a in runnable])
        parts.append(f"### {_c(dtype)}\n\n" + tabulate(
            rows, ["function"] + [_c(a["name"]) for a in runnable], tablefmt="github"))
    return "\n\n".join(parts)


def behaviour(data: dict[str, Any]) -> str:
    """What each adapter does where the reference leaves the answer ungraded."""
    rows = behaviour_rows(data)
    if not rows:
        return "No ungraded situations came up in this run."
    table = tabulate([[_c(x) for x in row] for row in rows],
                     ["situation", "function"] + [_c(a["name"]) for a in _runnable(data)],
                     tablefmt="github")
    return table + "\n\n" + _c(BEHAVIOUR_LEGEND)


def _failure(r: dict[str, Any]) -> list[str]:
    """The lines of one failing result: a summary, then its worst case."""
    w = r.get("worst") or {}
    lines = [f"- **{_c(r['grade'])}** {_code(r['function'])} "
             f"[{_c(r['dtype'])}-{_c(r['regime'])}] check {_code(r['check'])}: "
             f"{_c(r['failed'])} of {_c(r['cases'])} rows failed"]
    if w and (w.get("got") is not None or w.get("expected") is not None):
        lines.append(f"  - worst: case {_code(w.get('case'))} row {_c(w.get('row'))} index "
                     f"{_c(w.get('index'))}: got {_code(w.get('got'))}, should be "
                     f"{_code(w.get('expected'))}: {_c(_ulp(w.get('ulp')))} ulp, ratio "
                     f"{_c(_ulp(w.get('ratio')))}, bound {_c(_ulp(w.get('allowed_ulp')))} ulp")
    elif w:
        lines.append(f"  - worst: case {_code(w.get('case'))} row {_c(w.get('row'))}: no "
                     "value to grade")
    if largest_differs(r):
        lines.append(f"  - largest over the result, at other elements: "
                     f"{_c(_ulp(r.get('max_ulp')))} ulp, ratio {_c(_ulp(r.get('max_ratio')))}")
    if w:
        target, options = call_text(w)
        if target or options:
            lines.append("  - " + ", ".join(
                [f"target {_code(target)}"] * bool(target)
                + [f"options {_code(options)}"] * bool(options)))
        lines.append(f"  - input: {_code(' '.join(str(v) for v in w.get('input') or []))}")
    for note in (r.get("notes") or [])[:1]:
        lines.append(f"  - {_c(note)}")
    reproducer = str((w.get("reproducer") if w else None) or r.get("reproducer") or "")
    if reproducer:
        shown = reproducer[:REPRODUCER_SHOWN] + (
            "..." if len(reproducer) > REPRODUCER_SHOWN else "")
        lines.append(f"  - reproduce: {_code(shown)}")
    return lines


def failures(data: dict[str, Any], per_adapter: int = FAILURES_PER_ADAPTER) -> str:
    """Every adapter's failing results, worst first, at most ``per_adapter`` each, and
    for the rest where they are and a ``jq`` line that lists them."""
    parts = []
    for index, a in enumerate(data["adapters"]):
        name = _c(a["name"])
        if a["verdict"] == "error":
            parts.append(f"### {name}\n\nCould not be run: {_c(a.get('reason'))}")
            continue
        failing = failing_results(a)
        if not failing:
            continue
        shown = failing[:per_adapter]
        head = (f"### {name}\n\n{len(failing)} failing result"
                f"{'s' if len(failing) != 1 else ''}"
                + (f", the {len(shown)} worst below." if len(shown) < len(failing)
                   else ", worst first."))
        lines = [line for r in shown for line in _failure(r)]
        part = head + "\n\n" + "\n".join(lines)
        rest = len(failing) - len(shown)
        if rest:
            part += (f"\n\n{rest} more failing result{'s' if rest != 1 else ''} of {name}, "
                     f"none worse than those above, are in `conformance.json` (the HTML "
                     f"report shows up to {FAILURES_PER_ADAPTER_HTML} per adapter); list "
                     "every one with:\n\n"
                     f"```sh\n{jq_command(index)}\n```")
        parts.append(part)
    return "\n\n".join(parts) if parts else "None: every adapter passed."


def render(data: dict[str, Any]) -> str:
    s = data["settings"]
    p = data["platform"]
    return "\n\n".join([
        "# xentcheck conformance report",
        f"Profile {_code(s['profile'])} (N = {_c(s['ulp_budget'])} ulp), seed {_c(s['seed'])}, "
        f"{data['cases']} cases, dtypes {_c(', '.join(s['dtypes']))}, "
        f"regimes {_c(', '.join(s['regimes']))}"
        + (f", only the checks {_c(', '.join(s['checks']))}" if s.get("checks") else "")
        + f". Python {_c(p['python'])}, NumPy "
        f"{_c(p['numpy'])}, mpmath {_c(p['mpmath'])} on {_c(p['machine'])}. Report "
        f"{_code(data.get('report_id', '-'))} (every file of the set carries it).",
        "## Adapters\n\nVersions and specs are listed here only; the tables below name each "
        "adapter by its name.", adapters(data),
        "## Grades\n\nEach row checked gets the worst grade of its elements; a result (one "
        "check of one function on one dtype and regime) gets its worst row's. Errors are "
        "measured in ulps of the dtype against the exact value, and as the stability ratio: "
        "the error over the first-order bound of the textbook shifted algorithm on that "
        "input.", grades(data),
        "## Scoreboard\n\nWorst accuracy grade against the exact truth over every regime "
        "(checks `value`, `gradient`, `jvp` and `hvp`), over every dtype and per dtype; "
        "✗ marks a failing result, — not provided.",
        scoreboards(data),
        "## Documented differences from the PyTorch convention", differences(data),
        "## Largest error found, in ulps of the dtype", max_ulp_tables(data),
        "## Behaviour where the reference gives no grade", behaviour(data),
        f"## Failures\n\nPer adapter, worst first (grade, then error), at most "
        f"{FAILURES_PER_ADAPTER} each. The worst case of a result is its worst grade's "
        "largest error; where the result's largest error or ratio lies at other elements, "
        "that is shown apart.", failures(data),
    ]) + "\n"


def write(data: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / FILENAME
    write_atomic(path, render(data))
    return path
