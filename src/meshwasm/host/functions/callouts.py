"""Timers, the clock, HTTP and gRPC callouts, and proxy_get_status (the status of the last
callout answer). Callouts are Envoy's root-context callouts: meshwasm.host.callouts has the
objects a test answers them with."""

from __future__ import annotations

from collections.abc import Callable

from meshwasm.host import protowire
from meshwasm.host.abi import Status
from meshwasm.host.callouts import PendingGrpcCall, PendingHttpCall
from meshwasm.host.functions import host_function
from meshwasm.host.functions.headers import read_pairs
from meshwasm.host.protowire import WireError
from meshwasm.host.state import VmState


@host_function("env.proxy_set_tick_period_milliseconds")
def proxy_set_tick_period_milliseconds(vm: VmState, period: int) -> int:
    vm.set_tick_period(period)
    return Status.OK


@host_function("env.proxy_get_current_time_nanoseconds")
def proxy_get_current_time_nanoseconds(vm: VmState, ptr: int) -> int:
    vm.mem.put_u64(ptr, vm.now())
    return Status.OK


@host_function("env.proxy_get_status")
def proxy_get_status(vm: VmState, code_ptr: int, ptr_ptr: int, size_ptr: int) -> int:
    code, message = vm.status
    vm.mem.put_u32(code_ptr, code)
    vm.mem.copy_out(message, ptr_ptr, size_ptr)
    return Status.OK


