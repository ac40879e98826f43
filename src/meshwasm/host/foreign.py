"""Envoy 1.40's built-in foreign functions (``proxy_call_foreign_function``), with its semantics.

Envoy registers ten: ``compress`` and ``uncompress`` (zlib), ``clear_route_cache``,
``set_envoy_filter_state``, ``declare_property``, ``verify_signature`` and ``sign`` (each
with protobuf arguments), and ``expr_create`` / ``expr_evaluate`` / ``expr_delete`` (CEL).
Any other name is NotFound. Each function here takes the VM state and the argument bytes and
returns (status, result); tests/integration/test_host_foreign.py checks every one of them
against the real Envoy.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from zlib_ng import zlib_ng

from meshwasm.host import protowire
from meshwasm.host.abi import Status
from meshwasm.host.protowire import WireError

if TYPE_CHECKING:
    from meshwasm.host.state import VmState

Builtin = Callable[["VmState", bytes], tuple[Status, bytes]]

# -- zlib -----------------------------------------------------------------------------------------------


def compress(vm: VmState, argument: bytes) -> tuple[Status, bytes]:
    """compress() at the default level, with the zlib header: Envoy's zlib is zlib-ng, whose
    deflate output differs from zlib's on all but short inputs; zlib-ng's here matches it."""
    return Status.OK, zlib_ng.compress(argument)


def uncompress(vm: VmState, argument: bytes) -> tuple[Status, bytes]:
    """zlib's uncompress(): the first complete stream (bytes after it are ignored); anything
    else, including nothing, is SerializationFailure."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(argument)
    except zlib.error:
        return Status.SERIALIZATION_FAILURE, b""
    if not inflater.eof:
        return Status.SERIALIZATION_FAILURE, b""
    return Status.OK, data


def clear_route_cache(vm: VmState, argument: bytes) -> tuple[Status, bytes]:
    """Envoy clears the stream's cached route (the host has no routes): Ok whatever the argument."""
    stream = vm.stream()
    if stream is not None:
        stream.route_cache_cleared += 1
    return Status.OK, b""


# -- filter state -------------------------------------------------------------------------------


def _any(value: str) -> bool:
    return True


def _ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _address(value: str) -> bool:
    """An IP and a port: 127.0.0.1:80, [::1]:80."""
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return bool(host) and _ip(host) and port.isdigit() and int(port) <= 65535


def _uint32(value: str) -> bool:
    return value.isdigit() and int(value) < 1 << 32


# The filter state object factories Envoy 1.40 registers that the host knows, each with what
# it accepts (checked against Envoy: tests/integration/test_host_foreign.py). A plugin may name
# more with Plugin.load(filter_state_keys=...), accepted as they are.
FILTER_STATE_OBJECTS: dict[str, Callable[[str], bool]] = {
    "envoy.string": _any,
    "envoy.hashable_string": _any,
    "envoy.tcp_proxy.cluster": _any,
    "envoy.network.upstream_server_name": _any,
    "envoy.network.application_protocols": _any,
    "envoy.network.upstream_subject_alt_names": _any,
    "envoy.upstream.dynamic_host": _any,
    "envoy.upstream.dynamic_port": _uint32,
    "envoy.tcp_proxy.per_connection_idle_timeout_ms": _uint32,
    "envoy.network.ip": _ip,
    "envoy.network.transport_socket.original_dst_address": _address,
    "envoy.filters.listener.original_dst.local_ip": _address,
}

_FILTER_STATE_ARGUMENTS: protowire.Schema = {1: "string", 2: "string", 3: "varint"}


def set_envoy_filter_state(vm: VmState, argument: bytes) -> tuple[Status, bytes]:
    """SetEnvoyFilterStateArguments {path, value, span}: a factory Envoy knows builds the object
    from the value (else NotFound; a value it refuses, BadArgument); stored in the stream's
    filter state (no stream: NotFound), readable as the ``filter_state`` property."""
    try:
        arguments = protowire.parse(argument, _FILTER_STATE_ARGUMENTS)
    except WireError:
        return Status.BAD_ARGUMENT, b""
    path, value = arguments.text(1), arguments.text(2)
    accepts = FILTER_STATE_OBJECTS.get(path)
    if accepts is None and path in vm.filter_state_keys:
        accepts = _any
    if accepts is None:
        return Status.NOT_FOUND, b""
    if not accepts(value):
        return Status.BAD_ARGUMENT, b""
    stream = vm.stream() or vm.connection()
    if stream is None:
        return Status.NOT_FOUND, b""
    span = arguments.number(3)
    held = stream.filter_state.get(path)
    # Envoy keeps a name at one life span: a set at another is ignored (an ENVOY_BUG, not an error).
    if held is None or held[1] == span:
        stream.filter_state[path] = (value.encode(), span)
    return Status.OK, b""


# -- declared properties ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Declaration:
    """declare_property's prototype: a property set through proxy_set_property keeps it."""

    name: str
    readonly: bool
    type: int  # Bytes 0, String 1, FlatBuffers 2, Protobuf 3 (the host keeps every value as bytes)
    schema: bytes
    span: int


_DECLARE_ARGUMENTS: protowire.Schema = {1: "string", 2: "varint", 3: "varint", 4: "bytes", 5: "varint"}


