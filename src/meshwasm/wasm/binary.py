"""A small reader for the WebAssembly binary format: imports, exports, sections.

Enough to tell whether bytes are a proxy-wasm module (magic, version, the
``proxy_abi_version_*`` export, how it starts) in milliseconds, without
compiling it. Format: https://webassembly.github.io/spec/core/binary/modules.html
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from meshwasm.errors import ExitCode, IntegrityError, MeshwasmError

WASM_MAGIC = b"\0asm"
_VERSION_1 = b"\x01\0\0\0"
_SECTION_IMPORT = 2
_SECTION_EXPORT = 7
_EXTERNAL_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@dataclass(frozen=True)
class ModuleInfo:
    size: int
    sha256: str
    imports: list[tuple[str, str, str]] = field(default_factory=list)  # (module, name, kind)
    exports: dict[str, str] = field(default_factory=dict)  # name -> kind

    @property
    def abi_versions(self) -> list[str]:
        """The proxy-wasm ABI versions the module declares, e.g. ``["0_2_0"]``."""
        prefix = "proxy_abi_version_"
        return sorted(name[len(prefix) :] for name in self.exports if name.startswith(prefix))

    @property
    def is_proxy_wasm(self) -> bool:
        return bool(self.abi_versions)

    @property
    def start_style(self) -> str:
        """How a host starts it: 'reactor' (``_initialize``), 'command' (``_start``) or 'none'."""
        if "_initialize" in self.exports:
            return "reactor"
        if "_start" in self.exports:
            return "command"
        return "none"

    @property
    def wasi_imports(self) -> list[str]:
        return sorted({name for module, name, _ in self.imports if module.startswith("wasi")})


class _Reader:
    def __init__(self, data: bytes, offset: int = 0, end: int | None = None):
        self.data = data
        self.pos = offset
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise ValueError("unexpected end of section")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 35:
                raise ValueError("LEB128 integer too long")

    def name(self) -> str:
        n = self.u32()
        if self.pos + n > self.end:
            raise ValueError("name runs past the end of its section")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_import_desc(self, kind: int) -> None:
        if kind == 0:  # func: type index
            self.u32()
        elif kind == 1:  # table: reftype + limits
            self.byte()
            self._limits()
        elif kind == 2:  # memory: limits
            self._limits()
        elif kind == 3:  # global: valtype + mut
            self.byte()
            self.byte()
        elif kind == 4:  # tag: attribute + type index
            self.byte()
            self.u32()
        else:
            raise ValueError(f"unknown import kind {kind}")

    def _limits(self) -> None:
        flags = self.byte()
        self.u32()
        if flags & 1:
            self.u32()


def inspect_module(data: bytes, *, source: str = "module") -> ModuleInfo:
    """Parse the import and export sections of a wasm binary.

    Raises :class:`IntegrityError` naming ``source`` when the bytes are not a
    WebAssembly module.
    """
    if not data.startswith(WASM_MAGIC):
        head = data[:4]
        raise IntegrityError(
            f"{source} is not a WebAssembly module: it starts with {head!r}, not b'\\x00asm'",
            hint="pass the .wasm file the build produced (GOOS=wasip1 GOARCH=wasm -buildmode=c-shared)",
        )
    if data[4:8] != _VERSION_1:
        raise IntegrityError(f"{source}: unsupported WebAssembly binary version {data[4:8]!r}")
    imports: list[tuple[str, str, str]] = []
    exports: dict[str, str] = {}
    pos = 8
    try:
        while pos < len(data):
            header = _Reader(data, pos)
            section_id = header.byte()
            size = header.u32()
            start, end = header.pos, header.pos + size
            if end > len(data):
                raise ValueError(f"section {section_id} runs past the end of the file")
            body = _Reader(data, start, end)
            if section_id == _SECTION_IMPORT:
                for _ in range(body.u32()):
                    module, name, kind = body.name(), body.name(), body.byte()
                    body.skip_import_desc(kind)
                    imports.append((module, name, _EXTERNAL_KINDS.get(kind, str(kind))))
            elif section_id == _SECTION_EXPORT:
                for _ in range(body.u32()):
                    name, kind = body.name(), body.byte()
                    body.u32()
                    exports[name] = _EXTERNAL_KINDS.get(kind, str(kind))
            pos = end
    except ValueError as exc:
        raise IntegrityError(f"{source} is a truncated or malformed WebAssembly module: {exc}") from exc
    return ModuleInfo(
        size=len(data), sha256=hashlib.sha256(data).hexdigest(), imports=imports, exports=exports
    )


def read_module(path: Path, *, require_proxy_wasm: bool = True) -> tuple[bytes, ModuleInfo]:
    """Read and check a module file; by default it must export a proxy-wasm ABI marker."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MeshwasmError(f"{path}: no such file", exit_code=ExitCode.NOT_FOUND) from None
    except IsADirectoryError:
        raise MeshwasmError(f"{path} is a directory, not a .wasm file", exit_code=ExitCode.USAGE) from None
    info = inspect_module(data, source=str(path))
    if require_proxy_wasm and not info.is_proxy_wasm:
        raise IntegrityError(
            f"{path} is WebAssembly but not a proxy-wasm module: it exports no proxy_abi_version_* marker",
            hint="build it with a proxy-wasm SDK (proxy-wasm-go-sdk, proxy-wasm-rust-sdk, ...)",
        )
    return data, info
