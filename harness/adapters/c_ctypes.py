"""Built-in adapters ``c`` and ``c-seed``, and users' C adapters (``c:path/to/file.c|.so``).

C code is compiled on first use with the system compiler (``$CC``, else ``cc``, ``gcc`` or
``clang``) as ``-O2 -fPIC -shared`` (never ``-ffast-math``) into a cache directory
(``$XDG_CACHE_HOME/xentcheck`` or ``~/.cache/xentcheck``), keyed by a hash of everything
the compiler reads (the preprocessed source: every included header and macro), the flags
and the compiler, and called through ctypes. The C signatures are
those of ``csrc/xentcheck.h``; a library is bound to whichever of them it defines.

- ``c`` (:func:`load`): ``csrc/xentcheck_ref.c``, the careful reference in C; every
  function of the contract, float64 and float32. Its object also carries the seed's
  ``softmax_cross_entropy_loss_derivative`` as an extra attribute (see :class:`CAdapter`).
- ``c-seed`` (:func:`load_seed`): the seed's function as a candidate: its only contract
  function is ``cross_entropy_grad`` = the seed's ``p − y`` applied to the C softmax.
- :func:`load_user`: a user's ``.c`` file (compiled the same way, with ``xentcheck.h`` on
  the include path) or a prebuilt shared library.

Arrays are passed as C-contiguous NumPy buffers of the case's dtype (copied only when not
already contiguous, so an input written to by C code stays visible to the harness's
mutation check); float16 and bfloat16 are refused, never upcast. Shapes are checked
before any pointer reaches C. A nonzero status from C raises :class:`ValueError`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import AdapterUnavailable

CSRC = Path(__file__).resolve().with_name("csrc")
HEADER = CSRC / "xentcheck.h"
REFERENCE_SOURCE = CSRC / "xentcheck_ref.c"

#: Flags for every C adapter: optimised, position-independent, shared; IEEE semantics kept.
CFLAGS: tuple[str, ...] = ("-O2", "-fPIC", "-shared")
#: Extra flags for the built-in only: no fused multiply-add contraction, so its results are
#: the same on every platform (its accuracy argument does not rely on contraction).
REFERENCE_CFLAGS: tuple[str, ...] = ("-ffp-contract=off",)

#: Status codes of xentcheck.h.
STATUS_MESSAGES: dict[int, str] = {
    1: "class index outside [0, K)",
    2: "negative probability or target mass",
    3: "out of memory",
    4: "negative n or k",
}

SEED_SYMBOL = "softmax_cross_entropy_loss_derivative"

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_FLOAT_DTYPES = {np.dtype(np.float64): "", np.dtype(np.float32): "_f32"}
_DTYPE_NAMES = ("float64", "float32")

# symbol base -> what its pointer arguments are: logits/probs (x), int64 targets (t),
# same-dtype targets (y); every function ends with (out, n, k) and returns int.
_LAYOUTS: dict[str, str] = {
    "xc_logsumexp": "x",
    "xc_softmax": "x",
    "xc_log_softmax": "x",
    "xc_softmax_jacobian": "x",
    "xc_cross_entropy": "xt",
    "xc_cross_entropy_grad": "xt",
    "xc_cross_entropy_probs": "xy",
    "xc_cross_entropy_grad_probs": "xy",
    "xc_cross_entropy_from_probs": "xy",
    "xc_cross_entropy_grad_wrt_probs": "xy",
}


# contract function -> the symbol bases that provide it (either is enough)
_CONTRACT_SYMBOLS: dict[str, tuple[str, ...]] = {
    "logsumexp": ("xc_logsumexp",),
    "softmax": ("xc_softmax",),
    "log_softmax": ("xc_log_softmax",),
    "softmax_jacobian": ("xc_softmax_jacobian",),
    "cross_entropy": ("xc_cross_entropy", "xc_cross_entropy_probs"),
    "cross_entropy_grad": ("xc_cross_entropy_grad", "xc_cross_entropy_grad_probs"),
    "cross_entropy_from_probs": ("xc_cross_entropy_from_probs",),
    "cross_entropy_grad_wrt_probs": ("xc_cross_entropy_grad_wrt_probs",),
}


class CAdapterError(AdapterUnavailable):
    """A C adapter cannot be built or bound (compile error, no xentcheck symbol, no file)."""


# -- compiling ---------------------------------------------------------------------------


def find_compiler() -> list[str]:
    """The compiler command: ``$CC`` (may carry arguments), else cc, gcc or clang on PATH."""
    configured = os.environ.get("CC", "").strip()
    if configured:
        argv = shlex.split(configured)
        executable = shutil.which(argv[0])
        if executable is None:
            raise AdapterUnavailable(
                f"no C compiler found (set CC): CC={configured!r} is not an executable"
            )
        return [executable, *argv[1:]]
    for candidate in ("cc", "gcc", "clang"):
        executable = shutil.which(candidate)
        if executable is not None:
            return [executable]
    raise AdapterUnavailable("no C compiler found (set CC)")


def cache_dir() -> Path:
    """Where compiled libraries are kept: ``$XDG_CACHE_HOME/xentcheck`` or ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xentcheck"