def declare_property(vm: VmState, argument: bytes) -> tuple[Status, bytes]:
    """DeclarePropertyArguments {name, readonly, type, schema, span}, declared on the calling
    context (a name already declared there: BadArgument). proxy_set_property follows the root
    context's declarations: a readonly property is set once."""
    try:
        arguments = protowire.parse(argument, _DECLARE_ARGUMENTS)
    except WireError:
        return Status.BAD_ARGUMENT, b""
    declared = vm.declarations.setdefault(vm.effective, {})
    name = arguments.text(1)
    if name in declared:
        return Status.BAD_ARGUMENT, b""
    declared[name] = Declaration(
        name, bool(arguments.number(2)), arguments.number(3), arguments.data(4), arguments.number(5)
    )
    return Status.OK, b""


# -- signatures ---------------------------------------------------------------------------------------

_HASHES: dict[str, type[hashes.SHA1 | hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_VERIFY_ARGUMENTS: protowire.Schema = {1: "string", 2: "bytes", 5: "string", 3: "bytes", 4: "bytes"}
_SIGN_ARGUMENTS: protowire.Schema = {1: "string", 2: "bytes", 4: "string", 3: "bytes"}
_NO_PRIVATE_KEY = "Invalid key type: private key required for signing operation."


def _key(der: bytes, pem: str, *, private: bool) -> tuple[bool, object | None]:
    """(given, key): exactly one of DER and PEM must be given; a key that does not parse is None."""
    if bool(der) == bool(pem):
        return False, None
    try:
        if private:
            if der:
                return True, serialization.load_der_private_key(der, password=None)
            return True, serialization.load_pem_private_key(pem.encode(), password=None)
        if der:
            return True, serialization.load_der_public_key(der)
        return True, serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return True, None


def verify_signature(vm: VmState, argument: bytes) -> tuple[Status, bytes]:
    """VerifySignatureArguments {hash_function, public_key (DER) | public_key_pem, signature,
    text} -> VerifySignatureResult {result, error}, with BoringSSL's EVP_DigestVerify
    semantics (RSA PKCS#1 v1.5, ECDSA): what Envoy's crypto utility answers."""
    try:
        arguments = protowire.parse(argument, _VERIFY_ARGUMENTS)
    except WireError:
        return Status.BAD_ARGUMENT, b""
    given, key = _key(arguments.data(2), arguments.text(5), private=False)
    if not given:
        return Status.BAD_ARGUMENT, b""
    name = arguments.text(1)
    algorithm = _HASHES.get(name.lower())
    if algorithm is None:
        return Status.OK, _result(False, f"{name} is not supported.")
    signature, text = arguments.data(3), arguments.data(4)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, text, padding.PKCS1v15(), algorithm())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, text, ec.ECDSA(algorithm()))
        else:
            return Status.OK, _result(False, "Failed to initialize digest verify.")
    except InvalidSignature:
        return Status.OK, _result(False, "Failed to verify digest. Error code: 0")
    return Status.OK, _result(True, "")


def sign(vm: VmState, argument: bytes) -> tuple[Status, bytes]:
    """SignArguments {hash_function, private_key (DER) | private_key_pem, text} -> SignResult
    {result, signature, error}: RSA PKCS#1 v1.5 (deterministic, as Envoy's) or ECDSA."""
    try:
        arguments = protowire.parse(argument, _SIGN_ARGUMENTS)
    except WireError:
        return Status.BAD_ARGUMENT, b""
    given, key = _key(arguments.data(2), arguments.text(4), private=True)
    if not given:
        return Status.BAD_ARGUMENT, b""
    name = arguments.text(1)
    algorithm = _HASHES.get(name.lower())
    if algorithm is None:
        return Status.OK, protowire.length_field(3, f"{name} is not supported.")
    text = arguments.data(3)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(text, padding.PKCS1v15(), algorithm())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(text, ec.ECDSA(algorithm()))
    else:
        return Status.OK, protowire.length_field(3, _NO_PRIVATE_KEY)
    return Status.OK, protowire.varint_field(1, 1) + protowire.length_field(2, signature)


def _result(ok: bool, error: str) -> bytes:
    """VerifySignatureResult: proto3 leaves false and empty fields out."""
    return (protowire.varint_field(1, 1) if ok else b"") + (
        protowire.length_field(2, error) if error else b""
    )


# -- CEL ----------------------------------------------------------------------------------------------


def expr_create(vm: VmState, argument: bytes) -> tuple[Status, bytes]:
    return vm.expressions.create(argument)


def expr_evaluate(vm: VmState, argument: bytes) -> tuple[Status, bytes]:
    return vm.expressions.evaluate(argument, vm.attribute_value, vm.property_names())


def expr_delete(vm: VmState, argument: bytes) -> tuple[Status, bytes]:
    return vm.expressions.delete(argument)


BUILTINS: dict[str, Builtin] = {
    "compress": compress,
    "uncompress": uncompress,
    "clear_route_cache": clear_route_cache,
    "set_envoy_filter_state": set_envoy_filter_state,
    "declare_property": declare_property,
    "verify_signature": verify_signature,
    "sign": sign,
    "expr_create": expr_create,
    "expr_evaluate": expr_evaluate,
    "expr_delete": expr_delete,
}
