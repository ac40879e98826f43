"""A malicious OCI registry and a DNS server of our own, on loopback, for the hostile-input tests.

The real distribution registry cannot be made to misbehave; this one does what the test
says, per repository: drip its answers a byte at a time, send bombs (gzip and tar), redirect
blobs or name token realms off the allowlist, announce sizes that lie (−1, too small, too
large), send huge manifests. It speaks just enough of the distribution API for a pull
(``/v2/``, manifests by tag or digest, blobs) and records what it was asked, which
connections are still being written to, and what the clients did.

:class:`DnsServer` answers A queries from a script (the first query for a name gets the first
answer, later ones the next, the last one repeats), so a test can rebind a name between the
check and the connection, and counts the queries.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
WASM_HEADER = b"\0asm\x01\0\0\0"
_PATH = re.compile(r"^/v2/(?P<repo>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/?]+)$")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    """Bytes a registry serves under ``digest``: ``chunks()`` yields them (possibly lazily)."""

    digest: str
    size: int
    chunks: Callable[[], Iterator[bytes]]

    @classmethod
    def of(cls, data: bytes) -> Blob:
        return cls(digest_of(data), len(data), lambda: iter([data]))

    @classmethod
    def large_module(cls, size: int, seed: int) -> Blob:
        """A ``size``-byte module (wasm header, then a repeated random MiB): never held whole."""
        block = hashlib.sha256(str(seed).encode()).digest() * (1 << 15)  # 1 MiB, seed-specific

        def chunks() -> Iterator[bytes]:
            sent = 0
            first = True
            while sent < size:
                piece = block[: min(len(block), size - sent)]
                if first:
                    piece = WASM_HEADER + piece[len(WASM_HEADER) :]
                    first = False
                sent += len(piece)
                yield piece

        digest = hashlib.sha256()
        for piece in chunks():
            digest.update(piece)
        return cls("sha256:" + digest.hexdigest(), size, chunks)


@dataclass
class Repo:
    """One repository's behaviour."""

    manifest: bytes
    blobs: dict[str, Blob] = field(default_factory=dict)
    media_type: str = OCI_MANIFEST
    drip: float = 0.0  # seconds between single bytes of blob bodies
    manifest_drip: float = 0.0  # seconds between single bytes of whole manifest answers
    redirect_blobs_to: str | None = None  # blob GETs answer 307 to this base URL
    realm: str | None = None  # every request answers 401 Bearer realm=<this>
    blob_bytes: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes sent instead


def manifest_doc(config: dict[str, object], layers: list[dict[str, object]]) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    ).encode()


def descriptor(media_type: str, blob: Blob, *, size: int | None = None) -> dict[str, object]:
    return {"mediaType": media_type, "digest": blob.digest, "size": blob.size if size is None else size}


def oci_variant(module: Blob, *, layer_size: int | None = None) -> Repo:
    """A wasm image of the ``oci`` variant around ``module``: the spec's two layers, the runtime
    config and the raw module (Istio's agent refuses this variant with any other number)."""
    config = Blob.of(b'{"type":"envoy_proxy"}')
    manifest = manifest_doc(
        descriptor(WASM_CONFIG, config),
        [descriptor(WASM_CONFIG, config), descriptor(WASM_LAYER, module, size=layer_size)],
    )
    return Repo(manifest, {config.digest: config, module.digest: module})


def compat_variant(layer: bytes) -> Repo:
    """A ``compat`` image: one tar+gzip layer (whatever it holds)."""
    config = Blob.of(b'{"architecture":"wasm","os":"wasip1"}')
    blob = Blob.of(layer)
    manifest = manifest_doc(descriptor(OCI_CONFIG, config), [descriptor(TAR_GZIP, blob)])
    return Repo(manifest, {config.digest: config, blob.digest: blob})


