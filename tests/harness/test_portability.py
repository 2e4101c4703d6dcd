"""The same inputs and the same grades on every machine.

NumPy's transcendental functions change their last bits with the SIMD code it dispatches
to (AVX-512, AVX2, the baseline). These tests run the same work with that dispatch turned
off (``NPY_DISABLE_CPU_FEATURES``, in a subprocess: it is read when NumPy loads) and
compare bits: the fixed-seed samples (against the committed fingerprints), the portable
elementary functions, and a whole run's report over the paths where the harness does
arithmetic of its own (the fast tier's float64 work, the stability bounds, the
certificates). A whole run is also compared with the fast tier's compiled engine (numba)
and without it, and with mpmath's GMP backend (gmpy2) and without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest

from xentcheck.harness import fingerprints, strategies
from xentcheck.harness.report import json_report
from xentcheck.references import portable

ROOT = Path(__file__).resolve().parents[2]


def _dispatch_levels() -> list[str]:
    """NPY_DISABLE_CPU_FEATURES values: every dispatch target above the baseline off, and
    (where there are two or more) only the highest one off (an AVX2-only runner)."""
    from numpy._core import _multiarray_umath as umath

    targets = [t for t in umath.__cpu_dispatch__ if umath.__cpu_features__.get(t)]
    if not targets:
        pytest.skip("NumPy dispatches to no SIMD target here: nothing to turn off")
    levels = [" ".join(targets)]
    if len(targets) > 1:
        levels.append(" ".join(targets[1:]))
    return levels


def _python(code: str, disabled: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("NPY_DISABLE_CPU_FEATURES", None)
    if disabled:
        env["NPY_DISABLE_CPU_FEATURES"] = disabled
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_samples_match_the_committed_fingerprints() -> None:
    assert fingerprints.differences(fingerprints.committed(), fingerprints.compute()) == []


def test_the_fingerprints_cover_every_regime_and_dtype() -> None:
    committed = fingerprints.committed()
    for regime in strategies.REGIMES:
        for dtype in ("float64", "float32", "float16", "bfloat16"):
            assert f"{regime}/{dtype}" in committed


def test_a_case_hashes_its_contents_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A case's fingerprint is taken once (an LLM block's is read by the report and by
    the certificates): the second call hashes nothing, a pickled case (a part's) carries
    it, and a case with other logits gets its own."""
    import dataclasses
    import hashlib
    import pickle

    from xentcheck.harness import cases as cases_module

    case = strategies.sample("moderate", dtype="float32", seed=0)[0]
    first = case.fingerprint()
    real, calls = hashlib.sha256, []
    monkeypatch.setattr(cases_module.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert case.fingerprint() == first and calls == []
    assert pickle.loads(pickle.dumps(case)).fingerprint() == first and calls == []
    other = dataclasses.replace(case, logits=np.nextafter(case.logits, np.inf))
    assert other.fingerprint() != first and calls == [1]


@pytest.mark.parametrize("level", range(2), ids=["baseline-only", "top-target-off"])
def test_samples_are_the_same_without_simd_dispatch(level: int) -> None:
    levels = _dispatch_levels()
    if level >= len(levels):
        pytest.skip("one dispatch target only")
    done = _python("from xentcheck.harness import fingerprints; "
                   "raise SystemExit(fingerprints.main([]))",
                   levels[level])
    assert done.returncode == 0, done.stdout + done.stderr


_PORTABLE_HASH = """
import hashlib, numpy as np
from xentcheck.references import portable as P
x = np.linspace(-745.0, 709.0, 20011)
y = np.ldexp(np.linspace(0.5, 1.0, 20011), np.arange(20011) % 2098 - 1074)
z = np.linspace(-0.999, 50.0, 20011)
parts = (P.exp(x), P.exp2(x), P.log(y), P.log2(y), P.log1p(z))
print(hashlib.sha256(b"".join(p.tobytes() for p in parts)).hexdigest())
"""


def test_portable_functions_give_the_same_bits_without_simd_dispatch() -> None:
    expected = _python(_PORTABLE_HASH, None).stdout
    assert len(expected.strip()) == 64
    for disabled in _dispatch_levels():
        assert _python(_PORTABLE_HASH, disabled).stdout == expected, disabled


def _ulps(got: np.ndarray, exact: list[mpmath.mpf]) -> float:
    with mpmath.workprec(200):
        return max(float(abs(mpmath.mpf(float(g)) - e) / np.spacing(abs(float(e))))
                   for g, e in zip(got, exact, strict=True) if e != 0)


def test_portable_functions_are_accurate() -> None:
    """A few float64 ulps against mpmath at 200 bits (enough for bounds and seeds)."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-700.0, 700.0, 400)
    y = np.ldexp(rng.uniform(0.5, 1.0, 400), rng.integers(-1074, 1024, 400))
    z = np.concatenate([rng.uniform(-0.99, 20.0, 200), np.ldexp(1.0, -rng.integers(1, 900, 200))])
    with mpmath.workprec(200):
        assert _ulps(portable.exp(x), [mpmath.exp(mpmath.mpf(v)) for v in x]) <= 4
        assert _ulps(portable.log(y), [mpmath.log(mpmath.mpf(v)) for v in y]) <= 4
        assert _ulps(portable.log1p(z), [mpmath.log1p(mpmath.mpf(v)) for v in z]) <= 4
        assert _ulps(portable.exp2(x), [mpmath.power(2, mpmath.mpf(v)) for v in x]) <= 4
    special = portable.exp(np.array([np.inf, -np.inf, np.nan, 800.0, -800.0]))
    assert special[0] == np.inf and special[1] == 0 and np.isnan(special[2])
    assert special[3] == np.inf and special[4] == 0
    logs = portable.log(np.array([0.0, -1.0, np.inf, 1.0]))
    assert logs[0] == -np.inf and np.isnan(logs[1]) and logs[2] == np.inf and logs[3] == 0
    assert portable.log2(np.ldexp(1.0, np.arange(-1074, 1024))).tolist() == list(
        range(-1074, 1024))


_RUN = """
import json, sys
from xentcheck.harness import cli
code = cli.main(["run", "--adapter", "numpy", "--adapter", "c", "--regime", "wide",
                 "--regime", "huge", "--regime", "moderate", "--dtype", "float64",
                 "--dtype", "float32", "--out", sys.argv[1]])
raise SystemExit(0 if code in (0, 1) else code)
"""


def _report(out: Path, disabled: str | None, engine: str = "auto", *,
            gmpy: bool = True) -> dict:
    env = dict(os.environ)
    env.pop("NPY_DISABLE_CPU_FEATURES", None)
    env.pop("MPMATH_NOGMPY", None)
    env["XENTCHECK_FAST_ENGINE"] = engine
    if not gmpy:
        env["MPMATH_NOGMPY"] = "1"  # read when mpmath loads: its pure-Python integers
    if disabled:
        env["NPY_DISABLE_CPU_FEATURES"] = disabled
    done = subprocess.run([sys.executable, "-c", _RUN, str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json_report.load(out / "conformance.json")
    for key in ("seconds", "report_id"):
        data.pop(key)
    data["timing"] = {name: t["calls"] for name, t in data["timing"].items()}  # times aside
    data["platform"].pop("simd")
    return data


def test_a_run_grades_the_same_without_simd_dispatch(tmp_path: Path) -> None:
    """The harness's own arithmetic (fast-tier references, bounds, certificates, the
    unfused product) is bit-identical whatever NumPy dispatches to: the numpy and c
    built-ins (whose own results do not move with NumPy's dispatch: the numpy built-in
    computes float64 in longdouble and rounds once) get byte-identical reports."""
    disabled = _dispatch_levels()[0]
    assert _report(tmp_path / "a", None) == _report(tmp_path / "b", disabled)


def test_a_run_grades_the_same_with_and_without_numba(tmp_path: Path) -> None:
    """The fast tier's compiled engine (numba) changes no bit of a report: the same run
    with it and with the NumPy engine (what a machine without numba runs)."""
    pytest.importorskip("numba")
    from xentcheck.references.fast import jit

    if jit._kernels() is None:
        pytest.skip("the compiled engine needs x87 longdouble")
    assert _report(tmp_path / "a", None, "numba") == _report(tmp_path / "b", None, "numpy")


def test_a_run_grades_the_same_with_and_without_gmpy2(tmp_path: Path) -> None:
    """mpmath's GMP backend (gmpy2, a dependency) changes no bit of a report: the same run
    with it and with mpmath's pure-Python integers (a machine where gmpy2 is missing, or
    MPMATH_NOGMPY is set). A few of mpmath's internal cut-offs depend on the backend (its
    exp changes method at another precision); no digit of a report may."""
    pytest.importorskip("gmpy2")
    assert _report(tmp_path / "a", None) == _report(tmp_path / "b", None, gmpy=False)
