"""Faults the host reports clearly: bad files, missing pieces, traps, runaway memory and fuel."""

from __future__ import annotations

import pytest
import wasmtime

from meshwasm.host import (
    MissingImportError,
    ModuleRejected,
    Plugin,
    PluginError,
    PluginStartError,
    PluginTrap,
    ResourceLimitError,
)
from meshwasm.wasm.binary import IntegrityError

MARKER_AND_MEMORY = '(memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))'
ALLOCATOR = '(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))'


def wat(text: str) -> bytes:
    return wasmtime.wat2wasm(text)


def test_not_a_wasm_module(tmp_path):
    path = tmp_path / "plugin.wasm"
    path.write_text("<html>not found</html>")
    with pytest.raises(IntegrityError, match="is not a WebAssembly module"):
        Plugin.load(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ModuleRejected, match="no such file"):
        Plugin.load(tmp_path / "absent.wasm")


def test_wasm_without_abi_marker():
    module = wat(f'(module (memory (export "memory") 1) {ALLOCATOR})')
    with pytest.raises(ModuleRejected, match="exports no proxy_abi_version_"):
        Plugin.load(module)


def test_no_allocator_export():
    with pytest.raises(ModuleRejected, match=r"no allocator \(neither proxy_on_memory_allocate nor malloc\)"):
        Plugin.load(wat(f"(module {MARKER_AND_MEMORY})"))


def test_imports_the_host_does_not_provide_are_named():
    module = wat(
        '(module (import "env" "proxy_make_coffee" (func (param i32) (result i32)))'
        ' (import "wasi_snapshot_preview1" "sock_teleport" (func))'
        f" {MARKER_AND_MEMORY} {ALLOCATOR})"
    )
    with pytest.raises(MissingImportError) as missing:
        Plugin.load(module)
    assert missing.value.missing == [
        ("env", "proxy_make_coffee"),
        ("wasi_snapshot_preview1", "sock_teleport"),
    ]
    assert "env.proxy_make_coffee" in str(missing.value)


def test_import_with_the_wrong_signature_is_rejected_by_name():
    module = wat(f'(module (import "env" "proxy_log" (func (param i64)))  {MARKER_AND_MEMORY} {ALLOCATOR})')
    with pytest.raises(ModuleRejected, match="proxy_log"):
        Plugin.load(module)


def test_trap_names_the_callback_and_carries_the_last_logs(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["faults"])
    stream = plugin.http_stream()
    with pytest.raises(PluginTrap) as trapped:
        stream.send_response_headers({":status": "200"})
    error = trapped.value
    assert error.callback == "proxy_on_response_headers"
    assert "unreachable" in error.reason
    assert [entry.message for entry in error.logs][-1] == "about to trap"
    assert "[warn] about to trap" in str(error)


def test_after_a_trap_the_plugin_refuses_further_calls(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["faults"])
    stream = plugin.http_stream()
    with pytest.raises(PluginTrap):
        stream.send_response_headers({})
    assert plugin.failed is not None
    with pytest.raises(PluginError, match="failed earlier"):
        plugin.http_stream()


def test_go_panic_reaches_the_trap_report_through_stderr(sdk_examples_wasm):
    """A Go module writes its panic to fd 2; Envoy logs fd 2 at error level, one entry per write
    (tests/integration/test_host_surface_envoy.py checks that), so does the host; the trap report
    joins the pieces back into lines."""
    plugin = Plugin.load(sdk_examples_wasm, root_id="metrics")
    # A callback for a context the SDK never created makes the Go SDK panic.
    with pytest.raises(PluginTrap) as trapped:
        plugin._call("proxy_on_request_headers", 999, 0, 0)
    assert trapped.value.callback == "proxy_on_request_headers"
    errors = [entry.message for entry in trapped.value.logs if entry.level_name == "error"]
    assert errors[:2] == ["panic: ", "invalid context on proxy_on_request_headers"]
    assert "[error] panic: invalid context on proxy_on_request_headers" in str(trapped.value)


def test_fuel_cap_stops_a_runaway_loop(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["faults"], fuel_limit=200_000)
    stream = plugin.http_stream()
    with pytest.raises(ResourceLimitError, match="fuel cap of 200000 exhausted") as capped:
        stream.send_request_trailers({})
    assert capped.value.callback == "proxy_on_request_trailers"


def test_memory_cap_stops_runaway_growth(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["faults"], memory_limit=8 * 65536)
    stream = plugin.http_stream()
    with pytest.raises(ResourceLimitError, match="memory cap of 524288 bytes reached"):
        stream.send_response_body(b"x")


def test_refusal_at_vm_start_carries_the_critical_line(host_wat_modules):
    with pytest.raises(PluginStartError, match="on_vm_start returned false") as refused:
        Plugin.load(host_wat_modules["faults"], vm_config="refuse")
    assert refused.value.critical == ["vm refused: vm_config says refuse"]
    assert "[critical] vm refused" in str(refused.value)


def test_out_of_bounds_pointer_gets_invalid_memory_access(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["faults"])
    stream = plugin.http_stream()
    stream.send_response_trailers({})
    assert plugin.logs[-1].message == "log from a bad pointer: 6"  # 6 = InvalidMemoryAccess
