"""One HTTP request/response through a plugin: the HTTP context a test drives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshwasm.host.abi import Action, MapType
from meshwasm.host.errors import PluginError
from meshwasm.host.headers import HeaderMap, HeadersLike

if TYPE_CHECKING:
    from meshwasm.host.plugin import Plugin


@dataclass(frozen=True)
class LocalResponse:
    """A reply the plugin sent itself (proxy_send_local_response) instead of the upstream's."""

    status: int
    body: bytes
    headers: HeaderMap
    details: str = ""
    grpc_status: int = -1


class HttpStream:
    """One HTTP request/response through the plugin (an HTTP context in proxy-wasm terms)."""

    def __init__(self, plugin: Plugin, context_id: int):
        self.plugin = plugin
        self.id = context_id
        self.request_headers = HeaderMap()
        self.request_trailers = HeaderMap()
        self.response_headers = HeaderMap()
        self.response_trailers = HeaderMap()
        self.local_response: LocalResponse | None = None
        self.reset = False
        self.request_paused = False
        self.response_paused = False
        self.done = False
        self.phase = "created"
        self.properties: dict[tuple[str, ...], bytes] = {}
        self._maps: set[MapType] = set()
        self._readable_all = False
        self._forwarded = {"request": b"", "response": b""}
        self._buffered: dict[str, bytes | None] = {"request": None, "response": None}

    # -- what the plugin left --------------------------------------------------------------------
    @property
    def request_body(self) -> bytes:
        """Body bytes passed upstream so far, plus what is still buffered while paused."""
        return self._forwarded["request"] + (self._buffered["request"] or b"")

    @property
    def response_body(self) -> bytes:
        return self._forwarded["response"] + (self._buffered["response"] or b"")

    # -- driving the stream ----------------------------------------------------------------------------
    def send_request_headers(self, headers: HeadersLike, end_of_stream: bool = False) -> Action | int:
        self.request_headers = HeaderMap(headers)
        return self._headers("request", MapType.REQUEST_HEADERS, self.request_headers, end_of_stream)

    def send_response_headers(self, headers: HeadersLike, end_of_stream: bool = False) -> Action | int:
        self.response_headers = HeaderMap(headers)
        return self._headers("response", MapType.RESPONSE_HEADERS, self.response_headers, end_of_stream)

    def send_request_body(self, body: bytes | str, end_of_stream: bool = True) -> Action | int:
        return self._body("request", body, end_of_stream)

    def send_response_body(self, body: bytes | str, end_of_stream: bool = True) -> Action | int:
        return self._body("response", body, end_of_stream)

    def send_request_trailers(self, trailers: HeadersLike) -> Action | int:
        self.request_trailers = HeaderMap(trailers)
        return self._trailers("request", MapType.REQUEST_TRAILERS, self.request_trailers)

    def send_response_trailers(self, trailers: HeadersLike) -> Action | int:
        self.response_trailers = HeaderMap(trailers)
        return self._trailers("response", MapType.RESPONSE_TRAILERS, self.response_trailers)

    def complete(self) -> None:
        """End the stream as Envoy does: on_done, then on_log (headers readable), then on_delete."""
        if self.done:
            return
        self.phase = "done"
        self._maps = set()
        self.plugin._call("proxy_on_done", self.id)
        self.phase = "log"
        self._readable_all = True
        try:
            self.plugin._call("proxy_on_log", self.id)
        finally:
            self._readable_all = False
            self.phase = "deleted"
            self.done = True
            self.plugin._call("proxy_on_delete", self.id)
            self.plugin._streams.pop(self.id, None)

    # -- internals -------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.done:
            raise PluginError(f"stream {self.id} is complete; start a new one with plugin.http_stream()")

    def _headers(
        self, direction: str, kind: MapType, headers: HeaderMap, end_of_stream: bool
    ) -> Action | int:
        self._check_open()
        self.phase = f"on_{direction}_headers"
        self._maps.add(kind)
        action = self.plugin._call(
            f"proxy_on_{direction}_headers", self.id, len(headers.pairs()), int(end_of_stream)
        )
        self._after(direction, kind, action)
        return _action(action)

    def _trailers(self, direction: str, kind: MapType, trailers: HeaderMap) -> Action | int:
        self._check_open()
        self.phase = f"on_{direction}_trailers"
        self._maps.add(kind)
        action = self.plugin._call(f"proxy_on_{direction}_trailers", self.id, len(trailers.pairs()))
        self._after(direction, kind, action)
        return _action(action)

    def _body(self, direction: str, body: bytes | str, end_of_stream: bool) -> Action | int:
        self._check_open()
        chunk = body.encode() if isinstance(body, str) else bytes(body)
        self._buffered[direction] = (self._buffered[direction] or b"") + chunk
        self.phase = f"on_{direction}_body"
        size = len(self._buffered[direction] or b"")
        action = self.plugin._call(f"proxy_on_{direction}_body", self.id, size, int(end_of_stream))
        self._after(direction, None, action)
        return _action(action)

    def _after(self, direction: str, kind: MapType | None, action: int) -> None:
        if action == Action.CONTINUE and self.local_response is None:
            self._resume(direction, phase=f"after_{direction}")
        elif direction == "request":
            self.request_paused = True
            self.phase = "request_paused"
        else:
            self.response_paused = True
            self.phase = "response_paused"

    def _resume(self, direction: str, phase: str | None = None) -> None:
        """Continue one direction: its header maps close, its buffered body goes on."""
        if direction == "request":
            self.request_paused = False
            self._maps -= {MapType.REQUEST_HEADERS, MapType.REQUEST_TRAILERS}
        else:
            self.response_paused = False
            self._maps -= {MapType.RESPONSE_HEADERS, MapType.RESPONSE_TRAILERS}
        self._forwarded[direction] += self._buffered[direction] or b""
        self._buffered[direction] = None
        self.phase = phase or f"{direction}_resumed"

    def _header_map(self, kind: MapType, *, write: bool) -> HeaderMap | None:
        if kind not in self._maps and not (self._readable_all and not write):
            return None
        return {
            MapType.REQUEST_HEADERS: self.request_headers,
            MapType.REQUEST_TRAILERS: self.request_trailers,
            MapType.RESPONSE_HEADERS: self.response_headers,
            MapType.RESPONSE_TRAILERS: self.response_trailers,
        }.get(kind)

    def _send_local_response(
        self, *, status: int, body: bytes, headers: HeaderMap, details: str, grpc_status: int
    ) -> None:
        self.local_response = LocalResponse(status, body, headers, details, grpc_status)
        self._maps = set()
        for direction in ("request", "response"):
            self._buffered[direction] = None

    def __repr__(self) -> str:
        return f"HttpStream(id={self.id}, phase={self.phase!r})"


def _action(value: int) -> Action | int:
    try:
        return Action(value)
    except ValueError:
        return value
