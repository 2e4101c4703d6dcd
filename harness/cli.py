"""The ``xentcheck`` command line.

Exit codes: 0 conformant (or the command succeeded), 1 nonconformant or regressed,
2 usage or setup error (one clear line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake: reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _cmd_audit(args: argparse.Namespace) -> int:
    from references import audit

    argv = ["--quick"] if args.quick else []
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    for formula in args.only or ():
        argv += ["--only", formula]
    return audit.main(argv)


def _cmd_list(args: argparse.Namespace) -> int:
    from harness.adapters import format_adapter_list, list_adapters

    print(format_adapter_list(list_adapters()))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="xentcheck",
        description="Verify softmax / cross-entropy implementations against exact references.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    audit = sub.add_parser(
        "audit", help="prove every derivation of the references by finite differences"
    )
    audit.add_argument("--quick", action="store_true", help="fewer inputs per formula")
    audit.add_argument("--seed", type=int, default=None, help="seed of the random inputs")
    from references.audit import FORMULAS

    audit.add_argument("--only", action="append", metavar="FORMULA", choices=list(FORMULAS),
                       help=f"audit only this formula (repeatable): {', '.join(FORMULAS)}")
    audit.set_defaults(func=_cmd_audit)
    listing = sub.add_parser("list", help="list the adapters xentcheck can find")
    listing.set_defaults(func=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args))
    except UsageError as err:
        print(f"xentcheck: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("xentcheck: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
