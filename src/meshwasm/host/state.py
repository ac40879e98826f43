"""The VM's state in one place, and the small interface host functions use to reach it.

:class:`VmState` holds everything one plugin instance (one Envoy VM with its root
context) has: its contexts and HTTP streams, the callout in flight, properties,
metrics, timers, shared data and queues, logs, the host-side memory budget. The
host functions (meshwasm.host.functions.*) read and change it through its public
methods only; the test API (:class:`~meshwasm.host.plugin.Plugin`) drives it.
Calls back into the module go through a :class:`CallbackRunner` (the Plugin), so
this module knows nothing about wasmtime.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from meshwasm.host.abi import BufferType, LogLevel, MapType, MetricType, Status
from meshwasm.host.errors import LifecycleError, ResourceLimitError
from meshwasm.host.expressions import ExpressionTable
from meshwasm.host.headers import HeaderMap, HeadersLike
from meshwasm.host.memory import GuestMemory
from meshwasm.host.properties import Attributes, encode_property, property_path
from meshwasm.host.shared import SharedData, SharedQueue, SharedQueues

if TYPE_CHECKING:
    from meshwasm.host.foreign import Declaration
    from meshwasm.host.stream import HttpStream
    from meshwasm.host.tcp import TcpStream

ROOT_CONTEXT_ID = 1
DEFAULT_MEMORY_LIMIT = 1 << 30  # linear memory plus what the host holds for the module
MAX_POSTED_PER_STEP = 10_000  # on_queue_ready deliveries one test step may cause
MAX_LOG_BYTES = 64 << 20  # past this the oldest log entries are dropped (counted in logs_dropped)
MAX_SAMPLES = 100_000  # histogram samples kept per metric


@dataclass(frozen=True)
class LogEntry:
    """One log line as Envoy logs it. ``written`` is set for what the module wrote to stdout or
    stderr: the exact text of that fd_write (Envoy logs each write, less one trailing newline)."""

    level: LogLevel
    message: str
    written: str | None = None

    @property
    def level_name(self) -> str:
        return self.level.name.lower()

    def __str__(self) -> str:
        return f"[{self.level_name}] {self.message}"


@dataclass(frozen=True)
class Violation:
    """A host call Envoy would refuse in the state it was made (recorded; raised in strict mode)."""

    call: str
    status: Status
    why: str


@dataclass
class Metric:
    name: str
    type: MetricType
    value: int = 0
    samples: list[int] = field(default_factory=list)


@dataclass
class CalloutResponse:
    """What an answered HTTP callout hands the plugin (maps 6 and 7, buffer 4)."""

    headers: HeaderMap
    body: bytes
    trailers: HeaderMap


HttpCallResponse = CalloutResponse  # the name before the gRPC callouts


class CallbackRunner(Protocol):
    """Calls into the module (implemented by Plugin): ``proxy_on_*`` with a context current."""

    def call(self, callback: str, context_id: int, *args: int) -> int: ...

    def exports(self, name: str) -> bool: ...


class Dispatcher:
    """Envoy posts some work to the worker's event loop (on_queue_ready): here it runs once
    no VM of this thread is executing, iteratively, at most ``MAX_POSTED_PER_STEP`` per step."""

    _local = threading.local()

    @classmethod
    def current(cls) -> Dispatcher:
        found: Dispatcher | None = getattr(cls._local, "dispatcher", None)
        if found is None:
            found = cls._local.dispatcher = cls()
        return found

    def __init__(self) -> None:
        self.depth = 0  # calls into any VM in progress on this thread
        self.steps = 0  # test-level operations in progress (the stream has not yet seen the action)
        self._posted: deque[tuple[VmState, Callable[[], None]]] = deque()
        self._draining = False
        self._step = _Step(self)

    def step(self) -> _Step:
        """One operation of the test (send headers, answer a callout, tick...): posted work runs
        when it is over, as Envoy runs it once the current event is handled."""
        return self._step

    def end_step(self) -> None:
        """The test's operation is over (the end of ``with step():``): posted work runs now."""
        self.steps -= 1
        if self.steps == 0 and self._posted:
            self.drain()

    def post(self, owner: VmState, action: Callable[[], None]) -> None:
        self._posted.append((owner, action))

    @property
    def posted(self) -> bool:
        return bool(self._posted)

    def drain(self) -> None:
        if self._draining or self.depth or self.steps:
            return
        self._draining = True
        delivered = 0
        try:
            while self._posted:
                owner, action = self._posted.popleft()
                if owner.failed:
                    continue
                delivered += 1
                if delivered > MAX_POSTED_PER_STEP:
                    self._posted.clear()
                    raise ResourceLimitError(
                        "proxy_on_queue_ready",
                        f"more than {MAX_POSTED_PER_STEP} queue deliveries in one step of the test:"
                        " the plugins keep enqueueing in on_queue_ready (a shared-queue ping-pong)",
                        owner.logs,
                    )
                action()
        finally:
            self._draining = False


