"""The options of a conformance run, defined once and shared by the CLI and the pytest plugin.

Each :class:`Option` is plain data (name, type, default, choices, help). ``xentcheck run``
gets them as ``--adapter``, ``--profile``, ... through :func:`add_to_argparse`; the pytest
plugin (:mod:`harness.plugin`) gets the same definitions as ``--xentcheck-adapter``,
``--xentcheck-profile``, ... through :func:`add_to_pytest`, so a flag's type, default and
validation can never drift between the two surfaces (the pytest-benchmark habit).

This module is imported when pytest loads the plugin, so it imports nothing heavy: only
the standard library.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: The prefix of every option of the pytest plugin: ``--adapter`` becomes
#: ``--xentcheck-adapter`` (and its destination ``xentcheck_adapter``).
PYTEST_PREFIX = "xentcheck-"


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse ``type`` accepting numbers of ``kind`` (int, float) greater than zero."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    parse.__name__ = f"positive_{kind.__name__}"
    return parse


#: The largest K of a sample (a large LLM vocabulary, 2**17): ``--max-classes`` above it is
#: refused, as :func:`harness.strategies.sample` refuses it.
MAX_CLASSES = 131072

#: The largest seed: SeedSequence takes any non-negative integer, but a seed is a number a
#: person types and a report prints; 2**63 - 1 keeps it an int64 everywhere.
MAX_SEED = 2**63 - 1


def bounded(kind: type, low: float, high: float, what: str = "a number") -> Callable[[str], Any]:
    """An argparse ``type``: a finite number of ``kind`` within [low, high] (NaN, inf and
    anything outside refused with one line)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:  # False for NaN too
            shown = (f"{low:g}", f"{high:g}") if kind is float else (low, high)
            raise argparse.ArgumentTypeError(
                f"expected {what} in [{shown[0]}, {shown[1]}], got {text!r}")
        return value

    parse.__name__ = f"bounded_{kind.__name__}"
    return parse


@dataclass(frozen=True)
class Option:
    """One run option: what both argparse and pytest's ``parser.addoption`` are given.

    ``repeatable`` options collect every occurrence into a list (``action="append"``);
    ``pytest_help`` replaces ``help`` where the plugin's meaning differs (defaults).
    """

    name: str
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    repeatable: bool = False
    metavar: str | None = None
    pytest_help: str | None = None

    @property
    def dest(self) -> str:
        """The attribute on argparse's namespace: ``max-classes`` → ``max_classes``."""
        return self.name.replace("-", "_")

    @property
    def cli_flag(self) -> str:
        return f"--{self.name}"

    @property
    def pytest_flag(self) -> str:
        return f"--{PYTEST_PREFIX}{self.name}"

    @property
    def pytest_dest(self) -> str:
        """The name ``config.getoption`` takes: ``xentcheck_max_classes``."""
        return (PYTEST_PREFIX + self.name).replace("-", "_")

    def keywords(self) -> dict[str, Any]:
        """The keyword arguments of ``add_argument``/``addoption`` (flags and help aside)."""
        kwargs: dict[str, Any] = {"default": self.default}
        if self.repeatable:
            kwargs["action"] = "append"
        if self.type is not None:
            kwargs["type"] = self.type
        if self.choices is not None:
            kwargs["choices"] = list(self.choices)
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        return kwargs


RUN_OPTIONS: tuple[Option, ...] = (
    Option("adapter", repeatable=True, metavar="SPEC",
           help="built-in name, pkg.module:attr, path/file.py:attr or c:file.c "
                "(repeatable; default: every available built-in)",
           pytest_help="adapter to run the conformance suite on as tests: built-in name, "
                       "pkg.module:attr, path/file.py:attr or c:file.c (repeatable; "
                       "without it the plugin adds no tests)"),
    Option("profile", choices=("standard", "strict"), default="standard",
           help="standard passes 'stable' or better; strict passes <= N ulp"),
    Option("dtype", repeatable=True, metavar="DTYPE",
           help="float64, float32, float16, bfloat16 (repeatable; default all)"),
    Option("regime", repeatable=True, metavar="REGIME",
           help="a named input regime (repeatable; default all)"),
    Option("seed", type=bounded(int, 0, MAX_SEED, "a whole number"), default=0,
           help="seed of the fixed samples (default 0)"),
    Option("timeout", type=bounded(float, 1e-3, 86400.0, "seconds"), default=60.0,
           metavar="S", help="seconds one adapter call may take (default 60)"),
    Option("max-classes", type=bounded(int, 1, MAX_CLASSES, "a number of classes"),
           metavar="K", help=f"largest K of the samples (up to {MAX_CLASSES}, for "
                             "vocabulary-sized rows)"),
    Option("budgets", metavar="FILE", help="per-adapter accuracy budgets (JSON)"),
)

OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in RUN_OPTIONS}


def _selected(names: Iterable[str]) -> list[Option]:
    chosen = list(names)
    unknown = [name for name in chosen if name not in OPTIONS_BY_NAME]
    if unknown:
        raise KeyError(f"no run option {', '.join(unknown)}; "
                       f"known: {', '.join(OPTIONS_BY_NAME)}")
    return [OPTIONS_BY_NAME[name] for name in chosen] if chosen else list(RUN_OPTIONS)


def add_to_argparse(parser: argparse.ArgumentParser | Any, *names: str) -> None:
    """Add the named run options (all of them when none is named) as ``--NAME`` flags.

    ``parser`` is an ``argparse.ArgumentParser`` or an argument group. Naming options lets
    the CLI keep its own order of ``--help`` lines around options of its own.
    """
    for option in _selected(names):
        parser.add_argument(option.cli_flag, help=option.help, **option.keywords())


def add_to_pytest(group: Any, *names: str) -> None:
    """Add the named run options (all when none is named) as ``--xentcheck-NAME`` options.

    ``group`` is what ``parser.getgroup(...)`` returns in a ``pytest_addoption`` hook (its
    ``addoption`` takes argparse's keywords); read the values back with
    ``config.getoption(option.pytest_dest)``.
    """
    for option in _selected(names):
        group.addoption(option.pytest_flag, dest=option.pytest_dest,
                        help=option.pytest_help or option.help, **option.keywords())


def from_pytest(config: Any) -> dict[str, Any]:
    """The run options' values in a pytest ``config``, keyed by :attr:`Option.dest`."""
    return {option.dest: config.getoption(option.pytest_dest) for option in RUN_OPTIONS}
