"""What real plugins use, driven from tests: timers on a test clock, HTTP callouts answered by a
responder or a real upstream, gRPC calls and streams, shared data and queues across VMs,
metrics, properties, bodies. Where Envoy's behaviour is subtle the same cases also run through
the real Envoy in tests/integration/test_host_differential.py (named in each test here)."""

from __future__ import annotations

import pytest

from meshwasm.host import (
    Action,
    Attributes,
    HttpResponse,
    Plugin,
    PluginError,
    SharedData,
    SharedQueues,
    forward_to,
)
from meshwasm.host.properties import parse_path

CALLOUT_REQUEST = {":method": "GET", ":path": "/status/200", ":authority": "example.com"}


# -- timers ---------------------------------------------------------------------------------------


def test_advancing_the_clock_runs_the_ticks_that_fall_due(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="tick_queue")
    assert plugin.tick_period_ms == 1000
    assert plugin.advance(999) == 0
    assert plugin.advance(1) == 1  # 1000 ms after the period was set
    assert plugin.advance(2500) == 2
    assert [m for m in plugin.logs_at("info") if m.startswith("dequeued")] == [
        "dequeued: tick 1",
        "dequeued: tick 2",
        "dequeued: tick 3",
    ]
    frozen = plugin.now_ns
    assert frozen is not None
    plugin.advance(500)
    assert plugin.now_ns == frozen + 500_000_000


# -- HTTP callouts ----------------------------------------------------------------------------------


def test_a_responder_answers_after_the_dispatching_callback_returns(sdk_examples_wasm):
    seen = []

    def responder(call):
        seen.append((call.upstream, call.path, call.token))
        return HttpResponse(200, [("x-from", "responder")], b"ok")

    plugin = Plugin.load(sdk_examples_wasm, root_id="http_callout", http_responder=responder)
    stream = plugin.http_stream()
    # The plugin paused to wait; by the time the call returns Envoy (and the host) answered it.
    assert stream.send_request_headers(CALLOUT_REQUEST, end_of_stream=True) == Action.PAUSE
    assert seen == [("httpbin", "/status/200", 4)]  # Envoy's first HTTP callout token
    assert not stream.request_paused
    assert "callout answered 200 with 2 body bytes" in plugin.logs_at("info")
    assert plugin.pending_http_calls == []


def test_a_callout_times_out_when_the_clock_passes_its_timeout(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="http_callout")
    stream = plugin.http_stream()
    stream.send_request_headers(CALLOUT_REQUEST, end_of_stream=True)
    (call,) = plugin.pending_http_calls
    assert call.timeout_ms == 5000
    plugin.advance(4999)
    assert plugin.pending_http_calls == [call]
    plugin.advance(1)
    assert plugin.pending_http_calls == []
    assert stream.local_response is not None  # Envoy's 504 is not a 2xx: the plugin denies
    assert "callout answered 504 with 24 body bytes" in plugin.logs_at("info")


def test_callouts_answered_by_a_real_upstream(sdk_examples_wasm, httpbin):
    plugin = Plugin.load(sdk_examples_wasm, root_id="http_callout", http_responder=forward_to(httpbin.url))
    granted = plugin.http_stream()
    granted.send_request_headers(CALLOUT_REQUEST, end_of_stream=True)
    assert granted.local_response is None
    assert not granted.request_paused
    denied = plugin.http_stream()
    denied.send_request_headers({**CALLOUT_REQUEST, ":path": "/status/418"}, end_of_stream=True)
    assert denied.local_response is not None
    assert denied.local_response.status == 403
    assert "callout answered 418 with" in " ".join(plugin.logs_at("info"))


def test_a_refused_connection_is_envoys_503_not_a_failure(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="http_callout")
    stream = plugin.http_stream()
    stream.send_request_headers(CALLOUT_REQUEST, end_of_stream=True)
    plugin.pending_http_calls[0].connection_refused()
    assert "callout answered 503 with 98 body bytes" in plugin.logs_at("info")
    plugin.http_stream().send_request_headers(CALLOUT_REQUEST, end_of_stream=True)
    call = plugin.pending_http_calls[0]
    call.respond(200)
    with pytest.raises(PluginError, match="already answered"):
        call.respond(200)


