"""The gateway around the plugins: listeners, connection manager and routes as istiod makes them.

What a plugin sees depends on it: the path it gets (normalisation), the client address headers
(``use_remote_address``), whether a slow upstream times out (the route timeout: none in Istio,
15 s by Envoy's default) or is retried. Compared with Istio's own config generation through the
same view as the plugin cases (oracle_controlplane).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from oracle_controlplane import (
    GatewayCase,
    ask_oracle,
    diff,
    load_istio,
    meshwasm_view,
    oracle_view,
    translate,
)

from fixtures.oracle import IstioOracle

NS = "edge"
LABELS = {"app": "edge-gateway"}


def gateway(name: str, servers: list[dict[str, Any]], namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": LABELS, "servers": servers},
    }


def server(port: int, *hosts: str) -> dict[str, Any]:
    return {"port": {"number": port, "name": f"http-{port}", "protocol": "HTTP"}, "hosts": list(hosts)}


def destination(host: str, port: int = 8000, weight: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"destination": {"host": host, "port": {"number": port}}}
    if weight is not None:
        out["weight"] = weight
    return out


def virtual_service(
    name: str,
    hosts: list[str],
    gateways: list[str],
    http: list[dict[str, Any]],
    namespace: str = NS,
    created: str | None = None,
    export_to: list[str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        metadata["creationTimestamp"] = created
    spec: dict[str, Any] = {"hosts": hosts, "gateways": gateways, "http": http}
    if export_to is not None:
        spec["exportTo"] = export_to
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata,
        "spec": spec,
    }


def wasm_plugin() -> dict[str, Any]:
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "headers", "namespace": NS, "resourceVersion": "7"},
        "spec": {"selector": {"matchLabels": LABELS}, "url": "oci://registry.example/headers:v1"},
    }


HTTPBIN = "httpbin.httpbin.svc.cluster.local"
CANARY = "canary.httpbin.svc.cluster.local"

ROUTES = (
    # Listed second but named first: istiod takes Gateways by creation time, then name, so edge's
    # routes for extra.example.com come before second's.
    gateway("second", [server(80, "extra.example.com")]),
    gateway(
        "edge", [server(80, "shop.example.com", "*.api.example.com", "extra.example.com"), server(8080, "*")]
    ),
    virtual_service(
        "shop",
        ["shop.example.com", "v1.api.example.com"],
        ["edge"],
        [
            {
                "match": [
                    {"uri": {"exact": "/get"}, "headers": {"x-version": {"prefix": "2"}}},
                    {"uri": {"regex": "/status/[0-9]+"}},
                ],
                "route": [destination(HTTPBIN, weight=90), destination(CANARY, weight=10)],
                "timeout": "5s",
            },
            {
                "match": [{"uri": {"prefix": "/anything"}}],
                "route": [destination(HTTPBIN)],
                "timeout": "1.500s",
            },
            {"route": [destination(HTTPBIN)]},
        ],
    ),
    virtual_service("extra", ["extra.example.com"], [f"{NS}/second"], [{"route": [destination(HTTPBIN)]}]),
    virtual_service("any", ["*"], ["edge"], [{"route": [destination(CANARY)]}]),
    wasm_plugin(),
)


def _routes(answer: dict[str, Any]) -> None:
    routes = {rc["name"]: rc for rc in answer["routes"]}
    assert set(routes) == {"http.80", "http.8080"}
    hosts = {vh["name"]: vh for vh in routes["http.80"]["virtual_hosts"]}
    assert {"shop.example.com:80", "v1.api.example.com:80", "extra.example.com:80"} <= set(hosts)
    extra = [r["route"]["cluster"] for r in hosts["extra.example.com:80"]["routes"]]
    assert extra == [f"outbound|8000||{CANARY}", f"outbound|8000||{HTTPBIN}"]  # edge's, then second's
    first = hosts["shop.example.com:80"]["routes"][0]["route"]
    assert first["timeout"] == "5s"
    last = hosts["shop.example.com:80"]["routes"][-1]["route"]
    assert last["timeout"] == "0s"  # no timeout at all; Envoy's own default would be 15 s


# Several VirtualServices for one host: istiod's order (visibility, then creation) decides which
# route a request takes; server hosts scoped to a namespace; a port no VirtualService serves.
VISIBILITY = (
    gateway(
        "edge",
        [
            server(80, "shop.example.com", f"{NS}/own.example.com", "other/theirs.example.com"),
            server(9090, "nothing.example.org"),
        ],
    ),
    virtual_service(
        "b-early",
        ["shop.example.com"],
        [f"{NS}/edge"],
        [{"match": [{"uri": {"prefix": "/b"}}], "route": [destination(HTTPBIN)]}],
        namespace="other",
        created="2024-01-01T00:00:00Z",
    ),
    virtual_service(
        "a-late",
        ["shop.example.com"],
        [f"{NS}/edge"],
        [{"match": [{"uri": {"prefix": "/a"}}], "route": [destination(CANARY)]}],
        namespace="other",
        created="2024-03-01T00:00:00Z",
    ),
    virtual_service(
        "private",
        ["shop.example.com"],
        ["edge"],
        [{"match": [{"uri": {"prefix": "/p"}}], "route": [destination(HTTPBIN)]}],
        created="2024-05-01T00:00:00Z",
        export_to=["."],
    ),
    virtual_service(
        "hidden",
        ["shop.example.com"],
        [f"{NS}/edge"],
        [{"match": [{"uri": {"prefix": "/h"}}], "route": [destination(HTTPBIN)]}],
        namespace="other",
        export_to=["."],
    ),
    virtual_service("own", ["*.example.com"], ["edge"], [{"route": [destination(CANARY)]}]),
    virtual_service(
        "theirs", ["theirs.example.com"], [f"{NS}/edge"], [{"route": [destination(CANARY)]}], namespace="x"
    ),
    virtual_service(
        "headers",
        ["own.example.com"],
        ["edge"],
        [
            {
                "match": [{"headers": {"x-b": {"exact": "1"}, "x-a": {"regex": "v[0-9]+"}}}],
                "route": [destination(HTTPBIN)],
            }
        ],
        created="2024-06-01T00:00:00Z",
    ),
    wasm_plugin(),
)


def _visibility(answer: dict[str, Any]) -> None:
    routes = {rc["name"]: rc for rc in answer["routes"]}
    hosts = {vh["name"]: vh for vh in routes["http.80"]["virtual_hosts"]}
    prefixes = [r["match"].get("prefix") for r in hosts["shop.example.com:80"]["routes"]]
    assert prefixes[:3] == ["/p", "/b", "/a"]  # private first, then by creation time
    assert "/h" not in prefixes
    assert "theirs.example.com:80" not in hosts  # the server host is other's, the VirtualService x's
    assert [vh["name"] for vh in routes["http.9090"]["virtual_hosts"]] == ["blackhole:9090"]


@pytest.mark.parametrize(("name", "docs"), [("routes", ROUTES), ("visibility", VISIBILITY)])
def test_routes_are_istios(
    istio_oracle: IstioOracle, tmp_path: Path, name: str, docs: tuple[dict[str, Any], ...]
) -> None:
    case = GatewayCase(name=name, yaml=yaml.safe_dump_all(docs, sort_keys=False), namespace=NS, labels=LABELS)
    answer = ask_oracle(istio_oracle, case)
    (_routes if name == "routes" else _visibility)(answer)
    ours = meshwasm_view(translate(case, load_istio(case, tmp_path)))
    differences = diff(oracle_view(answer), ours)
    assert differences == [], "meshwasm differs from Istio:\n  " + "\n  ".join(differences)


@pytest.mark.parametrize("module", ["present", "absent"])
def test_listeners_connection_manager_and_routes_are_istios(
    istio_oracle: IstioOracle, tmp_path: Path, module: str
) -> None:
    modules = (
        {"oci://registry.example/headers:v1": "/var/lib/istio/data/headers.wasm"}
        if module == "present"
        else {}
    )
    case = GatewayCase(
        name="routes",
        yaml=yaml.safe_dump_all(ROUTES, sort_keys=False),
        namespace=NS,
        labels=LABELS,
        modules=modules,
    )
    answer = ask_oracle(istio_oracle, case)
    _routes(answer)
    hcm = answer["listeners"][0]["filter_chains"][0]["hcm"]
    assert hcm["use_remote_address"] is True
    assert hcm["normalize_path"] is True
    ours = meshwasm_view(translate(case, load_istio(case, tmp_path)))
    differences = diff(oracle_view(answer), ours)
    assert differences == [], "meshwasm differs from Istio:\n  " + "\n  ".join(differences)
