"""The regression guard (``compare``, ``run --baseline``), ``merge`` of shards and
``report`` re-rendering."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from xentcheck.harness import cli
from xentcheck.harness.compare import compare
from xentcheck.harness.report import json_report

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "reports" / "conformance.json"
SMALL = ["--adapter", "numpy", "--adapter", "numpy-seed", "--regime", "moderate",
         "--regime", "ties", "--dtype", "float64"]


def _load(path: Path) -> dict[str, Any]:
    return json_report.load(path)


def _save(data: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The unsharded run, its two shards and their merge, all via ``cli.main``."""
    base = tmp_path_factory.mktemp("runs")
    codes = {}
    codes["full"] = cli.main(["run", *SMALL, "--out", str(base / "full")])
    for i in (1, 2):
        codes[f"s{i}"] = cli.main(["run", *SMALL, "--shard", f"{i}/2",
                                   "--out", str(base / f"s{i}")])
    codes["merge"] = cli.main(["merge", str(base / "merged"),
                               str(base / "s1" / "conformance.json"),
                               str(base / "s2" / "conformance.json")])
    return {"base": base, "codes": codes}


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    if not COMMITTED.exists():
        pytest.skip("reports/conformance.json not committed yet")
    return _load(COMMITTED)


def _first(data: dict[str, Any], *, passed: bool, with_ulp: bool = False) -> dict[str, Any]:
    for adapter in data["adapters"]:
        if passed and adapter["verdict"] != "pass":
            continue
        for result in adapter["results"]:
            if result["passed"] == passed and (
                    not with_ulp or isinstance(result["max_ulp"], float)):
                return result
    raise AssertionError("no such result in the report")


# --- compare -------------------------------------------------------------------------------


def test_unchanged_report_compares_clean(committed):
    comparison = compare(committed, copy.deepcopy(committed))
    assert not comparison.regressed
    assert comparison.compared == sum(len(a["results"]) for a in committed["adapters"])
    assert "no regressions" in comparison.format()
    assert "unchanged" in comparison.format()


def test_flipped_result_is_a_regression(committed):
    current = copy.deepcopy(committed)
    result = _first(current, passed=True)
    result["passed"], result["failed"], result["grade"] = False, 1, "broken"
    assert [c.kind for c in compare(committed, current).regressions] == ["newly failing"]
    adapter = next(a for a in current["adapters"] if any(r is result for r in a["results"]))
    adapter["verdict"] = "fail"
    comparison = compare(committed, current)
    assert comparison.regressed
    kinds = {c.kind for c in comparison.regressions}
    assert kinds == {"newly failing", "verdict"}  # the adapter also went pass -> fail
    text = comparison.format()
    assert text.startswith("REGRESSED")
    assert f"{result['function']}[{result['dtype']}-{result['regime']}]" in text
    assert "pass -> fail" in text


def test_ulp_growth_beyond_slack_is_a_regression(committed):
    current = copy.deepcopy(committed)
    result = _first(current, passed=True, with_ulp=True)
    before = result["max_ulp"]
    result["max_ulp"] = max(before * 2, before + 1) * 1.01 + 0.01
    comparison = compare(committed, current)
    assert comparison.regressed
    assert [c.kind for c in comparison.regressions] == ["ulp growth"]
    assert "max_ulp" in comparison.format()
    # A looser slack lets the same growth through.
    assert not compare(committed, current, ulp_slack=10.0).regressed


def test_ulp_growth_within_slack_and_to_inf(committed):
    current = copy.deepcopy(committed)
    result = _first(current, passed=True, with_ulp=True)
    before = result["max_ulp"]
    result["max_ulp"] = max(before * 2, before + 1)  # exactly at the limit: allowed
    assert not compare(committed, current).regressed
    result["max_ulp"] = "inf"
    assert compare(committed, current).regressed


