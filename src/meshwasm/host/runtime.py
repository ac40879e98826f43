"""wasmtime plumbing: one Engine and Linker per configuration, modules compiled once per process.

Host functions are defined once on a shared Linker and dispatch to the VM that
is currently executing (a thread-local set around every call into wasm), so a
new plugin costs one instantiation, not a new Linker and a recompilation.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import wasmtime

from meshwasm.host.errors import MissingImportError, ModuleRejected
from meshwasm.wasm.binary import ModuleInfo, inspect_module

Storelike = wasmtime.Store | wasmtime.Caller
I32 = wasmtime.ValType.i32()
I64 = wasmtime.ValType.i64()
_T = {"i": I32, "I": I64}

# name -> (params, results); 'i' = i32, 'I' = i64. The proxy-wasm v0.2.x host functions.
PROXY_FUNCTIONS: dict[str, tuple[str, str]] = {
    "proxy_log": ("iii", "i"),
    "proxy_get_log_level": ("i", "i"),
    "proxy_get_current_time_nanoseconds": ("i", "i"),
    "proxy_set_tick_period_milliseconds": ("i", "i"),
    "proxy_get_status": ("iii", "i"),
    "proxy_get_property": ("iiii", "i"),
    "proxy_set_property": ("iiii", "i"),
    "proxy_continue_stream": ("i", "i"),
    "proxy_close_stream": ("i", "i"),
    "proxy_continue_request": ("", "i"),
    "proxy_continue_response": ("", "i"),
    "proxy_clear_route_cache": ("", "i"),
    "proxy_send_local_response": ("iiiiiiii", "i"),
    "proxy_get_shared_data": ("iiiii", "i"),
    "proxy_set_shared_data": ("iiiii", "i"),
    "proxy_register_shared_queue": ("iii", "i"),
    "proxy_resolve_shared_queue": ("iiiii", "i"),
    "proxy_dequeue_shared_queue": ("iii", "i"),
    "proxy_enqueue_shared_queue": ("iii", "i"),
    "proxy_add_header_map_value": ("iiiii", "i"),
    "proxy_get_header_map_value": ("iiiii", "i"),
    "proxy_get_header_map_pairs": ("iii", "i"),
    "proxy_set_header_map_pairs": ("iii", "i"),
    "proxy_replace_header_map_value": ("iiiii", "i"),
    "proxy_remove_header_map_value": ("iii", "i"),
    "proxy_get_header_map_size": ("ii", "i"),
    "proxy_get_buffer_status": ("iii", "i"),
    "proxy_get_buffer_bytes": ("iiiii", "i"),
    "proxy_set_buffer_bytes": ("iiiii", "i"),
    "proxy_http_call": ("iiiiiiiiii", "i"),
    "proxy_grpc_call": ("iiiiiiiiiiii", "i"),
    "proxy_grpc_stream": ("iiiiiiii", "i"),
    "proxy_grpc_send": ("iiii", "i"),
    "proxy_grpc_cancel": ("i", "i"),
    "proxy_grpc_close": ("i", "i"),
    "proxy_define_metric": ("iiii", "i"),
    "proxy_increment_metric": ("iI", "i"),
    "proxy_record_metric": ("iI", "i"),
    "proxy_get_metric": ("ii", "i"),
    "proxy_set_effective_context": ("i", "i"),
    "proxy_done": ("", "i"),
    "proxy_call_foreign_function": ("iiiiii", "i"),
}

# WASI calls where Envoy's host behaves differently from a general-purpose WASI.
WASI_OVERRIDES: dict[str, tuple[str, str]] = {
    "fd_write": ("iiii", "i"),
    "fd_read": ("iiii", "i"),
    "fd_prestat_get": ("ii", "i"),
    "poll_oneoff": ("iiii", "i"),
    "proc_exit": ("i", ""),
}
WASI_MODULES = ("wasi_snapshot_preview1",)


class HostCallTarget(Protocol):
    """What the executing VM dispatches host calls to (see meshwasm.host.hostcalls)."""

    def dispatch(self, name: str) -> Callable[..., Any]: ...


_active = threading.local()


def _current() -> HostCallTarget:
    target: HostCallTarget | None = getattr(_active, "target", None)
    if target is None:
        raise RuntimeError("host function called outside a meshwasm call into wasm")
    return target


def _trampoline(name: str) -> Callable[..., Any]:
    def call(caller: wasmtime.Caller, *args: int) -> Any:
        return _current().dispatch(name)(caller, *args)

    return call


@dataclass(frozen=True)
class EngineKey:
    consume_fuel: bool


class _EngineEntry:
    def __init__(self, key: EngineKey):
        config = wasmtime.Config()
        config.consume_fuel = key.consume_fuel
        self.engine = wasmtime.Engine(config)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        self.linker.allow_shadowing = True
        self.provided: set[tuple[str, str]] = set()
        for name, (params, results) in PROXY_FUNCTIONS.items():
            ty = wasmtime.FuncType([_T[p] for p in params], [_T[r] for r in results])
            self.linker.define_func("env", name, ty, _trampoline(name), access_caller=True)
            self.provided.add(("env", name))
        for module in WASI_MODULES:
            for name, (params, results) in WASI_OVERRIDES.items():
                ty = wasmtime.FuncType([_T[p] for p in params], [_T[r] for r in results])
                self.linker.define_func(module, name, ty, _trampoline(f"wasi_{name}"), access_caller=True)
        self.modules: dict[str, tuple[wasmtime.Module, wasmtime.InstancePre]] = {}
        self.lock = threading.Lock()

    def is_provided(self, store: wasmtime.Store, module: str, name: str) -> bool:
        if (module, name) in self.provided:
            return True
        try:
            self.linker.get(store, module, name)
        except wasmtime.WasmtimeError:
            return False
        return True


_ENGINES: dict[EngineKey, _EngineEntry] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(key: EngineKey) -> _EngineEntry:
    with _ENGINES_LOCK:
        entry = _ENGINES.get(key)
        if entry is None:
            entry = _ENGINES[key] = _EngineEntry(key)
        return entry


@dataclass(frozen=True)
class LoadedModule:
    source: str
    info: ModuleInfo
    module: wasmtime.Module
    pre: wasmtime.InstancePre
    entry: _EngineEntry


def load_module(data: bytes, *, source: str, consume_fuel: bool) -> LoadedModule:
    """Check and compile ``data`` (once per process per sha256 and engine configuration)."""
    info = inspect_module(data, source=source)
    if not info.is_proxy_wasm:
        raise ModuleRejected(
            f"{source} is WebAssembly but not a proxy-wasm module: it exports no proxy_abi_version_* marker",
            hint="build it with a proxy-wasm SDK (proxy-wasm-go-sdk, proxy-wasm-rust-sdk, ...)",
        )
    if "memory" not in info.exports:
        raise ModuleRejected(f"{source} exports no memory named 'memory'; a proxy-wasm host needs it")
    if "proxy_on_memory_allocate" not in info.exports and "malloc" not in info.exports:
        raise ModuleRejected(
            f"{source} exports no allocator (neither proxy_on_memory_allocate nor malloc);"
            " the host cannot hand it headers, bodies or configuration",
            hint="proxy-wasm SDKs export proxy_on_memory_allocate; C/TinyGo builds export malloc",
        )
    entry = engine_for(EngineKey(consume_fuel=consume_fuel))
    with entry.lock:
        cached = entry.modules.get(info.sha256)
        if cached is None:
            probe = wasmtime.Store(entry.engine)
            missing = sorted(
                {
                    (module, name)
                    for module, name, kind in info.imports
                    if kind == "func" and not entry.is_provided(probe, module, name)
                }
            )
            if missing:
                raise MissingImportError(source, missing)
            try:
                module = wasmtime.Module(entry.engine, data)
                pre = entry.linker.instantiate_pre(module)
            except wasmtime.WasmtimeError as exc:
                raise ModuleRejected(f"{source} cannot be linked by this host: {exc}") from exc
            cached = entry.modules[info.sha256] = (module, pre)
    return LoadedModule(source=source, info=info, module=cached[0], pre=cached[1], entry=entry)


def load_path(path: Path, *, consume_fuel: bool) -> LoadedModule:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModuleRejected(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModuleRejected(f"{path} is a directory, not a .wasm file") from None
    return load_module(data, source=str(path), consume_fuel=consume_fuel)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _DirectCall:
    """Calls an export with integer arguments straight through wasmtime's C API.

    wasmtime-py's ``Func.__call__`` looks the function type up and converts every
    value on each call, which is most of a stream's cost; the types of a proxy-wasm
    callback never change, so this resolves them once. It uses wasmtime-py internals
    (``_ffi``, ``enter_wasm``); :func:`direct_caller` falls back to the public call
    when they are not there.
    """

    def __init__(self, func: wasmtime.Func, store: wasmtime.Store):
        from wasmtime import _ffi
        from wasmtime._func import enter_wasm

        self._ffi = _ffi
        self._enter_wasm = enter_wasm
        ty = func.type(store)
        i32, i64 = _ffi.WASMTIME_I32.value, _ffi.WASMTIME_I64.value
        kinds = {str(I32): i32, str(I64): i64}
        self._params = [kinds[str(t)] for t in ty.params]  # KeyError: not all integers
        self._results = [kinds[str(t)] for t in ty.results]
        if len(self._results) > 1:
            raise TypeError("more than one result")
        self._i32 = i32
        self._raw = func._func
        self._byref = __import__("ctypes").byref

    def __call__(self, store: Storelike, *args: int) -> int | None:
        ffi = self._ffi
        count = len(self._params)
        params = (ffi.wasmtime_val_t * count)()
        for i, (kind, value) in enumerate(zip(self._params, args, strict=True)):
            params[i].kind = kind
            if kind == self._i32:
                params[i].of.i32 = value
            else:
                params[i].of.i64 = value
        results = (ffi.wasmtime_val_t * len(self._results))()
        with self._enter_wasm(store) as trap:
            error = ffi.wasmtime_func_call(
                store._context(), self._byref(self._raw), params, count, results, len(self._results), trap
            )
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        if not self._results:
            return None
        result: int = results[0].of.i32 if self._results[0] == self._i32 else results[0].of.i64
        return result


def direct_caller(func: wasmtime.Func, store: wasmtime.Store) -> Callable[..., Any]:
    try:
        return _DirectCall(func, store)
    except (ImportError, AttributeError, KeyError, TypeError):
        return func


class OutOfBounds(Exception):
    """A pointer from the module points outside its memory."""


class WasmVM:
    """One instance of a module in its own Store, with memory helpers for host calls."""

    def __init__(
        self,
        loaded: LoadedModule,
        target: HostCallTarget,
        *,
        env: dict[str, str] | None = None,
        memory_limit: int | None = None,
    ):
        self.loaded = loaded
        self.target = target
        self.store = wasmtime.Store(loaded.entry.engine)
        wasi = wasmtime.WasiConfig()
        if env:
            wasi.env = list(env.items())
        self.store.set_wasi(wasi)
        if memory_limit is not None:
            self.store.set_limits(memory_size=memory_limit)
        with self.active():
            instance = loaded.pre.instantiate(self.store)
        exports = instance.exports(self.store)
        self.functions: dict[str, wasmtime.Func] = {}
        self._callers: dict[str, Callable[..., Any]] = {}
        for name, kind in loaded.info.exports.items():
            if kind == "func":
                item = exports[name]
                if isinstance(item, wasmtime.Func):
                    self.functions[name] = item
        memory = exports["memory"]
        if not isinstance(memory, wasmtime.Memory):
            raise ModuleRejected(f"{loaded.source}: export 'memory' is not a memory")
        self.memory = memory
        allocator = self.functions.get("proxy_on_memory_allocate") or self.functions["malloc"]
        self.allocator = direct_caller(allocator, self.store)

    @contextmanager
    def active(self) -> Iterator[None]:
        previous = getattr(_active, "target", None)
        _active.target = self.target
        try:
            yield
        finally:
            _active.target = previous

    def has(self, name: str) -> bool:
        return name in self.functions

    def call(self, name: str, *args: int) -> Any:
        caller = self._callers.get(name)
        if caller is None:
            caller = self._callers[name] = direct_caller(self.functions[name], self.store)
        with self.active():
            return caller(self.store, *args)

    def param_count(self, name: str) -> int:
        return len(self.functions[name].type(self.store).params)

    # -- memory, used from inside host calls (``caller`` is the store there) ----------------------
    def read(self, store: Storelike, ptr: int, size: int) -> bytes:
        if size == 0:
            return b""
        if ptr < 0 or size < 0 or ptr + size > self.memory.data_len(store):
            raise OutOfBounds(f"read of {size} bytes at {ptr}")
        return bytes(self.memory.read(store, ptr, ptr + size))

    def write(self, store: Storelike, ptr: int, data: bytes) -> None:
        if not data:
            return
        if ptr <= 0 or ptr + len(data) > self.memory.data_len(store):
            raise OutOfBounds(f"write of {len(data)} bytes at {ptr}")
        self.memory.write(store, data, ptr)

    def write_u32(self, store: Storelike, ptr: int, value: int) -> None:
        self.write(store, ptr, struct.pack("<I", value & 0xFFFFFFFF))

    def write_u64(self, store: Storelike, ptr: int, value: int) -> None:
        self.write(store, ptr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def read_u32(self, store: Storelike, ptr: int) -> int:
        value: int = struct.unpack("<I", self.read(store, ptr, 4))[0]
        return value

    def allocate(self, store: Storelike, size: int) -> int:
        ptr: int = self.allocator(store, size) & 0xFFFFFFFF
        if ptr == 0 and size:
            raise OutOfBounds(f"the module's allocator returned NULL for {size} bytes")
        return ptr

    def copy_out(self, store: Storelike, data: bytes, ptr_ptr: int, size_ptr: int) -> None:
        """Allocate ``data`` in the module and store its address and size at the given pointers."""
        ptr = self.allocate(store, len(data)) if data else 0
        self.write(store, ptr, data)
        self.write_u32(store, ptr_ptr, ptr)
        self.write_u32(store, size_ptr, len(data))

    def set_fuel(self, fuel: int) -> None:
        self.store.set_fuel(fuel)
