"""Real helpers for the fetcher's integration tests: a small module host of our own.

:class:`ModuleHost` is a real threaded HTTP server on loopback whose behaviour
the test sets per path (status sequences, throttled bodies), for the faults a
well-behaved file server cannot produce on demand (a 503 that heals, a
download slow enough to kill the fetcher in the middle of it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from meshwasm.net import free_port


@dataclass
class Route:
    body: bytes
    statuses: list[int] = field(default_factory=list)  # answered first, one per request, then 200
    chunk: int = 1 << 16
    delay: float = 0.0  # seconds between chunks
    requests: int = 0


class ModuleHost:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.port = free_port()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                route = host.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route.requests += 1
                if route.statuses:
                    self.send_error(route.statuses.pop(0))
                    return
                self.send_response(200)
                self.send_header("content-type", "application/wasm")
                self.send_header("content-length", str(len(route.body)))
                self.end_headers()
                try:
                    for start in range(0, len(route.body), route.chunk):
                        self.wfile.write(route.body[start : start + route.chunk])
                        self.wfile.flush()
                        if route.delay:
                            time.sleep(route.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.netloc}{path}"

    def add(self, path: str, body: bytes, **kwargs: object) -> Route:
        route = Route(body, **kwargs)  # type: ignore[arg-type]
        self.routes[path] = route
        return route


@contextmanager
def module_host() -> Iterator[ModuleHost]:
    host = ModuleHost()
    host._thread.start()
    try:
        yield host
    finally:
        host._server.shutdown()
        host._server.server_close()


def wasm_module(size: int, seed: bytes = b"m") -> bytes:
    """A byte string that starts like a wasm module (the fetcher checks only the magic for http)."""
    header = b"\0asm\x01\0\0\0"
    body = (seed * (size // max(len(seed), 1) + 1))[: size - len(header)]
    return header + body


class ThrottlingProxy:
    """A real TCP proxy on loopback that slows what the upstream sends back (bytes per second).

    Put in front of the registry so a pull lasts long enough for requests to
    overlap it (single flight) or for the fetcher to be killed in its middle.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, rate: int):
        import socket

        self.upstream = (upstream_host, upstream_port)
        self.rate = rate  # bytes per second, upstream -> client
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._closing = True
        self._listener.close()

    def _accept(self) -> None:
        import socket

        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.rate), daemon=True).start()

    def _pipe(self, source: object, sink: object, rate: int) -> None:
        import socket

        assert isinstance(source, socket.socket)
        assert isinstance(sink, socket.socket)
        chunk = max(rate // 20, 1024) if rate else 1 << 16
        try:
            while not self._closing:
                data = source.recv(chunk)
                if not data:
                    break
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
