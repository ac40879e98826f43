"""Pick a toolchain for a plugin directory, build it, and check the result."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshwasm.errors import ExitCode, MeshwasmError, UsageError
from meshwasm.toolchain import go, zig
from meshwasm.wasm.binary import ModuleInfo, read_module

# A builder compiles the plugin in `src` to the file `out`, reporting progress lines.
Builder = Callable[[Path, Path, Callable[[str], None]], None]

# Marker file -> (toolchain name, builder). Order matters: the first match wins.
TOOLCHAINS: list[tuple[str, str, Builder]] = [
    ("go.mod", "go", go.build),
    ("build.zig", "zig", zig.build),
]


@dataclass(frozen=True)
class BuildResult:
    path: Path
    toolchain: str
    info: ModuleInfo


def detect_toolchain(plugin_dir: Path) -> tuple[str, Builder]:
    if not plugin_dir.exists():
        raise MeshwasmError(f"{plugin_dir}: no such plugin directory", exit_code=ExitCode.NOT_FOUND)
    if not plugin_dir.is_dir():
        raise UsageError(f"{plugin_dir} is not a directory", hint="pass the plugin's source directory")
    for marker, name, builder in TOOLCHAINS:
        if (plugin_dir / marker).is_file():
            return name, builder
    known = ", ".join(marker for marker, _, _ in TOOLCHAINS)
    raise UsageError(
        f"{plugin_dir}: cannot tell how to build this plugin (none of {known} found)",
        hint="a Go plugin needs a go.mod next to its main package; a Zig one a build.zig beside src/main.zig",
    )


def build_plugin(
    plugin_dir: Path, out: Path, *, progress: Callable[[str], None] = lambda _msg: None
) -> BuildResult:
    """Build ``plugin_dir`` into ``out`` and verify it is a proxy-wasm module.

    The module is built into a temporary file beside ``out`` and renamed only
    once it checks out, so a failed build never leaves a broken ``out``.
    """
    name, builder = detect_toolchain(plugin_dir)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        builder(plugin_dir.resolve(), tmp, progress)
        _, info = read_module(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return BuildResult(path=out, toolchain=name, info=info)