def _compiler_version(compiler: list[str]) -> str:
    """The first line of ``compiler --version`` ("" when it says nothing)."""
    try:
        probe = subprocess.run(
            [*compiler, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = (probe.stdout or probe.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def _writable_folder() -> Path:
    """The cache folder, created; a private temporary folder when it cannot be written."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"xentcheck-{os.getuid()}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    return fallback


def compile_library(source: str | os.PathLike[str], *, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile ``source`` into the cache (once per preprocessed source, flags and compiler).

    Raises AdapterUnavailable when there is no compiler and CAdapterError (with the
    compiler's messages) when compilation fails.
    """
    return _compile(Path(source), extra_flags)[0]


def _run_compiler(command: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CAdapterError(f"could not run the C compiler {command[0]}: {exc}") from exc
    if done.returncode != 0:
        messages = (done.stderr or done.stdout).strip()
        raise CAdapterError(f"{what} failed ({shlex.join(command)}):\n{messages[-4000:]}")
    return done


def _compile(source: Path, extra_flags: tuple[str, ...]) -> tuple[Path, str]:
    """(library path, compiler version) for ``source``, compiling when not cached.

    The cache key is everything the compiler reads: the preprocessed source (so every
    header it includes, the user's own too, and every macro), the flags, the compiler's
    path and its version. Editing an included header therefore rebuilds the library."""
    compiler = find_compiler()
    version = _compiler_version(compiler)
    flags = (*CFLAGS, *extra_flags)
    include = ["-I", str(CSRC)]
    preprocessed = _run_compiler(
        [*compiler, *flags, *include, "-E", str(source)], f"preprocessing {source}").stdout
    digest = hashlib.sha256()
    for part in (
        preprocessed.encode(),
        " ".join(flags).encode(),
        os.path.realpath(compiler[0]).encode(),
        " ".join(compiler[1:]).encode(),
        version.encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    name = f"{source.stem}-{digest.hexdigest()[:20]}.so"
    target = cache_dir() / name
    if not target.exists():
        target = _writable_folder() / name
    if not target.exists():
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        command = [*compiler, *flags, *include, "-o", str(partial), str(source), "-lm"]
        try:
            _run_compiler(command, f"compiling {source}")
        except CAdapterError:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)  # atomic: concurrent workers never see a partial file
    return target, version or compiler[0]


# -- binding -----------------------------------------------------------------------------


def _float_array(array: Any, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"C adapters take float64 or float32 {what}, got {array.dtype}")
    return np.ascontiguousarray(array)


def _logits_2d(array: Any, what: str = "logits") -> np.ndarray:
    x = _float_array(array, what)
    if x.ndim != 2:
        raise ValueError(f"{what} must have shape (N, K), got {x.shape}")
    return x


def _index_targets(target: np.ndarray, n: int) -> np.ndarray:
    if target.shape != (n,):
        raise ValueError(f"class-index target must have shape ({n},), got {target.shape}")
    return np.ascontiguousarray(target, dtype=np.int64)


def _prob_targets(target: np.ndarray, x: np.ndarray) -> np.ndarray:
    if target.shape != x.shape:
        raise ValueError(f"probability target must have shape {x.shape}, got {target.shape}")
    if target.dtype != x.dtype:
        raise TypeError(f"probability target must be {x.dtype} like the input, got {target.dtype}")
    return np.ascontiguousarray(target)


def _is_index_target(target: np.ndarray) -> bool:
    return target.dtype.kind in "iu"


def _one_hot(target: np.ndarray, n: int, k: int, dtype: np.dtype) -> np.ndarray:
    """Class indices as one-hot rows; out-of-range indices raise (no silent wrap-around)."""
    t = _index_targets(target, n)
    if t.size and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"class index outside [0, {k}): {t[(t < 0) | (t >= k)][0]}")
    one_hot = np.zeros((n, k), dtype)
    one_hot[np.arange(n), t] = 1
    return one_hot


class CAdapter:
    """A C library bound through ctypes; the contract functions it defines are attributes.

    Only the functions whose symbols the library defines are set on the instance (so the
    harness reports the rest as not provided); ``dtypes`` lists float64 and/or float32 as
    their symbols exist. When the library defines the seed's
    ``softmax_cross_entropy_loss_derivative``, it is exposed under that name as an extra
    attribute taking a softmax output ``p`` and a one-hot integer target of the same shape
    ((K,) or (N, K)) and returning the seed's ``p − y``: that is the derivative of the
    cross-entropy with respect to the logits, so it matches none of the contract's
    from-probabilities functions (``cross_entropy_grad_wrt_probs`` is ``−y/p``).
    """

    def __init__(
        self,
        library: Path,
        *,
        name: str,
        version: str,
        reload: tuple[Callable[..., Any], tuple[Any, ...]],
    ) -> None:
        self.name = name
        self.version = version
        self._reload = reload
        self._library_path = str(library)
        try:
            self._cdll = ctypes.CDLL(str(library))
        except OSError as exc:
            raise CAdapterError(f"cannot load the shared library {library}: {exc}") from exc
        self._symbols: dict[tuple[str, np.dtype], Any] = {}
        for base, layout in _LAYOUTS.items():
            for dtype, suffix in _FLOAT_DTYPES.items():
                function = getattr(self._cdll, base + suffix, None)
                if function is None:
                    continue
                function.restype = ctypes.c_int
                function.argtypes = [_P] * (len(layout) + 1) + [_I64, _I64]
                self._symbols[(base, dtype)] = function
        self._seed = getattr(self._cdll, SEED_SYMBOL, None)
        if self._seed is not None:
            self._seed.restype = None
            self._seed.argtypes = [_P, _P, _P, ctypes.c_int]
            self.softmax_cross_entropy_loss_derivative = self._seed_derivative
        if not self._symbols and self._seed is None:
            raise CAdapterError(
                f"{name}: the library defines none of the xentcheck C functions "
                f"({', '.join(_LAYOUTS)}, each also with _f32, or {SEED_SYMBOL}); "
                f"see {HEADER} for the signatures"
            )
        self.dtypes = tuple(
            d for d in _DTYPE_NAMES if any(key[1] == np.dtype(d) for key in self._symbols)
        )
        self._bind_contract()

    def __repr__(self) -> str:
        return f"CAdapter(name={self.name!r}, library={self._library_path!r})"

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        # ctypes handles do not pickle: a copy is the same library loaded again
        return self._reload

    def provides(self, base: str) -> bool:
        """Whether the library defines ``base`` (e.g. ``"xc_softmax"``) in some dtype."""
        return any(key[0] == base for key in self._symbols)

    # -- calling ------------------------------------------------------------------------

    def _call(self, base: str, arrays: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
        x = arrays[0]
        function = self._symbols.get((base, x.dtype))
        if function is None:
            raise NotImplementedError(
                f"{self.name} defines no {base}{_FLOAT_DTYPES[x.dtype]} for {x.dtype}"
            )
        n, k = x.shape
        out = np.empty(out_shape, x.dtype)
        status = function(*(a.ctypes.data for a in arrays), out.ctypes.data, n, k)
        if status != 0:
            reason = STATUS_MESSAGES.get(status, "error")
            raise ValueError(f"{base}{_FLOAT_DTYPES[x.dtype]} returned status {status}: {reason}")
        return out

    def _unary(self, base: str, logits: Any, out_shape: Callable[[int, int], tuple[int, ...]]):
        x = _logits_2d(logits)
        return self._call(base, [x], out_shape(*x.shape))

    def _with_target(
        self, index_base: str, probs_base: str, logits: Any, target: Any, per_row: bool
    ) -> np.ndarray:
        x = _logits_2d(logits)
        target = np.asarray(target)
        n, k = x.shape
        shape = (n,) if per_row else (n, k)
        if _is_index_target(target):
            return self._call(index_base, [x, _index_targets(target, n)], shape)
        return self._call(probs_base, [x, _prob_targets(target, x)], shape)

    def _from_probs(self, base: str, probs: Any, target: Any, per_row: bool) -> np.ndarray:
        p = _logits_2d(probs, "probs")
        target = np.asarray(target)
        n, k = p.shape
        y = (
            _one_hot(target, n, k, p.dtype)
            if _is_index_target(target)
            else _prob_targets(target, p)
        )
        return self._call(base, [p, y], (n,) if per_row else (n, k))

    def _bind_contract(self) -> None:
        for function, bases in _CONTRACT_SYMBOLS.items():
            if any(self.provides(base) for base in bases):
                setattr(self, function, getattr(self, f"_{function}"))

    # the contract functions, set on the instance by _bind_contract when provided

    def _logsumexp(self, logits: np.ndarray) -> np.ndarray:
        return self._unary("xc_logsumexp", logits, lambda n, k: (n,))

    def _softmax(self, logits: np.ndarray) -> np.ndarray:
        return self._unary("xc_softmax", logits, lambda n, k: (n, k))

    def _log_softmax(self, logits: np.ndarray) -> np.ndarray:
        return self._unary("xc_log_softmax", logits, lambda n, k: (n, k))

    def _softmax_jacobian(self, logits: np.ndarray) -> np.ndarray:
        return self._unary("xc_softmax_jacobian", logits, lambda n, k: (n, k, k))

    def _cross_entropy(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._with_target("xc_cross_entropy", "xc_cross_entropy_probs", logits, target, True)

    def _cross_entropy_grad(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._with_target(
            "xc_cross_entropy_grad", "xc_cross_entropy_grad_probs", logits, target, False
        )

    def _cross_entropy_from_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._from_probs("xc_cross_entropy_from_probs", probs, target, True)

    def _cross_entropy_grad_wrt_probs(self, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._from_probs("xc_cross_entropy_grad_wrt_probs", probs, target, False)

    def _seed_derivative(self, softmax_output: Any, target: Any) -> np.ndarray:
        """The seed, row by row: ``derivative = softmax_output − target`` (target: ints)."""
        p = np.ascontiguousarray(softmax_output, dtype=np.float64)
        y = np.asarray(target)
        if y.shape != p.shape or p.ndim not in (1, 2):
            raise ValueError(
                f"softmax_output {p.shape} and target {y.shape} must both be (K,) or (N, K)"
            )
        if y.dtype.kind not in "iub" and not np.array_equal(y, np.trunc(y)):
            raise ValueError("the seed's `int *target` holds integers (one-hot rows) only")
        info = np.iinfo(np.intc)
        if y.size and (y.min() < info.min or y.max() > info.max):
            raise ValueError("target entries do not fit the seed's C int")
        y = np.ascontiguousarray(y, dtype=np.intc)
        derivative = np.empty_like(p)
        rows_p, rows_y, rows_d = (a.reshape(-1, p.shape[-1]) for a in (p, y, derivative))
        length = p.shape[-1]
        for row_p, row_y, row_d in zip(rows_p, rows_y, rows_d, strict=True):
            self._seed(row_p.ctypes.data, row_y.ctypes.data, row_d.ctypes.data, length)
        return derivative


# -- the built-ins and users' libraries --------------------------------------------------


def _version(source: Path, compiler_version: str) -> str:
    """What the library is: the source's name and hash, and the compiler that built it."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    return f"{source.name}@{digest} ({compiler_version})"


def load() -> CAdapter:
    """The ``c`` built-in: csrc/xentcheck_ref.c compiled (once) and bound."""
    library, compiler_version = _compile(REFERENCE_SOURCE, REFERENCE_CFLAGS)
    version = _version(REFERENCE_SOURCE, compiler_version)
    return CAdapter(library, name="c", version=version, reload=(load, ()))


class SeedAdapter:
    """The ``c-seed`` built-in: the seed's C ``p − y`` as the fused gradient, float64 only.

    ``cross_entropy_grad(logits, target)`` computes p with the built-in C softmax and then
    calls ``softmax_cross_entropy_loss_derivative`` on each row with the target as one-hot
    C ints: class indices, or probability rows whose entries are integers. Soft targets
    cannot be passed through the seed's ``int *target`` and raise ValueError; integer
    targets that do not sum to 1 go through, and the seed's p − y is graded as it is.
    """

    name = "c-seed"
    dtypes = ("float64",)

    def __init__(self, reference: CAdapter) -> None:
        self._reference = reference
        self.version = reference.version

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (load_seed, ())

    def cross_entropy_grad(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        x = _logits_2d(logits)
        if x.dtype != np.float64:
            raise TypeError(f"the seed's function takes double, got {x.dtype}")
        target = np.asarray(target)
        n, k = x.shape
        if _is_index_target(target):
            y = _one_hot(target, n, k, np.dtype(np.intc))
        else:
            _prob_targets(target, x)
            if not np.array_equal(target, np.trunc(target)):
                raise NotImplementedError(
                    "the seed's `int *target` cannot hold soft (non-integer) targets")
            y = target
        p = self._reference.softmax(x)
        return self._reference.softmax_cross_entropy_loss_derivative(p, y)


def load_seed() -> SeedAdapter:
    """The ``c-seed`` built-in (the seed's function composed with the C softmax)."""
    return SeedAdapter(load())


def load_user(path: str) -> CAdapter:
    """A user's C adapter: a ``.c`` file (compiled and cached) or a prebuilt shared library.

    ``path`` may carry the ``c:`` prefix of ``--adapter c:path``. Raises AdapterUnavailable
    when a .c file needs a compiler and there is none, CAdapterError when the file is
    missing, does not compile, or defines none of the functions of xentcheck.h.
    """
    given = path
    if path.startswith("c:") and not os.path.exists(path):
        path = path[2:]
    source = Path(path)
    if not source.is_file():
        raise CAdapterError(f"C adapter {given!r}: no such file {str(source)!r}")
    name = f"c:{path}"
    if source.suffix == ".c":
        library, compiler_version = _compile(source, ())
        version = _version(source, compiler_version)
    else:
        library = source.resolve()
        version = f"{source.name} (prebuilt)"
    reload = (load_user, (os.path.abspath(path),))  # a worker may run from another folder
    return CAdapter(library, name=name, version=version, reload=reload)
