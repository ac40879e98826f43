"""The proxy-wasm host functions and Envoy's WASI overrides, with Envoy's status codes.

Each method takes the wasmtime ``caller`` first (the store to read and write
memory through) and the raw i32/i64 arguments, and returns a :class:`Status`.
State lives in the :class:`~meshwasm.host.plugin.Plugin`; this module only
translates between the module's memory and that state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import wasmtime

from meshwasm.host.abi import (
    BufferType,
    LogLevel,
    MapType,
    MetricType,
    Status,
    StreamType,
    deserialize_pairs,
    serialize_pairs,
)
from meshwasm.host.headers import HeaderMap
from meshwasm.host.runtime import PROXY_FUNCTIONS, WASI_OVERRIDES, OutOfBounds, WasmVM
from meshwasm.host.state import Metric, PendingHttpCall

if TYPE_CHECKING:
    from meshwasm.host.plugin import Plugin
    from meshwasm.host.stream import HttpStream

WASI_ESUCCESS = 0
WASI_EBADF = 8
WASI_ENOSYS = 52

Caller = wasmtime.Caller


class ProcExit(Exception):
    """The module called WASI proc_exit; Envoy treats it as the VM failing."""

    def __init__(self, code: int):
        super().__init__(f"proc_exit({code})")
        self.code = code


def _pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """cpp-host's toPairs: a buffer too short or with impossible sizes reads as no pairs."""
    try:
        return deserialize_pairs(data)
    except ValueError:
        return []


