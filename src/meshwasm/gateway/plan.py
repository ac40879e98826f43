"""What `meshwasm up` will run for a tree (pure): the workload, its ports, registries, upstreams.

Everything here is decided from the loaded tree and the user's options before
any process starts, so an invalid tree or an unmapped destination stops `up`
with every problem listed and nothing running.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from meshwasm.errors import UsageError
from meshwasm.fetcher.urls import decode_fetch_path
from meshwasm.manifests import core
from meshwasm.manifests.wasm_url import UnusableModuleUrl, module_url
from meshwasm.translate import IstioResources, upstream_key

_FQDN = re.compile(r"^(?P<name>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)(\.svc(\..*)?)?$")
LOOPBACK_HOSTS = ("127.", "localhost", "[::1]")


@dataclass(frozen=True)
class Workload:
    """The gateway workload the local Envoy plays: its labels and namespace."""

    labels: dict[str, str]
    namespace: str | None
    ports: list[int]
    hostnames: list[str]


@dataclass(frozen=True)
class Destination:
    host: str
    port: int

    @property
    def key(self) -> str:
        return upstream_key(self.host, self.port)

    @property
    def service(self) -> tuple[str, str] | None:
        """(namespace, name) for a Kubernetes service FQDN, else None."""
        match = _FQDN.match(self.host)
        return (match["namespace"], match["name"]) if match else None


@dataclass
class UpstreamPlan:
    """How each destination is served locally: a user mapping or the real httpbin."""

    mapped: dict[str, tuple[str, int]] = field(default_factory=dict)  # destination key -> (host, port)
    httpbin: list[str] = field(default_factory=list)  # destination keys served by the local httpbin


def choose_workload(istio: IstioResources, wanted: str | None) -> Workload:
    """The Istio Gateway(s) sharing one selector make one workload; several selectors need ``wanted``."""
    by_selector: dict[tuple[tuple[str, str], ...], list[object]] = {}
    for gateway in istio.gateways:
        by_selector.setdefault(tuple(sorted(gateway.spec.selector.items())), []).append(gateway)
    if not by_selector:
        raise UsageError("the tree declares no gateway", hint="add a TSB Gateway (gateway.tsb.tetrate.io/v2)")
    choices = {",".join(f"{k}={v}" for k, v in key): key for key in by_selector}
    if len(choices) > 1 and wanted is None:
        raise UsageError(
            f"the tree has several gateway workloads: {', '.join(sorted(choices))}",
            hint="choose one with --gateway LABEL=VALUE[,LABEL=VALUE]",
        )
    if wanted is not None:
        if wanted not in choices:
            raise UsageError(
                f"no gateway workload with labels {wanted}",
                hint=f"choose one of: {', '.join(sorted(choices))}",
            )
        key = choices[wanted]
    else:
        key = next(iter(by_selector))
    labels = dict(key)
    gateways = [g for g in istio.gateways if tuple(sorted(g.spec.selector.items())) == key]
    ports = sorted({server.port.number for g in gateways for server in g.spec.servers})
    hostnames = sorted(
        {host.split("/")[-1] for g in gateways for server in g.spec.servers for host in server.hosts}
    )
    namespaces = {g.namespace for g in gateways}
    return Workload(labels, namespaces.pop() if len(namespaces) == 1 else None, ports, hostnames)


def destinations(istio: IstioResources) -> list[Destination]:
    seen: dict[str, Destination] = {}
    for vs in istio.virtual_services:
        for route in vs.spec.http:
            for target in route.route:
                port = target.destination.port.number if target.destination.port else 80
                d = Destination(target.destination.host, port or 80)
                seen.setdefault(d.key, d)
    return list(seen.values())


def parse_upstream_flags(flags: list[str]) -> dict[tuple[str, str], tuple[str, int]]:
    """``namespace/name=host:port`` flags -> {(namespace, name): (host, port)}."""
    out: dict[tuple[str, str], tuple[str, int]] = {}
    for flag in flags:
        service, sep, target = flag.partition("=")
        namespace, slash, name = service.partition("/")
        host, colon, port = target.rpartition(":")
        if not (sep and slash and colon and namespace and name and host and port.isdigit()):
            raise UsageError(
                f"--upstream {flag!r} is not NAMESPACE/NAME=HOST:PORT",
                hint="e.g. --upstream shop/cart=127.0.0.1:9000",
            )
        out[(namespace, name)] = (host.strip("[]"), int(port))
    return out


def _is_httpbin(istio: IstioResources, namespace: str, name: str) -> bool:
    """Whether the Service's pods run an httpbin image (then the real local httpbin serves it)."""
    services = [
        r
        for r in istio.core
        if isinstance(r, core.Service) and r.name == name and (r.namespace or "default") == namespace
    ]
    if not services:
        return False
    selector = services[0].spec.selector
    for resource in istio.core:
        if isinstance(resource, core.Deployment) and (resource.namespace or "default") == namespace:
            labels = resource.spec.template.metadata.labels
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                images = [c.image or "" for c in resource.spec.template.spec.containers]
                if any("httpbin" in image for image in images):
                    return True
    return False


def plan_upstreams(istio: IstioResources, flags: Mapping[tuple[str, str], tuple[str, int]]) -> UpstreamPlan:
    plan = UpstreamPlan()
    unmapped: list[str] = []
    for d in destinations(istio):
        service = d.service
        if service is not None and service in flags:
            plan.mapped[d.key] = flags[service]
        elif service is not None and _is_httpbin(istio, *service):
            plan.httpbin.append(d.key)
        else:
            shown = f"{service[0]}/{service[1]}" if service else d.host
            unmapped.append(f"{d.host} port {d.port}: map it with --upstream {shown}=HOST:PORT")
    if unmapped:
        raise UsageError("destinations without a local upstream:\n  " + "\n  ".join(unmapped))
    return plan


def oci_urls(istio: IstioResources) -> list[str]:
    """The original ``oci://`` module URLs, seen through the fetcher URLs they became."""
    urls: list[str] = []
    for plugin in istio.wasm_plugins:
        url = plugin.spec.url
        if "/fetch/" in url:
            try:
                url = decode_fetch_path(url.rsplit("/fetch/", 1)[1])
            except Exception:  # noqa: S112 - a URL that is not ours is simply not a registry reference
                continue
        else:
            try:
                url = module_url(url)  # no scheme means oci://, as istiod reads it
            except UnusableModuleUrl:
                continue
        if url.startswith("oci://"):
            urls.append(url)
    return urls


def registry_hosts(istio: IstioResources) -> list[str]:
    return sorted({url.removeprefix("oci://").split("/", 1)[0] for url in oci_urls(istio)})


def is_loopback(host: str) -> bool:
    return host.startswith(LOOPBACK_HOSTS)
