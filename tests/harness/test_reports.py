"""The HTML and JUnit writers: rendered from a small synthetic run and from the committed
``reports/conformance.json``, parsed back, checked for escaping, self-containment, counts
and atomic writing."""

from __future__ import annotations

import copy
import re
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from xentcheck.harness.report import html as html_report
from xentcheck.harness.report import json_report, junit, markdown

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "reports" / "conformance.json"
EVIL = "<script>alert(1)</script>"


def _result(function: str, dtype: str, regime: str, check: str = "value", *,
            grade: str = "exact", passed: bool = True, max_ulp: Any = 0.0,
            worst: dict[str, Any] | None = None, notes: list[str] | None = None
            ) -> dict[str, Any]:
    return {"check": check, "function": function, "dtype": dtype, "regime": regime,
            "grade": grade, "passed": passed, "cases": 5, "failed": 0 if passed else 2,
            "grades": {grade: 5}, "max_ulp": max_ulp, "max_ratio": max_ulp, "worst": worst,
            "reproducer": worst["reproducer"] if worst else None, "notes": notes or [],
            "budget": None}


def _worst(got: str, expected: str) -> dict[str, Any]:
    return {"case": "large-float32-s0-1", "row": 0, "index": [0, 1],
            "input": ["0x1.0p+7", "-0x1.8p+6", "inf"], "got": got, "expected": expected,
            "ulp": 12.5, "ratio": 3.1, "allowed_ulp": 4.0, "severity": 3,
            "reproducer": "python -m xentcheck.harness.repro evil log_softmax '<case & more>'"}


def synthetic() -> dict[str, Any]:
    """Three adapters: a passing one, one named like an XSS attack with two failures and an
    edge note, and one that could not be run."""
    good = [_result("log_softmax", "float32", "moderate", max_ulp=0.5, grade="faithful"),
            _result("softmax", "float64", "large", max_ulp=0.0),
            _result("softmax", "float64", "large", "determinism", grade="holds",
                    max_ulp=None)]
    bad = [_result("log_softmax", "float32", "large", grade="unstable", passed=False,
                   max_ulp=12.5, worst=_worst("0x1.0p+0", "<1.5>")),
           _result("softmax", "float32", "huge", grade="broken", passed=False,
                   max_ulp="inf", worst=_worst("nan", "0.0")),
           _result("softmax", "float32", "nonfinite", "edge", grade="holds",
                   max_ulp=None, notes=[f"NaN in row: {EVIL} returns nan"])]
    adapter = {"spec": "x", "version": "1.0", "reason": None, "dtypes": ["float32", "float64"],
               "provides": ["log_softmax", "softmax"], "not_provided": []}
    return {
        "schema": "xentcheck-conformance/1",
        "platform": {"python": "3.11", "numpy": "2", "mpmath": "1.3", "machine": "x86_64"},
        "settings": {"profile": "standard", "ulp_budget": 4.0, "seed": 0,
                     "dtypes": ["float64", "float32"], "regimes": ["moderate", "large"]},
        "cases": 10, "seconds": 1.5,
        "adapters": [
            {**adapter, "name": "good", "verdict": "pass", "results": good},
            {**adapter, "name": f"evil{EVIL}", "spec": f"pkg:{EVIL}", "verdict": "fail",
             "results": bad},
            {**adapter, "name": "broken-import", "verdict": "error",
             "reason": f"ImportError: no module {EVIL}", "results": [], "provides": []},
        ],
    }


