"""``conformance.json``: the run as schema-versioned JSON (DESIGN.md §8), and reading it back.

:func:`load` is what every command that takes a report (``compare``, ``merge``,
``report``, ``run --baseline``) reads it with: strict JSON (no ``NaN`` or ``Infinity``,
which JSON does not have; inf and NaN figures travel as the strings ``"inf"``,
``"nan"``), nesting within a fixed depth, and every field a tool or writer reads checked
for its type (:func:`validate`), so a malformed file is a one-line error naming the field,
never a crash halfway through writing.

On disk a result leaves out what it would only repeat (:func:`compact`, schema
``xentcheck-conformance/3``): a field at its default (``grade``, ``max_ulp``,
``max_ratio``, ``worst``, ``reproducer``, ``budget`` null, ``notes`` empty, ``failed`` 0),
``grades`` when every row got the result's grade (``{grade: cases}``); a passing result has
no reproducer and its worst case only says where its largest error is (``case``, ``row``,
``index``, ``ulp``, ``ratio``, ``severity``). :func:`load` puts the defaults back
(:func:`expand`), so every reader sees every field, and reads the full form of schema 2 too.
With ``jq``, a left-out field reads as ``null``.

A run's ``timing`` (per adapter name: ``seconds``, ``calls``, ``call_seconds``; see
:func:`xentcheck.harness.merge.timing`) is measured, so it differs from run to run, and
optional: the pytest plugin's reports, and those written before it, have none.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xentcheck.harness.findings import GRADES, PASSING_WORST
from xentcheck.harness.report import STEM, write_atomic

SUFFIX = ".json"
FILENAME = STEM + SUFFIX

#: Deepest nesting a report has (a worst case's index inside a result inside an adapter);
#: anything much deeper is not a report, and is refused before Python's recursion limit.
MAX_DEPTH = 12

_GRADES = GRADES
_VERDICTS = ("pass", "fail", "error")


#: A result's fields left out on disk when they hold these values (restored by :func:`load`).
DEFAULTS: dict[str, Any] = {"grade": None, "max_ulp": None, "max_ratio": None,
                            "worst": None, "reproducer": None, "notes": [], "budget": None,
                            "failed": 0}

def compact(result: dict[str, Any]) -> dict[str, Any]:
    """The on-disk form of a result (see the module docstring).

    >>> compact({"check": "value", "grade": "exact", "passed": True, "cases": 3,
    ...          "failed": 0, "grades": {"exact": 3}, "max_ulp": 0.0, "max_ratio": None,
    ...          "worst": None, "reproducer": None, "notes": [], "budget": None})
    {'check': 'value', 'grade': 'exact', 'passed': True, 'cases': 3, 'max_ulp': 0.0}
    """
    out = {k: v for k, v in result.items()
           if not (k in DEFAULTS and v == DEFAULTS[k] and type(v) is type(DEFAULTS[k]))}
    grade = result.get("grade")
    if grade is not None and result.get("grades") == {grade: result.get("cases")}:
        del out["grades"]
    worst = out.get("worst")
    if result.get("passed"):
        out.pop("reproducer", None)
        if worst is not None:
            out["worst"] = {k: worst[k] for k in PASSING_WORST if k in worst}
    return out


def expand(result: dict[str, Any]) -> dict[str, Any]:
    """A result as :func:`compact` left it, with every left-out field back (a full result
    comes back unchanged)."""
    out = dict(result)
    for key, default in DEFAULTS.items():
        out.setdefault(key, list(default) if isinstance(default, list) else default)
    if "grades" not in out:
        grade = out.get("grade")
        out["grades"] = {grade: out.get("cases")} if isinstance(grade, str) else {}
    return out


def _expand_all(data: dict[str, Any]) -> None:
    """:func:`expand` every result in place, where the structure is a report's (what is not
    is left for :func:`validate` to name)."""
    for adapter in data.get("adapters") or ():
        if isinstance(adapter, dict) and isinstance(adapter.get("results"), list):
            adapter["results"] = [expand(r) if isinstance(r, dict) else r
                                  for r in adapter["results"]]


def render(data: dict[str, Any]) -> str:
    """Compact JSON (a default run holds ~20000 results): one adapter per line, one input
    fingerprint per line, each result in its on-disk form (:func:`compact`)."""
    head = {k: v for k, v in data.items() if k not in ("adapters", "inputs")}
    text = json.dumps(head, indent=1, allow_nan=False)[:-2]
    if "inputs" in data:
        inputs = [json.dumps(i, separators=(",", ":")) for i in data["inputs"]]
        text += ',\n "inputs": [\n' + ",\n".join(inputs) + "\n]"
    adapters = [{**a, "results": [compact(r) for r in a["results"]]} for a in data["adapters"]]
    lines = [json.dumps(a, separators=(",", ":"), allow_nan=False) for a in adapters]
    return text + ',\n "adapters": [\n' + ",\n".join(lines) + "\n]}\n"


def write(data: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / FILENAME
    write_atomic(path, render(data))
    return path


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (inf and NaN figures are the strings \"inf\", \"nan\")")


def _depth(value: Any, limit: int) -> int:
    """The nesting depth of ``value``, without recursion (stops past ``limit``)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def load(path: str | Path) -> dict[str, Any]:
    """Read and check a conformance.json; a one-line ``ValueError`` if it is not one."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: is a directory, not a JSON report") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{p}: cannot be read ({err})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"{p}: nested too deeply to be a report") from None
    except ValueError as err:  # JSONDecodeError is one
        raise ValueError(f"{p}: not a readable JSON report ({err})") from None
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(
            "xentcheck-conformance/"):
        raise ValueError(f"{p}: not a xentcheck conformance report (no schema)")
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise ValueError(f"{p}: nested too deeply to be a report")
    _expand_all(data)
    try:
        validate(data)
    except ValueError as err:
        raise ValueError(f"{p}: malformed report: {err}") from None
    return data


# ------------------------------------------------------------------------- validation
# A field's check is a function (value, where) that raises ValueError naming ``where``.

Check = Callable[[Any, str], None]


def _kind(*types: type, none: bool = False, what: str = "") -> Check:
    def check(value: Any, where: str) -> None:
        if value is None and none:
            return
        if isinstance(value, bool) and bool not in types:
            raise ValueError(f"{where} is {value!r}, expected {what}")
        if not isinstance(value, types):
            raise ValueError(f"{where} is {_shown(value)}, expected {what}")
    return check


def _shown(value: Any) -> str:
    text = json.dumps(value)[:40]
    return f"{text}..." if len(text) == 40 else text


_STR = _kind(str, what="a string")
_OPT_STR = _kind(str, none=True, what="a string or null")
_INT = _kind(int, what="an integer")
_OPT_INT = _kind(int, none=True, what="an integer or null")
_NUMBER = _kind(int, float, what="a number")
_BOOL = _kind(bool, what="true or false")


def _figure(value: Any, where: str) -> None:
    """A max_ulp, ratio or the like: a number, "inf", "-inf", "nan" or null."""
    if value is None or value in ("inf", "-inf", "nan"):
        return
    _NUMBER(value, where)


def _one_of(choices: tuple[str, ...], none: bool = False) -> Check:
    def check(value: Any, where: str) -> None:
        if value is None and none:
            return
        if value not in choices:
            raise ValueError(f"{where} is {_shown(value)}, expected one of {', '.join(choices)}")
    return check


def _list(item: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise ValueError(f"{where} is {_shown(value)}, expected a list")
        for i, v in enumerate(value):
            item(v, f"{where}[{i}]")
    return check


def _mapping(value_check: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ValueError(f"{where} is {_shown(value)}, expected an object")
        for k, v in value.items():
            value_check(v, f"{where}.{k}")
    return check


def _record(fields: dict[str, Check], optional: dict[str, Check] | None = None,
            none: bool = False) -> Check:
    def check(value: Any, where: str) -> None:
        if value is None and none:
            return
        if not isinstance(value, dict):
            raise ValueError(f"{where} is {_shown(value)}, expected an object")
        for name, field in fields.items():
            if name not in value:
                raise ValueError(f"{where} has no {name!r}")
            field(value[name], f"{where}.{name}")
        for name, field in (optional or {}).items():
            if name in value:
                field(value[name], f"{where}.{name}")
    return check


_WORST = _record(
    {"case": _STR, "row": _OPT_INT, "index": _list(_INT),
     "ulp": _figure, "ratio": _figure},
    {"got": _OPT_STR, "expected": _OPT_STR, "allowed_ulp": _figure, "reproducer": _STR,
     "input": _list(_STR), "severity": _INT, "target_kind": _STR, "target": _list(_STR),
     "options": _kind(dict, what="an object")}, none=True)

_RESULT = _record({
    "check": _STR, "function": _STR, "dtype": _STR, "regime": _STR,
    "grade": _one_of(_GRADES, none=True), "passed": _BOOL, "cases": _INT, "failed": _INT,
    "grades": _mapping(_INT), "max_ulp": _figure, "max_ratio": _figure, "worst": _WORST,
    "reproducer": _OPT_STR, "notes": _list(_STR), "budget": _OPT_STR,
})

_ADAPTER = _record({
    "name": _STR, "spec": _STR, "version": _OPT_STR, "verdict": _one_of(_VERDICTS),
    "reason": _OPT_STR, "dtypes": _list(_STR), "provides": _list(_STR),
    "results": _list(_RESULT),
}, {"not_provided": _list(_STR), "dialect": _STR, "not_run": _list(_record(
    {"function": _STR, "calls": _INT, "reason": _STR}))})

_SETTINGS = _record({
    "profile": _STR, "ulp_budget": _figure, "seed": _INT, "dtypes": _list(_STR),
    "regimes": _list(_STR), "cases_file": _OPT_STR, "shard": _OPT_STR, "timeout": _figure,
    "max_classes": _OPT_INT,
}, {"block_elements": _INT, "checks": _list(_STR)})

_PLATFORM = _record(
    {"python": _STR, "numpy": _STR, "mpmath": _STR, "machine": _STR},
    {"adapter_versions": _mapping(_OPT_STR), "simd": _list(_STR), "system": _STR,
     "processor": _STR, "xentcheck": _STR, "hypothesis": _STR})

#: An input fingerprint: [case id, dtype, regime, SHA-256 of the contents].
_INPUT = _list(_STR)

_REPORT = _record(
    {"schema": _STR, "platform": _PLATFORM, "settings": _SETTINGS, "cases": _INT,
     "seconds": _figure, "adapters": _list(_ADAPTER)},
    {"inputs": _list(_INPUT), "report_id": _STR, "skipped": _list(_record(
        {"name": _STR, "reason": _STR})), "hunts": _list(_kind(dict, what="an object")),
     "timing": _mapping(_record({"seconds": _figure, "calls": _INT,
                                 "call_seconds": _figure}))})


def validate(data: Any) -> None:
    """Raise a one-line ``ValueError`` naming the first field of ``data`` that is not what
    a conformance report holds there (types of every field the tools and writers read)."""
    _REPORT(data, "report")
    for i, item in enumerate(data.get("inputs") or ()):
        if len(item) != 4:
            raise ValueError(f"report.inputs[{i}] has {len(item)} fields, expected 4")
