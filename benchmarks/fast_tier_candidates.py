"""What well-kept libraries offer for the fast reference tier, measured against it.

The fast tier's goal (``fast_reference_throughput_ratio`` >= 0.5 on (8, 131072) and
(1024, 131072), within 1e-3 float64 ulp) asks whether to write more hand-made NumPy
kernels or to build on a library. This script measures, on the same logits and against the
same baseline as ``benchmarks/run.py``, one float64 (N, K) -> extended-precision
log_softmax per technology:

* ``fast``: ``xentcheck.references.fast.log_softmax`` with its NumPy engine (longdouble
  output);
* ``xprec``: NumPy with xprec's ``ddouble`` dtype (double-double): d = z - m, the sum of
  exp(d) with the argmax left out, then d - log(1 + s) (xprec has no log1p); ddouble
  output, not converted to longdouble (in its favour);
* ``quaddtype``: NumPy with numpy-quaddtype's ``QuadPrecDType`` (IEEE binary128 through
  SLEEF): the same formula with ``log1p``; quad output;
* ``numba``: ``xentcheck.references.fast.log_softmax`` with its compiled engine
  (``xentcheck.references.fast.jit``, numba, one thread), which these figures chose: the
  NumPy engine's operations compiled, so its column ``= fast`` must read True.

xprec and quaddtype run 8 rows at a time (bounding their temporaries). For each shape and
input scale (standard normal times 3 and times 1e4, ``np.random.default_rng(0)``) it
reports (a) seconds, wall and process CPU time, each the best of R after one warm-up call
(numba's first-call compile time separately; a candidate below 0.1x on (8, K) at a scale
gets one timed call on (1024, K) at that scale, no warm-up, to keep the run short);
(b) the ratios elements/s ÷ NumPy's float64 shifted log_softmax (``benchmarks/run.py``'s
``numpy_log_softmax``), timed again just before each candidate; (c) the largest error in
float64 ulps of the truth (``ulp64`` as in ``tests/references/test_fast.py``) on 2 rows
per case: 2000 random columns plus the argmax, the runner-up and the minimum, each
output's exact value against ``(z_i - m) - log1p(sum_{k != argmax} exp(z_k - m))`` with
the whole row's sum in mpmath (``mpmath.workdps(40)``, local); (d) for longdouble
outputs, whether every value is bitwise the one ``fast`` gives (``= fast``; when
``fast`` runs first, as by default). The load
average is recorded at start and end and with each row (2-core machine, shared: read the
seconds with it).

    python benchmarks/fast_tier_candidates.py [--json FILE] [--repeats R] [--quick]

``--quick`` measures (8, 131072) only. Candidates whose library is missing are reported as
such. Needs: numpy, mpmath, tabulate; optionally xprec, numpy-quaddtype, numba.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mpmath
import numpy as np
from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT.parent) not in sys.path:  # the package imports as xentcheck from its parent
    sys.path.insert(0, str(ROOT.parent))

K = 131072
SHAPES = ((8, K), (1024, K))
SCALES = (3.0, 1e4)
CHUNK = 8  # rows per call for the NumPy-dtype candidates
SAMPLE = 2000
SLOW = 0.1  # below this ratio on (8, K): one timed call on the big shape


def logits(shape: tuple[int, int], scale: float) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape) * scale


def numpy_log_softmax(z: np.ndarray) -> np.ndarray:
    """benchmarks/run.py's baseline."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def best_of(repeats: int, fn: Callable[[], Any], warm: bool = True
            ) -> tuple[float, float, Any]:
    """The shortest of ``repeats`` wall times and of ``repeats`` process CPU times of
    ``fn()`` (after one untimed call if ``warm``), and the last call's result."""
    if warm:
        fn()
    wall = cpu = math.inf
    out = None
    for _ in range(repeats):
        out = None
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, out


def digest(out: np.ndarray) -> str | None:
    """A hash of a longdouble array's values (its padding bytes left out), else None."""
    if out.dtype != np.longdouble or np.dtype(np.longdouble).itemsize != 16:
        return None
    h = hashlib.sha1()
    for r in range(0, out.shape[0], 64):
        words = out[r:r + 64].view(np.uint64).reshape(-1, 2)
        h.update(np.ascontiguousarray(words[:, 0]).tobytes())
        h.update(np.ascontiguousarray(words[:, 1] & 0xFFFF).tobytes())
    return h.hexdigest()


