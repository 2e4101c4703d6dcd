"""mpmath's working precision, set locally: results never depend on the caller's setting.

mpmath keeps one global working precision (``mpmath.mp.prec``, 53 bits by default). A
user's ``conftest.py`` that sets ``mpmath.mp.dps = 10`` would otherwise round every float
turned into an ``mpf`` to 34 bits, and a caller at 2000 bits would make every step
outside an explicit ``workprec`` block cost more and round differently. Every public
function of :mod:`references` that touches mpmath, and the harness's exact-value engine
(:class:`xentcheck.harness.truth.Truth`), runs under :func:`standard_precision`: at
:data:`STANDARD_BITS` whatever the global setting, raising it locally where it needs more
(``with mpmath.workprec(...)``), and leaving the caller's setting as it found it.

>>> import mpmath
>>> @standard_precision
... def third():
...     return mpmath.mpf(1) / 3
>>> with mpmath.workdps(5):
...     float(third()) == 1 / 3
True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import mpmath

__all__ = ["STANDARD_BITS", "standard_precision"]

#: The precision everything runs at outside its own ``workprec`` blocks: mpmath's default,
#: so that a caller who never changed it sees exactly what they always saw.
STANDARD_BITS = 53

F = TypeVar("F", bound=Callable[..., Any])


def standard_precision(function: F) -> F:
    """Decorate ``function`` to run at :data:`STANDARD_BITS`, whatever the caller set."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with mpmath.workprec(STANDARD_BITS):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
