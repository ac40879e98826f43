"""Differential suite: the same exchanges through meshwasm's host and through the real Envoy
(the harness: tests/fixtures/differential.py).

Modules: add-header (each implementation), the SDK-example module
(tests/fixtures/sdk_examples; root_id picks the example), and two WAT fixtures.
One Wasm VM per module in Envoy (vm_id per module), so each compiles once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from fixtures.differential import AUTHORITY, Request, messages, next_name
from meshwasm.envoy import resources as r
from meshwasm.host import Attributes, HeaderMap, Plugin, PluginStartError, PluginTrap
from meshwasm.net import free_port, wait_until

pytestmark = pytest.mark.envoy

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = json.loads((ROOT / "plugins" / "add-header" / "testdata" / "contract.json").read_text())


# -- add-header: the contract's valid cases, and a refused configuration ---------------------------------


@pytest.mark.parametrize("case", CONTRACT["valid"], ids=[c["name"] for c in CONTRACT["valid"]])
def test_add_header_contract(diff, add_header_wasm, case):
    port = diff.serve(
        add_header_wasm,
        root_id="add-header",
        vm_id=f"add-header-{add_header_wasm.stem}",
        config=case["config"],
    )
    plugin = Plugin.load(add_header_wasm, config=case["config"], root_id="add-header")

    # Request side: httpbin echoes what reached it (repeated headers joined by ",").
    echo = Request(path="/headers", headers=[tuple(h) for h in case["request"]["in"]])
    seen_by_envoy = diff.via_envoy(port, echo).json()["headers"]
    seen_by_host = diff.via_host(plugin, echo).json()["headers"]
    for name, values in case["request"]["expect"].items():
        title = "-".join(part.capitalize() for part in name.split("-"))
        expected = ",".join(values) if values else None
        assert seen_by_envoy.get(title) == expected, f"Envoy, request {name}"
        assert seen_by_host.get(title) == expected, f"host, request {name}"

    # Response side: httpbin sets the case's incoming response headers.
    query = urlencode([tuple(h) for h in case["response"]["in"]])
    reply = Request(path=f"/response-headers?{query}" if query else "/response-headers")
    by_envoy, by_host = diff.via_envoy(port, reply), diff.via_host(plugin, reply)
    assert by_envoy.status == by_host.status == 200
    incoming = {name.lower() for name, _ in case["response"]["in"]}
    for name, values in case["response"]["expect"].items():
        # Joined, as a client sees repeats; headers httpbin itself also sets (content-type) are
        # compared between the two sides only.
        joined_envoy, joined_host = (
            ",".join(by_envoy.headers.get_all(name)),
            ",".join(by_host.headers.get_all(name)),
        )
        assert joined_envoy == joined_host, f"response {name}: Envoy vs host"
        if name not in incoming:
            assert by_host.headers.get_all(name) == values, f"host, response {name}"


def test_add_header_refused_configuration(diff, add_header_wasm):
    case = CONTRACT["invalid"][4]  # unknown key (typo)
    root_id = f"add-header-bad-{next_name()}"
    diff.serve(
        add_header_wasm,
        root_id=root_id,
        vm_id=f"add-header-{add_header_wasm.stem}",
        config=case["config"],
        expect_rejected=True,
    )
    with pytest.raises(PluginStartError) as refused:
        Plugin.load(add_header_wasm, config=case["config"], root_id=root_id)
    assert refused.value.critical == [case["critical"]]
    logs = diff.wait_envoy_log(root_id, case["critical"])
    assert ("critical", case["critical"]) in logs


# -- SDK examples --------------------------------------------------------------------------------------


def test_headers_example(diff, sdk_examples_wasm):
    config = {"header": "x-configured", "value": "from-config"}
    root_id = f"headers/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples", config=config)
    plugin = Plugin.load(sdk_examples_wasm, config=config, root_id=root_id)
    request = Request(path="/headers", headers=[("test", "worst")])
    by_envoy, by_host = diff.via_envoy(port, request), diff.via_host(plugin, request)
    assert by_envoy.json()["headers"]["Test"] == by_host.json()["headers"]["Test"] == "best"
    for name in ("x-proxy-wasm-go-sdk-example", "x-configured"):
        assert by_envoy.headers.get_all(name) == by_host.headers.get_all(name) != []
    wanted = [
        "adding header: x-configured=from-config",
        "request header --> test: best",
        "response header <-- x-configured: from-config",
    ]
    envoy_logs = messages(diff.wait_envoy_log(root_id, wanted[-1]))
    for message in wanted:
        assert message in envoy_logs
        assert message in plugin.logs_at("info")
    assert "header from config: x-configured = from-config" in envoy_logs
    assert plugin.logs_at("info")[0] == "header from config: x-configured = from-config"


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("append", "hello[this is appended body]"),
        ("prepend", "[this is prepended body]hello"),
        ("replace", "[this is replaced body]"),
    ],
)
def test_body_example_rewrites_the_request_body(diff, sdk_examples_wasm, operation, expected):
    root_id = f"body/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples")
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id)
    request = Request(
        method="POST", path="/anything", headers=[("buffer-operation", operation)], body=b"hello"
    )
    by_envoy, by_host = diff.via_envoy(port, request), diff.via_host(plugin, request)
    assert by_envoy.status == by_host.status == 200
    assert by_envoy.json()["data"] == by_host.json()["data"] == expected


def test_body_example_response_side_and_local_replies(diff, sdk_examples_wasm):
    root_id = f"body/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples")
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id)
    on_response = Request(
        method="POST", path="/anything", headers=[("buffer-replace-at", "response")], body=b"x"
    )
    by_envoy, by_host = diff.via_envoy(port, on_response), diff.via_host(plugin, on_response)
    assert by_envoy.body == by_host.body == b"[this is replaced body]"
    no_body = Request(path="/get")
    by_envoy, by_host = diff.via_envoy(port, no_body), diff.via_host(plugin, no_body)
    assert (
        (by_envoy.status, by_envoy.body)
        == (by_host.status, by_host.body)
        == (400, b"content must be provided")
    )

    echo_root = f"body/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=echo_root, vm_id="sdk-examples", config="echo")
    echo = Plugin.load(sdk_examples_wasm, root_id=echo_root, config="echo")
    request = Request(method="POST", path="/anything", body=b"say it back")
    by_envoy, by_host = diff.via_envoy(port, request), diff.via_host(echo, request)
    assert (by_envoy.status, by_envoy.body) == (by_host.status, by_host.body) == (200, b"say it back")


@pytest.mark.parametrize(("dice", "expected"), [("2", "canary"), ("3", "primary")])
def test_routing_example(diff, sdk_examples_wasm, dice, expected):
    routes_by_authority = {AUTHORITY: "primary", f"{AUTHORITY}-canary": "canary"}
    root_id = f"routing/{next_name()}"
    # One virtual host per authority, each answering with its own name.
    virtual_hosts = [
        r.virtual_host(body, [authority], [r.direct_response_route("/", 200, body)])
        for authority, body in routes_by_authority.items()
    ]
    port = diff.serve(
        sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples", config=dice, virtual_hosts=virtual_hosts
    )

    def upstream(headers: HeaderMap, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        return 200, [("content-type", "text/plain")], routes_by_authority[headers[":authority"]].encode()

    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id, config=dice)
    by_host = diff.via_host(plugin, Request(path="/"), upstream)
    assert diff.via_envoy(port, Request(path="/")).body == by_host.body == expected.encode()
    assert f"value: {ord(dice)}" in plugin.logs_at("info")
    assert f"value: {ord(dice)}" in messages(diff.wait_envoy_log(root_id, f"value: {ord(dice)}"))


def test_json_validation_example(diff, sdk_examples_wasm):
    config = {"requiredKeys": ["id", "name"]}
    root_id = f"json_validation/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples", config=config)
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id, config=config)
    json_type = [("content-type", "application/json")]
    cases = [
        (
            Request(method="POST", path="/anything", headers=[("content-type", "text/plain")], body=b"{}"),
            403,
            b"content-type must be provided",
        ),
        (
            Request(method="POST", path="/anything", headers=json_type, body=b'{"id": 1}'),
            403,
            b"invalid payload",
        ),
        (
            Request(method="POST", path="/anything", headers=json_type, body=b"not json"),
            403,
            b"invalid payload",
        ),
    ]
    for request, status, body in cases:
        by_envoy, by_host = diff.via_envoy(port, request), diff.via_host(plugin, request)
        assert (by_envoy.status, by_envoy.body) == (by_host.status, by_host.body) == (status, body)
    valid = Request(method="POST", path="/anything", headers=json_type, body=b'{"id": 1, "name": "x"}')
    by_envoy, by_host = diff.via_envoy(port, valid), diff.via_host(plugin, valid)
    assert by_envoy.status == by_host.status == 200
    assert by_envoy.json()["json"] == by_host.json()["json"] == {"id": 1, "name": "x"}
    assert "required key (name) is missing" in plugin.logs_at("error")
    assert ("error", "required key (name) is missing") in diff.wait_envoy_log(
        root_id, "required key (name) is missing"
    )


def test_metrics_example(diff, sdk_examples_wasm):
    root_id = f"metrics/{next_name()}"
    tag = f"d{next_name()}"  # metric names are process-wide in Envoy: keep this test's own
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples")
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id)
    for value in (f"{tag}a", f"{tag}b", f"{tag}a"):
        request = Request(headers=[("my-custom-header", value)])
        assert diff.via_envoy(port, request).status == diff.via_host(plugin, request).status == 200
    names = {
        f"custom_header_value_counts_value={tag}{v}_reporter=wasmgosdk": n for v, n in (("a", 2), ("b", 1))
    }
    assert plugin.metrics == names

    def envoy_counts() -> dict[str, int]:
        stats = diff.envoy.admin.stats(f"wasmcustom.custom_header_value_counts_value={tag}")
        return {name.removeprefix("wasmcustom."): value for name, value in stats.items()}

    assert wait_until(lambda: envoy_counts() == names, timeout=10), envoy_counts()


def test_shared_data_example(diff, sdk_examples_wasm):
    root_id = f"shared_data/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples")
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id)
    for _ in range(3):
        assert diff.via_envoy(port, Request()).status == diff.via_host(plugin, Request()).status == 200
    wanted = [f"shared value: {n}" for n in (1, 2, 3)]
    assert plugin.logs_at("info") == wanted
    assert [
        m for m in messages(diff.wait_envoy_log(root_id, wanted[-1])) if m.startswith("shared value")
    ] == wanted


@pytest.mark.parametrize(
    ("path", "status", "body"), [("/status/200", 200, b""), ("/status/418", 403, b"access forbidden")]
)
def test_http_callout_example(diff, sdk_examples_wasm, path, status, body):
    root_id = f"http_callout/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples")
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id, clusters=["httpbin"])
    by_envoy, by_host = diff.via_envoy(port, Request(path=path)), diff.via_host(plugin, Request(path=path))
    assert (by_envoy.status, by_envoy.body) == (by_host.status, by_host.body) == (status, body)
    verdict = "access granted" if status == 200 else "access forbidden"
    assert verdict in plugin.logs_at("info")
    assert verdict in messages(diff.wait_envoy_log(root_id, verdict))
    if status == 403:
        assert by_envoy.headers["powered-by"] == by_host.headers["powered-by"] == "proxy-wasm-go-sdk!!"


# -- other toolchains and lifecycle statuses -----------------------------------------------------------


def test_command_module(diff, host_wat_modules):
    wasm = host_wat_modules["command_malloc"]
    root_id = f"command/{next_name()}"
    port = diff.serve(wasm, root_id=root_id, vm_id=f"command-{next_name()}", config="configured by test")
    plugin = Plugin.load(wasm, root_id=root_id, config="configured by test")
    request = Request(path="/headers")
    by_envoy, by_host = diff.via_envoy(port, request), diff.via_host(plugin, request)
    assert by_envoy.json()["headers"]["X-Toolchain"] == by_host.json()["headers"]["X-Toolchain"] == "command"
    assert plugin.logs_at("info") == ["hello from _start", "configured by test"]
    assert ("info", "configured by test") in diff.wait_envoy_log(root_id, "configured by test")
    assert any(
        "wasm log: hello from _start" in line for line in diff.envoy.process.log_lines("hello from _start")
    )


def test_lifecycle_statuses_and_trap_match_envoy(diff, host_wat_modules):
    wasm = host_wat_modules["faults"]
    root_id = f"faults/{next_name()}"
    port = diff.serve(wasm, root_id=root_id, vm_id=f"faults-{next_name()}")
    plugin = Plugin.load(wasm, root_id=root_id)
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/anything", ":method": "POST"})
    stream.send_request_body(b"abc", end_of_stream=True)
    with pytest.raises(PluginTrap) as trapped:
        stream.send_response_headers({":status": "200"})
    assert trapped.value.callback == "proxy_on_response_headers"

    response = diff.via_envoy(port, Request(method="POST", path="/anything", body=b"abc"))
    assert response.status >= 500  # the VM failed in on_response_headers
    statuses = ["add request header in on_request_body: 2", "read response body in on_request_body: 0"]
    envoy_logs = messages(diff.wait_envoy_log(root_id, statuses[-1]))
    for message in statuses:
        assert message in envoy_logs
    assert plugin.logs_at("info") == statuses
    assert diff.envoy.process.log_lines("Function: proxy_on_response_headers failed")


# -- properties, body buffering, maps outside their callbacks, gRPC, failed callouts ------------------

PROPERTY_PATHS = [
    "request.path",
    "request.url_path",
    "request.query",
    "request.host",
    "request.method",
    "request.scheme",
    "request.protocol",
    "request.headers.x-probe",
    "request.useragent",
    "response.code",
    "destination.address",
    "destination.port",
    "connection.mtls",
    "plugin_name",
    "plugin_root_id",
    "plugin_vm_id",
    "xds.node.id",
    "xds.node.cluster",
    "xds.cluster_name",
    "xds.listener_direction",
    "node.id",
    "no_such.attribute",
]


def test_properties_serialize_as_in_envoy(diff, sdk_examples_wasm):
    root_id = f"probe/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples")
    attributes = Attributes(
        destination_port=port,
        node_id="meshwasm-gateway",
        node_cluster="meshwasm",
        cluster_name="httpbin",
    )
    plugin = Plugin.load(
        sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples", name=diff.filter_name, attributes=attributes
    )
    request = Request(
        path="/anything/x?q=1",
        headers=[("x-probe", "properties"), ("x-paths", ",".join(PROPERTY_PATHS)), ("user-agent", "ua/1")],
    )
    assert diff.via_envoy(port, request).status == diff.via_host(plugin, request).status == 200
    envoy = [m for m in messages(diff.wait_envoy_log(root_id, "properties done")) if m.startswith("request ")]
    ours = [m for m in plugin.logs_at("info") if m.startswith("request ")]
    assert ours == envoy
    for phase in ("response", "log"):
        envoy_phase = [m for m in messages(diff.envoy_logs(root_id)) if m.startswith(f"{phase} ")]
        assert [m for m in plugin.logs_at("info") if m.startswith(f"{phase} ")] == envoy_phase
    # Envoy starts the plugin once per VM (main thread, workers): the same lines each time.
    start = {m for m in messages(diff.envoy_logs(root_id)) if m.startswith("start ")}
    assert {m for m in plugin.logs_at("info") if m.startswith("start ")} == start


@pytest.mark.parametrize("action", [1, 2, 3])
def test_body_buffering_as_in_envoy(diff, sdk_examples_wasm, action):
    """A chunked body in three chunks (then the empty end-of-stream chunk, as Envoy reads it),
    the plugin stopping with FilterDataStatus ``action`` until the end: what each body callback
    sees, and what reaches the upstream."""
    root_id = f"probe/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples")
    chunks = [b"one-", b"two-", b"three"]
    headers = [("x-probe", "body"), ("x-body-action", str(action))]

    def send_chunks() -> Iterator[bytes]:
        for chunk in chunks:
            yield chunk
            time.sleep(0.2)  # separate reads in Envoy

    by_envoy = diff.client.post(
        f"http://127.0.0.1:{port}/anything", headers=[("host", AUTHORITY), *headers], content=send_chunks()
    )
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id)
    stream = plugin.http_stream()
    stream.send_request_headers(
        [
            (":authority", AUTHORITY),
            (":path", "/anything"),
            (":method", "POST"),
            *headers,
            ("transfer-encoding", "chunked"),
        ]
    )
    for chunk in chunks:
        stream.send_request_body(chunk, end_of_stream=False)
    stream.send_request_body(b"", end_of_stream=True)
    stream.complete()
    envoy_bodies = [m for m in messages(diff.wait_envoy_log(root_id, "body done")) if m.startswith("body ")]
    assert [m for m in plugin.logs_at("info") if m.startswith("body ")] == envoy_bodies
    assert by_envoy.json()["data"] == stream.request_body.decode()


def test_maps_outside_their_callbacks_as_in_envoy(diff, sdk_examples_wasm):
    """In a body callback the request headers have gone on and the response has not come:
    reading them, as pairs or one value. (Envoy's HTTP/1 codec hands a body with a
    content-length over as the data, then an empty end-of-stream chunk: the host is driven so.)"""
    root_id = f"probe/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples")
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id)
    request = Request(method="POST", path="/anything", headers=[("x-probe", "maps")], body=b"x")
    assert diff.via_envoy(port, request).status == 200
    stream = plugin.http_stream()
    stream.send_request_headers(
        [(":authority", AUTHORITY), (":path", "/anything"), (":method", "POST"), ("x-probe", "maps")]
    )
    stream.send_request_body(b"x", end_of_stream=False)
    stream.send_request_body(b"", end_of_stream=True)
    stream.send_response_headers({":status": "200", "content-type": "application/json"})
    stream.complete()
    envoy = [m for m in messages(diff.wait_envoy_log(root_id, "maps done")) if " in body: " in m]
    assert [m for m in plugin.logs_at("info") if " in body: " in m] == envoy
    assert envoy[:3] == [
        "request headers in body: 0 pairs, error status returned by host: not found",
        'request header in body: "", error status returned by host: bad argument',
        "response headers in body: 0 pairs, error status returned by host: not found",
    ]
    # Writing the request body once it has gone on: Envoy answers BadArgument.
    written = [m for m in messages(diff.envoy_logs(root_id)) if m.startswith("request body written")]
    assert [m for m in plugin.logs_at("info") if m.startswith("request body written")] == written
    assert written == [
        "request body written in response headers: error status returned by host: bad argument"
    ]


@pytest.mark.parametrize(
    ("phase", "body", "content_type"),
    [
        ("request", "", None),
        ("request", "denied", None),
        ("request", "{}", "application/json"),
        ("response", "late", None),
        ("response", "late", "application/json"),
    ],
)
def test_local_reply_as_in_envoy(diff, sdk_examples_wasm, phase, body, content_type):
    """A local reply from the request headers callback goes through the plugin's own response
    callbacks (which see its headers, body and response.code, and can add a header); one from
    the response headers callback replaces the upstream's response with its status and headers
    only (Envoy sends neither body), and no response callback runs after it."""
    root_id = f"probe/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples")
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id)
    headers = [("x-probe", "local_reply"), ("x-local-phase", phase), ("x-local-body", body)]
    if content_type is not None:
        headers.append(("x-local-content-type", content_type))
    request = Request(path="/get", headers=headers)
    by_envoy = diff.via_envoy(port, request)
    by_host = diff.via_host(plugin, request)
    assert by_envoy.status == by_host.status == 418
    assert by_envoy.body == by_host.body == (body.encode() if phase == "request" else b"")
    # Envoy's HTTP/1 codec adds content-length: 0 to a reply without a body, after the filters
    # (the plugin's log shows no such header).
    compared = ("x-local", "x-seen-by", "content-type") + (("content-length",) if by_envoy.body else ())
    for name in compared:
        assert by_host.headers.get_all(name) == by_envoy.headers.get_all(name), name

    def seen(lines: list[str]) -> list[str]:
        # Before a reply from the response phase, the plugin sees httpbin's own headers (a date,
        # a length that counts the client's headers): only how it saw them is compared.
        if phase == "response":
            lines = [m.split("): ")[0] if m.startswith("response headers (") else m for m in lines]
        return [m for m in lines if not m.startswith("start ")]

    envoy = seen(messages(diff.wait_envoy_log(root_id, "local_reply done")))
    assert seen(plugin.logs_at("info")) == envoy


@pytest.mark.parametrize("proto", ["", "envoy", "google"], ids=["cluster_name", "envoy_grpc", "google_grpc"])
@pytest.mark.parametrize("cluster", ["httpbin", "no_such_cluster"])
def test_grpc_dispatch_statuses_as_in_envoy(diff, host_wat_modules, cluster, proto):
    """The service as a cluster name (an unknown one answers ParseFailure) or as a serialized
    GrpcService: envoy_grpc (an unknown cluster answers InternalFailure, then closes with
    Unavailable) or google_grpc (Envoy's Google gRPC client takes any target: Ok)."""
    wasm = host_wat_modules["grpc"]
    root_id = f"grpc/{next_name()}"
    port = diff.serve(wasm, root_id=root_id, vm_id=f"grpc-{next_name()}")
    plugin = Plugin.load(wasm, root_id=root_id, clusters=["httpbin"])
    headers = [("x-grpc-cluster", cluster)] + ([("x-grpc-proto", proto)] if proto else [])
    request = Request(path="/get", headers=headers)
    diff.via_envoy(port, request)
    diff.via_host(plugin, request)
    dispatch = ("grpc_", "call_token", "stream_token", "send_on_call", "close_", "cancel_")
    envoy = [m for m in messages(diff.wait_envoy_log(root_id, "cancel_http_id=2")) if m.startswith(dispatch)]
    assert [m for m in plugin.logs_at("info") if m.startswith(dispatch)] == envoy
    assert len(envoy) == (9 if cluster == "httpbin" or proto == "google" else 5)
    if proto == "envoy" and cluster == "no_such_cluster":
        # No token reached the plugin, yet Envoy's client closes each call it started (Unavailable,
        # "Cluster not available"): the whole log, close callbacks included, is the same.
        envoy_all = messages(diff.wait_envoy_log(root_id, "Cluster not available", count=2))
        assert "closed=14" in envoy_all
        assert plugin.logs_at("info") == envoy_all


def test_failed_http_callout_as_in_envoy(diff, sdk_examples_wasm):
    """The callout's upstream refuses the connection: Envoy's router answers the callout with its
    own 503 (connection_refused() in the host), and the plugin denies the request."""
    diff.envoy.upsert_cluster(r.static_cluster("deadend", "127.0.0.1", free_port()))
    diff.envoy.wait_clusters({"deadend"})
    root_id = f"http_callout/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples", config="deadend")
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id, config="deadend")
    by_envoy = diff.via_envoy(port, Request(path="/status/200"))
    stream = plugin.http_stream()
    stream.send_request_headers({":method": "GET", ":path": "/status/200", ":authority": AUTHORITY})
    (call,) = plugin.pending_http_calls
    call.connection_refused()
    status = stream.local_response.status if stream.local_response else 200
    assert by_envoy.status == status
    ours = [(e.level_name, e.message) for e in plugin.logs]
    wait_until(lambda: len(diff.envoy_logs(root_id)) >= len(ours), timeout=10)
    assert ours == diff.envoy_logs(root_id)