def test_known_failure_and_fix(committed):
    """A failure recorded in the baseline is no regression; fixing it is an improvement."""
    baseline = copy.deepcopy(committed)
    current = copy.deepcopy(committed)
    result = _first(current, passed=False)
    result["passed"], result["failed"] = True, 0
    comparison = compare(baseline, current)
    assert not comparison.regressed
    assert any(c.kind == "fixed" for c in comparison.improvements)
    assert compare(current, baseline).regressed  # and breaking it again regresses


def test_new_and_vanished_results(committed):
    """A result gone from inputs the current run graded too is a regression (a function or
    a check that stopped running cannot pass); a new passing one is listed."""
    current = copy.deepcopy(committed)
    adapter = current["adapters"][0]
    gone = adapter["results"].pop()
    extra = copy.deepcopy(adapter["results"][0])
    extra["regime"] = "made-up"
    extra["passed"] = True
    adapter["results"].append(extra)
    comparison = compare(committed, current)
    assert [c.kind for c in comparison.regressions] == ["result gone"]
    assert gone["function"] in comparison.regressions[0].line()
    assert len(comparison.new) == 1 and "made-up" in comparison.new[0].line()
    adapter["results"].append(gone)
    assert not compare(committed, current).regressed
    extra["passed"] = False
    assert compare(committed, current).regressed  # new and failing: newly failing


def test_a_vanished_adapter_is_a_regression(committed):
    """A built-in that stopped importing is left out of a default run (and named in its
    ``skipped``): against a baseline that had it, that is a regression, with the reason."""
    current = copy.deepcopy(committed)
    gone = current["adapters"].pop(0)
    current["skipped"] = [{"name": gone["name"], "reason": "No module named 'planted'"}]
    comparison = compare(committed, current)
    assert [c.kind for c in comparison.regressions] == ["adapter gone"]
    assert "No module named 'planted'" in comparison.format()


def test_other_inputs_are_not_comparable(committed):
    """Results graded on other cases (here: one case of moderate/float64 changed) are
    listed as not comparable, never as regressions, even when they got worse."""
    current = copy.deepcopy(committed)
    for item in current["inputs"]:
        if item[1:3] == ["float64", "moderate"]:
            item[3] = "0" * 64
            break
    for adapter in current["adapters"]:
        for result in adapter["results"]:
            if (result["dtype"], result["regime"]) == ("float64", "moderate"):
                result["passed"], result["failed"], result["grade"] = False, 1, "broken"
    comparison = compare(committed, current)
    assert not [c for c in comparison.regressions if c.kind != "verdict"]
    assert comparison.not_comparable
    assert all("float64-moderate" in c.subject for c in comparison.not_comparable)
    assert "not comparable" in comparison.format()


def test_ulp_growth_across_platforms_is_listed_apart(committed):
    """A candidate's last bits move with the CPU's SIMD code: on another platform, a
    max_ulp growth with the same grade is listed, not a regression; a grade change still
    is one."""
    current = copy.deepcopy(committed)
    # a dispatch target no real CPU reports: differs from whatever made the baseline
    current["platform"]["simd"] = ["OTHER-CPU"]
    result = _first(current, passed=True, with_ulp=True)
    result["max_ulp"] = result["max_ulp"] * 4 + 2
    comparison = compare(committed, current)
    assert not comparison.regressed
    assert [c.kind for c in comparison.moved] == ["ulp growth"]
    assert "different platforms" in comparison.format()
    result["grade"] = "unstable"
    assert compare(committed, current).regressed


def test_reports_without_input_fingerprints_are_refused(committed):
    old = copy.deepcopy(committed)
    del old["inputs"]
    with pytest.raises(ValueError, match="no input fingerprints"):
        compare(old, committed)


