"""Istio resources -> Envoy configuration for one gateway workload (pure: data in, data out).

What Istio's control plane and agent together give a gateway's Envoy:

- a listener per gateway port (``<bind>_<port>``) with an HTTP connection
  manager, one virtual host per hostname the VirtualServices bound to the
  gateway serve, routes in VirtualService order, and a cluster per service
  destination (``outbound|<port>||<host>``, Istio's naming) whose endpoint
  is the local upstream given in ``upstreams``;
- each WasmPlugin selecting the workload as an ECDS filter named
  ``<namespace>.<name>`` (``config_discovery`` with the Wasm and RBAC type
  URLs, exactly as the seed's config dump shows), ordered by phase (AUTHN,
  AUTHZ, STATS, then unspecified) and, within a phase, by priority (higher
  first), then namespace/name, as Istio orders them;
- its ECDS resource: a Wasm filter (``root_id`` = pluginName, runtime v8,
  ``vm_config.code.local.filename`` = the module the agent resolved,
  ``configuration`` = pluginConfig as a JSON ``StringValue``), or, when the
  module is not available, the RBAC stand-in Istio's agent serves: allow-all
  for ``FAIL_OPEN``, deny-all otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshwasm.envoy import resources as r
from meshwasm.envoy.resources import Json
from meshwasm.manifests import istio
from meshwasm.manifests.problems import Problem
from meshwasm.translate.errors import TranslationError
from meshwasm.translate.istio_resources import IstioResources

ROOT_NAMESPACE = "istio-system"  # a WasmPlugin here applies to every namespace, as in Istio
RESOURCE_VERSION_ENV = "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"
_PHASE_ORDER = {"AUTHN": 0, "AUTHZ": 1, "STATS": 2}
_UNSPECIFIED_PHASE = 3
_HTTP_PROTOCOLS = {"HTTP", "HTTP2", "GRPC"}
_SERVICE_FQDN = re.compile(r"^(?P<name>[^.]+)\.(?P<namespace>[^.]+)\.svc(\.|$)")


class FilterConfigSourceFactory(Protocol):
    """Gives the ``config_source`` an ECDS filter of this name is read from
    (e.g. :meth:`meshwasm.envoy.xds_files.XdsFiles.ecds_source`)."""

    def __call__(self, filter_name: str, /) -> Json: ...


@dataclass
class EnvoyConfig:
    """Listeners, clusters and ECDS ``TypedExtensionConfig`` filters (in filter-chain order) for
    one workload; ready for :class:`meshwasm.envoy.runtime.FileXdsEnvoy` (``set_listeners``,
    ``set_clusters``, ``set_filter`` for each of ``filters``)."""

    listeners: list[Json] = field(default_factory=list)
    clusters: list[Json] = field(default_factory=list)
    filters: list[Json] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def to_json(self) -> Json:
        return {"listeners": self.listeners, "clusters": self.clusters, "extension_configs": self.filters}


def upstream_key(host: str, port: int) -> str:
    """The key of ``upstreams`` for a destination: ``"<host>:<port>"`` with the host as the
    VirtualService names it, e.g. ``"httpbin.httpbin.svc.cluster.local:8000"``."""
    return f"{host}:{port}"


def cluster_name(host: str, port: int) -> str:
    """Istio's name for a service's cluster: ``outbound|<port>||<host>``."""
    return f"outbound|{port}||{host}"


def filter_name(plugin: istio.WasmPlugin) -> str:
    """The ECDS resource (and HTTP filter) name of a WasmPlugin: ``<namespace>.<name>``."""
    return f"{plugin.namespace or 'default'}.{plugin.name}"


def labels_match(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Whether every selector label is on the workload (an empty selector selects all)."""
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def plugin_order_key(plugin: istio.WasmPlugin) -> tuple[int, int, str, str]:
    """Istio's filter order: phase (AUTHN, AUTHZ, STATS, unspecified), priority high to low,
    then namespace and name."""
    phase = _PHASE_ORDER.get(plugin.spec.phase or "", _UNSPECIFIED_PHASE)
    return (phase, -(plugin.spec.priority or 0), plugin.namespace or "", plugin.name)


