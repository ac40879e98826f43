"""A plugin on the proxy-wasm Rust SDK (crates.io `proxy-wasm` 0.2.5, cargo for wasm32-wasip1;
tests/fixtures/corpus/rust) through the real Envoy and through meshwasm's host.

Each test asserts Envoy's behaviour first, then runs the same inputs through the host. (The
first host refused the module at link time: the SDK imports Envoy's nine-parameter
proxy_grpc_stream, which that host declared with eight.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.differential import Request, messages, next_name
from meshwasm.host import Plugin
from meshwasm.net import wait_until

pytestmark = pytest.mark.envoy


@pytest.fixture
def rust(diff, corpus_module):
    wasm = corpus_module("rust-sdk")
    vm_id = f"rust-{next_name()}"  # the plugin keeps its tick count in a global: one VM per test

    def serve(config: str) -> tuple[str, int, Path]:
        port = diff.serve(wasm, root_id=vm_id, vm_id=vm_id, config=config)
        return vm_id, port, wasm

    return serve


def load(wasm: Path, vm_id: str, config: str, **options: object) -> Plugin:
    return Plugin.load(wasm, root_id=vm_id, vm_id=vm_id, config=config, **options)


def test_rust_headers_and_local_reply(diff, rust):
    vm_id, port, wasm = rust("from-rust-config")
    passed, denied = Request(path="/headers"), Request(path="/rust/deny/x")
    by_envoy = diff.via_envoy(port, passed)
    assert by_envoy.json()["headers"]["X-Rust-Greeting"] == "from-rust-config"
    refused = diff.via_envoy(port, denied)
    assert (refused.status, refused.body) == (403, b"denied by rust: /rust/deny/x\n")
    assert refused.headers.get_all("x-denied-by") == ["rust"]
    assert "rust configured: from-rust-config" in messages(
        diff.wait_envoy_log(vm_id, "rust configured: from-rust-config")
    )

    plugin = load(wasm, vm_id, "from-rust-config")
    assert diff.via_host(plugin, passed).json()["headers"]["X-Rust-Greeting"] == "from-rust-config"
    by_host = diff.via_host(plugin, denied)
    assert (by_host.status, by_host.body, by_host.headers.get_all("x-denied-by")) == (
        refused.status,
        refused.body,
        ["rust"],
    )
    assert plugin.logs_at("info")[0] == "rust configured: from-rust-config"


def test_rust_http_callout(diff, rust):
    vm_id, port, wasm = rust("callouts")
    granted = Request(path="/headers", headers=[("x-callout-path", "/status/200")])
    refused = Request(path="/headers", headers=[("x-callout-path", "/status/503")])
    assert diff.via_envoy(port, granted).json()["headers"]["X-Callout-Status"] == "200"
    by_envoy = diff.via_envoy(port, refused)
    assert (by_envoy.status, by_envoy.body) == (403, b"rust callout said 503")
    wanted = [
        "rust dispatch /status/200: ok",
        "rust callout answered 200 with 0 body bytes",
        "rust dispatch /status/503: ok",
        "rust callout answered 503 with 0 body bytes",
    ]
    envoy_logs = messages(diff.wait_envoy_log(vm_id, wanted[-1]))
    assert [m for m in envoy_logs if "dispatch" in m or "answered" in m] == wanted

    plugin = load(wasm, vm_id, "callouts", clusters=["httpbin"])
    assert diff.via_host(plugin, granted).json()["headers"]["X-Callout-Status"] == "200"
    by_host = diff.via_host(plugin, refused)
    assert (by_host.status, by_host.body) == (by_envoy.status, by_envoy.body)
    assert [m for m in plugin.logs_at("info") if "dispatch" in m or "answered" in m] == wanted


def test_rust_timer(diff, rust):
    vm_id, port, wasm = rust("ticks")
    diff.wait_envoy_log(vm_id, "rust tick 3")
    assert wait_until(
        lambda: diff.via_envoy(port, Request()).headers.get_all("x-rust-ticks") == ["3"],
        timeout=10,
        interval=0.1,
    )

    plugin = load(wasm, vm_id, "ticks")
    assert plugin.tick_period_ms == 50
    for _ in range(3):
        plugin.tick()
    assert plugin.tick_period_ms == 0
    assert diff.via_host(plugin, Request()).headers.get_all("x-rust-ticks") == ["3"]
    assert [m for m in plugin.logs_at("info") if m.startswith("rust tick")] == [
        "rust tick 1",
        "rust tick 2",
        "rust tick 3",
    ]