@host_function("env.proxy_http_call")
def proxy_http_call(
    vm: VmState,
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
    call = "proxy_http_call"
    upstream = vm.mem.text(uri_ptr, uri_size)
    vm.charge(body_size, "an HTTP callout's body", call)
    headers = read_pairs(vm, headers_ptr, headers_size, call)
    trailers = read_pairs(vm, trailers_ptr, trailers_size, call)
    body = vm.mem.read(body_ptr, body_size)
    # Envoy's order of checks: the timeout (as a signed int), the cluster, the required headers.
    if timeout_ms >= 0x80000000:
        return Status.BAD_ARGUMENT
    if not vm.cluster_known(upstream):
        return Status.BAD_ARGUMENT
    if any(headers.first(required) is None for required in (":method", ":path", ":authority")):
        return Status.BAD_ARGUMENT
    pending = PendingHttpCall(vm, vm.next_http_call_id(), upstream, headers, body, trailers, timeout_ms)
    vm.mem.put_u32(token_ptr, pending.token)
    vm.add_http_call(pending)
    return Status.OK


def _grpc(
    vm: VmState,
    call: str,
    *,
    stream: bool,
    service: bytes,
    service_name: str,
    method: str,
    metadata: tuple[int, int],
    request: bytes = b"",
    timeout_ms: int = 0,
    token_ptr: int,
) -> int:
    # Envoy first parses the service as a serialized envoy.config.core.v3.GrpcService; bytes that
    # do not parse are a cluster name, and a cluster name Envoy does not know answers ParseFailure.
    try:
        grpc_service: protowire.Message | None = protowire.parse(service, _GRPC_SERVICE)
    except WireError:
        grpc_service = None
    initial_metadata = read_pairs(vm, *metadata, call)
    google = False  # Envoy's Google gRPC client dials the target itself: no cluster to look up
    if grpc_service is None:
        cluster = service.decode("utf-8", errors="surrogateescape")
        if not vm.cluster_known(cluster):
            return Status.PARSE_FAILURE
    else:
        # envoy_grpc names a cluster; google_grpc a target (Envoy answers Ok whatever it is).
        # Either way the call waits for the test to answer it.
        envoy_grpc, google_grpc = grpc_service.message(1), grpc_service.message(2)
        google = envoy_grpc is None and google_grpc is not None
        target = google_grpc if google else envoy_grpc
        cluster = target.text(1) if target is not None else ""
    pending = PendingGrpcCall(
        vm,
        vm.next_grpc_id(stream=stream),
        "stream" if stream else "call",
        service,
        service_name,
        method,
        initial_metadata,
        request,
        timeout_ms,
        cluster=cluster,
    )
    if grpc_service is not None and not google and not vm.cluster_known(cluster):
        # Envoy's client starts, finds no such cluster and closes the call after this callback
        # (Unavailable, "Cluster not available"); the plugin gets InternalFailure and no token.
        vm.dispatcher.post(vm, pending.unavailable)
        return Status.INTERNAL_FAILURE
    vm.mem.put_u32(token_ptr, pending.token)
    vm.pending_grpc_calls.append(pending)
    return Status.OK


# envoy.config.core.v3.GrpcService: envoy_grpc (1) {cluster_name (1), authority (2)},
# google_grpc (2) {target_uri (1)}. (Its initial_metadata is not added to the call's: unchecked.)
_GRPC_SERVICE: protowire.Schema = {1: {1: "string", 2: "string"}, 2: {1: "string"}}


@host_function("env.proxy_grpc_call")
def proxy_grpc_call(
    vm: VmState,
    service_ptr: int,
    service_size: int,
    service_name_ptr: int,
    service_name_size: int,
    method_ptr: int,
    method_size: int,
    metadata_ptr: int,
    metadata_size: int,
    request_ptr: int,
    request_size: int,
    timeout_ms: int,
    token_ptr: int,
) -> int:
    vm.charge(request_size + service_size, "a gRPC call", "proxy_grpc_call")
    return _grpc(
        vm,
        "proxy_grpc_call",
        stream=False,
        service=vm.mem.read(service_ptr, service_size),
        service_name=vm.mem.text(service_name_ptr, service_name_size),
        method=vm.mem.text(method_ptr, method_size),
        metadata=(metadata_ptr, metadata_size),
        request=vm.mem.read(request_ptr, request_size),
        timeout_ms=timeout_ms,
        token_ptr=token_ptr,
    )


@host_function("env.proxy_grpc_stream")
def proxy_grpc_stream(
    vm: VmState,
    service_ptr: int,
    service_size: int,
    service_name_ptr: int,
    service_name_size: int,
    method_ptr: int,
    method_size: int,
    metadata_ptr: int,
    metadata_size: int,
    token_ptr: int,
) -> int:
    vm.charge(service_size, "a gRPC stream", "proxy_grpc_stream")
    return _grpc(
        vm,
        "proxy_grpc_stream",
        stream=True,
        service=vm.mem.read(service_ptr, service_size),
        service_name=vm.mem.text(service_name_ptr, service_name_size),
        method=vm.mem.text(method_ptr, method_size),
        metadata=(metadata_ptr, metadata_size),
        token_ptr=token_ptr,
    )


def _grpc_kind(token: int) -> str | None:
    return {1: "call", 2: "stream"}.get(token & 3)


def _find_grpc(vm: VmState, token: int) -> PendingGrpcCall | None:
    for pending in vm.pending_grpc_calls:
        if isinstance(pending, PendingGrpcCall) and pending.token == token:
            return pending
    return None


@host_function("env.proxy_grpc_send")
def proxy_grpc_send(vm: VmState, token: int, message_ptr: int, message_size: int, end_stream: int) -> int:
    if _grpc_kind(token) != "stream":
        return Status.BAD_ARGUMENT
    pending = _find_grpc(vm, token)
    if pending is None:
        return Status.NOT_FOUND
    vm.charge(message_size, "a gRPC message", "proxy_grpc_send")
    pending.messages.append(vm.mem.read(message_ptr, message_size))
    pending.end_of_stream_sent = pending.end_of_stream_sent or bool(end_stream)
    return Status.OK


@host_function("env.proxy_grpc_close")
def proxy_grpc_close(vm: VmState, token: int) -> int:
    return _end_grpc(vm, token, PendingGrpcCall.plugin_closed)


@host_function("env.proxy_grpc_cancel")
def proxy_grpc_cancel(vm: VmState, token: int) -> int:
    return _end_grpc(vm, token, PendingGrpcCall.plugin_cancelled)


def _end_grpc(vm: VmState, token: int, end: Callable[[PendingGrpcCall], None]) -> int:
    """Close or cancel the call or stream ``token`` names: BadArgument for a token of neither
    kind, NotFound for one that is not pending (as Envoy answers)."""
    if _grpc_kind(token) is None:
        return Status.BAD_ARGUMENT
    pending = _find_grpc(vm, token)
    if pending is None:
        return Status.NOT_FOUND
    end(pending)
    return Status.OK
