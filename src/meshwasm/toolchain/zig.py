"""Zig plugins: a freestanding wasm32 reactor with no runtime, from the ``ziglang`` PyPI package.

The plugin directory holds ``build.zig`` (the marker, and what Zig users run
for ``zig build`` / ``zig build test``) and ``src/main.zig`` exporting the
proxy-wasm ABI. meshwasm compiles ``src/main.zig`` with ``zig build-exe`` and
the same flags as that build.zig: compiling Zig's build runner first costs
about 90 s on a fresh machine, the module itself about 3 s.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from meshwasm.errors import ToolchainError

# The build.zig API and the std the plugins use follow Zig 0.17.
MIN_ZIG = (0, 17)

# Kept in step with plugins/*/build.zig: bounds checks on, symbols off, and
# only the wasm features every recent Envoy V8 accepts.
ZIG_FLAGS = [
    "-target",
    "wasm32-freestanding",
    "-mcpu=mvp+bulk_memory+mutable_globals+sign_ext",
    "-O",
    "ReleaseSafe",
    "-fstrip",
    "-fsingle-threaded",
    "-fno-entry",  # a reactor: the host calls the proxy_on_* exports
    "-rdynamic",  # keep every `export fn`
]


def zig_binary() -> str:
    """The pinned Zig from the ``ziglang`` package, else ``zig`` on PATH."""
    try:
        import ziglang  # type: ignore[import-untyped]

        bundled = Path(ziglang.__file__).parent / "zig"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("zig")
    if found:
        return found
    raise ToolchainError(
        "Zig is not installed (no `ziglang` package, no `zig` on PATH)",
        hint="run `make get` (installs ziglang into .venv) or `pip install 'ziglang>=0.17,<0.18'`",
    )


def zig_version(zig: str) -> tuple[int, int]:
    try:
        out = subprocess.run([zig, "version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ToolchainError(f"cannot run `{zig} version`: {exc}") from exc
    match = re.match(r"(\d+)\.(\d+)", out.strip())
    if not match:
        raise ToolchainError(f"cannot read the Zig version from {out.strip()!r}")
    return int(match.group(1)), int(match.group(2))


def local_cache_dir() -> Path:
    """Zig's per-project cache, kept out of the source tree."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshwasm" / "zig-local"


def build(src: Path, out: Path, progress: Callable[[str], None]) -> None:
    main = src / "src" / "main.zig"
    if not main.is_file():
        raise ToolchainError(
            f"{src}: no src/main.zig",
            hint="a Zig plugin keeps its proxy-wasm exports in src/main.zig next to build.zig",
        )
    zig = zig_binary()
    version = zig_version(zig)
    if version[:2] != MIN_ZIG:
        raise ToolchainError(
            f"Zig {version[0]}.{version[1]} found; the plugins are written for Zig {MIN_ZIG[0]}.{MIN_ZIG[1]}",
            hint="run `make get` (pins ziglang in .venv)",
        )
    cmd = [
        zig,
        "build-exe",
        "src/main.zig",
        *ZIG_FLAGS,
        "--name",
        "plugin",
        "--cache-dir",
        str(local_cache_dir()),
        f"-femit-bin={out}",
    ]
    progress(f"zig {version[0]}.{version[1]}: {' '.join(cmd[1:])} (in {src})")
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()
        raise ToolchainError(f"zig build-exe failed in {src}:\n{output}")
