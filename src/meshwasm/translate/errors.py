"""The error translation raises: every problem in the input, listed together."""

from __future__ import annotations

from collections.abc import Sequence

from meshwasm.errors import ExitCode, MeshwasmError
from meshwasm.manifests.problems import Problem


class TranslationError(MeshwasmError):
    """Resources that cannot be translated (a dangling fqn, an invalid config, an unmapped upstream).

    ``problems`` lists them all; nothing is rendered when there is any.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, problems: Sequence[Problem], *, hint: str | None = None):
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"{count} translation problem{'s' if count != 1 else ''}:"]
        lines.extend(f"  - {p}" for p in self.problems)
        super().__init__("\n".join(lines), hint=hint)
