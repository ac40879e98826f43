"""Properties (proxy_get_property): Envoy's value encoding and the attributes a test stream answers."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshwasm.host.stream import HttpStream

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


def stream_attribute(stream: HttpStream, path: tuple[str, ...]) -> bytes | None:
    """The Envoy request/response attributes a test stream can answer from its headers."""
    request = stream.request_headers
    header_backed = {
        ("request", "path"): request.first(":path"),
        ("request", "host"): request.first(":authority"),
        ("request", "method"): request.first(":method"),
        ("request", "scheme"): request.first(":scheme"),
        ("request", "id"): request.first("x-request-id"),
        ("request", "referer"): request.first("referer"),
        ("request", "useragent"): request.first("user-agent"),
    }
    if path in header_backed:
        value = header_backed[path]
        return value.encode() if value is not None else None
    if path == ("request", "url_path"):
        full = request.first(":path")
        return full.split("?", 1)[0].encode() if full is not None else None
    if path == ("response", "code"):
        status = stream.response_headers.first(":status")
        if stream.local_response is not None:
            return struct.pack("<q", stream.local_response.status)
        return struct.pack("<q", int(status)) if status and status.isdigit() else None
    return None
