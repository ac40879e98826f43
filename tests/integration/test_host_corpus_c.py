"""C and C++ plugins written against the proxy-wasm ABI (no SDK), built with zig cc / zig c++ for
wasm32-wasi (reactor, wasi-libc, libc++) and wasm32-freestanding (no libc, no WASI), each run
through the real Envoy and through meshwasm's host with the same inputs (tests/fixtures/corpus).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fixtures.differential import Differential, Request, messages, next_name
from meshwasm.host import Action, Attributes, PeerType, Plugin
from meshwasm.net import wait_until

pytestmark = pytest.mark.envoy

VARIANTS = ["wasi", "freestanding"]


def serve_both(
    diff: Differential, wasm: Path, config: Any = None, **host_options: Any
) -> tuple[str, int, Plugin]:
    """The module on Envoy (its own VM: the plugins keep state in globals) and in the host."""
    root_id = f"{wasm.stem}-{next_name()}"
    port = diff.serve(wasm, root_id=root_id, vm_id=root_id, config=config)
    plugin = Plugin.load(wasm, root_id=root_id, config=config, **host_options)
    return root_id, port, plugin


def distinct(items: list[str]) -> list[str]:
    """In first-seen order: Envoy runs root-context callbacks on the main thread and each worker."""
    return list(dict.fromkeys(items))


@pytest.mark.parametrize("variant", VARIANTS)
def test_headers_added_replaced_removed(diff, corpus_module, variant):
    root_id, port, plugin = serve_both(diff, corpus_module(f"c-headers-{variant}"), config="from-config")
    request = Request(
        path="/headers", headers=[("x-input", "hello"), ("x-remove-me", "gone"), ("user-agent", "test-agent")]
    )
    # What the plugin removes from responses is there without it.
    assert diff.client.get(f"{diff.httpbin.url}/headers").headers["access-control-allow-credentials"]
    for side, outcome in (("Envoy", diff.via_envoy(port, request)), ("host", diff.via_host(plugin, request))):
        seen = outcome.json()["headers"]
        assert seen["X-C-Added"] == "from-config", side
        assert seen["X-C-Repeated"] == "one,two", side
        assert seen["User-Agent"] == "c-plugin", side
        assert "X-Remove-Me" not in seen, side
        assert outcome.headers.get_all("x-c-response") == ["from-config"], side
        assert outcome.headers.get_all("content-type") == ["application/json; c=1"], side
        assert outcome.headers.get_all("access-control-allow-credentials") == [], side
    wanted = ["configured value: from-config", "x-input: hello"]
    if variant == "wasi":  # printf through wasi-libc: fd_write to stdout, logged at info
        wanted.insert(0, "c headers plugin: vm started (wasi)")
    assert plugin.logs_at("info") == wanted
    assert distinct(messages(diff.wait_envoy_log(root_id, wanted[-1]))) == wanted


@pytest.mark.parametrize("variant", VARIANTS)
def test_body_buffered_until_end_of_stream_and_rewritten(diff, corpus_module, variant):
    root_id, port, plugin = serve_both(diff, corpus_module(f"c-body-{variant}"))
    request = Request(method="POST", path="/anything", body=b"hello body")
    by_envoy, by_host = diff.via_envoy(port, request), diff.via_host(plugin, request)
    assert by_envoy.json()["data"] == by_host.json()["data"] == "C<HELLO BODY>"

    # Chunked: Envoy hands the chunks over as they come; the plugin buffers until end_of_stream.
    def chunks():
        yield b"first "
        yield b"second"

    response = diff.client.post(f"http://127.0.0.1:{port}/anything", content=chunks(), headers={"host": "x"})
    assert response.json()["data"] == "C<FIRST SECOND>"
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/anything", ":method": "POST", "content-length": "12"})
    assert stream.send_request_body(b"first ", end_of_stream=False) == Action.PAUSE  # StopIterationAndBuffer
    assert stream.send_request_body(b"second", end_of_stream=True) == Action.CONTINUE
    assert stream.request_body == b"C<FIRST SECOND>"
    assert stream.request_headers.get_all("content-length") == []
    stream.complete()

    reversed_reply = Request(path="/base64/aGVsbG8gd29ybGQ=")  # httpbin answers "hello world"
    by_envoy, by_host = diff.via_envoy(port, reversed_reply), diff.via_host(plugin, reversed_reply)
    assert by_envoy.body == by_host.body == b"dlrow olleh"
    assert "request body: 10 bytes, status 0" in plugin.logs_at("info")
    assert "request body: 10 bytes, status 0" in messages(
        diff.wait_envoy_log(root_id, "request body: 10 bytes, status 0")
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_local_reply(diff, corpus_module, variant):
    root_id, port, plugin = serve_both(diff, corpus_module(f"c-local_reply-{variant}"))
    denied = Request(path="/deny/this")
    for side, outcome in (("Envoy", diff.via_envoy(port, denied)), ("host", diff.via_host(plugin, denied))):
        assert (outcome.status, outcome.body) == (403, b"denied by c: /deny/this\n"), side
        assert outcome.headers.get_all("x-denied-by") == ["c-local-reply"], side
        assert outcome.headers.get_all("content-type") == ["text/plain"], side
    allowed = Request(path="/status/202")
    assert diff.via_envoy(port, allowed).status == diff.via_host(plugin, allowed).status == 202
    assert plugin.logs_at("info") == ["local reply status 0"]
    assert messages(diff.wait_envoy_log(root_id, "local reply status 0")) == ["local reply status 0"]


PROPERTIES_REQUEST = Request(method="POST", path="/anything/p?q=1", body=b"")
# Envoy forgets the request header map once on_request_headers continues (its Context drops the
# pointer), so the header-derived request.* properties answer NotFound from then on.
RESPONSE_PHASE_PATH = "status 1"


@pytest.mark.parametrize("variant", VARIANTS)
def test_properties(diff, corpus_module, variant):
    root_id, port, plugin = serve_both(diff, corpus_module(f"c-properties-{variant}"))
    request = PROPERTIES_REQUEST
    for side, outcome in (("Envoy", diff.via_envoy(port, request)), ("host", diff.via_host(plugin, request))):
        seen = outcome.json()["headers"]
        assert seen["X-C-Path"] == "/anything/p?q=1", side
        assert seen["X-C-Method"] == "POST", side
        assert seen["X-C-Root-Id"] == root_id, side
        assert seen["X-C-Missing"] == "status 1", side  # NotFound
        assert outcome.headers.get_all("x-c-root-id") == [root_id], side
        assert outcome.headers.get_all("x-c-path") == [RESPONSE_PHASE_PATH], side
    wanted = f"plugin_root_id at configure: {root_id}"
    assert plugin.logs_at("info") == [wanted]
    assert distinct(messages(diff.wait_envoy_log(root_id, wanted))) == [wanted]


@pytest.mark.parametrize("variant", VARIANTS)
def test_metrics_counter_and_gauges(diff, corpus_module, variant):
    prefix = f"c_corpus_{variant}_{next_name()}"
    root_id, port, plugin = serve_both(diff, corpus_module(f"c-metrics-{variant}"), config=prefix)
    paths = ["/get", "/headers", "/anything/xyz"]
    for number, path in enumerate(paths, start=1):
        by_envoy, by_host = (
            diff.via_envoy(port, Request(path=path)),
            diff.via_host(plugin, Request(path=path)),
        )
        expected = [f"{number} requests, 1 in flight"]
        assert by_envoy.headers.get_all("x-c-metrics") == by_host.headers.get_all("x-c-metrics") == expected
    wanted = {f"{prefix}_requests": 3, f"{prefix}_in_flight": 0, f"{prefix}_last_path_len": len(paths[-1])}
    assert plugin.metrics == wanted

    def envoy_values() -> dict[str, int]:
        stats = diff.envoy.admin.stats(f"wasmcustom.{prefix}")
        return {name.removeprefix("wasmcustom."): value for name, value in stats.items()}

    assert wait_until(lambda: envoy_values() == wanted, timeout=10), envoy_values()
    # A counter cannot go down: BadArgument (2) from both.
    assert plugin.logs_at("info") == ["decrementing a counter: status 2"] * 3
    assert (
        messages(diff.wait_envoy_log(root_id, "decrementing a counter: status 2", count=3))
        == ["decrementing a counter: status 2"] * 3
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_timer_ticks_then_stops(diff, corpus_module, variant):
    root_id, port, plugin = serve_both(diff, corpus_module(f"c-tick-{variant}"), config="50")
    assert plugin.tick_period_ms == 50
    for _ in range(3):
        plugin.tick()
    assert plugin.tick_period_ms == 0  # the plugin stopped its timer after the third tick
    assert plugin.logs_at("info") == ["tick 1", "tick 2", "tick 3"]
    assert diff.via_host(plugin, Request()).headers.get_all("x-c-ticks") == ["3"]

    # Envoy ticks on its own clock (every thread with the plugin has its root context and timer).
    diff.wait_envoy_log(root_id, "tick 3")
    assert wait_until(
        lambda: diff.via_envoy(port, Request()).headers.get_all("x-c-ticks") == ["3"],
        timeout=10,
        interval=0.1,
    )
    ticks = messages(diff.envoy_logs(root_id))
    assert set(ticks) == {"tick 1", "tick 2", "tick 3"}
    assert ticks.index("tick 1") < ticks.index("tick 2") < ticks.index("tick 3")


@pytest.mark.parametrize("variant", VARIANTS)
def test_shared_data_cas(diff, corpus_module, variant):
    key = f"c-shared-{variant}-{next_name()}"
    root_id, port, plugin = serve_both(diff, corpus_module(f"c-shared_data-{variant}"), config=key)
    for number in (1, 2, 3):
        by_envoy, by_host = (
            diff.via_envoy(port, Request(path="/headers")),
            diff.via_host(plugin, Request(path="/headers")),
        )
        assert (
            by_envoy.json()["headers"]["X-C-Shared"] == by_host.json()["headers"]["X-C-Shared"] == str(number)
        )
    wanted = [
        "read status 1, write status 0, value 1",  # NotFound, then a write with CAS 0
        "read status 0, write status 0, value 2",
        "stale cas write status 8",  # CasMismatch
        "read status 0, write status 0, value 3",
        "stale cas write status 8",
    ]
    assert plugin.logs_at("info") == wanted
    assert messages(diff.wait_envoy_log(root_id, wanted[-1], count=2)) == wanted


@pytest.mark.parametrize("variant", VARIANTS)
def test_http_callout_pauses_and_resumes(diff, corpus_module, variant):
    root_id, port, plugin = serve_both(diff, corpus_module(f"c-callout-{variant}"), clusters=["httpbin"])
    granted = Request(path="/headers", headers=[("x-callout-path", "/base64/Y2FsbG91dA==")])  # "callout"
    for side, outcome in (("Envoy", diff.via_envoy(port, granted)), ("host", diff.via_host(plugin, granted))):
        seen = outcome.json()["headers"]
        assert (seen["X-Callout-Status"], seen["X-Callout-Body"]) == ("200", "callout"), side
    refused = Request(path="/headers", headers=[("x-callout-path", "/status/418")])
    by_envoy, by_host = diff.via_envoy(port, refused), diff.via_host(plugin, refused)
    assert (by_envoy.status, by_envoy.body) == (by_host.status, by_host.body) == (403, b"callout said 418")
    wanted = [
        "dispatch /base64/Y2FsbG91dA==: status 0",
        "callout answered 200 with 7 body bytes",
        "dispatch /status/418: status 0",
        "callout answered 418 with 135 body bytes",  # httpbin's teapot,
    ]
    assert plugin.logs_at("info") == wanted
    assert messages(diff.wait_envoy_log(root_id, wanted[-1])) == wanted


# -- C++ ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_cpp_router(diff, corpus_module, variant):
    root_id, port, plugin = serve_both(diff, corpus_module(f"cpp-router-{variant}"), config="bonjour")
    for path, status, body in [
        ("/cpp/hello/x", 200, b"hello from c++ (/cpp/hello/x)\n"),
        ("/cpp/teapot", 418, b"short and stout (/cpp/teapot)\n"),
    ]:
        request = Request(path=path)
        for side, outcome in (
            ("Envoy", diff.via_envoy(port, request)),
            ("host", diff.via_host(plugin, request)),
        ):
            assert (outcome.status, outcome.body) == (status, body), side
            assert outcome.headers.get_all("x-cpp-route") == [
                path[: len("/cpp/hello")] if "hello" in path else path
            ]
    passed = Request(path="/headers")
    for side, outcome in (("Envoy", diff.via_envoy(port, passed)), ("host", diff.via_host(plugin, passed))):
        seen = outcome.json()["headers"]
        # 2 routes: the static constructors ran (through `_initialize`) before any callback.
        assert (seen["X-Cpp-Routes"], seen["X-Cpp-Greeting"]) == ("2", "bonjour"), side
        assert outcome.headers.get_all("x-cpp-path-length") == ["8"], side
    wanted = [
        "c++ router configured with 2 routes, greeting bonjour",
        "c++ stream done: /cpp/hello/x",
        "c++ stream done: /cpp/teapot",
        "c++ stream done: /headers",
    ]
    assert plugin.logs_at("info") == wanted
    assert distinct(messages(diff.wait_envoy_log(root_id, wanted[-1]))) == wanted


# -- network (L4): network.c in front of a TCP proxy to httpbin ----------------------------------------

# A request in three reads: the plugin holds the first two (StopIteration) until the header block
# is complete, so the third callback sees all of it and inserts x-wasm-l4: 3.
NETWORK_REQUEST = [
    b"GET /anything/l4 HTTP/1.1\r\nHost: l4.example\r\n",
    b"User-Agent: c-network\r\nConnection: close\r\n",
    b"\r\n",
]


def network_logs(cluster: str) -> list[str]:
    """What network.c logs for NETWORK_REQUEST (Envoy and the host alike)."""
    return [
        "new connection",
        "new connection.mtls=00",
        "new xds.cluster_name=!1",  # the TCP proxy has not picked its cluster yet
        "new request.path=!1",
        "http calls on a connection: get_header=2 add_header=2 request_body=0 continue_request=0"
        " close_response=0 continue_upstream=12 local_response=0 read_downstream=0 write_downstream=2",
        f"downstream data {len(NETWORK_REQUEST[0])} end_of_stream 0",
        f"downstream data {len(b''.join(NETWORK_REQUEST[:2]))} end_of_stream 0",
        f"downstream data {len(b''.join(NETWORK_REQUEST))} end_of_stream 0",
        f"data xds.cluster_name={cluster.encode().hex()}",
        "rewrite: 0",
        "upstream first line: HTTP/1.1 200 OK",
        "upstream prefix replaced: 0",  # start 0, length 8: Envoy drains 8 bytes and prepends
        f"upstream xds.cluster_name={cluster.encode().hex()}",
        "continue upstream: 12",
        "upstream end of stream",
        "upstream close, peer 0",
        "downstream data 0 end_of_stream 1",  # the client closes its socket: first its end of stream
        "downstream close, peer 2",
        "connection done",
        "connection log",
        "connection deleted after downstream callbacks: 4",
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_filter(diff, corpus_module, variant):
    wasm = corpus_module(f"c-network-{variant}")
    root_id = f"{wasm.stem}-{next_name()}"
    port, cluster = diff.serve_network(wasm, root_id=root_id, vm_id=root_id)
    by_envoy = diff.tcp_via_envoy(port, NETWORK_REQUEST)
    envoy_logs = messages(diff.wait_envoy_log(root_id, "connection deleted after downstream callbacks: 4"))

    plugin = Plugin.load(wasm, root_id=root_id, attributes=Attributes(cluster_name=cluster))
    connection = plugin.tcp_stream()
    by_host = diff.tcp_via_host(connection, NETWORK_REQUEST)

    for side, outcome in (("Envoy", by_envoy), ("host", by_host)):
        head, _, body = outcome.received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), side
        seen = json.loads(body)["headers"]  # what httpbin received
        assert (seen["X-Wasm-L4"], seen["User-Agent"]) == ("3", "c-network"), side
    wanted = network_logs(cluster)
    # Envoy reads the upstream's answer in as many pieces as it arrives in; the plugin logs the
    # first only, so the lines do not depend on it.
    assert envoy_logs == wanted
    assert plugin.logs_at("info") == wanted
    assert connection.to_upstream.startswith(
        b"GET /anything/l4 HTTP/1.1\r\nx-wasm-l4: 3\r\nHost: l4.example\r\n"
    )
    assert connection.to_downstream == by_host.received


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_filter_closes_the_connection(diff, corpus_module, variant):
    """proxy_close_stream(Downstream): Envoy closes the connection (a local close) after the
    callback; the client gets nothing."""
    wasm = corpus_module(f"c-network-{variant}")
    root_id = f"{wasm.stem}-{next_name()}"
    port, cluster = diff.serve_network(wasm, root_id=root_id, vm_id=root_id)
    closing = [b"wasm-close\r\n"]
    by_envoy = diff.tcp_via_envoy(port, closing)
    envoy_logs = messages(diff.wait_envoy_log(root_id, "connection deleted after downstream callbacks: 1"))
    plugin = Plugin.load(wasm, root_id=root_id, attributes=Attributes(cluster_name=cluster))
    connection = plugin.tcp_stream()
    by_host = diff.tcp_via_host(connection, closing)
    assert by_envoy.received == by_host.received == b""
    wanted = [
        "downstream data 12 end_of_stream 0",
        "close downstream: 0",
        "downstream close, peer 1",  # Local: Envoy closed it
        "connection done",
        "connection log",
        "connection deleted after downstream callbacks: 1",
    ]
    assert envoy_logs[5:] == plugin.logs_at("info")[5:] == wanted
    assert (connection.closed, connection.closed_by_plugin, connection.to_upstream) == (
        PeerType.LOCAL,
        True,
        b"",
    )
