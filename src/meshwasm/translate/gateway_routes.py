"""A gateway listener's virtual hosts, as istiod builds a gateway's route configuration (pure).

What the pinned Istio does (buildGatewayHTTPRouteConfig; compared with Istio's own code by
tests/fidelity):

- the Gateways are taken in creation order (then name, namespace), their servers in order; for
  each server, the VirtualServices bound to its Gateway that the gateway's namespace can see
  (``exportTo``): those private to it, then those exported to it, then public ones, each in
  creation order;
- a VirtualService serves the hosts where its ``hosts`` and the server's ``hosts`` (the ones
  visible from the VirtualService's namespace, ``ns/host``) intersect, the more specific of
  each pair (``*.example.com`` and ``a.example.com`` give ``a.example.com``);
- one virtual host per such hostname (lower-cased), named ``<host>:<server port>``; a hostname
  served again on the same listener gets the later routes appended;
- virtual hosts whose route lists are the very same routes collapse into the most specific
  hostname's one (longest first, wildcards last), the others' domains appended;
- in a virtual host the catch-all routes (prefix ``/`` with no header match) go last; virtual
  hosts are sorted by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshwasm.manifests import istio

Json = dict[str, Any]
RouteKey = tuple[str, str, int]  # (Gateway, VirtualService, index of the route it made for it)


@dataclass
class VirtualHost:
    name: str
    domains: list[str]
    routes: list[tuple[RouteKey, Json]] = field(default_factory=list)

    def to_json(self) -> Json:
        routes = [route for _, route in self.routes]
        catch_all = [r for r in routes if _is_catch_all(r)]
        return {
            "name": self.name,
            "domains": self.domains,
            "routes": [r for r in routes if not _is_catch_all(r)] + catch_all,
            "include_request_attempt_count": True,
        }


def is_wildcard(host: str) -> bool:
    return host.startswith("*")


def subset_of(host: str, other: str) -> bool:
    """Istio's host.Name.SubsetOf: every name ``host`` matches ``other`` matches too."""
    if is_wildcard(host):
        return is_wildcard(other) and len(host) >= len(other) and host[1:].endswith(other[1:])
    if is_wildcard(other):
        return host.endswith(other[1:])
    return host == other


def intersection(server_hosts: Sequence[str], vs_hosts: Sequence[str]) -> list[str]:
    """Istio's host.Names.Intersection, server hosts first, in order, without repeats."""
    out: list[str] = []
    for server_host in server_hosts:
        for vs_host in vs_hosts:
            found = (
                server_host
                if subset_of(server_host, vs_host)
                else vs_host
                if subset_of(vs_host, server_host)
                else None
            )
            if found is not None and found not in out:
                out.append(found)
    return out


def hosts_for_namespace(server_hosts: Sequence[str], namespace: str, gateway_namespace: str) -> list[str]:
    """The server hosts a VirtualService in ``namespace`` may serve (``ns/host``, ``*/host``,
    ``./host`` meaning the Gateway's namespace, or a bare host)."""
    out = []
    for entry in server_hosts:
        scope, slash, name = entry.partition("/")
        if not slash:
            out.append(entry)
            continue
        scope = gateway_namespace if scope == "." else scope
        if scope in ("*", namespace):
            out.append(name)
    return out


def specificity(host: str) -> tuple[bool, int, str]:
    """Sort key of Istio's host.MoreSpecific: non-wildcards first, longest first, then by name."""
    return (is_wildcard(host), -len(host), host)


def visible_virtual_services(
    virtual_services: Sequence[istio.VirtualService], gateway_ref: str, proxy_namespace: str | None
) -> list[istio.VirtualService]:
    """The VirtualServices bound to ``gateway_ref`` ("ns/name") the gateway's namespace sees,
    in istiod's order (private, exported to it, public; each in the order given)."""
    private, exported, public = [], [], []
    for vs in virtual_services:
        namespace = vs.namespace or "default"
        bound = {g if "/" in g else f"{namespace}/{g}" for g in vs.spec.gateways}
        if gateway_ref not in bound:
            continue
        export_to = set(vs.spec.export_to or ["*"])
        if "*" in export_to:
            public.append(vs)
        elif "~" in export_to:
            continue
        elif "." in export_to and namespace == proxy_namespace:
            private.append(vs)
        elif proxy_namespace in export_to:
            exported.append(vs)
    return private + exported + public


def virtual_hosts(
    servers: Sequence[tuple[istio.Gateway, istio.Server]],
    virtual_services: Sequence[istio.VirtualService],
    proxy_namespace: str | None,
    routes_of: Callable[[istio.VirtualService], list[Json]],
) -> list[Json]:
    """The virtual hosts of one listener, from its Gateway servers (in Gateway order)."""
    by_host: dict[str, VirtualHost] = {}
    made: dict[str, list[tuple[RouteKey, Json]]] = {}
    for gateway, server in servers:
        gateway_namespace = gateway.namespace or "default"
        gateway_ref = f"{gateway_namespace}/{gateway.name}"
        for vs in visible_virtual_services(virtual_services, gateway_ref, proxy_namespace):
            vs_namespace = vs.namespace or "default"
            hosts = intersection(
                hosts_for_namespace(server.hosts, vs_namespace, gateway_namespace), vs.spec.hosts
            )
            if not hosts:
                continue
            # istiod builds a VirtualService's routes once per Gateway: only those are the same routes.
            key = f"{gateway_ref} {vs_namespace}/{vs.name}"
            if key not in made:
                made[key] = [((gateway_ref, key, i), route) for i, route in enumerate(routes_of(vs))]
            for hostname in (h.lower() for h in hosts):
                if hostname in by_host:
                    by_host[hostname].routes.extend(made[key])
                else:
                    by_host[hostname] = VirtualHost(
                        f"{hostname}:{server.port.number}", [hostname], list(made[key])
                    )
    collapsed: dict[tuple[RouteKey, ...], VirtualHost] = {}
    for hostname in sorted(by_host, key=specificity):
        vhost = by_host[hostname]
        same = tuple(key for key, _ in vhost.routes)
        if same in collapsed:
            collapsed[same].domains.extend(vhost.domains)
        else:
            collapsed[same] = vhost
    if not collapsed:
        # No VirtualService serves the port: istiod's 404 virtual host.
        port = servers[0][1].port.number if servers else 0
        return [{"name": f"blackhole:{port}", "domains": ["*"], "routes": []}]
    return [v.to_json() for v in sorted(collapsed.values(), key=lambda v: v.name)]


def _is_catch_all(route: Json) -> bool:
    match = route.get("match", {})
    if match.get("headers") or match.get("query_parameters"):
        return False
    return bool(match.get("prefix") == "/" or match.get("safe_regex", {}).get("regex") == ".*")
