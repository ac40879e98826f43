"""Terminal output shared by all commands: one stderr console, progress, quiet mode.

Results go to stdout (so scripts can read them); progress and errors go to
stderr. ``--quiet`` silences progress but never errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def info(message: str) -> None:
    """A progress line on stderr (suppressed by --quiet)."""
    if not _quiet:
        stderr.print(message, markup=False)


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner for an operation of unknown length (a build, waiting for Envoy)."""
    if _quiet or not stderr.is_terminal:
        info(message)
        yield
        return
    with stderr.status(message):
        yield


@contextmanager
def transfer(description: str, total: int | None) -> Iterator[Progress]:
    """A byte-progress bar for pushes and pulls; a plain line when not on a terminal."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=stderr,
        disable=_quiet or not stderr.is_terminal,
    )
    if progress.disable:
        info(f"{description} ({total} bytes)" if total else description)
    with progress:
        yield progress
