"""The fetcher's closed doors: host allowlist, address guard (SSRF) and signed fetch paths.

The address guard runs on every outgoing request, redirects included (the
registry client calls it as ``request_guard``), and checks the addresses the
host RESOLVES to, so a name pointing at a metadata service is refused as
surely as the literal address. Istio's agent blocks link-local and cloud
metadata addresses the same way (docs/architecture.md, "Istio agent and images").
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from meshwasm.fetcher.errors import Forbidden, UpstreamFailed

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Always refused, whatever the configuration says.
LINK_LOCAL: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
)
METADATA_ADDRESSES: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.169.254/32"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_network("169.254.170.2/32"),  # AWS ECS task metadata
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
)
METADATA_HOSTNAMES = frozenset(
    {"metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"}
)
LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
UNSPECIFIED: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("::/128"),
)

Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(hostname: str, port: int) -> list[str]:
    """Every address ``hostname`` resolves to (A and AAAA)."""
    infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@dataclass
class AddressGuard:
    """Refuses connections to link-local, metadata, blocked and (unless allowed) loopback addresses."""

    blocked: tuple[IPNetwork, ...] = ()
    allow_loopback: bool = False
    resolver: Resolver = field(default=system_resolver)

    def check_host(self, hostname: str, port: int) -> None:
        """Raise :class:`Forbidden` unless every address of ``hostname`` is allowed."""
        name = hostname.strip("[]").rstrip(".").lower()
        if name in METADATA_HOSTNAMES:
            raise Forbidden(f"{hostname} is a cloud metadata service", code="blocked_address")
        try:
            addresses = [name] if _is_ip(name) else list(self.resolver(name, port))
        except OSError as exc:
            # A name that does not resolve cannot be reached either; say so plainly.
            raise UpstreamFailed(f"cannot resolve {hostname}: {exc}", code="dns_failed") from exc
        if not addresses:
            raise Forbidden(f"{hostname} resolves to no address", code="blocked_address")
        for text in addresses:
            self.check_address(ipaddress.ip_address(text.split("%", 1)[0]), hostname)

    def check_address(self, address: IPAddress, hostname: str) -> None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        reason = self._refusal(address)
        if reason:
            shown = hostname if hostname == str(address) else f"{hostname} ({address})"
            raise Forbidden(f"refusing to connect to {shown}: {reason}", code="blocked_address")

    def _refusal(self, address: IPAddress) -> str | None:
        if _within(address, METADATA_ADDRESSES):
            return "cloud metadata address"
        if _within(address, LINK_LOCAL):
            return "link-local address"
        if _within(address, UNSPECIFIED):
            return "unspecified address"
        if _within(address, self.blocked):
            return "address in a blocked range (security.blocked_cidrs)"
        if _within(address, LOOPBACK) and not self.allow_loopback:
            return "loopback address (set security.allow_loopback for local use)"
        return None

    def request_guard(self, request: httpx.Request) -> None:
        """Hook for httpx and the registry client: check each outgoing request's host."""
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        self.check_host(url.host, port)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _within(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


@dataclass(frozen=True)
class Allowlist:
    """Registries and http hosts the fetcher may pull from: ``host`` (any port) or ``host:port``."""

    entries: frozenset[str]

    @classmethod
    def of(cls, hosts: Iterable[str]) -> Allowlist:
        return cls(frozenset(h.strip().lower().rstrip("/") for h in hosts if h.strip()))

    def allows(self, host: str, hostname: str) -> bool:
        """``host`` is ``hostname[:port]`` as written in the URL."""
        return host.lower() in self.entries or hostname.lower() in self.entries

    def check(self, host: str, hostname: str) -> None:
        if not self.allows(host, hostname):
            raise Forbidden(
                f"{host} is not on the fetcher's allowlist; add it to `allow` in the config or pass --allow",
                code="not_allowed",
            )


def sign(key: bytes, url: str) -> str:
    """The signature of a module URL: hex HMAC-SHA256 with the key shared with the control plane."""
    return hmac.new(key, url.encode(), hashlib.sha256).hexdigest()


def verify_signature(key: bytes, url: str, signature: str) -> bool:
    """Constant-time check of ``signature`` against the URL's HMAC."""
    return hmac.compare_digest(sign(key, url).encode(), signature.strip().lower().encode())