def test_compare_cli_exit_codes(committed, tmp_path, capsys):
    same = _save(committed, tmp_path / "same.json")
    assert cli.main(["compare", str(COMMITTED), str(same)]) == cli.EXIT_OK
    worse = copy.deepcopy(committed)
    result = _first(worse, passed=True)
    result["passed"] = False
    bad = _save(worse, tmp_path / "worse.json")
    capsys.readouterr()
    assert cli.main(["compare", str(COMMITTED), str(bad)]) == cli.EXIT_FAIL
    assert "REGRESSED" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable JSON report"),
    ('{"adapters": []}', "not a xentcheck conformance report"),
    ('{"schema": "xentcheck-conformance/1"}', "malformed report: report has no 'platform'"),
    (None, "no such file"),
])
def test_bad_baseline_is_exit_2_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["compare", str(path), str(COMMITTED)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert cli.main(["run", "--adapter", "numpy", "--baseline", str(path),
                     "--out", str(tmp_path / "out")]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_bad_slack_is_exit_2(capsys):
    assert cli.main(["compare", str(COMMITTED), str(COMMITTED),
                     "--ulp-slack", "0.5"]) == cli.EXIT_USAGE
    assert "--ulp-slack" in capsys.readouterr().err


# --- merge, report, run --baseline ---------------------------------------------------------


def test_shards_merged_equal_a_single_run(runs):
    base = runs["base"]
    full = _load(base / "full" / "conformance.json")
    merged = _load(base / "merged" / "conformance.json")
    shards = [_load(base / f"s{i}" / "conformance.json") for i in (1, 2)]
    assert all(s["cases"] < full["cases"] for s in shards)  # the shards really split
    assert merged["adapters"] == full["adapters"]
    assert merged["cases"] == full["cases"]
    assert merged["settings"] == full["settings"]
    assert runs["codes"]["merge"] == runs["codes"]["full"] == cli.EXIT_FAIL  # numpy-seed fails
    assert (base / "merged" / "conformance.md").exists()
    assert not compare(full, merged).regressed


def test_merge_bad_inputs_exit_2(runs, tmp_path, capsys):
    base = runs["base"]
    bad = tmp_path / "bad.json"
    bad.write_text("[]", encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["merge", str(tmp_path / "o"), str(bad)]) == cli.EXIT_USAGE
    assert "bad.json" in capsys.readouterr().err
    other = _load(base / "s1" / "conformance.json")
    other["settings"]["seed"] = 12345
    odd = _save(other, tmp_path / "odd.json")
    assert cli.main(["merge", str(tmp_path / "o"), str(odd),
                     str(base / "s2" / "conformance.json")]) == cli.EXIT_USAGE
    assert "different settings" in capsys.readouterr().err
    assert cli.main(["merge", str(tmp_path / "o")]) == cli.EXIT_USAGE


def test_report_rerenders_every_format(runs, tmp_path, capsys):
    """The renderings of a JSON equal the run's own, byte for byte (the report id with
    them); the JSON itself is not written again."""
    source = runs["base"] / "full"
    out = tmp_path / "again"
    assert cli.main(["report", str(source / "conformance.json"), "--out", str(out)]) == 0
    for path in source.glob("conformance.*"):
        if path.suffix != ".json":
            assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    assert not (out / "conformance.json").exists()
    assert "re-rendered" in capsys.readouterr().out


def test_run_with_baseline_exit_reflects_regressions_only(runs, tmp_path, capsys):
    base = runs["base"]
    baseline = base / "full" / "conformance.json"
    # The run itself is nonconformant (numpy-seed's known defects), but they are in the
    # baseline: no regression, exit 0.
    code = cli.main(["run", *SMALL, "--baseline", str(baseline), "--out", str(tmp_path / "a")])
    assert code == cli.EXIT_OK
    assert "no regressions" in capsys.readouterr().out
    # A baseline in which numpy-seed passed everything: its failures are regressions.
    clean = _load(baseline)
    for adapter in clean["adapters"]:
        adapter["verdict"] = "pass"
        for result in adapter["results"]:
            result["passed"], result["failed"] = True, 0
    clean_path = _save(clean, tmp_path / "clean.json")
    code = cli.main(["run", *SMALL, "--baseline", str(clean_path),
                     "--out", str(tmp_path / "b")])
    assert code == cli.EXIT_FAIL
    assert "numpy-seed" in capsys.readouterr().out
