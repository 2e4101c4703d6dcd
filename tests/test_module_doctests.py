"""The examples in the modules' docstrings, run as tests.

They are collected from the installed packages (``xentcheck.harness``,
``xentcheck.references``), not from the folders by path: pytest's ``--doctest-modules``
would import ``harness/truth.py`` a second time under the folder's name ``harness.truth``,
with classes distinct from the installed ones.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import xentcheck.harness
import xentcheck.references


def _modules_with_examples() -> list[str]:
    """Every module of the two packages whose docstrings hold examples (importing each is
    cheap: the adapters import their frameworks only when loaded)."""
    found = []
    for package in (xentcheck.harness, xentcheck.references):
        names = [package.__name__] + [
            info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
        for name in names:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:  # the compiled engines' loops, without numba
                if exc.name != "numba":
                    raise
                continue
            tests = doctest.DocTestFinder().find(module)
            if any(test.examples for test in tests):
                found.append(name)
    return sorted(found)


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    result = doctest.testmod(module, optionflags=flags, verbose=False, report=True)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
