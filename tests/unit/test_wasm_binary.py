from __future__ import annotations

import pytest
import wasmtime

from meshwasm.errors import IntegrityError
from meshwasm.wasm.binary import inspect_module, read_module

REACTOR_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_initialize"))
  (func (export "proxy_abi_version_0_2_1"))
)
"""


def test_reads_imports_exports_and_abi():
    info = inspect_module(wasmtime.wat2wasm(REACTOR_WAT))
    assert info.abi_versions == ["0_2_1"]
    assert info.is_proxy_wasm
    assert info.start_style == "reactor"
    assert ("env", "proxy_log", "func") in info.imports
    assert info.wasi_imports == ["fd_write"]
    assert info.exports["memory"] == "memory"


def test_plain_wasm_is_not_proxy_wasm(tmp_path):
    path = tmp_path / "plain.wasm"
    path.write_bytes(wasmtime.wat2wasm('(module (func (export "_start")))'))
    assert inspect_module(path.read_bytes()).start_style == "command"
    with pytest.raises(IntegrityError, match="exports no proxy_abi_version"):
        read_module(path)


def test_not_wasm_names_the_source():
    with pytest.raises(
        IntegrityError, match=r"plugin\.tar is not a WebAssembly module: it starts with b'\\x1f"
    ):
        inspect_module(b"\x1f\x8b\x08\x00rest", source="plugin.tar")


def test_truncated_module_is_reported():
    data = wasmtime.wat2wasm(REACTOR_WAT)
    with pytest.raises(IntegrityError, match="truncated or malformed"):
        inspect_module(data[:-3])


def test_the_go_add_header_module(add_header_wasm):
    _, info = read_module(add_header_wasm)
    assert info.abi_versions
    assert info.size > 0
    assert len(info.sha256) == 64
