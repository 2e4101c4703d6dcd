"""How much pytest-xdist speeds up the pytest plugin's default suite.

    python benchmarks/plugin_xdist.py [--repeats R]

prints one JSON object. ``plugin_xdist_speedup`` is the wall time of
``pytest --xentcheck-adapter my_adapter.py`` (no other option: the default suite, every
default regime and dtype) in one process ÷ the wall time of the same command with
``-n 2``, both run side by side in this script on the same example project: a temporary
folder holding one test of its own and the example adapter of ``examples/python_adapter``
with its ``dtypes`` line taken out, so that it is checked on all four dtypes, as an
adapter that declares none is. Best of R each, serial and parallel alternating. The times
include everything a CI job pays: pytest's start, collection, the adapter's worker
processes and, with ``-n 2``, xdist's own two workers (``xdist_bare_seconds``: ``-n 2`` on
the one test of the project alone, the plugin not asked for, is that fixed cost on this
machine). ``plugin_xdist_work_speedup`` is the same ratio once each command's start (the
same command with ``-k`` selecting nothing: start, imports, cases, adapter workers) is
taken off: how well the tests themselves are shared. The goal is 1.6 on two free cores;
the load average before and after is reported, since other processes share the cores.
Needs pytest-xdist.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "examples" / "python_adapter" / "my_adapter.py"


def example_adapter() -> str:
    """The example adapter's source without its ``dtypes`` declaration (all dtypes)."""
    lines = ADAPTER.read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("dtypes ="))


def _pytest(project: Path, *args: str, adapter: str = "my_adapter.py",
            plugin: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall seconds and the outcome of pytest in ``project`` (in a fresh process)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("PYTEST_ADDOPTS", None)
    installed = any(ep.value == "xentcheck.harness.plugin"
                    for ep in metadata.entry_points(group="pytest11"))
    load = () if installed else ("-p", "xentcheck.harness.plugin")
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", *load, "-p", "no:cacheprovider",
                          "-p", "no:randomly", "-q",
                          *(("--xentcheck-adapter", adapter) if plugin else ()),
                          *args], cwd=project, env=env, capture_output=True, text=True,
                         timeout=1800)
    return time.perf_counter() - started, run


def _summary(run: subprocess.CompletedProcess[str]) -> str:
    lines = run.stdout.strip().splitlines()
    return lines[-1] if lines else run.stderr.strip()[-200:]


def plugin_xdist(repeats: int = 1, adapter: str = "my_adapter.py") -> dict[str, Any]:
    """``plugin_xdist_speedup`` (serial seconds ÷ ``-n 2`` seconds), with both times;
    ``adapter``: another spec than the example project's (a built-in name)."""
    import xdist  # noqa: F401 - fail early and clearly without pytest-xdist

    project = Path(tempfile.mkdtemp(prefix="xentcheck-xdist-bench-"))
    try:
        (project / "my_adapter.py").write_text(example_adapter())
        (project / "test_own.py").write_text("def test_own():\n    assert True\n")
        load_before = os.getloadavg()
        serial: list[float] = []
        parallel: list[float] = []
        outcomes: dict[str, str] = {}
        for _ in range(repeats):
            seconds, run = _pytest(project, adapter=adapter)
            serial.append(seconds)
            outcomes["serial"] = _summary(run)
            seconds, run = _pytest(project, "-n", "2", adapter=adapter)
            parallel.append(seconds)
            outcomes["xdist"] = _summary(run)
        bare = min(_pytest(project, "-n", "2", "test_own.py", plugin=False)[0]
                   for _ in range(repeats))
        # collected, nothing run: what each command pays before its first test
        nothing = ("-k", "no test has this name")
        serial_start = min(_pytest(project, *nothing, adapter=adapter)[0] for _ in range(repeats))
        parallel_start = min(_pytest(project, "-n", "2", *nothing, adapter=adapter)[0]
                             for _ in range(repeats))
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return {
        "plugin_xdist_speedup": round(min(serial) / min(parallel), 3),
        "adapter": adapter,
        "plugin_serial_seconds": round(min(serial), 2),
        "plugin_xdist_n2_seconds": round(min(parallel), 2),
        "xdist_bare_seconds": round(bare, 2),
        "plugin_serial_start_seconds": round(serial_start, 2),
        "plugin_xdist_n2_start_seconds": round(parallel_start, 2),
        # the tests' own time, start and collection taken off both sides
        "plugin_xdist_work_speedup": round((min(serial) - serial_start)
                                           / max(min(parallel) - parallel_start, 1e-9), 3),
        "plugin_outcomes": outcomes,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, metavar="R",
                        help="runs of each command; the best is kept (default 1)")
    parser.add_argument("--adapter", default="my_adapter.py", metavar="SPEC",
                        help="the adapter of the suite (default: the example project's)")
    args = parser.parse_args(argv)
    print(json.dumps(plugin_xdist(args.repeats, args.adapter), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
