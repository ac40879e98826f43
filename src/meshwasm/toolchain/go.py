"""Go plugins: upstream Go targeting WASI (``GOOS=wasip1 GOARCH=wasm``) as a reactor."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from meshwasm.errors import ToolchainError

MIN_GO = (1, 24)  # -buildmode=c-shared for wasip1 and //go:wasmexport arrived in Go 1.24


def go_binary() -> str:
    found = shutil.which("go")
    if found is None:
        raise ToolchainError(
            "Go is not installed (no `go` on PATH)",
            hint=f"install Go {MIN_GO[0]}.{MIN_GO[1]} or newer from https://go.dev/dl and put it on PATH",
        )
    return found


def go_version(go: str) -> tuple[int, int]:
    try:
        out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ToolchainError(f"cannot run `{go} env GOVERSION`: {exc}") from exc
    match = re.match(r"go(\d+)\.(\d+)", out.strip())
    if not match:
        raise ToolchainError(f"cannot read the Go version from {out.strip()!r}")
    return int(match.group(1)), int(match.group(2))


def build(src: Path, out: Path, progress: Callable[[str], None]) -> None:
    go = go_binary()
    version = go_version(go)
    if version < MIN_GO:
        raise ToolchainError(
            f"Go {version[0]}.{version[1]} is too old to build proxy-wasm plugins",
            hint=f"install Go {MIN_GO[0]}.{MIN_GO[1]} or newer (wasip1 c-shared builds need it)",
        )
    env = {**os.environ, "GOOS": "wasip1", "GOARCH": "wasm", "CGO_ENABLED": "0"}
    # -s -w drop the symbol table and DWARF, which Envoy never reads (panics
    # still name functions: Go's tracebacks use pclntab).
    cmd = [go, "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w", "-o", str(out), "."]
    progress(f"go {version[0]}.{version[1]}: {' '.join(cmd[1:])} (in {src})")
    proc = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()
        raise ToolchainError(f"go build failed in {src}:\n{output}")
    optimize(out, progress)


# The wasm features Go >= 1.24 emits for GOARCH=wasm by default (GOWASM=satconv,signext
# and bulk memory); binaryen must be told, or it refuses the module.
WASM_OPT_FEATURES = [
    "--enable-sign-ext",
    "--enable-nontrapping-float-to-int",
    "--enable-bulk-memory",
    "--enable-mutable-globals",
]


def optimize(module: Path, progress: Callable[[str], None]) -> None:
    """Shrink ``module`` in place with binaryen's ``wasm-opt -Oz`` when it is installed.

    Optional: without wasm-opt the module is valid, only larger (see bench/ and
    the issue-8 note for what each step changes).
    """
    wasm_opt = shutil.which("wasm-opt")
    if wasm_opt is None:
        progress("wasm-opt not found (Debian package binaryen): the module is not optimized")
        return
    optimized = module.with_name(module.name + ".opt")
    cmd = [wasm_opt, "-Oz", *WASM_OPT_FEATURES, str(module), "-o", str(optimized)]
    progress(f"wasm-opt -Oz ({module.stat().st_size:,} bytes before)")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            output = (proc.stderr or proc.stdout).strip()
            raise ToolchainError(f"wasm-opt failed on {module}:\n{output}", hint="install binaryen >= 108")
        os.replace(optimized, module)
    finally:
        optimized.unlink(missing_ok=True)
