"""Header maps, bodies and stream control: the proxy_*_header_map_*, proxy_*_buffer_* calls,
continue/close, local replies, and ABI 0.1.0's continue_request / continue_response /
clear_route_cache / get_configuration."""

from __future__ import annotations

import re

from meshwasm.host.abi import BufferType, MapType, Status, StreamType, deserialize_pairs, serialize_pairs
from meshwasm.host.functions import host_function
from meshwasm.host.headers import HeaderMap
from meshwasm.host.state import VmState
from meshwasm.host.surface import ABI_0_1_0

_BODIES = {BufferType.HTTP_REQUEST_BODY: "request", BufferType.HTTP_RESPONSE_BODY: "response"}
_CONNECTION_DATA = {BufferType.DOWNSTREAM_DATA: "downstream", BufferType.UPSTREAM_DATA: "upstream"}
_WHITESPACE = re.compile(r"\s")


def pairs_from(data: bytes) -> list[tuple[bytes, bytes]]:
    """cpp-host's toPairs: a buffer too short or with impossible sizes reads as no pairs."""
    try:
        return deserialize_pairs(data)
    except ValueError:
        return []


def read_pairs(vm: VmState, ptr: int, size: int, call: str) -> HeaderMap:
    vm.charge(size, "a serialized header map", call)
    return HeaderMap.from_raw(pairs_from(vm.mem.read(ptr, size)))


# -- header maps -----------------------------------------------------------------------------------


@host_function("env.proxy_get_header_map_value")
def proxy_get_header_map_value(
    vm: VmState, map_type: int, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int
) -> int:
    found = vm.header_map("proxy_get_header_map_value", map_type, write=False)
    if isinstance(found, int):
        return found
    value = found.first(vm.mem.text(key_ptr, key_size))
    if value is None:
        if vm.abi == ABI_0_1_0:
            vm.mem.copy_out(b"", ptr_ptr, size_ptr)  # ABI 0.1.0: an absent header reads as empty
            return Status.OK
        return Status.NOT_FOUND
    vm.mem.copy_out(value.encode("utf-8", errors="surrogateescape"), ptr_ptr, size_ptr)
    return Status.OK


@host_function("env.proxy_get_header_map_pairs")
def proxy_get_header_map_pairs(vm: VmState, map_type: int, ptr_ptr: int, size_ptr: int) -> int:
    found = vm.header_map("proxy_get_header_map_pairs", map_type, write=False)
    if isinstance(found, int):
        if map_type > MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return found
        # Envoy hands a map it does not have over as no pairs, with Ok (checked against Envoy).
        vm.mem.copy_out(b"", ptr_ptr, size_ptr)
        return Status.OK
    pairs = found.raw_pairs()
    # cpp-host hands an empty map over as zero bytes, not as a zero count.
    vm.mem.copy_out(serialize_pairs(pairs) if pairs else b"", ptr_ptr, size_ptr)
    return Status.OK


@host_function("env.proxy_get_header_map_size")
def proxy_get_header_map_size(vm: VmState, map_type: int, size_ptr: int) -> int:
    # Envoy answers from the writable map: none in on_log, none for callout maps.
    found = vm.header_map("proxy_get_header_map_size", map_type, write=True)
    if isinstance(found, int):
        return found
    vm.mem.put_u32(size_ptr, found.byte_size())
    return Status.OK


@host_function("env.proxy_add_header_map_value")
def proxy_add_header_map_value(
    vm: VmState, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int
) -> int:
    found = vm.header_map("proxy_add_header_map_value", map_type, write=True)
    if isinstance(found, int):
        return found
    vm.charge(key_size + value_size, "a header", "proxy_add_header_map_value")
    found.add(vm.mem.text(key_ptr, key_size), vm.mem.text(value_ptr, value_size))
    return Status.OK


@host_function("env.proxy_replace_header_map_value")
def proxy_replace_header_map_value(
    vm: VmState, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int
) -> int:
    found = vm.header_map("proxy_replace_header_map_value", map_type, write=True)
    if isinstance(found, int):
        return found
    vm.charge(key_size + value_size, "a header", "proxy_replace_header_map_value")
    found.set(vm.mem.text(key_ptr, key_size), vm.mem.text(value_ptr, value_size))
    return Status.OK


@host_function("env.proxy_remove_header_map_value")
def proxy_remove_header_map_value(vm: VmState, map_type: int, key_ptr: int, key_size: int) -> int:
    found = vm.header_map("proxy_remove_header_map_value", map_type, write=True)
    if isinstance(found, int):
        return found
    found.remove(vm.mem.text(key_ptr, key_size))
    return Status.OK


@host_function("env.proxy_set_header_map_pairs")
def proxy_set_header_map_pairs(vm: VmState, map_type: int, ptr: int, size: int) -> int:
    found = vm.header_map("proxy_set_header_map_pairs", map_type, write=True)
    if isinstance(found, int):
        return found
    replacement = read_pairs(vm, ptr, size, "proxy_set_header_map_pairs")
    found.clear()
    for name, value in replacement.pairs():
        found.add(name, value)
    return Status.OK


# -- buffers ---------------------------------------------------------------------------------------


@host_function("env.proxy_get_buffer_status")
def proxy_get_buffer_status(vm: VmState, buffer_type: int, length_ptr: int, flags_ptr: int) -> int:
    data = vm.buffer("proxy_get_buffer_status", buffer_type)
    if isinstance(data, int):
        return data
    vm.mem.put_u32(length_ptr, len(data))
    vm.mem.put_u32(flags_ptr, 0)
    return Status.OK


