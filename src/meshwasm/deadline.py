"""Whole-operation deadlines: one point in time that every network wait and every loop honours.

Per-read timeouts do not bound a pull: a server that sends one byte every half second never
lets a read time out. A :class:`Deadline` is set once for a whole operation (a pull: DNS,
connect, TLS, headers, body, redirects, token fetches, layer extraction) with
:func:`deadline_scope`; the network layer (:mod:`meshwasm.safehttp`) clamps every socket
timeout to what is left of it, and long loops call :func:`check_deadline`. The deadline lives
in a context variable, so it follows the operation's thread and nothing else.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from meshwasm.errors import ExitCode, MeshwasmError


class DeadlineExceeded(MeshwasmError):
    """An operation ran past its whole-operation deadline."""

    exit_code = ExitCode.NETWORK


@dataclass(frozen=True)
class Deadline:
    """An absolute end on the monotonic clock, and the budget it was set with (for messages)."""

    end: float
    budget: float
    what: str

    def remaining(self) -> float:
        return self.end - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def error(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{self.what} did not finish within its {self.budget:g} s deadline",
            hint="the source is too slow or stalled; raise the timeout only if you trust it",
        )


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("meshwasm_deadline", default=None)


def current_deadline() -> Deadline | None:
    return _current.get()


@contextmanager
def deadline_scope(seconds: float | None, what: str = "the operation") -> Iterator[Deadline | None]:
    """Run the block under a deadline ``seconds`` from now (``None``: no new deadline).

    Nested scopes never extend an outer deadline: the earlier end wins.
    """
    outer = _current.get()
    if seconds is None:
        yield outer
        return
    mine = Deadline(time.monotonic() + seconds, seconds, what)
    chosen = mine if outer is None or mine.end < outer.end else outer
    token = _current.set(chosen)
    try:
        yield chosen
    finally:
        _current.reset(token)


def check_deadline() -> None:
    """Raise :class:`DeadlineExceeded` when the current deadline has passed."""
    deadline = _current.get()
    if deadline is not None and deadline.expired:
        raise deadline.error()


def deadline_expired() -> bool:
    deadline = _current.get()
    return deadline is not None and deadline.expired


def clamp_timeout(timeout: float | None) -> float | None:
    """``timeout`` cut to what is left of the current deadline (at least a millisecond, so a
    socket call fails with a timeout rather than blocking; :func:`check_deadline` reports it)."""
    deadline = _current.get()
    if deadline is None:
        return timeout
    left = max(deadline.remaining(), 0.001)
    return left if timeout is None or math.isinf(timeout) else min(timeout, left)
