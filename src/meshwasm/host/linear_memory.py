"""Linear memories the host allocates itself (wasmtime's host memory creator), so that every
``memory.grow`` passes through the host: growth is attributed to the callback that asked for
it, and a grow past the module's memory cap is refused (the module sees -1, as with any limit)
and remembered, so that a trap that follows is reported as the resource limit it is.

Each memory reserves its whole address range up front without committing it (PROT_NONE),
and grows by making pages readable and writable in place: it never moves. The guard region
wasmtime asks for stays inaccessible, so out-of-bounds accesses trap as usual.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wasmtime import _ffi as ffi

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_mprotect = _libc.mprotect
_mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_munmap = _libc.munmap
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

_PROT_NONE = 0
_PROT_READ_WRITE = 3
_MAP_PRIVATE = 0x02
_MAP_ANONYMOUS = 0x20
_MAP_NORESERVE = 0x4000
_MAP_FAILED = ctypes.c_void_p(-1).value
_DEFAULT_RESERVATION = 4 << 30  # a wasm32 memory's whole range


class GrowthObserver(Protocol):
    """Who is told about a memory's growth (the VmState the memory was created for)."""

    memory_limit: int | None

    def memory_grew(self, old: int, new: int) -> None: ...

    def memory_refused(self, old: int, requested: int) -> None: ...


@dataclass
class _Memory:
    base: int
    reserved: int
    total: int
    size: int
    maximum: int
    observer: weakref.ReferenceType[GrowthObserver] | None


def _error(message: str) -> int:
    return ctypes.cast(ffi.wasmtime_error_new(message.encode()), ctypes.c_void_p).value or 0


class MemoryCreator:
    """The engine's memory creator; ``observer()`` names who a new memory is for (the VM being
    instantiated on this thread)."""

    def __init__(self, observer: Callable[[], GrowthObserver | None]):
        self._observer = observer
        self._memories: dict[int, _Memory] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        # The C callbacks, kept alive as long as the creator (the engine holds the creator).
        self._get = ffi.wasmtime_memory_get_callback_t(self._get_memory)
        self._grow = ffi.wasmtime_memory_grow_callback_t(self._grow_memory)
        self._finalize = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self._free)
        self._new = ffi.wasmtime_new_memory_callback_t(self._new_memory)
        no_finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()  # a NULL function pointer
        self.struct = ffi.wasmtime_memory_creator(None, self._new, no_finalizer)

    def install(self, config: Any) -> None:
        ffi.wasmtime_config_host_memory_creator_set(config.ptr(), ctypes.byref(self.struct))

    def _new_memory(
        self, env: int, ty: Any, minimum: int, maximum: int, reserved: int, guard: int, out: Any
    ) -> int:
        try:
            observer = self._observer()
            limit = observer.memory_limit if observer is not None else None
            if limit is not None and minimum > limit:
                return _error(f"the module's initial memory ({minimum} bytes) is over the {limit}-byte cap")
            reserved = max(reserved or _DEFAULT_RESERVATION, minimum)
            total = reserved + guard
            base = _mmap(None, total, _PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0)
            if base in (None, _MAP_FAILED):
                return _error(f"cannot reserve {total} bytes of address space for a linear memory")
            memory = _Memory(base, reserved, total, 0, maximum, weakref.ref(observer) if observer else None)
            if minimum and _mprotect(base, minimum, _PROT_READ_WRITE) != 0:
                _munmap(base, total)
                return _error(f"cannot commit {minimum} bytes for a linear memory")
            memory.size = minimum
            with self._lock:
                key = next(self._ids)
                self._memories[key] = memory
            out[0].env = key
            out[0].get_memory = self._get
            out[0].grow_memory = self._grow
            out[0].finalizer = self._finalize
            return 0
        except BaseException as exc:  # never let an exception cross into wasmtime
            return _error(f"meshwasm memory creator failed: {exc!r}")

    def _get_memory(self, env: int, size: Any, maximum: Any) -> int:
        memory = self._memories[env]
        size[0] = memory.size
        maximum[0] = memory.maximum
        return memory.base

    def _grow_memory(self, env: int, new_size: int) -> int:
        try:
            memory = self._memories[env]
            observer = memory.observer() if memory.observer is not None else None
            limit = observer.memory_limit if observer is not None else None
            if (limit is not None and new_size > limit) or new_size > memory.reserved:
                if observer is not None:
                    observer.memory_refused(memory.size, new_size)
                return _error(f"memory.grow to {new_size} bytes refused")
            if new_size > memory.size:
                if _mprotect(memory.base + memory.size, new_size - memory.size, _PROT_READ_WRITE) != 0:
                    return _error(f"cannot commit memory up to {new_size} bytes")
                old, memory.size = memory.size, new_size
                if observer is not None:
                    observer.memory_grew(old, new_size)
            return 0
        except BaseException as exc:
            return _error(f"meshwasm memory creator failed: {exc!r}")

    def _free(self, env: int) -> None:
        with self._lock:
            memory = self._memories.pop(env, None)
        if memory is not None:
            _munmap(memory.base, memory.total)
