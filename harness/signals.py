"""SIGTERM as an exception, so that an ended run cleans up like an interrupted one.

Python turns SIGINT into ``KeyboardInterrupt``, which unwinds the stack and runs every
``finally`` (workers' process groups killed, staging folders removed, a report set left
whole). :func:`raise_on_sigterm` does the same for SIGTERM with :class:`Terminated`; the
CLI and every ``--jobs`` process install it.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

__all__ = ["Terminated", "raise_on_sigterm"]


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM (a ``BaseException``, like
    ``KeyboardInterrupt``: no ``except Exception`` swallows it)."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def raise_on_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` here; the previous handler (to restore), or
    None where signals cannot be set (not the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, _raise)
    except ValueError:
        return None