# -- gRPC (tests/fixtures/wasm/grpc.wat; statuses checked against Envoy in the differential suite) ----


def test_grpc_call_and_stream_answered_by_the_test(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["grpc"], clusters=["grpc"])
    plugin.http_stream().send_request_headers({":path": "/"})
    call, stream = plugin.pending_grpc_calls
    assert (call.kind, call.token, call.cluster, call.service_name, call.method, call.request) == (
        "call",
        5,
        "grpc",
        "meshwasm.Echo",
        "Say",
        b"ping",
    )
    assert (stream.kind, stream.token, stream.messages) == ("stream", 6, [b"hello"])
    call.respond(b"pong")
    stream.receive_initial_metadata({"x-md": "1"})
    stream.receive(b"one")  # the module closes its side after the first message
    assert stream.closed_by_plugin
    stream.receive_trailing_metadata({"grpc-status": "14"})
    stream.close(14, "unavailable")
    assert plugin.logs_at("info")[-10:] == [
        "received=4",
        "pong",
        "initial_metadata=1",
        "received=3",
        "one",
        "close_stream=0",
        "trailing_metadata=1",
        "closed=14",
        "closed_token=6",
        "unavailable",
    ]
    assert plugin.pending_grpc_calls == []


def test_grpc_statuses_envoy_answers(host_wat_modules):
    known = Plugin.load(host_wat_modules["grpc"], clusters=["grpc"])
    known.http_stream().send_request_headers({":path": "/"})
    assert known.logs_at("info")[-3:] == ["close_not_grpc=2", "close_unknown=1", "cancel_http_id=2"]
    assert "send_on_call=2" in known.logs_at("info")
    unknown = Plugin.load(host_wat_modules["grpc"], clusters=["other"])
    unknown.http_stream().send_request_headers({":path": "/"})
    assert unknown.logs_at("info")[:2] == ["grpc_call=4", "grpc_stream=4"]  # ParseFailure
    failed = Plugin.load(host_wat_modules["grpc"], clusters=["grpc"])
    failed.http_stream().send_request_headers({":path": "/"})
    failed.pending_grpc_calls[0].fail(14, "no healthy upstream")
    assert failed.logs_at("info")[-3:] == ["closed=14", "closed_token=5", "no healthy upstream"]


# -- shared data and queues --------------------------------------------------------------------------


def test_shared_data_is_per_vm_id(sdk_examples_wasm):
    shared = SharedData()
    same = [
        Plugin.load(sdk_examples_wasm, root_id="shared_data", vm_id="a", shared_data=shared) for _ in range(2)
    ]
    other = Plugin.load(sdk_examples_wasm, root_id="shared_data", vm_id="b", shared_data=shared)
    for plugin in [*same, other, same[0]]:
        plugin.http_stream().send_request_headers({})
    assert same[0].logs_at("info") == ["shared value: 1", "shared value: 3"]
    assert same[1].logs_at("info") == ["shared value: 2"]
    assert other.logs_at("info") == ["shared value: 1"]  # its own vm_id: its own namespace


def test_shared_data_compare_and_swap(load_plugin, sdk_examples_wasm):
    shared = SharedData()
    assert shared.set(b"k", b"v1", 0) == 0
    _, cas = shared.get(b"k") or (b"", 0)
    assert shared.set(b"k", b"v2", cas + 1) == 8  # CasMismatch
    assert shared.set(b"k", b"v2", cas) == 0
    assert shared["k"] == b"v2"


