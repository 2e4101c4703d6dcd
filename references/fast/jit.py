"""The fast tier's compiled engine: row extremes, row sums and log_softmax, with numba.

Where numba is installed (``pip install numba``; x86-64 with x87 longdouble), the
passes that dominate :func:`xentcheck.references.fast.log_softmax` and the other outputs of
float64 logits run as compiled loops instead of NumPy block operations. They compute the
same thing operation for operation, so the outputs are **bitwise the same** with and
without numba (``tests/references/test_fast_jit.py`` checks it on every regime):

* the row sums (:meth:`_Extended.sums <xentcheck.references.fast.extended._Extended.sums>`,
  and :meth:`_Plain.sums <xentcheck.references.fast.plain._Plain.sums>` in the float64 work):
  d = z - m as an exact pair, exp(d) 2**128 with the table kernel of
  :mod:`~xentcheck.references.fast.kernels` (the same float64 operations in the same
  order, none fused: numba does not contract a product and a sum into an FMA unless told
  to), then the pieces on the row grids of
  :func:`~xentcheck.references.fast.doubledouble._grid_sigmas`, whose sums are exact in
  any order (the compiled loop counts each piece in units of its grid, an exact int64
  read off the bits of the piece plus its grid's constant, and adds the counts: the sum
  NumPy's float64 additions of the same pieces give);
* log_softmax off the argmax: the double-double (z - M) or (d - L) of
  :meth:`_Extended.log_softmax <xentcheck.references.fast.extended._Extended.log_softmax>`
  with the same operations, rounded once to longdouble; both engines round correctly, so
  they agree;
* the row extremes of finite logits (argmax, max, min, the largest entry off the argmax)
  in one pass on integer keys of the values, where NumPy takes four.

Everything else (log1p of the sums, special rows, the argmax entries, what goes to gold)
stays in NumPy and is shared. ``XENTCHECK_FAST_ENGINE=numpy`` (or
:func:`engine`) turns the compiled engine off, ``numba`` uses it for every input; the
default, ``auto``, for inputs of :data:`MIN_ELEMENTS` logits and more. numba's
compilation (a few seconds, once per machine: the machine code is cached on disk)
happens on first use.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from xentcheck.references.fast.kernels import _CLAMP, _S, _tables

#: "auto" (numba where it is installed), "numba" or "numpy"; :func:`engine` changes it.
_CHOICE = os.environ.get("XENTCHECK_FAST_ENGINE", "auto").strip().lower() or "auto"
if _CHOICE not in ("auto", "numba", "numpy"):
    raise ValueError(f"XENTCHECK_FAST_ENGINE must be auto, numba or numpy, got {_CHOICE!r}")

#: With "auto", the compiled engine takes inputs of at least this many logits: loading it
#: costs a process about 150 MB and a second (numba's compiler, even for cached code), paid
#: back on a million logits (an LLM batch's block, the benchmark's (8, 131072)); smaller
#: inputs stay with NumPy. The choice changes no output bit, only the time.
MIN_ELEMENTS = 1 << 20
#: Stands for an array a kernel does not write (the terms, where they are not kept).
_NONE = np.empty((1, 1))


@contextlib.contextmanager
def engine(name: str) -> Iterator[None]:
    """Run the fast tier with engine ``name`` ("auto", "numba" or "numpy") inside the
    block (``"numba"`` raises ImportError where numba cannot be loaded)."""
    global _CHOICE
    if name not in ("auto", "numba", "numpy"):
        raise ValueError(f"engine must be auto, numba or numpy, got {name!r}")
    if name == "numba" and _kernels() is None:
        raise ImportError("the compiled engine needs numba and x87 longdouble")
    before, _CHOICE = _CHOICE, name
    try:
        yield
    finally:
        _CHOICE = before


def active() -> str:
    """The engine in use now: ``"numba"`` or ``"numpy"``."""
    return "numpy" if _CHOICE == "numpy" or _kernels() is None else "numba"


def usable(ext: Any) -> bool:
    """Whether the compiled engine runs for this evaluator: float64 or float32 logits, and
    with "auto" at least :data:`MIN_ELEMENTS` of them (numba is not even imported below)."""
    n, k = ext.shape
    if _CHOICE == "numpy" or getattr(ext, "zl", None) is not None or k == 0:
        return False
    if _CHOICE == "auto" and n * k < MIN_ELEMENTS:
        return False
    return _kernels() is not None


def elementwise(size: int) -> Any:
    """The compiled elementwise loops of :mod:`xentcheck.references.portable`
    (:mod:`xentcheck.references._portable_jit`) for an array of ``size`` values under
    the engine choice, or None (NumPy's bits either way)."""
    if _CHOICE == "numpy" or (_CHOICE == "auto" and size < MIN_ELEMENTS):
        return None
    return _portable_kernels()


@functools.cache
def _portable_kernels() -> Any:
    try:
        from xentcheck.references import _portable_jit
    except ImportError:
        return None
    return _portable_jit


@functools.cache
def _kernels() -> Any:
    """The compiled kernels, or None without numba (or without x87 longdouble)."""
    if np.finfo(np.longdouble).nmant != 63 or np.dtype(np.longdouble).itemsize != 16:
        return None
    try:
        from xentcheck.references.fast import _jit_kernels
    except ImportError:
        return None
    return _jit_kernels


#: Per logits dtype: the integers of its bits, their magnitude mask, its exponent mask.
_BITS = {np.dtype(np.float64): (np.int64, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000),
         np.dtype(np.float32): (np.int32, 0x7FFF_FFFF, 0x7F80_0000)}


def _from_keys(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The values of row_extremes' keys (a key >= 0 is the value's bits; -(bits of |x|)
    below)."""
    ints = _BITS[dtype][0]
    bits = np.where(keys >= 0, keys, (-keys) | np.iinfo(ints).min)
    return bits.astype(ints).view(dtype)


def finite_row_extremes(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """For C-contiguous float64 or float32 logits (N, K), every entry finite, where the
    engine choice takes an input this large: per row the argmax (the first, as
    ``np.argmax``), the smallest entry (in ``a``'s dtype; a zero as +0) and the largest
    entry off the argmax (float64; -inf where a row has one entry), in one compiled pass.
    None otherwise: the caller takes NumPy's way."""
    if a.ndim != 2 or a.dtype not in _BITS or not a.flags.c_contiguous or not a.size:
        return None
    if _CHOICE == "numpy" or (_CHOICE == "auto" and a.size < MIN_ELEMENTS):
        return None
    kernels = _kernels()
    if kernels is None:
        return None
    ints, mag, ones = _BITS[a.dtype]
    n, k = a.shape
    j, low, second = (np.empty(n, np.int64) for _ in range(3))
    blocks = np.empty((n, k // kernels._B + 1), np.int64)
    if not kernels.row_extremes(a.view(ints), mag, ones, j, low, second, blocks):
        return None
    with np.errstate(invalid="ignore"):
        off = np.where(second == np.iinfo(np.int64).min, -np.inf,
                       _from_keys(second, a.dtype).astype(np.float64))
    return j, _from_keys(low, a.dtype), off


def row_sums(ext: Any, sigmas: np.ndarray) -> np.ndarray:
    """The grid accumulations (L, N) of exp(d) 2**_S off the argmax, for an
    :class:`~xentcheck.references.fast.extended._Extended` of float64 logits; where
    ``ext.eh`` and ``ext.el`` are arrays, the terms are kept there."""
    k = _kernels()
    tab = _tables()
    z = np.ascontiguousarray(ext.zh, dtype=np.float64)
    acc = np.zeros(sigmas.shape)
    k.row_sums(z, np.ascontiguousarray(ext.mh, dtype=np.float64), ext.j.astype(np.int64),
               np.ascontiguousarray(sigmas), bool(ext.clamp), _CLAMP, _S, tab.inv, tab.c1,
               tab.c2, acc, ext.eh is not None,
               *((ext.eh, ext.el) if ext.eh is not None else (_NONE, _NONE)))
    return acc


def plain_row_sums(ext: Any, sigmas: np.ndarray, shift: int) -> np.ndarray:
    """The grid accumulations (L, N) of exp(d) off the argmax in the float64 work, for a
    :class:`~xentcheck.references.fast.plain._Plain` (the terms kept in ``ext.e`` where
    that is an array; ``shift``: plain._PLAIN_S)."""
    k = _kernels()
    tab = _tables()
    z = np.ascontiguousarray(ext.z)
    acc = np.zeros(sigmas.shape)
    k.plain_row_sums(z, np.ascontiguousarray(ext.m, dtype=np.float64), ext.j.astype(np.int64),
                     np.ascontiguousarray(sigmas), _CLAMP, shift, tab.inv, tab.c1, tab.c2,
                     acc, ext.e is not None,
                     ext.e if ext.e is not None else _NONE)
    return acc


def log_softmax_into(ext: Any, big_h: np.ndarray, big_l: np.ndarray, fused: np.ndarray,
                     lh: np.ndarray, ll: np.ndarray, out: np.ndarray) -> None:
    """log_softmax off the argmax into the longdouble array ``out`` (N, K): (z - M)
    rounded once where ``fused`` (M = big_h + big_l = m + L), else (d - L)."""
    k = _kernels()
    z = np.ascontiguousarray(ext.zh, dtype=np.float64)
    k.log_softmax_rows(z, np.ascontiguousarray(ext.mh, dtype=np.float64), big_h, big_l,
                       fused, lh, ll, bool(ext.clamp), out.view(np.int64))