class _Page(HTMLParser):
    """Collects tables (rows of cell texts), tags with their attributes, and all text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, Any]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append({"class": dict(attrs).get("class"), "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1]["rows"].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _table(page: _Page, cls: str) -> dict[str, Any]:
    found = [t for t in page.tables if t["class"] == cls]
    assert found, f"no table of class {cls}"
    return found[0]


def _assert_self_contained(page: _Page, text: str) -> None:
    assert "<script" not in text.lower()
    # nothing fetched from elsewhere (documentation links may be shown as text)
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", text)
    assert "url(http" not in text.replace(" ", "")
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for key in ("src", "href"):
            value = attrs.get(key)
            assert value is None or value.startswith("data:image/png;base64,"), (tag, value)


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    if not COMMITTED.exists():
        pytest.skip("reports/conformance.json not committed")
    return json_report.load(COMMITTED)


def test_html_synthetic_tables_escaping_and_self_contained() -> None:
    data = synthetic()
    text = html_report.render(data)
    page = _parse(text)
    _assert_self_contained(page, text)
    assert EVIL not in text  # escaped everywhere: name, spec, reason, notes
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # the parser reads the escaped text back as the literal name
    adapters = _table(page, "adapters")
    assert [row[0] for row in adapters["rows"][1:]] == ["good", f"evil{EVIL}", "broken-import"]
    assert adapters["rows"][0][4] == "verdict" and adapters["rows"][3][4] == "error"
    board = _table(page, "scoreboard")
    assert board["rows"][0] == ["function", "good", f"evil{EVIL}"]  # error adapters left out
    log_softmax = next(r for r in board["rows"] if r[0] == "log_softmax")
    assert log_softmax[1] == "faithful" and log_softmax[2] == "unstable ✗"
    ulp_tables = [t for t in page.tables if t["class"] == "max-ulp"]
    assert len(ulp_tables) == 2  # one per dtype
    softmax32 = next(r for r in ulp_tables[1]["rows"] if r[0] == "softmax")
    assert softmax32[2] == "inf (broken)"  # NaN where finite is right: infinite error
    behaviour = _table(page, "behaviour")
    assert behaviour["rows"][1][:2] == ["NaN in row", "softmax"]
    failures = _table(page, "failures")
    head = failures["rows"][0]
    assert len(failures["rows"]) == 1 + 2 * 2  # each result: its numbers, then its details
    tests = [dict(zip(head, r, strict=True)) for r in failures["rows"][1::2]]
    assert [t["test"] for t in tests] == ["softmax [float32-huge] check value",  # worst first
                                          "log_softmax [float32-large] check value"]
    row = tests[1]
    assert row["got"] == "0x1.0p+0" and row["should be"] == "<1.5>"
    assert row["bound (ulp)"] == "4.00" and row["ulps"] == "12"
    detail = failures["rows"][4][0]
    assert "0x1.0p+7" in detail and "'<case & more>'" in detail
    assert f"Could not be run: ImportError: no module {EVIL}" in "".join(page.text)
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == 2


def test_html_without_matplotlib_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text = html_report.render(synthetic())
    assert "Plots need matplotlib" in text
    assert "<img" not in text
    assert len(_parse(text).tables) >= 5


def test_html_committed_report(committed: dict[str, Any], tmp_path: Path) -> None:
    path = html_report.write(committed, tmp_path)
    assert path.name == "conformance.html"
    text = path.read_text(encoding="utf-8")
    page = _parse(text)
    _assert_self_contained(page, text)
    runnable = [a for a in committed["adapters"] if a["verdict"] != "error"]
    board = _table(page, "scoreboard")
    assert len(board["rows"][0]) == 1 + len(runnable)
    assert board["rows"][0][1:] == [a["name"] for a in runnable]
    assert len([t for t in page.tables if t["class"] == "max-ulp"]) == len(
        committed["settings"]["dtypes"])
    cap = html_report.FAILURES_PER_ADAPTER_HTML
    failing = [sum(1 for r in a["results"] if not r["passed"]) for a in runnable]
    tables = [t for t in page.tables if t["class"] == "failures"]
    assert len(tables) == sum(1 for n in failing if n)  # one per adapter with failures
    shown = [n for n in failing if n]
    assert [sum(1 for row in t["rows"][1:] if len(row) > 1) for t in tables] == [
        min(cap, n) for n in shown]
    assert len([a for t, a in page.tags if t == "img"]) == 2


def test_input_magnitude_and_regime_mapping() -> None:
    assert html_report.input_magnitude({"input": ["-0x1.0p+7", "inf", "nan", "..."]}) == 128.0
    assert html_report.input_magnitude({"input": ["nan"]}) is None
    assert html_report.input_magnitude(None) is None
    assert html_report.regime_magnitude("overflow-edge", "float32") == pytest.approx(88.72)
    assert html_report.regime_magnitude("empty", "float32") is None


def _junit(data: dict[str, Any]) -> ET.Element:
    return ET.fromstring(junit.render(data).encode("utf-8"))


def test_junit_synthetic() -> None:
    data = synthetic()
    root = _junit(data)
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("7", "2", "1")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["good", f"evil{EVIL}", "broken-import"]
    evil = suites[1]
    assert evil.get("failures") == "2" and evil.get("tests") == "3"
    case = evil.find("testcase[@name='log_softmax[float32-large-value]']")
    assert case is not None and case.get("classname") == f"xentcheck.evil{EVIL}"
    failure = case.find("failure")
    assert failure is not None
    message = failure.get("message") or ""
    for piece in ("unstable", "got 0x1.0p+0", "should be <1.5>", "12.5 ulp", "bound 4 ulp"):
        assert piece in message, piece
    assert "input: 0x1.0p+7 -0x1.8p+6 inf" in (failure.text or "")
    assert "reproduce: python -m xentcheck.harness.repro evil" in (failure.text or "")
    error = suites[2].find("testcase/error")
    assert error is not None and EVIL in (error.get("message") or "")
    assert suites[0].find("testcase/failure") is None


def test_each_adapters_time_is_shown_where_the_report_has_it() -> None:
    data = synthetic()
    data["adapters"][0]["version"] = "2.10"  # a version tabulate would read as 2.1
    data["timing"] = {"good": {"seconds": 12.345, "calls": 40, "call_seconds": 0.04},
                      f"evil{EVIL}": {"seconds": 3.0, "calls": 9, "call_seconds": 2.96}}
    table = markdown.adapters(data)
    good = next(line for line in table.splitlines() if line.startswith("| good "))
    cells = [c.strip() for c in good.strip("|").split("|")]
    assert cells[1] == "2.10"
    assert cells[markdown.ADAPTER_HEAD.index("seconds")] == "12.3"
    assert cells[markdown.ADAPTER_HEAD.index("in its calls (s)")] == "0.0"
    assert markdown.TIMING_NOTE in table
    broken = next(line for line in table.splitlines() if line.startswith("| broken-import"))
    assert [c.strip() for c in broken.strip("|").split("|")][7:9] == ["", ""]
    suites = _junit(data).findall("testsuite")
    assert [s.get("time") for s in suites] == ["12.345", "3.0", None]
    rows = _table(_parse(html_report.render(data)), "adapters")["rows"]
    assert rows[0] == markdown.ADAPTER_HEAD
    assert rows[1][markdown.ADAPTER_HEAD.index("seconds")] == "12.3"
    untimed = synthetic()  # a report without timing (the plugin's, an older one)
    assert markdown.TIMING_NOTE not in markdown.adapters(untimed)
    assert all(s.get("time") is None for s in _junit(untimed).findall("testsuite"))


def test_junit_control_characters_stay_valid_xml() -> None:
    data = synthetic()
    data["adapters"][1]["results"][0]["notes"] = ["bell\x07 and nul\x00"]
    root = _junit(data)
    assert root.get("failures") == "2"


def test_junit_committed_report(committed: dict[str, Any], tmp_path: Path) -> None:
    path = junit.write(committed, tmp_path)
    assert path.name == "conformance.junit.xml"
    root = ET.parse(path).getroot()
    results = [r for a in committed["adapters"] for r in a["results"]]
    errors = sum(1 for a in committed["adapters"] if a["verdict"] == "error")
    assert int(root.get("failures") or 0) == sum(1 for r in results if not r["passed"])
    assert int(root.get("errors") or 0) == errors
    assert int(root.get("tests") or 0) == len(results) + errors
    assert len(root.findall(".//failure")) == int(root.get("failures") or 0)
    names = {c.get("name") for c in root.iter("testcase")}
    sample = results[0]
    assert f"{sample['function']}[{sample['dtype']}-{sample['regime']}-{sample['check']}]" \
        in names


@pytest.mark.parametrize("module", [html_report, junit], ids=["html", "junit"])
def test_writes_are_atomic(module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                           ) -> None:
    data = synthetic()
    monkeypatch.setattr(module, "render", lambda d: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        module.write(data, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    path = module.write(copy.deepcopy(data), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_exact_values_with_long_mantissas_print_in_25_digits() -> None:
    """An exact value (a sum at exact precision) may carry tens of thousands of digits:
    printing its 25 first once crossed Python's int-to-str limit and crashed a run."""
    import mpmath

    from xentcheck.harness.findings import exact_text

    long = mpmath.mpf((0, 3**30000, -47550, 47550))  # ~0.4585, a 47550-bit mantissa
    assert exact_text(long).startswith("0.45850889735993427542837")


