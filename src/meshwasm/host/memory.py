"""The module's linear memory as host functions see it: bounds-checked reads and writes.

A memoryview over the memory's bytes is kept and widened when the memory grows
(memories never move: the host's memory creator tells this view about every grow,
see linear_memory), so a read is a slice and a u32 is one ``struct`` call, with no
wasmtime call in between.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from typing import Any

from wasmtime import _ffi as ffi

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class OutOfBounds(Exception):
    """A pointer from the module points outside its memory (Envoy answers InvalidMemoryAccess)."""


class GuestMemory:
    """Reads and writes of one instance's memory, and allocation through the module's allocator."""

    def __init__(self) -> None:
        self._context: Any = None
        self._memory: Any = None
        self._view = memoryview(bytearray())
        self._size = 0
        self._base = 0
        self.allocator: Callable[[int], int] = _no_allocator
        self.allocations = 0  # calls of the module's allocator made by the host (for the soak report)

    def attach(self, context: Any, memory: Any) -> None:
        """Point at an instance's memory (a wasmtime context and ``wasmtime_memory_t``); before
        this every access is out of bounds (host calls from a start function see no memory)."""
        self._context = context
        self._memory = memory
        self.refresh()

    @property
    def size(self) -> int:
        """Current size in bytes."""
        return self._size

    def refresh(self) -> None:
        """Ask the engine for the memory's base and size (at attach, and when told it grew)."""
        if self._memory is None:
            return
        ref = ctypes.byref(self._memory)
        self._base = ctypes.addressof(ffi.wasmtime_memory_data(self._context, ref).contents)
        self.resized(ffi.wasmtime_memory_data_size(self._context, ref))

    def resized(self, size: int) -> None:
        """The memory is now ``size`` bytes (it grew in place: same base)."""
        if size != self._size and self._base:
            self._view = memoryview((ctypes.c_ubyte * size).from_address(self._base)).cast("B")
            self._size = size

    def _check(self, ptr: int, size: int) -> None:
        if ptr + size > self._size:
            raise OutOfBounds(f"{size} bytes at {ptr} (memory is {self._size} bytes)")

    def read(self, ptr: int, size: int) -> bytes:
        if size == 0:
            return b""
        if ptr + size > self._size:
            self._check(ptr, size)
        return self._view[ptr : ptr + size].tobytes()

    def view(self, ptr: int, size: int) -> memoryview:
        """A zero-copy view (valid until the memory next grows: use it before calling back in)."""
        self._check(ptr, size)
        return self._view[ptr : ptr + size]

    def text(self, ptr: int, size: int) -> str:
        if ptr + size > self._size:
            if size == 0:
                return ""  # as read(): an empty read is never out of bounds
            self._check(ptr, size)
        return str(self._view[ptr : ptr + size], "utf-8", "surrogateescape")  # decoded in place

    def write(self, ptr: int, data: bytes) -> None:
        if not data:
            return
        if ptr <= 0:
            raise OutOfBounds(f"write of {len(data)} bytes at {ptr}")
        if ptr + len(data) > self._size:
            self._check(ptr, len(data))
        self._view[ptr : ptr + len(data)] = data

    def u32(self, ptr: int) -> int:
        if ptr + 4 > self._size:
            self._check(ptr, 4)
        value: int = _U32.unpack_from(self._view, ptr)[0]
        return value

    def put_u32(self, ptr: int, value: int) -> None:
        if ptr <= 0 or ptr + 4 > self._size:
            if ptr <= 0:
                raise OutOfBounds(f"write of 4 bytes at {ptr}")
            self._check(ptr, 4)
        _U32.pack_into(self._view, ptr, value & 0xFFFFFFFF)

    def put_u64(self, ptr: int, value: int) -> None:
        if ptr <= 0 or ptr + 8 > self._size:
            if ptr <= 0:
                raise OutOfBounds(f"write of 8 bytes at {ptr}")
            self._check(ptr, 8)
        _U64.pack_into(self._view, ptr, value & 0xFFFFFFFFFFFFFFFF)

    def allocate(self, size: int) -> int:
        """Memory for ``size`` bytes from the module (proxy_on_memory_allocate or malloc)."""
        self.allocations += 1
        ptr = self.allocator(size) & 0xFFFFFFFF
        if ptr == 0 and size:
            raise OutOfBounds(f"the module's allocator returned NULL for {size} bytes")
        return ptr

    def copy_out(self, data: bytes, ptr_ptr: int, size_ptr: int) -> None:
        """cpp-host's copyToPointerSize: allocate ``data`` in the module (nothing for empty data),
        then store its address and size at the two pointers."""
        ptr = 0
        if data:
            ptr = self.allocate(len(data))
            self.write(ptr, data)
        self.put_u32(ptr_ptr, ptr)
        self.put_u32(size_ptr, len(data))


def _no_allocator(size: int) -> int:
    raise OutOfBounds("the module has no allocator")
