"""Stopping a long-running command (``meshwasm up``) on SIGTERM or Ctrl-C, at points it chooses.

A signal handler that raises ``KeyboardInterrupt`` interrupts the main thread wherever it happens
to be, and some of those places lose or break things:

- inside a finalizer (``__del__``, a generator closed by the garbage collector), where Python
  prints "Exception ignored" and drops the exception: the stop request is lost and ``up`` goes on
  starting, then serves forever;
- between a lock's ``acquire`` and the ``try`` that releases it, or between starting a child
  process and remembering it;
- inside the cleanup the first signal started, when a second signal arrives.

So the handler here only records the request. The command's waits call :func:`check` (every
:func:`meshwasm.net.wait_until` round, the serve loop, between start-up steps), which raises
:class:`StopRequested` there; once :func:`begin_cleanup` has been called nothing is raised any
more, so the cleanup runs to its end however many signals follow. Every wait is bounded, so a
stop is noticed within a polling interval (or, during a module fetch, at the fetch's deadline).
"""

from __future__ import annotations

import signal
from types import FrameType


class StopRequested(KeyboardInterrupt):
    """SIGTERM or SIGINT asked the command to stop (raised by :func:`check`, never by a handler)."""


_requested: int | None = None  # the first signal received; plain assignment is all a handler does
_cleaning = False


def _record(signum: int, _frame: FrameType | None) -> None:
    global _requested
    if _requested is None:
        _requested = signum


def install(signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Record ``signals`` instead of acting on them (SIGINT too when a shell started the command
    in the background with SIGINT ignored)."""
    global _requested, _cleaning
    _requested, _cleaning = None, False
    for sig in signals:
        signal.signal(sig, _record)


def requested() -> int | None:
    """The signal that asked to stop, if one did."""
    return _requested


def check() -> None:
    """Raise :class:`StopRequested` if a stop was requested and cleanup has not begun."""
    if _requested is not None and not _cleaning:
        raise StopRequested(f"stopped by {signal.Signals(_requested).name}")


def begin_cleanup() -> None:
    """From now on :func:`check` raises nothing: the cleanup cannot be interrupted."""
    global _cleaning
    _cleaning = True
