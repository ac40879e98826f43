"""Istio resources -> Envoy configuration for one gateway workload (pure: data in, data out).

What Istio's control plane and agent together give a gateway's Envoy (the pinned Istio; every
point is compared with Istio's own code by tests/fidelity, see docs/fidelity.md):

- a listener per port the gateway listens on (``<bind>_<port>``; a Service selecting the gateway
  turns a Gateway server port into its targetPort, as istiod does) with an HTTP connection
  manager set as istiod sets a gateway's (:data:`GATEWAY_HCM_SETTINGS`: remote address used,
  paths normalised, no idle timeout, ...), one virtual host per hostname the VirtualServices bound
  to the gateway serve (the port ignored in host matching), routes in VirtualService order with
  istiod's default route timeout (none) and retry policy, and a cluster per service destination
  (``outbound|<port>||<host>``, Istio's naming) whose endpoint is the local upstream given in
  ``upstreams``;
- the WasmPlugins that apply to the listener (:mod:`meshwasm.translate.wasm_plugins`: names,
  selection, CLIENT-side matching, order) as ECDS filters (``config_discovery`` with the Wasm and
  RBAC type URLs): HTTP filters, or network filters ahead of the connection manager for
  ``type: NETWORK``;
- their ECDS resources as Envoy gets them after Istio's agent: a Wasm filter (``root_id`` =
  pluginName, runtime v8, ``vm_config.code.local.filename`` = the module the agent resolved,
  ``configuration`` = pluginConfig as istiod writes it, ``failure_policy`` from failStrategy, the
  inline env of vmConfig; istiod's ``ISTIO_META_*`` variables are the agent's and never reach
  Envoy), or, when the module is not available, the agent's RBAC stand-in: allow-all
  (``wasm-default-allow``) for FAIL_OPEN, deny-all (``wasm-default-deny``) otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from meshwasm.envoy import resources as r
from meshwasm.envoy.resources import Json
from meshwasm.manifests import core, istio
from meshwasm.manifests.problems import Problem
from meshwasm.manifests.wasm_url import UnusableModuleUrl, go_url_error, go_url_scheme
from meshwasm.translate import gateway_routes
from meshwasm.translate import wasm_plugins as wp
from meshwasm.translate.errors import TranslationError
from meshwasm.translate.istio_resources import IstioResources
from meshwasm.translate.struct_json import NotJsonError, struct_json
from meshwasm.translate.wasm_plugins import ROOT_NAMESPACE, filter_name, labels_match

__all__ = [
    "GATEWAY_HCM_SETTINGS",
    "GATEWAY_ROUTE_CONFIG_SETTINGS",
    "ROOT_NAMESPACE",
    "EnvoyConfig",
    "FilterConfigSourceFactory",
    "ListenPort",
    "cluster_name",
    "failure_policy",
    "filter_name",
    "istio_to_envoy",
    "labels_match",
    "listen_ports",
    "module_url",
    "upstream_key",
]

_HTTP_PROTOCOLS = {"HTTP", "HTTP2", "GRPC"}
_SERVICE_FQDN = re.compile(r"^(?P<name>[^.]+)\.(?P<namespace>[^.]+)\.svc(\.|$)")
# A Service with this label keeps its port numbers on the gateway (Istio's
# DisableGatewayPortTranslationLabel).
_NO_PORT_TRANSLATION = "experimental.istio.io/disable-gateway-port-translation"

# What istiod sets on a gateway's HTTP connection manager (besides names, RDS, tracing and
# http_filters), with the default MeshConfig and ProxyConfig.
GATEWAY_HCM_SETTINGS: Json = {
    "http_protocol_options": {},
    "server_name": "istio-envoy",
    "stream_idle_timeout": "0s",
    "use_remote_address": True,
    "forward_client_cert_details": "SANITIZE_SET",
    "set_current_client_cert_details": {"subject": True, "cert": True, "dns": True, "uri": True},
    "proxy_100_continue": True,
    "upgrade_configs": [{"upgrade_type": "websocket"}],
    "normalize_path": True,
    "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
    "request_id_extension": {
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
            "use_request_id_for_trace_sampling": True,
        }
    },
}
GATEWAY_ROUTE_CONFIG_SETTINGS: Json = {
    "validate_clusters": False,
    "max_direct_response_body_size_bytes": 1048576,
    "ignore_port_in_host_matching": True,
}
_PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
# meshConfig.defaultHttpRetryPolicy unset: istiod's default retry policy on every route.
DEFAULT_RETRY_POLICY: Json = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": _PREVIOUS_HOSTS},
        }
    ],
    "host_selection_retry_max_attempts": "5",
}
_URL_SCHEMES = {None, "oci", "http", "https", "file"}
_FAILURE_POLICIES = {"FAIL_OPEN": "FAIL_OPEN", "FAIL_CLOSE": "FAIL_CLOSED", "FAIL_RELOAD": "FAIL_RELOAD"}


class FilterConfigSourceFactory(Protocol):
    """Gives the ``config_source`` an ECDS filter of this name is read from
    (e.g. :meth:`meshwasm.envoy.xds_files.XdsFiles.ecds_source`, or
    :func:`meshwasm.envoy.resources.ads_config_source` as istiod names it)."""

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


def module_url(plugin: istio.WasmPlugin) -> str:
    """The module URL istiod sends the agent: a URL without a scheme means ``oci://``; Go
    lower-cases the scheme."""
    url = plugin.spec.url
    scheme = _scheme(url)
    return f"oci://{url}" if scheme is None else f"{scheme}{url[len(scheme) :]}"


def _scheme(url: str) -> str | None:
    """Go's scheme of ``url``; a leading ``:`` (Go's parse error, reported by :func:`go_url_error`)
    counts as none here."""
    try:
        return go_url_scheme(url)
    except UnusableModuleUrl:
        return None


def failure_policy(plugin: istio.WasmPlugin) -> str:
    """``PluginConfig.failure_policy`` for the plugin's failStrategy (unset is FAIL_CLOSE)."""
    return _FAILURE_POLICIES[plugin.spec.fail_strategy or "FAIL_CLOSE"]


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
    root_namespace: str = ROOT_NAMESPACE,
) -> EnvoyConfig:
    """Envoy configuration for the gateway workload with ``workload_labels`` (module docstring).

    ``module_files`` maps a module URL (:func:`module_url`) to the local module file the
    agent resolved; a plugin whose url is missing becomes the RBAC stand-in
    (allow-all for FAIL_OPEN, deny-all otherwise), with a warning.
    ``upstreams`` maps :func:`upstream_key` (``"host:port"``) to a local
    ``(ip, port)``. ``port_map`` maps Gateway server ports (80) to local ports.
    ``workload_namespace``: the gateway's namespace; WasmPlugins come from it and the root
    namespace, and its Services translate ports, as in Istio. Raises
    :class:`TranslationError` listing every problem.
    """
    builder = _Builder(
        istio_resources, workload_labels, module_files, upstreams, xds, workload_namespace, root_namespace
    )
    return builder.build(bind_address, dict(port_map or {}))


