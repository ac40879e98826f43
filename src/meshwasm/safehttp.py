"""HTTP that connects to the address it checked, and never waits past the current deadline.

Checking a host name and then letting the HTTP library connect to it resolves the name twice:
a name that answers a public address to the check and a private one to the connection (DNS
rebinding) passes any guard. :class:`GuardedTransport` resolves each new connection's host
ONCE, hands the addresses to the caller's check, and connects to those very addresses. TLS
still verifies (and sends as SNI) the host name, and the Host header still names it: only the
socket's peer is pinned.

Every socket operation (resolve, connect, TLS handshake, each read and write) is clamped to
the current :mod:`meshwasm.deadline`, so no sequence of slow-but-alive answers outlives it.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import select
import socket
import ssl
import time
import typing
from collections.abc import Callable, Iterable, Sequence

import httpcore
import httpx

from meshwasm.deadline import clamp_timeout, current_deadline, deadline_expired

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""``resolver(hostname, port)`` -> addresses; raises OSError (TimeoutError when too slow)."""
AddressCheck = Callable[[str, Sequence[IPAddress]], None]
"""``check(hostname, addresses)`` raises to refuse a connection before it is made."""

_DNS_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="meshwasm-dns")


def parse_address(text: str) -> IPAddress | None:
    """An IP literal (``[::1]`` and zone ids accepted), or None for a name."""
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def system_resolver(hostname: str, port: int) -> list[str]:
    """The system's answer (getaddrinfo: /etc/hosts, then DNS), bounded by the current deadline.

    getaddrinfo cannot be interrupted, so it runs in a small helper pool and the caller stops
    waiting when the deadline comes; order is kept (it is the system's preference order).
    """
    future = _DNS_THREADS.submit(socket.getaddrinfo, hostname, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=clamp_timeout(None))
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"resolving {hostname} timed out") from None
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


class DnsServerResolver:
    """Ask the given DNS servers (UDP, then TCP when truncated) for A and AAAA, uncached.

    For deployments that must not trust the node's resolver configuration, and for tests
    that serve their own answers (``servers`` as ``host`` or ``host:port``, port 53 default).
    """

    def __init__(self, servers: Sequence[str], *, timeout: float = 5.0):
        import dns.nameserver
        import dns.resolver

        if not servers:
            raise ValueError("DnsServerResolver needs at least one server")
        self.timeout = timeout
        self._resolver = dns.resolver.Resolver(configure=False)
        self._resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port) for host, port in map(split_server, servers)
        ]
        self._resolver.cache = None

    def __call__(self, hostname: str, port: int) -> list[str]:
        import dns.exception
        import dns.resolver

        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = self._resolver.resolve(
                    hostname, rdtype, lifetime=clamp_timeout(self.timeout), search=False
                )
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.Timeout as exc:
                raise TimeoutError(f"resolving {hostname} timed out ({exc})") from exc
            except dns.exception.DNSException as exc:
                raise OSError(f"resolving {hostname} failed: {exc}") from exc
            found.extend(rdata.to_text() for rdata in answer)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{hostname}: no A or AAAA record")
        return found


def split_server(text: str) -> tuple[str, int]:
    """``1.2.3.4`` / ``1.2.3.4:5353`` / ``[::1]:5353`` -> (address, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest.lstrip(":") or 53)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, 53


class _SocketStream(httpcore.NetworkStream):
    """One connection; every read, write and handshake waits at most until the current deadline."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if deadline_expired():
            raise httpcore.ReadTimeout("the operation's deadline passed")
        try:
            self._sock.settimeout(clamp_timeout(timeout))
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "read timed out") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            while buffer:
                if deadline_expired():
                    raise httpcore.WriteTimeout("the operation's deadline passed")
                self._sock.settimeout(clamp_timeout(timeout))
                sent = self._sock.send(buffer)
                buffer = buffer[sent:]
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "write timed out") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        try:
            self._sock.settimeout(clamp_timeout(timeout))
            wrapped = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except TimeoutError as exc:
            self.close()
            raise httpcore.ConnectTimeout(str(exc) or "TLS handshake timed out") from exc
        except OSError as exc:  # ssl.SSLError is an OSError
            self.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return _SocketStream(wrapped)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "ssl_object":
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            return _readable(self._sock)
        return None


def _readable(sock: socket.socket) -> bool:
    """True when a pooled connection has data or was closed by the peer (then it is not reused)."""
    if sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class PinnedBackend(httpcore.NetworkBackend):
    """httpcore's socket layer: resolve once, check, connect to the checked addresses."""

    def __init__(self, *, resolver: Resolver = system_resolver, check: AddressCheck | None = None):
        self.resolver = resolver
        self.check = check

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        if deadline_expired():
            raise httpcore.ConnectTimeout("the operation's deadline passed")
        literal = parse_address(host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                answers = self.resolver(host, port)
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"resolving {host}: {exc}") from exc
            except OSError as exc:
                raise httpcore.ConnectError(f"Name or service not known: {host} ({exc})") from exc
            addresses = [a for a in map(parse_address, answers) if a is not None]
            if not addresses:
                raise httpcore.ConnectError(f"Name or service not known: {host} has no address")
        if self.check is not None:
            self.check(host, addresses)
        source = None if local_address is None else (local_address, 0)
        last: Exception | None = None
        for address in addresses:
            try:
                sock = socket.create_connection(
                    (str(address), port), clamp_timeout(timeout), source_address=source
                )
            except TimeoutError as exc:
                last = httpcore.ConnectTimeout(f"connecting to {host} ({address}) timed out")
                last.__cause__ = exc
                if deadline_expired():
                    break
                continue
            except OSError as exc:
                last = httpcore.ConnectError(f"{exc} ({host} at {address})")
                last.__cause__ = exc
                continue
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _SocketStream(sock)
        assert last is not None
        raise last

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport over :class:`PinnedBackend` (no proxies: they would defeat the check)."""

    def __init__(
        self,
        *,
        verify: bool | ssl.SSLContext = True,
        resolver: Resolver = system_resolver,
        check: AddressCheck | None = None,
        limits: httpx.Limits | None = None,
    ):
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        super().__init__(verify=context, trust_env=False)
        chosen = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        # httpx builds a pool on the default backend; replace it with one on ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=chosen.max_connections,
            max_keepalive_connections=chosen.max_keepalive_connections,
            keepalive_expiry=chosen.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=PinnedBackend(resolver=resolver, check=check),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout")
        if isinstance(timeouts, dict) and current_deadline() is not None:
            # Waiting for a pooled connection counts too.
            request.extensions["timeout"] = {key: clamp_timeout(value) for key, value in timeouts.items()}
        return super().handle_request(request)
