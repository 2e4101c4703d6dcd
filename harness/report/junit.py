"""``conformance.junit.xml``: the run as JUnit XML for CI dashboards.

One ``<testsuite>`` per adapter (``name`` the adapter's name), one ``<testcase>`` per result,
named ``function[dtype-regime-check]`` (e.g. ``log_softmax[float32-large-value]``) with
classname ``xentcheck.<adapter>``. A failing result carries a ``<failure>`` whose message
names the grade, the worst element's got, should-be, ulps and bound, and whose text adds the
worst input and the reproducer. An adapter that could not be run at all (verdict ``error``)
is one test case ``<adapter>[load]`` with an ``<error>`` giving the reason. Built with
:mod:`xml.etree.ElementTree`, which escapes markup; characters that XML 1.0 cannot hold at
all (control characters) are replaced by ``?``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from xentcheck.harness.report import write_atomic

FILENAME = "conformance.junit.xml"

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _x(value: Any) -> str:
    """Text that XML 1.0 can hold."""
    return _INVALID_XML.sub("?", "" if value is None else str(value))


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def test_name(result: dict[str, Any]) -> str:
    """``function[dtype-regime-check]``, the id a user sees in CI."""
    return f"{result['function']}[{result['dtype']}-{result['regime']}-{result['check']}]"


def failure_message(result: dict[str, Any]) -> str:
    """One line: grade, rows failed, the worst element's got, should-be, ulps and bound."""
    head = (f"{result['grade']}: {result['failed']} of {result['cases']} rows failed, "
            f"max {_num(result['max_ulp'])} ulp, ratio {_num(result['max_ratio'])}")
    w = result.get("worst")
    if not w:
        notes = result.get("notes") or []
        return head + (f"; {notes[0]}" if notes else "")
    if w.get("got") is None and w.get("expected") is None:
        return head + f"; case {w.get('case')} row {w.get('row')}"
    return (head + f"; worst at case {w.get('case')} row {w.get('row')} index "
            f"{w.get('index')}: got {w.get('got')}, should be {w.get('expected')} "
            f"({_num(w.get('ulp'))} ulp, ratio {_num(w.get('ratio'))}, bound "
            f"{_num(w.get('allowed_ulp'))} ulp)")


def failure_text(result: dict[str, Any]) -> str:
    """The message plus notes, the worst input and the reproducer, one per line."""
    lines = [failure_message(result)]
    lines += [f"note: {n}" for n in result.get("notes") or []]
    w = result.get("worst") or {}
    if w.get("input"):
        lines.append("input: " + " ".join(str(v) for v in w["input"]))
    reproducer = w.get("reproducer") or result.get("reproducer")
    if reproducer:
        lines.append(f"reproduce: {reproducer}")
    return "\n".join(lines)


def build(data: dict[str, Any]) -> ET.Element:
    """The ``<testsuites>`` element of the run."""
    root = ET.Element("testsuites", name="xentcheck")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for a in data["adapters"]:
        name = _x(a["name"])
        suite = ET.SubElement(root, "testsuite", name=name)
        classname = f"xentcheck.{name}"
        counts = {"tests": 0, "failures": 0, "errors": 0}
        if a["verdict"] == "error":
            case = ET.SubElement(suite, "testcase", name=f"{name}[load]", classname=classname)
            reason = _x(a.get("reason") or "the adapter could not be run")
            error = ET.SubElement(case, "error", message=reason, type="AdapterError")
            error.text = f"{reason}\nspec: {_x(a.get('spec'))}"
            counts["tests"] += 1
            counts["errors"] += 1
        for r in a["results"]:
            case = ET.SubElement(suite, "testcase", name=_x(test_name(r)),
                                 classname=classname)
            counts["tests"] += 1
            if not r["passed"]:
                counts["failures"] += 1
                failure = ET.SubElement(case, "failure", message=_x(failure_message(r)),
                                        type=_x(r["grade"]))
                failure.text = _x(failure_text(r))
        for n in a.get("not_run") or ():
            case = ET.SubElement(suite, "testcase", name=_x(f"{n['function']}[not run]"),
                                 classname=classname)
            ET.SubElement(case, "skipped", message=_x(f"{n['calls']} calls not run: "
                                                      f"{n['reason']}"))
            counts["tests"] += 1
            counts["skipped"] = counts.get("skipped", 0) + 1
        props = ET.Element("properties")
        version = a.get("version")
        if version:
            ET.SubElement(props, "property", name="version", value=_x(version))
        if data.get("report_id"):
            ET.SubElement(props, "property", name="report_id", value=_x(data["report_id"]))
        if len(props):
            suite.insert(0, props)
        counts.setdefault("skipped", 0)
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] = totals.get(key, 0) + value
        spent = (data.get("timing") or {}).get(a["name"])
        if spent:  # the adapter's part of the run, in seconds
            suite.set("time", str(spent.get("seconds", 0.0)))
    for key, value in totals.items():
        root.set(key, str(value))
    if data.get("seconds") is not None:
        root.set("time", str(data["seconds"]))
    return root


def render(data: dict[str, Any]) -> str:
    root = build(data)
    ET.indent(root, space=" ")
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            + ET.tostring(root, encoding="unicode") + "\n")


def write(data: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / FILENAME
    write_atomic(path, render(data))
    return path
