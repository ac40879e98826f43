"""Allowlist, address guard (on resolved addresses) and signed paths."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest

from meshwasm.fetcher.errors import Forbidden
from meshwasm.fetcher.security import AddressGuard, Allowlist, parse_networks, sign, verify_signature


def resolver_for(table: dict[str, Sequence[str]]):  # type: ignore[no-untyped-def]
    def resolve(hostname: str, _port: int) -> Sequence[str]:
        return table[hostname]

    return resolve


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:169.254.169.254", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
    ],
)
def test_dangerous_literal_addresses_are_refused(address: str, reason: str) -> None:
    with pytest.raises(Forbidden, match=reason) as info:
        AddressGuard().check_host(address, 80)
    assert info.value.status == 403
    assert info.value.code == "blocked_address"


def test_a_name_is_judged_by_what_it_resolves_to() -> None:
    guard = AddressGuard(resolver=resolver_for({"innocent.example": ["93.184.216.34", "169.254.169.254"]}))
    with pytest.raises(Forbidden, match=r"innocent\.example \(169\.254\.169\.254\)"):
        guard.check_host("innocent.example", 443)


def test_metadata_hostnames_are_refused_without_resolving() -> None:
    guard = AddressGuard(resolver=resolver_for({}))
    with pytest.raises(Forbidden, match="metadata"):
        guard.check_host("metadata.google.internal", 80)


def test_configured_blocked_ranges() -> None:
    guard = AddressGuard(
        blocked=parse_networks(["10.0.0.0/8"]), resolver=resolver_for({"r.corp": ["10.1.2.3"]})
    )
    with pytest.raises(Forbidden, match="blocked range"):
        guard.check_host("r.corp", 443)
    AddressGuard(resolver=resolver_for({"r.corp": ["10.1.2.3"]})).check_host("r.corp", 443)


def test_loopback_only_when_configured() -> None:
    AddressGuard(allow_loopback=True).check_host("127.0.0.1", 5000)
    AddressGuard(allow_loopback=True).check_host("localhost", 5000)


def test_request_guard_checks_each_request_url() -> None:
    guard = AddressGuard(allow_loopback=True)
    guard.request_guard(httpx.Request("GET", "http://127.0.0.1:5000/v2/"))
    with pytest.raises(Forbidden):
        guard.request_guard(httpx.Request("GET", "http://169.254.169.254/latest/meta-data/"))


def test_allowlist_by_host_or_host_and_port() -> None:
    allow = Allowlist.of(["registry.example.com", "127.0.0.1:5000"])
    assert allow.allows("registry.example.com:443", "registry.example.com")
    assert allow.allows("127.0.0.1:5000", "127.0.0.1")
    assert not allow.allows("127.0.0.1:5001", "127.0.0.1")
    with pytest.raises(Forbidden, match="not on the fetcher's allowlist") as info:
        Allowlist.of([]).check("ghcr.io", "ghcr.io")
    assert info.value.code == "not_allowed"


def test_signatures() -> None:
    key = b"k" * 32
    url = "oci://r.io/a:v1"
    sig = sign(key, url)
    assert verify_signature(key, url, sig)
    assert verify_signature(key, url, sig.upper())
    assert not verify_signature(key, "oci://r.io/a:v2", sig)
    assert not verify_signature(b"x" * 32, url, sig)
    assert not verify_signature(key, url, "")


@pytest.mark.parametrize(
    "host", ["0177.0.0.1", "0x7f.0.0.1", "2130706433", "127.1", "127.0.0.01", "1.2.3.4."]
)
def test_numeric_hosts_must_be_canonical_dotted_decimal(host: str) -> None:
    from meshwasm.fetcher.errors import BadRequest
    from meshwasm.fetcher.security import check_host_syntax

    if host == "1.2.3.4.":
        check_host_syntax(host)  # a trailing dot is the same address
        return
    with pytest.raises(BadRequest, match="not a DNS name and not an IPv4 address") as info:
        check_host_syntax(host)
    assert (info.value.status, info.value.code) == (400, "bad_host")


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "ghcr.io", "registry-1.docker.io", "10.0.0.1", "[::1]", "a.b9"]
)
def test_ordinary_hosts_pass_the_syntax_check(host: str) -> None:
    from meshwasm.fetcher.security import check_host_syntax

    check_host_syntax(host)


def test_the_connection_check_judges_the_addresses_it_is_given() -> None:
    import ipaddress

    guard = AddressGuard(
        blocked=parse_networks(["10.0.0.0/8"]), allowed=parse_networks(["10.96.0.0/12"]), allow_loopback=False
    )
    guard.check_addresses("svc.cluster", [ipaddress.ip_address("10.96.0.10")])  # opened by allowed_cidrs
    for address in ("10.1.2.3", "64:ff9b::a01:203", "169.254.169.254"):  # NAT64 of 10.1.2.3 too
        with pytest.raises(Forbidden, match="refusing to connect"):
            guard.check_addresses(
                "svc.cluster", [ipaddress.ip_address("1.1.1.1"), ipaddress.ip_address(address)]
            )
    with pytest.raises(Forbidden, match="metadata"):
        guard.check_addresses("metadata.google.internal", [ipaddress.ip_address("1.1.1.1")])


def test_allowlist_wildcards_and_hops() -> None:
    allow = Allowlist.of(["*.docker.com", "ghcr.io"])
    assert allow.allows("production.cloudflare.docker.com", "production.cloudflare.docker.com")
    assert not allow.allows("docker.com", "docker.com")
    assert not allow.allows("evil-docker.com", "evil-docker.com")
    allow.check_url(httpx.URL("https://ghcr.io/token?scope=x"), what="the token realm")
    with pytest.raises(Forbidden, match=r"A redirect goes to 127\.0\.0\.1:9, which is not on") as info:
        allow.check_url(httpx.URL("http://127.0.0.1:9/blob"), what="A redirect")
    assert info.value.code == "not_allowed"