class HostCalls:
    def __init__(self, plugin: Plugin):
        self.plugin = plugin
        self._table: dict[str, Callable[..., Any]] = {}
        for name, (params, _) in PROXY_FUNCTIONS.items():
            self._table[name] = self._guard(getattr(self, name, None) or self._unimplemented, params)
        for name, (params, _) in WASI_OVERRIDES.items():
            self._table[f"wasi_{name}"] = self._unsigned(getattr(self, f"wasi_{name}"), params)

    @property
    def vm(self) -> WasmVM:
        return self.plugin.vm

    def dispatch(self, name: str) -> Callable[..., Any]:
        return self._table[name]

    @staticmethod
    def _unsigned(func: Callable[..., Any], params: str) -> Callable[..., Any]:
        """wasmtime hands i32 arguments over signed; pointers, sizes and ids are u32."""
        if "I" in params:
            return func

        def unsigned(caller: Caller, *args: int) -> Any:
            return func(caller, *[a & 0xFFFFFFFF for a in args])

        return unsigned

    @classmethod
    def _guard(cls, func: Callable[..., int], params: str) -> Callable[..., int]:
        if "I" in params:  # (u32 id, i64 value): keep the value's sign for the metric calls

            def widen(caller: Caller, metric_id: int, value: int) -> int:
                return func(caller, metric_id & 0xFFFFFFFF, value)

            inner: Callable[..., int] = widen
        else:
            inner = cls._unsigned(func, params)

        def guarded(caller: Caller, *args: int) -> int:
            try:
                return int(inner(caller, *args))
            except OutOfBounds:
                return Status.INVALID_MEMORY_ACCESS

        return guarded

    def _unimplemented(self, caller: Caller, *args: int) -> int:
        return Status.UNIMPLEMENTED

    # -- helpers -------------------------------------------------------------------------------
    def _str(self, caller: Caller, ptr: int, size: int) -> str:
        return self.vm.read(caller, ptr, size).decode("utf-8", errors="surrogateescape")

    def _stream(self) -> HttpStream | None:
        return self.plugin._effective_stream()

    def _refuse(self, call: str, status: Status, why: str) -> int:
        return self.plugin._refuse(call, status, why)

    def _map(self, call: str, map_type: int, *, write: bool) -> HeaderMap | int:
        """The header map a call may touch now, or the status Envoy answers instead."""
        if map_type > MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return Status.BAD_ARGUMENT
        kind = MapType(map_type)
        if kind in (MapType.HTTP_CALL_RESPONSE_HEADERS, MapType.HTTP_CALL_RESPONSE_TRAILERS):
            response = self.plugin._http_call_response
            if response is None and self.plugin._in_http_call_response:
                return Status.BAD_ARGUMENT  # a failed callout: Envoy has no response maps
            if response is None:
                return self._refuse(
                    call, Status.BAD_ARGUMENT, f"{kind.name} exists only in on_http_call_response"
                )
            return response.headers if kind == MapType.HTTP_CALL_RESPONSE_HEADERS else response.trailers
        stream = self._stream()
        if stream is None:
            return self._refuse(
                call, Status.BAD_ARGUMENT, f"{kind.name} accessed outside an HTTP stream context"
            )
        found = stream._header_map(kind, write=write)
        if found is None:
            verb = "written" if write else "read"
            return self._refuse(
                call,
                Status.BAD_ARGUMENT,
                f"{kind.name} cannot be {verb} now (stream {stream.id} is in {stream.phase});"
                " Envoy exposes a header map only in its own callback (or while that direction is paused)",
            )
        return found

    # -- logging, time, ticks ---------------------------------------------------------------------
    def proxy_log(self, caller: Caller, level: int, ptr: int, size: int) -> int:
        if level > LogLevel.CRITICAL:
            return Status.BAD_ARGUMENT
        self.plugin._log(LogLevel(level), self._str(caller, ptr, size))
        return Status.OK

    def proxy_get_log_level(self, caller: Caller, ptr: int) -> int:
        self.vm.write_u32(caller, ptr, int(self.plugin.log_level))
        return Status.OK

    def proxy_get_current_time_nanoseconds(self, caller: Caller, ptr: int) -> int:
        now = self.plugin.now_ns if self.plugin.now_ns is not None else time.time_ns()
        self.vm.write_u64(caller, ptr, now)
        return Status.OK

    def proxy_set_tick_period_milliseconds(self, caller: Caller, period: int) -> int:
        self.plugin.tick_period_ms = period
        return Status.OK

    def proxy_get_status(self, caller: Caller, code_ptr: int, ptr_ptr: int, size_ptr: int) -> int:
        self.vm.write_u32(caller, code_ptr, 0)
        self.vm.copy_out(caller, b"", ptr_ptr, size_ptr)
        return Status.OK

    # -- properties -----------------------------------------------------------------------------------
    def proxy_get_property(
        self, caller: Caller, path_ptr: int, path_size: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        path = tuple(part.decode() for part in self.vm.read(caller, path_ptr, path_size).split(b"\0") if part)
        value = self.plugin._get_property(path)
        if value is None:
            return Status.NOT_FOUND
        self.vm.copy_out(caller, value, ptr_ptr, size_ptr)
        return Status.OK

    def proxy_set_property(
        self, caller: Caller, path_ptr: int, path_size: int, val_ptr: int, val_size: int
    ) -> int:
        path = tuple(part.decode() for part in self.vm.read(caller, path_ptr, path_size).split(b"\0") if part)
        self.plugin._set_property(path, self.vm.read(caller, val_ptr, val_size))
        return Status.OK

    # -- stream control -------------------------------------------------------------------------------
    def proxy_continue_stream(self, caller: Caller, stream_type: int) -> int:
        stream = self._stream()
        if stream is None:
            return self._refuse("proxy_continue_stream", Status.BAD_ARGUMENT, "no HTTP stream is current")
        if stream_type == StreamType.REQUEST:
            stream._resume("request")
        elif stream_type == StreamType.RESPONSE:
            stream._resume("response")
        else:
            return Status.BAD_ARGUMENT
        return Status.OK

    def proxy_continue_request(self, caller: Caller) -> int:
        return self.proxy_continue_stream(caller, StreamType.REQUEST)

    def proxy_continue_response(self, caller: Caller) -> int:
        return self.proxy_continue_stream(caller, StreamType.RESPONSE)

    def proxy_close_stream(self, caller: Caller, stream_type: int) -> int:
        stream = self._stream()
        if stream is None:
            return self._refuse("proxy_close_stream", Status.BAD_ARGUMENT, "no HTTP stream is current")
        stream.reset = True
        return Status.OK

    def proxy_clear_route_cache(self, caller: Caller) -> int:
        return Status.OK

    def proxy_send_local_response(
        self,
        caller: Caller,
        status: int,
        details_ptr: int,
        details_size: int,
        body_ptr: int,
        body_size: int,
        headers_ptr: int,
        headers_size: int,
        grpc_status: int,
    ) -> int:
        stream = self._stream()
        if stream is None:
            return self._refuse("proxy_send_local_response", Status.BAD_ARGUMENT, "no HTTP stream is current")
        pairs = _pairs(self.vm.read(caller, headers_ptr, headers_size))
        stream._send_local_response(
            status=status,
            body=self.vm.read(caller, body_ptr, body_size),
            headers=HeaderMap.from_raw(pairs),
            details=self._str(caller, details_ptr, details_size),
            grpc_status=grpc_status if grpc_status < 0x80000000 else grpc_status - (1 << 32),
        )
        return Status.OK

    # -- shared data and queues ----------------------------------------------------------------------
    def proxy_get_shared_data(
        self, caller: Caller, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int, cas_ptr: int
    ) -> int:
        found = self.plugin.shared_data.get(self.vm.read(caller, key_ptr, key_size))
        if found is None:
            return Status.NOT_FOUND
        value, cas = found
        self.vm.copy_out(caller, value, ptr_ptr, size_ptr)
        self.vm.write_u32(caller, cas_ptr, cas)
        return Status.OK

    def proxy_set_shared_data(
        self, caller: Caller, key_ptr: int, key_size: int, val_ptr: int, val_size: int, cas: int
    ) -> int:
        key = self.vm.read(caller, key_ptr, key_size)
        return self.plugin.shared_data.set(key, self.vm.read(caller, val_ptr, val_size), cas)

    def proxy_register_shared_queue(
        self, caller: Caller, name_ptr: int, name_size: int, token_ptr: int
    ) -> int:
        token = self.plugin.shared_queues.register(
            self.plugin.vm_id, self._str(caller, name_ptr, name_size), self.plugin
        )
        self.vm.write_u32(caller, token_ptr, token)
        return Status.OK

    def proxy_resolve_shared_queue(
        self, caller: Caller, vm_ptr: int, vm_size: int, name_ptr: int, name_size: int, token_ptr: int
    ) -> int:
        vm_id = self._str(caller, vm_ptr, vm_size) or self.plugin.vm_id
        token = self.plugin.shared_queues.resolve(vm_id, self._str(caller, name_ptr, name_size))
        if token is None:
            return Status.NOT_FOUND
        self.vm.write_u32(caller, token_ptr, token)
        return Status.OK

    def proxy_dequeue_shared_queue(self, caller: Caller, token: int, ptr_ptr: int, size_ptr: int) -> int:
        queue = self.plugin.shared_queues.get(token)
        if queue is None:
            return Status.NOT_FOUND
        if not queue.items:
            return Status.EMPTY
        self.vm.copy_out(caller, queue.items.popleft(), ptr_ptr, size_ptr)
        return Status.OK

    def proxy_enqueue_shared_queue(self, caller: Caller, token: int, data_ptr: int, data_size: int) -> int:
        queue = self.plugin.shared_queues.get(token)
        if queue is None:
            return Status.NOT_FOUND
        queue.items.append(self.vm.read(caller, data_ptr, data_size))
        owner = queue.owner
        # Envoy posts on_queue_ready to the owner's thread: it runs after this callback returns.
        self.plugin._defer(lambda: owner._queue_ready(token))
        return Status.OK

    # -- header maps -----------------------------------------------------------------------------------
    def proxy_get_header_map_value(
        self, caller: Caller, map_type: int, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        found = self._map("proxy_get_header_map_value", map_type, write=False)
        if isinstance(found, int):
            return found
        value = found.first(self._str(caller, key_ptr, key_size))
        if value is None:
            return Status.NOT_FOUND
        self.vm.copy_out(caller, value.encode("utf-8", errors="surrogateescape"), ptr_ptr, size_ptr)
        return Status.OK

    def proxy_get_header_map_pairs(self, caller: Caller, map_type: int, ptr_ptr: int, size_ptr: int) -> int:
        found = self._map("proxy_get_header_map_pairs", map_type, write=False)
        if isinstance(found, int):
            return found
        pairs = found.raw_pairs()
        # cpp-host hands an empty map over as zero bytes, not as a zero count.
        self.vm.copy_out(caller, serialize_pairs(pairs) if pairs else b"", ptr_ptr, size_ptr)
        return Status.OK

    def proxy_get_header_map_size(self, caller: Caller, map_type: int, size_ptr: int) -> int:
        found = self._map("proxy_get_header_map_size", map_type, write=False)
        if isinstance(found, int):
            return found
        self.vm.write_u32(caller, size_ptr, found.byte_size())
        return Status.OK

    def proxy_add_header_map_value(
        self, caller: Caller, map_type: int, key_ptr: int, key_size: int, val_ptr: int, val_size: int
    ) -> int:
        found = self._map("proxy_add_header_map_value", map_type, write=True)
        if isinstance(found, int):
            return found
        found.add(self._str(caller, key_ptr, key_size), self._str(caller, val_ptr, val_size))
        return Status.OK

    def proxy_replace_header_map_value(
        self, caller: Caller, map_type: int, key_ptr: int, key_size: int, val_ptr: int, val_size: int
    ) -> int:
        found = self._map("proxy_replace_header_map_value", map_type, write=True)
        if isinstance(found, int):
            return found
        found.set(self._str(caller, key_ptr, key_size), self._str(caller, val_ptr, val_size))
        return Status.OK

    def proxy_remove_header_map_value(
        self, caller: Caller, map_type: int, key_ptr: int, key_size: int
    ) -> int:
        found = self._map("proxy_remove_header_map_value", map_type, write=True)
        if isinstance(found, int):
            return found
        found.remove(self._str(caller, key_ptr, key_size))
        return Status.OK

    def proxy_set_header_map_pairs(self, caller: Caller, map_type: int, ptr: int, size: int) -> int:
        found = self._map("proxy_set_header_map_pairs", map_type, write=True)
        if isinstance(found, int):
            return found
        pairs = _pairs(self.vm.read(caller, ptr, size))
        found.clear()
        for name, value in HeaderMap.from_raw(pairs).pairs():
            found.add(name, value)
        return Status.OK

    # -- buffers -------------------------------------------------------------------------------------------
    def _buffer(self, call: str, buffer_type: int, *, write: bool = False) -> bytes | int:
        if buffer_type > BufferType.CALL_DATA:
            return Status.BAD_ARGUMENT
        kind = BufferType(buffer_type)
        data = self.plugin._buffer(kind)
        if data is not None:
            return data
        if kind == BufferType.HTTP_CALL_RESPONSE_BODY and self.plugin._in_http_call_response:
            return Status.NOT_FOUND  # a failed callout has no body
        if kind in (BufferType.HTTP_REQUEST_BODY, BufferType.HTTP_RESPONSE_BODY):
            # Envoy keeps a wrapper around a missing body: reads see it empty (Ok), writes get NotFound.
            if write:
                return self._refuse(
                    call, Status.NOT_FOUND, f"{kind.name} cannot be written outside its callback"
                )
            self._refuse(call, Status.OK, f"{kind.name} read outside its callback: Envoy hands over nothing")
            return b""
        return self._refuse(call, Status.NOT_FOUND, f"{kind.name} is not available in this callback")

    def proxy_get_buffer_status(
        self, caller: Caller, buffer_type: int, length_ptr: int, flags_ptr: int
    ) -> int:
        data = self._buffer("proxy_get_buffer_status", buffer_type)
        if isinstance(data, int):
            return data
        self.vm.write_u32(caller, length_ptr, len(data))
        self.vm.write_u32(caller, flags_ptr, 0)
        return Status.OK

    def proxy_get_buffer_bytes(
        self, caller: Caller, buffer_type: int, start: int, length: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        data = self._buffer("proxy_get_buffer_bytes", buffer_type)
        if isinstance(data, int):
            return data
        if start > len(data):
            return Status.BAD_ARGUMENT
        length = min(length, len(data) - start)
        if length <= 0:
            return Status.OK  # cpp-host: nothing to copy, nothing written, Ok
        self.vm.copy_out(caller, data[start : start + length], ptr_ptr, size_ptr)
        return Status.OK

    def proxy_set_buffer_bytes(
        self, caller: Caller, buffer_type: int, start: int, length: int, data_ptr: int, data_size: int
    ) -> int:
        current = self._buffer("proxy_set_buffer_bytes", buffer_type, write=True)
        if isinstance(current, int):
            return current
        kind = BufferType(buffer_type)
        if kind not in (BufferType.HTTP_REQUEST_BODY, BufferType.HTTP_RESPONSE_BODY):
            return Status.NOT_FOUND  # read-only buffers in Envoy
        data = self.vm.read(caller, data_ptr, data_size)
        # Envoy's Buffer::copyFrom: at 0, drain `length` bytes and prepend; at or past the end, append.
        if start == 0:
            updated = data + current[length:]
        elif start >= len(current):
            updated = current + data
        else:
            return Status.BAD_ARGUMENT
        self.plugin._set_buffer(kind, updated)
        return Status.OK

    # -- HTTP callouts ----------------------------------------------------------------------------------
    def proxy_http_call(
        self,
        caller: Caller,
        uri_ptr: int,
        uri_size: int,
        headers_ptr: int,
        headers_size: int,
        body_ptr: int,
        body_size: int,
        trailers_ptr: int,
        trailers_size: int,
        timeout_ms: int,
        token_ptr: int,
    ) -> int:
        upstream = self._str(caller, uri_ptr, uri_size)
        headers = HeaderMap.from_raw(_pairs(self.vm.read(caller, headers_ptr, headers_size)))
        trailers = HeaderMap.from_raw(_pairs(self.vm.read(caller, trailers_ptr, trailers_size)))
        clusters = self.plugin.clusters
        if clusters is not None and upstream not in clusters:
            return Status.BAD_ARGUMENT  # Envoy: no such cluster
        if any(headers.first(required) is None for required in (":method", ":path", ":authority")):
            return Status.BAD_ARGUMENT  # Envoy requires :method, :path and :authority
        token = self.plugin._next_token()
        call = PendingHttpCall(
            self.plugin,
            token,
            upstream,
            headers,
            self.vm.read(caller, body_ptr, body_size),
            trailers,
            timeout_ms,
        )
        self.plugin.pending_http_calls.append(call)
        self.vm.write_u32(caller, token_ptr, token)
        return Status.OK

    # -- metrics -----------------------------------------------------------------------------------------
    def proxy_define_metric(
        self, caller: Caller, metric_type: int, name_ptr: int, name_size: int, id_ptr: int
    ) -> int:
        if metric_type > MetricType.HISTOGRAM:
            return Status.BAD_ARGUMENT
        name = self._str(caller, name_ptr, name_size)
        metric_id = self.plugin._define_metric(MetricType(metric_type), name)
        self.vm.write_u32(caller, id_ptr, metric_id)
        return Status.OK

    def _metric(self, metric_id: int) -> Metric | None:
        return self.plugin._metrics_by_id.get(metric_id)

    def proxy_increment_metric(self, caller: Caller, metric_id: int, offset: int) -> int:
        metric = self._metric(metric_id)
        if metric is None:
            return Status.NOT_FOUND
        if metric.type == MetricType.COUNTER:
            if offset <= 0:
                return Status.BAD_ARGUMENT
            metric.value += offset
        elif metric.type == MetricType.GAUGE:
            metric.value += offset
        else:
            return Status.BAD_ARGUMENT
        return Status.OK

    def proxy_record_metric(self, caller: Caller, metric_id: int, value: int) -> int:
        metric = self._metric(metric_id)
        if metric is None:
            return Status.NOT_FOUND
        value &= 0xFFFFFFFFFFFFFFFF
        if metric.type == MetricType.COUNTER:
            metric.value += value
        elif metric.type == MetricType.GAUGE:
            metric.value = value
        else:
            metric.samples.append(value)
        return Status.OK

    def proxy_get_metric(self, caller: Caller, metric_id: int, ptr: int) -> int:
        metric = self._metric(metric_id)
        if metric is None:
            return Status.NOT_FOUND
        if metric.type == MetricType.HISTOGRAM:
            return Status.BAD_ARGUMENT
        self.vm.write_u64(caller, ptr, metric.value)
        return Status.OK

    # -- contexts, foreign functions ---------------------------------------------------------------------
    def proxy_set_effective_context(self, caller: Caller, context_id: int) -> int:
        if not self.plugin._has_context(context_id):
            return self._refuse(
                "proxy_set_effective_context", Status.BAD_ARGUMENT, f"no context {context_id}"
            )
        self.plugin._effective = context_id
        return Status.OK

    def proxy_done(self, caller: Caller) -> int:
        self.plugin._done_called = True
        return Status.OK

    def proxy_call_foreign_function(
        self,
        caller: Caller,
        name_ptr: int,
        name_size: int,
        arg_ptr: int,
        arg_size: int,
        ptr_ptr: int,
        size_ptr: int,
    ) -> int:
        function = self.plugin.foreign_functions.get(self._str(caller, name_ptr, name_size))
        if function is None:
            return Status.NOT_FOUND
        result = function(self.vm.read(caller, arg_ptr, arg_size))
        self.vm.copy_out(caller, bytes(result or b""), ptr_ptr, size_ptr)
        return Status.OK

    # -- WASI as Envoy provides it ------------------------------------------------------------------------
    def wasi_fd_write(self, caller: Caller, fd: int, iovs: int, iovs_len: int, nwritten_ptr: int) -> int:
        if fd not in (1, 2):
            return WASI_EBADF
        try:
            chunks = []
            for i in range(iovs_len):
                ptr = self.vm.read_u32(caller, iovs + 8 * i)
                size = self.vm.read_u32(caller, iovs + 8 * i + 4)
                chunks.append(self.vm.read(caller, ptr, size))
            data = b"".join(chunks)
            self.vm.write_u32(caller, nwritten_ptr, len(data))
        except OutOfBounds:
            return 21  # EFAULT
        self.plugin._write_stdio(fd, data)
        return WASI_ESUCCESS

    def wasi_fd_read(self, caller: Caller, fd: int, iovs: int, iovs_len: int, nread_ptr: int) -> int:
        return WASI_ENOSYS  # Envoy: no reading of any file

    def wasi_fd_prestat_get(self, caller: Caller, fd: int, buf: int) -> int:
        return WASI_EBADF  # Envoy has no preopened directories

    def wasi_poll_oneoff(
        self, caller: Caller, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int
    ) -> int:
        try:
            self.vm.write_u32(caller, nevents_ptr, 0)  # Envoy: nothing ever becomes ready
        except OutOfBounds:
            return 21
        return WASI_ESUCCESS

    def wasi_proc_exit(self, caller: Caller, code: int) -> None:
        self.plugin._log(LogLevel.INFO if code == 0 else LogLevel.ERROR, f"proc_exit({code})")
        raise ProcExit(code)