def istio_to_envoy(
    istio_resources: IstioResources,
    *,
    workload_labels: Mapping[str, str],
    module_files: Mapping[str, str],
    upstreams: Mapping[str, tuple[str, int]],
    bind_address: str = "0.0.0.0",
    port_map: Mapping[int, int] | None = None,
    xds: FilterConfigSourceFactory,
    workload_namespace: str | None = None,
) -> EnvoyConfig:
    """Envoy configuration for the gateway workload with ``workload_labels`` (module docstring).

    ``module_files`` maps a WasmPlugin's ``url`` to the local module file the
    agent resolved; a plugin whose url is missing becomes the RBAC stand-in
    (allow-all for FAIL_OPEN, deny-all otherwise), with a warning.
    ``upstreams`` maps :func:`upstream_key` (``"host:port"``) to a local
    ``(ip, port)``. ``port_map`` maps gateway ports (80) to local ports.
    ``workload_namespace``, when given, limits WasmPlugins to that namespace
    and the root namespace (istio-system), as Istio does. Raises
    :class:`TranslationError` listing every problem.
    """
    builder = _Builder(istio_resources, workload_labels, module_files, upstreams, xds, workload_namespace)
    return builder.build(bind_address, dict(port_map or {}))


@dataclass
class _Listener:
    gateway_port: int
    protocol: str
    hosts: list[str]
    gateways: set[str]  # "namespace/name"


