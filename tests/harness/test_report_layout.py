"""What the Markdown and HTML reports show a maintainer: every adapter's failures (worst
first, capped, with where the rest are), each with its target and options; summaries that
agree with their worst case; the grade legend; short adapter names in table headers with
versions listed once; a scoreboard per dtype; calls never made told apart from calls that
raised in the edge-behaviour table; a failures table that fits a 1400-pixel window."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xentcheck.harness import grading
from xentcheck.harness.cases import Case
from xentcheck.harness.checks import Context, allowed_abs, edges, graded_finding, worst_element
from xentcheck.harness.findings import GRADES, Result, call_inputs
from xentcheck.harness.report import html as html_report
from xentcheck.harness.report import json_report
from xentcheck.harness.report import markdown as md
from xentcheck.harness.truth import Truth

LONG_VERSION = "ref.c@5f10fa983038 (cc (Debian 12.2.0-14+deb12u1) 12.2.0)"


def _worst(ulp: Any, **extra: Any) -> dict[str, Any]:
    return {"case": "c-1", "row": 0, "index": [0, 1], "input": ["0x1.0p+7", "-0x1.8p+6"],
            "got": "0x1.0p+0", "expected": "1.5", "ulp": ulp, "ratio": ulp,
            "allowed_ulp": 2.0, "severity": 4, "reproducer": "python -m repro x", **extra}


def _failing(function: str, regime: str, grade: str, ulp: Any, dtype: str = "float32",
             **extra: Any) -> dict[str, Any]:
    return {"check": "value", "function": function, "dtype": dtype, "regime": regime,
            "grade": grade, "passed": False, "cases": 10, "failed": 3,
            "grades": {grade: 3, "exact": 7}, "max_ulp": ulp, "max_ratio": ulp,
            "worst": _worst(ulp, **extra), "reproducer": "python -m repro x", "notes": [],
            "budget": None}


def _passing(function: str, dtype: str, grade: str = "exact") -> dict[str, Any]:
    return {"check": "value", "function": function, "dtype": dtype, "regime": "moderate",
            "grade": grade, "passed": True, "cases": 10, "failed": 0, "grades": {grade: 10},
            "max_ulp": 0.25, "max_ratio": 0.1, "worst": None, "reproducer": None,
            "notes": [], "budget": None}


def _run(adapters: list[dict[str, Any]]) -> dict[str, Any]:
    base = {"spec": "x", "version": None, "reason": None, "dtypes": ["float32", "float64"],
            "provides": ["softmax", "log_softmax", "cross_entropy"], "not_provided": []}
    return {
        "schema": "xentcheck-conformance/2",
        "platform": {"python": "3.11", "numpy": "2", "mpmath": "1.3", "machine": "x86_64"},
        "settings": {"profile": "standard", "ulp_budget": 4.0, "seed": 0,
                     "dtypes": ["float64", "float32"], "regimes": ["moderate", "large"],
                     "cases_file": None, "shard": None, "timeout": 60.0, "max_classes": None},
        "cases": 10, "seconds": 1.0,
        "adapters": [{**base, **a} for a in adapters],
    }


def _many_failures() -> dict[str, Any]:
    """``first`` fails 30 results (unstable ones first in the data, broken ones last),
    ``second`` fails 2: the second must show up, and first's broken ones lead."""
    first = [_failing("softmax", f"r{i:02d}", "unstable", 10.0 + i) for i in range(27)]
    first += [_failing("log_softmax", f"b{i}", "broken", "inf") for i in range(3)]
    second = [_failing("softmax", "large", "unstable", 99.0),
              _failing("cross_entropy", "large", "broken", "inf", target_kind="indices",
                       target=["3"], options={"label_smoothing": "0x1.999999999999ap-4",
                                              "reduction": "mean", "ignore_index": -100})]
    return _run([{"name": "first", "verdict": "fail", "results": first},
                 {"name": "second", "verdict": "fail", "results": second}])


