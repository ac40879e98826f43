"""AssemblyScript plugins from npm (tests/fixtures/corpus/assemblyscript, pinned in its
package-lock.json): one in AssemblyScript 0.28 against the proxy-wasm ABI directly, one on the
@solo-io/proxy-runtime 0.1.8 SDK with AssemblyScript 0.14 (the version that SDK is written for),
each through the real Envoy and through meshwasm's host.
"""

from __future__ import annotations

import pytest

from fixtures.differential import Request, messages, next_name
from meshwasm.host import Plugin

pytestmark = pytest.mark.envoy


def test_assemblyscript_against_the_abi(diff, corpus_module):
    wasm = corpus_module("as-abi")
    root_id = f"as-abi-{next_name()}"
    port = diff.serve(wasm, root_id=root_id, vm_id=root_id, config="from-as-config")
    plugin = Plugin.load(wasm, root_id=root_id, config="from-as-config")
    passed = Request(path="/headers", headers=[("user-agent", "test")])
    for number in (1, 2):
        for side, outcome in (
            ("Envoy", diff.via_envoy(port, passed)),
            ("host", diff.via_host(plugin, passed)),
        ):
            seen = outcome.json()["headers"]
            assert (seen["X-As-Greeting"], seen["User-Agent"]) == ("from-as-config", "as-abi"), side
            assert outcome.headers.get_all("x-as-requests") == [str(number)], side
    denied = Request(path="/as/deny/now")
    by_envoy, by_host = diff.via_envoy(port, denied), diff.via_host(plugin, denied)
    assert (by_envoy.status, by_envoy.body) == (by_host.status, by_host.body)
    assert (by_host.status, by_host.body) == (451, b"denied by assemblyscript abi: /as/deny/now")
    wanted = "as abi: configured greeting from-as-config"
    assert plugin.logs_at("info") == [wanted]
    assert set(messages(diff.wait_envoy_log(root_id, wanted))) == {wanted}


def test_assemblyscript_proxy_runtime_sdk(diff, corpus_module):
    wasm = corpus_module("as-sdk")
    vm_id = f"as-sdk-{next_name()}"
    # The SDK finds its root context by root_id: it must be the name the plugin registered.
    port = diff.serve(wasm, root_id="as_sdk", vm_id=vm_id, config="from-sdk-config")
    passed, denied = Request(path="/headers", headers=[("user-agent", "test")]), Request(path="/as/deny/it")
    by_envoy = diff.via_envoy(port, passed)
    assert (by_envoy.json()["headers"]["X-As-Greeting"], by_envoy.json()["headers"]["User-Agent"]) == (
        "from-sdk-config",
        "as-sdk",
    )
    assert by_envoy.headers.get_all("x-as-response") == ["from-sdk-config"]
    assert by_envoy.headers.get_all("access-control-allow-credentials") == []
    refused = diff.via_envoy(port, denied)
    assert (refused.status, refused.body) == (401, b"denied by assemblyscript: /as/deny/it")
    assert refused.headers.get_all("x-denied-by") == ["as-sdk"]
    assert "as sdk: greeting from-sdk-config" in messages(
        diff.wait_envoy_log(vm_id, "as sdk: greeting from-sdk-config")
    )

    plugin = Plugin.load(wasm, root_id="as_sdk", vm_id=vm_id, config="from-sdk-config")
    by_host = diff.via_host(plugin, passed)
    assert by_host.json()["headers"]["X-As-Greeting"] == "from-sdk-config"
    assert by_host.json()["headers"]["User-Agent"] == "as-sdk"
    assert by_host.headers.get_all("x-as-response") == ["from-sdk-config"]
    assert by_host.headers.get_all("access-control-allow-credentials") == []
    by_host = diff.via_host(plugin, denied)
    assert (by_host.status, by_host.body, by_host.headers.get_all("x-denied-by")) == (
        401,
        b"denied by assemblyscript: /as/deny/it",
        ["as-sdk"],
    )
    assert "as sdk: greeting from-sdk-config" in plugin.logs_at("info")
