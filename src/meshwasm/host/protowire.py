"""The protobuf wire format, as far as the host needs it (pure): encoding the few messages Envoy
hands plugins (a ``Node``, a signature result) and reading the ones plugins hand Envoy (a
``GrpcService``, the arguments of Envoy's foreign functions).

:func:`parse` accepts exactly what protobuf's ``ParseFromString`` accepts for the message
described by a :data:`Schema`: well-formed varints, lengths within the data, no end-group
without its start, no wire types 6 and 7, no field number 0, and UTF-8 in the ``string``
fields the schema names (proto3 checks it while parsing). Fields the schema does not know (or
knows with another wire type) are kept as unknown fields, as protobuf does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5

# A message's fields the host reads: number -> "string", "bytes", "varint", or the Schema of an
# embedded message.
Schema = Mapping[int, Union[str, "Schema"]]


class WireError(ValueError):
    """Bytes that protobuf would refuse to parse as the message."""


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_field(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | LENGTH) + varint(len(data)) + data


def varint_field(number: int, value: int) -> bytes:
    return varint(number << 3 | VARINT) + varint(value)


@dataclass
class Message:
    """A parsed message: the last value of each scalar field the schema names (as protobuf keeps
    it), embedded messages merged, and how often each field number was seen."""

    values: dict[int, object] = field(default_factory=dict)
    repeated: dict[int, list[object]] = field(default_factory=dict)

    def text(self, number: int) -> str:
        value = self.values.get(number, "")
        return value if isinstance(value, str) else ""

    def data(self, number: int) -> bytes:
        value = self.values.get(number, b"")
        return value if isinstance(value, bytes) else b""

    def number(self, number: int) -> int:
        value = self.values.get(number, 0)
        return value if isinstance(value, int) else 0

    def message(self, number: int) -> Message | None:
        value = self.values.get(number)
        return value if isinstance(value, Message) else None

    def messages(self, number: int) -> list[Message]:
        return [item for item in self.repeated.get(number, []) if isinstance(item, Message)]


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & ((1 << 64) - 1), pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _skip_group(data: bytes, pos: int, number: int, depth: int) -> int:
    """Past the end-group of field ``number`` (groups nest; fields inside are checked too)."""
    while True:
        tag, pos = _read_varint(data, pos)
        field_number, wire = tag >> 3, tag & 7
        if field_number == 0:
            raise WireError("field number 0")
        if wire == END_GROUP:
            if field_number != number:
                raise WireError("end-group of another group")
            return pos
        pos, _ = _read_value(data, pos, wire, field_number, depth + 1)


def _read_value(data: bytes, pos: int, wire: int, number: int, depth: int) -> tuple[int, object]:
    if depth > 100:
        raise WireError("nested too deeply")
    if wire == VARINT:
        value, pos = _read_varint(data, pos)
        return pos, value
    if wire == FIXED64:
        if pos + 8 > len(data):
            raise WireError("truncated fixed64")
        return pos + 8, data[pos : pos + 8]
    if wire == FIXED32:
        if pos + 4 > len(data):
            raise WireError("truncated fixed32")
        return pos + 4, data[pos : pos + 4]
    if wire == LENGTH:
        size, pos = _read_varint(data, pos)
        if size > len(data) - pos:
            raise WireError("length past the end")
        return pos + size, data[pos : pos + size]
    if wire == START_GROUP:
        return _skip_group(data, pos, number, depth), None
    if wire == END_GROUP:
        raise WireError("end-group without a group")
    raise WireError(f"wire type {wire}")


def parse(data: bytes, schema: Schema, *, depth: int = 0) -> Message:
    """Parse ``data`` as the message ``schema`` describes, or raise :class:`WireError`."""
    message = Message()
    pending: dict[int, bytes] = {}  # embedded messages merge: their bytes concatenate
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError("field number 0")
        pos, value = _read_value(data, pos, wire, number, depth)
        kind = schema.get(number)
        if kind is None:
            continue
        if isinstance(kind, Mapping) and wire == LENGTH and isinstance(value, bytes):
            pending[number] = pending.get(number, b"") + value
            message.repeated.setdefault(number, []).append(parse(value, kind, depth=depth + 1))
        elif kind == "string" and wire == LENGTH and isinstance(value, bytes):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise WireError(f"field {number} is not UTF-8") from None
            message.values[number] = text
            message.repeated.setdefault(number, []).append(text)
        elif kind == "bytes" and wire == LENGTH:
            message.values[number] = value
            message.repeated.setdefault(number, []).append(value)
        elif kind == "varint" and wire == VARINT:
            message.values[number] = value
    for number, merged in pending.items():
        kind = schema[number]
        assert isinstance(kind, Mapping)
        message.values[number] = parse(merged, kind, depth=depth + 1)
    return message
