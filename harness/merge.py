"""Merge conformance reports of shards (``xentcheck merge``) and of ``run --jobs`` parts.

Results are added up per (adapter, check, function, dtype, regime) exactly as a single
run adds up its findings, so the shards of a run merge into that run's report (timings
aside). :func:`merge` first checks that the reports are the shards of one run, each once
and none missing (each records its ``I/N`` and the fingerprints of its cases);
:func:`combine` adds up parts that are known to be so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xentcheck.harness.findings import _SEVERITY, MAX_NOTES, severity, worst_key


def _max(a: Any, b: Any) -> Any:
    values = [v for v in (a, b) if v is not None and v != "nan"]
    if not values:
        return None
    return max(values, key=lambda v: float(v) if not isinstance(v, str) else float(v))


def _merge_result(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    out["cases"] = a["cases"] + b["cases"]
    out["failed"] = a["failed"] + b["failed"]
    out["passed"] = out["failed"] == 0
    grades = dict(a["grades"])
    for grade, count in b["grades"].items():
        grades[grade] = grades.get(grade, 0) + count
    out["grades"] = grades
    if b["grade"] is not None and (a["grade"] is None
                                   or _SEVERITY[b["grade"]] > _SEVERITY[a["grade"]]):
        out["grade"] = b["grade"]
    out["max_ulp"] = _max(a["max_ulp"], b["max_ulp"])
    out["max_ratio"] = _max(a["max_ratio"], b["max_ratio"])
    wa, wb = a.get("worst"), b.get("worst")
    if wb is not None and (wa is None or _key(wb) > _key(wa)):
        out["worst"], out["reproducer"] = wb, b.get("reproducer")
    out["notes"] = sorted(set(a["notes"]) | set(b["notes"]))[:MAX_NOTES]
    out["budget"] = a.get("budget") or b.get("budget")
    return out


def _key(worst: dict[str, Any]) -> tuple:
    grade_severity = worst.get("severity")
    if grade_severity is None:
        grade_severity = severity(worst.get("grade")) if worst.get("grade") else 0
    ulp = worst.get("ulp")
    ulp = float(ulp) if ulp is not None and ulp != "nan" else None
    return worst_key(int(grade_severity), ulp, worst["case"], list(worst["index"]))


def _merge_not_run(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls not run, per function, added up (the first reason kept)."""
    out = {item["function"]: dict(item) for item in a}
    for item in b:
        if item["function"] in out:
            out[item["function"]]["calls"] += item["calls"]
        else:
            out[item["function"]] = dict(item)
    return [out[f] for f in sorted(out)]


def _verdict(adapter: dict[str, Any]) -> str:
    if adapter.get("reason"):
        return "error"
    return "fail" if any(not r["passed"] for r in adapter["results"]) else "pass"


def _same_run(reports: Sequence[dict[str, Any]]) -> None:
    first = reports[0]
    for other in reports[1:]:
        if other.get("schema") != first.get("schema"):
            raise ValueError("cannot merge reports of different schemas")
        mine = {k: v for k, v in first["settings"].items() if k != "shard"}
        theirs = {k: v for k, v in other["settings"].items() if k != "shard"}
        if mine != theirs:
            raise ValueError("cannot merge reports of runs with different settings")
        if other["platform"].get("xentcheck") != first["platform"].get("xentcheck"):
            raise ValueError("cannot merge reports of different xentcheck versions")


