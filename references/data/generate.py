"""Generate the golden vectors: inputs and exact outputs of every reference function.

    python references/data/generate.py            # (re)write golden_vectors.json
    python references/data/generate.py --check    # exit 1 if regenerating changes it

The file is language-agnostic JSON (see "Golden vectors" in the README for the format):
every input element as a hex float (C99 ``%a`` syntax, the float64 value of the element,
exact for every dtype listed), every output as a 40-digit decimal string of the exact
value and as the hex float of its correct rounding to the case's dtype. Inputs come from
a fixed-seed ``random.Random`` (stable across Python versions) and from the named
extremes, so regenerating gives the same file; only ``provenance.versions`` may differ
and is not compared.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import mpmath
import numpy as np

import xentcheck.references as ref
from xentcheck.references.gold import DEFAULT_PREC, GOLD_BITS, UNDEFINED
from xentcheck.references.rounding import round_to, ulp_error

SCHEMA = "xentcheck-golden/1"
OUTPUT = Path(__file__).with_name("golden_vectors.json")
DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
}
#: log of each dtype's largest finite value: the overflow edge of an unshifted exp.
OVERFLOW_EDGE = {"float64": 709.78, "float32": 88.72, "float16": 11.09, "bfloat16": 88.5}


def _hex(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x).hex()


def _decimal(v: Any) -> str:
    if v is UNDEFINED:
        return "undefined"
    v = mpmath.mpf(v) if not isinstance(v, mpmath.mpf) else v
    if mpmath.isnan(v):
        return "nan"
    if mpmath.isinf(v):
        return "inf" if v > 0 else "-inf"
    return mpmath.nstr(v, 40, min_fixed=1, max_fixed=0) if v != 0 else "0"


def _encode_input(a: np.ndarray) -> dict[str, Any]:
    if a.dtype.kind in "iu":
        return {"shape": list(a.shape), "int": [int(v) for v in a.ravel()]}
    return {"shape": list(a.shape), "hex": [_hex(float(v)) for v in a.ravel()]}


def _encode_output(values: Any, dtype: str) -> dict[str, Any]:
    arr = np.empty(np.shape(values), dtype=object)
    arr[...] = values
    flat = arr.ravel()
    rounded = round_to(flat, DTYPES[dtype]).astype(np.float64)
    return {
        "shape": list(arr.shape),
        "decimal": [_decimal(v) for v in flat],
        "hex": ["undefined" if v is UNDEFINED else _hex(float(r))
                for v, r in zip(flat, rounded, strict=True)],
    }


def _rows(rng: random.Random, n: int, k: int, scale: float) -> list[list[float]]:
    return [[rng.uniform(-1.0, 1.0) * scale for _ in range(k)] for _ in range(n)]


def _logit_sets(dtype: str) -> Iterator[tuple[str, np.ndarray]]:
    """(name, logits) pairs for one dtype; every value is cast to the dtype first."""
    rng = random.Random(f"xentcheck-golden-{dtype}")
    cast = DTYPES[dtype]
    edge = OVERFLOW_EDGE[dtype]
    yield "moderate", np.array(_rows(rng, 3, 5, 4.0)).astype(cast)
    yield "large", np.array(_rows(rng, 2, 4, 60.0)).astype(cast)
    yield "overflow-edge", np.array([[edge, edge - 1.0, 0.0], [edge, -edge, edge]]).astype(cast)
    yield "dominant", np.array([[40.0, 0.0, -1.0], [16.0, 0.0, 0.0]]).astype(cast)
    yield "ties", np.array([[1.5, 1.5, 1.5, 1.5], [0.0, 0.0, -2.0, 0.0]]).astype(cast)
    yield "masked", np.array([[0.5, -np.inf, 2.0], [-np.inf, 1.0, -np.inf]]).astype(cast)
    yield "single-class", np.array([[3.0], [-7.0]]).astype(cast)
    if dtype == "float64":
        yield "extreme-1e308", np.array([[1e308, -1e308]])
        yield "extreme-37", np.array([[37.42994775023705, 0.0]])
        yield "extreme-40", np.array([[40.0, 0.0]])
    if dtype == "float32":
        yield "extreme-1e7", np.array([[-1e7, -1e7, -9999999.0]], dtype=np.float32)


def _targets(logits: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    n, k = logits.shape
    yield "indices", np.array([(3 * i + 1) % k for i in range(n)], dtype=np.int64)
    if k > 1:
        soft = np.array([[(c + 1.0) / (k * (k + 1) / 2) for c in range(k)] for _ in range(n)])
        yield "soft", soft.astype(logits.dtype)
        yield "unnormalized", np.array([[0.5 * (c % 3) for c in range(k)]
                                        for _ in range(n)]).astype(logits.dtype)


def _option_sets(k: int, dtype: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "plain", {}
    yield "mean", {"reduction": "mean"}
    yield "sum-smoothing", {"reduction": "sum", "label_smoothing": 0.1}
    weight = np.array([0.5 + 0.25 * c for c in range(k)]).astype(dtype)
    yield "weighted-mean", {"weight": weight, "reduction": "mean"}
    yield "weighted-smoothing-mean", {"weight": weight, "label_smoothing": 0.2,
                                      "reduction": "mean"}


#: A case whose output lies within 2**-90 ulp of a rounding tie of its dtype is recomputed
#: at 4x, 16x, ... the precision, up to this many bits, until the tie is decided (exact
#: ties, such as 0.5 itself, stay ties and round to even).
TIE_PREC = 16384


def _near_tie(values: Any, dtype: str) -> bool:
    arr = np.empty(np.shape(values), dtype=object)
    arr[...] = values
    flat = [v for v in arr.ravel() if v is not UNDEFINED]
    if not flat:
        return False
    errors = ulp_error(round_to(flat, DTYPES[dtype]), np.array(flat, dtype=object))
    return bool(np.any(np.abs(errors - 0.5) < 2.0**-90))


def _case(case_id: str, function: str, dtype: str, inputs: dict[str, np.ndarray],
          options: dict[str, Any], call: Callable[..., Any]) -> dict[str, Any]:
    encoded_options = {
        key: (_encode_input(np.asarray(v)) if isinstance(v, np.ndarray) else v)
        for key, v in options.items()
    }
    return {
        "id": case_id,
        "function": function,
        "dtype": dtype,
        "inputs": {name: _encode_input(a) for name, a in inputs.items()},
        "options": encoded_options,
        "expected": _encode_output(_exact(call, dtype), dtype),
    }


def _exact(call: Callable[..., Any], dtype: str) -> Any:
    prec = DEFAULT_PREC
    values = call(prec=prec)
    while prec < TIE_PREC and _near_tie(values, dtype):
        prec *= 4
        values = call(prec=prec)
    return values


def cases() -> Iterator[dict[str, Any]]:
    for dtype in DTYPES:
        for name, logits in _logit_sets(dtype):
            n, k = logits.shape
            base = f"{dtype}/{name}"
            for fn in ("logsumexp", "softmax", "log_softmax"):
                yield _case(f"{fn}/{base}", fn, dtype, {"logits": logits}, {},
                            lambda fn=fn, z=logits, **kw: getattr(ref, fn)(z, **kw))
            if k <= 5:
                yield _case(f"softmax_jacobian/{base}", "softmax_jacobian", dtype,
                            {"logits": logits}, {},
                            lambda z=logits, **kw: ref.softmax_jacobian(z, **kw))
            for tname, target in _targets(logits):
                if k <= 5:
                    yield _case(f"cross_entropy_hessian/{base}/{tname}", "cross_entropy_hessian",
                                dtype, {"logits": logits, "target": target}, {},
                                lambda z=logits, t=target, **kw:
                                ref.cross_entropy_hessian(z, t, **kw))
                for oname, opts in _option_sets(k, logits.dtype):
                    for fn in ("cross_entropy", "cross_entropy_grad"):
                        yield _case(f"{fn}/{base}/{tname}/{oname}", fn, dtype,
                                    {"logits": logits, "target": target}, opts,
                                    lambda fn=fn, z=logits, t=target, o=opts, **kw:
                                    getattr(ref, fn)(z, t, **o, **kw))
        probs = np.array([[0.25, 0.5, 0.25], [0.0, 1.0, 0.0], [0.7, 0.2, 0.1]]).astype(
            DTYPES[dtype])
        for tname, target in (("indices", np.array([0, 0, 2], dtype=np.int64)),
                              ("soft", np.array([[0.5, 0.5, 0.0]] * 3).astype(DTYPES[dtype]))):
            for fn in ("cross_entropy_from_probs", "cross_entropy_grad_wrt_probs"):
                yield _case(f"{fn}/{dtype}/{tname}", fn, dtype,
                            {"probs": probs, "target": target}, {},
                            lambda fn=fn, p=probs, t=target, **kw: getattr(ref, fn)(p, t, **kw))
    # K = 4096 equal logits: sums of many equal terms (float64 only, to keep the file small)
    wide = np.zeros((1, 4096))
    target = np.array([7], dtype=np.int64)
    for fn in ("logsumexp",):
        yield _case(f"{fn}/float64/equal-4096", fn, "float64", {"logits": wide}, {},
                    lambda **kw: ref.logsumexp(wide, **kw))
    for fn in ("cross_entropy", "cross_entropy_grad"):
        yield _case(f"{fn}/float64/equal-4096/indices/plain", fn, "float64",
                    {"logits": wide, "target": target}, {},
                    lambda fn=fn, **kw: getattr(ref, fn)(wide, target, **kw))


def generate() -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "provenance": {
            "generator": "references/data/generate.py",
            "working_precision_bits": DEFAULT_PREC,
            "certified_bits": GOLD_BITS,
            "rounding": "round to nearest, ties to even, directly from the exact value",
            "tie_refinement_max_precision_bits": TIE_PREC,
            "versions": {
                "python": platform.python_version(),
                "mpmath": mpmath.__version__,
                "numpy": np.__version__,
                "ml_dtypes": ml_dtypes.__version__,
            },
        },
        "cases": list(cases()),
    }


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without the library versions (which may differ between machines)."""
    out = json.loads(json.dumps(doc))
    out["provenance"].pop("versions", None)
    return out


def dumps(doc: dict[str, Any]) -> str:
    """JSON with one case per line: compact, and diffs show which cases changed."""
    head = {key: value for key, value in doc.items() if key != "cases"}
    lines = [json.dumps(case, sort_keys=True, separators=(",", ":")) for case in doc["cases"]]
    body = ",\n".join(lines)
    return json.dumps(head, indent=1, sort_keys=True)[:-2] + ',\n "cases": [\n' + body + "\n]}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed file instead of writing it")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    doc = generate()
    if args.check:
        committed = json.loads(args.output.read_text())
        if _comparable(committed) != _comparable(doc):
            print(f"{args.output} differs from a fresh generation", file=sys.stderr)
            return 1
        print(f"{args.output}: {len(doc['cases'])} cases regenerate identically")
        return 0
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(dumps(doc))
    tmp.replace(args.output)
    print(f"wrote {len(doc['cases'])} cases to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
