"""Properties (proxy_get_property): Envoy's attribute tree and its value serialization (pure).

Envoy walks a property path (segments separated by NUL) from a top-level
attribute through maps (by key), messages (by field name) and lists (by index),
then serializes the value: strings and bytes raw, int64/uint64 8 bytes little
endian, doubles 8 bytes, bools 1 byte, timestamps and durations int64
nanoseconds, maps and lists in the header-map pair format, messages as protobuf
bytes. :class:`Attributes` answers the attributes a test stream has: request.*,
response.*, source.*, destination.*, connection.*, upstream.*, xds.* (node,
cluster, route, listener), from the stream's headers and what the test gives.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from meshwasm.host.abi import MapType, serialize_pairs
from meshwasm.host.protowire import length_field, varint

if TYPE_CHECKING:
    from meshwasm.host.stream import HttpStream
    from meshwasm.host.tcp import TcpStream

    AnyStream: TypeAlias = HttpStream | TcpStream

PropertyValue = bytes | str | int | float | bool


def encode_property(value: PropertyValue) -> bytes:
    """Envoy's property serialization: strings raw, integers int64 LE, floats double, bools 1 byte."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return struct.pack("<q", value)
    return struct.pack("<d", value)


def property_path(key: str | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(key.split(".")) if isinstance(key, str) else tuple(key)


def parse_path(raw: bytes) -> tuple[str, ...]:
    """A path as the module sends it (segments separated by NUL). Bytes that are not UTF-8
    are kept (surrogate escapes), so that such a path is simply not found, as in Envoy."""
    return tuple(part.decode("utf-8", errors="surrogateescape") for part in raw.split(b"\0") if part)


# -- typed values, as CEL hands them to Envoy's serializer -------------------------------------------


@dataclass(frozen=True)
class UInt:
    value: int


@dataclass(frozen=True)
class Nanos:
    """A timestamp or a duration: serialized as int64 nanoseconds."""

    value: int


@dataclass(frozen=True)
class Message:
    """A protobuf message: walked by field name, serialized as protobuf bytes."""

    fields: Mapping[str, Any]
    encoded: bytes


def serialize(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogateescape")
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return struct.pack("<q", value)
    if isinstance(value, UInt):
        return struct.pack("<Q", value.value)
    if isinstance(value, Nanos):
        return struct.pack("<q", value.value)
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, Message):
        return value.encoded
    if isinstance(value, Mapping):
        return serialize_pairs((serialize(k), serialize(v)) for k, v in value.items())
    return serialize_pairs((serialize(item), b"") for item in value)


def walk(value: Any, rest: Sequence[str]) -> Any:
    """Envoy's getProperty after the top-level attribute: None when a segment is not found."""
    for part in rest:
        if value is None:
            return None
        if isinstance(value, Message):
            value = value.fields.get(part)
        elif isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, (list, tuple)):
            if not part.lstrip("-").isdigit() or not 0 <= int(part) < len(value):
                return None
            value = value[int(part)]
        else:
            return None
    return value


# -- protobuf encoding for the xds.node message --------------------------------------------------


def _struct_value(value: Any) -> bytes:
    """google.protobuf.Value."""
    if value is None:
        return varint(1 << 3) + varint(0)
    if isinstance(value, bool):
        return varint(4 << 3) + varint(int(value))
    if isinstance(value, (int, float)):
        return varint(2 << 3 | 1) + struct.pack("<d", float(value))
    if isinstance(value, str):
        return length_field(3, value.encode())
    if isinstance(value, Mapping):
        return length_field(5, _struct(value))
    return length_field(6, b"".join(length_field(1, _struct_value(item)) for item in value))


def _struct(fields: Mapping[str, Any]) -> bytes:
    """google.protobuf.Struct: map<string, Value> fields = 1."""
    return b"".join(
        length_field(1, length_field(1, key.encode()) + length_field(2, _struct_value(value)))
        for key, value in fields.items()
    )


def node_message(node_id: str, cluster: str, metadata: Mapping[str, Any]) -> Message:
    """envoy.config.core.v3.Node with id (1), cluster (2) and metadata (3, a Struct)."""
    encoded = b""
    if node_id:
        encoded += length_field(1, node_id.encode())
    if cluster:
        encoded += length_field(2, cluster.encode())
    if metadata:
        encoded += length_field(3, _struct(metadata))
    return Message({"id": node_id, "cluster": cluster, "metadata": dict(metadata)}, encoded)


