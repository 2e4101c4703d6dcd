"""Report writers, one module per format, all rendering the one JSON-ready structure that
:meth:`xentcheck.harness.runner.RunReport.to_dict` builds, and the writing of a report set.

A run's reports are one set: ``conformance.json``, ``.md``, ``.html`` and ``.junit.xml``
(:func:`write_set`). Every file of a set carries the same report id (the first 16 hex
digits of the SHA-256 of the JSON report's content), and a set is written as a whole or
not at all: every file is rendered in memory first, written into a fresh folder beside
the target, and moved into place with SIGINT and SIGTERM held back until the last one is
there. A failed render, a full disk or an interrupt leaves the previous set as it was.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from xentcheck.harness.signals import held

#: The file name of a run's reports, less the format's suffix.
STEM = "conformance"

#: The writer modules, by the suffix of the file each writes.
WRITERS: dict[str, str] = {
    ".json": "xentcheck.harness.report.json_report",
    ".md": "xentcheck.harness.report.markdown",
    ".html": "xentcheck.harness.report.html",
    ".junit.xml": "xentcheck.harness.report.junit",
}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that the file is complete or absent, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def report_id(data: dict[str, Any]) -> str:
    """The id every file of a report set carries: a digest of the JSON report's content
    (without the id itself, each result in its on-disk form), so that a file can be matched
    with the JSON it came from, and a report read back renders with the same id."""
    from xentcheck.harness.report.json_report import compact

    content = {k: v for k, v in data.items() if k not in ("report_id", "adapters")}
    content["adapters"] = [{**a, "results": [compact(r) for r in a.get("results", ())]}
                           for a in data.get("adapters", ())]
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def render_set(data: dict[str, Any], *, with_json: bool = True) -> dict[str, str]:
    """Every format's text (by suffix), rendered in memory; ``data`` gains its report id."""
    data["report_id"] = report_id(data)
    texts = {}
    for suffix, module in WRITERS.items():
        if suffix == ".json" and not with_json:
            continue
        texts[suffix] = importlib.import_module(module).render(data)
    return texts


def write_set(data: dict[str, Any], out_dir: Path, *, stem: str = STEM,
              with_json: bool = True) -> list[Path]:
    """Write the report set of ``data`` into ``out_dir`` as ``stem`` + each suffix: all of
    it or, on any error or interrupt, nothing (the files already there stay as they were).
    Without ``with_json`` only the renderings are written (``xentcheck report``). Raises
    ``OSError`` when the folder cannot be written."""
    texts = render_set(data, with_json=with_json)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".xentcheck-new-", dir=out_dir))
    try:
        staged = []
        for suffix, text in texts.items():
            path = staging / f"{stem}{suffix}"
            path.write_text(text, encoding="utf-8")
            staged.append(path)
        written = []
        with held():  # a terminal's Ctrl-C comes after the last file
            for path in staged:
                target = out_dir / path.name
                os.replace(path, target)
                written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_writable(out_dir: Path) -> None:
    """Raise ``OSError`` (with the reason) unless reports can be written into ``out_dir``:
    it is created if need be, and a file is made and removed there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(prefix=".xentcheck-probe-", dir=out_dir):
        pass
