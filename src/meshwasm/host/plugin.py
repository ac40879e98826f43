"""The test API: load a compiled plugin, drive HTTP streams through it, look at what it did.

    plugin = Plugin.load("build/add-header.wasm", config={"header": "x-a", "value": "1"})
    stream = plugin.http_stream()
    assert stream.send_request_headers({":path": "/"}) == Action.CONTINUE
    stream.send_response_headers({":status": "200"})
    assert stream.response_headers["x-a"] == "1"
    stream.complete()

Start-up and every callback follow Envoy (proxy-wasm-cpp-host): see
docs/host.md for the order of calls and the lifecycle rules enforced.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

from meshwasm.host.abi import BufferType, LogLevel, MetricType, Status
from meshwasm.host.errors import LifecycleError, PluginError, PluginStartError, PluginTrap, ResourceLimitError
from meshwasm.host.hostcalls import HostCalls, ProcExit
from meshwasm.host.properties import PropertyValue, encode_property, property_path, stream_attribute
from meshwasm.host.runtime import LoadedModule, WasmVM, load_module, load_path
from meshwasm.host.state import HttpCallResponse, LogEntry, Metric, PendingHttpCall, SharedData, SharedQueues
from meshwasm.host.stream import HttpStream

ROOT_CONTEXT_ID = 1
_PAGE = 65536


@dataclass(frozen=True)
class Violation:
    """A host call Envoy would refuse in the state it was made (recorded; raised in strict mode)."""

    call: str
    status: Status
    why: str


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
    :attr:`logs`, :attr:`metrics`, :attr:`pending_http_calls`, :attr:`shared_data`,
    :attr:`violations`.
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
        memory_limit: int | None = None,
        fuel_limit: int | None = None,
    ):
        self.source = loaded.source
        self.info = loaded.info
        self.root_id = root_id
        self.vm_id = vm_id
        self.name = name or root_id
        self.strict = strict
        self.log_level = LogLevel.parse(log_level)
        self.plugin_configuration = _config_bytes(config)
        self.vm_configuration = _config_bytes(vm_config)
        self.shared_data = shared_data if shared_data is not None else SharedData()
        self.shared_queues = shared_queues if shared_queues is not None else SharedQueues()
        self.clusters = set(clusters) if clusters is not None else None
        self.foreign_functions = dict(foreign_functions or {})
        self.memory_limit = memory_limit
        self.fuel_limit = fuel_limit
        self.logs: list[LogEntry] = []
        self.violations: list[Violation] = []
        self.pending_http_calls: list[PendingHttpCall] = []
        self.tick_period_ms = 0
        self.now_ns: int | None = None  # set to freeze proxy_get_current_time_nanoseconds
        self.properties: dict[tuple[str, ...], bytes] = {
            property_path(key): encode_property(value) for key, value in (properties or {}).items()
        }
        self._streams: dict[int, HttpStream] = {}
        self._context_ids = itertools.count(ROOT_CONTEXT_ID + 1)
        self._tokens = itertools.count(1)
        self._effective = ROOT_CONTEXT_ID
        self._configuring = False
        self._http_call_response: HttpCallResponse | None = None
        self._in_http_call_response = False
        self._metrics_by_id: dict[int, Metric] = {}
        self._metric_ids: dict[tuple[MetricType, str], int] = {}
        self._deferred: list[Callable[[], None]] = []
        self._depth = 0
        self._done_called = False
        self._stdio: dict[int, bytes] = {1: b"", 2: b""}
        self._failed: PluginError | None = None
        self._closed = False
        self._hostcalls = HostCalls(self)
        self.vm = WasmVM(loaded, self._hostcalls, env=dict(env or {}), memory_limit=memory_limit)
        self._param_counts: dict[str, int] = {}

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
        ``shared_queues``, ``clusters``, ``foreign_functions``, ``memory_limit`` (bytes),
        ``fuel_limit`` (instructions per callback).
        """
        consume_fuel = options.get("fuel_limit") is not None
        if isinstance(path, bytes | bytearray):
            loaded = load_module(bytes(path), source="<module bytes>", consume_fuel=consume_fuel)
        else:
            loaded = load_path(Path(path), consume_fuel=consume_fuel)
        plugin = cls(loaded, config=config, vm_config=vm_config, properties=properties, **options)
        plugin._start()
        return plugin

    def _start(self) -> None:
        exports = self.info.exports
        if "_initialize" in exports:
            self._invoke("_initialize")
            if "main" in exports and exports["main"] == "func":
                self._invoke("main", *([0] * self._params("main")))
        elif "_start" in exports:
            self._invoke("_start")
        self._call("proxy_on_context_create", ROOT_CONTEXT_ID, 0)
        started = self._call("proxy_on_vm_start", ROOT_CONTEXT_ID, len(self.vm_configuration))
        if self.vm.has("proxy_on_vm_start") and not started:
            raise PluginStartError(
                f"{self.source}: the plugin refused to start: on_vm_start returned false", self.logs
            )
        if self.vm.has("proxy_on_configure"):
            self._configuring = True
            try:
                configured = self._call("proxy_on_configure", ROOT_CONTEXT_ID, len(self.plugin_configuration))
            finally:
                self._configuring = False
            if not configured:
                raise PluginStartError(
                    f"{self.source}: the plugin refused its configuration: on_configure returned false",
                    self.logs,
                )

    # -- the test API -------------------------------------------------------------------------------------
    def http_stream(self) -> HttpStream:
        """A new HTTP context (proxy_on_context_create(id, root))."""
        stream = HttpStream(self, next(self._context_ids))
        self._streams[stream.id] = stream
        self._call("proxy_on_context_create", stream.id, ROOT_CONTEXT_ID)
        return stream

    def tick(self) -> None:
        """One timer tick for the root context (proxy_on_tick)."""
        self._call("proxy_on_tick", ROOT_CONTEXT_ID)

    @property
    def metrics(self) -> dict[str, int | list[int]]:
        """Metric name -> value (counters, gauges) or the recorded samples (histograms)."""
        return {
            metric.name: (metric.samples if metric.type == MetricType.HISTOGRAM else metric.value)
            for metric in self._metrics_by_id.values()
        }

    def logs_at(self, level: LogLevel | str) -> list[str]:
        wanted = LogLevel.parse(level)
        return [entry.message for entry in self.logs if entry.level == wanted]

    def configure(self, config: Any) -> bool:
        """Send a new plugin configuration (proxy_on_configure), as an xDS update does."""
        self.plugin_configuration = _config_bytes(config)
        self._configuring = True
        try:
            return bool(self._call("proxy_on_configure", ROOT_CONTEXT_ID, len(self.plugin_configuration)))
        finally:
            self._configuring = False

    def close(self) -> None:
        """Tear the root context down (on_done, on_delete) and release the instance."""
        if self._closed:
            return
        self._closed = True
        if self._failed is None:
            for stream in list(self._streams.values()):
                stream.complete()
            self._call("proxy_on_done", ROOT_CONTEXT_ID)
            self._call("proxy_on_delete", ROOT_CONTEXT_ID)

    def __enter__(self) -> Plugin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def failed(self) -> PluginError | None:
        return self._failed

    # -- calls into the module ------------------------------------------------------------------
    def _params(self, name: str) -> int:
        count = self._param_counts.get(name)
        if count is None:
            count = self._param_counts[name] = self.vm.param_count(name)
        return count

    def _invoke(self, name: str, *args: int) -> int:
        if self._failed is not None:
            raise PluginError(
                f"{self.source}: the plugin failed earlier and Envoy would not call it again: "
                f"{self._failed.message}"
            )
        if self.fuel_limit is not None:
            self.vm.set_fuel(self.fuel_limit)
        self._depth += 1
        try:
            result = self.vm.call(name, *args[: self._params(name)])
        except LifecycleError as exc:
            self._failed = exc
            raise
        except ProcExit as exc:
            self._flush_stdio()
            if name == "_start" and exc.code == 0:
                return 0
            raise self._fail(PluginTrap(name, str(exc), self.logs)) from None
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            self._flush_stdio()
            raise self._fail(self._trap(name, exc)) from None
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._flush_stdio()
        if self._depth == 0:
            self._run_deferred()
        return int(result or 0)

    def _call(self, callback: str, context_id: int, *args: int) -> int:
        """Call a proxy_on_* export with ``context_id`` current; absent exports return 0."""
        if not self.vm.has(callback):
            return 0
        previous = self._effective
        self._effective = context_id
        try:
            return self._invoke(callback, context_id, *args)
        finally:
            self._effective = previous

    def _fail(self, error: PluginError) -> PluginError:
        self._failed = error
        return error

    def _trap(self, callback: str, exc: Exception) -> PluginTrap:
        code = getattr(exc, "trap_code", None)
        reason = _trap_reason(getattr(exc, "message", None) or str(exc))
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return ResourceLimitError(
                callback, f"fuel cap of {self.fuel_limit} exhausted ({reason})", self.logs
            )
        if self.memory_limit is not None:
            size = self.vm.memory.data_len(self.vm.store)
            if size + _PAGE > self.memory_limit:
                return ResourceLimitError(
                    callback,
                    f"memory cap of {self.memory_limit} bytes reached (memory is {size} bytes; {reason})",
                    self.logs,
                )
        return PluginTrap(callback, reason, self.logs)

    def _defer(self, action: Callable[[], None]) -> None:
        self._deferred.append(action)

    def _run_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)()

    # -- state the host calls read and write ------------------------------------------------------
    def _log(self, level: LogLevel, message: str) -> None:
        self.logs.append(LogEntry(level, message))

    def _write_stdio(self, fd: int, data: bytes) -> None:
        """fd 1 logs at info, fd 2 at error, as Envoy does; whole lines, so that a Go
        panic (written a few bytes at a time) reads as lines (Envoy logs each write)."""
        pending = self._stdio[fd] + data
        *lines, rest = pending.split(b"\n")
        self._stdio[fd] = rest
        for line in lines:
            self._log(LogLevel.INFO if fd == 1 else LogLevel.ERROR, line.decode("utf-8", errors="replace"))

    def _flush_stdio(self) -> None:
        for fd in (1, 2):
            if self._stdio[fd]:
                rest, self._stdio[fd] = self._stdio[fd], b""
                self._log(
                    LogLevel.INFO if fd == 1 else LogLevel.ERROR, rest.decode("utf-8", errors="replace")
                )

    def _refuse(self, call: str, status: Status, why: str) -> int:
        self.violations.append(Violation(call, status, why))
        if self.strict:
            raise LifecycleError(call, status.name, why)
        return status

    def _has_context(self, context_id: int) -> bool:
        return context_id == ROOT_CONTEXT_ID or context_id in self._streams

    def _effective_stream(self) -> HttpStream | None:
        return self._streams.get(self._effective)

    def _buffer(self, kind: BufferType) -> bytes | None:
        if kind in (BufferType.HTTP_REQUEST_BODY, BufferType.HTTP_RESPONSE_BODY):
            stream = self._effective_stream()
            if stream is None:
                return None
            return stream._buffered["request" if kind == BufferType.HTTP_REQUEST_BODY else "response"]
        if kind == BufferType.HTTP_CALL_RESPONSE_BODY:
            return self._http_call_response.body if self._http_call_response is not None else None
        if kind == BufferType.VM_CONFIGURATION:
            return self.vm_configuration
        if kind == BufferType.PLUGIN_CONFIGURATION:
            return self.plugin_configuration if self._configuring else None
        return None

    def _set_buffer(self, kind: BufferType, data: bytes) -> None:
        stream = self._effective_stream()
        if stream is not None:
            stream._buffered["request" if kind == BufferType.HTTP_REQUEST_BODY else "response"] = data

    def _get_property(self, path: tuple[str, ...]) -> bytes | None:
        stream = self._effective_stream()
        if stream is not None and path in stream.properties:
            return stream.properties[path]
        if path in self.properties:
            return self.properties[path]
        builtins: dict[tuple[str, ...], str] = {
            ("plugin_name",): self.name,
            ("plugin_root_id",): self.root_id,
            ("plugin_vm_id",): self.vm_id,
        }
        builtin = builtins.get(path)
        if builtin is not None:
            return builtin.encode()
        if stream is not None:
            return stream_attribute(stream, path)
        return None

    def _set_property(self, path: tuple[str, ...], value: bytes) -> None:
        stream = self._effective_stream()
        (stream.properties if stream is not None else self.properties)[path] = value

    def _define_metric(self, metric_type: MetricType, name: str) -> int:
        key = (metric_type, name)
        metric_id = self._metric_ids.get(key)
        if metric_id is None:
            # Envoy keeps the type in the low bits of the id.
            metric_id = self._metric_ids[key] = (len(self._metric_ids) + 1) << 2 | int(metric_type)
            self._metrics_by_id[metric_id] = Metric(name, metric_type)
        return metric_id

    def _next_token(self) -> int:
        return next(self._tokens)

    def _deliver_http_call(self, call: PendingHttpCall, response: HttpCallResponse | None) -> None:
        if call not in self.pending_http_calls:
            raise PluginError(f"HTTP call {call.token} was already answered")
        self.pending_http_calls.remove(call)
        # On failure Envoy calls back with nothing to read: the response maps do not exist.
        self._http_call_response = response
        self._in_http_call_response = True
        try:
            self._call(
                "proxy_on_http_call_response",
                ROOT_CONTEXT_ID,
                call.token,
                len(response.headers.pairs()) if response else 0,
                len(response.body) if response else 0,
                len(response.trailers.pairs()) if response else 0,
            )
        finally:
            self._http_call_response = None
            self._in_http_call_response = False

    def _queue_ready(self, token: int) -> None:
        self._call("proxy_on_queue_ready", ROOT_CONTEXT_ID, token)

    def __repr__(self) -> str:
        return f"Plugin({self.source!r}, root_id={self.root_id!r})"


def _trap_reason(message: str) -> str:
    """wasmtime's message is a backtrace then "Caused by:"; the cause is what a reader needs."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if "Caused by:" in lines:
        cause = lines[lines.index("Caused by:") + 1 :]
        if cause:
            return "; ".join(cause)
    return lines[0] if lines else "unknown trap"
