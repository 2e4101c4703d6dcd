"""Nothing outside the candidate changes a grade: mpmath's global precision, the
floating-point environment of the grading process, the order adapters are given in, and
what an adapter's worker sends back (plain data, never unpickled)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import mpmath
import numpy as np
import pytest

import xentcheck.references as ref
from xentcheck.harness import fpenv, runner
from xentcheck.harness.adapters.isolation import ProtocolError, receive_plain, send_plain
from xentcheck.harness.adapters.registry import open_adapter
from xentcheck.references import fd

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _report(adapters: list[Any], **settings: Any) -> str:
    data = runner.run(adapters, **settings).to_dict()
    data.pop("seconds")
    # the times are measured; the calls each adapter got are not, and must match too
    data["timing"] = {name: t["calls"] for name, t in data["timing"].items()}
    return json.dumps(data, sort_keys=True)


@pytest.fixture
def restore_mpmath():
    yield
    mpmath.mp.prec = 53


SETTINGS = dict(regimes=["moderate", "dominant", "masked", "wide"], dtypes=["float64", "float32"])


@pytest.mark.parametrize("setting", ["dps=10", "prec=400"])
def test_global_mpmath_precision_changes_nothing(setting: str, restore_mpmath: None) -> None:
    """A user's conftest.py with ``mpmath.mp.dps = 10`` once made every gradient
    certificate fail (floats turned into mpf at 34 bits): the report must not move."""
    expected = _report(["numpy"], **SETTINGS)
    if setting == "dps=10":
        mpmath.mp.dps = 10
    else:
        mpmath.mp.prec = 400
    chosen = mpmath.mp.prec
    assert _report(["numpy"], **SETTINGS) == expected
    assert mpmath.mp.prec == chosen  # and the user's setting is left as it was


@pytest.mark.parametrize("setting", ["dps=5", "prec=300"])
def test_references_ignore_the_global_precision(setting: str, restore_mpmath: None) -> None:
    z = np.array([[0.1, 2.5, -3.25, 7.0], [1e5, -1e5, 3.3, 0.7]])
    t = np.array([1, 2])
    y = np.array([[0.125, 0.25, 0.125, 0.5], [0.5, 0.0, 0.25, 0.25]])

    def values() -> list[Any]:
        out = [ref.softmax(z), ref.log_softmax(z), ref.logsumexp(z), ref.softmax_jacobian(z),
               ref.cross_entropy(z, t, label_smoothing=0.1, weight=np.array([0.3, 1.7, 0.9, 1.1]),
                                 reduction="mean"),
               ref.cross_entropy(z, y, label_smoothing=0.3), ref.cross_entropy_grad(z, y),
               ref.cross_entropy_hessian(z, t), ref.cross_entropy_from_probs(y, t),
               ref.cross_entropy_grad_wrt_probs(y, t),
               ref.round_to(ref.softmax(z), "float16"),
               ref.ulp_error(np.float32([0.1]), ref.softmax(z)[0, :1])]
        estimate = fd.directional_derivative(
            lambda x: mpmath.fsum(ref.cross_entropy(x.reshape(2, 4), t, prec=mpmath.mp.prec)),
            z.reshape(-1), np.linspace(-1.0, 1.0, 8))
        out += [estimate.value, estimate.error]
        return [np.asarray(v, dtype=object).reshape(-1).tolist() for v in out]

    expected = values()
    if setting == "dps=5":
        mpmath.mp.dps = 5
    else:
        mpmath.mp.prec = 300
    assert values() == expected


def test_adapter_order_changes_no_grade() -> None:
    plain = str(FIXTURES / "plain_adapters.py")
    settings: dict[str, Any] = dict(regimes=["moderate", "masked"], dtypes=["float64"])
    forward = json.loads(_report(["numpy", "numpy-seed", plain], **settings))
    backward = json.loads(_report([plain, "numpy-seed", "numpy"], **settings))
    by_name = {a["name"]: a for a in backward["adapters"]}
    for adapter in forward["adapters"]:
        assert adapter == by_name[adapter["name"]]


# ------------------------------------------------------------ the floating-point environment

_FTZ_SOURCE = """
#include <xmmintrin.h>
#include <pmmintrin.h>
__attribute__((constructor)) static void set_ftz(void) {
    _mm_setcsr(_mm_getcsr() | _MM_FLUSH_ZERO_ON | _MM_DENORMALS_ZERO_ON);
}
void set_ftz_now(void) { set_ftz(); }
"""


@pytest.fixture(scope="module")
def fast_math_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared library that turns on flush-to-zero and denormals-are-zero when it loads,
    as one linked with -ffast-math does (crtfastmath.o)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the MXCSR flags are x86-64's")
    folder = tmp_path_factory.mktemp("ftz")
    source = folder / "ftz.c"
    source.write_text(_FTZ_SOURCE)
    library = folder / "libftz.so"
    built = subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)],
                           capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"no C compiler: {built.stderr[:200]}")
    return library


def test_the_default_environment_has_no_problems() -> None:
    assert fpenv.problems() == []
    fpenv.check()


def _subprocess(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_flush_to_zero_in_the_grading_process_is_refused(fast_math_library: Path) -> None:
    """Loaded before the run (LD_PRELOAD): exit 2, one line, nothing graded."""
    done = _subprocess(f"""
        import sys
        from xentcheck.harness import cli
        sys.exit(cli.main(["run", "--adapter", "numpy", "--regime", "moderate",
                           "--dtype", "float64", "--out", {str(fast_math_library.parent / 'o')!r}]))
        """, env={"LD_PRELOAD": str(fast_math_library)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "flush-to-zero is on" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (fast_math_library.parent / "o" / "conformance.json").exists()


def test_an_in_process_adapter_that_turns_on_flush_to_zero_is_caught(
        fast_math_library: Path) -> None:
    done = _subprocess(f"""
        import ctypes
        import numpy as np
        from xentcheck.harness import runner
        from xentcheck.harness.fpenv import FloatingPointEnvironmentError
        from xentcheck.harness.adapters import numpy_stable

        class FastMath:
            name = "fast-math"
            def softmax(self, logits):
                ctypes.CDLL({str(fast_math_library)!r})  # a library loaded on first use
                return numpy_stable.softmax(logits)

        try:
            runner.run([FastMath()], regimes=["moderate"], dtypes=["float64"])
        except FloatingPointEnvironmentError as err:
            print(err)
        else:
            print("graded")
        """)
    assert "by the in-process adapter 'fast-math'" in done.stdout, done.stdout + done.stderr
    assert "flush-to-zero" in done.stdout


def test_a_changed_rounding_direction_is_refused() -> None:
    done = _subprocess("""
        import ctypes, ctypes.util
        from xentcheck.harness import fpenv
        libm = ctypes.CDLL(ctypes.util.find_library("m"))
        libm.fesetround(0x800)  # FE_UPWARD on x86-64 (glibc)
        print(fpenv.problems())
        """)
    assert "rounding direction" in done.stdout, done.stdout + done.stderr


# --------------------------------------------------------------- what comes back from a worker


def test_an_ndarray_subclass_is_wrong_type_and_never_unpickled(tmp_path: Path) -> None:
    """The worker refuses to send anything but plain arrays: a subclass (whose unpickling
    could run code in the grading process) is reported as wrong-type."""
    marker = tmp_path / "ran-in-the-parent"
    adapter = tmp_path / "subclass_adapter.py"
    adapter.write_text(textwrap.dedent(f"""
        import numpy as np

        class Sneaky(np.ndarray):
            def __reduce__(self):
                import pathlib
                return (pathlib.Path({str(marker)!r}).touch, ())

        def softmax(logits):
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            return (e / e.sum(axis=1, keepdims=True)).view(Sneaky)

        def log_softmax(logits):
            return np.asmatrix(logits - logits.max(axis=1, keepdims=True))
        """))
    with open_adapter(str(adapter)) as handle:
        z = np.array([[1.0, 2.0, 3.0]])
        for function in ("softmax", "log_softmax"):
            outcome = handle.call(function, z)
            assert outcome.fault is not None and outcome.fault.kind == "wrong-type", outcome
            assert outcome.value is None
            assert "subclass" in outcome.fault.reason
    assert not marker.exists()


def _pipe_round_trip(payload: bytes, timeout: float = 2.0) -> Any:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, payload)
        os.close(write_fd)
        write_fd = -1
        return receive_plain(read_fd, timeout)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def _encoded(obj: Any) -> bytes:
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb", buffering=0) as writer:
        send_plain(writer, obj)
    with os.fdopen(read_fd, "rb") as reader:
        return reader.read()


def test_plain_replies_round_trip() -> None:
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = _pipe_round_trip(_encoded({"value": value, "faults": [{"kind": "raised"}]}))
    assert got["faults"] == [{"kind": "raised"}]
    assert got["value"].dtype == np.float32 and got["value"].tolist() == value.tolist()
    assert got["value"].flags.writeable
    scalar = _pipe_round_trip(_encoded({"value": np.float64(2.5)}))["value"]
    assert scalar.shape == () and float(scalar) == 2.5


@pytest.mark.parametrize("tamper, message", [
    (lambda b: b[:24] + b"x" + b[25:], "not JSON"),  # the header's first byte
    (lambda b: b[:16] + b"\0" + b[17:], "shared region"),  # an offset, with no region
    (lambda b: b.replace(b'"float64"', b'"object!"'), "dtype"),
    (lambda b: b.replace(b'"shape":[2]', b'"shape":[3]'), "shape"),
    (lambda b: (2**31).to_bytes(4, "little") + b[4:], "header bytes"),
])
def test_malformed_replies_are_protocol_errors(tamper: Any, message: str) -> None:
    good = _encoded({"value": np.array([1.0, 2.0])})
    with pytest.raises(ProtocolError, match=message):
        _pipe_round_trip(tamper(good))


def test_a_partial_reply_times_out_like_silence() -> None:
    good = _encoded({"value": np.arange(1000.0)})
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, good[: len(good) // 2])  # half a message, and the writer stays
        with pytest.raises(TimeoutError):
            receive_plain(read_fd, 0.5)
    finally:
        os.close(read_fd)
        os.close(write_fd)
