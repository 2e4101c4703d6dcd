"""Corpora: a user's own logits from a ``.npy`` or ``.npz`` file, cut into cases.

:func:`load_corpus` reads a file (checked, with one-line errors naming it) into cases of
``rows_per_case`` rows (by default as many as :data:`BLOCK_ELEMENTS` allows, at most
:data:`CORPUS_ROWS_PER_CASE`); :data:`DEFAULT_CORPUS` is the built-in MNIST logits of the
``corpus`` regime, in ``harness/data/``.

The logits are memory-mapped, not read: a ``.npy`` file, or the ``logits`` member of a
``.npz`` that is stored uncompressed (``np.savez``; ``np.savez_compressed`` members are
read whole). Cases in the file's own dtype are views of the mapping, so a (4096, 131072)
file costs no memory until a block is graded, and :func:`release` gives a graded block's
pages back.
"""

from __future__ import annotations

import functools
import mmap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from xentcheck.harness.adapters.contract import DTYPES, dtype_name
from xentcheck.harness.cases import Case
from xentcheck.harness.options import BLOCK_ELEMENTS
from xentcheck.harness.strategies.formats import _check_count, _Format, _format

#: Rows per case when :func:`load_corpus` chunks a corpus (at most).
CORPUS_ROWS_PER_CASE = 256
#: The corpus of the ``corpus`` regime when none is given: 2,500 rows of real MNIST logits
#: (float32, K = 10) with labels, from Blanchard, Higham & Higham's test data.
DEFAULT_CORPUS = Path(__file__).parent.parent / "data" / "mnist_presoftmax.npz"


class _CorpusError(ValueError):
    """A corpus file that cannot be used: one line naming the file and the problem."""


def _corpus_error(path: Path, what: str) -> _CorpusError:
    return _CorpusError(f"corpus {path}: {what}")


