"""One gateway case through Istio's control plane (the oracle) and through meshwasm, seen alike.

The oracle (``istio-oracle controlplane``) answers with what istiod sends the gateway proxy and,
after Istio's agent rewrites it (remote module -> the local file ``--module`` names; a module it
cannot get -> its RBAC stand-in), what Envoy gets. meshwasm's :func:`istio_to_envoy` is asked for
the same gateway, with the same module files and ECDS filters read over ADS as istiod names them.

:func:`view` projects both onto what a plugin's behaviour depends on:

- per listener (by name): the ECDS network filters then the HTTP connection manager, the HTTP
  filters (ECDS ones, then the router) with their ``config_discovery``, and the connection
  manager's settings;
- the route configuration's settings and, per virtual host, its domains and routes;
- every ECDS resource exactly as Envoy gets it.

Left out, on purpose (docs/fidelity.md says why): statistics and tracing names and settings
(``stat_prefix``, ``tracing``, route ``decorator``), Istio's bookkeeping (route ``metadata``),
RDS versus an inline route configuration, and the filters only Istio's own Envoy build has or
that act only on per-route configuration meshwasm never emits (:data:`ISTIO_ONLY_HTTP_FILTERS`);
their presence in Istio's chain is checked against that list, so a new one fails the suite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fixtures.oracle import IstioOracle
from meshwasm.envoy import resources as r
from meshwasm.manifests import load
from meshwasm.translate import IstioResources, istio_to_envoy, upstream_key
from meshwasm.translate.render import destinations

HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
# In istiod's gateway chain, not in meshwasm's: Istio's proxy build's own filters (metadata
# exchange, ALPN override, telemetry) and upstream filters that only act on per-route config or
# gRPC traffic (gRPC stats, fault injection, CORS), all after the plugins except metadata exchange.
ISTIO_ONLY_HTTP_FILTERS = frozenset(
    {
        "istio.metadata_exchange",
        "istio.alpn",
        "istio.stats",
        "envoy.filters.http.grpc_stats",
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
    }
)
HCM_NOT_COMPARED = frozenset(
    {"@type", "stat_prefix", "rds", "route_config", "http_filters", "tracing", "access_log"}
)
ROUTE_NOT_COMPARED = frozenset({"metadata", "decorator"})


@dataclass
class GatewayCase:
    """Istio YAML and the gateway proxy it is rendered for."""

    name: str
    yaml: str
    namespace: str
    labels: dict[str, str]
    modules: dict[str, str] = field(default_factory=dict)  # module URL -> local file
    root_namespace: str = "istio-system"

    def oracle_args(self) -> list[str]:
        args = [
            "--namespace",
            self.namespace,
            "--labels",
            ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())),
            "--root-namespace",
            self.root_namespace,
        ]
        for url, path in sorted(self.modules.items()):
            args += ["--module", f"{url}={path}"]
        return args


def ask_oracle(oracle: IstioOracle, case: GatewayCase) -> dict[str, Any]:
    answer: dict[str, Any] = oracle.ask("controlplane", *case.oracle_args(), stdin=case.yaml)
    return answer


def load_istio(case: GatewayCase, tmp_path: Path) -> IstioResources:
    source = tmp_path / f"{case.name}.yaml"
    source.write_text(case.yaml)
    return IstioResources.from_resources(load(source).resources)


def translate(case: GatewayCase, resources: IstioResources) -> dict[str, Any]:
    """meshwasm's answer for the case, as the Envoy config dicts it renders."""
    upstreams = {upstream_key(host, port): ("127.0.0.1", port) for host, port in destinations(resources)}
    config = istio_to_envoy(
        resources,
        workload_labels=case.labels,
        workload_namespace=case.namespace,
        root_namespace=case.root_namespace,
        module_files=case.modules,
        upstreams=upstreams,
        xds=lambda _name: r.ads_config_source(),
    )
    return {"listeners": config.listeners, "filters": config.filters}


# ----- the common view


def _compared(mapping: Mapping[str, Any], left_out: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in left_out}


