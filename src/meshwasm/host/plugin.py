"""The test API: load a compiled plugin, drive HTTP streams through it, look at what it did.

    plugin = Plugin.load("build/add-header.wasm", config={"header": "x-a", "value": "1"})
    stream = plugin.http_stream()
    assert stream.send_request_headers({":path": "/"}) == Action.CONTINUE
    stream.send_response_headers({":status": "200"})
    assert stream.response_headers["x-a"] == "1"
    stream.complete()

Start-up and every callback follow Envoy (proxy-wasm-cpp-host): see
docs/host.md for the order of calls and the lifecycle rules enforced. The
plugin's state lives in a :class:`~meshwasm.host.state.VmState` (``plugin.state``);
this class starts the instance, calls into it, and turns faults into named errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import wasmtime

from meshwasm.host.abi import Action, BufferType, LogLevel
from meshwasm.host.callouts import HttpResponder, PendingGrpcCall, PendingHttpCall
from meshwasm.host.errors import (
    DeadlineExceeded,
    LifecycleError,
    PluginError,
    PluginStartError,
    PluginTrap,
    ResourceLimitError,
)
from meshwasm.host.properties import Attributes, PropertyValue
from meshwasm.host.runtime import EngineKey, LoadedModule, WasmVM, _current, load_module, load_path
from meshwasm.host.shared import SharedData, SharedQueues
from meshwasm.host.state import (
    DEFAULT_MEMORY_LIMIT,
    ROOT_CONTEXT_ID,
    LogEntry,
    Violation,
    VmState,
    make_properties,
)
from meshwasm.host.stream import HttpStream
from meshwasm.host.tcp import TcpStream

_PAGE = 65536
DEFAULT_DEADLINE = 10.0  # seconds one callback may run (None: no deadline, no epoch interruption)
MAX_EVENTS_PER_ADVANCE = 100_000
_UNKNOWN: Any = object()
_ACTIONS: dict[int, Action] = {int(action): action for action in Action}
_monotonic = time.monotonic

__all__ = ["DEFAULT_DEADLINE", "Plugin", "Violation"]


def _config_bytes(config: Any) -> bytes:
    """A dict or list is sent as JSON (as Istio sends pluginConfig); str and bytes as they are."""
    if config is None:
        return b""
    if isinstance(config, bytes):
        return config
    if isinstance(config, str):
        return config.encode()
    return json.dumps(config).encode()


class Plugin:
    """A proxy-wasm plugin instance: one module instance with its root context started.

    Build one with :meth:`load`. Everything the plugin did is observable:
    :attr:`logs`, :attr:`metrics`, :attr:`pending_http_calls`, :attr:`pending_grpc_calls`,
    :attr:`shared_data`, :attr:`violations`.
    """

    def __init__(
        self,
        loaded: LoadedModule,
        *,
        config: Any = None,
        vm_config: Any = None,
        properties: Mapping[str | tuple[str, ...], PropertyValue] | None = None,
        root_id: str = "",
        vm_id: str = "",
        name: str = "",
        strict: bool = False,
        log_level: LogLevel | str | int = LogLevel.TRACE,
        env: Mapping[str, str] | None = None,
        shared_data: SharedData | None = None,
        shared_queues: SharedQueues | None = None,
        clusters: Iterable[str] | None = None,
        foreign_functions: Mapping[str, Callable[[bytes], bytes]] | None = None,
        filter_state_keys: Iterable[str] | None = None,
        memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
        fuel_limit: int | None = None,
        deadline: float | None = DEFAULT_DEADLINE,
        attributes: Attributes | None = None,
        http_responder: HttpResponder | None = None,
    ):
        self.source = loaded.source
        self.info = loaded.info
        self.abi = loaded.abi
        self.fuel_limit = fuel_limit
        self.memory_limit = memory_limit
        self.deadline = deadline
        self.state = VmState(
            source=loaded.source,
            abi=loaded.abi,
            root_id=root_id,
            vm_id=vm_id,
            name=name,
            strict=strict,
            log_level=LogLevel.parse(log_level),
            plugin_configuration=_config_bytes(config),
            vm_configuration=_config_bytes(vm_config),
            env=env,
            shared_data=shared_data,
            shared_queues=shared_queues,
            clusters=clusters,
            foreign_functions=foreign_functions,
            filter_state_keys=filter_state_keys,
            properties=make_properties(properties),
            attributes=attributes,
            memory_limit=memory_limit,
        )
        self.state.runner = self
        self.state.call = self._call  # type: ignore[method-assign]  # one frame fewer per callback
        self.state.http_responder = http_responder
        self._exports: dict[str, Any] = {}
        self._closed = False
        self._failed: PluginError | None = None
        try:
            self.vm = WasmVM(
                loaded, self.state, memory_limit=memory_limit, fuel_limit=fuel_limit, deadline=deadline
            )
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            # A start section runs while instantiating: its faults are the plugin's, named.
            fault = self._fault("the module's start section", exc)
            raise fault or PluginTrap("the module's start section", str(exc), self.logs) from None

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | Path | bytes,
        config: Any = None,
        vm_config: Any = None,
        properties: Mapping[str | tuple[str, ...], PropertyValue] | None = None,
        **options: Any,
    ) -> Plugin:
        """Instantiate the module and start it as Envoy does, or raise why it cannot start.

        ``path`` may also be the module's bytes. ``config`` (plugin configuration) and
        ``vm_config`` given as dict or list are sent as JSON. Options: ``root_id``,
        ``vm_id``, ``name``, ``strict``, ``log_level``, ``env``, ``shared_data``,
        ``shared_queues``, ``clusters``, ``foreign_functions``, ``filter_state_keys``,
        ``memory_limit`` (bytes),
        ``fuel_limit`` (instructions per callback), ``deadline`` (seconds per callback),
        ``attributes``, ``http_responder``.
        """
        key = EngineKey(
            consume_fuel=options.get("fuel_limit") is not None,
            epoch=options.get("deadline", DEFAULT_DEADLINE) is not None,
        )
        if isinstance(path, bytes | bytearray):
            loaded = load_module(bytes(path), source="<module bytes>", key=key)
        else:
            loaded = load_path(Path(path), key=key)
        plugin = cls(loaded, config=config, vm_config=vm_config, properties=properties, **options)
        plugin._start()
        return plugin

    def _start(self) -> None:
        exports = self.info.exports
        self.state.starting = True
        try:
            if "_initialize" in exports:
                self._invoke("_initialize")
                if exports.get("main") == "func":
                    self._invoke("main", 0, 0)
            elif "_start" in exports:
                self._invoke("_start")
        finally:
            self.state.starting = False
        self._call("proxy_on_context_create", ROOT_CONTEXT_ID, 0)
        started = self._call("proxy_on_vm_start", ROOT_CONTEXT_ID, len(self.state.vm_configuration))
        if self.vm.has("proxy_on_vm_start") and not started:
            raise PluginStartError(
                f"{self.source}: the plugin refused to start: on_vm_start returned false", self.logs
            )
        if self.vm.has("proxy_on_configure") and not self.configure(self.state.plugin_configuration):
            raise PluginStartError(
                f"{self.source}: the plugin refused its configuration: on_configure returned false",
                self.logs,
            )

    # -- the test API -------------------------------------------------------------------------------------
    def http_stream(self) -> HttpStream:
        """A new HTTP context (proxy_on_context_create(id, root))."""
        if self._failed is not None:
            self._check_usable()
        stream = HttpStream(self.state, self.state.new_context_id())
        self.state.streams[stream.id] = stream
        self._call("proxy_on_context_create", stream.id, ROOT_CONTEXT_ID)
        return stream

    def tcp_stream(self) -> TcpStream:
        """A new downstream connection through the plugin as a network filter:
        proxy_on_context_create(id, root), then proxy_on_new_connection (its answer is
        ``new_connection_action``)."""
        self._check_usable()
        state = self.state
        connection = TcpStream(state, state.new_context_id())
        state.connections[connection.id] = connection
        with state.dispatcher.step():
            self._call("proxy_on_context_create", connection.id, ROOT_CONTEXT_ID)
            action = self._call("proxy_on_new_connection", connection.id)
            connection.new_connection_action = _ACTIONS.get(action, action)
            if action == 0:
                connection.upstream_selected = True  # the TCP proxy after the plugin runs now
            else:
                connection.downstream_paused = True
            connection.phase = "open"
        return connection

    def tick(self) -> None:
        """One timer tick for the root context (proxy_on_tick), whatever the clock says."""
        self._call("proxy_on_tick", ROOT_CONTEXT_ID)

    def advance(self, milliseconds: float) -> int:
        """Move the plugin's clock on: runs proxy_on_tick once per tick period that passes, as
        Envoy's timer does, and times out HTTP callouts whose timeout passes (Envoy's 504).
        The first call freezes the clock (a period set before counts from then). Returns the
        number of ticks run."""
        state = self.state
        if state.now_ns is None:
            # The clock freezes here; a tick period set before counts from now.
            state.now_ns = time.time_ns()
            if state.next_tick_ns is not None:
                state.next_tick_ns = state.now_ns + state.tick_period_ms * 1_000_000
        target = state.now_ns + int(milliseconds * 1_000_000)
        ticks = 0
        for _ in range(MAX_EVENTS_PER_ADVANCE):
            due = [call for call in state.pending_http_calls if self._timeout_ns(call) is not None]
            next_timeout = min((self._timeout_ns(call) or 0 for call in due), default=None)
            next_tick = state.next_tick_ns
            events = [t for t in (next_tick, next_timeout) if t is not None and t <= target]
            if not events:
                break
            state.now_ns = min(events)
            if next_timeout is not None and next_timeout == state.now_ns:
                call = min(due, key=lambda c: self._timeout_ns(c) or 0)
                call.time_out()
                continue
            state.next_tick_ns = state.now_ns + state.tick_period_ms * 1_000_000
            self.tick()
            ticks += 1
        else:
            raise PluginError(
                f"advance({milliseconds}) would run more than {MAX_EVENTS_PER_ADVANCE} ticks and timeouts;"
                f" the tick period is {state.tick_period_ms} ms"
            )
        state.now_ns = target
        return ticks

    @staticmethod
    def _timeout_ns(call: PendingHttpCall) -> int | None:
        return call.dispatched_ns + call.timeout_ms * 1_000_000 if call.timeout_ms else None

    def configure(self, config: Any) -> bool:
        """Send a plugin configuration (proxy_on_configure), as an xDS update does."""
        self.state.plugin_configuration = _config_bytes(config)
        self.state.configuring = True
        try:
            return bool(
                self._call("proxy_on_configure", ROOT_CONTEXT_ID, len(self.state.plugin_configuration))
            )
        finally:
            self.state.configuring = False

    def close(self) -> None:
        """Tear the root context down (on_done, on_delete) and release the instance."""
        if self._closed:
            return
        self._closed = True
        if self._failed is None:
            for stream in list(self.state.streams.values()):
                stream.complete()
            for connection in list(self.state.connections.values()):
                connection.complete()
            self.state.shutting_down = True
            self._call("proxy_on_done", ROOT_CONTEXT_ID)
            self._call("proxy_on_delete", ROOT_CONTEXT_ID)

    def __enter__(self) -> Plugin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the plugin did ----------------------------------------------------------------------------
    @property
    def logs(self) -> list[LogEntry]:
        return self.state.logs

    def logs_at(self, level: LogLevel | str) -> list[str]:
        wanted = LogLevel.parse(level)
        return [entry.message for entry in self.state.logs if entry.level == wanted]

    @property
    def metrics(self) -> dict[str, int | list[int]]:
        """Metric name -> value (counters, gauges) or the recorded samples (histograms)."""
        return self.state.metrics

    @property
    def violations(self) -> list[Violation]:
        return self.state.violations

    @property
    def pending_http_calls(self) -> list[PendingHttpCall]:
        return self.state.pending_http_calls

    @property
    def pending_grpc_calls(self) -> list[PendingGrpcCall]:
        return self.state.pending_grpc_calls

    @property
    def shared_data(self) -> SharedData:
        return self.state.shared_data

    @property
    def shared_queues(self) -> SharedQueues:
        return self.state.shared_queues

    @property
    def tick_period_ms(self) -> int:
        return self.state.tick_period_ms

    @property
    def now_ns(self) -> int | None:
        return self.state.now_ns

    @now_ns.setter
    def now_ns(self, value: int | None) -> None:
        self.state.now_ns = value

    @property
    def properties(self) -> dict[tuple[str, ...], bytes]:
        return self.state.properties

    @property
    def root_id(self) -> str:
        return self.state.root_id

    @property
    def vm_id(self) -> str:
        return self.state.vm_id

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def failed(self) -> PluginError | None:
        return self._failed

    @property
    def memory_pages(self) -> int:
        """The module's linear memory now, in 64 KiB pages."""
        return self.state.mem.size // _PAGE

    # -- the CallbackRunner interface (used by VmState, streams and callouts) -----------------------------
    def exports(self, name: str) -> bool:
        return self.vm.has(name)

    def call(self, callback: str, context_id: int, *args: int) -> int:
        return self._call(callback, context_id, *args)

    # -- kept for tests written against the first host ------------------------------------------------------
    @property
    def _streams(self) -> dict[int, HttpStream]:
        return self.state.streams

    def _get_property(self, path: tuple[str, ...]) -> bytes | None:
        return self.state.get_property(path)

    def _buffer(self, kind: BufferType) -> bytes | None:
        found = self.state.buffer("", kind, record=False)
        return None if isinstance(found, int) else found

    # -- calls into the module ------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._failed is not None:
            raise PluginError(
                f"{self.source}: the plugin failed earlier and Envoy would not call it again: "
                f"{self._failed.message}"
            )

    def _call(self, callback: str, context_id: int | None, *args: int) -> int:
        """One call into the module, ``context_id`` current and passed first (None: neither, for
        _initialize, main, _start); absent exports return 0. The deadline, fuel and fault
        handling are around it. One frame: this runs several times per stream."""
        export = self._exports.get(callback, _UNKNOWN)
        if export is _UNKNOWN:
            export = self._exports[callback] = self.vm.caller(callback) if self.vm.has(callback) else None
        if export is None:
            return 0
        if self._failed is not None:
            self._check_usable()
        state = self.state
        effective = state.effective
        outermost = state.depth == 0
        if outermost:
            state.callback = callback
            state.call_started = _monotonic()
            state.refused_grow = None
            if self.fuel_limit is not None:
                self.vm.set_fuel(self.fuel_limit)
            allocations = state.mem.allocations
            dispatcher = state.dispatcher
            dispatcher.depth += 1  # counts VMs running on this thread, not nested calls
        state.depth += 1
        previous = _current.vm
        _current.vm = state
        try:
            if context_id is None:
                result: int = export(*args)
            else:
                state.effective = context_id
                result = export(context_id, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            fault = self._fault(callback, exc)
            if fault is None:
                return 0
            raise fault from None
        finally:
            _current.vm = previous
            state.effective = effective
            state.depth -= 1
            if outermost:
                dispatcher.depth -= 1
                if state.track_allocations:
                    counts = state.host_allocations_by_callback
                    counts[callback] = counts.get(callback, 0) + state.mem.allocations - allocations
        if outermost and dispatcher.steps == 0 and dispatcher.depth == 0 and dispatcher.posted:
            dispatcher.drain()  # a call the test made directly: posted work runs now
        return result

    def _invoke(self, name: str, *args: int) -> int:
        """Call a start function (_initialize, main, _start): no context."""
        return self._call(name, None, *args)

    def _fault(self, callback: str, exc: Exception) -> PluginError | None:
        """Name what went wrong in ``callback``; None when it was not a failure (exit 0 in _start)."""
        state = self.state
        pending, state.pending_error = state.pending_error, None
        backtrace = _backtrace(exc)
        error: PluginError
        if isinstance(pending, KeyboardInterrupt):
            self._failed = PluginError(f"{self.source}: interrupted in {callback}")
            state.failed = True
            raise KeyboardInterrupt
        if isinstance(pending, LifecycleError):
            error = pending
        elif isinstance(pending, DeadlineExceeded):
            error = DeadlineExceeded(callback, pending.deadline, state.logs, backtrace)
        elif isinstance(pending, ResourceLimitError):
            error = ResourceLimitError(callback, pending.reason, state.logs, backtrace)
        elif isinstance(pending, PluginError):
            error = pending
        elif pending is not None:
            error = PluginTrap(
                callback,
                f"a host function failed: {type(pending).__name__}: {pending}",
                state.logs,
                backtrace,
            )
        else:
            error = self._trap(callback, exc, backtrace)
        self._failed = error
        state.failed = True
        return error

    def _trap(self, callback: str, exc: Exception, backtrace: list[str]) -> PluginTrap:
        code = getattr(exc, "trap_code", None)
        reason = _trap_reason(getattr(exc, "message", None) or str(exc))
        logs = self.state.logs
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return ResourceLimitError(
                callback, f"fuel cap of {self.fuel_limit} exhausted ({reason})", logs, backtrace
            )
        refused = self.state.refused_grow
        if refused is not None:
            size, requested, _ = refused
            return ResourceLimitError(
                callback,
                f"memory cap of {self.memory_limit} bytes reached: memory.grow from {size} to"
                f" {requested} bytes was refused, then the module trapped ({reason})",
                logs,
                backtrace,
            )
        return PluginTrap(callback, reason, logs, backtrace)

    def __repr__(self) -> str:
        return f"Plugin({self.source!r}, root_id={self.root_id!r})"


def _backtrace(exc: Exception) -> list[str]:
    """The wasm frames of a trap, innermost first, named when the module has a name section."""
    frames = getattr(exc, "frames", None)
    if not frames:
        return []
    out = []
    for frame in frames:
        name = frame.func_name or f"<function {frame.func_index}>"
        out.append(f"{name} (function {frame.func_index}, offset {frame.func_offset:#x})")
    return out


def _trap_reason(message: str) -> str:
    """wasmtime's message is a backtrace then "Caused by:"; the cause is what a reader needs."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if "Caused by:" in lines:
        cause = lines[lines.index("Caused by:") + 1 :]
        if cause:
            return "; ".join(cause)
    return lines[0] if lines else "unknown trap"