def _loadable(data: dict[str, Any], schema: str) -> dict[str, Any]:
    """The synthetic run with every setting a report read back must hold."""
    data["schema"] = schema
    data["settings"].update(cases_file=None, shard=None, timeout=60.0, max_classes=None)
    return data


def test_json_leaves_out_what_a_result_repeats(tmp_path: Path) -> None:
    """On disk a result omits its defaults, ``grades`` equal to ``{grade: cases}`` and a
    passing result's reproducer and worst details; reading it back restores every field."""
    import json

    data = _loadable(synthetic(), "xentcheck-conformance/3")
    passing = _result("log_softmax", "float32", "huge", max_ulp=2.0, grade="ulp≤N",
                      worst=_worst("0x1.0p+0", "1.0"))
    passing["grades"] = {"ulp≤N": 3, "exact": 2}
    data["adapters"][0]["results"].append(passing)
    path = json_report.write(copy.deepcopy(data), tmp_path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    on_disk = {(a["name"], r["check"], r["function"], r["regime"]): r
               for a in raw["adapters"] for r in a["results"]}
    exact = on_disk[("good", "value", "softmax", "large")]
    assert set(exact) == {"check", "function", "dtype", "regime", "grade", "passed", "cases",
                          "max_ulp", "max_ratio"}
    kept = on_disk[("good", "value", "log_softmax", "huge")]
    assert kept["grades"] == {"ulp≤N": 3, "exact": 2} and "reproducer" not in kept
    assert set(kept["worst"]) == {"case", "row", "index", "ulp", "ratio", "severity"}
    failing = on_disk[(f"evil{EVIL}", "value", "log_softmax", "large")]
    assert failing["failed"] == 2 and failing["reproducer"].startswith("python -m")
    assert failing["worst"]["input"] == ["0x1.0p+7", "-0x1.8p+6", "inf"]

    loaded = json_report.load(path)
    for before, after in zip(data["adapters"], loaded["adapters"], strict=True):
        for r, back in zip(before["results"], after["results"], strict=True):
            expected = dict(r)
            if r["passed"]:
                expected["reproducer"] = None
                if r["worst"]:
                    expected["worst"] = {k: r["worst"][k] for k in
                                         ("case", "row", "index", "ulp", "ratio", "severity")}
            assert back == expected


def test_json_of_schema_2_reads_unchanged(tmp_path: Path) -> None:
    """A full result (schema 2 wrote every field) comes back as it was."""
    import json

    data = _loadable(synthetic(), "xentcheck-conformance/2")
    path = tmp_path / "conformance.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert json_report.load(path)["adapters"] == data["adapters"]


def test_committed_json_stays_small() -> None:
    """The committed report of the main job is under 5 MB (it was 9.8 MB in schema 2)."""
    assert COMMITTED.stat().st_size < 5_000_000
