"""The Case record: one input of the conformance engine (logits, targets, options, dtype).

A case is what flows from a strategy, a fixed-seed sample or a corpus to the gold
references and on to every adapter (DESIGN.md §2). It is frozen and its arrays are
read-only copies. It serializes to JSON with every float written as a hex float
(``float(x).hex()``, exact for float64, float32, float16 and bfloat16; NaNs other than
the dtype's default quiet NaN keep their bit pattern as ``"nan:0x..."``), so a case can
be pinned in a file and rebuilt byte for byte; :meth:`Case.reproducer` is a one-line
snippet that rebuilds it.

>>> import numpy as np
>>> case = Case(logits=np.array([[0.0, -np.inf]]), target=np.array([1]),
...             target_kind="indices", options={"reduction": "sum"}, dtype="float64",
...             regime="masked", case_id="masked-float64-demo")
>>> case.to_json()
'{"format":"xentcheck-case/1","case_id":"masked-float64-demo","regime":"masked",\
"dtype":"float64","seed":null,"origin":null,"target_kind":"indices","shape":[1,2],\
"logits":["0x0.0p+0","-inf"],"target":[1],"options":{"reduction":"sum"}}'
>>> Case.from_json(case.to_json()).same_as(case)
True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import DTYPES, OPTIONS, REDUCTIONS, case_dtype, dtype_name

__all__ = [
    "CASE_FORMAT",
    "TARGET_KINDS",
    "Case",
    "decode_floats",
    "encode_floats",
    "fingerprint_cases",
]

#: How a case's target is given: class indices (int64, ``(N,)``) or one of the probability
#: forms (``(N, K)`` in the case dtype): exactly one 1 per row; non-negative rows summing
#: to exactly 1; non-negative rows whose sum is not 1; all zeros.
TARGET_KINDS: tuple[str, ...] = ("indices", "one-hot", "soft", "unnormalized", "all-zero")

#: The tag of the JSON form; bumped when the layout changes.
CASE_FORMAT = "xentcheck-case/1"

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only array nobody else can write to: a copy, or ``array`` itself where it is
    a read-only view of a read-only memory map (a corpus block: no copy of the file)."""
    if not array.flags.writeable and _read_only_map(array):
        return array
    out = np.array(array, copy=True)
    out.setflags(write=False)
    return out


def _read_only_map(array: np.ndarray) -> bool:
    base: Any = array
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    return base is not None and base.mode == "r"


def _bits(array: np.ndarray) -> np.ndarray:
    return array.view(_UINT[array.dtype.itemsize])


def _default_nan_bits(dtype: np.dtype) -> int:
    return int(_bits(np.array([np.nan]).astype(dtype))[0])


def encode_floats(array: np.ndarray) -> list[str]:
    """Every element of ``array`` (any case dtype) as an exact hex-float string, row-major.

    >>> encode_floats(np.array([1.5, -0.0, np.inf], dtype=np.float16))
    ['0x1.8000000000000p+0', '-0x0.0p+0', 'inf']
    """
    flat = np.ascontiguousarray(array).reshape(-1)
    wide = flat.astype(np.float64)  # exact: every case dtype is a subset of float64
    text = [float.hex(v) for v in wide.tolist()]
    nans = np.flatnonzero(np.isnan(wide))
    if nans.size:
        default = _default_nan_bits(flat.dtype)
        bits = _bits(flat)
        for i in nans.tolist():
            b = int(bits[i])
            text[i] = "nan" if b == default else f"nan:{b:#x}"
    return text


def decode_floats(text: Sequence[str], dtype: np.dtype) -> np.ndarray:
    """The inverse of :func:`encode_floats`: a 1-D array of ``dtype``, bit for bit."""
    values = []
    special: list[tuple[int, int]] = []
    default = _default_nan_bits(dtype)
    for i, s in enumerate(text):
        if not isinstance(s, str):
            raise ValueError(f"case JSON: float #{i} is {s!r}, not a hex-float string")
        if s.startswith("nan"):
            special.append((i, default if s == "nan" else int(s[4:], 16)))
            values.append(math.nan)
        else:
            values.append(float.fromhex(s))
    wide = np.array(values, dtype=np.float64)
    out = wide.astype(dtype)
    if np.any(out.astype(np.float64)[~np.isnan(wide)] != wide[~np.isnan(wide)]):
        raise ValueError(f"case JSON: a value is not exactly representable in {dtype_name(dtype)}")
    if special:
        bits = _bits(out)
        for i, b in special:
            bits[i] = b
    return out


