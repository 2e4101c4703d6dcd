"""The built wheel works outside the checkout, in a project with its own ``harness`` and
``references`` packages.

A copy of the source tree is built with ``python -m build --wheel`` (not the checkout
itself: a build writes ``build/`` and an egg-info next to the sources), installed into a
fresh virtual environment, and used from a directory that holds a user's project: the
``xentcheck`` command (``--version``, ``list``, a small ``run`` that compiles the C
reference from the wheel's own sources), ``python -m xentcheck.harness.repro`` and the
pytest plugin through its entry point. The environment reaches the dependencies (NumPy,
mpmath, pytest, ...) already installed for this interpreter through a path file, so the
test needs no network; its ``.pth`` files (among them the editable install's) are not
processed there, so nothing but the wheel provides ``xentcheck``.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib

from xentcheck.harness.report import json_report

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

pytest.importorskip("build", reason="the wheel test needs the 'build' package (the dev extra)")


def _run(argv: list[str], cwd: Path, env: dict[str, str],
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the virtual environment's bin folder, an environment for running it)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "reports", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
        ".pytest_cache", ".ruff_cache"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    built = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                  str(base / "dist"), str(source)], cwd=base, env=env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheels = list((base / "dist").glob("xentcheck-*.whl"))
    assert [w.name for w in wheels] == [f"xentcheck-{VERSION}-py3-none-any.whl"]

    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base, env=env)
    assert made.returncode == 0, made.stderr
    purelib = Path(subprocess.check_output(
        [str(venv / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # every site folder this interpreter sees: in a virtual environment made with
    # --system-site-packages the dependencies may lie in the base interpreter's
    here = [*site.getsitepackages(), sysconfig.get_paths()["purelib"],
            *(p for p in sys.path if Path(p).name in ("site-packages", "dist-packages"))]
    (purelib / "_xentcheck_test_deps.pth").write_text(
        "\n".join(dict.fromkeys(p for p in here if Path(p).is_dir())) + "\n")
    pip = _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                "install", "--no-index", "--no-build-isolation", str(wheels[0])],
               cwd=base, env=env)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    return venv / "bin", env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project with its own top-level ``harness`` and ``references`` packages."""
    root = tmp_path_factory.mktemp("user_project")
    for name in ("harness", "references"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"WHOSE = 'the user project {name}'\n")
    (root / "test_own.py").write_text(
        "import harness, references\n\n"
        "def test_own_packages():\n"
        "    assert harness.WHOSE.endswith('harness') and references.WHOSE\n")
    return root


def test_version_names_the_installed_release(installed, project):
    bin_dir, env = installed
    done = _run([str(bin_dir / "xentcheck"), "--version"], cwd=project, env=env)
    assert done.returncode == 0 and done.stdout.strip() == f"xentcheck {VERSION}", done


def test_the_installed_modules_come_from_the_wheel(installed, project):
    bin_dir, env = installed
    code = ("import xentcheck.harness, xentcheck.references.gold as g, harness; "
            "print(xentcheck.harness.__file__); print(g.__file__); print(harness.WHOSE)")
    done = _run([str(bin_dir / "python"), "-c", code], cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    harness_file, gold_file, whose = done.stdout.splitlines()
    venv = bin_dir.parent
    assert Path(harness_file).is_relative_to(venv) and Path(gold_file).is_relative_to(venv)
    assert whose == "the user project harness"  # the project's own package is untouched


def test_list_and_a_small_run_with_the_c_reference(installed, project):
    bin_dir, env = installed
    listed = _run([str(bin_dir / "xentcheck"), "list", "--timeout", "60"], cwd=project, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "numpy" in listed.stdout and "c-seed" in listed.stdout
    out = project / "out"
    done = _run([str(bin_dir / "xentcheck"), "run", "--adapter", "numpy", "--adapter", "c",
                 "--regime", "moderate", "--dtype", "float64", "--out", str(out)],
                cwd=project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json_report.load(out / "conformance.json")
    verdicts = {a["name"]: a["verdict"] for a in report["adapters"]}
    assert verdicts == {"numpy": "pass", "c": "pass"}, verdicts  # C built from the wheel
    assert (out / "conformance.md").is_file()


def test_repro_runs_from_the_wheel(installed, project):
    bin_dir, env = installed
    done = _run([str(bin_dir / "python"), "-m", "xentcheck.harness.repro", "numpy", "softmax",
                 "xentcheck.harness.strategies.sample('moderate', dtype='float64', seed=0)[0]"],
                cwd=project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_plugin_loads_through_its_entry_point(installed, project):
    bin_dir, env = installed
    done = _run([str(bin_dir / "python"), "-m", "pytest", "-p", "no:cacheprovider",
                 "--xentcheck-adapter", "numpy", "--xentcheck-regime", "moderate",
                 "--xentcheck-dtype", "float64", "-q"], cwd=project, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    passed = [line for line in done.stdout.splitlines() if " passed" in line]
    assert passed, done.stdout[-2000:]
    count = int(passed[-1].split(" passed")[0].split()[-1])
    assert count > 1  # the project's own test and the plugin's tests
