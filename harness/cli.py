"""The ``xentcheck`` command line.

Exit codes, each meaning one thing (so that CI can tell a finding from a crash):

- 0: conformant (or the command succeeded);
- 1: nonconformant, or regressed against a baseline;
- 2: usage, setup or input-file error: a bad option, an adapter that cannot be loaded, a
  corrupted pinned corpus or report, an unwritable ``--out``, a floating-point
  environment that is not IEEE's default; one line on stderr, never a traceback;
- 3: internal error: one line on stderr naming the file that holds the traceback;
- 130 / 143: interrupted by SIGINT / SIGTERM (the previous reports are left as they were).

With ``run --baseline FILE`` the exit code reflects regressions against the baseline only
(see :mod:`xentcheck.harness.compare`): known failures recorded in the baseline do not fail a
CI job,
anything newly failing or a max_ulp growth beyond the slack does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xentcheck.harness import options
from xentcheck.harness.allocator import keep_freed_memory
from xentcheck.harness.signals import Terminated, raise_on_sigterm
from xentcheck.harness.text import terminal

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def say(text: str) -> None:
    """Print a line of output, control characters shown escaped (adapter names, reasons
    and report fields are untrusted: :func:`xentcheck.harness.text.terminal`); a reader that went
    away (``xentcheck run | head``) silences the rest of the output, but never stops the
    run or its reports."""
    try:
        print(terminal(text, keep_newlines=True), flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class UsageError(Exception):
    """A user mistake: reported as one line with exit code 2."""


class InternalError(Exception):
    """Something of xentcheck's own failed (not the user's input, not a candidate's fault):
    one line with exit code 3."""




class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _cmd_audit(args: argparse.Namespace) -> int:
    from xentcheck.references import audit

    argv = ["--quick"] if args.quick else []
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    for formula in args.only or ():
        argv += ["--only", formula]
    return audit.main(argv)


def _cmd_list(args: argparse.Namespace) -> int:
    from xentcheck.harness.adapters import format_adapter_list, list_adapters

    say(format_adapter_list(list_adapters(timeout=args.timeout)))
    return EXIT_OK


def _default_adapters() -> list[str]:
    from xentcheck.harness.adapters import list_adapters
    from xentcheck.harness.adapters.registry import OPT_IN

    return [info.name for info in list_adapters()
            if info.unavailable is None and info.source == "built-in"
            and info.name not in OPT_IN]


def _builtin_names() -> list[str]:
    """The built-ins of a default run: every one but the opt-in ones (OPT_IN)."""
    from xentcheck.harness.adapters.registry import BUILTINS, OPT_IN

    return [name for name in BUILTINS if name not in OPT_IN]


def _cmd_run(args: argparse.Namespace) -> int:
    from xentcheck.harness import defects, grading, runner, strategies
    from xentcheck.harness.adapters.contract import DTYPES, AdapterSpecError
    from xentcheck.harness.fpenv import FloatingPointEnvironmentError

    baseline = _load_report(args.baseline, "--baseline") if args.baseline else None
    dtypes = args.dtype or list(DTYPES)
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    regimes = args.regime or list(runner.DEFAULT_REGIMES)
    for regime in regimes:
        if regime not in strategies.REGIMES:
            raise UsageError(f"unknown regime {regime!r}; choose from "
                             f"{', '.join(strategies.REGIMES)}")
    try:
        runner.check_names(args.check)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.cases is not None:
        try:
            strategies.load_corpus(args.cases, block_elements=args.block_elements)
        except ValueError as err:
            raise UsageError(str(err)) from None
    try:
        grading.load_budgets(args.budgets)
        # every line parsed; only what the run asks for decoded (a run without bfloat16
        # does not import ml_dtypes, most of a second of CPU)
        runner.load_pinned(dtypes=dtypes, regimes=regimes)
        if defects.REGIME in regimes:
            defects.cases()
    except ValueError as err:  # BudgetError, PinnedCasesError, DefectCorpusError
        raise UsageError(str(err)) from None
    out = _writable_out(args.out, "--out")
    # Without --adapter: every built-in, each loaded in its own worker only (the ones that
    # cannot start there, e.g. torch-cuda without a GPU, are left out of the report).
    adapters = args.adapter or _builtin_names()
    progress = _ProgressBar() if sys.stderr.isatty() else None
    settings = dict(profile=args.profile, dtypes=dtypes, regimes=regimes,
                    cases_file=args.cases, seed=args.seed, timeout=args.timeout,
                    shard=args.shard, max_classes=args.max_classes, budgets_path=args.budgets,
                    block_elements=args.block_elements, skip_unavailable=not args.adapter,
                    checks=args.check)
    hunts: list[Any] = []
    try:
        if args.max_examples:
            hunts = _hunt(args, args.adapter or _default_adapters(), dtypes)
            settings["extra_cases"] = _hunted_cases(hunts)
        if args.jobs > 1:
            data = runner.run_parallel(adapters, jobs=args.jobs, progress=progress, **settings)
        else:
            data = runner.run(adapters, progress=progress, **settings).to_dict()
    except (AdapterSpecError, FloatingPointEnvironmentError) as err:
        raise UsageError(str(err)) from None
    except runner.RunError as err:
        raise InternalError(str(err)) from None
    finally:
        if progress is not None:
            progress.close()
    if hunts:
        data["hunts"] = [h.to_dict() for h in hunts]
    if not args.adapter:  # the opt-in built-ins, named with why they were left out
        from xentcheck.harness.adapters.registry import OPT_IN

        data["skipped"] = sorted([*data.get("skipped", []),
                                  *({"name": n, "reason": r} for n, r in OPT_IN.items())],
                                 key=lambda s: s["name"])
    code = _print_verdicts(data)  # before writing: a full disk must not hide them
    _write_reports(data, out)
    say(f"{data['cases']} cases in {data['seconds']:.1f} s; reports in {out}/")
    if args.pin and hunts:
        _pin(hunts)
    if baseline is not None:
        return _guard(baseline, data, args.ulp_slack)
    return code


def _writable_out(path: str, what: str) -> Path:
    """The reports folder, created; a UsageError before any work when it cannot be
    written (a run's results must never be lost at the end)."""
    from xentcheck.harness import report

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{what} {path} is a file; give a directory for the reports")
    try:
        report.check_writable(out)
    except OSError as err:
        raise UsageError(f"{what} {path}: cannot write reports there "
                         f"({err.strerror or err})") from None
    return out


def _write_reports(data: dict[str, Any], out: Path, *, stem: str | None = None,
                   with_json: bool = True) -> list[Path]:
    """Write the report set (all of it or nothing; see :mod:`xentcheck.harness.report`)."""
    from xentcheck.harness import report

    try:
        return report.write_set(data, out, stem=stem or report.STEM, with_json=with_json)
    except OSError as err:
        raise UsageError(f"cannot write the reports to {out}/ ({err.strerror or err}); "
                         "the reports there are as they were") from None


def _pin(hunts: list[Any]) -> None:
    from xentcheck.harness import hunt, runner

    try:
        added = hunt.pin(_hunted_cases(hunts))
    except OSError as err:
        raise UsageError(f"--pin: cannot write {runner.PINNED_CASES} "
                         f"({err.strerror or err}); the reports are written") from None
    say(f"pinned {added} new worst cases in harness/data/pinned_cases.jsonl")


def _print_verdicts(data: dict[str, Any]) -> int:
    """One line per adapter; EXIT_OK when every adapter passed."""
    for adapter in data["adapters"]:
        failing = sum(1 for r in adapter["results"] if not r["passed"])
        extra = f" ({adapter['reason']})" if adapter.get("reason") else (
            f" ({failing} failing results)" if failing else "")
        say(f"{adapter['name']:<12} {adapter['verdict']}{extra}")
    conformant = all(a["verdict"] == "pass" for a in data["adapters"])
    return EXIT_OK if conformant else EXIT_FAIL


def _load_report(path: str, what: str) -> dict[str, Any]:
    """A conformance.json, or a one-line UsageError naming the file and the problem."""
    from xentcheck.harness.report import json_report

    try:
        data = json_report.load(path)
    except ValueError as err:
        raise UsageError(f"{what}: {err}; give a conformance.json written by "
                         f"'xentcheck run'") from None
    if not isinstance(data.get("adapters"), list):
        raise UsageError(f"{what}: {path}: no 'adapters' list; give a conformance.json "
                         f"written by 'xentcheck run'")
    return data


def _guard(baseline: dict[str, Any], current: dict[str, Any], ulp_slack: float) -> int:
    """Print the comparison; EXIT_FAIL on a regression, EXIT_OK otherwise."""
    from xentcheck.harness.compare import compare

    try:
        comparison = compare(baseline, current, ulp_slack=ulp_slack)
    except ValueError as err:
        raise UsageError(f"cannot compare the reports: {err}") from None
    say(comparison.format())
    return EXIT_FAIL if comparison.regressed else EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    baseline = _load_report(args.baseline, "BASELINE")
    current = _load_report(args.current, "CURRENT")
    return _guard(baseline, current, args.ulp_slack)


def _cmd_merge(args: argparse.Namespace) -> int:
    from xentcheck.harness.merge import merge

    out = _writable_out(args.out_dir, "OUT_DIR")
    shards = [_load_report(path, "SHARD") for path in args.shards]
    try:
        data = merge(shards, names=args.shards)
    except ValueError as err:
        raise UsageError(f"cannot merge: {err}") from None
    code = _print_verdicts(data)
    _write_reports(data, out)
    say(f"{data['cases']} cases merged from {len(shards)} shards; reports in {out}/")
    return code


def _cmd_report(args: argparse.Namespace) -> int:
    """Re-render a JSON report's Markdown, HTML and JUnit beside it (or in --out), named
    after it: ``x/other.json`` gives ``x/other.md``, ... The JSON itself is never written."""
    data = _load_report(args.json, "JSON")
    source = Path(args.json)
    stem = source.name[:-len(".json")] if source.name.endswith(".json") else source.stem
    out = _writable_out(args.out, "--out") if args.out else source.parent
    written = _write_reports(data, out, stem=stem, with_json=False)
    say(f"re-rendered {', '.join(p.name for p in written)} in {out}/")
    return EXIT_OK


_slack = options.slack  # the type of run's --ulp-slack, for compare's too


def _add_compare_parsers(sub: Any) -> None:
    from xentcheck.harness.compare import ULP_FLOOR, ULP_SLACK

    slack_help = (f"allowed max_ulp growth factor (default {ULP_SLACK:g}): a result regresses "
                  f"when current > max(baseline x X, baseline + {ULP_FLOOR:g} ulp)")
    compare = sub.add_parser(
        "compare", help="compare a report with a baseline; exit 1 on any regression")
    compare.add_argument("baseline", metavar="BASELINE", help="the baseline conformance.json")
    compare.add_argument("current", metavar="CURRENT", help="the current conformance.json")
    compare.add_argument("--ulp-slack", type=_slack, default=ULP_SLACK, metavar="X",
                         help=slack_help)
    compare.set_defaults(func=_cmd_compare)
    merge = sub.add_parser(
        "merge", help="join the conformance.json of shards (--shard I/N) into one report")
    merge.add_argument("out_dir", metavar="OUT_DIR", help="where to write the merged reports")
    merge.add_argument("shards", metavar="SHARD.json", nargs="+",
                       help="the shards' conformance.json files")
    merge.set_defaults(func=_cmd_merge)
    report = sub.add_parser("report", help="re-render every report format from a JSON report")
    report.add_argument("json", metavar="JSON", help="a conformance.json")
    report.add_argument("--out", metavar="DIR",
                        help="where to write the reports (default: the JSON's directory)")
    report.set_defaults(func=_cmd_report)


def _hunt(args: argparse.Namespace, adapters: list[str], dtypes: list[str]) -> list[Any]:
    """Hypothesis hunts for the worst input of every function each adapter provides."""
    from xentcheck.harness import hunt

    progress = _ProgressBar() if sys.stderr.isatty() else None
    done: list[Any] = []

    def hunted(result: Any) -> None:  # the number of hunts is known only as they end
        done.append(result)
        if progress is not None:
            progress(len(done), len(done), f"hunt {result.function} {result.dtype}")

    try:
        results = hunt.hunt_all(adapters, dtypes=dtypes, regimes=args.regime or None,
                                max_examples=args.max_examples, seed=args.seed,
                                profile=args.profile, timeout=args.timeout,
                                budgets_path=args.budgets, max_classes=args.max_classes,
                                progress=hunted)
    finally:
        if progress is not None:
            progress.close()
    for result in results:
        if result.found_failure:
            say(f"hunt: {result.summary()}")
    return results


def _hunted_cases(results: list[Any]) -> list[Any]:
    seen: set[str] = set()
    cases = []
    for result in results:
        for case in result.cases():
            if case.digest() not in seen:
                seen.add(case.digest())
                cases.append(case)
    return cases


class _ProgressBar:
    """A progress bar on stderr, called with (cases started, total, the case being run);
    the total may grow (a ``--jobs`` run learns each process's share as it starts)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def __call__(self, number: int, total: int, case_id: str) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="case", leave=False, file=sys.stderr)
        if total != self._bar.total:
            self._bar.total = total
        self._bar.set_postfix_str(case_id, refresh=False)
        self._bar.update(number - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="xentcheck",
        description="Verify softmax / cross-entropy implementations against exact references.",
    )
    import xentcheck.harness

    parser.add_argument("--version", action="version",
                        version=f"xentcheck {xentcheck.harness.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    audit = sub.add_parser(
        "audit", help="prove every derivation of the references by finite differences"
    )
    audit.add_argument("--quick", action="store_true", help="fewer inputs per formula")
    audit.add_argument("--seed", type=int, default=None, help="seed of the random inputs")
    from xentcheck.references.audit import FORMULAS

    audit.add_argument("--only", action="append", metavar="FORMULA", choices=list(FORMULAS),
                       help=f"audit only this formula (repeatable): {', '.join(FORMULAS)}")
    audit.set_defaults(func=_cmd_audit)
    run = sub.add_parser("run", help="grade adapters against the exact truth, write reports")
    # Every option of run is defined once, in xentcheck.harness.options, and shared with the
    # pytest plugin (as --xentcheck-NAME).
    options.add_to_argparse(run)
    run.set_defaults(func=_cmd_run)
    _add_compare_parsers(sub)
    listing = sub.add_parser("list", help="list the adapters xentcheck can find")
    from xentcheck.harness.adapters.registry import LIST_TIMEOUT

    listing.add_argument("--timeout", type=options.bounded(float, 1e-3, 86400.0, "seconds"),
                         default=LIST_TIMEOUT, metavar="S",
                         help=f"seconds each adapter may take to load in its worker "
                              f"(default {LIST_TIMEOUT:g}; slower ones are listed unavailable)")
    listing.set_defaults(func=_cmd_list)
    return parser


def save_traceback(exc: BaseException) -> Path | None:
    """Write ``exc``'s traceback to a new file in the temporary folder; its path (None
    when nothing could be written)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        fd, name = tempfile.mkstemp(prefix=f"xentcheck-traceback-{time.strftime('%Y%m%d-%H%M%S')}-",
                                    suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(f"xentcheck {' '.join(sys.argv[1:])}\n\n{text}")
    except OSError:
        return None
    return Path(name)


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()  # large temporaries reuse pages instead of faulting new ones in
    parser = build_parser()
    previous = raise_on_sigterm()  # SIGTERM unwinds like SIGINT: workers killed, sets whole
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args))
    except UsageError as err:
        print(f"xentcheck: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except InternalError as err:
        print(f"xentcheck: internal error: {_one_line(err)}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print("xentcheck: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("xentcheck: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as exc:  # a bug of xentcheck's: one line, the traceback in a file
        path = save_traceback(exc)
        where = f"; traceback in {path}" if path else ""
        print(f"xentcheck: internal error: {type(exc).__name__}: {_one_line(exc)}"
              f"{terminal(where)}",
              file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _one_line(exc: BaseException) -> str:
    text = terminal(" ".join(str(exc).split()))
    return text if len(text) <= 500 else text[:497] + "..."


if __name__ == "__main__":
    sys.exit(main())