def tar_gz(members: Iterator[tuple[str, int, Iterator[bytes]]], *, level: int = 6) -> bytes:
    """A tar+gzip of ``(name, size, chunks)`` members, streamed through gzip."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=level) as gz:
        for name, size, chunks in members:
            info = tarfile.TarInfo(name)
            info.size = size
            gz.write(info.tobuf(format=tarfile.USTAR_FORMAT))
            written = 0
            for chunk in chunks:
                gz.write(chunk)
                written += len(chunk)
            assert written == size
            if size % 512:
                gz.write(b"\0" * (512 - size % 512))
        gz.write(b"\0" * 1024)
    return out.getvalue()


def zeros(size: int, *, head: bytes = b"") -> Iterator[bytes]:
    block = b"\0" * (1 << 20)
    yield head
    left = size - len(head)
    while left > 0:
        yield block[: min(left, len(block))]
        left -= len(block)


def tar_bomb(members: int) -> bytes:
    """Gzip of ``members`` identical empty-file headers: ~0.5 KiB each raw, a few bytes gzipped."""
    info = tarfile.TarInfo("junk")
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=1) as gz:
        batch = header * 4096
        for _ in range(members // 4096):
            gz.write(batch)
        gz.write(header * (members % 4096))
        gz.write(b"\0" * 1024)
    return out.getvalue()


class _CountingServer(ThreadingHTTPServer):
    connections = 0

    def verify_request(self, request: object, client_address: object) -> bool:
        self.connections += 1
        return True


class HostileRegistry:
    """The malicious registry on 127.0.0.1 (``host`` may bind another loopback address)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.repos: dict[str, Repo] = {}
        self.files: dict[str, tuple[bytes, float]] = {}  # plain http: path -> (body, drip)
        self.requests: list[tuple[str, str]] = []
        self.active = 0  # responses being written right now
        self.broken = 0  # responses the client hung up on
        self._lock = threading.Lock()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: every request reconnects

            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                registry._handle(self, "GET")

            def do_HEAD(self) -> None:
                registry._handle(self, "HEAD")

        self._server = _CountingServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        return self._server.connections

    def start(self) -> HostileRegistry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, method: str, fragment: str) -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and fragment in p)

    def wait_idle(self, timeout: float) -> bool:
        """True once no response is being written (a client that gave up is noticed on the next
        byte written to it)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.active == 0:
                return True
            time.sleep(0.05)
        return self.active == 0

    # --- the API

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path
        with self._lock:
            self.requests.append((method, path))
        if path in self.files:
            body, drip = self.files[path]
            self._answer(handler, 200, {"Content-Type": "application/wasm"}, body, method=method, drip=drip)
            return
        if path in ("/v2/", "/v2"):
            self._answer(handler, 200, {"Content-Type": "application/json"}, b"{}", method=method)
            return
        match = _PATH.match(path.split("?", 1)[0])
        repo = self.repos.get(match["repo"]) if match else None
        if match is None or repo is None:
            self._answer(handler, 404, {"Content-Type": "application/json"}, b'{"errors":[]}', method=method)
            return
        if repo.realm is not None:
            challenge = (
                f'Bearer realm="{repo.realm}",service="hostile",scope="repository:{match["repo"]}:pull"'
            )
            self._answer(handler, 401, {"WWW-Authenticate": challenge}, b"", method=method)
            return
        if match["kind"] == "manifests":
            headers = {
                "Content-Type": repo.media_type,
                "Docker-Content-Digest": digest_of(repo.manifest),
            }
            self._answer(handler, 200, headers, repo.manifest, method=method, drip=repo.manifest_drip)
            return
        blob = repo.blobs.get(match["ref"])
        if blob is None:
            self._answer(handler, 404, {}, b"", method=method)
            return
        if repo.redirect_blobs_to is not None:
            location = f"{repo.redirect_blobs_to}/blobs/{blob.digest}"
            self._answer(handler, 307, {"Location": location}, b"", method=method)
            return
        if blob.digest in repo.blob_bytes:
            data = repo.blob_bytes[blob.digest]
            self._answer(handler, 200, {"Content-Type": "application/octet-stream"}, data, method=method)
            return
        self._stream(handler, blob, method=method, drip=repo.drip)

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        body: bytes,
        *,
        method: str,
        drip: float = 0.0,
    ) -> None:
        head = f"HTTP/1.0 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        payload = head.encode() + (body if method == "GET" else b"")
        self._write(handler, iter([payload]), drip)

    def _stream(self, handler: BaseHTTPRequestHandler, blob: Blob, *, method: str, drip: float) -> None:
        head = (
            "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
            f"Docker-Content-Digest: {blob.digest}\r\nContent-Length: {blob.size}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()

        def chunks() -> Iterator[bytes]:
            yield head
            if method == "GET":
                yield from blob.chunks()

        self._write(handler, chunks(), drip)

    def _write(self, handler: BaseHTTPRequestHandler, chunks: Iterator[bytes], drip: float) -> None:
        with self._lock:
            self.active += 1
        try:
            for chunk in chunks:
                if not drip:
                    handler.wfile.write(chunk)
                    continue
                for i in range(len(chunk)):
                    handler.wfile.write(chunk[i : i + 1])
                    handler.wfile.flush()
                    time.sleep(drip)
            handler.wfile.flush()
        except OSError:
            with self._lock:
                self.broken += 1
        finally:
            with self._lock:
                self.active -= 1


class RecordingServer:
    """An HTTP server that only counts what reaches it (a redirect target, a token realm, an
    internal service): the hostile tests assert that nothing does."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = b'{"token":"t"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET
            do_POST = do_GET

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class DnsServer:
    """A scripted DNS server on 127.0.0.1 (UDP): ``script[name]`` is the list of A answers for
    the first, second, ... query of ``name`` (the last repeats); TTL 0, AAAA answered empty."""

    def __init__(self, script: dict[str, list[list[str]]]):
        self.script = {k.rstrip(".").lower(): v for k, v in script.items()}
        self.queries: dict[str, int] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(packet)
            except Exception:
                continue
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            if question.rdtype == dns.rdatatype.A and name in self.script:
                count = self.queries.get(name, 0)
                self.queries[name] = count + 1
                answers = self.script[name][min(count, len(self.script[name]) - 1)]
                if answers:
                    response.answer.append(
                        dns.rrset.from_text_list(
                            question.name, 0, dns.rdataclass.IN, dns.rdatatype.A, answers
                        )
                    )
            elif name not in self.script:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self._sock.sendto(response.to_wire(), peer)


def port_free_on_both(first: str, second: str) -> int:
    """A port free on two loopback addresses (for a name that rebinds between them)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((first, 0))
            port: int = probe.getsockname()[1]
        with socket.socket() as other:
            try:
                other.bind((second, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port free on both {first} and {second}")