class _Builder:
    def __init__(
        self,
        resources: IstioResources,
        labels: Mapping[str, str],
        module_files: Mapping[str, str],
        upstreams: Mapping[str, tuple[str, int]],
        xds: FilterConfigSourceFactory,
        namespace: str | None,
    ):
        self.resources = resources
        self.labels = dict(labels)
        self.module_files = module_files
        self.upstreams = upstreams
        self.xds = xds
        self.namespace = namespace
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.clusters: dict[str, Json] = {}

    def problem(
        self,
        resource: istio.Gateway | istio.VirtualService | istio.WasmPlugin,
        message: str,
        field_path: str | None = None,
    ) -> None:
        where = resource.where()
        self.problems.append(
            Problem(
                message,
                file=where.file if where else None,
                line=where.line if where else None,
                field=field_path,
                subject=resource.ref,
            )
        )

    def build(self, bind_address: str, port_map: dict[int, int]) -> EnvoyConfig:
        gateways = [g for g in self.resources.gateways if labels_match(g.spec.selector, self.labels)]
        if not gateways:
            selectors = "; ".join(f"{g.ref} selects {g.spec.selector}" for g in self.resources.gateways)
            raise TranslationError(
                [
                    Problem(
                        f"no Istio Gateway selects a workload with labels {self.labels}"
                        + (f" ({selectors})" if selectors else " (there are no Gateways)")
                    )
                ]
            )
        listeners = self.listeners(gateways, port_map)
        plugins = self.plugins()
        config = EnvoyConfig()
        used_plugins: dict[str, istio.WasmPlugin] = {}
        for local_port, spec in sorted(listeners.items()):
            virtual_hosts = self.virtual_hosts(spec, local_port)
            chain = [p for p in plugins if _applies(p, spec.gateway_port)]
            for plugin in chain:
                used_plugins[filter_name(plugin)] = plugin
            name = f"{bind_address}_{local_port}"
            config.listeners.append(
                r.http_listener(
                    name=name,
                    address=bind_address,
                    port=local_port,
                    virtual_hosts=virtual_hosts,
                    http_filters=[
                        r.ecds_http_filter(filter_name(p), self.xds(filter_name(p))) for p in chain
                    ],
                    stat_prefix=name,
                )
            )
        config.filters = [self.filter_config(p) for p in sorted(used_plugins.values(), key=plugin_order_key)]
        if self.problems:
            raise TranslationError(self.problems, hint="fix every problem listed; nothing was rendered")
        config.clusters = list(self.clusters.values())
        config.warnings = self.warnings
        return config

    # -- listeners and routes ------------------------------------------------------------------

    def listeners(self, gateways: list[istio.Gateway], port_map: dict[int, int]) -> dict[int, _Listener]:
        out: dict[int, _Listener] = {}
        for gateway in gateways:
            ref = f"{gateway.namespace or 'default'}/{gateway.name}"
            for index, server in enumerate(gateway.spec.servers):
                where = f"spec.servers[{index}]"
                protocol = server.port.protocol.upper()
                if protocol not in _HTTP_PROTOCOLS:
                    self.problem(
                        gateway,
                        f"{protocol} servers need certificates or TCP routing, which meshwasm's local gateway"
                        " does not serve; serve this host over HTTP locally",
                        f"{where}.port.protocol",
                    )
                    continue
                local = port_map.get(server.port.number, server.port.number)
                hosts = [h.split("/", 1)[-1] for h in server.hosts]
                existing = out.get(local)
                if existing is None:
                    out[local] = _Listener(server.port.number, protocol, hosts, {ref})
                elif existing.gateway_port != server.port.number:
                    self.problem(
                        gateway,
                        f"gateway ports {existing.gateway_port} and {server.port.number} both map to local"
                        f" port {local}; give them different local ports",
                        f"{where}.port.number",
                    )
                else:
                    existing.hosts.extend(h for h in hosts if h not in existing.hosts)
                    existing.gateways.add(ref)
        return out

    def virtual_hosts(self, listener: _Listener, local_port: int) -> list[Json]:
        by_host: dict[str, list[Json]] = {}
        for vs in self.resources.virtual_services:
            vs_namespace = vs.namespace or "default"
            bound = {g if "/" in g else f"{vs_namespace}/{g}" for g in vs.spec.gateways}
            if not bound & listener.gateways:
                continue
            hosts = [h for h in vs.spec.hosts if any(_host_matches(s, h) for s in listener.hosts)]
            if not hosts:
                continue
            routes = self.routes(vs)
            for host in hosts:
                by_host.setdefault(host, []).extend(routes)
        if not by_host:
            self.warnings.append(
                Problem(
                    f"no VirtualService routes port {listener.gateway_port} of {sorted(listener.gateways)};"
                    " requests get 404"
                )
            )
        out = []
        for host, routes in by_host.items():
            domains = (
                ["*"]
                if host == "*"
                else list(dict.fromkeys([host, f"{host}:{listener.gateway_port}", f"{host}:{local_port}"]))
            )
            out.append(r.virtual_host(f"{host}:{listener.gateway_port}", domains, routes))
        return out

    def routes(self, vs: istio.VirtualService) -> list[Json]:
        out: list[Json] = []
        for index, route in enumerate(vs.spec.http):
            action = self.route_action(vs, index, route)
            if action is None:
                continue
            matches: list[istio.HttpMatchRequest | None] = [*route.match] if route.match else [None]
            out.extend({"match": _route_match(match), "route": action} for match in matches)
        return out

    def route_action(self, vs: istio.VirtualService, index: int, route: istio.HttpRoute) -> Json | None:
        clusters: list[tuple[str, int | None]] = []
        for dest_index, destination in enumerate(route.route):
            where = f"spec.http[{index}].route[{dest_index}].destination"
            host = destination.destination.host
            if destination.destination.port is None:
                self.problem(vs, "missing: name the service port", f"{where}.port")
                continue
            port = destination.destination.port.number
            key = upstream_key(host, port)
            local = self.upstreams.get(key)
            if local is None:
                found = _SERVICE_FQDN.match(host)
                service = f"{found['namespace']}/{found['name']}" if found else host
                self.problem(
                    vs,
                    f"no local upstream for {key}; map it with `--upstream {service}=HOST:PORT`"
                    f" (upstreams key {key!r})",
                    f"{where}.host",
                )
                continue
            name = cluster_name(host, port)
            self.clusters[name] = r.static_cluster(name, local[0], local[1])
            clusters.append((name, destination.weight))
        if len(clusters) != len(route.route):
            return None
        if len(clusters) == 1:
            return {"cluster": clusters[0][0]}
        return {
            "weighted_clusters": {
                "clusters": [{"name": name, "weight": weight or 0} for name, weight in clusters]
            }
        }

    # -- wasm plugins --------------------------------------------------------------------------

    def plugins(self) -> list[istio.WasmPlugin]:
        selected = []
        for plugin in self.resources.wasm_plugins:
            if self.namespace is not None and plugin.namespace not in (self.namespace, ROOT_NAMESPACE):
                continue
            selector = plugin.spec.selector.match_labels if plugin.spec.selector else {}
            if not labels_match(selector, self.labels):
                continue
            if plugin.spec.type == "NETWORK":
                self.warnings.append(
                    Problem("NETWORK WasmPlugins are not rendered for gateways; skipped", subject=plugin.ref)
                )
                continue
            selected.append(plugin)
        return sorted(selected, key=plugin_order_key)

    def filter_config(self, plugin: istio.WasmPlugin) -> Json:
        name = filter_name(plugin)
        spec = plugin.spec
        fail_open = spec.fail_strategy == "FAIL_OPEN"
        module = self.module_files.get(spec.url)
        if module is None:
            self.warnings.append(
                Problem(
                    f"no module for {spec.url}; serving the {'allow-all' if fail_open else 'deny-all'} RBAC"
                    f" filter in its place ({spec.fail_strategy or 'FAIL_CLOSE'}), as Istio's agent does",
                    subject=plugin.ref,
                )
            )
            return r.typed_extension_config(name, r.rbac_filter_config(allow=fail_open))
        env: dict[str, str] = {}
        host_keys: list[str] = []
        for var in spec.vm_config.env if spec.vm_config else []:
            if var.value_from == "HOST":
                host_keys.append(var.name)
            else:
                env[var.name] = var.value or ""
        resource_version = getattr(plugin.metadata, "resourceVersion", None)
        if resource_version:
            env[RESOURCE_VERSION_ENV] = str(resource_version)
        configuration = (
            json.dumps(spec.plugin_config, sort_keys=True, separators=(",", ":"))
            if spec.plugin_config is not None
            else None
        )
        typed = r.wasm_filter_config(
            name=name,
            root_id=spec.plugin_name or "",
            filename=module,
            configuration=configuration,
            fail_open=fail_open,
            env=env or None,
        )
        if host_keys:
            env_config = typed["config"]["vm_config"].setdefault("environment_variables", {})
            env_config["host_env_keys"] = host_keys
        return r.typed_extension_config(name, typed)


