"""Modules from toolchains other than upstream Go: a TinyGo-style command module and one without WASI."""

from __future__ import annotations

from meshwasm.host import Action, Plugin


def test_command_module_runs_start_then_uses_malloc(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["command_malloc"], config='{"any": "config"}')
    assert plugin.info.start_style == "command"
    assert plugin.info.abi_versions == ["0_2_1"]
    # _start printed to stdout (an info log, as in Envoy); on_vm_start refuses unless _start ran.
    assert [entry.message for entry in plugin.logs] == ["hello from _start", '{"any": "config"}']
    stream = plugin.http_stream()
    assert stream.send_request_headers({":path": "/"}) == Action.CONTINUE
    assert stream.request_headers["x-toolchain"] == "command"


def test_module_without_wasi_imports(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["no_wasi"])
    assert plugin.info.wasi_imports == []
    assert plugin.info.start_style == "none"
    assert plugin.info.abi_versions == ["0_2_0"]
    stream = plugin.http_stream()
    stream.send_request_headers({"X-Echo": "ping"})
    assert stream.request_headers["x-echoed"] == "ping"
    assert plugin.logs_at("info") == ["no-wasi saw a request"]


def test_go_reactor_declares_abi_0_2_0(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="metrics")
    assert plugin.info.start_style == "reactor"
    assert plugin.info.abi_versions == ["0_2_0"]
