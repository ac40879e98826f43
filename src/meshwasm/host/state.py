"""Host-side state the plugin reads and writes: logs, metrics, shared data, queues, callouts."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from meshwasm.host.abi import LogLevel, MetricType, Status
from meshwasm.host.headers import HeaderMap


@dataclass(frozen=True)
class LogEntry:
    level: LogLevel
    message: str

    @property
    def level_name(self) -> str:
        return self.level.name.lower()

    def __str__(self) -> str:
        return f"[{self.level_name}] {self.message}"


class SharedData:
    """Key-value store with compare-and-swap, shared by every plugin of one vm_id (as in Envoy).

    Pass the same instance to several :class:`Plugin` loads to model several workers.
    """

    def __init__(self) -> None:
        self._data: dict[bytes, tuple[bytes, int]] = {}
        self._cas = itertools.count(1)

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        return self._data.get(key)

    def set(self, key: bytes, value: bytes, cas: int) -> Status:
        current = self._data.get(key)
        if current is not None and cas and cas != current[1]:
            return Status.CAS_MISMATCH
        self._data[key] = (value, next(self._cas))
        return Status.OK

    def __getitem__(self, key: str | bytes) -> bytes:
        raw = key.encode() if isinstance(key, str) else key
        return self._data[raw][0]

    def __contains__(self, key: object) -> bool:
        raw = key.encode() if isinstance(key, str) else key
        return raw in self._data

    def keys(self) -> list[bytes]:
        return list(self._data)


@dataclass
class SharedQueue:
    vm_id: str
    name: str
    owner: Any  # the Plugin whose root context registered it
    items: deque[bytes] = field(default_factory=deque)


class SharedQueues:
    """Named queues; enqueueing notifies the registering root context (proxy_on_queue_ready)."""

    def __init__(self) -> None:
        self._by_token: dict[int, SharedQueue] = {}
        self._by_name: dict[tuple[str, str], int] = {}
        self._tokens = itertools.count(1)

    def register(self, vm_id: str, name: str, owner: Any) -> int:
        key = (vm_id, name)
        if key in self._by_name:
            token = self._by_name[key]
            self._by_token[token].owner = owner
            return token
        token = next(self._tokens)
        self._by_name[key] = token
        self._by_token[token] = SharedQueue(vm_id, name, owner)
        return token

    def resolve(self, vm_id: str, name: str) -> int | None:
        return self._by_name.get((vm_id, name))

    def get(self, token: int) -> SharedQueue | None:
        return self._by_token.get(token)


@dataclass
class Metric:
    name: str
    type: MetricType
    value: int = 0
    samples: list[int] = field(default_factory=list)


@dataclass
class HttpCallResponse:
    headers: HeaderMap
    body: bytes
    trailers: HeaderMap


class PendingHttpCall:
    """An HTTP callout the plugin dispatched; answer it with :meth:`respond` (or :meth:`fail`)."""

    def __init__(
        self,
        plugin: Any,
        token: int,
        upstream: str,
        headers: HeaderMap,
        body: bytes,
        trailers: HeaderMap,
        timeout_ms: int,
    ):
        self._plugin = plugin
        self.token = token
        self.upstream = upstream
        self.headers = headers
        self.body = body
        self.trailers = trailers
        self.timeout_ms = timeout_ms

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
        headers: Any = None,
        body: bytes | str = b"",
        trailers: Any = None,
    ) -> None:
        """Deliver a response: runs proxy_on_http_call_response in the root context."""
        response_headers = HeaderMap([(":status", str(status))])
        for name, value in HeaderMap(headers).pairs():
            response_headers.add(name, value)
        raw = body.encode() if isinstance(body, str) else bytes(body)
        self._plugin._deliver_http_call(self, HttpCallResponse(response_headers, raw, HeaderMap(trailers)))

    def fail(self) -> None:
        """The callout failed (reset or timeout): Envoy calls back with no headers and no body."""
        self._plugin._deliver_http_call(self, None)

    def __repr__(self) -> str:
        return f"PendingHttpCall(token={self.token}, upstream={self.upstream!r}, path={self.path!r})"
