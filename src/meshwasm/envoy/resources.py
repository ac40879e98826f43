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
T_NETWORK_WASM = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
T_NETWORK_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
T_STRING = "type.googleapis.com/google.protobuf.StringValue"
T_TYPED_EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
T_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
T_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

V8 = "envoy.wasm.runtime.v8"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
# Stat prefixes of the RBAC stand-ins Istio's agent serves for a module it cannot load
# (pkg/wasm DefaultAllowStatPrefix / DefaultDenyStatPrefix).
WASM_DEFAULT_ALLOW = "wasm-default-allow"
WASM_DEFAULT_DENY = "wasm-default-deny"


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


def ads_config_source() -> Json:
    """The config source istiod names in its ECDS filters: ADS, waiting for the resource."""
    return {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}


def ecds_http_filter(name: str, config_source: Json) -> Json:
    """An HTTP filter whose config comes from ECDS, as Istio emits it for a WasmPlugin:
    the resource may be a Wasm filter, or an RBAC filter the agent substitutes on failure."""
    return {
        "name": name,
        "config_discovery": {"config_source": config_source, "type_urls": [T_WASM, T_RBAC]},
    }


def ecds_network_filter(name: str, config_source: Json) -> Json:
    """A network filter from ECDS, as Istio emits it for a ``type: NETWORK`` WasmPlugin."""
    return {
        "name": name,
        "config_discovery": {"config_source": config_source, "type_urls": [T_NETWORK_WASM, T_NETWORK_RBAC]},
    }


def wasm_filter_config(
    *,
    name: str,
    root_id: str,
    filename: str,
    configuration: Mapping[str, Any] | str | None,
    vm_id: str = "",
    failure_policy: str | None = None,
    env: Mapping[str, str] | None = None,
    host_env_keys: Sequence[str] = (),
    network: bool = False,
) -> Json:
    """``envoy.extensions.filters.{http,network}.wasm.v3.Wasm`` with a local module on v8.

    ``configuration`` given as a mapping is serialized as JSON; a string is sent as it is (the
    translator gives the exact text istiod sends); ``{}`` (an empty ``Any``) is what istiod
    sends for an empty ``pluginConfig``. ``failure_policy``: FAIL_OPEN, FAIL_CLOSED or
    FAIL_RELOAD (``PluginConfig.failure_policy``, which replaced ``fail_open``).
    """
    vm_config: Json = {"runtime": V8, "code": {"local": {"filename": filename}}}
    if vm_id:
        vm_config["vm_id"] = vm_id
    if env or host_env_keys:
        variables: Json = {}
        if env:
            variables["key_values"] = dict(env)
        if host_env_keys:
            variables["host_env_keys"] = list(host_env_keys)
        vm_config["environment_variables"] = variables
    plugin: Json = {"name": name}
    if root_id:
        plugin["root_id"] = root_id
    plugin["vm_config"] = vm_config
    if configuration is not None:
        if isinstance(configuration, str):
            plugin["configuration"] = {"@type": T_STRING, "value": configuration}
        elif configuration:
            plugin["configuration"] = {"@type": T_STRING, "value": json.dumps(configuration, sort_keys=True)}
        else:
            plugin["configuration"] = {}
    if failure_policy:
        plugin["failure_policy"] = failure_policy
    return {"@type": T_NETWORK_WASM if network else T_WASM, "config": plugin}


def rbac_filter_config(*, allow: bool, network: bool = False) -> Json:
    """What Istio's agent serves in place of a Wasm filter it could not load
    (pkg/wasm createHTTPDefaultFilter / createNetworkDefaultFilter).

    No ``rules`` at all allows everything (fail open); empty ``rules`` with the
    default ALLOW action matches no policy and so denies everything (403 on HTTP,
    a closed connection on a network filter): fail closed. The stat prefixes are
    the agent's ``wasm-default-allow`` / ``wasm-default-deny``.
    """
    prefix = WASM_DEFAULT_ALLOW if allow else WASM_DEFAULT_DENY
    out: Json = {"@type": T_NETWORK_RBAC if network else T_RBAC}
    if not allow:
        out["rules"] = {}
    out["stat_prefix" if network else "rules_stat_prefix"] = prefix
    return out


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
    network_filters: Sequence[Json] = (),
    hcm_settings: Mapping[str, Any] | None = None,
    route_config_settings: Mapping[str, Any] | None = None,
) -> Json:
    """A listener with one HTTP connection manager; the router filter is appended last.

    ``network_filters`` go ahead of the HTTP connection manager; ``hcm_settings`` and
    ``route_config_settings`` are further fields of the HCM and its route configuration."""
    hcm: Json = {
        "@type": T_HCM,
        "stat_prefix": stat_prefix or name,
        "route_config": {"name": name, "virtual_hosts": list(virtual_hosts), **(route_config_settings or {})},
        "http_filters": [*http_filters, router_filter()],
        **(hcm_settings or {}),
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
        "filter_chains": [{"filters": [*network_filters, {"name": HCM_FILTER, "typed_config": hcm}]}],
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