def _listener_view(chain: Mapping[str, Any], hcm: Mapping[str, Any]) -> dict[str, Any]:
    http = [f for f in hcm.get("http_filters", []) if "config_discovery" in f or f["name"] == ROUTER]
    return {
        "network_filters": [f["name"] for f in chain["filters"]],
        "network_config_discovery": {
            f["name"]: f["config_discovery"] for f in chain["filters"] if "config_discovery" in f
        },
        "http_filters": [f["name"] for f in http],
        "http_config_discovery": {f["name"]: f["config_discovery"] for f in http if "config_discovery" in f},
        "hcm": _compared(hcm, HCM_NOT_COMPARED),
    }


def _routes_view(route_configs: list[Mapping[str, Any]]) -> dict[str, Any]:
    settings = [_compared(rc, frozenset({"name", "virtual_hosts"})) for rc in route_configs]
    hosts: dict[str, Any] = {}
    for rc in route_configs:
        for vhost in rc.get("virtual_hosts", []):
            hosts[vhost["name"]] = {
                **_compared(vhost, frozenset({"name", "routes"})),
                "routes": [_compared(route, ROUTE_NOT_COMPARED) for route in vhost.get("routes", [])],
            }
    return {"route_config_settings": settings, "virtual_hosts": hosts}


def oracle_view(answer: Mapping[str, Any]) -> dict[str, Any]:
    listeners = {}
    for listener in answer["listeners"]:
        (chain,) = listener["filter_chains"]
        hcm = chain["hcm"]
        listeners[listener["name"]] = _listener_view({"filters": chain["network_filters"]}, hcm)
    return {
        "listeners": listeners,
        **_routes_view(answer["routes"]),
        "ecds": {ec["name"]: ec["typed_config"] for ec in answer["envoy_ecds"]},
    }


def meshwasm_view(translated: Mapping[str, Any]) -> dict[str, Any]:
    listeners = {}
    route_configs = []
    for listener in translated["listeners"]:
        (chain,) = listener["filter_chains"]
        hcm = next(f["typed_config"] for f in chain["filters"] if f["name"] == HCM)
        listeners[listener["name"]] = _listener_view(chain, hcm)
        route_configs.append(hcm["route_config"])
    return {
        "listeners": listeners,
        **_routes_view(route_configs),
        "ecds": {ec["name"]: ec["typed_config"] for ec in translated["filters"]},
    }


def istio_only_filters(answer: Mapping[str, Any]) -> set[str]:
    """Names of the HTTP filters in Istio's chains that are neither plugins nor the router."""
    return {
        f["name"]
        for listener in answer["listeners"]
        for chain in listener["filter_chains"]
        for f in chain["http_filters"]
        if "config_discovery" not in f and f["name"] != ROUTER
    }


def plugin_chain(answer: Mapping[str, Any], listener: str) -> list[str]:
    """``<namespace>.<name>`` of the WasmPlugins on a listener of the oracle's answer, in order."""
    (found,) = [item for item in answer["listeners"] if item["name"] == listener]
    (chain,) = found["filter_chains"]
    names = [f["name"] for f in chain["network_filters"] if "config_discovery" in f]
    names += [f["name"] for f in chain["http_filters"] if "config_discovery" in f]
    return [n.rsplit("/", 1)[-1].removesuffix("~istio-translated-wasmplugin") for n in names]


def diff(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every place two JSON values differ, as ``path: istio=... meshwasm=...`` lines."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                out.append(f"{where}: istio={_short(expected[key])} meshwasm=(absent)")
            elif key not in expected:
                out.append(f"{where}: istio=(absent) meshwasm={_short(actual[key])}")
            else:
                out.extend(diff(expected[key], actual[key], where))
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            line
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for line in diff(e, a, f"{path}[{i}]")
        ]
    if expected != actual:
        return [f"{path}: istio={_short(expected)} meshwasm={_short(actual)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 400 else text[:400] + "..."


def yaml_of(resources: IstioResources) -> str:
    return yaml.safe_dump_all([res.to_manifest() for res in resources.all()], sort_keys=False)
