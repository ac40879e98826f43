"""The fetcher's closed doors: host allowlist, address guard (SSRF) and signed fetch paths.

The address guard judges the addresses a host RESOLVES to, so a name pointing at a metadata
service is refused as surely as the literal address. It runs where the connection is made
(:class:`meshwasm.safehttp.GuardedTransport`): each connection's host is resolved once, those
addresses are checked, and the socket goes to one of them, so a name that answers differently
the second time (DNS rebinding) gains nothing. The allowlist runs on every request, redirects
and token realms included.

Hosts whose last label is a number must be canonical dotted-decimal IPv4: ``0177.0.0.1``,
``0x7f.1`` or ``2130706433`` mean 127.0.0.1 to getaddrinfo and to URL parsers that follow
WHATWG, but are not IP addresses to Go's ``net.ParseIP`` (Istio's agent would look them up as
names). Parsers that disagree are how guards are bypassed, so they are refused as unparsable.

Istio's agent checks only the bearer realms a registry names (not fetch URLs, redirects or
resolved names); see docs/fetcher.md.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from meshwasm.fetcher.errors import BadRequest, Forbidden, UpstreamFailed
from meshwasm.safehttp import GuardedTransport, Resolver, system_resolver

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

# Private and shared address space: refused by default (security.blocked_cidrs), a range at a
# time opened with security.allowed_cidrs.
PRIVATE_RANGES: tuple[str, ...] = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # carrier-grade NAT, used for pod and service ranges by some clusters
    "fc00::/7",  # IPv6 unique local
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")


def check_host_syntax(hostname: str) -> None:
    """Refuse host names that URL parsers and resolvers read differently (see the module doc)."""
    name = hostname.strip("[]").rstrip(".")
    if not name:
        raise BadRequest("the URL has an empty host", code="bad_host")
    if ":" in name:  # IPv6 literal
        try:
            ipaddress.IPv6Address(name.split("%", 1)[0])
        except ValueError as exc:
            raise BadRequest(
                f"host {hostname!r} is not a valid IPv6 address ({exc})", code="bad_host"
            ) from exc
        return
    if _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise BadRequest(
                f"host {hostname!r} is not a DNS name and not an IPv4 address in dotted decimal: "
                "resolvers read it as an address (octal, hex or short form) that Go and Istio do not",
                code="bad_host",
            ) from None


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@dataclass
class AddressGuard:
    """Refuses connections to link-local, metadata, blocked and (unless allowed) loopback addresses.

    ``allowed`` ranges are exempt from ``blocked`` (an in-cluster registry's range, say), never
    from the metadata, link-local and unspecified refusals.
    """

    blocked: tuple[IPNetwork, ...] = ()
    allow_loopback: bool = False
    resolver: Resolver = field(default=system_resolver)
    allowed: tuple[IPNetwork, ...] = ()

    def check_host(self, hostname: str, port: int) -> None:
        """Resolve ``hostname`` and raise :class:`Forbidden` unless every address is allowed.

        For callers that do not connect themselves; connections go through :meth:`transport`,
        which checks the addresses it connects to.
        """
        check_host_syntax(hostname)
        name = hostname.strip("[]").rstrip(".").lower()
        self._check_name(name, hostname)
        try:
            addresses = [name] if _is_ip(name) else list(self.resolver(name, port))
        except OSError as exc:
            # A name that does not resolve cannot be reached either; say so plainly.
            raise UpstreamFailed(f"cannot resolve {hostname}: {exc}", code="dns_failed") from exc
        if not addresses:
            raise Forbidden(f"{hostname} resolves to no address", code="blocked_address")
        for text in addresses:
            self.check_address(ipaddress.ip_address(text.split("%", 1)[0]), hostname)

    def check_addresses(self, hostname: str, addresses: Sequence[IPAddress]) -> None:
        """The connection-time check: ``hostname`` is about to be connected at ``addresses``."""
        check_host_syntax(hostname)
        self._check_name(hostname.strip("[]").rstrip(".").lower(), hostname)
        if not addresses:
            raise Forbidden(f"{hostname} resolves to no address", code="blocked_address")
        for address in addresses:
            self.check_address(address, hostname)

    def transport(self, *, verify: bool = True) -> GuardedTransport:
        """An httpx transport whose connections pass this guard (resolved once, then pinned)."""
        return GuardedTransport(verify=verify, resolver=self.resolver, check=self.check_addresses)

    @staticmethod
    def _check_name(name: str, hostname: str) -> None:
        if name in METADATA_HOSTNAMES:
            raise Forbidden(f"{hostname} is a cloud metadata service", code="blocked_address")

    def check_address(self, address: IPAddress, hostname: str) -> None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif isinstance(address, ipaddress.IPv6Address) and address in _NAT64:
            # A NAT64 address reaches the IPv4 address in its last 32 bits: judge that one.
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            self.check_address(embedded, hostname)
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
        if _within(address, self.blocked) and not _within(address, self.allowed):
            return "address in a blocked range (security.blocked_cidrs; open one with security.allowed_cidrs)"
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
        """``host`` is ``hostname[:port]`` as written in the URL; ``*.example.com`` entries allow
        every name under example.com (not example.com itself)."""
        host, hostname = host.lower(), hostname.lower().rstrip(".")
        if host in self.entries or hostname in self.entries:
            return True
        return any(e.startswith("*.") and hostname.endswith(e[1:]) for e in self.entries)

    def with_hosts(self, hosts: Iterable[str]) -> Allowlist:
        return Allowlist(self.entries | Allowlist.of(hosts).entries)

    def check_url(self, url: httpx.URL, *, what: str) -> None:
        """Every hop of a pull: ``what`` says which (a redirect, a token realm) in the refusal."""
        hostname = url.host.lower()
        shown = f"[{hostname}]" if ":" in hostname else hostname
        host = hostname if url.port is None else f"{shown}:{url.port}"
        if not self.allows(host, hostname):
            raise Forbidden(
                f"{what} goes to {host}, which is not on the fetcher's allowlist; add it to `allow` "
                "if you trust it",
                code="not_allowed",
            )

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
