"""The corpus of known defects: inputs that broke softmax / cross-entropy code upstream.

``harness/data/known_defects.json`` lists defects reported against PyTorch, JAX's
neighbours (optax), TensorFlow and Keras, SciPy, ONNX Runtime, PaddlePaddle, tinygrad,
MLX and fused LLM kernels (Liger-Kernel, Unsloth, Megatron-LM), each with its provenance
(library, function, the issue or pull request, what went wrong) and an input of the same
class, written for xentcheck: logits as numbers (``"inf"``, ``"-inf"``, ``"nan"`` as
strings), or generated from a seed with the portable stream of :mod:`xentcheck.harness.strategies`
(``{"kind": "constant" | "uniform" | "normal", "shape": [N, K], ...}``); a target (class
indices, probabilities with ``target_kind``, or ``{"random_classes": seed, "set": {row:
class}}``); options. :func:`cases` turns them into :class:`~xentcheck.harness.cases.Case` s of the
regime ``known-defects``, which every run replays like the pinned cases. A malformed
entry raises :class:`DefectCorpusError` naming it (the CLI: exit 2).

>>> ids = [c.case_id for c in cases("float64")]
>>> ids[0]
'defect-scipy-18295'
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import DTYPES, case_dtype
from xentcheck.harness.cases import TARGET_KINDS, Case

KNOWN_DEFECTS = Path(__file__).resolve().parent / "data" / "known_defects.json"
REGIME = "known-defects"
FORMAT = "xentcheck-known-defects/1"


class DefectCorpusError(ValueError):
    """The corpus cannot be read; the one-line message names the entry and the problem."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise DefectCorpusError(f"{where}: {value!r} is not a number")


def _generated(spec: Any, where: str) -> np.ndarray:
    from xentcheck.harness.strategies import _StreamSource  # the portable stream of the samples

    if not isinstance(spec, dict) or spec.get("kind") not in ("constant", "uniform", "normal"):
        raise DefectCorpusError(f"{where}: generate needs kind constant, uniform or normal")
    shape = spec.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(d, int) and d >= 0 for d in shape)):
        raise DefectCorpusError(f"{where}: generate needs a shape [N, K]")
    if spec["kind"] == "constant":
        return np.full(shape, _number(spec.get("value"), where))
    src = _StreamSource([int(spec.get("seed", 0))])
    if spec["kind"] == "uniform":
        lo, hi = _number(spec.get("low"), where), _number(spec.get("high"), where)
        return src.floats(lo, hi, tuple(shape))
    return src.noise(tuple(shape))


def _target(spec: Any, n: int, k: int, where: str) -> np.ndarray:
    if isinstance(spec, dict):
        from xentcheck.harness.strategies import _StreamSource

        seed = spec.get("random_classes")
        if not isinstance(seed, int):
            raise DefectCorpusError(f"{where}: a generated target needs random_classes: seed")
        target = _StreamSource([seed]).integers(0, k - 1, (n,))
        for row, value in (spec.get("set") or {}).items():
            target[int(row)] = int(value)
        return target
    if not isinstance(spec, list):
        raise DefectCorpusError(f"{where}: target must be a list or a generated target")
    return np.array(spec, dtype=np.int64 if all(isinstance(t, int) for t in spec) else object)


def _case(entry: Any, index: int) -> Case:
    where = f"{KNOWN_DEFECTS.name} defect #{index}"
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        raise DefectCorpusError(f"{where}: not an object with an id")
    where = f"{KNOWN_DEFECTS.name} defect {entry['id']!r}"
    for field in ("library", "function", "reference", "what"):
        if not isinstance(entry.get(field), str):
            raise DefectCorpusError(f"{where}: no {field}")
    dtype = entry.get("dtype")
    if dtype not in DTYPES:
        raise DefectCorpusError(f"{where}: dtype must be one of {', '.join(DTYPES)}")
    if "generate" in entry:
        z = _generated(entry["generate"], where)
    else:
        rows = entry.get("logits")
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise DefectCorpusError(f"{where}: logits must be a list of rows")
        z = np.array([[_number(v, where) for v in row] for row in rows])
    n, k = z.shape
    logits = z.astype(case_dtype(dtype))
    target = _target(entry.get("target"), n, k, where)
    kind = entry.get("target_kind", "indices" if target.ndim == 1 else "soft")
    if kind not in TARGET_KINDS:
        raise DefectCorpusError(f"{where}: target_kind must be one of {', '.join(TARGET_KINDS)}")
    if kind != "indices":
        target = np.array([[_number(v, where) for v in row] for row in target.tolist()]).astype(
            case_dtype(dtype))
    try:
        return Case(logits=logits, target=target, target_kind=kind,
                    options=dict(entry.get("options") or {}), dtype=dtype, regime=REGIME,
                    case_id=f"defect-{entry['id']}",
                    origin=("xentcheck.harness.strategies."
                            f"sample({REGIME!r}, dtype={dtype!r})[{index}]"))
    except (ValueError, TypeError) as exc:
        raise DefectCorpusError(f"{where}: {exc}") from None


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> tuple[tuple[dict[str, Any], ...], tuple[Case, ...]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DefectCorpusError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DefectCorpusError(f"{path}: not a known-defects file (format {FORMAT})")
    entries = data.get("defects")
    if not isinstance(entries, list):
        raise DefectCorpusError(f"{path}: no list of defects")
    built = tuple(_case(entry, i) for i, entry in enumerate(entries))
    ids = [c.case_id for c in built]
    if len(set(ids)) != len(ids):
        raise DefectCorpusError(f"{path}: two defects share an id")
    return tuple(entries), built


def entries(path: Path = KNOWN_DEFECTS) -> tuple[dict[str, Any], ...]:
    """The defects with their provenance, as in the file."""
    return _load(str(path), path.stat().st_mtime_ns)[0]


def cases(dtype: str | None = None, path: Path = KNOWN_DEFECTS) -> list[Case]:
    """The corpus as cases (of ``dtype`` only, when given), in the file's order; the
    origin of each is its place in
    ``xentcheck.harness.strategies.sample('known-defects', dtype)``."""
    if not path.exists():
        raise DefectCorpusError(f"{path}: no such file")
    built = _load(str(path), path.stat().st_mtime_ns)[1]
    chosen = [c for c in built if dtype is None or c.dtype == dtype]
    if dtype is None:
        return chosen
    import dataclasses

    return [dataclasses.replace(c, origin=f"xentcheck.harness.strategies.sample({REGIME!r}, "
                                          f"dtype={dtype!r})[{i}]")
            for i, c in enumerate(chosen)]
