"""HTTP and gRPC callouts the plugin dispatched, as the test sees and answers them.

Envoy makes every callout on the plugin's root context and answers it after the
dispatching callback returned: ``respond``/``fail`` (and the gRPC stream methods)
deliver the answer the same way, on the root context, with the response's maps
and body readable only during that delivery. A responder given to ``Plugin.load``
answers each HTTP callout automatically; :func:`forward_to` makes one that sends
the callout to a real upstream (httpbin in the tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshwasm.host.abi import Status
from meshwasm.host.errors import PluginError
from meshwasm.host.headers import HeaderMap, HeadersLike

if TYPE_CHECKING:
    from meshwasm.host.state import VmState

ROOT_CONTEXT_ID = 1


@dataclass
class HttpResponse:
    """What a responder answers an HTTP callout with."""

    status: int = 200
    headers: HeadersLike = None
    body: bytes | str = b""
    trailers: HeadersLike = None


# A responder: the callout -> its response, or None to fail it (a reset, as Envoy reports it).
HttpResponder = Callable[["PendingHttpCall"], HttpResponse | None]


class PendingHttpCall:
    """An HTTP callout the plugin dispatched; answer it with :meth:`respond` (or :meth:`fail`)."""

    def __init__(
        self,
        state: VmState,
        token: int,
        upstream: str,
        headers: HeaderMap,
        body: bytes,
        trailers: HeaderMap,
        timeout_ms: int,
    ):
        self._state = state
        self.token = token
        self.upstream = upstream
        self.headers = headers
        self.body = body
        self.trailers = trailers
        self.timeout_ms = timeout_ms
        self.dispatched_ns = state.now()

    @property
    def is_pending(self) -> bool:
        return self in self._state.pending_http_calls

    @property
    def method(self) -> str | None:
        return self.headers.first(":method")

    @property
    def path(self) -> str | None:
        return self.headers.first(":path")

    @property
    def authority(self) -> str | None:
        return self.headers.first(":authority")

    def respond(
        self,
        status: int = 200,
        headers: HeadersLike = None,
        body: bytes | str = b"",
        trailers: HeadersLike = None,
    ) -> None:
        """Deliver a response: runs proxy_on_http_call_response in the root context."""
        from meshwasm.host.state import CalloutResponse

        response_headers = HeaderMap([(":status", str(status))])
        for name, value in HeaderMap(headers).pairs():
            if name != ":status":
                response_headers.add(name, value)
        raw = body.encode() if isinstance(body, str) else bytes(body)
        self._deliver(CalloutResponse(response_headers, raw, HeaderMap(trailers)))

    def fail(self) -> None:
        """The callout failed (reset): Envoy calls back with no headers and no body, and
        proxy_get_status answers BrokenConnection with the message "reset"."""
        self._deliver(None)

    def connection_refused(self) -> None:
        """The callout's upstream refused the connection: Envoy's router answers it with its own
        503 (the plugin sees a response, not a failure; checked against Envoy)."""
        body = (
            b"upstream connect error or disconnect/reset before headers."
            b" reset reason: remote connection failure"
        )
        self.respond(503, [("content-length", str(len(body))), ("content-type", "text/plain")], body)

    def time_out(self) -> None:
        """The callout's timeout passed: Envoy's router answers it with its own 504."""
        self.respond(
            504,
            [("content-length", "24"), ("content-type", "text/plain")],
            b"upstream request timeout",
        )

    def _deliver(self, response: Any) -> None:
        state = self._state
        if self not in state.pending_http_calls:
            raise PluginError(f"HTTP call {self.token} was already answered")
        state.pending_http_calls.remove(self)
        state.callout_response = response
        state.in_callout_response = True
        state.status = (0, b"") if response is not None else (Status.BROKEN_CONNECTION, b"reset")
        try:
            state.call(
                "proxy_on_http_call_response",
                ROOT_CONTEXT_ID,
                self.token,
                response.headers.entry_count() if response else 0,
                len(response.body) if response else 0,
                response.trailers.entry_count() if response else 0,
            )
        finally:
            state.callout_response = None
            state.in_callout_response = False
            state.status = (0, b"")

    def __repr__(self) -> str:
        return f"PendingHttpCall(token={self.token}, upstream={self.upstream!r}, path={self.path!r})"


class PendingGrpcCall:
    """A gRPC call (``kind == "call"``) or stream (``"stream"``) the plugin started.

    Answer a call with :meth:`respond` (a response message) or :meth:`fail` (a status);
    drive a stream with :meth:`receive_initial_metadata`, :meth:`receive`,
    :meth:`receive_trailing_metadata` and :meth:`close`. What the plugin sent on a
    stream is in :attr:`messages`; :attr:`closed_by_plugin` / :attr:`cancelled` say
    whether it called proxy_grpc_close / proxy_grpc_cancel.
    """

    def __init__(
        self,
        state: VmState,
        token: int,
        kind: str,
        service: bytes,
        service_name: str,
        method: str,
        initial_metadata: HeaderMap,
        request: bytes = b"",
        timeout_ms: int = 0,
        cluster: str | None = None,
    ):
        self._state = state
        self._cluster = cluster
        self.token = token
        self.kind = kind
        self.service = service
        self.service_name = service_name
        self.method = method
        self.initial_metadata = initial_metadata
        self.request = request
        self.timeout_ms = timeout_ms
        self.messages: list[bytes] = []
        self.end_of_stream_sent = False
        self.closed_by_plugin = False
        self.cancelled = False
        self._remote_closed = False

    @property
    def cluster(self) -> str:
        """The cluster the call goes to: the service as given, or the cluster a serialized
        ``GrpcService`` names (``envoy_grpc.cluster_name``)."""
        if self._cluster is not None:
            return self._cluster
        return self.service.decode("utf-8", errors="replace")

    def unavailable(self) -> None:
        """Envoy's gRPC client found no such cluster: it closes the call with Unavailable
        ("Cluster not available") after the callback that started it."""
        self._finish()
        self._deliver_close(14, "Cluster not available")

    # -- unary calls ------------------------------------------------------------------------------
    def respond(self, message: bytes | str) -> None:
        """The call succeeded: on_grpc_receive with the response (the call is then over)."""
        self._require("call")
        raw = message.encode() if isinstance(message, str) else bytes(message)
        self._finish()
        self._deliver_message(raw)

    def fail(self, status: int, message: str = "") -> None:
        """The call failed with a gRPC status: on_grpc_close (proxy_get_status gives both)."""
        self._require("call")
        self._finish()
        self._deliver_close(status, message)

    # -- streams ----------------------------------------------------------------------------------
    def receive_initial_metadata(self, metadata: HeadersLike) -> None:
        self._require("stream")
        self._deliver_metadata("proxy_on_grpc_receive_initial_metadata", HeaderMap(metadata), initial=True)

    def receive(self, message: bytes | str) -> None:
        self._require("stream")
        self._deliver_message(message.encode() if isinstance(message, str) else bytes(message))

    def receive_trailing_metadata(self, metadata: HeadersLike) -> None:
        self._require("stream")
        self._deliver_metadata("proxy_on_grpc_receive_trailing_metadata", HeaderMap(metadata), initial=False)

    def close(self, status: int = 0, message: str = "") -> None:
        """The remote end closed the stream: on_grpc_close."""
        self._require("stream")
        self._remote_closed = True
        if self.closed_by_plugin:
            self._finish()
        self._deliver_close(status, message)

    # -- what the host functions call ----------------------------------------------------------------
    def plugin_closed(self) -> None:
        self.closed_by_plugin = True
        if self.kind == "call" or self._remote_closed:
            self._finish()

    def plugin_cancelled(self) -> None:
        self.cancelled = True
        self._finish()

    # -- internals -----------------------------------------------------------------------------------
    def _require(self, kind: str) -> None:
        if self.kind != kind:
            raise PluginError(f"gRPC {self.kind} {self.token}: that is for a gRPC {kind}")
        if self not in self._state.pending_grpc_calls and not (kind == "stream" and self._remote_closed):
            raise PluginError(f"gRPC {self.kind} {self.token} is over")

    def _finish(self) -> None:
        if self in self._state.pending_grpc_calls:
            self._state.pending_grpc_calls.remove(self)

    def _deliver_message(self, message: bytes) -> None:
        state = self._state
        state.grpc_receive = (message, None, None)
        try:
            state.call("proxy_on_grpc_receive", ROOT_CONTEXT_ID, self.token, len(message))
        finally:
            state.grpc_receive = None

    def _deliver_metadata(self, callback: str, metadata: HeaderMap, *, initial: bool) -> None:
        state = self._state
        state.grpc_receive = (None, metadata, None) if initial else (None, None, metadata)
        try:
            state.call(callback, ROOT_CONTEXT_ID, self.token, metadata.entry_count())
        finally:
            state.grpc_receive = None

    def _deliver_close(self, status: int, message: str) -> None:
        state = self._state
        state.status = (status, message.encode())
        try:
            state.call("proxy_on_grpc_close", ROOT_CONTEXT_ID, self.token, status)
        finally:
            state.status = (0, b"")

    def __repr__(self) -> str:
        return f"PendingGrpcCall({self.kind}, token={self.token}, {self.service_name}/{self.method})"


def forward_to(base_url: str, *, timeout: float = 30.0) -> HttpResponder:
    """A responder that sends each callout to a real upstream at ``base_url`` (its :path
    appended) and answers with what came back; a connection failure fails the callout."""
    import httpx

    client = httpx.Client(timeout=timeout)

    def respond(call: PendingHttpCall) -> HttpResponse | None:
        plain = [(n, v) for n, v in call.headers.pairs() if not n.startswith(":")]
        try:
            answer = client.request(
                call.method or "GET",
                base_url.rstrip("/") + (call.path or "/"),
                headers=[("host", call.authority or ""), *plain],
                content=call.body or None,
            )
        except httpx.HTTPError:
            return None
        return HttpResponse(answer.status_code, answer.headers.multi_items(), answer.content)

    return respond
