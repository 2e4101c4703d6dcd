"""The options of a conformance run, defined once and shared by the CLI and the pytest plugin.

Each :class:`Option` is plain data (name, type, default, choices, help). ``xentcheck run``
gets every one of them (:data:`RUN_OPTIONS`; it defines no option of its own) as
``--adapter``, ``--profile``, ... through :func:`add_to_argparse`; the pytest plugin
(:mod:`xentcheck.harness.plugin`) gets the same definitions as ``--xentcheck-adapter``,
``--xentcheck-profile``, ... through :func:`add_to_pytest`, so a flag's type, default and
validation can never drift between the two surfaces (the pytest-benchmark habit). Where
the plugin gives an option another meaning or default, the definition says so
(``pytest_help``, ``pytest_default``); the plugin's docstring says why.

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


#: The dtypes a run knows (``xentcheck.harness.adapters.contract.DTYPES``, which imports
#: NumPy; a test keeps the two equal): the plugin validates ``--xentcheck-dtype`` with it
#: in pytest-xdist's controller, which imports nothing heavy.
DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")

#: The checks a run reports, in the order it applies them (``xentcheck.harness.runner.CHECKS``
#: has them with their functions; a test keeps the two equal): the plugin validates
#: ``--xentcheck-check`` with it in pytest-xdist's controller, which imports nothing heavy.
CHECKS: tuple[str, ...] = (
    "value", "gradient", "jvp", "hvp", "chain-rule", "self-fd", "reduction",
    "batch-invariance", "shift-invariance", "chunk-invariance", "contract", "range",
    "normalization", "order", "determinism", "edge", "ignored-mean", "invalid-input")

#: The largest K of a sample (a large LLM vocabulary, 2**17): ``--max-classes`` above it is
#: refused, as :func:`xentcheck.harness.strategies.sample` refuses it.
MAX_CLASSES = 131072

#: Logits per case at most (the block budget, ``--block-elements``): a ``--cases`` file of
#: long rows is cut into cases of fewer rows, so that what a case costs in memory (its
#: reference, the candidate's outputs, grading and certificates hold a few dozen float64
#: copies of it) is bounded by this, not by the file. 2**21 is 16 rows of a 131072-class
#: vocabulary.
BLOCK_ELEMENTS = 2**21

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


def non_negative(text: str) -> int:
    """An argparse ``type``: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def shard(text: str) -> tuple[int, int]:
    """An argparse ``type``: ``I/N`` with 1 <= I <= N, as ``(I, N)``."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not sep or n < 1 or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--shard must be I/N with 1 <= I <= N, got {text!r}")
    return i, n


def slack(text: str) -> float:
    """An argparse ``type``: a finite factor >= 1 (the allowed max_ulp growth)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}") from None
    if not value >= 1.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 1, got {text!r}")
    return value


#: ``Option.pytest_default`` when the plugin's default is the CLI's.
SAME = object()


@dataclass(frozen=True)
class Option:
    """One run option: what both argparse and pytest's ``parser.addoption`` are given.

    ``repeatable`` options collect every occurrence into a list (``action="append"``);
    ``switch`` options take no value (``action="store_true"``); ``pytest_help`` replaces
    ``help`` where the plugin's meaning differs, and ``pytest_default`` the default.
    """

    name: str
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    repeatable: bool = False
    switch: bool = False
    metavar: str | None = None
    pytest_help: str | None = None
    pytest_default: Any = SAME

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

    def keywords(self, *, pytest: bool = False) -> dict[str, Any]:
        """The keyword arguments of ``add_argument``/``addoption`` (flags and help aside)."""
        default = self.default
        if pytest and self.pytest_default is not SAME:
            default = self.pytest_default
        kwargs: dict[str, Any] = {"default": default}
        if self.switch:
            kwargs["action"] = "store_true"
            return kwargs
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
    Option("check", repeatable=True, metavar="CHECK",
           help="run only this check (repeatable; default every one): value, gradient, "
                "jvp, hvp, chain-rule, ... (see the README); a check left out costs nothing",
           pytest_help="collect only this check's tests (repeatable; default every one): "
                       "the ones left out are not even planned"),
    Option("cases", metavar="FILE",
           help="your own logits: .npy, or .npz with 'logits' and optional 'labels'"),
    Option("seed", type=bounded(int, 0, MAX_SEED, "a whole number"), default=0,
           help="seed of the fixed samples (default 0)"),
    Option("timeout", type=bounded(float, 1e-3, 86400.0, "seconds"), default=60.0,
           metavar="S", help="seconds one adapter call may take (default 60)"),
    Option("shard", type=shard, metavar="I/N", help="run only shard I of N"),
    Option("jobs", type=positive(int), default=1, metavar="J",
           help="local processes to share the cases (default 1)",
           pytest_help="not for pytest, which shares tests among processes with "
                       "pytest-xdist: give -n J instead (any J > 1 here is refused)"),
    Option("max-classes", type=bounded(int, 1, MAX_CLASSES, "a number of classes"),
           metavar="K", help=f"largest K of the samples (up to {MAX_CLASSES}, for "
                             "vocabulary-sized rows)"),
    Option("block-elements", type=bounded(int, 1, 2**40, "a number of logits"),
           default=BLOCK_ELEMENTS, metavar="E",
           help=f"the block budget: a --cases file is cut into cases of at most E logits "
                f"(default {BLOCK_ELEMENTS}, 16 rows of 131072); memory follows E, not the file"),
    Option("budgets", metavar="FILE", help="per-adapter accuracy budgets (JSON)"),
    Option("max-examples", type=non_negative, default=0, metavar="N",
           help="also hunt each function's worst input with N Hypothesis examples "
                "(target() on the error; failures shrunk) and grade what is found",
           pytest_help="also hunt each function's worst input with N Hypothesis examples: "
                       "one test per function and dtype (FUNCTION[DTYPE-hunt]) that fails "
                       "with the shrunk failing case"),
    Option("pin", switch=True,
           help="with --max-examples: pin the cases found, so every run replays them"),
    Option("out", default="reports", metavar="DIR",
           help="where to write the reports (default reports/)",
           pytest_help="also write the report set (conformance.json, .md, .html, JUnit) of "
                       "the results the session computed to DIR (default: none)",
           pytest_default=None),
    Option("baseline", metavar="FILE",
           help="a baseline conformance.json: the exit code then reflects "
                "regressions against it only (known failures in it pass)",
           pytest_help="a baseline conformance.json: a result that fails as it failed in "
                       "the baseline is an expected failure (xfail); only regressions "
                       "against it fail"),
    Option("ulp-slack", type=slack, default=2.0, metavar="X",
           help="with --baseline: allowed max_ulp growth factor (default 2)"),
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
                        help=option.pytest_help or option.help,
                        **option.keywords(pytest=True))


def from_pytest(config: Any) -> dict[str, Any]:
    """The run options' values in a pytest ``config``, keyed by :attr:`Option.dest`."""
    return {option.dest: config.getoption(option.pytest_dest) for option in RUN_OPTIONS}
