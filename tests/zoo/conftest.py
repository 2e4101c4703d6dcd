"""Shared by the zoo's tests: runs are judged without any accuracy budget."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def no_budgets(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A budgets file with no budgets: the honesty tests judge the profile alone, so no
    allowance in ``harness/data/budgets.json`` can excuse a planted bug or hide a false
    accusation."""
    path = Path(tmp_path_factory.mktemp("budgets")) / "budgets.json"
    path.write_text("{}\n")
    return str(path)
