"""Ctrl-C and tracebacks: the user's interrupt told apart from a plugin's.

A real Ctrl-C is told apart from a plugin's ``raise KeyboardInterrupt`` by a SIGINT handler that
notes the signal before raising (:func:`watch_interrupts`); where benchkit cannot tell (its handler
is not installed, as in a notebook) a ``KeyboardInterrupt`` is always taken as the user's.
``BENCHKIT_DEBUG=1`` (or ``benchkit --debug``) keeps tracebacks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from benchkit.errors import BenchkitError

DEBUG_ENV = "BENCHKIT_DEBUG"


class Interrupted(BenchkitError):
    """The user pressed Ctrl-C (exit code 130, as a shell reports SIGINT)."""

    exit_code = 130


def debug() -> bool:
    """Whether tracebacks are wanted (``BENCHKIT_DEBUG=1`` or ``benchkit --debug``)."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


_sigint = {"seen": False}


def _on_sigint(_signum: int, _frame: FrameType | None) -> None:
    _sigint["seen"] = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def watch_interrupts() -> Iterator[None]:
    """Note every SIGINT before it becomes a ``KeyboardInterrupt`` (main thread only), so that a
    plugin's own ``KeyboardInterrupt`` can be told from the user's Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    if before is not signal.default_int_handler and before is not _on_sigint:
        yield  # someone else's handler (or SIGINT ignored): leave it
        return
    if before is not _on_sigint:
        _sigint["seen"] = False
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def ignore_interrupts() -> None:
    """In a worker process: Ctrl-C is the driver's to handle (it stops the workers itself); a
    worker that took it too would print its own traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def users_interrupt() -> bool:
    """Whether a ``KeyboardInterrupt`` being handled now came from the user (or cannot be told
    from one): not when SIGINT is ignored here, or watched and not seen."""
    handler = signal.getsignal(signal.SIGINT)
    if handler is signal.SIG_IGN:
        return False
    if handler is _on_sigint:
        return _sigint["seen"]
    return True
