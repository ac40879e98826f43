"""wasmtime plumbing: engines, one linker per ABI version, instances, calls in and out.

Host functions are defined once per engine and ABI on a shared Linker (as Envoy's
surface table lists them) and find the VM they serve through a thread-local set
around every call into wasm, so a new plugin costs one instantiation, not a new
Linker and a recompilation. Both directions use wasmtime's "unchecked" C calls
(raw 16-byte value slots, no per-call type lookup or value wrapping): that is most
of a stream's cost otherwise. Every store can be interrupted: an epoch ticker
thread advances the engine's epoch every ``TICK_SECONDS`` and a per-store callback
enforces the callback deadline (and lets Ctrl-C in).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import wasmtime
from wasmtime import _ffi as ffi

from meshwasm.host.errors import DeadlineExceeded, MissingImportError, ModuleRejected, PluginTrap
from meshwasm.host.functions import resolve
from meshwasm.host.linear_memory import MemoryCreator
from meshwasm.host.memory import OutOfBounds
from meshwasm.host.state import VmState
from meshwasm.host.surface import (
    ABI_VERSIONS,
    ENVOY_ABI_REFUSAL,
    REFUSED_WHILE_STARTING,
    WASI_MODULES,
    HostFunction,
    effective_abi,
    lookup,
    provided,
)
from meshwasm.wasm.binary import ModuleInfo, inspect_module

TICK_SECONDS = 0.01
INVALID_MEMORY_ACCESS = 6
WASI_EFAULT = 21

# -- raw C entry points, with argument types of our own (wasmtime-py's stay untouched) ---------------

_HostCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
)
_Finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_define_unchecked = ctypes.CFUNCTYPE(
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_void_p,
    _HostCallback,
    ctypes.c_void_p,
    ctypes.c_void_p,
)(("wasmtime_linker_define_func_unchecked", ffi.dll))


class _UntypedCall(ctypes._CFuncPtr):  # type: ignore[misc,name-defined]
    """A C function without argtypes: every argument is passed as the ctypes object it already
    is, with no per-call conversion (about 1 us less per call into wasm than a typed prototype).
    Callers must pass exactly the C types: (context, func, args_and_results, len, trap_ret)."""

    _flags_ = ctypes._FUNCFLAG_CDECL  # type: ignore[attr-defined]
    _restype_ = ctypes.c_void_p


# wasmtime_func_call_unchecked(wasmtime_context_t*, const wasmtime_func_t*, wasmtime_val_raw_t*,
#                              size_t, wasm_trap_t**) -> wasmtime_error_t*
_call_unchecked = _UntypedCall(("wasmtime_func_call_unchecked", ffi.dll))
_trap_new = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t)(
    ("wasmtime_trap_new", ffi.dll)
)
_error_new = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(("wasmtime_error_new", ffi.dll))
_EpochCallback = ctypes.CFUNCTYPE(
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ctypes.c_uint8),
)
_set_epoch_callback = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, _EpochCallback, ctypes.c_void_p, ctypes.c_void_p
)(("wasmtime_store_epoch_deadline_callback", ffi.dll))
_set_epoch_deadline = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64)(
    ("wasmtime_context_set_epoch_deadline", ffi.dll)
)


def _address(pointer: Any) -> int:
    return ctypes.cast(pointer, ctypes.c_void_p).value or 0


class _Current(threading.local):
    vm: VmState | None = None


_current = _Current()


def _unraisable(args: Any) -> None:
    """Ctrl-C can land where no try block catches it: as a C callback (the epoch callback, a
    host function) is entered. ctypes then reports it here instead of raising it; while a VM
    runs, it stops that VM (its next epoch check traps) and is raised after the call returns."""
    vm = _current.vm
    if vm is not None and isinstance(args.exc_value, KeyboardInterrupt):
        if vm.pending_error is None:
            vm.pending_error = args.exc_value
        return
    _previous_unraisable(args)


_previous_unraisable = sys.unraisablehook
sys.unraisablehook = _unraisable


class HostFault(Exception):
    """A host function failed in a way that stops the plugin (carries the original error)."""


def _trampoline(function: HostFunction) -> Any:
    """The C callback for one host function: raw slots in, the implementation, raw slot out."""
    implementation = resolve(function)
    count = len(function.params)
    args = struct.Struct("<" + "".join("I12x" if p == "i" else "q8x" for p in function.params))
    size = 16 * count
    has_result = bool(function.results)
    fault = WASI_EFAULT if function.module in WASI_MODULES else INVALID_MEMORY_ACCESS
    name = function.name
    restricted = function.qualified in REFUSED_WHILE_STARTING
    # The raw slots as a ctypes array over the caller's address: struct reads and writes it in
    # place (ctypes.string_at would copy it through a typed C call, about 1.5 us more per call).
    slots = ctypes.c_char * max(size, 16)
    result_slot = struct.Struct("<I")

    def callback(env: int, caller: int, raw: int, nraw: int) -> int:
        vm = _current.vm
        try:
            if vm is None:
                raise HostFault(f"{name} called outside a meshwasm call into wasm")
            if restricted and vm.starting:
                raise PluginTrap(
                    vm.callback,
                    f"restricted_callback: {function.qualified} called while the VM starts"
                    " (_initialize, main, _start): Envoy fails the VM; of the proxy_* calls only"
                    " proxy_log may be made then",
                    vm.logs,
                )
            if count:
                result = implementation(vm, *args.unpack_from(slots.from_address(raw)))
            else:
                result = implementation(vm)
            if has_result:
                result_slot.pack_into(slots.from_address(raw), 0, result & 0xFFFFFFFF)
            return 0
        except OutOfBounds:
            if has_result:
                result_slot.pack_into(slots.from_address(raw), 0, fault)
            return 0
        except BaseException as exc:  # anything else stops the plugin, reported after the call
            if vm is not None and vm.pending_error is None:
                vm.pending_error = exc
            message = f"meshwasm host function {name} failed: {type(exc).__name__}".encode()
            return _trap_new(message, len(message)) or 0

    return _HostCallback(callback)


@dataclass(frozen=True)
class EngineKey:
    consume_fuel: bool
    epoch: bool


class _EngineEntry:
    def __init__(self, key: EngineKey):
        config = wasmtime.Config()
        config.consume_fuel = key.consume_fuel
        config.epoch_interruption = key.epoch
        # Memory grows in place (it is reserved up front): the host keeps one view of it.
        config.memory_may_move = False
        # The host allocates linear memories itself: it sees every grow (see linear_memory).
        self.memory_creator = MemoryCreator(lambda: _current.vm)
        self.memory_creator.install(config)
        config.memory_init_cow = False  # copy-on-write images need wasmtime's own memories
        if os.environ.get("MESHWASM_WASMTIME_CACHE", "1") != "0":
            # wasmtime's on-disk cache of compiled code (~/.cache/wasmtime): a Go module that takes
            # 20 s to compile loads in 0.2 s the next time, in this process or another.
            config.cache = True
        self.key = key
        self.engine = wasmtime.Engine(config)
        self._linkers: dict[str, wasmtime.Linker] = {}
        self._callbacks: dict[tuple[str, str], Any] = {}  # kept alive as long as the engine
        self.modules: dict[str, wasmtime.Module] = {}
        self.pres: dict[tuple[str, str], wasmtime.InstancePre] = {}
        self.lock = threading.Lock()
        if key.epoch:
            _Ticker.add(self.engine)

    def linker(self, abi: str) -> wasmtime.Linker:
        linker = self._linkers.get(abi)
        if linker is None:
            linker = self._linkers[abi] = wasmtime.Linker(self.engine)
            for function in provided(abi):
                key = (function.module, function.name)
                callback = self._callbacks.get(key)
                if callback is None:
                    callback = self._callbacks[key] = _trampoline(function)
                ty = wasmtime.FuncType(
                    [_VALTYPE[p] for p in function.params], [_VALTYPE[r] for r in function.results]
                )
                module, name = function.module.encode(), function.name.encode()
                error = _define_unchecked(
                    _address(linker.ptr()),
                    module,
                    len(module),
                    name,
                    len(name),
                    _address(ty.ptr()),
                    callback,
                    None,
                    None,
                )
                if error:
                    raise wasmtime.WasmtimeError._from_ptr(
                        ctypes.cast(error, ctypes.POINTER(ffi.wasmtime_error_t))
                    )
        return linker


_VALTYPE = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}
_ENGINES: dict[EngineKey, _EngineEntry] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(key: EngineKey) -> _EngineEntry:
    with _ENGINES_LOCK:
        entry = _ENGINES.get(key)
        if entry is None:
            entry = _ENGINES[key] = _EngineEntry(key)
        return entry


class _Ticker:
    """One daemon thread advancing the epoch of every interruptible engine."""

    _engines: ClassVar[weakref.WeakSet[wasmtime.Engine]] = weakref.WeakSet()
    _thread: ClassVar[threading.Thread | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def add(cls, engine: wasmtime.Engine) -> None:
        with cls._lock:
            cls._engines.add(engine)
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._run, name="meshwasm-epoch", daemon=True)
                cls._thread.start()

    @classmethod
    def _run(cls) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            for engine in list(cls._engines):
                engine.increment_epoch()


@dataclass(frozen=True)
class LoadedModule:
    source: str
    info: ModuleInfo
    abi: str
    module: wasmtime.Module
    pre: wasmtime.InstancePre
    entry: _EngineEntry


def _signature(ty: wasmtime.FuncType) -> str:
    def render(types: list[wasmtime.ValType]) -> str:
        return " ".join(str(t) for t in types) or "void"

    return f"{render(ty.params)} -> {render(ty.results)}"


def _check_imports(source: str, abi: str, module: wasmtime.Module) -> None:
    """Refuse what Envoy refuses: imports it does not provide for this ABI (by name), and
    imports whose type differs from Envoy's (with Envoy's own wording)."""
    missing: list[tuple[str, str]] = []
    mismatched: list[str] = []
    for item in module.imports:
        ty = item.type
        if not isinstance(ty, wasmtime.FuncType):
            missing.append((item.module, item.name or ""))
            continue
        rows = lookup(item.module, item.name or "")
        row = next((r for r in rows if abi in r.abis), None)
        if row is None:
            missing.append((item.module, item.name or ""))
            continue
        if _signature(ty) != row.signature:
            mismatched.append(f"{row.qualified}, want: {_signature(ty)}, but host exports: {row.signature}")
    if missing:
        raise MissingImportError(source, missing, abi=abi)
    if mismatched:
        raise ModuleRejected(
            f"{source} imports {len(mismatched)} function(s) with a type Envoy does not provide"
            f" (Envoy: 'Failed to load Wasm module due to an import type mismatch'): "
            + "; ".join(mismatched),
            hint="the module was built against a different proxy-wasm ABI or SDK version",
        )


def load_module(data: bytes, *, source: str, key: EngineKey) -> LoadedModule:
    """Check and compile ``data`` (once per process per sha256 and engine configuration)."""
    info = inspect_module(data, source=source)
    abi = effective_abi(info.exports)
    if abi is None:
        markers = [n for n, k in info.exports.items() if k == "func" and n.startswith("proxy_abi_version_")]
        what = (
            f"it exports only ABI markers Envoy does not know ({', '.join(markers)})"
            if markers
            else "it exports no proxy_abi_version_* marker"
        )
        raise ModuleRejected(
            f"{source} is WebAssembly but not a proxy-wasm module Envoy runs: {what};"
            f" Envoy refuses it with '{ENVOY_ABI_REFUSAL}' (it runs ABI "
            + ", ".join(v.replace("_", ".") for v in ABI_VERSIONS)
            + ")",
            hint="build it with a proxy-wasm SDK (proxy-wasm-go-sdk, proxy-wasm-rust-sdk, ...)",
        )
    if "memory" not in info.exports:
        raise ModuleRejected(f"{source} exports no memory named 'memory'; a proxy-wasm host needs it")
    if "proxy_on_memory_allocate" not in info.exports and "malloc" not in info.exports:
        raise ModuleRejected(
            f"{source} exports no allocator (neither proxy_on_memory_allocate nor malloc);"
            " the host cannot hand it headers, bodies or configuration"
            " (Envoy: 'Wasm module is missing malloc function.')",
            hint="proxy-wasm SDKs export proxy_on_memory_allocate; C/TinyGo builds export malloc",
        )
    entry = engine_for(key)
    with entry.lock:
        pre = entry.pres.get((info.sha256, abi))
        module = entry.modules.get(info.sha256)
        if module is None:
            try:
                module = entry.modules[info.sha256] = wasmtime.Module(entry.engine, data)
            except wasmtime.WasmtimeError as exc:
                raise ModuleRejected(f"{source} cannot be compiled: {exc}") from None
        if pre is None:
            _check_imports(source, abi, module)
            try:
                pre = entry.pres[(info.sha256, abi)] = entry.linker(abi).instantiate_pre(module)
            except wasmtime.WasmtimeError as exc:
                raise ModuleRejected(f"{source} cannot be linked by this host: {exc}") from None
    return LoadedModule(source=source, info=info, abi=abi, module=module, pre=pre, entry=entry)


def load_path(path: Path, *, key: EngineKey) -> LoadedModule:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModuleRejected(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModuleRejected(f"{path} is a directory, not a .wasm file") from None
    return load_module(data, source=str(path), key=key)


class Export:
    """One exported function, called with integers through wasmtime's unchecked C call."""

    __slots__ = (
        "_args",
        "_buffer",
        "_context",
        "_func",
        "_keep",
        "_length",
        "_result",
        "_trap",
        "_trap_ref",
        "_view",
        "params",
    )

    def __init__(self, func: wasmtime.Func, store: wasmtime.Store):
        ty = func.type(store)
        kinds = {"i32": "i12x", "i64": "q8x"}  # signed i32: callers pass ints in range
        try:
            params = [kinds[str(t)] for t in ty.params]
            results = [str(t) for t in ty.results]
        except KeyError:
            raise TypeError(f"export with non-integer parameters: {_signature(ty)}") from None
        if len(results) > 1 or any(r not in kinds for r in results):
            raise TypeError(f"export with an unsupported result: {_signature(ty)}")
        self.params = len(params)
        length = max(len(params), len(results), 1)
        self._buffer = (ffi.wasmtime_val_raw * length)()
        self._view = memoryview(self._buffer).cast("B")
        self._args = struct.Struct("<" + "".join(params))
        self._result = None if not results else struct.Struct("<i" if results[0] == "i32" else "<q")
        self._keep = func  # the wasmtime_func_t below lives in it
        # Ready-made C arguments (see _UntypedCall): nothing is converted per call.
        self._func = ctypes.c_void_p(ctypes.addressof(func._func))
        self._context = ctypes.c_void_p(_address(store._context()))
        self._length = ctypes.c_size_t(length)
        self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
        self._trap_ref = ctypes.byref(self._trap)

    def __call__(self, *args: int) -> int:
        """Call with the export's parameters (extra trailing arguments are dropped: an ABI 0.1.0
        module's header callbacks take one fewer than the host passes)."""
        if args:
            if len(args) != self.params:
                args = args[: self.params]
            self._args.pack_into(self._view, 0, *args)
        error = _call_unchecked(self._context, self._func, self._buffer, self._length, self._trap_ref)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, ctypes.POINTER(ffi.wasmtime_error_t)))
        if self._trap:
            trap = wasmtime.Trap._from_ptr(self._trap)
            self._trap = ctypes.POINTER(ffi.wasm_trap_t)()  # the trap is wasmtime.Trap's now
            self._trap_ref = ctypes.byref(self._trap)
            raise trap
        if self._result is None:
            return 0
        value: int = self._result.unpack_from(self._view, 0)[0]
        return value


