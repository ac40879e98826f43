"""The SDK-example behaviours in the host alone: metrics, shared data with CAS, routing, JSON
validation, callouts that fail. (tests/integration/test_host_differential.py runs them in Envoy too.)"""

from __future__ import annotations

from meshwasm.host import Action, Plugin, SharedData

JSON_REQUEST = {
    ":method": "POST",
    ":path": "/",
    ":authority": "example.com",
    "content-type": "application/json",
}


def test_metrics_count_per_header_value(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="metrics")
    for value in ["a", "b", "a", "a"]:
        stream = plugin.http_stream()
        stream.send_request_headers({"my-custom-header": value})
        stream.complete()
    assert plugin.metrics == {
        "custom_header_value_counts_value=a_reporter=wasmgosdk": 3,
        "custom_header_value_counts_value=b_reporter=wasmgosdk": 1,
    }


def test_shared_data_is_shared_across_plugins_of_one_vm_id(sdk_examples_wasm):
    shared = SharedData()
    workers = [Plugin.load(sdk_examples_wasm, root_id="shared_data", shared_data=shared) for _ in range(2)]
    for i in range(4):
        stream = workers[i % 2].http_stream()
        stream.send_request_headers({})
    seen = [message for worker in workers for message in worker.logs_at("info")]
    assert sorted(seen) == [f"shared value: {n}" for n in range(1, 5)]
    assert int.from_bytes(shared["shared_data_key"], "little") == 4


def test_routing_appends_canary_on_even_dice(sdk_examples_wasm):
    even = Plugin.load(sdk_examples_wasm, root_id="routing", config=b"\x02")
    stream = even.http_stream()
    stream.send_request_headers({":authority": "example.com"})
    assert stream.request_headers[":authority"] == "example.com-canary"
    odd = Plugin.load(sdk_examples_wasm, root_id="routing", config=b"\x03")
    stream = odd.http_stream()
    stream.send_request_headers({":authority": "example.com"})
    assert stream.request_headers[":authority"] == "example.com"
    assert odd.logs_at("info") == ["value: 3"]


def test_json_validation_answers_403_itself(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="json_validation", config={"requiredKeys": ["id"]})
    wrong_type = plugin.http_stream()
    assert wrong_type.send_request_headers({":path": "/", "content-type": "text/plain"}) == Action.PAUSE
    assert wrong_type.local_response is not None
    assert (wrong_type.local_response.status, wrong_type.local_response.body) == (
        403,
        b"content-type must be provided",
    )

    missing_key = plugin.http_stream()
    assert missing_key.send_request_headers(JSON_REQUEST) == Action.CONTINUE
    assert missing_key.send_request_body(b'{"name": "x"}') == Action.PAUSE
    assert missing_key.local_response is not None
    assert missing_key.local_response.body == b"invalid payload"
    assert plugin.logs_at("error") == ["required key (id) is missing"]

    valid = plugin.http_stream()
    valid.send_request_headers(JSON_REQUEST)
    assert valid.send_request_body(b'{"id": 1}') == Action.CONTINUE
    assert valid.local_response is None
    assert valid.request_body == b'{"id": 1}'


def test_http_callout_denied_and_failed(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="http_callout", clusters=["httpbin"])
    stream = plugin.http_stream()
    stream.send_request_headers({":method": "GET", ":path": "/status/401", ":authority": "h"})
    (call,) = plugin.pending_http_calls
    assert (call.upstream, call.path, call.method) == ("httpbin", "/status/401", "GET")
    call.respond(401, body="nope")
    assert stream.local_response is not None
    assert stream.local_response.status == 403
    assert stream.local_response.headers["powered-by"] == "proxy-wasm-go-sdk!!"
    assert "callout answered 401 with 4 body bytes" in plugin.logs_at("info")

    failed = plugin.http_stream()
    failed.send_request_headers({":method": "GET", ":path": "/", ":authority": "h"})
    # A reset: Envoy calls back with no response maps; reading them gives no pairs (Ok, which the
    # Go SDK reports as NotFound, as tests/integration/test_host_differential.py shows for maps
    # Envoy does not have); this plugin then fails open.
    plugin.pending_http_calls[0].fail()
    assert failed.local_response is None
    assert not failed.request_paused
    assert plugin.logs_at("critical") == [
        "failed to get response headers: error status returned by host: not found"
    ]


def test_http_call_to_an_unknown_cluster_is_refused(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="http_callout", clusters=["other"])
    stream = plugin.http_stream()
    assert stream.send_request_headers({":method": "GET", ":path": "/", ":authority": "h"}) == Action.CONTINUE
    assert plugin.pending_http_calls == []
    assert plugin.logs_at("critical") == [
        "dispatch httpcall failed: error status returned by host: bad argument"
    ]


def test_headers_example_logs_what_it_sees(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="headers", config={"header": "x-cfg", "value": "v"})
    stream = plugin.http_stream()
    stream.send_request_headers([(":path", "/"), ("test", "old")])
    stream.send_response_headers({":status": "200"})
    assert stream.request_headers.get_all("test") == ["best"]
    assert stream.response_headers["x-proxy-wasm-go-sdk-example"] == "http_headers"
    assert stream.response_headers["x-cfg"] == "v"
    assert "request header --> test: best" in plugin.logs_at("info")
    assert plugin.logs_at("info")[0] == "header from config: x-cfg = v"


def test_ticks_fill_a_shared_queue_drained_on_queue_ready(sdk_examples_wasm):
    plugin = Plugin.load(
        sdk_examples_wasm,
        root_id="tick_queue",
        foreign_functions={"double": lambda arg: str(2 * int(arg)).encode()},
    )
    assert plugin.tick_period_ms == 1000
    plugin.tick()
    plugin.tick()
    assert plugin.logs_at("info") == [
        "double(1) = 2",
        "dequeued: tick 1",
        "double(2) = 4",
        "dequeued: tick 2",
    ]


def test_foreign_function_not_configured_is_not_found(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="tick_queue")
    plugin.tick()
    assert plugin.logs_at("info")[0] == "no foreign function double: error status returned by host: not found"