@dataclass(frozen=True, eq=False, repr=False)
class Case:
    """One input: logits ``(N, K)``, a target, options, the dtype and where it came from.

    - ``logits``: ``(N, K)`` array of the case dtype.
    - ``target``: int64 class indices ``(N,)`` (``target_kind="indices"``), or ``(N, K)``
      probabilities in the case dtype for the other :data:`TARGET_KINDS`.
    - ``options``: only the options that are set, among ``weight`` (``(K,)`` array of the
      case dtype), ``ignore_index`` (int), ``label_smoothing`` (float) and ``reduction``
      (``"none"``, ``"sum"``, ``"mean"``).
    - ``dtype``: ``"float64"``, ``"float32"``, ``"float16"`` or ``"bfloat16"``.
    - ``regime``, ``case_id`` (stable, e.g. ``"ties-float16-s0-3"``), ``seed`` (of a
      fixed-seed sample; ``None`` for Hypothesis draws and corpora) and ``origin`` (a
      Python expression that regenerates the case, e.g.
      ``xentcheck.harness.strategies.sample(...)[3]``,
      or ``None``).

    Only the structure is validated here (shapes, dtypes, names, option types): a case may
    hold invalid targets on purpose (out-of-range classes, negative probabilities), and
    :meth:`target_problems` says what is invalid about them. Equality is identity; compare
    contents bit for bit with :meth:`same_as`.
    """

    logits: np.ndarray
    target: np.ndarray
    target_kind: str
    options: dict[str, Any]
    dtype: str
    regime: str
    case_id: str
    seed: int | None = None
    origin: str | None = field(default=None)

    def __post_init__(self) -> None:
        try:
            name = dtype_name(self.dtype)
        except TypeError:
            name = None
        if name not in DTYPES:
            raise ValueError(f"case dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        dt = case_dtype(name)
        logits = np.asarray(self.logits)
        if logits.ndim != 2:
            raise ValueError(f"logits must be 2-D (N, K); got shape {logits.shape}")
        if logits.dtype != dt:
            raise ValueError(f"logits are {dtype_name(logits.dtype)} but the case dtype is {name}")
        n, k = logits.shape
        if self.target_kind not in TARGET_KINDS:
            raise ValueError(
                f"target_kind must be one of {', '.join(TARGET_KINDS)}; got {self.target_kind!r}"
            )
        target = np.asarray(self.target)
        if self.target_kind == "indices":
            if target.shape != (n,) or target.dtype.kind not in "iu":
                raise ValueError(
                    f"index targets must be integers of shape ({n},); "
                    f"got {target.dtype} {target.shape}"
                )
            target = target.astype(np.int64)
        elif target.shape != (n, k) or target.dtype != dt:
            raise ValueError(
                f"{self.target_kind} targets must be {name} of shape ({n}, {k}); "
                f"got {dtype_name(target.dtype)} {target.shape}"
            )
        if not isinstance(self.regime, str) or not self.regime:
            raise ValueError(f"regime must be a non-empty string; got {self.regime!r}")
        if not isinstance(self.case_id, str) or not self.case_id:
            raise ValueError(f"case_id must be a non-empty string; got {self.case_id!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"seed must be an int or None; got {self.seed!r}")
        if self.origin is not None and not isinstance(self.origin, str):
            raise ValueError(f"origin must be a string or None; got {self.origin!r}")
        object.__setattr__(self, "dtype", name)
        object.__setattr__(self, "logits", _frozen(logits))
        object.__setattr__(self, "target", _frozen(target))
        object.__setattr__(self, "options", _checked_options(self.options, dt, k))

    # ------------------------------------------------------------------ shape

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, K)``: rows and classes."""
        return self.logits.shape  # type: ignore[return-value]

    @property
    def num_rows(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: floats as exact hex-float strings, arrays flattened row-major."""
        opts: dict[str, Any] = {}
        for key, value in self.options.items():
            if key == "weight":
                opts[key] = encode_floats(value)
            elif key == "label_smoothing":
                opts[key] = float.hex(value)
            else:
                opts[key] = value
        if self.target_kind == "indices":
            target: list[Any] = self.target.tolist()
        else:
            target = encode_floats(self.target)
        return {
            "format": CASE_FORMAT,
            "case_id": self.case_id,
            "regime": self.regime,
            "dtype": self.dtype,
            "seed": self.seed,
            "origin": self.origin,
            "target_kind": self.target_kind,
            "shape": list(self.shape),
            "logits": encode_floats(self.logits),
            "target": target,
            "options": opts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Case:
        """Rebuild a case from :meth:`to_dict`'s output, bit for bit."""
        if data.get("format") != CASE_FORMAT:
            raise ValueError(
                f"case JSON: format must be {CASE_FORMAT!r}; got {data.get('format')!r}"
            )
        dt = case_dtype(str(data["dtype"]))
        n, k = (int(v) for v in data["shape"])
        logits = decode_floats(data["logits"], dt)
        if logits.size != n * k:
            raise ValueError(f"case JSON: {logits.size} logits for shape ({n}, {k})")
        kind = data["target_kind"]
        if kind == "indices":
            target = np.array(data["target"], dtype=np.int64).reshape(n)
        else:
            target = decode_floats(data["target"], dt).reshape(n, k)
        opts: dict[str, Any] = {}
        for key, value in dict(data.get("options", {})).items():
            if key == "weight":
                opts[key] = decode_floats(value, dt)
            elif key == "label_smoothing":
                opts[key] = float.fromhex(value)
            else:
                opts[key] = value
        return cls(
            logits=logits.reshape(n, k),
            target=target,
            target_kind=kind,
            options=opts,
            dtype=data["dtype"],
            regime=data["regime"],
            case_id=data["case_id"],
            seed=data.get("seed"),
            origin=data.get("origin"),
        )

    def to_json(self, *, indent: int | None = None) -> str:
        """The case as JSON text (compact unless ``indent``); same case, same text."""
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.to_dict(), indent=indent, separators=separators)

    @classmethod
    def from_json(cls, text: str) -> Case:
        """Rebuild a case from :meth:`to_json`'s text, bit for bit."""
        return cls.from_dict(json.loads(text))

    def reproducer(self, *, max_chars: int = 4096) -> str:
        """A one-line Python snippet that rebuilds this case.

        The snippet embeds the case as JSON (``Case.from_json('...')``), exact and
        independent of the generator's code. When that line would be longer than
        ``max_chars`` and the case knows its ``origin`` (a fixed-seed sample or a corpus
        chunk), the snippet regenerates it from there instead.
        """
        line = ("from xentcheck.harness.cases import Case; "
                f"case = Case.from_json({self.to_json()!r})")
        if len(line) > max_chars and self.origin and self.origin.startswith("xentcheck.harness."):
            module = self.origin.split("(", 1)[0].rsplit(".", 1)[0]
            return f"import {module}; case = {self.origin}"
        return line

    # ------------------------------------------------------------------ helpers

    def select_rows(self, rows: Sequence[int] | np.ndarray) -> Case:
        """The case restricted to ``rows`` (e.g. the worst row), options unchanged."""
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        label = ",".join(str(int(i)) for i in idx)
        return Case(
            logits=self.logits[idx],
            target=self.target[idx],
            target_kind=self.target_kind,
            options=dict(self.options),
            dtype=self.dtype,
            regime=self.regime,
            case_id=f"{self.case_id}[{label}]",
            seed=self.seed,
            origin=None if self.origin is None else f"{self.origin}.select_rows([{label}])",
        )

    def _content(self, views: bool = False) -> tuple[Any, ...]:
        """What makes the case: its arrays' bytes as copies, or with ``views`` as
        read-only views of the same bytes (for a hash: no copy of an LLM batch)."""
        opts = tuple(
            (key, value.tobytes() if isinstance(value, np.ndarray) else repr(value))
            for key, value in self.options.items()
        )
        arrays = (self.logits, self.target)
        return (
            self.dtype,
            self.shape,
            self.target_kind,
            *(memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8)).toreadonly()
              if views else a.tobytes() for a in arrays),
            opts,
        )

    def fingerprint(self) -> str:
        """The SHA-256 of the contents (dtype, shape, target kind, the bits of every array,
        options), ids and provenance left out: equal fingerprints, equal inputs. Taken
        once per case (its arrays are read-only): the report's inputs and the
        certificates' directions both read it."""
        known = self.__dict__.get("_fingerprint")
        if known is not None:
            return known
        h = hashlib.sha256()
        for part in self._content(views=True):
            h.update(part if isinstance(part, (bytes, memoryview)) else repr(part).encode())
            h.update(b"\x00")
        self.__dict__["_fingerprint"] = known = h.hexdigest()
        return known

    def digest(self) -> str:
        """A short hash of the contents: the first 16 digits of :meth:`fingerprint`."""
        return self.fingerprint()[:16]

    def same_as(self, other: Case) -> bool:
        """Whether ``other`` is the same case bit for bit (ids, provenance and contents)."""
        return (
            isinstance(other, Case)
            and (self.case_id, self.regime, self.seed, self.origin)
            == (other.case_id, other.regime, other.seed, other.origin)
            and self._content() == other._content()
        )

    def target_problems(self) -> list[str]:
        """What is invalid about the target for its kind (empty when it is valid).

        Indices must lie in ``[0, K)`` or equal ``ignore_index``; probabilities must be
        finite and non-negative; one-hot rows hold exactly one 1; soft rows sum to exactly 1
        and unnormalized rows to anything else (exact sums of the stored values); all-zero
        targets are zeros.
        """
        n, k = self.shape
        problems: list[str] = []
        if self.target_kind == "indices":
            ignore = self.options.get("ignore_index")
            bad = (self.target < 0) | (self.target >= k)
            if ignore is not None:
                bad &= self.target != ignore
            problems += [
                f"row {i}: class {self.target[i]} out of [0, {k})" for i in np.flatnonzero(bad)
            ]
            return problems
        y = self.target.astype(np.float64)
        for i in range(n):
            row = y[i]
            if not np.all(np.isfinite(row)) or np.any(row < 0):
                problems.append(f"row {i}: probabilities must be finite and >= 0")
                continue
            if self.target_kind == "one-hot":
                if np.count_nonzero(row == 1.0) != 1 or np.count_nonzero(row) != 1:
                    problems.append(f"row {i}: not one-hot")
            elif self.target_kind == "all-zero":
                if np.any(row != 0):
                    problems.append(f"row {i}: not all zero")
            else:
                total = _exact_sum(row)
                if self.target_kind == "soft" and total != 1:
                    problems.append(f"row {i}: sums to {float(total)!r}, not exactly 1")
                if self.target_kind == "unnormalized" and total == 1:
                    problems.append(f"row {i}: sums to exactly 1")
        return problems

    def __repr__(self) -> str:
        if self.logits.size <= 32:
            return f"Case.from_json({self.to_json()!r})"
        opts = ", ".join(
            f"{key}=<{value.size}>" if isinstance(value, np.ndarray) else f"{key}={value!r}"
            for key, value in self.options.items()
        )
        return (
            f"<Case {self.case_id}: logits {self.shape} {self.dtype}, "
            f"target {self.target_kind}, options {{{opts}}}>"
        )


