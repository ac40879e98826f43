"""Writing rendered files: all or nothing, each file replaced atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


def write_files(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write ``files`` (name -> text) into ``directory``.

    Everything is first written to temporary files beside their targets; only
    when all are written are they renamed into place, so a failure (disk full,
    permissions) leaves the directory as it was.
    """
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[str, Path]] = []
    try:
        for name, text in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
            staged.append((tmp, directory / name))
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    return [target for _, target in staged]