def by_chunks(z: np.ndarray, out: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    for r in range(0, z.shape[0], CHUNK):
        out[r:r + CHUNK] = fn(z[r:r + CHUNK])
    return out


# ------------------------------------------------------------------ candidate: fast tier


def fast_candidate() -> dict[str, Any]:
    """The fast tier with its NumPy engine."""
    from xentcheck.references import fast
    from xentcheck.references.fast import jit

    def fn(z: np.ndarray) -> np.ndarray:
        with jit.engine("numpy"):
            return fast.log_softmax(z)

    return {"fn": fn, "exact": ld_parts, "note": f"TIER={fast.TIER}, NumPy engine"}


def ld_parts(a: np.ndarray) -> list[mpmath.mpf]:
    """A longdouble array's exact values (also below float64's range), as mpf."""
    frac, expo = np.frexp(np.asarray(a, dtype=np.longdouble).ravel())
    hi = frac.astype(np.float64)
    lo = (frac - hi).astype(np.float64)
    with mpmath.workprec(400):
        return [mpmath.ldexp(mpmath.mpf(float(h)) + mpmath.mpf(float(low)), int(e))
                for h, low, e in zip(hi, lo, expo, strict=True)]


# ------------------------------------------------------------------ candidate: xprec


def xprec_candidate() -> dict[str, Any]:
    # xprec registers a finfo without .min/.max: numpy.ma (which numba and np.unique
    # import lazily) then fails to import ("'finfo' object has no attribute 'min'")
    # unless it was imported first
    import numpy.ma  # noqa: F401
    import xprec

    dd = xprec.ddouble

    def chunk(z: np.ndarray) -> np.ndarray:
        rows = np.arange(z.shape[0])
        j = z.argmax(axis=1)
        m = z[rows, j][:, None]
        d = z.astype(dd) - m
        e = np.exp(d)
        e[rows, j] = 0
        s = e.sum(axis=1, keepdims=True)
        return d - np.log(s + 1)

    def fn(z: np.ndarray) -> np.ndarray:
        return by_chunks(z, np.empty(z.shape, dtype=dd), chunk)

    def exact(a: np.ndarray) -> list[mpmath.mpf]:
        pairs = np.ascontiguousarray(a).view(np.float64).reshape(-1, 2)
        with mpmath.workprec(400):
            return [mpmath.mpf(float(h)) + mpmath.mpf(float(low)) for h, low in pairs]

    return {"fn": fn, "exact": exact, "note": f"xprec {xprec.__version__}, ddouble output"}


# ------------------------------------------------------------------ candidate: quaddtype


def quad_candidate() -> dict[str, Any]:
    import numpy_quaddtype as qd

    qt = qd.QuadPrecDType()

    def chunk(z: np.ndarray) -> np.ndarray:
        rows = np.arange(z.shape[0])
        j = z.argmax(axis=1)
        d = z.astype(qt) - z[rows, j][:, None].astype(qt)
        e = np.exp(d)
        e[rows, j] = 0
        return d - np.log1p(e.sum(axis=1, keepdims=True))

    def fn(z: np.ndarray) -> np.ndarray:
        return by_chunks(z, np.empty(z.shape, dtype=qt), chunk)

    def exact(a: np.ndarray) -> list[mpmath.mpf]:
        # str() gives 36 significant digits: within 1e-35 relative, all the digits the
        # ulp measure needs (also beyond float64's range, where a float64 split fails)
        with mpmath.workprec(400):
            return [mpmath.mpf(str(v)) for v in a.ravel()]

    version = getattr(qd, "__version__", "?")
    return {"fn": fn, "exact": exact,
            "note": f"numpy-quaddtype {version} (backend sleef, {qd.get_num_threads()} threads),"
                    " quad output"}


# ------------------------------------------------------------------ candidate: numba


def numba_candidate() -> dict[str, Any]:
    """The fast tier with its compiled engine (xentcheck.references.fast.jit)."""
    import numba

    from xentcheck.references import fast
    from xentcheck.references.fast import jit

    def fn(z: np.ndarray) -> np.ndarray:
        with jit.engine("numba"):
            return fast.log_softmax(z)

    start = time.perf_counter()
    fn(np.array([[0.0, 1.0, -2.0]]))  # compiles, or loads the cached machine code
    compile_s = time.perf_counter() - start
    return {"fn": fn, "exact": ld_parts, "compile_s": compile_s,
            "note": f"numba {numba.__version__}, 1 thread, longdouble output"}


CANDIDATES: dict[str, Callable[[], dict[str, Any]]] = {
    "fast": fast_candidate,
    "xprec": xprec_candidate,
    "quaddtype": quad_candidate,
    "numba": numba_candidate,
}


# ------------------------------------------------------------------ accuracy


def ulp64(x: mpmath.mpf) -> mpmath.mpf:
    """float64's spacing at |x| (tests/references/test_fast.py's ulp64)."""
    if x == 0:
        return mpmath.ldexp(1, -1074)
    e = int(mpmath.floor(mpmath.log(abs(x), 2)))
    return mpmath.ldexp(1, max(e, -1022) - 52)


def truth(row: np.ndarray, cols: np.ndarray) -> list[mpmath.mpf]:
    """log_softmax of one float64 row at ``cols``: (z_i - m) - log1p(s), s without the argmax;
    terms more than 120 below the runner-up (below 1e-52 of s) are left out of s."""
    j = int(row.argmax())
    rest = np.delete(row, j)
    second = rest.max()
    with mpmath.workdps(40):
        m = mpmath.mpf(float(row[j]))
        s = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - m) for v in rest if v >= second - 120)
        lp = mpmath.log1p(s)
        return [(mpmath.mpf(float(row[c])) - m) - lp for c in cols]