def fingerprint_cases(cases: Sequence[Case]) -> str:
    """The SHA-256 of a set of cases' contents, independent of their order and ids."""
    h = hashlib.sha256()
    for digest in sorted(case.fingerprint() for case in cases):
        h.update(digest.encode())
    return h.hexdigest()


def _exact_sum(values: np.ndarray) -> Fraction:
    nonzero = values[values != 0]
    if math.fsum(nonzero.tolist()) != 1.0:
        return Fraction(math.fsum(nonzero.tolist()))  # fsum is correctly rounded: not 1
    return sum((Fraction(v) for v in nonzero.tolist()), Fraction(0))


def _checked_options(options: Mapping[str, Any], dt: np.dtype, k: int) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise ValueError(f"options must be a mapping; got {type(options).__name__}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown options {unknown}; known: {', '.join(OPTIONS)}")
    out: dict[str, Any] = {}
    for key in OPTIONS:  # canonical order: the same case always serializes the same way
        if key not in options:
            continue
        value = options[key]
        if key == "weight":
            w = np.asarray(value)
            if w.shape != (k,) or w.dtype != dt:
                raise ValueError(
                    f"weight must be {dtype_name(dt)} of shape ({k},); "
                    f"got {dtype_name(w.dtype)} {w.shape}"
                )
            out[key] = _frozen(w)
        elif key == "ignore_index":
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"ignore_index must be an int; got {value!r}")
            out[key] = int(value)
        elif key == "label_smoothing":
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise ValueError(f"label_smoothing must be a float; got {value!r}")
            out[key] = float(value)
        else:
            if value not in REDUCTIONS:
                raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {value!r}")
            out[key] = str(value)
    return out