def test_shared_queues_across_vms(host_wat_modules):
    queues = SharedQueues()
    wasm = host_wat_modules["queue_peer"]
    a = Plugin.load(wasm, vm_id="a", vm_config="b", config=b"\x02", shared_queues=queues)
    b = Plugin.load(wasm, vm_id="b", vm_config="a", config=b"\x02", shared_queues=queues)
    a.tick()  # a enqueues on b's queue; the answers bounce twice each way
    assert b.logs_at("info") == ["got ping"] * 3
    assert a.logs_at("info") == ["got ping"] * 2


# -- metrics ----------------------------------------------------------------------------------------


def test_metric_ids_and_values_as_envoy_numbers_them(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="metrics")
    state = plugin.state
    from meshwasm.host.abi import MetricType

    assert state.define_metric(MetricType.COUNTER, "c") == 4
    assert state.define_metric(MetricType.GAUGE, "g") == 5
    assert state.define_metric(MetricType.HISTOGRAM, "h") == 6
    assert state.define_metric(MetricType.COUNTER, "c") == 8  # a new id, the same counter
    for value in ("x", "x", "y"):
        stream = plugin.http_stream()
        stream.send_request_headers({"my-custom-header": value})
    assert plugin.metrics["custom_header_value_counts_value=x_reporter=wasmgosdk"] == 2
    assert plugin.metrics["c"] == 0


# -- properties ---------------------------------------------------------------------------------------


def test_properties_a_stream_answers(sdk_examples_wasm):
    attributes = Attributes(destination_port=8443, node_id="node-1", cluster_name="backend")
    plugin = Plugin.load(
        sdk_examples_wasm, root_id="probe", name="my-plugin", vm_id="vm", attributes=attributes
    )
    paths = "request.path,request.query,destination.port,xds.node.id,xds.cluster_name,plugin_name,nope"
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/a?b=1", "x-probe": "properties", "x-paths": paths})
    lines = [m for m in plugin.logs_at("info") if m.startswith("request ")]
    assert lines[:7] == [
        f"request request.path={b'/a?b=1'.hex()}",
        f"request request.query={b'b=1'.hex()}",
        f"request destination.port={(8443).to_bytes(8, 'little').hex()}",
        f"request xds.node.id={b'node-1'.hex()}",
        f"request xds.cluster_name={b'backend'.hex()}",
        f"request plugin_name={b'my-plugin'.hex()}",
        "request nope=!error status returned by host: not found",
    ]
    # On the root context there is no stream: set_property answers NotFound, as in Envoy.
    assert "start set_property=error status returned by host: not found" in plugin.logs_at("info")


def test_a_property_path_that_is_not_utf8_is_simply_not_found(load_plugin, sdk_examples_wasm):
    assert parse_path(b"request\0\xff\xfe") == ("request", "\udcff\udcfe")
    plugin = load_plugin(sdk_examples_wasm, root_id="probe")
    assert plugin.state.get_property(parse_path(b"request\0\xff\xfe")) is None


# -- bodies -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "seen", "forwarded"),
    [
        (1, ["body 4 false", "body 8 false", "body 13 false", "body 13 true"], b"one-two-three"),
        (2, ["body 4 false", "body 4 false", "body 5 false", "body 0 true"], b"one-two-three"),
        (3, ["body 4 false", "body 4 false", "body 5 false", "body 0 true"], b""),
    ],
)
def test_body_buffering_semantics(sdk_examples_wasm, action, seen, forwarded):
    """StopIterationAndBuffer / AndWatermark / NoBuffer, as Envoy does them (the same case runs
    through Envoy in test_body_buffering_as_in_envoy)."""
    plugin = Plugin.load(sdk_examples_wasm, root_id="probe")
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/", "x-probe": "body", "x-body-action": str(action)})
    for chunk in (b"one-", b"two-", b"three"):
        assert stream.send_request_body(chunk, end_of_stream=False) == action
        assert stream.request_paused
    assert stream.send_request_body(b"", end_of_stream=True) == Action.CONTINUE
    assert [m for m in plugin.logs_at("info") if m.startswith("body ")] == seen
    assert stream.request_body == forwarded
