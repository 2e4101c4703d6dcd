"""pyproject.toml ships every package: each folder with an ``__init__.py`` under
``harness/`` and ``references/`` is in ``[tool.setuptools] packages``.

The package list is explicit (the folders are installed under other names, through
``package-dir``), so a new subpackage that is not added there works in an editable
checkout and is silently missing from the wheel. This test reads the checkout's
pyproject.toml and its folders, not the installed package.
"""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _folder_packages() -> dict[str, Path]:
    """Import name -> folder, for every folder with an ``__init__.py`` below each folder
    that ``package-dir`` maps (``harness/`` and ``references/``)."""
    found = {}
    for name, folder in _setuptools()["package-dir"].items():
        top = ROOT / folder
        for init in sorted(top.rglob("__init__.py")):
            relative = init.parent.relative_to(top).parts
            if any(part == "__pycache__" or part.startswith(".") for part in relative):
                continue
            found[".".join((name, *relative))] = init.parent
    return found


def test_the_mapped_folders_are_harness_and_references() -> None:
    mapped = {Path(folder).as_posix() for folder in _setuptools()["package-dir"].values()}
    assert mapped == {"harness", "references"}


def test_every_package_folder_is_listed() -> None:
    listed = set(_setuptools()["packages"])
    folders = _folder_packages()
    missing = sorted(set(folders) - listed)
    assert not missing, (
        f"folders with an __init__.py missing from [tool.setuptools] packages in "
        f"pyproject.toml (they would not be in the wheel): {missing}")


def test_every_listed_package_is_a_folder() -> None:
    folders = _folder_packages()
    stale = sorted(set(_setuptools()["packages"]) - set(folders))
    assert not stale, f"packages listed in pyproject.toml with no folder: {stale}"


def test_the_split_packages_are_found() -> None:
    """The two packages that used to be single modules (fast.py, strategies.py)."""
    folders = _folder_packages()
    assert folders["xentcheck.references.fast"] == ROOT / "references" / "fast"
    assert folders["xentcheck.harness.strategies"] == ROOT / "harness" / "strategies"
