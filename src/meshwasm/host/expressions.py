"""CEL expressions for Envoy's ``expr_create`` / ``expr_evaluate`` / ``expr_delete`` foreign
functions, on CEL's own C++ runtime (cel-expr-python).

Envoy keeps one table of expressions per root context: ``expr_create`` parses (a syntax error
is BadArgument) and hands back a 4-byte token (0, 1, 2, ... skipping live ones);
``expr_evaluate`` takes that token (any other size: BadArgument; an unknown token: NotFound),
evaluates the expression against the calling context's attributes (the properties:
``request``, ``source``, ``plugin_root_id``, ...) and serializes the value as
``proxy_get_property`` does; an evaluation error (an unknown identifier, a missing key, a
division by zero) is InternalFailure. ``expr_delete`` forgets a token (unknown: still Ok).

Envoy only parses at create: an identifier nothing defines fails when evaluated. CEL's
runtime here type-checks when it compiles, so an expression is compiled at evaluation, with
the identifiers the context has then. Known difference: attributes that are timestamps,
durations or unsigned integers in Envoy are plain integers here (their serialization is the
same), so comparing them with ``timestamp()``, ``duration()`` or ``1u`` values fails.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cel_expr_python import cel

from meshwasm.host.abi import Status, serialize_pairs
from meshwasm.host.properties import Message, Nanos, UInt

_TOKEN = struct.Struct("<I")
_SYNTAX = "Syntax error"

# What Envoy's CEL activation resolves by name (the wasm context adds the plugin's own names).
TOP_LEVEL = (
    "request",
    "response",
    "connection",
    "upstream",
    "source",
    "destination",
    "metadata",
    "filter_state",
    "upstream_filter_state",
    "xds",
    "plugin_name",
    "plugin_root_id",
    "plugin_vm_id",
    "connection_id",
)


class ExpressionTable:
    """One root context's expressions (Envoy keeps them as that context's foreign data)."""

    def __init__(self) -> None:
        self._sources: dict[int, str] = {}
        self._next = 0
        self._compiled: dict[tuple[str, tuple[str, ...]], Any] = {}

    def create(self, source: bytes) -> tuple[Status, bytes]:
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError:
            return Status.BAD_ARGUMENT, b""
        problem = self._problem(text, TOP_LEVEL)
        if problem is not None and _SYNTAX in problem:
            return Status.BAD_ARGUMENT, b""
        token = self._next
        while token in self._sources:
            token += 1
        self._next = token + 1
        self._sources[token] = text
        return Status.OK, _TOKEN.pack(token)

    def delete(self, argument: bytes) -> tuple[Status, bytes]:
        if len(argument) != _TOKEN.size:
            return Status.BAD_ARGUMENT, b""
        self._sources.pop(_TOKEN.unpack(argument)[0], None)
        return Status.OK, b""

    def evaluate(
        self, argument: bytes, lookup: Callable[[str], Any], names: Iterable[str]
    ) -> tuple[Status, bytes]:
        """``lookup(name)`` gives the value of a top-level identifier (None: not defined)."""
        if len(argument) != _TOKEN.size:
            return Status.BAD_ARGUMENT, b""
        source = self._sources.get(_TOKEN.unpack(argument)[0])
        if source is None:
            return Status.NOT_FOUND, b""
        data = {}
        for name in dict.fromkeys([*TOP_LEVEL, *names]):
            value = lookup(name)
            if value is not None:
                data[name] = to_cel(value)
        program = self._program(source, tuple(sorted(data)))
        if program is None:
            return Status.INTERNAL_FAILURE, b""
        try:
            value = program.eval(data=data)
        except Exception:
            return Status.INTERNAL_FAILURE, b""
        return serialize_value(value)

    def _program(self, source: str, names: tuple[str, ...]) -> Any:
        key = (source, names)
        if key not in self._compiled:
            try:
                env = cel.NewEnv(variables=dict.fromkeys(names, cel.Type.DYN))
                self._compiled[key] = env.compile(source)
            except RuntimeError:
                self._compiled[key] = None  # undeclared identifiers, type errors: fail at evaluation
        return self._compiled[key]

    @staticmethod
    def _problem(source: str, names: Iterable[str]) -> str | None:
        try:
            cel.NewEnv(variables=dict.fromkeys(names, cel.Type.DYN)).compile(source)
        except RuntimeError as error:
            return str(error)
        return None


def to_cel(value: Any) -> Any:
    """The host's attribute values as plain data CEL's runtime takes."""
    if isinstance(value, UInt | Nanos):
        return value.value
    if isinstance(value, Message):
        return {key: to_cel(item) for key, item in value.fields.items()}
    if isinstance(value, Mapping):
        return {key: to_cel(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_cel(item) for item in value]
    return value


def serialize_value(value: Any) -> tuple[Status, bytes]:
    """Envoy's serializeValue of a CEL result (what proxy_get_property hands over too)."""
    if value.type() == cel.Type.ERROR:
        return Status.INTERNAL_FAILURE, b""
    try:
        return Status.OK, _serialize(value)
    except _Unserializable:
        return Status.SERIALIZATION_FAILURE, b""


class _Unserializable(Exception):
    pass


def _serialize(value: Any) -> bytes:
    """A CEL value (or a list or map item of one, which carry their type too), or a plain map key."""
    if not hasattr(value, "type"):
        return _serialize_plain(value)
    kind = value.type()
    plain = value.value()
    if kind == cel.Type.UINT:
        return struct.pack("<Q", plain)
    if kind == cel.Type.DURATION:
        return struct.pack("<q", round(plain.total_seconds() * 1_000_000) * 1000)
    if kind == cel.Type.TIMESTAMP:
        return struct.pack("<q", round(plain.timestamp() * 1_000_000) * 1000)
    if isinstance(plain, Mapping):
        return serialize_pairs((_serialize(key), _serialize(item)) for key, item in plain.items())
    if isinstance(plain, list):
        return serialize_pairs((_serialize(item), b"") for item in plain)
    return _serialize_plain(plain)


def _serialize_plain(plain: Any) -> bytes:
    if isinstance(plain, bool):
        return b"\x01" if plain else b"\x00"
    if isinstance(plain, int):
        return struct.pack("<q", plain)
    if isinstance(plain, float):
        return struct.pack("<d", plain)
    if isinstance(plain, str):
        return plain.encode()
    if isinstance(plain, bytes | bytearray):
        return bytes(plain)
    raise _Unserializable  # null, types, ...