@dataclass(frozen=True)
class ListenPort:
    """A Gateway server port and the port the gateway's pods listen on for it (what a WasmPlugin's
    ``match.ports`` name), with the Service that remapped it, if one did."""

    server_port: int
    port: int
    service: str | None = None  # "namespace/name" of the Service whose targetPort it is


def listen_ports(
    istio_resources: IstioResources, *, workload_labels: Mapping[str, str], workload_namespace: str | None
) -> list[ListenPort]:
    """The ports of the Gateways selecting the workload, translated as :func:`istio_to_envoy` does
    (a Service in the workload's namespace selecting it turns a server port into its targetPort)."""
    builder = _Builder(
        istio_resources, workload_labels, {}, {}, _no_source, workload_namespace, ROOT_NAMESPACE
    )
    services = builder.gateway_services()
    out: dict[int, ListenPort] = {}
    for gateway in istio_resources.gateways:
        if not labels_match(gateway.spec.selector, workload_labels):
            continue
        for server in gateway.spec.servers:
            number = server.port.number
            port = builder.listen_port(number, services)
            remapped_by = next(
                (
                    f"{s.namespace or 'default'}/{s.name}"
                    for s in services
                    if any(p.port == number for p in s.spec.ports)
                ),
                None,
            )
            out.setdefault(number, ListenPort(number, port, remapped_by if port != number else None))
    return [out[number] for number in sorted(out)]


