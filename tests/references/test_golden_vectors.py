"""The committed golden vectors regenerate identically and are self-consistent.

The vectors are produced by ``references/data/generate.py`` from the gold functions
(mpmath, 192-bit working precision, 110 bits certified); these tests do not trust the
file blindly: they regenerate it, and they re-derive a few entries by a different route.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import mpmath
import pytest

DATA = Path(__file__).resolve().parents[2] / "references" / "data"


def _generator():
    spec = importlib.util.spec_from_file_location("golden_generate", DATA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads((DATA / "golden_vectors.json").read_text())


def test_regenerating_gives_the_committed_file(committed):
    gen = _generator()
    assert gen._comparable(committed) == gen._comparable(gen.generate())


def test_main_check_mode_reports_a_changed_file(tmp_path, committed):
    gen = _generator()
    changed = json.loads(json.dumps(committed))
    changed["cases"][0]["expected"]["decimal"][0] = "1"
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(changed))
    assert gen.main(["--check", "--output", str(path)]) == 1


def test_every_function_dtype_and_extreme_is_covered(committed):
    ids = {c["id"] for c in committed["cases"]}
    functions = {c["function"] for c in committed["cases"]}
    assert functions == {
        "logsumexp", "softmax", "log_softmax", "cross_entropy", "cross_entropy_grad",
        "softmax_jacobian", "cross_entropy_hessian", "cross_entropy_from_probs",
        "cross_entropy_grad_wrt_probs",
    }
    assert {c["dtype"] for c in committed["cases"]} == {"float64", "float32", "float16",
                                                        "bfloat16"}
    for needed in ("log_softmax/float64/extreme-1e308", "log_softmax/float64/extreme-40",
                   "cross_entropy_grad/float64/extreme-37/indices/plain",
                   "log_softmax/float32/extreme-1e7",
                   "cross_entropy/float64/equal-4096/indices/plain"):
        assert needed in ids


def test_float64_hex_is_the_rounding_of_the_decimal(committed):
    """Python's float() rounds a decimal string correctly; 40 digits decide every float64
    rounding here unless the value sits within 1e-40 of a tie."""
    checked = 0
    for case in committed["cases"]:
        if case["dtype"] != "float64":
            continue
        for dec, hx in zip(case["expected"]["decimal"], case["expected"]["hex"], strict=True):
            if dec in ("undefined", "nan"):
                continue
            stored = float.fromhex(hx) if "x" in hx else float(hx)
            if float(dec) != stored:  # only allowed at a rounding tie, decided exactly
                with mpmath.workprec(200):
                    tie = (mpmath.mpf(stored) + mpmath.mpf(float(dec))) / 2
                    assert abs(mpmath.mpf(dec) - tie) <= abs(tie) * mpmath.mpf(10) ** -38, (
                        case["id"])
            checked += 1
    assert checked > 1000


def test_an_entry_rederived_independently(committed):
    # log p_0 at z = [40, 0] is -log1p(e^-40); mpmath at 300 bits.
    case = next(c for c in committed["cases"] if c["id"] == "log_softmax/float64/extreme-40")
    assert [float.fromhex(h) for h in case["inputs"]["logits"]["hex"]] == [40.0, 0.0]
    with mpmath.workprec(300):
        expected = -mpmath.log1p(mpmath.exp(-40))
        assert abs(mpmath.mpf(case["expected"]["decimal"][0]) / expected - 1) < 1e-38
    assert math.isclose(float.fromhex(case["expected"]["hex"][0]), -4.248354255291589e-18,
                        rel_tol=0, abs_tol=0)
