"""State shared between plugins and VMs: shared data (with CAS) and shared queues.

Pass the same :class:`SharedData` / :class:`SharedQueues` to several ``Plugin.load``
calls to model several workers (or several VMs) of one Envoy.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from meshwasm.host.abi import Status


class QueueOwner(Protocol):
    """The root context that registered a queue: told when something is enqueued."""

    vm_id: str

    def queue_ready(self, token: int) -> None: ...


class SharedData:
    """Key-value store with compare-and-swap; Envoy keeps one namespace per vm_id, shared by
    every plugin (and worker) of that vm_id. Pass one instance to several loads to share it."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, bytes], tuple[bytes, int]] = {}
        self._cas = itertools.count(1)
        self.bytes = 0  # held by the host, for the memory budget

    def get(self, key: bytes, vm_id: str = "") -> tuple[bytes, int] | None:
        return self._data.get((vm_id, key))

    def set(self, key: bytes, value: bytes, cas: int, vm_id: str = "") -> Status:
        current = self._data.get((vm_id, key))
        if current is not None and cas and cas != current[1]:
            return Status.CAS_MISMATCH
        self.bytes += len(value) - (len(current[0]) if current is not None else -len(key))
        self._data[(vm_id, key)] = (value, next(self._cas))
        return Status.OK

    def _find(self, key: str | bytes) -> tuple[str, bytes] | None:
        raw = key.encode() if isinstance(key, str) else key
        if ("", raw) in self._data:
            return ("", raw)
        return next((k for k in self._data if k[1] == raw), None)

    def __getitem__(self, key: str | bytes) -> bytes:
        """The value under ``key`` (the unnamed vm_id's first, else any vm_id's)."""
        found = self._find(key)
        if found is None:
            raise KeyError(key)
        return self._data[found][0]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str | bytes) and self._find(key) is not None

    def keys(self) -> list[bytes]:
        return [key for _, key in self._data]


@dataclass
class SharedQueue:
    vm_id: str
    name: str
    owner: QueueOwner | None
    token: int
    items: deque[bytes] = field(default_factory=deque)
    bytes: int = 0


class SharedQueues:
    """Named queues (per vm_id); enqueueing notifies the registering root context
    (proxy_on_queue_ready), after the enqueuing callback returns, as Envoy posts it."""

    def __init__(self) -> None:
        self._by_token: dict[int, SharedQueue] = {}
        self._by_name: dict[tuple[str, str], int] = {}
        self._tokens = itertools.count(1)

    def register(self, vm_id: str, name: str, owner: QueueOwner) -> int:
        key = (vm_id, name)
        token = self._by_name.get(key)
        if token is not None:
            self._by_token[token].owner = owner
            return token
        token = next(self._tokens)
        self._by_name[key] = token
        self._by_token[token] = SharedQueue(vm_id, name, owner, token)
        return token

    def resolve(self, vm_id: str, name: str) -> int | None:
        return self._by_name.get((vm_id, name))

    def get(self, token: int) -> SharedQueue | None:
        return self._by_token.get(token)

    def __iter__(self) -> Iterator[SharedQueue]:
        return iter(self._by_token.values())
