"""One TCP connection through a plugin used as a network (L4) filter: the TCP context a test drives.

Envoy runs a network filter in front of the filter that owns the upstream (a TCP proxy):

- ``plugin.tcp_stream()`` is a downstream connection accepted: ``proxy_on_context_create`` then
  ``proxy_on_new_connection``;
- ``send_downstream_data`` is bytes read from the client (``proxy_on_downstream_data``),
  ``send_upstream_data`` bytes the upstream sent back (``proxy_on_upstream_data``). Continue
  passes the buffer on (``to_upstream`` / ``to_downstream``); StopIteration keeps it where it
  is, and the next callback of that direction sees it again with the new bytes appended, as
  Envoy's connection buffers do. The plugin may rewrite the buffer (``proxy_set_buffer_bytes``)
  in its callback or while the direction is held;
- ``proxy_continue_stream(Downstream)`` passes what is held on, after the current callback
  (Envoy's continueReading); Envoy does not implement it for the upstream direction;
- the upstream's end of stream (``send_upstream_data(..., end_of_stream=True)``) is Envoy's only
  upstream close signal to a network filter: ``proxy_on_upstream_connection_close(Unknown)``;
- ``close_downstream(peer)``: the client (``PeerType.REMOTE``) or Envoy (``LOCAL``) closed the
  connection: ``proxy_on_downstream_connection_close``, then ``proxy_on_done``, ``proxy_on_log``,
  ``proxy_on_delete``. ``proxy_close_stream`` (either direction) makes Envoy close the downstream
  connection after the current callback: the same, with ``LOCAL``. A client closing its socket
  is first its end of stream (an empty read: ``send_downstream_data(b"", end_of_stream=True)``),
  then the close: ``complete()`` does both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from meshwasm.host.abi import Action, PeerType
from meshwasm.host.errors import PluginError

if TYPE_CHECKING:
    from meshwasm.host.state import VmState

DOWNSTREAM = "downstream"
UPSTREAM = "upstream"

_CALLBACKS = {DOWNSTREAM: "proxy_on_downstream_data", UPSTREAM: "proxy_on_upstream_data"}


class TcpStream:
    """One downstream connection through the plugin (a TCP context in proxy-wasm terms)."""

    kind: Literal["tcp"] = "tcp"

    def __init__(self, state: VmState, context_id: int):
        self.state = state
        self.id = context_id
        self.started_ns = state.now()
        self.properties: dict[tuple[str, ...], bytes] = {}
        self.filter_state: dict[str, tuple[bytes, int]] = {}  # set_envoy_filter_state: value, life span
        self.route_cache_cleared = 0  # clear_route_cache calls
        self.new_connection_action: Action | int = Action.CONTINUE
        self.to_upstream = b""  # what the plugin let through from the client toward the upstream
        self.to_downstream = b""  # what it let through from the upstream toward the client
        self.downstream_paused = False
        self.upstream_paused = False
        self.downstream_ended = False  # the client sent its end of stream (half-closed)
        self.upstream_closed = False
        self.closed: PeerType | None = None  # the downstream connection closed, by whom
        self.closed_by_plugin = False
        self.done = False
        self.phase = "created"
        # The filter after this one (the TCP proxy) picks its cluster once the new connection
        # went through this filter: from then on xds.cluster_name and friends exist.
        self.upstream_selected = False
        self._buffers: dict[str, bytes | None] = {DOWNSTREAM: None, UPSTREAM: None}

    # -- what the plugin left ---------------------------------------------------------------------------
    @property
    def downstream_held(self) -> bytes:
        """Client bytes the plugin holds back (StopIteration), not yet passed on."""
        return self._buffers[DOWNSTREAM] or b""

    @property
    def upstream_held(self) -> bytes:
        return self._buffers[UPSTREAM] or b""

    # -- driving the connection -----------------------------------------------------------------------
    def send_downstream_data(self, data: bytes | str, end_of_stream: bool = False) -> Action | int:
        """Bytes from the client (Envoy's onData): ``proxy_on_downstream_data``."""
        with self.state.dispatcher.step():
            return self._on_data(DOWNSTREAM, data, end_of_stream)

    def send_upstream_data(self, data: bytes | str, end_of_stream: bool = False) -> Action | int:
        """Bytes from the upstream (Envoy's onWrite): ``proxy_on_upstream_data``; with
        ``end_of_stream`` the upstream has closed its side: ``proxy_on_upstream_connection_close``."""
        with self.state.dispatcher.step():
            action = self._on_data(UPSTREAM, data, end_of_stream)
            if end_of_stream and not self.done:
                self.upstream_closed = True
                self.state.call("proxy_on_upstream_connection_close", self.id, PeerType.UNKNOWN)
            return action

    def close_downstream(self, peer: PeerType = PeerType.REMOTE) -> None:
        """The downstream connection closed (``REMOTE``: by the client; ``LOCAL``: by Envoy):
        ``proxy_on_downstream_connection_close``, then on_done, on_log, on_delete."""
        if self.done:
            return
        state = self.state
        with state.dispatcher.step():
            self.closed = PeerType(peer)
            self.phase = "closed"
            self._buffers = {DOWNSTREAM: None, UPSTREAM: None}
            self.downstream_paused = self.upstream_paused = False
            try:
                state.call("proxy_on_downstream_connection_close", self.id, int(peer))
            finally:
                self._finish()

    def complete(self) -> None:
        """End the connection as a client closing its socket does (if it is still open): Envoy
        reads its end of stream (``proxy_on_downstream_data(0, true)``, unless the client sent
        it already), then sees the connection closed (RemoteClose)."""
        if self.done:
            return
        if not self.downstream_ended:
            self.send_downstream_data(b"", end_of_stream=True)
        self.close_downstream(PeerType.REMOTE)

    # -- what host functions use ------------------------------------------------------------------------
    def data(self, direction: str) -> bytes | None:
        """The buffer Envoy hands the plugin now (its callback, or held), else None."""
        return self._buffers[direction]

    def set_data(self, direction: str, data: bytes) -> None:
        self._buffers[direction] = data

    def continue_downstream(self) -> None:
        """proxy_continue_stream(Downstream): Envoy's continueReading, run after the callback."""
        self.state.dispatcher.post(self.state, self._resume_downstream)

    def close_by_plugin(self) -> None:
        """proxy_close_stream: Envoy closes the downstream connection after the callback."""
        self.closed_by_plugin = True
        self.state.dispatcher.post(self.state, lambda: self.close_downstream(PeerType.LOCAL))

    # -- internals -------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.done:
            raise PluginError(f"connection {self.id} is closed; start a new one with plugin.tcp_stream()")

    def _on_data(self, direction: str, data: bytes | str, end_of_stream: bool) -> Action | int:
        self._check_open()
        if end_of_stream and direction == DOWNSTREAM:
            self.downstream_ended = True
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        self._buffers[direction] = (self._buffers[direction] or b"") + chunk
        self.phase = f"{direction}_data"
        size = len(self._buffers[direction] or b"")
        result = self.state.call(_CALLBACKS[direction], self.id, size, int(end_of_stream))
        if self.done:
            return _action(result)
        if result == 0:
            self._pass_on(direction)
        elif direction == DOWNSTREAM:
            self.downstream_paused = True
        else:
            self.upstream_paused = True
        self.phase = "open"
        return _action(result)

    def _pass_on(self, direction: str) -> None:
        held = self._buffers[direction] or b""
        self._buffers[direction] = None
        if direction == DOWNSTREAM:
            self.to_upstream += held
            self.downstream_paused = False
        else:
            self.to_downstream += held
            self.upstream_paused = False

    def _resume_downstream(self) -> None:
        if not self.done:
            self._pass_on(DOWNSTREAM)

    def _finish(self) -> None:
        state = self.state
        call = state.call
        try:
            call("proxy_on_done", self.id)
            call("proxy_on_log", self.id)
        finally:
            self.done = True
            try:
                call("proxy_on_delete", self.id)
            finally:
                state.connections.pop(self.id, None)

    def __repr__(self) -> str:
        return f"TcpStream(id={self.id}, phase={self.phase!r})"


_ACTIONS: dict[int, Action] = {int(action): action for action in Action}


def _action(value: int) -> Action | int:
    return _ACTIONS.get(value, value)
