"""The grading process's floating-point environment: IEEE defaults, or no verdict.

The references, the stability bounds and the ulp measurements are written for IEEE 754
round-to-nearest with gradual underflow. A library that changes the environment of the
process it is loaded in (anything built with ``-ffast-math`` sets flush-to-zero and
denormals-are-zero when it loads; ``fesetround`` changes the rounding direction) would
silently change every figure, and flip correct candidates to ``fail``. Candidates loaded
from a spec run in worker processes, whose environment is theirs; this module checks the
grading process's own, with operations whose IEEE results are known exactly, on Python
floats and on NumPy arrays (both use the SSE/NEON unit whose control register holds these
modes), at the start of a run and after every in-process adapter call.

>>> problems()
[]
"""

from __future__ import annotations

import numpy as np

__all__ = ["FloatingPointEnvironmentError", "check", "problems"]


class FloatingPointEnvironmentError(RuntimeError):
    """The process's floating-point environment is not the IEEE default; the one-line
    message says what changed."""


# Operands as data, not literals: Python folds constant expressions when it compiles.
_OPERANDS = {"half": 0.5, "one": 1.0, "tiny": 2.0**-1022, "subnormal": 2.0**-1074,
             "below_half_ulp": 2.0**-53, "quarter_ulp": 2.0**-54}


def problems() -> list[str]:
    """What differs from the IEEE default environment, one phrase each (empty when none)."""
    v = dict(_OPERANDS)
    found = []
    array = np.array([v["tiny"], v["subnormal"], v["one"], -v["one"]])
    # flush-to-zero: a result below the normal range becomes 0
    if v["tiny"] * v["half"] == 0.0 or (array[:1] * v["half"])[0] == 0.0:
        found.append("flush-to-zero is on (subnormal results become 0)")
    # denormals-are-zero: a subnormal operand reads as 0 (in a comparison too, which
    # flush-to-zero alone leaves alone)
    if not v["subnormal"] > 0.0 or not (array[1:2] > 0.0)[0]:
        found.append("denormals-are-zero is on (subnormal inputs read as 0)")
    # rounding direction: 1 + 2**-53 is a tie (to even: 1); 1 - 2**-54 and -1 - 2**-54
    # round to +-1 only under round-to-nearest
    up = v["one"] + v["below_half_ulp"] != v["one"]
    down = v["one"] - v["quarter_ulp"] != v["one"]
    neg_down = -v["one"] - v["quarter_ulp"] != -v["one"]
    ties = (array[2:3] + v["below_half_ulp"])[0] != v["one"]
    if up or down or neg_down or ties:
        found.append("the rounding direction is not round-to-nearest")
    return found


def check(when: str = "") -> None:
    """Raise :class:`FloatingPointEnvironmentError` if :func:`problems` finds anything."""
    found = problems()
    if found:
        where = f" {when}" if when else ""
        raise FloatingPointEnvironmentError(
            f"the floating-point environment of the grading process was changed{where}: "
            f"{'; '.join(found)} (a library built with -ffast-math, or fesetround); "
            "grades would be wrong, so nothing is graded")
