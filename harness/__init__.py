"""The machine that judges candidates: adapters, strategies, checks, grading, reports, CLI."""

from __future__ import annotations

import importlib.metadata

try:
    __version__: str = importlib.metadata.version("xentcheck")
except importlib.metadata.PackageNotFoundError:  # run from a checkout that was not installed
    __version__ = "unknown"
