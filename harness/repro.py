"""Reproduce one finding: ``python -m harness.repro ADAPTER FUNCTION CASE``.

``CASE`` is a case as JSON (what reports print) or a Python expression over
``harness.strategies`` (e.g. ``harness.strategies.sample('wide', dtype='float32')[1]``).
It loads the adapter, calls the function on the case, and prints for every row the
input, what came back, the exact value, the error in ulps and the stability ratio.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from harness import grading, strategies
from harness.adapters.registry import open_adapter
from harness.cases import Case, encode_floats
from harness.findings import exact_text
from harness.truth import Truth


def load_case(text: str) -> Case:
    text = text.strip()
    if text.startswith("{"):
        return Case.from_json(text)
    namespace = {"harness": __import__("harness.strategies"), "strategies": strategies,
                 "sample": strategies.sample}
    case = eval(text, {"__builtins__": {}}, namespace)  # noqa: S307 - the user's own line
    if not isinstance(case, Case):
        raise ValueError(f"{text!r} does not give a case")
    return case


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m harness.repro ADAPTER FUNCTION CASE", file=sys.stderr)
        return 2
    spec, function, text = args
    try:
        case = load_case(text)
    except (ValueError, SyntaxError, NameError, TypeError, KeyError) as err:
        print(f"repro: error: cannot read the case: {err}", file=sys.stderr)
        return 2
    truth = Truth(case)
    arrays, options = truth.arguments(function)
    with open_adapter(spec) as handle:
        handle.wait()
        outcome = handle.call(function, *arrays, **options)
    print(f"{spec} {function} on {case.case_id} ({case.dtype}, options {options or 'none'})")
    if not outcome.ok:
        print(f"  fault: {outcome.fault}")
        if outcome.value is None:
            return 1
    exact = truth.exact(function)
    got = outcome.value
    graded = grading.grade_elements(function, got, exact, inputs=arrays[0],
                                    target=arrays[1] if len(arrays) > 1 else None,
                                    options=options, dtype=case.dtype)
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
