"""Keep freed memory in the process during a run (glibc's allocator only).

By default glibc gives an array of more than a few megabytes its own mapping, returns it
to the operating system when the array is freed, and the next array of that size is
faulted in again page by page. A block of an LLM batch (16 rows of 131072 logits) makes
dozens of such float64 temporaries per graded output, so on a (256, 131072) batch a sixth
of the run was the kernel zeroing pages. Raising the mapping threshold to its maximum
lets those temporaries reuse one another's pages, and the heap is never trimmed: a block
frees about 800 MB at the top of the heap when it ends, and a trim threshold of 512 MB
gave those pages back after every block, for the next one to fault them in again
(a fifth of a ``--jobs 2`` run's CPU time was then the kernel's). A process thus keeps
its high-water mark, which is its peak in any case. It changes no result, only where the allocator
takes memory from (measured in ``benchmarks/run.py``).

Every process that grades or calls a candidate applies it: the CLI, each ``--jobs``
process (a fresh interpreter: settings are not inherited) and each adapter's worker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: glibc's largest accepted mapping threshold on 64-bit systems (32 MiB).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Freed memory kept at the top of the heap before it is given back: -1 is never
#: (mallopt(3)).
TRIM_THRESHOLD = -1
#: How much more the heap grows by than an allocation asks (fewer, larger extensions).
TOP_PAD = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says; False where it is not glibc (or
    it refused), which only costs speed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all([mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD), mallopt(_M_TOP_PAD, TOP_PAD)])