class _Step:
    __slots__ = ("_dispatcher",)

    def __init__(self, dispatcher: Dispatcher):
        self._dispatcher = dispatcher

    def __enter__(self) -> None:
        self._dispatcher.steps += 1

    def __exit__(self, *exc: object) -> None:
        self._dispatcher.end_step()


_MAP_TYPES = tuple(MapType)  # by value: 0, 1, ... (checked at import)
assert all(kind == value for value, kind in enumerate(_MAP_TYPES))

# Buffers that exist only while a stream or connection callback runs.
_LIVE_BUFFERS = frozenset(
    {
        BufferType.HTTP_REQUEST_BODY,
        BufferType.HTTP_RESPONSE_BODY,
        BufferType.DOWNSTREAM_DATA,
        BufferType.UPSTREAM_DATA,
    }
)


class VmState:
    """One plugin instance's state. Host functions get it as their first argument."""

    def __init__(
        self,
        *,
        source: str,
        abi: str,
        root_id: str = "",
        vm_id: str = "",
        name: str = "",
        strict: bool = False,
        log_level: LogLevel = LogLevel.TRACE,
        plugin_configuration: bytes = b"",
        vm_configuration: bytes = b"",
        env: Mapping[str, str] | None = None,
        shared_data: SharedData | None = None,
        shared_queues: SharedQueues | None = None,
        clusters: Iterable[str] | None = None,
        foreign_functions: Mapping[str, Callable[[bytes], bytes]] | None = None,
        filter_state_keys: Iterable[str] | None = None,
        properties: Mapping[tuple[str, ...], bytes] | None = None,
        attributes: Attributes | None = None,
        memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        self.source = source
        self.abi = abi
        self.root_id = root_id
        self.vm_id = vm_id
        self.name = name or root_id
        self.strict = strict
        self.log_level = log_level
        self.plugin_configuration = plugin_configuration
        self.vm_configuration = vm_configuration
        self.env = dict(env or {})
        self.shared_data = shared_data if shared_data is not None else SharedData()
        self.shared_queues = shared_queues if shared_queues is not None else SharedQueues()
        self.clusters = set(clusters) if clusters is not None else None
        self.foreign_functions = dict(foreign_functions or {})
        self.filter_state_keys = frozenset(filter_state_keys or ())
        self.declarations: dict[int, dict[str, Declaration]] = {}  # declare_property, per context
        self.expressions = ExpressionTable()  # expr_create's, on the root context
        self.properties: dict[tuple[str, ...], bytes] = dict(properties or {})
        self.attributes = attributes or Attributes()
        self.memory_limit = memory_limit
        self.mem = GuestMemory()  # attached once the instance exists
        self.runner: CallbackRunner | None = None
        self.failed = False
        # logs
        self.logs: list[LogEntry] = []
        self.logs_dropped = 0
        self._log_bytes = 0
        self.violations: list[Violation] = []
        # contexts
        self.streams: dict[int, HttpStream] = {}
        self.connections: dict[int, TcpStream] = {}  # TCP contexts (network filter)
        self.effective = ROOT_CONTEXT_ID
        self._context_ids = itertools.count(ROOT_CONTEXT_ID + 1)
        self.configuring = False  # in on_configure: the plugin configuration is readable
        self.done_called = False
        # timers and the clock
        self.tick_period_ms = 0
        self.now_ns: int | None = None  # set to freeze the clock the plugin reads
        # callouts: Envoy numbers them per VM, the type in the low two bits
        self.pending_http_calls: list[Any] = []
        self.pending_grpc_calls: list[Any] = []
        self._http_ids = itertools.count(4, 4)
        self._grpc_call_ids = itertools.count(5, 4)
        self._grpc_stream_ids = itertools.count(6, 4)
        self.callout_response: CalloutResponse | None = None
        self.in_callout_response = False
        self.grpc_receive: tuple[bytes | None, HeaderMap | None, HeaderMap | None] | None = None
        self.status: tuple[int, bytes] = (0, b"")
        # metrics: Envoy numbers each type on its own, the type in the low two bits
        self._metrics: dict[tuple[MetricType, str], Metric] = {}
        self._metric_ids: dict[int, Metric] = {}
        self._next_metric_id = {t: int(t) for t in MetricType}
        self.http_responder: Callable[[Any], Any] | None = None
        self.next_tick_ns: int | None = None
        self._wall_origin = time.time_ns()
        self._monotonic_origin = time.monotonic_ns()
        self.shutting_down = False
        self.starting = False  # in _initialize / main / _start: Envoy restricts the host calls
        # the host-side memory budget
        self.host_bytes = 0
        # calls in progress (the runner keeps these): the deadline counts from call_started
        self.depth = 0
        self.callback = ""
        self.call_started = 0.0
        self.pending_error: BaseException | None = None
        # linear memory growth, as the host's memory creator reports it
        self.grown_by_callback: dict[str, int] = {}
        self.track_allocations = False  # count the host's allocations in the module per callback
        self.host_allocations_by_callback: dict[str, int] = {}
        self.refused_grow: tuple[int, int, str] | None = None  # (size, requested, callback)
        self.dispatcher = Dispatcher.current()

    # -- logs -----------------------------------------------------------------------------------
    def log(self, level: LogLevel, message: str, *, written: str | None = None) -> None:
        self.logs.append(LogEntry(level, message, written))
        self._log_bytes += len(message)
        if self._log_bytes > MAX_LOG_BYTES:
            # Bounded by design: a plugin logging in a loop (or a long soak) cannot fill the host.
            half = len(self.logs) // 2
            self._log_bytes -= sum(len(entry.message) for entry in self.logs[:half])
            del self.logs[:half]
            self.logs_dropped += half

    def write_stdio(self, fd: int, data: bytes) -> None:
        """What fd_write sends to fd 1 (info) or 2 (error): one log entry per call, without one
        trailing newline, as Envoy logs it (so a Go panic, written a few bytes at a time, is in
        pieces here as there)."""
        if data:
            text = data.decode("utf-8", errors="replace")
            message = text[:-1] if text.endswith("\n") else text
            self.log(LogLevel.INFO if fd == 1 else LogLevel.ERROR, message, written=text)

    def refuse(self, call: str, status: Status, why: str) -> int:
        """Envoy's answer to a call made in a state where it refuses it: recorded, raised in strict mode."""
        self.violations.append(Violation(call, status, why))
        if self.strict:
            raise LifecycleError(call, status.name, why)
        return status

    # -- the memory budget ----------------------------------------------------------------------------
    def budget_left(self) -> int:
        """Bytes the host may still materialise for the module (``memory_limit`` covers the
        module's linear memory plus everything the host holds on its behalf)."""
        if self.memory_limit is None:
            return DEFAULT_MEMORY_LIMIT * 4
        linear = self.mem.size
        return self.memory_limit - linear - self.host_bytes

    def charge(self, size: int, what: str, callback: str) -> None:
        """Refuse (ResourceLimitError) a host-side allocation of ``size`` bytes that would take the
        module past its memory limit; called before the bytes are copied."""
        if size > self.budget_left():
            limit = self.memory_limit if self.memory_limit is not None else DEFAULT_MEMORY_LIMIT * 4
            raise ResourceLimitError(
                callback,
                f"memory cap of {limit} bytes reached: {what} needs {size} bytes of host memory"
                f" (linear memory {self.mem.size} bytes,"
                f" host-held {self.host_bytes} bytes)",
                self.logs,
            )

    def memory_grew(self, old: int, new: int) -> None:
        self.mem.resized(new)
        callback = self.callback or "the module's start"
        self.grown_by_callback[callback] = self.grown_by_callback.get(callback, 0) + new - old

    def memory_refused(self, old: int, requested: int) -> None:
        self.refused_grow = (old, requested, self.callback or "the module's start")

    # -- contexts -------------------------------------------------------------------------------------
    def new_context_id(self) -> int:
        return next(self._context_ids)

    def has_context(self, context_id: int) -> bool:
        return context_id == ROOT_CONTEXT_ID or context_id in self.streams or context_id in self.connections

    def stream(self) -> HttpStream | None:
        """The HTTP stream whose context is current (None on the root context)."""
        return self.streams.get(self.effective)

    def connection(self) -> TcpStream | None:
        """The TCP connection whose context is current (None unless a network-filter context)."""
        return self.connections.get(self.effective)

    def call(self, callback: str, context_id: int, *args: int) -> int:
        assert self.runner is not None
        return self.runner.call(callback, context_id, *args)

    # -- header maps and buffers ----------------------------------------------------------------------
    def header_map(self, call: str, map_type: int, *, write: bool) -> HeaderMap | int:
        """The header map a call may touch now, or the status Envoy answers instead."""
        if map_type > MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return Status.BAD_ARGUMENT
        kind = _MAP_TYPES[map_type]  # MapType(map_type) without the enum's lookup machinery
        if map_type > MapType.RESPONSE_TRAILERS:
            return self._received_map(call, kind, write=write)
        stream = self.stream()
        if stream is None:
            return self.refuse(
                call, Status.BAD_ARGUMENT, f"{kind.name} accessed outside an HTTP stream context"
            )
        found = stream.header_map(kind, write=write)
        if found is None:
            verb = "written" if write else "read"
            return self.refuse(
                call,
                Status.BAD_ARGUMENT,
                f"{kind.name} cannot be {verb} now (stream {stream.id} is in {stream.phase});"
                " Envoy exposes a header map only in its own callback (or while that direction is paused)",
            )
        return found

    def _received_map(self, call: str, kind: MapType, *, write: bool) -> HeaderMap | int:
        """A callout's response map or a gRPC call's metadata (not a stream's own maps)."""
        if kind in (MapType.HTTP_CALL_RESPONSE_HEADERS, MapType.HTTP_CALL_RESPONSE_TRAILERS):
            if write:
                return Status.BAD_ARGUMENT  # Envoy: the callout's maps are read-only
            response = self.callout_response
            if response is None and self.in_callout_response:
                return Status.BAD_ARGUMENT  # a failed callout: Envoy has no response maps
            if response is None:
                return self.refuse(
                    call, Status.BAD_ARGUMENT, f"{kind.name} exists only in on_http_call_response"
                )
            return response.headers if kind == MapType.HTTP_CALL_RESPONSE_HEADERS else response.trailers
        if kind in (MapType.GRPC_RECEIVE_INITIAL_METADATA, MapType.GRPC_RECEIVE_TRAILING_METADATA):
            received = self.grpc_receive
            found = None
            if received is not None and not write:
                found = received[1] if kind == MapType.GRPC_RECEIVE_INITIAL_METADATA else received[2]
            if found is None:
                return self.refuse(
                    call, Status.BAD_ARGUMENT, f"{kind.name} exists only in its on_grpc_receive_* callback"
                )
            return found
        return Status.BAD_ARGUMENT  # not reached: every MapType above RESPONSE_TRAILERS is handled

    def buffer(self, call: str, buffer_type: int, *, write: bool = False, record: bool = True) -> bytes | int:
        """The bytes of a buffer the plugin may read (or write) now, or Envoy's status
        (``record=False``: a look from the test, not the plugin's call: no violation recorded)."""
        refuse = self.refuse if record else _no_record
        if buffer_type > BufferType.CALL_DATA:
            return Status.BAD_ARGUMENT
        kind = BufferType(buffer_type)
        if kind in _LIVE_BUFFERS:
            data = self._live_buffer(kind)
            if data is not None:
                return data
            # Envoy keeps a wrapper around a missing body or connection buffer: reads see it empty
            # (Ok), writes get BadArgument (checked against Envoy).
            if write:
                return refuse(
                    call, Status.BAD_ARGUMENT, f"{kind.name} cannot be written outside its callback"
                )
            refuse(call, Status.OK, f"{kind.name} read outside its callback: Envoy hands over nothing")
            return b"" if record else Status.NOT_FOUND
        if kind == BufferType.HTTP_CALL_RESPONSE_BODY:
            if self.callout_response is not None:
                return self.callout_response.body
            if self.in_callout_response:
                return Status.NOT_FOUND  # a failed callout has no body
        elif kind == BufferType.GRPC_RECEIVE_BUFFER:
            if self.grpc_receive is not None and self.grpc_receive[0] is not None:
                return self.grpc_receive[0]
        elif kind == BufferType.VM_CONFIGURATION:
            return self.vm_configuration
        elif kind == BufferType.PLUGIN_CONFIGURATION and self.configuring:
            return self.plugin_configuration
        return refuse(call, Status.NOT_FOUND, f"{kind.name} is not available in this callback")

    def _live_buffer(self, kind: BufferType) -> bytes | None:
        """A stream's body or a connection's data as the current callback sees it, or None."""
        if kind in (BufferType.HTTP_REQUEST_BODY, BufferType.HTTP_RESPONSE_BODY):
            stream = self.stream()
            if stream is None:
                return None
            return stream.body("request" if kind == BufferType.HTTP_REQUEST_BODY else "response")
        connection = self.connection()
        if connection is None:
            return None
        return connection.data("downstream" if kind == BufferType.DOWNSTREAM_DATA else "upstream")

    # -- properties -----------------------------------------------------------------------------------

    def get_property(self, path: tuple[str, ...]) -> bytes | None:
        stream: HttpStream | TcpStream | None = self.stream() or self.connection()
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
        return self.attributes.lookup(path, stream)

    def set_property(self, path: tuple[str, ...], value: bytes) -> Status:
        stream: HttpStream | TcpStream | None = self.stream() or self.connection()
        if stream is None:
            return Status.NOT_FOUND  # Envoy: no stream info on the root context
        previous = stream.properties.get(path)
        # Envoy follows what the root context declared (declare_property): readonly is set once.
        declared = self.declarations.get(ROOT_CONTEXT_ID, {}).get("\0".join(path))
        if declared is not None and declared.readonly and previous is not None:
            return Status.BAD_ARGUMENT
        self.host_bytes += len(value) - (len(previous) if previous is not None else 0)
        stream.properties[path] = value
        return Status.OK

    def attribute_value(self, name: str) -> Any:
        """A top-level identifier as Envoy's CEL activation resolves it for the current context
        (None: not defined): the attributes, the plugin's names, properties the plugin set and
        properties the test gave (paths merged into their attribute)."""
        stream: HttpStream | TcpStream | None = self.stream() or self.connection()
        if stream is not None and (name,) in stream.properties:
            set_value = stream.properties[(name,)]
            declared = self.declarations.get(ROOT_CONTEXT_ID, {}).get(name)
            return (
                set_value.decode(errors="replace")
                if declared is not None and declared.type == 1
                else set_value
            )
        builtins = {"plugin_name": self.name, "plugin_root_id": self.root_id, "plugin_vm_id": self.vm_id}
        if name in builtins:
            return builtins[name]
        value: Any = self.attributes.top_level(name, stream)
        for path, given in self.properties.items():
            if path[0] != name:
                continue
            if len(path) == 1:
                value = given
                continue
            value = dict(value) if isinstance(value, Mapping) else {}
            node = value
            for part in path[1:-1]:
                child = node.get(part)
                node[part] = dict(child) if isinstance(child, Mapping) else {}
                node = node[part]
            node[path[-1]] = given
        return value

    def property_names(self) -> list[str]:
        """Identifiers the plugin or the test defined beyond Envoy's attributes."""
        stream: HttpStream | TcpStream | None = self.stream() or self.connection()
        names = [path[0] for path in self.properties]
        if stream is not None:
            names += [path[0] for path in stream.properties if len(path) == 1]
        return names

    # -- metrics --------------------------------------------------------------------------------------
    def define_metric(self, metric_type: MetricType, name: str) -> int:
        """A new id on every call (as Envoy), all ids of one (type, name) sharing one value."""
        metric = self._metrics.get((metric_type, name))
        if metric is None:
            metric = self._metrics[(metric_type, name)] = Metric(name, metric_type)
        self._next_metric_id[metric_type] += 4
        metric_id = self._next_metric_id[metric_type]
        self._metric_ids[metric_id] = metric
        return metric_id

    def metric(self, metric_id: int) -> Metric | None:
        return self._metric_ids.get(metric_id)

    @property
    def metrics(self) -> dict[str, int | list[int]]:
        return {
            metric.name: (list(metric.samples) if metric.type == MetricType.HISTOGRAM else metric.value)
            for metric in self._metrics.values()
        }

    def record_sample(self, metric: Metric, value: int) -> None:
        metric.samples.append(value)
        if len(metric.samples) > MAX_SAMPLES:
            del metric.samples[: len(metric.samples) // 2]  # bounded: the newest half is kept

    # -- time -----------------------------------------------------------------------------------------
    def now(self) -> int:
        """The wall clock the plugin reads (the test may freeze and advance it: ``now_ns``)."""
        return self.now_ns if self.now_ns is not None else time.time_ns()

    def monotonic_ns(self) -> int:
        if self.now_ns is None:
            return time.monotonic_ns()
        return self._monotonic_origin + (self.now_ns - self._wall_origin)

    def set_tick_period(self, period_ms: int) -> None:
        """proxy_set_tick_period_milliseconds: Envoy (re)arms the root context's timer."""
        self.tick_period_ms = period_ms
        self.next_tick_ns = self.now() + period_ms * 1_000_000 if period_ms else None

    # -- callouts -------------------------------------------------------------------------------------
    def next_http_call_id(self) -> int:
        return next(self._http_ids)

    def next_grpc_id(self, *, stream: bool) -> int:
        return next(self._grpc_stream_ids if stream else self._grpc_call_ids)

    def cluster_known(self, cluster: str) -> bool:
        return self.clusters is None or cluster in self.clusters

    def add_http_call(self, pending: Any) -> None:
        self.pending_http_calls.append(pending)
        responder = self.http_responder
        if responder is not None:
            # Envoy answers after the dispatching callback returns, never inside it.
            self.dispatcher.post(self, lambda: _answer(pending, responder))

    # -- shared queues --------------------------------------------------------------------------------
    def queue_ready(self, token: int) -> None:
        """Deliver proxy_on_queue_ready to this VM's root context (this VM registered the queue)."""
        self.call("proxy_on_queue_ready", ROOT_CONTEXT_ID, token)

    def enqueue(self, queue: SharedQueue, data: bytes) -> None:
        queue.items.append(data)
        queue.bytes += len(data)
        owner = queue.owner
        if owner is not None:
            # Envoy posts on_queue_ready to the owner's event loop: after this callback returns.
            self.dispatcher.post(self, lambda: owner.queue_ready(queue.token))

    def dequeue(self, queue: SharedQueue) -> bytes | None:
        if not queue.items:
            return None
        data = queue.items.popleft()
        queue.bytes -= len(data)
        return data


def _no_record(call: str, status: Status, why: str) -> int:
    return status


def _answer(pending: Any, responder: Callable[[Any], Any]) -> None:
    if not pending.is_pending:
        return  # answered meanwhile
    response = responder(pending)
    if response is None:
        pending.fail()
    else:
        pending.respond(response.status, response.headers, response.body, response.trailers)


def make_properties(
    properties: Mapping[str | tuple[str, ...], Any] | None,
) -> dict[tuple[str, ...], bytes]:
    return {property_path(key): encode_property(value) for key, value in (properties or {}).items()}


def headers_from(value: HeadersLike) -> HeaderMap:
    return value if isinstance(value, HeaderMap) else HeaderMap(value)