def _no_source(_name: str) -> Json:
    return {}


@dataclass
class _Listener:
    port: int  # the port the gateway listens on (a Service's targetPort): what plugins match
    server_port: int  # the Gateway server's port number
    servers: list[tuple[istio.Gateway, istio.Server]]  # in istiod's Gateway order


class _Builder:
    def __init__(
        self,
        resources: IstioResources,
        labels: Mapping[str, str],
        module_files: Mapping[str, str],
        upstreams: Mapping[str, tuple[str, int]],
        xds: FilterConfigSourceFactory,
        namespace: str | None,
        root_namespace: str,
    ):
        self.resources = resources
        self.labels = dict(labels)
        self.module_files = module_files
        self.upstreams = upstreams
        self.xds = xds
        self.namespace = namespace
        self.root_namespace = root_namespace
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.clusters: dict[str, Json] = {}

    def problem(
        self,
        resource: istio.Gateway | istio.VirtualService | istio.WasmPlugin | core.Service,
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
        listeners = self.listeners(sorted(gateways, key=_creation_order), port_map)
        plugins = self.plugins()
        config = EnvoyConfig()
        used_plugins: dict[str, istio.WasmPlugin] = {}
        for local_port, spec in sorted(listeners.items()):
            virtual_hosts = self.virtual_hosts(spec)
            on_listener = [p for p in plugins if wp.applies_to_listener(p, spec.port)]
            network = [p for p in on_listener if wp.is_network(p)]
            http = [p for p in on_listener if not wp.is_network(p)]
            for plugin in on_listener:
                used_plugins[filter_name(plugin)] = plugin
            name = f"{bind_address}_{local_port}"
            config.listeners.append(
                r.http_listener(
                    name=name,
                    address=bind_address,
                    port=local_port,
                    virtual_hosts=virtual_hosts,
                    network_filters=[
                        r.ecds_network_filter(filter_name(p), self.xds(filter_name(p))) for p in network
                    ],
                    http_filters=[r.ecds_http_filter(filter_name(p), self.xds(filter_name(p))) for p in http],
                    stat_prefix=name,
                    hcm_settings=GATEWAY_HCM_SETTINGS,
                    route_config_settings=GATEWAY_ROUTE_CONFIG_SETTINGS,
                )
            )
        config.filters = [self.filter_config(p) for p in wp.chain_order(used_plugins.values())]
        if self.problems:
            raise TranslationError(self.problems, hint="fix every problem listed; nothing was rendered")
        config.clusters = list(self.clusters.values())
        config.warnings = self.warnings
        return config

    # -- listeners and routes ------------------------------------------------------------------

    def gateway_services(self) -> list[core.Service]:
        """The Services whose endpoints the gateway's pods are (its namespace, selector matching)."""
        if self.namespace is None:
            return []
        return [
            s
            for s in self.resources.core
            if isinstance(s, core.Service)
            and (s.namespace or "default") == self.namespace
            and s.spec.selector
            and labels_match(s.spec.selector, self.labels)
            and _NO_PORT_TRANSLATION not in s.metadata.labels
        ]

    def listen_port(self, server_port: int, services: list[core.Service]) -> int:
        """The port a Gateway server's port number becomes on the pod: the targetPort of the first
        Service port that has that number (Istio's resolvePorts for selector-based gateways)."""
        for service in services:
            for index, port in enumerate(service.spec.ports):
                if port.port != server_port:
                    continue
                if isinstance(port.target_port, str):
                    if port.target_port.isdigit():
                        return int(port.target_port)
                    self.problem(
                        service,
                        f"targetPort {port.target_port!r} names a container port, which meshwasm cannot"
                        " resolve without the gateway's pods; give the number",
                        f"spec.ports[{index}].targetPort",
                    )
                    return server_port
                return port.target_port or port.port
        return server_port

    def listeners(self, gateways: list[istio.Gateway], port_map: dict[int, int]) -> dict[int, _Listener]:
        out: dict[int, _Listener] = {}
        services = self.gateway_services()
        for gateway in gateways:
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
                port = self.listen_port(server.port.number, services)
                local = port_map.get(server.port.number, port)
                existing = out.get(local)
                if existing is None:
                    out[local] = _Listener(port, server.port.number, [(gateway, server)])
                elif existing.port != port:
                    self.problem(
                        gateway,
                        f"gateway ports {existing.server_port} and {server.port.number} both map to local"
                        f" port {local}; give them different local ports",
                        f"{where}.port.number",
                    )
                else:
                    existing.servers.append((gateway, server))
        return out

    def virtual_hosts(self, listener: _Listener) -> list[Json]:
        virtual_services = sorted(self.resources.virtual_services, key=_creation_order)
        out = gateway_routes.virtual_hosts(listener.servers, virtual_services, self.namespace, self.routes)
        if out[0]["name"].startswith("blackhole:"):
            gateways = sorted({f"{g.namespace or 'default'}/{g.name}" for g, _ in listener.servers})
            self.warnings.append(
                Problem(
                    f"no VirtualService routes port {listener.server_port} of {gateways}; requests get 404"
                )
            )
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
        action: Json
        if len(clusters) == 1:
            action = {"cluster": clusters[0][0]}
        else:
            action = {
                "weighted_clusters": {
                    "clusters": [{"name": name, "weight": weight or 0} for name, weight in clusters]
                }
            }
        # istiod: the VirtualService's timeout, else none at all (Envoy's own default is 15 s).
        timeout = route.timeout or "0s"
        action["timeout"] = timeout
        action["retry_policy"] = DEFAULT_RETRY_POLICY
        action["max_grpc_timeout"] = timeout
        return action

    # -- wasm plugins --------------------------------------------------------------------------

    def plugins(self) -> list[istio.WasmPlugin]:
        """The WasmPlugins attached to this gateway, in Istio's filter order."""
        try:
            candidates = wp.candidates(self.resources.wasm_plugins, self.namespace, self.root_namespace)
        except wp.CreationTimeError as exc:
            bad = next(p for p in self.resources.wasm_plugins if _bad_creation_time(p))
            self.problem(bad, str(exc), "metadata.creationTimestamp")
            return []
        usable = []
        for plugin in candidates:
            scheme = _scheme(plugin.spec.url)
            if scheme not in _URL_SCHEMES:
                # Istio's validation (validateWasmPluginURL) refuses it at admission.
                self.problem(
                    plugin,
                    f"url scheme {scheme!r} is not one Istio accepts (oci://, http://, https://, file:// or"
                    " none, which means oci://); a registry with a port needs the oci:// prefix",
                    "spec.url",
                )
                continue
            error = go_url_error(plugin.spec.url)
            if error is None:
                usable.append(plugin)
                continue
            # istiod discards it ("failure to parse wasm URL"): no filter at all, not a stand-in.
            self.warnings.append(
                Problem(
                    f"url {plugin.spec.url!r}: {error}; Istio drops this WasmPlugin (a registry with a"
                    " port needs the oci:// prefix)",
                    subject=plugin.ref,
                )
            )
        return wp.chain_order(p for p in usable if wp.attaches(p, self.labels, self.namespace))

    def filter_config(self, plugin: istio.WasmPlugin) -> Json:
        name = filter_name(plugin)
        spec = plugin.spec
        network = wp.is_network(plugin)
        policy = failure_policy(plugin)
        url = module_url(plugin)
        local_file = url.startswith("file://")
        # A file:// module is named by istiod itself and left alone by the agent (no fetch, no
        # stand-in; Envoy reads the file).
        module = spec.url.removeprefix("file://") if local_file else self.module_files.get(url)
        if module is None:
            fail_open = policy == "FAIL_OPEN"
            self.warnings.append(
                Problem(
                    f"no module for {url}; serving the {'allow-all' if fail_open else 'deny-all'} RBAC"
                    f" filter in its place ({spec.fail_strategy or 'FAIL_CLOSE'}), as Istio's agent does",
                    subject=plugin.ref,
                )
            )
            return r.typed_extension_config(name, r.rbac_filter_config(allow=fail_open, network=network))
        env: dict[str, str] = {}
        host_keys: list[str] = []
        for var in spec.vm_config.env if spec.vm_config else []:
            if var.value_from == "HOST":
                host_keys.append(var.name)
            else:
                env[var.name] = var.value or ""
        if local_file:
            # The agent passes local code through untouched: istiod's variables reach Envoy.
            env = {**_istiod_env(plugin), **env}
        else:
            # istiod's ISTIO_META_* variables (resource version, pull policy, pull secret) are for
            # the agent, which strips every ISTIO_META_* variable: Envoy never sees them.
            env = {k: v for k, v in env.items() if not k.startswith("ISTIO_META_")}
        configuration = ""
        if spec.plugin_config:
            try:
                configuration = struct_json(spec.plugin_config)
            except NotJsonError as exc:
                self.problem(plugin, f"pluginConfig: {exc}", "spec.pluginConfig")
        typed = r.wasm_filter_config(
            name=wp.plugin_config_name(plugin),
            root_id=spec.plugin_name or "",
            filename=module,
            configuration=configuration or {},
            failure_policy=policy,
            env=env or None,
            host_env_keys=host_keys,
            network=network,
        )
        return r.typed_extension_config(name, typed)


def _istiod_env(plugin: istio.WasmPlugin) -> dict[str, str]:
    """The variables istiod adds to a plugin's VM for the agent (buildVMConfig)."""
    env: dict[str, str] = {}
    if plugin.spec.image_pull_secret:
        # istiod inlines the Secret's docker config; meshwasm has no Secrets: as if it were missing.
        env["ISTIO_META_WASM_IMAGE_PULL_SECRET"] = ""
    if plugin.spec.image_pull_policy and plugin.spec.image_pull_policy != "UNSPECIFIED_POLICY":
        env["ISTIO_META_WASM_IMAGE_PULL_POLICY"] = plugin.spec.image_pull_policy
    env["ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"] = str(
        (plugin.metadata.model_extra or {}).get("resourceVersion", "")
    )
    return env


def _bad_creation_time(plugin: istio.WasmPlugin) -> bool:
    try:
        wp.creation_time(plugin)
    except wp.CreationTimeError:
        return True
    return False


def _creation_order(resource: istio.Gateway | istio.VirtualService) -> tuple[datetime, str, str]:
    """istiod's order of Gateways and VirtualServices: creation time, name, namespace."""
    try:
        created = wp.creation_time(resource)
    except wp.CreationTimeError:
        created = datetime.min.replace(tzinfo=UTC)  # the loader's schema check reports it
    return (created, resource.name, resource.namespace or "default")


def _header_match(name: str, match: Any) -> Json:
    if match.exact is not None:
        return {"name": name, "string_match": {"exact": match.exact}}
    if match.prefix is not None:
        return {"name": name, "string_match": {"prefix": match.prefix}}
    return {"name": name, "string_match": {"safe_regex": {"regex": match.regex}}}


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
    out["case_sensitive"] = True  # ignoreUriCase is not modelled: always false
    if match.headers:
        out["headers"] = [_header_match(name, match.headers[name]) for name in sorted(match.headers)]
    return out
