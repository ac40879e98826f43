"""Leak and crash finding: the soak (meshwasm.host.soak, the `soak` fixture, `test-plugin --soak`)
catches a planted leak and passes plugins that do not leak; a trap names the callback, the
plugin's last log lines and the wasm backtrace with function names."""

from __future__ import annotations

import json

import pytest
import wasmtime
from typer.testing import CliRunner

from meshwasm.cli import app
from meshwasm.host import Plugin, PluginTrap
from meshwasm.host.soak import Exchange, LeakFound, soak

runner = CliRunner()


def test_the_planted_leak_is_caught_and_located(host_wat_modules):
    report = soak(Plugin.load(host_wat_modules["leak"]), 2000)
    assert report.leaking
    assert report.pages_per_1000 == pytest.approx(15.5, abs=0.6)  # 1 KiB a stream
    (grew,) = [c for c in report.callbacks if c.grown_bytes]
    assert grew.callback == "proxy_on_request_headers"
    with pytest.raises(
        LeakFound, match=r"leaks: 15\.50 pages .* per 1,000 streams .*proxy_on_request_headers"
    ):
        report.check()


def test_the_soak_fixture_fails_a_leaking_plugin(soak, host_wat_modules):
    with pytest.raises(LeakFound):
        soak(Plugin.load(host_wat_modules["leak"]), 2000)
    report = soak(Plugin.load(host_wat_modules["leak"], config="0"), 2000)  # allocation off
    assert report.growth_pages == 0


def test_add_header_does_not_grow(soak, add_header_wasm):
    plugin = Plugin.load(add_header_wasm, config={"header": "x-a", "value": "1"})
    report = soak(plugin, 3000)
    assert report.growth_pages == 0
    assert not report.leaking


@pytest.mark.parametrize(
    ("example", "config", "exchange"),
    [
        ("routing", b"\x02", Exchange()),
        ("metrics", None, Exchange(request_headers=[(":path", "/"), ("my-custom-header", "a")])),
        ("shared_data", None, Exchange()),
    ],
)
def test_go_sdk_examples_do_not_leak(soak, sdk_examples_wasm, example, config, exchange):
    """A Go heap grows in 8-page steps until its collector settles: that is not a leak."""
    plugin = Plugin.load(sdk_examples_wasm, root_id=example, config=config)
    report = soak(plugin, 2000, exchange=exchange, max_warmup=10_000)
    assert not report.leaking, report.text()


def test_test_plugin_soak_on_the_command_line(host_wat_modules, add_header_wasm):
    leak = runner.invoke(app, ["--quiet", "test-plugin", str(host_wat_modules["leak"]), "--soak", "2000"])
    assert leak.exit_code == 1
    assert isinstance(leak.exception, LeakFound)
    assert "proxy_on_request_headers" in str(leak.exception)
    config = '{"header": "x-a", "value": "1"}'
    args = ["--quiet", "test-plugin", str(add_header_wasm), "--config", config, "--soak", "2000", "--json"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    outcome = json.loads(ok.stdout)
    assert (outcome["leaking"], outcome["pages_after"] - outcome["pages_before"]) == (False, 0)


NAMED = """(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "going down")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func $parse_config (param $n i32) (result i32)
    (drop (call $log (i32.const 3) (i32.const 100) (i32.const 10)))
    (i32.div_u (i32.const 1) (local.get $n)))
  (func $on_configure (export "proxy_on_configure") (param i32 i32) (result i32)
    (call $parse_config (local.get 1)))
)"""


def test_a_trap_names_the_callback_logs_and_functions():
    with pytest.raises(PluginTrap) as trapped:
        Plugin.load(wasmtime.wat2wasm(NAMED))
    error = trapped.value
    assert error.callback == "proxy_on_configure"
    assert "divide by zero" in error.reason
    assert [frame.split(" ")[0] for frame in error.backtrace] == ["parse_config", "on_configure"]
    assert "wasm backtrace:\n    parse_config (function" in str(error)
    assert "[warn] going down" in str(error)
