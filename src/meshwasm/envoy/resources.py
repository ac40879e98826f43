"""Pure builders for Envoy v3 resources, as plain JSON-able dicts.

No I/O here: callers (the Istio-to-Envoy translator, the test harness, the
benchmarks) compose these and hand them to an :mod:`meshwasm.envoy.xds_files`
writer or a bootstrap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

Json = dict[str, Any]

T_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
T_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
T_WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
T_RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
T_STRING = "type.googleapis.com/google.protobuf.StringValue"
T_TYPED_EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
T_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
T_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

V8 = "envoy.wasm.runtime.v8"


def socket_address(address: str, port: int) -> Json:
    return {"socket_address": {"address": address, "port_value": port}}


def router_filter() -> Json:
    return {"name": "envoy.filters.http.router", "typed_config": {"@type": T_ROUTER}}


def file_config_source(path: str, watched_directory: str, *, initial_fetch_timeout: str = "0s") -> Json:
    """An xDS config source read from a file; Envoy re-reads it when the directory sees a move."""
    return {
        "path_config_source": {"path": path, "watched_directory": {"path": watched_directory}},
        "resource_api_version": "V3",
        "initial_fetch_timeout": initial_fetch_timeout,
    }


def ecds_http_filter(name: str, config_source: Json) -> Json:
    """An HTTP filter whose config comes from ECDS, as Istio emits it for a WasmPlugin:
    the resource may be a Wasm filter, or an RBAC filter the agent substitutes on failure."""
    return {
        "name": name,
        "config_discovery": {"config_source": config_source, "type_urls": [T_WASM, T_RBAC]},
    }


def wasm_filter_config(
    *,
    name: str,
    root_id: str,
    filename: str,
    configuration: Mapping[str, Any] | str | None,
    vm_id: str = "",
    fail_open: bool = False,
    env: Mapping[str, str] | None = None,
) -> Json:
    """``envoy.extensions.filters.http.wasm.v3.Wasm`` with a local module on the v8 runtime.

    ``configuration`` given as a mapping is serialized as JSON, the way Istio
    sends a WasmPlugin's ``pluginConfig``.
    """
    vm_config: Json = {"runtime": V8, "code": {"local": {"filename": filename}}}
    if vm_id:
        vm_config["vm_id"] = vm_id
    if env:
        vm_config["environment_variables"] = {"key_values": dict(env)}
    plugin: Json = {"name": name, "root_id": root_id, "vm_config": vm_config, "fail_open": fail_open}
    if configuration is not None:
        value = configuration if isinstance(configuration, str) else json.dumps(configuration, sort_keys=True)
        plugin["configuration"] = {"@type": T_STRING, "value": value}
    return {"@type": T_WASM, "config": plugin}


def rbac_filter_config(*, allow: bool) -> Json:
    """What Istio's agent serves in place of a Wasm filter it could not load (pkg/wasm/convert.go).

    No ``rules`` at all allows everything (fail open); empty ``rules`` with the
    default ALLOW action matches no policy and so denies everything with 403
    (fail closed), exactly Istio's allow-all and deny-all RBAC filters, with
    their stat prefixes (``wasm-default-allow``, ``wasm-default-deny``).
    """
    if allow:
        return {"@type": T_RBAC, "rules_stat_prefix": "wasm-default-allow"}
    return {"@type": T_RBAC, "rules": {}, "rules_stat_prefix": "wasm-default-deny"}


def typed_extension_config(name: str, typed_config: Json) -> Json:
    return {"@type": T_TYPED_EXTENSION_CONFIG, "name": name, "typed_config": typed_config}


def route_to_cluster(prefix: str, cluster: str, *, timeout: str = "15s") -> Json:
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster, "timeout": timeout}}


def direct_response_route(prefix: str, status: int, body: str = "") -> Json:
    route: Json = {"match": {"prefix": prefix}, "direct_response": {"status": status}}
    if body:
        route["direct_response"]["body"] = {"inline_string": body}
    return route


def virtual_host(name: str, domains: Sequence[str], routes: Sequence[Json]) -> Json:
    return {"name": name, "domains": list(domains), "routes": list(routes)}


def http_listener(
    *,
    name: str,
    address: str,
    port: int,
    virtual_hosts: Sequence[Json],
    http_filters: Sequence[Json] = (),
    stat_prefix: str | None = None,
    access_log_path: str | None = None,
) -> Json:
    """A listener with one HTTP connection manager; the router filter is appended last."""
    hcm: Json = {
        "@type": T_HCM,
        "stat_prefix": stat_prefix or name,
        "route_config": {"name": name, "virtual_hosts": list(virtual_hosts)},
        "http_filters": [*http_filters, router_filter()],
    }
    if access_log_path:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": access_log_path,
                },
            }
        ]
    return {
        "@type": T_LISTENER,
        "name": name,
        "address": socket_address(address, port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def static_cluster(name: str, host: str, port: int, *, connect_timeout: str = "2s") -> Json:
    """A cluster with one fixed endpoint (STATIC for an IP, STRICT_DNS for a name)."""
    is_ip = host.replace(".", "").isdigit() or ":" in host
    return {
        "@type": T_CLUSTER,
        "name": name,
        "type": "STATIC" if is_ip else "STRICT_DNS",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}],
        },
    }
