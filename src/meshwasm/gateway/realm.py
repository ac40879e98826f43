"""The check Istio's agent makes on every registry 401 (pkg/wasm/imagefetcher.go ``ssrfProtectionTransport``).

Each ``realm="..."`` in each ``WWW-Authenticate`` header, Basic or Bearer alike, must be an
http(s) URL whose host is not ``localhost``, ``metadata.google.internal``, or a private (RFC 1918,
fc00::/7), loopback or link-local IP literal; otherwise the pull fails with "rejected unsafe bearer
realm". So a Basic-auth registry whose realm is a plain word (distribution's example
``basic-realm``) or a token service on a private address cannot be pulled from by Istio's agent,
and meshwasm's agent refuses them the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from meshwasm.errors import MeshwasmError
from meshwasm.manifests.wasm_url import go_url_scheme
from meshwasm.oci.errors import AuthenticationError

_MARKER = 'realm="'
# Go's net.IP IsPrivate, IsLoopback and IsLinkLocalUnicast (narrower than Python's is_private).
_REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
        "127.0.0.0/8",
        "::1/128",
        "169.254.0.0/16",
        "fe80::/10",
    )
)


def realm_problem(realm: str) -> str | None:
    """Why Istio's agent refuses this realm, or None when it accepts it."""
    try:
        scheme = go_url_scheme(realm)
    except MeshwasmError:
        return "invalid realm URL: missing protocol scheme"
    if scheme not in ("http", "https"):
        return f'realm scheme "{scheme or ""}" not allowed'
    rest = realm[len(scheme) + 1 :]
    host = _host(rest[2:]) if rest.startswith("//") else ""
    if not host:
        return "realm missing host"
    if host == "metadata.google.internal":
        return "realm targets cloud metadata service"
    if host == "localhost":
        return "realm targets localhost"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in _REFUSED_NETWORKS if network.version == address.version):
        return "realm targets private/loopback/link-local IP"
    return None


def _host(authority_and_path: str) -> str:
    """Go's ``URL.Hostname()``: no userinfo, brackets or port, case kept."""
    authority = authority_and_path.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    authority = authority.rsplit("@", 1)[-1]
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0]
    host, sep, port = authority.rpartition(":")
    return host if sep and (port.isdigit() or not port) else authority


def refuse_unsafe_realms(challenges: Iterable[str]) -> None:
    """Raise :class:`AuthenticationError` when any challenge names a realm Istio's agent refuses."""
    for header in challenges:
        remaining = header
        while (start := remaining.find(_MARKER)) != -1:
            remaining = remaining[start + len(_MARKER) :]
            end = remaining.find('"')
            if end == -1:
                break
            realm, remaining = remaining[:end], remaining[end + 1 :]
            problem = realm_problem(realm)
            if problem:
                raise AuthenticationError(
                    f"rejected unsafe bearer realm: {problem} (the registry's challenge names realm "
                    f"{realm!r}; Istio's agent refuses it)",
                    hint="a Basic realm must look like an https URL with a public host name, and a token "
                    "service must not be on a private, loopback or link-local address",
                )
