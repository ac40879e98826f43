"""What the Istio-shaped gateway does in the real Envoy 1.40, as a plugin sees it.

tests/fidelity proves the translation is what istiod and its agent send; these run it in the
session's Envoy (file xDS, the local gateway's way) to show upstream Envoy takes every field the
pinned Istio emits (``failure_policy: FAIL_RELOAD``, the ``wasm-default-*`` stand-ins, network
ECDS filters, Istio's connection manager and route settings) and that they act: paths normalised,
the client named in x-envoy-external-address (use_remote_address), x-envoy-attempt-count,
``server: istio-envoy``, a FAIL_CLOSE module that is missing denying with 403 (counted under
``wasm-default-deny``), a missing NETWORK one closing the connection.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from meshwasm.envoy.runtime import FileXdsEnvoy
from meshwasm.gateway.upstreams import HttpbinProcess
from meshwasm.manifests import load
from meshwasm.net import free_port
from meshwasm.translate import EnvoyConfig, IstioResources, istio_to_envoy

pytestmark = pytest.mark.envoy

HOST = "shop.example.com"
ADD_HEADER_CONFIG = {"header": "x-plugin", "value": "ran", "path": "response"}


def tree(*plugins: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "edge"},
            "spec": {
                "selector": {"app": "edge"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [HOST]}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "shop", "namespace": "edge"},
            "spec": {
                "hosts": [HOST],
                "gateways": ["edge"],
                "http": [
                    {
                        "route": [
                            {
                                "destination": {
                                    "host": "httpbin.httpbin.svc.cluster.local",
                                    "port": {"number": 8000},
                                }
                            }
                        ]
                    }
                ],
            },
        },
        *plugins,
    ]


def plugin(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": name, "namespace": "edge"},
        "spec": {
            "selector": {"matchLabels": {"app": "edge"}},
            "url": f"oci://registry.example/{name}:v1",
            **spec,
        },
    }


@pytest.fixture
def serve(envoy: FileXdsEnvoy, httpbin: HttpbinProcess, tmp_path: Path) -> Iterator[Any]:
    """Translate a tree for the edge gateway and serve it on a free port of the session's Envoy."""
    served: list[EnvoyConfig] = []

    def start(docs: list[dict[str, Any]], modules: dict[str, str]) -> tuple[int, EnvoyConfig]:
        source = tmp_path / f"tree-{len(served)}.yaml"
        source.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        port = free_port()
        config = istio_to_envoy(
            IstioResources.from_resources(load(source).resources),
            workload_labels={"app": "edge"},
            workload_namespace="edge",
            module_files=modules,
            upstreams={"httpbin.httpbin.svc.cluster.local:8000": (httpbin.host, httpbin.port)},
            bind_address="127.0.0.1",
            port_map={80: port},
            xds=envoy.xds.ecds_source,
        )
        served.append(config)
        for cluster in config.clusters:
            envoy.upsert_cluster(cluster)
        for extension_config in config.filters:
            envoy.set_filter(extension_config)
        (listener,) = config.listeners
        envoy.upsert_listener(listener)
        envoy.wait_listener_active(listener["name"])
        for extension_config in config.filters:
            envoy.wait_filter_applied(extension_config)
        return port, config

    yield start
    for config in served:
        for listener in config.listeners:
            envoy.remove_listener(listener["name"])
        for extension_config in config.filters:
            envoy.remove_filter(extension_config["name"])


def raw_get(port: int, path: str) -> tuple[bytes, bytes]:
    """One HTTP/1.1 GET with the path exactly as given (clients would normalise it themselves)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_plugins_run_behind_istios_connection_manager(serve: Any, add_header_wasm: Path) -> None:
    import json

    docs = tree(
        plugin("headers", failStrategy="FAIL_RELOAD", pluginConfig=ADD_HEADER_CONFIG),
        plugin("open-missing", failStrategy="FAIL_OPEN"),
        plugin("net-open-missing", type="NETWORK", failStrategy="FAIL_OPEN"),
    )
    port, config = serve(docs, {"oci://registry.example/headers:v1": str(add_header_wasm)})
    wasm = next(f for f in config.filters if "headers" in f["name"])["typed_config"]["config"]
    assert wasm["failure_policy"] == "FAIL_RELOAD"
    head, body = raw_get(port, "/anything/a/../b")
    assert head.startswith(b"HTTP/1.1 200"), head
    headers = head.decode().lower()
    assert "x-plugin: ran" in headers  # the FAIL_RELOAD plugin runs; both stand-ins let it through
    assert "server: istio-envoy" in headers
    echoed = json.loads(body)
    assert echoed["url"].endswith("/anything/b")  # normalize_path, as on Istio's gateway
    # use_remote_address, no internal networks: the client is external and named so upstream.
    assert echoed["headers"]["X-Envoy-External-Address"] == "127.0.0.1"
    assert echoed["headers"]["X-Envoy-Attempt-Count"] == "1"  # include_request_attempt_count


def test_a_missing_fail_close_module_denies_with_istios_stat_prefix(serve: Any, envoy: FileXdsEnvoy) -> None:
    port, _ = serve(tree(plugin("closed-missing")), {})
    before = envoy.admin.stats(r"rbac\.wasm-default-deny\.denied")
    response = httpx.get(f"http://127.0.0.1:{port}/get", headers={"host": HOST}, timeout=10)
    assert response.status_code == 403
    after = envoy.admin.stats(r"rbac\.wasm-default-deny\.denied")
    assert sum(after.values()) == sum(before.values()) + 1


def test_a_missing_fail_close_network_module_closes_the_connection(serve: Any) -> None:
    port, _ = serve(tree(plugin("net-closed-missing", type="NETWORK")), {})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"http://127.0.0.1:{port}/get", headers={"host": HOST}, timeout=10)
