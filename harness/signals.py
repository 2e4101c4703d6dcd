"""SIGTERM as an exception, so that an ended run cleans up like an interrupted one.

Python turns SIGINT into ``KeyboardInterrupt``, which unwinds the stack and runs every
``finally`` (workers' process groups killed, staging folders removed, a report set left
whole). :func:`raise_on_sigterm` does the same for SIGTERM with :class:`Terminated`; the
CLI and every ``--jobs`` process install it. :func:`held` keeps both out of a few steps
that must not be cut apart (a process started, then recorded for cleanup).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["Terminated", "held", "raise_on_sigterm"]


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


@contextmanager
def held(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold ``signums`` while the block runs, then deliver each that arrived once, to the
    handler that was in place (raised as it would have been, only later). For steps
    that must not be cut apart: an interrupt between starting a process and recording
    it would leave that process running, never stopped. Not the main thread: nothing is
    held (signals are only handled there)."""
    arrived: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    previous: dict[int, Any] = {}
    try:
        for signum in signums:
            previous[signum] = signal.signal(signum, hold)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # (None: a handler not set from Python; the default takes its place)
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)