def _applies(plugin: istio.WasmPlugin, gateway_port: int) -> bool:
    """A gateway listener is server-side traffic: CLIENT-only selectors skip it; ports narrow it."""
    if not plugin.spec.match:
        return True
    return any(
        selector.mode != "CLIENT"
        and (not selector.ports or any(p.number == gateway_port for p in selector.ports))
        for selector in plugin.spec.match
    )


def _host_matches(server_host: str, host: str) -> bool:
    if server_host == "*" or server_host == host:
        return True
    if server_host.startswith("*."):
        return host.endswith(server_host[1:]) or host == server_host
    return False


def _string_match(match: Any) -> Json:
    if match.exact is not None:
        return {"exact": match.exact}
    if match.prefix is not None:
        return {"prefix": match.prefix}
    return {"safe_regex": {"regex": match.regex}}


def _route_match(match: istio.HttpMatchRequest | None) -> Json:
    out: Json = {"prefix": "/"}
    if match is None:
        return out
    if match.uri is not None:
        if match.uri.exact is not None:
            out = {"path": match.uri.exact}
        elif match.uri.prefix is not None:
            out = {"prefix": match.uri.prefix}
        else:
            out = {"safe_regex": {"regex": match.uri.regex}}
    if match.headers:
        out["headers"] = [
            {"name": name, "string_match": _string_match(value)} for name, value in match.headers.items()
        ]
    return out