class _Tables(HTMLParser):
    """The page's tables (class, rows of cell texts) and all its text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[dict[str, Any]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append({"class": dict(attrs).get("class"), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Tables:
    return _Tables(text)


def _table(page: _Tables, cls: str) -> dict[str, Any]:
    found = [t for t in page.tables if t["class"] == cls]
    assert found, f"no table of class {cls}"
    return found[0]


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading)
    rest = text[start + len(heading):]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[:end.start()] if end else rest


# ------------------------------------------------------------------- failures (md)


def test_every_adapter_failures_shown_worst_first_capped_with_the_rest_pointed_to() -> None:
    data = _many_failures()
    text = md.render(data)
    failures = text[text.index("## Failures"):]
    first = _section(failures, "### first")
    second = _section(failures, "### second")
    entries = [line for line in first.splitlines() if line.startswith("- **")]
    assert len(entries) == md.FAILURES_PER_ADAPTER
    assert all("**broken**" in e for e in entries[:3])  # worst first, whatever the order
    unstable = [float(re.search(r"\[float32-r(\d+)\]", e).group(1)) for e in entries[3:]]
    assert unstable == sorted(unstable, reverse=True)  # then the largest errors
    assert f"{30 - md.FAILURES_PER_ADAPTER} more failing results of first" in first
    assert "conformance.json" in first and ".adapters[0]" in first
    assert len([line for line in second.splitlines() if line.startswith("- **")]) == 2
    assert "more failing" not in second


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_the_jq_line_lists_every_failing_result(tmp_path: Path) -> None:
    data = _many_failures()
    (tmp_path / "conformance.json").write_text(json_report.render(data))
    command = md.jq_command(0)
    assert command in md.render(data)
    done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=True)
    lines = done.stdout.splitlines()
    assert len(lines) == 30 and all(line.startswith("first\t") for line in lines)


def test_failures_show_target_and_options_in_both_formats() -> None:
    data = _many_failures()
    text = md.render(data)
    second = _section(text[text.index("## Failures"):], "### second")
    assert "target `indices 3`" in second
    assert "label_smoothing=0.1" in second and "reduction=mean" in second
    assert "ignore_index=-100" in second
    page = _parse(html_report.render(data))
    shown = " ".join(page.text)
    assert "indices 3" in shown and "label_smoothing=0.1, reduction=mean" in shown


def test_call_inputs_recorded_on_the_worst_case() -> None:
    weight = np.arange(20, dtype=np.float64) + 1
    case = Case(np.zeros((2, 20)), np.array([3, 7]), "indices",
                {"weight": weight, "reduction": "sum"}, "float64", "moderate", "c-2")
    record = call_inputs(case, "cross_entropy_grad", 1)
    assert record["target_kind"] == "indices" and record["target"] == ["7"]
    assert record["options"]["reduction"] == "sum"
    assert record["options"]["weight"][0] == (1.0).hex()
    assert record["options"]["weight"][-1] == "... (20 entries)"  # cut, never the whole
    soft = Case(np.zeros((1, 3)), np.array([[0.25, 0.75, 0.0]]), "soft", {}, "float64",
                "moderate", "c-3")
    assert call_inputs(soft, "cross_entropy_from_probs", 0)["target"] == [
        (0.25).hex(), (0.75).hex(), (0.0).hex()]
    assert "options" not in call_inputs(soft, "cross_entropy_from_probs", 0)
    assert call_inputs(soft, "log_softmax", 0) == {}


# ------------------------------------------------------------------- summary vs worst


def _context(case: Case) -> Context:
    return Context(adapter="x", spec="x", handle=None, truth=Truth(case),
                   profile=grading.STANDARD)


def test_a_broken_element_is_the_largest_error_and_the_worst_case() -> None:
    """NaN at one element, every other exact: the summary once read "max 0.00 ulp" above
    a worst case of inf ulp."""
    case = Case(np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]), np.array([0, 1]), "indices",
                {}, "float64", "moderate", "mixed")
    ctx = _context(case)
    exact = ctx.truth.exact("softmax")
    candidate = np.array([[float(v) for v in row] for row in exact])  # correctly rounded
    candidate[1, 2] = np.nan
    finding = graded_finding(ctx, "value", "softmax", candidate, exact, inputs=case.logits)
    assert finding.grade == "broken"
    assert finding.worst is not None and finding.worst.index == [1, 2]
    assert finding.max_ulp == math.inf == finding.worst.ulp
    assert finding.max_ratio == math.inf == finding.worst.ratio
    result = Result("x", "value", "softmax", "float64", "moderate")
    result.add(finding)
    record = result.to_dict()
    assert record["max_ulp"] == "inf" == record["worst"]["ulp"]
    assert not md.largest_differs(record)


def _elements(ulp: list[float], ratio: list[float]) -> grading.ElementGrades:
    u, r = np.array(ulp), np.array(ratio)
    graded, broken = np.ones(u.shape, bool), np.zeros(u.shape, bool)
    return grading.ElementGrades("softmax", "float64", u, r, np.full(u.shape, 2.0), broken,
                                 graded, grading.classify(u, r, broken, graded))


def test_the_worst_element_of_a_grade_is_its_largest_error() -> None:
    """Two stable elements: 1e3 ulp at ratio 0.9 and 1e5 ulp at ratio 0.1. Picking the
    worst by ratio inside a finding (and by ulp across findings) once showed a worst case
    of 1e3 ulp under "max 1e5 ulp"."""
    element = _elements([1e3, 1e5, 0.25], [0.9, 0.1, 0.0])
    index = worst_element(element, 4.0)
    assert index == (1,)
    assert element.ulp[index] == np.max(element.ulp)
    assert grading.summarize(element).worst_index == (0,)  # what the worst used to be
    # a worse grade still wins over a larger error of a better grade
    unstable = _elements([1e5, 1e3], [0.5, 7.0])
    assert worst_element(unstable, 4.0) == (1,)


# ------------------------------------------------------------------- legend, labels


def test_every_grade_has_a_meaning_in_both_legends() -> None:
    assert set(md.GRADE_MEANINGS) == set(GRADES)
    data = _many_failures()
    text = md.render(data)
    legend = _section(text, "## Grades")
    for grade in GRADES:
        assert re.search(rf"^\| {re.escape(grade)} +\|", legend, re.M), grade
    assert "within N = 4 ulps" in legend
    rows = _table(_parse(html_report.render(data)), "grades")["rows"]
    assert [row[0] for row in rows[1:]] == list(GRADES)
    counts = {row[0]: row[2] for row in rows[1:]}
    assert counts["stable"] == "pass" and counts["unstable"] == "fail"
    assert counts["outside contract"] == "recorded, not graded"


def test_tables_name_adapters_shortly_and_versions_are_listed_once() -> None:
    data = _run([{"name": "c", "version": LONG_VERSION, "verdict": "pass",
                  "results": [_passing("softmax", "float64")]},
                 {"name": "numpy", "version": "2.4.6", "verdict": "pass",
                  "results": [_passing("softmax", "float32")]}])
    text = md.render(data)
    assert text.count(LONG_VERSION) == 1
    assert LONG_VERSION in _section(text, "## Adapters")
    for line in text.splitlines():
        if line.startswith("| function"):
            assert re.fullmatch(r"\| function +\| c +\| numpy +\|", line), line
    page = _parse(html_report.render(data))
    assert " ".join(page.text).count(LONG_VERSION) == 1
    for table in page.tables:
        if table["class"] in ("scoreboard", "max-ulp"):
            assert table["rows"][0] == ["function", "c", "numpy"]


def test_a_scoreboard_per_dtype() -> None:
    data = _run([{"name": "lib", "verdict": "fail",
                  "results": [_passing("softmax", "float64"),
                              _failing("softmax", "large", "unstable", 50.0)]}])
    text = md.render(data)
    board = _section(text, "## Scoreboard")
    overall = _section(board, "### All dtypes")
    f64 = _section(board, "### float64")
    f32 = _section(board, "### float32")
    assert re.search(r"^\| softmax +\| unstable ✗ +\|", overall, re.M)
    assert re.search(r"^\| softmax +\| exact +\|", f64, re.M)
    assert re.search(r"^\| softmax +\| unstable ✗ +\|", f32, re.M)
    boards = [t for t in _parse(html_report.render(data)).tables if t["class"] == "scoreboard"]
    assert len(boards) == 1 + len(data["settings"]["dtypes"])
    softmax = [next(r for r in b["rows"] if r[0] == "softmax")[1] for b in boards]
    assert softmax == ["unstable ✗", "exact", "unstable ✗"]


# ------------------------------------------------------------------- edge behaviour


def test_edge_behaviour_tells_calls_not_made_from_calls_that_raised() -> None:
    assert edges.behaviour(None, fault="raised") == "raised"
    assert edges.behaviour(None, fault="not-provided") == edges.NOT_OFFERED
    assert edges.behaviour(None, fault="timeout") == "timeout"
    assert edges.NOT_OFFERED == md.NOT_OFFERED
    edge = {"check": "edge", "function": "cross_entropy", "dtype": "float64",
            "regime": "nonfinite", "grade": None, "passed": True, "cases": 1, "failed": 0,
            "grades": {}, "max_ulp": None, "max_ratio": None, "worst": None,
            "reproducer": None, "budget": None}
    data = _run([
        {"name": "picky", "verdict": "pass",
         "results": [{**edge, "notes": ["+inf logit: not offered"]}]},
        {"name": "raiser", "verdict": "pass",
         "results": [{**edge, "notes": ["+inf logit: raised"]}]},
        {"name": "both", "verdict": "pass",
         "results": [{**edge, "notes": ["+inf logit: nan", "+inf logit: not offered"]}]}])
    table = _section(md.render(data), "## Behaviour where the reference gives no grade")
    row = next(line for line in table.splitlines() if line.startswith("| +inf logit"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:] == [md.NOT_OFFERED_MARK, "raised", f"nan, {md.NOT_OFFERED_MARK}"]
    assert f"{md.NOT_OFFERED_MARK}: not offered" in table
    rows = _table(_parse(html_report.render(data)), "behaviour")["rows"]
    assert rows[1][2:] == [md.NOT_OFFERED_MARK, "raised", f"nan, {md.NOT_OFFERED_MARK}"]


class _NoSmoothing:
    """An adapter whose cross_entropy accepts no label smoothing (and raises on +inf)."""

    name = "no-smoothing"

    def cross_entropy(self, logits: np.ndarray, target: np.ndarray,
                      reduction: str = "none") -> np.ndarray:
        if np.isinf(logits).any():
            raise ValueError("no infinities, thank you")
        return np.zeros(logits.shape[0], dtype=logits.dtype)


def test_edges_record_a_call_not_made_as_not_offered() -> None:
    from xentcheck.harness import runner

    z = np.array([[np.inf, 0.0, 1.0]])
    smoothed = Case(z, np.array([1]), "indices", {"label_smoothing": 0.1}, "float64",
                    "nonfinite", "smoothed")
    plain = Case(z, np.array([1]), "indices", {}, "float64", "nonfinite", "plain")
    report = runner.run([_NoSmoothing()], dtypes=["float64"], regimes=[],
                        extra_cases=[smoothed, plain]).to_dict()
    notes = {n for r in report["adapters"][0]["results"] if r["check"] == "edge"
             for n in r["notes"]}
    assert notes == {"+inf logit: not offered", "+inf logit: raised"}


# ------------------------------------------------------------------- HTML layout


def test_html_failures_put_long_text_under_the_numbers() -> None:
    """Input and reproducer get the whole width of a row of their own, under the short
    cells, so no column is squeezed; the table is laid out to the page's width."""
    data = _many_failures()
    text = html_report.render(data)
    assert "table-layout: fixed" in text
    tables = [t for t in _parse(text).tables if t["class"] == "failures"]
    assert len(tables) == 2  # one per adapter with failures
    head = tables[0]["rows"][0]
    assert "input" not in head and "reproduce" not in head
    assert len(head) == 9
    details = re.findall(r'<tr class="detail"><td colspan="9">(.*?)</td></tr>', text, re.S)
    assert len(details) == 30 + 2  # every failure of both (under the HTML's cap)
    assert all("<dt>input</dt>" in d and "<dt>reproduce</dt>" in d for d in details)
    first = text[text.index('id="failures"'):]
    assert first.index("log_softmax [float32-b") < first.index("softmax [float32-r")


