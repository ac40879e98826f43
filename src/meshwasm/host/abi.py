"""proxy-wasm ABI v0.2.x constants and the header-map wire format (pure, no wasm here).

Values follow proxy-wasm-cpp-host and Envoy, which is what plugins are tested
against in production; where the spec text disagrees (the header-map example
bytes, the HTTP-call response body buffer) the implementations win.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from enum import IntEnum


class Status(IntEnum):
    """``WasmResult``: what every host call returns."""

    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class MapType(IntEnum):
    REQUEST_HEADERS = 0
    REQUEST_TRAILERS = 1
    RESPONSE_HEADERS = 2
    RESPONSE_TRAILERS = 3
    GRPC_RECEIVE_INITIAL_METADATA = 4
    GRPC_RECEIVE_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class BufferType(IntEnum):
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4  # spec erratum: the implementations use 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    CALL_DATA = 8


class LogLevel(IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5

    @classmethod
    def parse(cls, value: LogLevel | str | int) -> LogLevel:
        if isinstance(value, str):
            try:
                return cls[value.upper().replace("WARNING", "WARN")]
            except KeyError:
                names = ", ".join(level.name.lower() for level in cls)
                raise ValueError(f"unknown log level {value!r} (one of {names})") from None
        return cls(value)


class Action(IntEnum):
    """What an HTTP callback returns (FilterHeadersStatus / FilterDataStatus values)."""

    CONTINUE = 0
    PAUSE = 1  # StopIteration for headers, StopIterationAndBuffer for bodies
    CONTINUE_AND_END_STREAM = 2
    STOP_ALL_ITERATION_AND_BUFFER = 3
    STOP_ALL_ITERATION_AND_WATERMARK = 4


class MetricType(IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class StreamType(IntEnum):
    REQUEST = 0
    RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class PeerType(IntEnum):
    """Who closed a connection (proxy_on_downstream/upstream_connection_close's second argument):
    Envoy's CloseType."""

    UNKNOWN = 0
    LOCAL = 1  # Envoy closed it (also when the plugin asked with proxy_close_stream)
    REMOTE = 2  # the peer closed it


Pairs = Sequence[tuple[bytes, bytes]]

_U32 = struct.Struct("<I")


def serialize_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Envoy's header-map serialization: count, then (key size, value size) for each pair,
    then each key and value followed by a NUL byte. All integers u32 little-endian."""
    items = list(pairs)
    sizes = b"".join(struct.pack("<II", len(k), len(v)) for k, v in items)
    data = b"".join(k + b"\0" + v + b"\0" for k, v in items)
    return _U32.pack(len(items)) + sizes + data


def deserialize_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """The inverse of :func:`serialize_pairs`; raises ValueError on malformed input."""
    if len(data) < 4:
        if not data:
            return []
        raise ValueError("header map shorter than its count")
    (count,) = _U32.unpack_from(data, 0)
    sizes_end = 4 + 8 * count
    if sizes_end > len(data):
        raise ValueError(f"header map declares {count} pairs but holds only {len(data)} bytes")
    pos = sizes_end
    out: list[tuple[bytes, bytes]] = []
    for i in range(count):
        key_size, value_size = struct.unpack_from("<II", data, 4 + 8 * i)
        end = pos + key_size + 1 + value_size + 1
        if end > len(data):
            raise ValueError(f"header map pair {i} runs past the end of the data")
        key = data[pos : pos + key_size]
        value = data[pos + key_size + 1 : pos + key_size + 1 + value_size]
        out.append((bytes(key), bytes(value)))
        pos = end
    return out
