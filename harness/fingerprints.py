"""Fingerprints of the fixed-seed samples: the committed record that inputs are portable.

``harness/data/sample_fingerprints.json`` holds the SHA-256 of every default sample (each
regime and dtype, seed 0, plus ``wide`` at vocabulary size) as
:func:`xentcheck.harness.cases.fingerprint_cases` computes it. The test suite regenerates them, also
with NumPy's SIMD dispatch turned off, and compares: a sample that changes with the CPU,
the platform or an unrelated edit fails there, before a baseline made on one machine can
disagree with a run on another.

``python -m xentcheck.harness.fingerprints`` checks the file (exit 1 on a difference, naming it);
``--write`` rewrites it after a deliberate change of the samples (say so in the commit:
every baseline made before it compares as "not comparable" on the changed regimes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from xentcheck.harness import strategies
from xentcheck.harness.adapters.contract import DTYPES
from xentcheck.harness.cases import fingerprint_cases

FINGERPRINTS = Path(__file__).resolve().parent / "data" / "sample_fingerprints.json"

#: The seed the committed fingerprints are made with.
SEED = 0


def compute(seed: int = SEED) -> dict[str, str]:
    """``{"regime/dtype": sha256}`` of every default sample, and ``wide`` at
    ``max_classes=MAX_CLASSES`` as ``"wide@131072/dtype"``."""
    out: dict[str, str] = {}
    for regime in strategies.REGIMES:
        for dtype in DTYPES:
            cases = strategies.sample(regime, dtype=dtype, seed=seed)
            out[f"{regime}/{dtype}"] = fingerprint_cases(cases)
    for dtype in DTYPES:
        cases = strategies.sample("wide", dtype=dtype, seed=seed,
                                  max_classes=strategies.MAX_CLASSES)
        out[f"wide@{strategies.MAX_CLASSES}/{dtype}"] = fingerprint_cases(cases)
    return out


def committed(path: Path = FINGERPRINTS) -> dict[str, str]:
    """The committed fingerprints."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return dict(data["samples"])


def differences(expected: dict[str, str], got: dict[str, str]) -> list[str]:
    """One line per sample whose fingerprint differs, is missing or is new."""
    lines = []
    for key in sorted(set(expected) | set(got)):
        if expected.get(key) != got.get(key):
            lines.append(f"{key}: committed {expected.get(key)}, now {got.get(key)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xentcheck.harness.fingerprints",
        description="check (or rewrite) the committed fingerprints of the default samples")
    parser.add_argument("--write", action="store_true", help="rewrite the committed file")
    args = parser.parse_args(argv)
    got = compute()
    if args.write:
        text = json.dumps({"seed": SEED, "samples": got}, indent=1, sort_keys=True)
        FINGERPRINTS.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {len(got)} fingerprints to {FINGERPRINTS}")
        return 0
    lines = differences(committed(), got)
    for line in lines:
        print(line)
    print(f"{len(got) - len(lines)} of {len(got)} samples match the committed fingerprints")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
