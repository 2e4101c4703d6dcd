"""``conformance.json``: the run as schema-versioned JSON (DESIGN.md §8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.report import write_atomic

FILENAME = "conformance.json"


def render(data: dict[str, Any]) -> str:
    """Compact JSON (a default run holds ~8000 results), one adapter per line."""
    head = {k: v for k, v in data.items() if k != "adapters"}
    lines = [json.dumps(a, separators=(",", ":"), allow_nan=False) for a in data["adapters"]]
    text = json.dumps(head, indent=1, allow_nan=False)[:-2]
    return text + ',\n "adapters": [\n' + ",\n".join(lines) + "\n]}\n"


def write(data: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / FILENAME
    write_atomic(path, render(data))
    return path


def load(path: str | Path) -> dict[str, Any]:
    """Read a conformance.json back; a one-line ValueError if it is not one."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{p}: not a readable JSON report ({err})") from None
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(
            "xentcheck-conformance/"):
        raise ValueError(f"{p}: not a xentcheck conformance report (no schema)")
    return data