def test_committed_report_shows_every_failing_adapter(tmp_path: Path) -> None:
    committed = Path(__file__).resolve().parents[2] / "reports" / "conformance.json"
    if not committed.exists():
        pytest.skip("reports/conformance.json not committed")
    data = json_report.load(committed)
    text = md.render(data)
    failures = text[text.index("## Failures"):]
    for a in data["adapters"]:
        failing = sum(1 for r in a["results"] if not r["passed"])
        if a["verdict"] == "error" or failing:
            assert f"### {a['name']}\n" in failures, a["name"]
        if failing:
            section = _section(failures, f"### {a['name']}\n")
            shown = [line for line in section.splitlines() if line.startswith("- **")]
            assert len(shown) == min(failing, md.FAILURES_PER_ADAPTER), a["name"]
    assert json.dumps(data)  # untouched by rendering


def test_allowed_errors_are_kept_per_output_and_read_only() -> None:
    """Two checks that bound the same output share one computation of its allowed
    errors; another candidate gets its own (the kept one is never handed out for it)."""
    case = Case(np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]), np.array([0, 1]), "indices",
                {}, "float64", "moderate", "mixed")
    ctx = _context(case)
    exact = ctx.truth.exact("softmax")
    candidate = np.array([[float(v) for v in row] for row in exact])
    first = allowed_abs(ctx, "softmax", candidate)
    assert allowed_abs(ctx, "softmax", candidate) is first
    assert not first.flags.writeable
    fresh = _context(case)
    np.testing.assert_array_equal(first, allowed_abs(fresh, "softmax", candidate))
    other = candidate * (1 + 2**-40)
    assert allowed_abs(ctx, "softmax", other) is not first