@host_function("env.proxy_get_buffer_bytes")
def proxy_get_buffer_bytes(
    vm: VmState, buffer_type: int, start: int, length: int, ptr_ptr: int, size_ptr: int
) -> int:
    data = vm.buffer("proxy_get_buffer_bytes", buffer_type)
    if isinstance(data, int):
        return data
    if start > len(data):
        return Status.BAD_ARGUMENT
    length = min(length, len(data) - start)
    if length <= 0:
        return Status.OK  # cpp-host: nothing to copy, nothing written, Ok
    vm.mem.copy_out(data[start : start + length], ptr_ptr, size_ptr)
    return Status.OK


@host_function("env.proxy_set_buffer_bytes")
def proxy_set_buffer_bytes(
    vm: VmState, buffer_type: int, start: int, length: int, data_ptr: int, data_size: int
) -> int:
    current = vm.buffer("proxy_set_buffer_bytes", buffer_type, write=True)
    if isinstance(current, int):
        return current
    kind = BufferType(buffer_type)
    direction = _BODIES.get(kind)
    stream = vm.stream()
    connection = vm.connection()
    target = _CONNECTION_DATA.get(kind)
    if (direction is None or stream is None) and (target is None or connection is None):
        return Status.BAD_ARGUMENT  # Envoy: only the bodies and the connection data are mutable
    vm.charge(data_size + len(current), "a body", "proxy_set_buffer_bytes")
    data = vm.mem.read(data_ptr, data_size)
    # Envoy's Buffer::copyFrom: at the start, drain `length` bytes (all of them at most) and
    # prepend the data; at or past the end, append; anything in between is BadArgument.
    if start == 0:
        updated = data + current[length:]
    elif start >= len(current):
        updated = current + data
    else:
        return Status.BAD_ARGUMENT
    if connection is not None and target is not None:
        connection.set_data(target, updated)
    elif stream is not None and direction is not None:
        stream.set_body(direction, updated)
    return Status.OK


# -- stream control ----------------------------------------------------------------------------------


@host_function("env.proxy_continue_stream")
def proxy_continue_stream(vm: VmState, stream_type: int) -> int:
    if stream_type == StreamType.UPSTREAM:
        return Status.UNIMPLEMENTED
    if stream_type > StreamType.UPSTREAM:
        return Status.BAD_ARGUMENT
    connection = vm.connection()
    if connection is not None:
        if stream_type == StreamType.DOWNSTREAM:
            connection.continue_downstream()  # Envoy's continueReading, after this callback
        return Status.OK  # the HTTP directions: Envoy has no HTTP stream here and does nothing
    stream = vm.stream()
    if stream is None:
        vm.refuse("proxy_continue_stream", Status.OK, "no HTTP stream is current: Envoy does nothing")
        return Status.OK
    if stream_type == StreamType.REQUEST:
        stream.resume("request")
    elif stream_type == StreamType.RESPONSE:
        stream.resume("response")
    return Status.OK


@host_function("env.proxy_close_stream")
def proxy_close_stream(vm: VmState, stream_type: int) -> int:
    if stream_type > StreamType.UPSTREAM:
        return Status.BAD_ARGUMENT
    connection = vm.connection()
    if connection is not None:
        if stream_type in (StreamType.DOWNSTREAM, StreamType.UPSTREAM):
            # Either way Envoy closes the filter's (downstream) connection, after this callback.
            connection.close_by_plugin()
        return Status.OK
    stream = vm.stream()
    if stream is None:
        vm.refuse("proxy_close_stream", Status.OK, "no HTTP stream is current: Envoy does nothing")
        return Status.OK
    if stream_type in (StreamType.REQUEST, StreamType.RESPONSE):
        stream.reset = True
    return Status.OK


@host_function("env.proxy_continue_request")
def proxy_continue_request(vm: VmState) -> int:
    return proxy_continue_stream(vm, StreamType.REQUEST)


@host_function("env.proxy_continue_response")
def proxy_continue_response(vm: VmState) -> int:
    return proxy_continue_stream(vm, StreamType.RESPONSE)


@host_function("env.proxy_clear_route_cache")
def proxy_clear_route_cache(vm: VmState) -> int:
    return Status.OK


@host_function("env.proxy_get_configuration")
def proxy_get_configuration(vm: VmState, ptr_ptr: int, size_ptr: int) -> int:
    """ABI 0.1.0: the plugin configuration in on_configure, the VM configuration elsewhere."""
    value = vm.plugin_configuration if vm.configuring else vm.vm_configuration
    vm.mem.copy_out(value, ptr_ptr, size_ptr)
    return Status.OK


@host_function("env.proxy_send_local_response")
def proxy_send_local_response(
    vm: VmState,
    status: int,
    details_ptr: int,
    details_size: int,
    body_ptr: int,
    body_size: int,
    headers_ptr: int,
    headers_size: int,
    grpc_status: int,
) -> int:
    call = "proxy_send_local_response"
    vm.charge(details_size + body_size + headers_size, "a local response", call)
    details = _WHITESPACE.sub("_", vm.mem.text(details_ptr, details_size))
    body = vm.mem.read(body_ptr, body_size)
    headers = read_pairs(vm, headers_ptr, headers_size, call)
    stream = vm.stream()
    if stream is None:
        vm.refuse(call, Status.OK, "no HTTP stream is current: Envoy sends nothing")
        return Status.OK
    stream.send_local_response(
        status=status,
        body=body,
        headers=headers,
        details=details,
        grpc_status=grpc_status if grpc_status < 0x80000000 else grpc_status - (1 << 32),
    )
    return Status.OK