@dataclass
class Attributes:
    """What a test stream's connection, route and node look like to the plugin.

    Defaults are what a local Envoy reports for a plain-text HTTP/1.1 request on loopback.
    """

    source_address: str = "127.0.0.1"
    source_port: int = 50000
    destination_address: str = "127.0.0.1"
    destination_port: int = 10000
    connection_id: int = 1
    mtls: bool = False
    requested_server_name: str = ""
    protocol: str = "HTTP/1.1"
    node_id: str = ""
    node_cluster: str = ""
    node_metadata: Mapping[str, Any] = field(default_factory=dict)
    cluster_name: str = ""
    route_name: str = ""
    virtual_host_name: str = ""
    listener_direction: int = 0
    upstream_address: str = ""
    upstream_port: int = 0

    def top_level(self, name: str, stream: AnyStream | None) -> Any:
        if name == "xds":
            return self._xds(stream)
        if stream is None:
            return None  # Envoy: no stream info on the root context
        if stream.kind == "tcp":
            # A connection's stream info: no headers, no HTTP protocol, no response code.
            if name == "request":
                return {"time": Nanos(stream.started_ns)}
            if name == "response":
                return {}
        elif name == "request":
            return _request(stream, self.protocol)
        elif name == "response":
            return _response(stream)
        if name == "filter_state":
            return {key: value for key, (value, _) in stream.filter_state.items()}
        if name == "source":
            return {"address": f"{self.source_address}:{self.source_port}", "port": self.source_port}
        if name == "destination":
            return {
                "address": f"{self.destination_address}:{self.destination_port}",
                "port": self.destination_port,
            }
        if name == "connection":
            connection: dict[str, Any] = {"id": UInt(self.connection_id), "mtls": self.mtls}
            if self.requested_server_name:
                connection["requested_server_name"] = self.requested_server_name
            return connection
        if name == "connection_id":
            return UInt(self.connection_id)
        if name == "upstream" and self.upstream_address:
            return {
                "address": f"{self.upstream_address}:{self.upstream_port}",
                "port": self.upstream_port,
            }
        return None

    def _xds(self, stream: AnyStream | None) -> dict[str, Any]:
        xds: dict[str, Any] = {
            "node": node_message(self.node_id, self.node_cluster, self.node_metadata),
            "listener_direction": self.listener_direction,
        }
        # A TCP proxy picks its cluster once the new connection has gone through the plugin.
        upstream_known = stream is None or stream.kind != "tcp" or stream.upstream_selected
        if self.cluster_name and upstream_known:
            xds["cluster_name"] = self.cluster_name
        if self.route_name:
            xds["route_name"] = self.route_name
        if self.virtual_host_name:
            xds["virtual_host_name"] = self.virtual_host_name
        return xds

    def lookup(self, path: Sequence[str], stream: AnyStream | None) -> bytes | None:
        if not path:
            return None
        value = walk(self.top_level(path[0], stream), path[1:])
        return None if value is None else serialize(value)


def _headers(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """A header map as CEL sees it: one entry per name, repeated values joined by ','."""
    out: dict[str, str] = {}
    for name, value in pairs:
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _request(stream: HttpStream, protocol: str) -> dict[str, Any]:
    """Envoy reads the header-backed request attributes from the request headers it exposes:
    in their callback, while the request is paused, and in on_log; not after it continued."""
    request: dict[str, Any] = {"protocol": protocol, "time": Nanos(stream.started_ns)}
    headers = stream.header_map(MapType.REQUEST_HEADERS, write=False)
    if headers is not None:
        request["headers"] = _headers(headers.pairs())
        for attribute, header in (
            ("path", ":path"),
            ("host", ":authority"),
            ("method", ":method"),
            ("scheme", ":scheme"),
            ("id", "x-request-id"),
            ("referer", "referer"),
            ("useragent", "user-agent"),
        ):
            value = headers.first(header)
            if value is not None:
                request[attribute] = value
        full = headers.first(":path")
        if full is not None:
            request["url_path"] = full.split("?", 1)[0]
            if "?" in full:
                request["query"] = full.split("?", 1)[1]
    return request


def _response(stream: HttpStream) -> dict[str, Any] | None:
    local = stream.local_response
    if local is not None:
        # The response's headers map once there is one (a local reply through the response
        # callbacks, or the upstream's a later local reply left as it was), else the reply's own.
        shown = stream.header_map(MapType.RESPONSE_HEADERS, write=False)
        return {
            "code": local.status,
            "code_details": local.details,
            "headers": _headers((shown if shown is not None else local.headers).pairs()),
        }
    status = stream.response_headers.first(":status")
    if status is None:
        return None
    response: dict[str, Any] = {"code_details": "via_upstream"}  # Envoy's router's details
    if status.isdigit():
        response["code"] = int(status)
    headers = stream.header_map(MapType.RESPONSE_HEADERS, write=False)
    if headers is not None:
        response["headers"] = _headers(headers.pairs())
    trailers = stream.header_map(MapType.RESPONSE_TRAILERS, write=False)
    if trailers is not None and trailers.pairs():
        response["trailers"] = _headers(trailers.pairs())
    return response