def combine(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from reports of disjoint parts of one run (``run --jobs`` parts, or the
    shards :func:`merge` has checked): results added up as a single run adds up its
    findings, so the parts give that run's report (timings aside)."""
    if not reports:
        raise ValueError("nothing to merge")
    _same_run(reports)
    first = reports[0]
    adapters: dict[str, dict[str, Any]] = {}
    for report in reports:
        for adapter in report["adapters"]:
            name = adapter["name"]
            if name not in adapters:
                adapters[name] = {**adapter, "results": [], "not_run": []}
                adapters[name]["_index"] = {}
            target = adapters[name]
            if adapter.get("reason") and not target.get("reason"):
                target["reason"] = adapter["reason"]
            target["not_run"] = _merge_not_run(target["not_run"], adapter.get("not_run") or [])
            for result in adapter["results"]:
                key = (result["check"], result["function"], result["dtype"], result["regime"])
                index = target["_index"]
                if key in index:
                    index[key] = _merge_result(index[key], result)
                else:
                    index[key] = result
    merged_adapters = []
    for adapter in adapters.values():
        index = adapter.pop("_index")
        adapter["results"] = [index[k] for k in sorted(index)]
        adapter["verdict"] = _verdict(adapter)
        merged_adapters.append(adapter)
    skipped = {s["name"]: s for r in reports for s in r.get("skipped") or ()}
    settings = {**first["settings"], "shard": None}
    merged = {
        "schema": first["schema"],
        "platform": first["platform"],
        "settings": settings,
        "cases": sum(r["cases"] for r in reports),
        "seconds": max(r.get("seconds", 0.0) for r in reports),
        "inputs": sorted(i for r in reports for i in r.get("inputs") or ()),
        "skipped": [skipped[name] for name in sorted(skipped)],
        "adapters": merged_adapters,
    }
    timing = _summed_timing(reports)
    if timing:
        merged["timing"] = timing
    return merged


def timing(seconds: float, calls: int, call_seconds: float) -> dict[str, Any]:
    """A report's ``timing`` entry of one adapter (measured: it differs run to run, the
    results do not). ``seconds``: the adapter's part of the run, its loading, the grading
    of its results and the truths of the cases it is the first to need included;
    ``calls`` and ``call_seconds``: the calls that reached the adapter and their time,
    each a round trip to its worker. Over ``--jobs`` processes and merged shards, each
    is the sum (process time)."""
    return {"seconds": round(seconds, 3), "calls": int(calls),
            "call_seconds": round(call_seconds, 3)}


def _summed_timing(reports: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each adapter's ``timing`` over the parts: every figure summed (process time)."""
    totals: dict[str, list[float]] = {}
    for report in reports:
        for name, figures in (report.get("timing") or {}).items():
            total = totals.setdefault(name, [0.0, 0, 0.0])
            total[0] += figures.get("seconds", 0.0)
            total[1] += figures.get("calls", 0)
            total[2] += figures.get("call_seconds", 0.0)
    return {name: timing(s, int(n), c) for name, (s, n, c) in totals.items()}


def merge(shards: Sequence[dict[str, Any]], names: Sequence[str] | None = None
          ) -> dict[str, Any]:
    """One report from the reports of the shards of one run (``run --shard I/N``).

    Refused with a one-line ``ValueError``: a report that is not a shard, shards of
    different runs (settings, xentcheck version, N), a shard given twice, a missing shard,
    shards that share a case. ``names`` (the files, for messages) default to ``#1``, ..."""
    if not shards:
        raise ValueError("nothing to merge")
    labels = list(names) if names is not None else [f"#{i}" for i in range(1, len(shards) + 1)]
    seen: dict[int, str] = {}
    count = None
    for label, shard in zip(labels, shards, strict=True):
        text = shard["settings"].get("shard")
        if not text:
            raise ValueError(f"{label} is not a shard (its run had no --shard I/N)")
        index, _, total = str(text).partition("/")
        if not (index.isdigit() and total.isdigit()):
            raise ValueError(f"{label}: shard {text!r} is not I/N")
        i, n = int(index), int(total)
        if count is not None and n != count:
            raise ValueError(f"{label} is shard {i}/{n}, the others are of {count}")
        count = n
        if i in seen:
            raise ValueError(f"shard {i}/{n} is given twice ({seen[i]} and {label})")
        seen[i] = label
        if "inputs" not in shard:
            raise ValueError(f"{label} records no inputs (written by an older xentcheck)")
    assert count is not None
    missing = sorted(set(range(1, count + 1)) - set(seen))
    if missing:
        raise ValueError(f"shard{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(f'{i}/{count}' for i in missing)} missing")
    owner: dict[str, str] = {}
    for label, shard in zip(labels, shards, strict=True):
        for case_id, *_ in shard["inputs"]:
            if case_id in owner:
                raise ValueError(f"case {case_id!r} is in both {owner[case_id]} and {label}")
            owner[case_id] = label
    return combine(shards)
