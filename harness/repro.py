"""Reproduce one finding: ``python -m xentcheck.harness.repro ADAPTER FUNCTION CASE``.

``CASE`` is a case as JSON (what reports print) or the expression a report names a sampled
case by: ``xentcheck.harness.strategies.sample('wide', dtype='float32', seed=0, size=2)[1]``,
``xentcheck.harness.strategies.load_corpus('logits.npz', dtype='float32')[3]``, either followed by
``.select_rows([2])``. The expression is parsed, never evaluated: only those calls, with
literal arguments, are accepted. The adapter is loaded, the function called on the case,
and every element printed: the input, what came back, the exact value, the error in ulps
and the stability ratio.

Exit codes are the CLI's: 0 reproduced, 1 the call failed, 2 a bad argument (one line),
3 an internal error.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xentcheck.harness import grading, strategies
from xentcheck.harness.adapters.contract import FUNCTIONS, AdapterSpecError
from xentcheck.harness.adapters.registry import open_adapter
from xentcheck.harness.cases import Case, encode_floats
from xentcheck.harness.findings import exact_text
from xentcheck.harness.text import terminal
from xentcheck.harness.truth import Truth
from xentcheck.references import dialects

#: The calls a case expression may make, by every name they are written with.
_CALLS: dict[str, Callable[..., Any]] = {}
for _name, _function in (("sample", strategies.sample), ("load_corpus", strategies.load_corpus)):
    # "harness.strategies." is how reproducers written before 0.3 spell it
    for _prefix in ("", "strategies.", "harness.strategies.", "xentcheck.harness.strategies."):
        _CALLS[_prefix + _name] = _function


class CaseExpressionError(ValueError):
    """A case argument that is neither case JSON nor an accepted expression."""


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise CaseExpressionError("only calls of xentcheck.harness.strategies.sample or load_corpus")


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        raise CaseExpressionError("arguments must be literals (numbers, strings, lists)") from None


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Subscript):
        items = _evaluate(node.value)
        index = _literal(node.slice)
        if not isinstance(items, list) or not isinstance(index, int):
            raise CaseExpressionError("[...] picks one case of a list by its number")
        if not -len(items) <= index < len(items):
            raise CaseExpressionError(f"case [{index}] of {len(items)}")
        return items[index]
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "select_rows":
            case = _evaluate(func.value)
            if not isinstance(case, Case) or len(node.args) != 1 or node.keywords:
                raise CaseExpressionError(".select_rows([rows]) applies to one case")
            return case.select_rows(_literal(node.args[0]))
        name = _dotted(func)
        if name not in _CALLS:
            raise CaseExpressionError(f"{name}() is not a case source; use "
                                      "xentcheck.harness.strategies.sample or load_corpus")
        args = [_literal(a) for a in node.args]
        kwargs = {k.arg: _literal(k.value) for k in node.keywords if k.arg is not None}
        if len(kwargs) != len(node.keywords):
            raise CaseExpressionError("no **arguments")
        try:
            return _CALLS[name](*args, **kwargs)
        except TypeError as err:
            raise CaseExpressionError(f"{name}: {err}") from None
    raise CaseExpressionError("expected case JSON or xentcheck.harness.strategies.sample(...)[i]")


def load_case(text: str) -> Case:
    """The case a reproducer names (JSON or an expression); ``ValueError`` otherwise."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return Case.from_json(text)
        except (KeyError, TypeError, RecursionError) as err:
            raise CaseExpressionError(f"not a case's JSON ({type(err).__name__}: {err})") from None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError) as err:
        raise CaseExpressionError(f"not an expression ({err})") from None
    case = _evaluate(tree.body)
    if not isinstance(case, Case):
        raise CaseExpressionError(f"{text!r} does not give a case")
    return case


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("repro: error: usage: python -m xentcheck.harness.repro ADAPTER FUNCTION CASE",
              file=sys.stderr)
        return 2
    spec, function, text = args
    if function not in FUNCTIONS:
        print(f"repro: error: unknown function {function!r}; the functions are "
              f"{', '.join(FUNCTIONS)}", file=sys.stderr)
        return 2
    try:
        case = load_case(text)
    except ValueError as err:
        print(terminal(f"repro: error: cannot read the case: {' '.join(str(err).split())}"),
              file=sys.stderr)
        return 2
    try:
        return _reproduce(spec, function, case)
    except AdapterSpecError as err:
        print(terminal(f"repro: error: {err}"), file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): what it read is all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug of xentcheck's: one line, the traceback in a file
        from xentcheck.harness.cli import save_traceback

        path = save_traceback(exc)
        print(terminal(f"repro: internal error: {type(exc).__name__}: {exc}"
                       f"{f'; traceback in {path}' if path else ''}"), file=sys.stderr)
        return 3


def _reproduce(spec: str, function: str, case: Case) -> int:
    with open_adapter(spec) as handle:
        handle.wait()
        # the truth under the adapter's dialect: what its report graded it against
        truth = Truth(case, dialects.dialect(handle.dialect))
        arrays, options = truth.arguments(function)
        outcome = handle.call(function, *arrays, **options)
    print(terminal(f"{spec} {function} on {case.case_id} ({case.dtype}, "
                   f"options {options or 'none'}, dialect {truth.dialect.name})"))
    outside = truth.outside_contract(function)
    if outside is not None:
        print(terminal(f"  {outside}: not graded"))
    if not outcome.ok:
        for fault in outcome.faults:
            print(terminal(f"  fault: {fault}"))
        return 1
    exact = truth.exact(function)
    got = outcome.value
    graded = grading.grade_elements(function, got, exact, dtype=case.dtype,
                                    **truth.grading_inputs(function))
    flat_got = np.asarray(got).reshape(-1)
    flat_exact = np.asarray(exact, dtype=object).reshape(-1)
    for i, (g, x) in enumerate(zip(flat_got, flat_exact, strict=True)):
        ulp = graded.ulp.reshape(-1)[i]
        ratio = graded.ratio.reshape(-1)[i]
        print(f"  [{i}] got {encode_floats(np.array([g]))[0]} ({float(g)!r}), "
              f"exact {exact_text(x)}, {ulp:.3g} ulp, ratio {ratio:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