@functools.lru_cache(maxsize=8)
def _read_corpus_cached(
    path: str, mtime_ns: int, size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    p = Path(path)
    try:
        if p.suffix == ".npy":
            logits, labels = np.load(p, mmap_mode="r", allow_pickle=False), None
        else:
            with np.load(p, allow_pickle=False) as archive:
                if "logits" not in archive.files:
                    found = ", ".join(archive.files) or "nothing"
                    raise _corpus_error(p, f"no 'logits' array in the .npz (found: {found})")
                logits = _mapped_member(p, "logits.npy")
                if logits is None:  # compressed: read whole
                    logits = archive["logits"]
                labels = archive["labels"] if "labels" in archive.files else None
    except _CorpusError:
        raise
    except Exception as exc:  # a truncated, pickled or foreign file
        raise _corpus_error(p, f"cannot be read ({type(exc).__name__}: {exc})") from None
    if logits.ndim != 2:
        raise _corpus_error(p, f"logits must be 2-D (N, K); got shape {logits.shape}")
    if logits.dtype.kind != "f":
        raise _corpus_error(p, f"logits must be floating point; got {logits.dtype}")
    if logits.shape[1] < 1:
        raise _corpus_error(p, "logits have no classes (K = 0)")
    if labels is not None:
        if labels.dtype.kind not in "iu" or labels.shape != (logits.shape[0],):
            raise _corpus_error(
                p,
                f"labels must be integers of shape ({logits.shape[0]},); "
                f"got {labels.dtype} {labels.shape}",
            )
        bad = (labels < 0) | (labels >= logits.shape[1])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _corpus_error(p, f"label {labels[i]} of row {i} is not in [0, {logits.shape[1]})")
        labels = labels.astype(np.int64)
    return logits, labels


def _mapped_member(path: Path, name: str) -> np.ndarray | None:
    """The array of an uncompressed ``.npz`` member, memory-mapped read-only; None when the
    member is compressed (or its header is not a plain array's)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as stream:
        stream.seek(info.header_offset)
        local = stream.read(30)  # the local file header: its name and extra field follow
        if local[:4] != b"PK\x03\x04":
            return None
        skip = int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        stream.seek(info.header_offset + 30 + skip)
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            return None
        offset = stream.tell()
    if fortran or dtype.hasobject or info.file_size < offset - info.header_offset:
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset)


def release(array: np.ndarray) -> None:
    """Give back the memory pages of ``array`` where it is a view of a read-only memory
    map (a corpus block once graded: it stays readable, its pages are faulted in again
    from the file if it is read again); nothing otherwise."""
    mapped = array
    while mapped is not None and not isinstance(mapped, np.memmap):
        mapped = getattr(mapped, "base", None)
    region = getattr(mapped, "_mmap", None)
    if region is None or not hasattr(region, "madvise") or array.nbytes == 0:
        return
    start = array.ctypes.data - np.frombuffer(region, np.uint8).ctypes.data
    first = start - start % mmap.PAGESIZE
    length = min(start + array.nbytes, len(region)) - first
    if first >= 0 and length > 0:
        region.madvise(mmap.MADV_DONTNEED, first, length)


def _read_corpus(path: str | Path) -> tuple[Path, np.ndarray, np.ndarray | None]:
    p = Path(path)
    if p.suffix not in (".npy", ".npz"):
        raise _corpus_error(p, "must be a .npy file or a .npz file with 'logits'")
    if not p.is_file():
        raise _corpus_error(p, "no such file")
    stat = p.stat()
    logits, labels = _read_corpus_cached(str(p.resolve()), stat.st_mtime_ns, stat.st_size)
    return p, logits, labels


def _corpus_dtype(p: Path, logits: np.ndarray, dtype: Any) -> _Format:
    if dtype is not None:
        return _format(dtype)
    name = dtype_name(logits.dtype)
    if name not in DTYPES:
        raise _corpus_error(p, f"logits are {name}; pass dtype= one of {', '.join(DTYPES)}")
    return _format(name)


def rows_per_block(classes: int, block_elements: int = BLOCK_ELEMENTS) -> int:
    """Rows of ``classes`` logits a case holds: as many as ``block_elements`` allows, at
    least one, at most :data:`CORPUS_ROWS_PER_CASE`.

    >>> rows_per_block(10), rows_per_block(131072), rows_per_block(262144, 2**17)
    (256, 16, 1)
    """
    return max(1, min(CORPUS_ROWS_PER_CASE, block_elements // max(classes, 1)))


def load_corpus(
    path: str | Path, *, dtype: Any = None, rows_per_case: int | None = None,
    block_elements: int = BLOCK_ELEMENTS,
) -> list[Case]:
    """The logits of a ``.npy`` file, or of a ``.npz`` with ``logits`` and optional ``labels``.

    Rows are cut into cases of ``rows_per_case`` rows (by default
    :func:`rows_per_block` of the file's K and ``block_elements``), in order, cast to
    ``dtype`` (the file's own dtype by default; no copy when it is that already). Targets
    are the labels as class indices, or without labels the argmax of each row (the
    model's own prediction). Bad files raise a one-line ``ValueError`` naming the file and
    the problem.

    >>> chunks = load_corpus(DEFAULT_CORPUS)
    >>> len(chunks), sum(c.num_rows for c in chunks), chunks[0].dtype, chunks[0].target[:3]
    (10, 2500, 'float32', array([0, 0, 0]))
    """
    p, data, labels = _read_corpus(path)
    if rows_per_case is None:
        _check_count("block_elements", block_elements, 1)
        rows_per_case = rows_per_block(data.shape[1] if data.ndim == 2 else 1, block_elements)
    _check_count("rows_per_case", rows_per_case, 1)
    fmt = _corpus_dtype(p, data, dtype)
    target = labels if labels is not None else _first_argmax(data, fmt.dtype)
    out = []
    for number, start in enumerate(range(0, data.shape[0], rows_per_case)):
        stop = start + rows_per_case
        out.append(
            Case(
                # a view of the mapping in the file's dtype; another dtype, block by block
                logits=data[start:stop].astype(fmt.dtype, copy=False),
                target=target[start:stop],
                target_kind="indices",
                options={},
                dtype=fmt.name,
                regime="corpus",
                case_id=f"corpus-{fmt.name}-{p.stem}-{number}",
                origin=(
                    "xentcheck.harness.strategies."
                    f"load_corpus({str(p.resolve())!r}, dtype={fmt.name!r}, "
                    f"rows_per_case={rows_per_case})[{number}]"
                ),
            )
        )
    return out


def _first_argmax(z: np.ndarray, dtype: Any) -> np.ndarray:
    """Each row's first argmax in ``dtype`` (NaN never wins), a block of rows at a time."""
    out = np.empty(z.shape[0], np.int64)
    for start in range(0, z.shape[0], CORPUS_ROWS_PER_CASE):
        block = z[start:start + CORPUS_ROWS_PER_CASE]
        wide = block.astype(dtype).astype(np.float64)
        out[start:start + len(wide)] = np.argmax(np.where(np.isnan(wide), -np.inf, wide),
                                                 axis=1)
        release(block)
    return out
