"""One HTTP request/response through a plugin: the HTTP context a test drives.

The test sends headers, body chunks and trailers in each direction; the plugin's
answers follow Envoy's filter semantics: a header map is visible in its callback
and while its direction is paused; a body callback sees the chunk, or everything
held so far after it returned StopIterationAndBuffer; Continue (from any callback,
or proxy_continue_stream) passes what is held on; a local reply ends the exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from meshwasm.host.abi import Action, MapType
from meshwasm.host.errors import PluginError
from meshwasm.host.headers import HeaderMap, HeadersLike

if TYPE_CHECKING:
    from meshwasm.host.state import VmState

REQUEST = "request"
RESPONSE = "response"

_REQUEST_MAPS = frozenset({MapType.REQUEST_HEADERS, MapType.REQUEST_TRAILERS})
_RESPONSE_MAPS = frozenset({MapType.RESPONSE_HEADERS, MapType.RESPONSE_TRAILERS})

# FilterDataStatus, what a body callback returns.
_DATA_STOP_AND_BUFFER = 1
_DATA_STOP_NO_BUFFER = 3


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

    kind: Literal["http"] = "http"
    # A stream is made per request: slots make it cheaper to build and to read.
    __slots__ = (
        "_body",
        "_buffering",
        "_forwarded",
        "_held",
        "_in_local_reply",
        "_maps",
        "_readable_all",
        "_response_started",
        "_sent_headers",
        "done",
        "filter_state",
        "id",
        "local_response",
        "phase",
        "properties",
        "request_headers",
        "request_paused",
        "request_trailers",
        "reset",
        "response_headers",
        "response_paused",
        "response_trailers",
        "route_cache_cleared",
        "started_ns",
        "state",
    )

    def __init__(self, state: VmState, context_id: int):
        self.state = state
        self.id = context_id
        self.started_ns = state.now()
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
        self.filter_state: dict[str, tuple[bytes, int]] = {}  # set_envoy_filter_state: value, life span
        self.route_cache_cleared = 0  # clear_route_cache calls
        self._maps: set[MapType] = set()
        self._readable_all = False
        self._forwarded = {REQUEST: b"", RESPONSE: b""}
        self._body: dict[str, bytes | None] = {REQUEST: None, RESPONSE: None}
        self._held = {REQUEST: b"", RESPONSE: b""}  # kept by Envoy (watermark) but not shown
        self._buffering = {REQUEST: False, RESPONSE: False}
        self._response_started = False  # response headers reached the plugin (or a local reply went out)
        self._in_local_reply = False  # the local reply is going through the response callbacks
        self._sent_headers: HeaderMap | None = None  # a local reply's, sent instead of the response's

    # -- what the plugin left --------------------------------------------------------------------
    @property
    def request_body(self) -> bytes:
        """Body bytes passed upstream so far, plus what is still held while paused."""
        return self._forwarded[REQUEST] + self._held[REQUEST] + (self._body[REQUEST] or b"")

    @property
    def response_body(self) -> bytes:
        return self._forwarded[RESPONSE] + self._held[RESPONSE] + (self._body[RESPONSE] or b"")

    @property
    def sent_response_headers(self) -> HeaderMap:
        """The response headers the client gets: the response's, or those of a local reply sent
        once the response had started (which leaves the response's own map as it was)."""
        return self._sent_headers if self._sent_headers is not None else self.response_headers

    # -- driving the stream ----------------------------------------------------------------------------
    def send_request_headers(self, headers: HeadersLike, end_of_stream: bool = False) -> Action | int:
        self.request_headers = HeaderMap(headers)
        # `with dispatcher.step():` spelt out (three calls fewer on the path every stream takes)
        dispatcher = self.state.dispatcher
        dispatcher.steps += 1
        try:
            return self._headers(REQUEST, MapType.REQUEST_HEADERS, self.request_headers, end_of_stream)
        finally:
            dispatcher.end_step()

    def send_response_headers(self, headers: HeadersLike, end_of_stream: bool = False) -> Action | int:
        self._response_started = True
        self.response_headers = HeaderMap(headers)
        dispatcher = self.state.dispatcher  # as in send_request_headers
        dispatcher.steps += 1
        try:
            return self._headers(RESPONSE, MapType.RESPONSE_HEADERS, self.response_headers, end_of_stream)
        finally:
            dispatcher.end_step()

    def send_request_body(self, body: bytes | str, end_of_stream: bool = True) -> Action | int:
        with self.state.dispatcher.step():
            return self._on_body(REQUEST, body, end_of_stream)

    def send_response_body(self, body: bytes | str, end_of_stream: bool = True) -> Action | int:
        with self.state.dispatcher.step():
            return self._on_body(RESPONSE, body, end_of_stream)

    def send_request_trailers(self, trailers: HeadersLike) -> Action | int:
        self.request_trailers = HeaderMap(trailers)
        with self.state.dispatcher.step():
            return self._trailers(REQUEST, MapType.REQUEST_TRAILERS, self.request_trailers)

    def send_response_trailers(self, trailers: HeadersLike) -> Action | int:
        self.response_trailers = HeaderMap(trailers)
        with self.state.dispatcher.step():
            return self._trailers(RESPONSE, MapType.RESPONSE_TRAILERS, self.response_trailers)

    def complete(self) -> None:
        """End the stream as Envoy does: on_done, then on_log (headers readable), then on_delete."""
        if self.done:
            return
        state = self.state
        call = state.call
        self.phase = "done"
        self._maps = set()
        call("proxy_on_done", self.id)
        self.phase = "log"
        self._readable_all = True
        try:
            call("proxy_on_log", self.id)
        finally:
            self._readable_all = False
            self.phase = "deleted"
            self.done = True
            try:
                call("proxy_on_delete", self.id)
            finally:
                state.streams.pop(self.id, None)

    # -- what host functions use ------------------------------------------------------------------------
    def header_map(self, kind: MapType, *, write: bool) -> HeaderMap | None:
        """The map if Envoy exposes it now (its callback, or its direction paused), else None."""
        if kind not in self._maps and not (self._readable_all and not write):
            return None
        if kind == MapType.REQUEST_HEADERS:
            return self.request_headers
        if kind == MapType.RESPONSE_HEADERS:
            return self.response_headers
        if kind == MapType.REQUEST_TRAILERS:
            return self.request_trailers
        if kind == MapType.RESPONSE_TRAILERS:
            return self.response_trailers
        return None

    def body(self, direction: str) -> bytes | None:
        """The body buffer Envoy hands the plugin now (None: there is none)."""
        return self._body[direction]

    def set_body(self, direction: str, data: bytes) -> None:
        self._body[direction] = data

    def resume(self, direction: str, phase: str | None = None) -> None:
        """Continue one direction: its header maps close, what it held goes on."""
        if direction == REQUEST:
            self.request_paused = False
            self._maps -= _REQUEST_MAPS
        else:
            self.response_paused = False
            self._maps -= _RESPONSE_MAPS
        body = self._body[direction]
        if body or self._held[direction]:
            self._forwarded[direction] += self._held[direction] + (body or b"")
            self._held[direction] = b""
        self._body[direction] = None
        self._buffering[direction] = False
        self.phase = phase or f"{direction}_resumed"

    def send_local_response(
        self, *, status: int, body: bytes, headers: HeaderMap, details: str, grpc_status: int
    ) -> None:
        """proxy_send_local_response: Envoy sends the reply after the callback. Before the
        response started it goes through the filter chain, this plugin's response callbacks
        included (on_response_headers, then on_response_body when there is a body); once the
        upstream's response headers are being handled, its status and headers go out instead of
        them and neither its body nor the upstream's does, while the stream's response headers
        (the map on_log reads, response.headers) stay the upstream's (checked against Envoy
        1.40). Either way the plugin's callbacks for the rest of the exchange do not run."""
        local = LocalResponse(status, body, headers, details, grpc_status)
        self.local_response = local
        self._maps = set()
        self._body = {REQUEST: None, RESPONSE: None}
        self._held = {REQUEST: b"", RESPONSE: b""}
        self._forwarded[RESPONSE] = b""
        if self._response_started:
            self._sent_headers = _local_reply_headers(local, with_body=False)
        else:
            self._response_started = True
            self.state.dispatcher.post(self.state, lambda: self._local_reply_through_filters(local))

    def _local_reply_through_filters(self, local: LocalResponse) -> None:
        if self.done or self.local_response is not local:
            return
        self.response_headers = _local_reply_headers(local, with_body=True)
        self._in_local_reply = True
        try:
            self._headers(RESPONSE, MapType.RESPONSE_HEADERS, self.response_headers, not local.body)
            if local.body and not self.done:
                self._on_body(RESPONSE, local.body, True)
        finally:
            self._in_local_reply = False

    # -- internals -------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.done:
            raise PluginError(f"stream {self.id} is complete; start a new one with plugin.http_stream()")

    def _replied_locally(self) -> bool:
        """A local reply ended the exchange: what the test sends on reaches no callback."""
        return self.local_response is not None and not self._in_local_reply

    def _headers(
        self, direction: str, kind: MapType, headers: HeaderMap, end_of_stream: bool
    ) -> Action | int:
        if self.done:
            self._check_open()
        if self.local_response is not None and not self._in_local_reply:  # _replied_locally()
            return Action.CONTINUE
        callback = _HEADERS[direction]
        self.phase = _PHASES[callback]
        self._maps.add(kind)
        action = self.state.call(callback, self.id, len(headers._pairs), 1 if end_of_stream else 0)
        if action == 0 and (self.local_response is None or self._in_local_reply):
            self.resume(direction, _AFTER[direction])  # the common case of _after, one call fewer
        else:
            self._after(direction, action)
        return _ACTIONS.get(action, action)

    def _trailers(self, direction: str, kind: MapType, trailers: HeaderMap) -> Action | int:
        self._check_open()
        if self._replied_locally():
            return Action.CONTINUE
        callback = _TRAILERS[direction]
        self.phase = callback[6:]
        self._maps.add(kind)
        action = self.state.call(callback, self.id, trailers.entry_count())
        self._after(direction, action)
        return _action(action)

    def _on_body(self, direction: str, body: bytes | str, end_of_stream: bool) -> Action | int:
        """Envoy's decodeData/encodeData: after StopIterationAndBuffer the plugin sees all it
        held back plus the chunk; after StopIterationAndWatermark Envoy keeps the earlier
        chunks but shows only the new one; StopIterationNoBuffer drops the chunk."""
        self._check_open()
        if self._replied_locally():
            return Action.CONTINUE
        chunk = body.encode() if isinstance(body, str) else bytes(body)
        if self._buffering[direction]:
            self._body[direction] = (self._body[direction] or b"") + chunk
        else:
            self._held[direction] += self._body[direction] or b""
            self._body[direction] = chunk
        callback = _BODY[direction]
        self.phase = callback[6:]
        size = len(self._body[direction] or b"")
        action = self.state.call(callback, self.id, size, int(end_of_stream))
        if not self._replied_locally():
            if action == _DATA_STOP_NO_BUFFER:
                self._body[direction] = None
            self._buffering[direction] = action == _DATA_STOP_AND_BUFFER
        self._after(direction, action)
        return _action(action)

    def _after(self, direction: str, action: int) -> None:
        if action == 0 and not self._replied_locally():
            self.resume(direction, phase=_AFTER[direction])
        elif direction == REQUEST:
            self.request_paused = True
            self.phase = "request_paused"
        else:
            self.response_paused = True
            self.phase = "response_paused"

    def __repr__(self) -> str:
        return f"HttpStream(id={self.id}, phase={self.phase!r})"


def _local_reply_headers(local: LocalResponse, *, with_body: bool) -> HeaderMap:
    """The response headers of Envoy's local reply: :status, the plugin's headers, then (with a
    body sent) its content-length and, unless the plugin gave one, content-type text/plain."""
    headers = HeaderMap([(":status", str(local.status))])
    for name, value in local.headers.pairs():
        headers.add(name, value)
    if with_body and local.body:
        headers.set("content-length", str(len(local.body)))
        if headers.first("content-type") is None:
            headers.add("content-type", "text/plain")
    return headers


_ACTIONS: dict[int, Action] = {int(action): action for action in Action}
_HEADERS = {REQUEST: "proxy_on_request_headers", RESPONSE: "proxy_on_response_headers"}
_TRAILERS = {REQUEST: "proxy_on_request_trailers", RESPONSE: "proxy_on_response_trailers"}
_BODY = {REQUEST: "proxy_on_request_body", RESPONSE: "proxy_on_response_body"}
_AFTER = {REQUEST: "after_request", RESPONSE: "after_response"}
_PHASES = {callback: callback[6:] for table in (_HEADERS, _TRAILERS, _BODY) for callback in table.values()}


def _action(value: int) -> Action | int:
    return _ACTIONS.get(value, value)