def sample_cols(row: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    order = np.argsort(row)
    cols = np.concatenate([rng.choice(row.size, SAMPLE, replace=False),
                           [order[-1], order[-2], order[0]]])
    return np.unique(cols)


def max_ulp(got: list[mpmath.mpf], should: list[mpmath.mpf]) -> float:
    worst = 0.0
    with mpmath.workprec(400):
        for g, x in zip(got, should, strict=True):
            worst = max(worst, float(abs(g - x) / ulp64(x)))
    return worst


# ------------------------------------------------------------------ driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="(8, 131072) only")
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES), help="candidates")
    args = parser.parse_args()

    load_start = os.getloadavg()
    result: dict[str, Any] = {"machine": platform.processor() or platform.machine(),
                              "cpus": os.cpu_count(), "numpy": np.__version__,
                              "load_start": load_start, "candidates": {}, "rows": []}
    cands: dict[str, dict[str, Any]] = {}
    for name in args.only:
        try:
            cands[name] = CANDIDATES[name]()
            info = {"note": cands[name]["note"]}
            if "compile_s" in cands[name]:
                info["compile_s"] = round(cands[name]["compile_s"], 3)
            result["candidates"][name] = info
        except Exception as exc:  # a missing or broken library is a finding
            result["candidates"][name] = {"unavailable": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: unavailable ({exc})", file=sys.stderr)

    shapes = SHAPES[:1] if args.quick else SHAPES
    slow: set[tuple[str, float]] = set()  # (candidate, scale) below SLOW on (8, K)
    table = []
    for shape in shapes:
        for scale in SCALES:
            z = logits(shape, scale)
            picked = (0, shape[0] - 1) if shape[0] <= 8 else (shape[0] // 2 - 1, shape[0] - 1)
            cols = {r: sample_cols(z[r], r) for r in picked}
            should = {r: truth(z[r], cols[r]) for r in picked}
            fast_digest = None
            for name, cand in cands.items():
                # the baseline again just before each candidate: the load drifts
                np_wall, np_cpu, _ = best_of(args.repeats, lambda z=z: numpy_log_softmax(z))
                big = shape[0] > 8
                single = big and (name, scale) in slow
                wall, cpu, out = best_of(1 if single else args.repeats,
                                         lambda z=z, f=cand["fn"]: f(z), warm=not single)
                if not big and np_wall / wall < SLOW:
                    slow.add((name, scale))
                ulps = max(max_ulp(cand["exact"](out[r, cols[r]]), should[r]) for r in picked)
                dig = digest(out)
                if name == "fast":
                    fast_digest = dig
                same = None if dig is None or fast_digest is None else dig == fast_digest
                del out
                row = {"candidate": name, "shape": list(shape), "scale": scale,
                       "seconds": wall, "numpy_seconds": np_wall, "ratio": np_wall / wall,
                       "cpu_seconds": cpu, "numpy_cpu_seconds": np_cpu,
                       "cpu_ratio": np_cpu / cpu, "max_ulp": ulps,
                       "bitwise_same_as_fast": same,
                       "timed_runs": 1 if single else args.repeats,
                       "load_now": os.getloadavg()[0]}
                result["rows"].append(row)
                table.append([name, f"{shape}", f"{scale:g}", f"{wall:.4g}", f"{np_wall:.4g}",
                              f"{row['ratio']:.3f}", f"{cpu:.4g}", f"{row['cpu_ratio']:.3f}",
                              f"{ulps:.3g}", "-" if same is None else same,
                              row["timed_runs"], f"{row['load_now']:.2f}"])
                print(tabulate([table[-1]], tablefmt="plain"), file=sys.stderr, flush=True)
    result["load_end"] = os.getloadavg()

    print(tabulate(table, headers=["candidate", "shape", "scale", "wall s", "numpy wall s",
                                   "ratio", "cpu s", "cpu ratio", "max ulp", "= fast",
                                   "runs", "load"]))
    print()
    for name, info in result["candidates"].items():
        print(f"{name}: {info}")
    print(f"load average start {load_start}, end {result['load_end']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
