"""The one exception type the CLI turns into a clean message and an exit code.

Every error a user can cause or fix (bad input, a missing tool, a refused
registry) is a :class:`MeshwasmError` whose message says what went wrong and
where, and whose ``hint`` says how to fix it. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes scripts can rely on."""

    OK = 0
    ERROR = 1  # generic failure
    USAGE = 2  # bad arguments or bad input files
    NOT_FOUND = 3  # an image, tag, file or plugin does not exist
    AUTH = 4  # credentials missing or rejected
    NETWORK = 5  # a peer could not be reached or failed
    INTEGRITY = 6  # digest or checksum mismatch, not a wasm module
    TOOLCHAIN = 7  # a build tool is missing, too old, or failed


class MeshwasmError(Exception):
    """An error with a message for people and an exit code for scripts."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None, exit_code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(MeshwasmError):
    exit_code = ExitCode.USAGE


class ToolchainError(MeshwasmError):
    exit_code = ExitCode.TOOLCHAIN


class IntegrityError(MeshwasmError):
    exit_code = ExitCode.INTEGRITY
