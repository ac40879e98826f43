"""One connection, one check; and a deadline no sequence of slow answers outlives.

The transport is driven against real sockets on loopback: a TLS server (its certificate for a
name, not for the address the name is pinned to) and a server that drips its answer.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshwasm.deadline import DeadlineExceeded, check_deadline, current_deadline, deadline_scope
from meshwasm.safehttp import GuardedTransport, IPAddress

NAME = "registry.test"


def _certificate(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for NAME signed by it: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class TlsServer:
    """Answers one HTTP/1.1 request per connection over TLS; records SNI and Host of each."""

    def __init__(self, cert: Path, key: Path):
        self.sni: list[str | None] = []
        self.hosts: list[str] = []
        self.connections = 0
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)  # type: ignore[assignment,func-returns-value]
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                with self._context.wrap_socket(raw, server_side=True) as conn:
                    request = conn.recv(65536).decode()
                    self.hosts += [
                        line[6:] for line in request.split("\r\n") if line.lower().startswith("host: ")
                    ]
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except (OSError, ssl.SSLError):
                continue

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[TlsServer, ssl.SSLContext]]:
    ca, cert, key = _certificate(tmp_path)
    server = TlsServer(cert, key)
    client = ssl.create_default_context(cafile=str(ca))
    try:
        yield server, client
    finally:
        server.close()


def test_the_connection_goes_to_the_checked_address_with_the_names_tls_and_host(
    tls: tuple[TlsServer, ssl.SSLContext],
) -> None:
    server, context = tls
    resolved: list[str] = []
    checked: list[tuple[str, list[str]]] = []

    def resolver(hostname: str, _port: int) -> list[str]:
        resolved.append(hostname)
        return ["127.0.0.1"]

    def check(hostname: str, addresses: Sequence[IPAddress]) -> None:
        checked.append((hostname, [str(a) for a in addresses]))

    transport = GuardedTransport(verify=context, resolver=resolver, check=check)
    with httpx.Client(transport=transport) as client:
        response = client.get(f"https://{NAME}:{server.port}/v2/")
    assert response.text == "ok"  # the certificate for NAME verified although we dialled 127.0.0.1
    assert server.sni == [NAME]
    assert server.hosts == [f"{NAME}:{server.port}"]
    assert resolved == [NAME]  # once, for the one connection
    assert checked == [(NAME, ["127.0.0.1"])]


def test_a_refused_address_is_never_connected_to(tls: tuple[TlsServer, ssl.SSLContext]) -> None:
    server, context = tls

    class Refused(Exception):
        pass

    def check(hostname: str, addresses: Sequence[IPAddress]) -> None:
        if ipaddress.ip_address("127.0.0.1") in addresses:
            raise Refused(hostname)

    transport = GuardedTransport(verify=context, resolver=lambda _h, _p: ["127.0.0.1"], check=check)
    with httpx.Client(transport=transport) as client, pytest.raises(Refused):
        client.get(f"https://{NAME}:{server.port}/v2/")
    time.sleep(0.1)
    assert server.connections == 0


def test_a_dripping_server_cannot_outlive_the_deadline() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000:
                if stop.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.05)  # each read succeeds: a per-read timeout never fires

    threading.Thread(target=drip, daemon=True).start()

    def download() -> None:
        with (
            httpx.Client(transport=GuardedTransport(), timeout=30) as client,
            client.stream("GET", f"http://127.0.0.1:{port}/") as response,
        ):
            for _ in response.iter_raw():
                pass

    start = time.monotonic()
    try:
        with deadline_scope(1.5, "the test download"), pytest.raises(httpx.TimeoutException):
            download()
        assert 1.4 <= time.monotonic() - start <= 3.0
    finally:
        stop.set()
        listener.close()


def test_deadlines_nest_and_never_extend() -> None:
    assert current_deadline() is None
    with deadline_scope(0.2, "outer") as outer:
        with deadline_scope(60, "inner") as inner:
            assert inner is outer  # the earlier end wins
        with deadline_scope(0.05, "shorter") as shorter:
            assert shorter is not None
            assert outer is not None
            assert shorter.end < outer.end
            time.sleep(0.06)
            with pytest.raises(DeadlineExceeded, match=r"shorter did not finish within its 0\.05 s deadline"):
                check_deadline()
        check_deadline()  # the outer one has not passed yet
    assert current_deadline() is None
