"""numba's options for every compiled loop of the references (a leaf: imports nothing of the
package, so both loop modules and the engine choice can import it without a cycle).

The machine code is cached on disk (beside the module, or in the user's cache folder where
that is read-only); ``XENTCHECK_JIT_CACHE=0`` compiles afresh (so that the code can be
inspected: the tests read it for FMAs).
"""

from __future__ import annotations

import os
from typing import Any

NJIT_OPTIONS: dict[str, Any] = {"cache": os.environ.get("XENTCHECK_JIT_CACHE", "1") != "0",
                                "error_model": "numpy", "boundscheck": False}
