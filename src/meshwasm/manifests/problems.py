"""Problems found in manifests or during translation, each naming where it is.

A :class:`Problem` says what is wrong and where: the file and line it came
from (when the input was a file), the resource it belongs to, and the field
path inside that resource. Loading and translation collect every problem
before raising, so a user fixes a tree in one pass, not one error per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshwasm.errors import ExitCode, MeshwasmError


@dataclass(frozen=True)
class SourceRef:
    """Where a resource (or a field of it) was read: a file and a 1-based line."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Problem:
    """One error or warning: ``file:line: subject: field: message``.

    ``subject`` names the resource or the attachment (``Gateway tier2/tier2-gateway``),
    ``field`` the dotted path inside it (``spec.http[0].port``).
    """

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    subject: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.subject:
            parts.append(self.subject)
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


def _summary(kind: str, problems: Sequence[Problem]) -> str:
    count = len(problems)
    lines = [f"{count} {kind} problem{'s' if count != 1 else ''}:"]
    lines.extend(f"  - {p}" for p in problems)
    return "\n".join(lines)


class ManifestError(MeshwasmError):
    """A tree that cannot be loaded: YAML or schema errors, missing files. Lists every problem."""

    exit_code = ExitCode.USAGE

    def __init__(self, problems: Sequence[Problem], *, hint: str | None = None):
        self.problems = list(problems)
        super().__init__(_summary("manifest", self.problems), hint=hint)
