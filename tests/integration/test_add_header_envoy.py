"""The add-header plugin in the real Envoy, in front of the real httpbin.

Each case gets its own listener and ECDS filter on the session's Envoy; one
Wasm VM (same vm_id and module) serves them all, as in a gateway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshwasm.envoy import resources as r
from meshwasm.envoy.runtime import FileXdsEnvoy
from meshwasm.gateway.upstreams import HttpbinProcess
from meshwasm.net import free_port

pytestmark = pytest.mark.envoy

SEED_HOST = "httpbin.tetrate.io"


def serve_plugin(
    envoy: FileXdsEnvoy, httpbin: HttpbinProcess, wasm: Path, name: str, config: Any, *, timeout: str = "0s"
) -> int:
    """A listener on a free port routing to httpbin through add-header with ``config``.

    Names carry the module's name: the tests run once per implementation on
    the one session Envoy, and a listener cannot move to a new port."""
    name = scoped(name, wasm)
    envoy.upsert_cluster(r.static_cluster("httpbin", httpbin.host, httpbin.port))
    filter_name = f"test.{name}"
    envoy.set_filter(
        r.typed_extension_config(
            filter_name,
            r.wasm_filter_config(
                name=filter_name,
                root_id=name,
                filename=str(wasm),
                configuration=config if isinstance(config, str) else json.dumps(config),
                vm_id="add-header",
            ),
        )
    )
    port = free_port()
    envoy.upsert_listener(
        r.http_listener(
            name=name,
            address="127.0.0.1",
            port=port,
            virtual_hosts=[r.virtual_host("httpbin", ["*"], [r.route_to_cluster("/", "httpbin")])],
            http_filters=[
                r.ecds_http_filter(
                    filter_name, envoy.xds.ecds_source(filter_name, initial_fetch_timeout=timeout)
                )
            ],
        )
    )
    envoy.wait_listener_active(name)
    return port


def scoped(name: str, wasm: Path) -> str:
    return f"{name}.{wasm.stem}"


def seed_request(port: int) -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{port}/headers",
        headers={"host": SEED_HOST, "x-request-header": "some value"},
        timeout=10,
    )


def test_response_path_puts_the_header_on_the_response(envoy, httpbin, add_header_wasm):
    port = serve_plugin(
        envoy,
        httpbin,
        add_header_wasm,
        "response",
        {"header": "x-ingress-header", "value": "from tsb ingress gateway", "path": "response"},
    )
    response = seed_request(port)
    assert response.status_code == 200
    assert response.headers["x-ingress-header"] == "from tsb ingress gateway"
    # Not added to the request: httpbin does not echo it.
    assert "X-Ingress-Header" not in response.json()["headers"]


def test_request_path_is_seen_by_httpbin(envoy, httpbin, add_header_wasm):
    port = serve_plugin(
        envoy,
        httpbin,
        add_header_wasm,
        "request",
        {"header": "x-from-gateway", "value": "yes", "path": "request"},
    )
    response = seed_request(port)
    assert response.status_code == 200
    assert response.json()["headers"]["X-From-Gateway"] == "yes"
    assert "x-from-gateway" not in response.headers


def test_list_form_set_replaces_the_incoming_request_header(envoy, httpbin, add_header_wasm):
    port = serve_plugin(
        envoy,
        httpbin,
        add_header_wasm,
        "seed_demo",
        {
            "headers": [
                {"header": "x-ingress-header", "value": "from tsb ingress gateway", "path": "response"},
                {
                    "header": "x-request-header",
                    "value": "changed/created by wasm",
                    "path": "request",
                    "action": "set",
                },
            ]
        },
    )
    response = seed_request(port)
    assert response.status_code == 200
    assert response.headers["x-ingress-header"] == "from tsb ingress gateway"
    # httpbin joins repeated headers with a comma: exactly one value means it was replaced.
    assert response.json()["headers"]["X-Request-Header"] == "changed/created by wasm"


def test_add_action_keeps_the_incoming_value(envoy, httpbin, add_header_wasm):
    port = serve_plugin(
        envoy,
        httpbin,
        add_header_wasm,
        "add_beside",
        {"header": "x-request-header", "value": "added", "path": "request", "action": "add"},
    )
    echoed = seed_request(port).json()["headers"]["X-Request-Header"]
    assert echoed == "some value,added"


def test_bad_configuration_fails_closed_and_logs_the_plugin_message(envoy, httpbin, add_header_wasm):
    port = serve_plugin(
        envoy,
        httpbin,
        add_header_wasm,
        "bad_config",
        {"header": "x-ingress-header", "value": "v", "path": "sideways"},
        timeout="1s",  # the rejected filter never arrives; the listener warms without it
    )
    response = seed_request(port)
    assert response.status_code != 200
    assert response.status_code >= 500
    message = 'invalid configuration: path: must be "request" or "response", got "sideways"'
    lines = envoy.process.log_lines(message)
    assert lines, "Envoy's log does not carry the plugin's CRITICAL line"
    assert "critical" in lines[0]


def test_update_with_bad_configuration_keeps_the_previous_one_serving(envoy, httpbin, add_header_wasm):
    good = {"header": "x-ingress-header", "value": "first"}
    port = serve_plugin(envoy, httpbin, add_header_wasm, "keep_previous", good)
    assert seed_request(port).headers["x-ingress-header"] == "first"
    filter_name = f"test.{scoped('keep_previous', add_header_wasm)}"
    bad = r.typed_extension_config(
        filter_name,
        r.wasm_filter_config(
            name=filter_name,
            root_id=scoped("keep_previous", add_header_wasm),
            filename=str(add_header_wasm),
            configuration=json.dumps({"hedaer": "x"}),
            vm_id="add-header",
        ),
    )
    rejected_before = envoy.admin.stats("extension_config_discovery").get(
        f"extension_config_discovery.http_filter.{filter_name}.config_fail", 0
    )
    envoy.set_filter(bad)
    from meshwasm.net import wait_until

    assert wait_until(
        lambda: (
            envoy.admin.stats("extension_config_discovery").get(
                f"extension_config_discovery.http_filter.{filter_name}.config_fail", 0
            )
            > rejected_before
        ),
        timeout=15,
    )
    response = seed_request(port)
    assert response.status_code == 200
    assert response.headers["x-ingress-header"] == "first"
