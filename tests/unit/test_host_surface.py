"""The host links exactly Envoy 1.40's import surface (meshwasm.host.surface), per ABI version.

The table itself is checked against the real Envoy in tests/integration/test_host_surface_envoy.py;
these tests check the host against the table: every function linked with Envoy's type for the
ABIs Envoy gives it to (and refused for the others), functions not emulated answering Envoy's
status rather than failing to link, ABI versions refused as Envoy refuses them.
"""

from __future__ import annotations

import pytest
import wasmtime

from fixtures.host_surface import all_imports_wat, answered, probe_wat, wasm, wrong_type_wat
from meshwasm.host import MissingImportError, ModuleRejected, Plugin
from meshwasm.host.functions import state_of, unknown_implementations
from meshwasm.host.runtime import EngineKey, engine_for
from meshwasm.host.surface import ABI_VERSIONS, ENVOY_ABI_REFUSAL, SURFACE, lookup, provided

KEY = EngineKey(consume_fuel=False, epoch=True)


@pytest.mark.parametrize("abi", ABI_VERSIONS)
def test_a_module_importing_everything_envoy_provides_loads(abi):
    plugin = Plugin.load(wasm(all_imports_wat(abi)), config="c")
    imported = {(m, n) for m, n, kind in plugin.info.imports if kind == "func"}
    assert imported == {(f.module, f.name) for f in provided(abi)}
    # Every function the host does not emulate answers Envoy's status (zero arguments each).
    assert plugin.logs_at("info") == [f"{f.module}.{f.name}={f.answer}" for f in answered(abi)]


@pytest.mark.parametrize("abi", ABI_VERSIONS)
def test_the_linker_defines_each_function_with_the_tables_type(abi):
    """Straight at wasmtime's linker, past the host's own import check: a wrong type fails to link."""
    entry = engine_for(KEY)
    linker = entry.linker(abi)
    linker.instantiate_pre(wasmtime.Module(entry.engine, wasm(all_imports_wat(abi))))
    for function in provided(abi):
        wrong = "I" * (len(function.params) + 1)
        probe = probe_wat(function.module, function.name, wrong, "i", abi)
        module = wasmtime.Module(entry.engine, wasm(probe))
        with pytest.raises(wasmtime.WasmtimeError, match=r"incompatible import type|types incompatible"):
            linker.instantiate_pre(module)


def test_every_function_is_emulated_or_has_envoys_answer():
    assert unknown_implementations() == []
    for function in SURFACE:
        state = state_of(function)
        assert state == "emulated" or function.answer is not None, function.qualified


def test_wrong_type_is_refused_with_envoys_wording():
    with pytest.raises(ModuleRejected) as refused:
        Plugin.load(wasm(wrong_type_wat("env", "proxy_log")))
    assert "env.proxy_log, want: f32 -> void, but host exports: i32 i32 i32 -> i32" in str(refused.value)


@pytest.mark.parametrize(
    ("name", "params", "abi", "provided_to"),
    [
        ("proxy_get_configuration", "ii", "0_2_1", "0.1.0"),
        ("proxy_continue_request", "", "0_2_0", "0.1.0"),
        ("proxy_get_log_level", "i", "0_2_0", "0.2.1"),
        ("proxy_continue_stream", "i", "0_1_0", "0.2.0, 0.2.1"),
    ],
)
def test_abi_specific_functions_exist_only_for_their_abi(name, params, abi, provided_to):
    with pytest.raises(MissingImportError) as missing:
        Plugin.load(wasm(probe_wat("env", name, params, "i", abi)))
    assert missing.value.missing == [("env", name)]
    assert f"env.{name} (ABI {provided_to})" in str(missing.value)
    right_abi = lookup("env", name)[0].abis[0]
    Plugin.load(wasm(probe_wat("env", name, params, "i", right_abi)))


MODULE_TAIL = """
  (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))"""


@pytest.mark.parametrize(
    ("exports", "says"),
    [
        ("", "exports no proxy_abi_version_* marker"),
        ('(func (export "proxy_abi_version_0_3_0"))', "only ABI markers Envoy does not know"),
        ('(global (export "proxy_abi_version_0_2_1") i32 (i32.const 0))', "exports no proxy_abi_version_*"),
    ],
)
def test_abi_versions_envoy_refuses(exports, says):
    with pytest.raises(ModuleRejected) as refused:
        Plugin.load(wasm(f"(module {exports} {MODULE_TAIL})"))
    assert says in str(refused.value)
    assert ENVOY_ABI_REFUSAL in str(refused.value)


