"""Merge conformance reports of shards (``xentcheck merge``, ``run --jobs``).

Results are added up per (adapter, check, function, dtype, regime) exactly as a single
run adds up its findings, so the shards of a run merge into that run's report (timings
aside).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.findings import MAX_NOTES, severity, worst_key

_SEVERITY = {"exact": 0, "faithful": 1, "ulp≤N": 2, "stable": 3, "holds": 3, "unstable": 4,
             "violated": 4, "broken": 5}


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


def _verdict(adapter: dict[str, Any]) -> str:
    if adapter.get("reason"):
        return "error"
    return "fail" if any(not r["passed"] for r in adapter["results"]) else "pass"


def merge(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from the reports of the shards of a run (same settings but the shard)."""
    if not reports:
        raise ValueError("nothing to merge")
    first = reports[0]
    for other in reports[1:]:
        if other.get("schema") != first.get("schema"):
            raise ValueError("cannot merge reports of different schemas")
        mine = {k: v for k, v in first["settings"].items() if k != "shard"}
        theirs = {k: v for k, v in other["settings"].items() if k != "shard"}
        if mine != theirs:
            raise ValueError("cannot merge reports of runs with different settings")
    adapters: dict[str, dict[str, Any]] = {}
    for report in reports:
        for adapter in report["adapters"]:
            name = adapter["name"]
            if name not in adapters:
                adapters[name] = {**adapter, "results": []}
                adapters[name]["_index"] = {}
            target = adapters[name]
            if adapter.get("reason") and not target.get("reason"):
                target["reason"] = adapter["reason"]
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
    settings = {**first["settings"], "shard": None}
    return {
        "schema": first["schema"],
        "platform": first["platform"],
        "settings": settings,
        "cases": sum(r["cases"] for r in reports),
        "seconds": max(r.get("seconds", 0.0) for r in reports),
        "adapters": merged_adapters,
    }