class WasmVM:
    """One instance of a module in its own Store, serving one :class:`VmState`."""

    def __init__(
        self,
        loaded: LoadedModule,
        state: VmState,
        *,
        memory_limit: int | None,
        fuel_limit: int | None,
        deadline: float | None,
    ):
        self.loaded = loaded
        self.state = state
        self.fuel_limit = fuel_limit
        self.deadline = deadline
        self.store = wasmtime.Store(loaded.entry.engine)
        # memory_limit is enforced as memories grow (linear_memory.MemoryCreator), not by a
        # wasmtime limiter, which would refuse grows without the host knowing.
        if fuel_limit is not None:
            self.store.set_fuel(fuel_limit)  # a start section runs under the cap too
        self._epoch_callback: Any = None
        if loaded.entry.key.epoch:
            self._epoch_callback = _EpochCallback(self._on_epoch)
            _set_epoch_callback(_address(self.store.ptr()), self._epoch_callback, None, None)
            _set_epoch_deadline(_address(self.store._context()), 1)
        state.call_started = time.monotonic()
        with self.active():
            instance = loaded.pre.instantiate(self.store)
        exports = instance.exports(self.store)
        self.functions: dict[str, wasmtime.Func] = {}
        for name, kind in loaded.info.exports.items():
            if kind == "func":
                item = exports[name]
                if isinstance(item, wasmtime.Func):
                    self.functions[name] = item
        memory = exports["memory"]
        if not isinstance(memory, wasmtime.Memory):
            raise ModuleRejected(f"{loaded.source}: export 'memory' is not a memory")
        self.memory = memory
        state.mem.attach(self.store._context(), memory._memory)
        allocator = self.functions.get("malloc") or self.functions["proxy_on_memory_allocate"]
        self._exports: dict[str, Export] = {}
        allocate = self.export(allocator, "malloc")
        state.mem.allocator = allocate

    def _on_epoch(self, context: int, data: int, delta: Any, kind: Any) -> int:
        """Every tick while this store runs wasm: the deadline, and a chance for Ctrl-C (Python
        runs its SIGINT handler in here, or at the entry of a host function: see _unraisable)."""
        state = self.state
        try:
            delta[0] = 1
            kind[0] = 0  # continue
            if state.pending_error is not None:
                return _error_new(b"meshwasm: stopped") or 0
            if self.deadline is not None and time.monotonic() - state.call_started > self.deadline:
                raise DeadlineExceeded(state.callback or "the module's start", self.deadline, state.logs)
        except BaseException as exc:  # KeyboardInterrupt arrives here too, while wasm runs
            if state.pending_error is None:
                state.pending_error = exc
            return _error_new(b"meshwasm: interrupted") or 0
        return 0

    @contextmanager
    def active(self) -> Iterator[None]:
        previous = _current.vm
        _current.vm = self.state
        try:
            yield
        finally:
            _current.vm = previous

    def export(self, func: wasmtime.Func, name: str) -> Callable[..., int]:
        found = self._exports.get(name)
        if found is None:
            found = self._exports[name] = Export(func, self.store)
        return found

    def has(self, name: str) -> bool:
        return name in self.functions

    def caller(self, name: str) -> Export:
        found = self._exports.get(name)
        if found is None:
            found = self._exports[name] = Export(self.functions[name], self.store)
        return found

    def set_fuel(self, fuel: int) -> None:
        self.store.set_fuel(fuel)

    def enter(self) -> VmState | None:
        previous = _current.vm
        _current.vm = self.state
        return previous

    @staticmethod
    def leave(previous: VmState | None) -> None:
        _current.vm = previous