def test_first_known_abi_marker_in_export_order_wins():
    get_log_level = '(import "env" "proxy_get_log_level" (func (param i32) (result i32)))'
    first_020 = '(func (export "proxy_abi_version_0_2_0")) (func (export "proxy_abi_version_0_2_1"))'
    with pytest.raises(MissingImportError):  # ABI 0.2.0 first: no proxy_get_log_level (as Envoy)
        Plugin.load(wasm(f"(module {get_log_level} {first_020} {MODULE_TAIL})"))
    first_021 = '(func (export "proxy_abi_version_9_9_9")) (func (export "proxy_abi_version_0_2_1"))'
    plugin = Plugin.load(wasm(f"(module {get_log_level} {first_021} {MODULE_TAIL})"))
    assert plugin.abi == "0_2_1"


def test_rust_sdk_imports_link(host_wat_modules):
    """proxy-wasm-rust-sdk 0.2.x's declarations (the first host's 8-parameter proxy_grpc_stream
    made every Rust module fail to link)."""
    plugin = Plugin.load(host_wat_modules["rust_sdk_imports"])
    assert ("env", "proxy_grpc_stream", "func") in plugin.info.imports
    old = r"proxy_grpc_stream, want: (i32 ){7}i32 -> i32, but host exports: (i32 ){8}i32 -> i32"
    with pytest.raises(ModuleRejected, match=old):
        Plugin.load(wasm(probe_wat("env", "proxy_grpc_stream", "i" * 8, "i")))


def test_emscripten_shims_link_and_answer():
    module = f"""(module
      (import "env" "emscripten_notify_memory_growth" (func $grew (param i32)))
      (import "env" "pthread_equal" (func $equal (param i32 i32) (result i32)))
      (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
      (data (i32.const 100) "equal")
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_configure") (param i32 i32) (result i32)
        (call $grew (memory.grow (i32.const 1)))
        (if (call $equal (i32.const 7) (i32.const 7))
          (then (drop (call $log (i32.const 2) (i32.const 100) (i32.const 5)))))
        (i32.eqz (call $equal (i32.const 7) (i32.const 8))))
      {MODULE_TAIL})"""
    plugin = Plugin.load(wasm(module))
    assert plugin.logs_at("info") == ["equal"]
    assert plugin.memory_pages == 2


ABI_010 = """(module
  (import "env" "proxy_get_configuration" (func $config (param i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "x-missing")
  (data (i32.const 220) "status ?")
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func $log_config (drop (call $config (i32.const 100) (i32.const 104)))
    (drop (call $log (i32.const 2) (i32.load (i32.const 100)) (i32.load (i32.const 104)))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (call $log_config) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (call $log_config) (i32.const 1))
  ;; ABI 0.1.0: on_request_headers(context, headers) without end_of_stream; an absent header is Ok.
  (func (export "proxy_on_request_headers") (param i32 i32) (result i32)
    (i32.store8 (i32.const 227)
      (i32.add (i32.const 48)
        (call $get (i32.const 0) (i32.const 200) (i32.const 9) (i32.const 100) (i32.const 104))))
    (drop (call $log (i32.const 2) (i32.const 220) (i32.const 8)))
    (i32.const 0))
)"""


def test_abi_0_1_0_modules_run():
    plugin = Plugin.load(wasm(ABI_010), config="plugin-config", vm_config="vm-config")
    assert plugin.abi == "0_1_0"
    # proxy_get_configuration: the VM's configuration, except in on_configure.
    assert plugin.logs_at("info") == ["vm-config", "plugin-config"]
    plugin.http_stream().send_request_headers({":path": "/"})
    assert plugin.logs_at("info")[-1] == "status 0"


def test_docs_list_every_host_function_with_its_state(repo_root):
    """docs/host.md shows the table the host is built from (regenerate it with
    meshwasm.host.functions.surface_markdown() when the surface changes)."""
    from meshwasm.host.functions import surface_markdown

    docs = (repo_root / "docs" / "host.md").read_text()
    block = docs.split("<!-- surface:begin -->\n", 1)[1].split("\n<!-- surface:end -->", 1)[0]
    assert block == surface_markdown()
