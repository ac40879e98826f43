"""Envoy 1.40's built-in foreign functions, in Envoy and in the host, call by call.

The SDK-example module's probe (tests/fixtures/sdk_examples/probe, x-probe: foreign) calls each
foreign function named in x-foreign with its argument, and logs the status and the result in
hex; then it sets the properties in x-set and reads those in x-paths. One request per group of
calls goes through Envoy and through the host; the logged lines must be the same, except where
Envoy's answer is not deterministic (ECDSA signatures: both must verify) or depends on the
connection (the client's port).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from fixtures.differential import Request, messages, next_name
from meshwasm.envoy import resources as r
from meshwasm.host import Attributes, HeaderMap, Plugin
from meshwasm.host.protowire import length_field, varint_field

pytestmark = pytest.mark.envoy

# 1024 bits keeps each group's arguments under httpbin's (gunicorn's) 8 KiB header field limit.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
TEXT = b"text to sign"
RSA_SIGNATURE = RSA_KEY.sign(TEXT, padding.PKCS1v15(), hashes.SHA256())
EC_SIGNATURE = EC_KEY.sign(TEXT, ec.ECDSA(hashes.SHA256()))


def public_der(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_der(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_pem(key, form=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


def filter_state(path: str, value: bytes | str, span: int | None = None) -> bytes:
    arguments = length_field(1, path) + length_field(2, value)
    return arguments + (varint_field(3, span) if span is not None else b"")


def verify(hash_function: str, signature: bytes, text: bytes = TEXT, *, der=b"", pem=b"") -> bytes:
    arguments = length_field(1, hash_function) + length_field(3, signature) + length_field(4, text)
    return arguments + (length_field(2, der) if der else b"") + (length_field(5, pem) if pem else b"")


def sign(hash_function: str, *, der=b"", pem=b"") -> bytes:
    arguments = length_field(1, hash_function) + length_field(3, TEXT)
    return arguments + (length_field(2, der) if der else b"") + (length_field(4, pem) if pem else b"")


def declare(name: str, *, readonly: bool = False, kind: int = 0) -> bytes:
    return (
        length_field(1, name)
        + (varint_field(2, 1) if readonly else b"")
        + (varint_field(3, kind) if kind else b"")
    )


def token(n: int) -> bytes:
    return n.to_bytes(4, "little")


@dataclass(frozen=True)
class Call:
    name: str
    argument: bytes = b""
    compare: str = "exact"  # "exact", "status" (the result differs by run), "ecdsa" (must verify)


GROUPS: dict[str, list[Call]] = {
    "zlib and routes": [
        Call("compress", b"hello"),
        Call("compress", b""),
        Call("compress", b"abc" * 300),  # zlib-ng's deflate, not zlib's
        Call("compress", b"".join(b"%d:%x;" % (n, n * n) for n in range(400))),
        Call("uncompress", zlib.compress(b"hello world")),
        Call("uncompress", zlib.compress(b"x") + b"junk"),  # what follows the stream is ignored
        Call("uncompress", zlib.compress(b"hello")[:-3]),
        Call("uncompress", b""),
        Call("uncompress", b"\x00"),
        Call("clear_route_cache"),
        Call("clear_route_cache", b"xyz"),
        Call("no_such_function"),
    ],
    "filter state": [
        Call("set_envoy_filter_state", filter_state("envoy.string", "abc")),
        Call("set_envoy_filter_state", filter_state("meshwasm.unknown", "abc")),
        Call("set_envoy_filter_state", filter_state("envoy.tcp_proxy.cluster", "httpbin")),
        Call("set_envoy_filter_state", filter_state("envoy.network.upstream_server_name", "example.com")),
        Call("set_envoy_filter_state", filter_state("envoy.upstream.dynamic_host", "example.com")),
        Call("set_envoy_filter_state", filter_state("envoy.upstream.dynamic_port", "8080")),
        Call("set_envoy_filter_state", filter_state("envoy.upstream.dynamic_port", "notaport")),
        Call("set_envoy_filter_state", filter_state("envoy.network.application_protocols", "h2,http/1.1")),
        Call("set_envoy_filter_state", filter_state("envoy.network.upstream_subject_alt_names", "a,b")),
        Call("set_envoy_filter_state", filter_state("envoy.hashable_string", "x")),
        Call(
            "set_envoy_filter_state",
            filter_state("envoy.network.transport_socket.original_dst_address", "127.0.0.1:80"),
        ),
        Call(
            "set_envoy_filter_state",
            filter_state("envoy.network.transport_socket.original_dst_address", "bad"),
        ),
        Call(
            "set_envoy_filter_state",
            filter_state("envoy.filters.listener.original_dst.local_ip", "127.0.0.1"),
        ),
        Call(
            "set_envoy_filter_state",
            filter_state("envoy.filters.listener.original_dst.local_ip", "127.0.0.1:80"),
        ),
        Call("set_envoy_filter_state", filter_state("envoy.network.ip", "127.0.0.1")),
        Call("set_envoy_filter_state", filter_state("envoy.network.ip", "bad")),
        Call(
            "set_envoy_filter_state", filter_state("envoy.tcp_proxy.per_connection_idle_timeout_ms", "1000")
        ),
        Call("set_envoy_filter_state", filter_state("envoy.string", "")),
        Call("set_envoy_filter_state", b"\xff"),  # not a message
        Call("set_envoy_filter_state", filter_state("envoy.string", b"\x80")),  # a string field, not UTF-8
        Call(
            "set_envoy_filter_state", filter_state("envoy.string", "x", span=2)
        ),  # another life span: ignored
        Call("set_envoy_filter_state", b""),
    ],
    "verify_signature": [
        Call("verify_signature"),
        Call("verify_signature", verify("sha256", RSA_SIGNATURE, der=public_der(RSA_KEY))),
        Call("verify_signature", verify("SHA256", RSA_SIGNATURE, pem=public_pem(RSA_KEY))),
        Call("verify_signature", verify("sha256", RSA_SIGNATURE, b"other text", der=public_der(RSA_KEY))),
        Call("verify_signature", verify("md5", RSA_SIGNATURE, der=public_der(RSA_KEY))),
        Call(
            "verify_signature",
            verify("sha256", RSA_SIGNATURE, der=public_der(RSA_KEY), pem=public_pem(RSA_KEY)),
        ),
        Call("verify_signature", verify("sha256", RSA_SIGNATURE, der=b"garbage")),
        Call("verify_signature", verify("md5", RSA_SIGNATURE, der=b"garbage")),
        Call("verify_signature", verify("sha256", RSA_SIGNATURE, pem=b"garbage")),
        Call("verify_signature", verify("sha256", EC_SIGNATURE, der=public_der(EC_KEY))),
        Call("verify_signature", verify("sha1", RSA_SIGNATURE, der=public_der(RSA_KEY))),
    ],
    "sign": [
        Call("sign"),
        Call("sign", sign("sha256", der=private_der(RSA_KEY))),
        Call("sign", sign("sha256", pem=private_pem(RSA_KEY))),
        Call(
            "sign", sign("sha256", pem=private_pem(RSA_KEY, serialization.PrivateFormat.TraditionalOpenSSL))
        ),
        Call("sign", sign("md5", der=private_der(RSA_KEY))),
        Call("sign", sign("sha256", der=b"junk")),
        Call("sign", sign("md5", der=b"junk")),
        Call("sign", sign("sha256", pem=b"junk")),
        Call("sign", sign("sha256", der=private_der(EC_KEY)), compare="ecdsa"),
    ],
    "expressions": [
        Call("expr_create", b"1 + 1"),
        Call("expr_evaluate", token(0)),
        Call("expr_create", b"request.path"),
        Call("expr_evaluate", token(1)),
        Call("expr_create", b"invalid (("),
        Call("expr_create", b"request.headers['x-probe'] + '!'"),
        Call("expr_evaluate", token(2)),
        Call("expr_create", b"1/0"),
        Call("expr_evaluate", token(3)),
        Call("expr_create", b"response.code"),  # no response yet
        Call("expr_evaluate", token(4)),
        Call("expr_create", b"[1, 2]"),
        Call("expr_evaluate", token(5)),
        Call("expr_create", b"{'a': true}"),
        Call("expr_evaluate", token(6)),
        Call("expr_create", b"request.time"),
        Call("expr_evaluate", token(7), compare="status"),
        Call("expr_create", b"no_such_identifier"),
        Call("expr_evaluate", token(8)),
        Call("expr_evaluate", token(9)),
        Call("expr_evaluate", b"\x00"),
        Call("expr_delete", token(0)),
        Call("expr_evaluate", token(0)),
        Call("expr_delete", token(99)),
        Call("expr_delete", b""),
        Call("expr_create", b"2.5"),
        Call("expr_create", b"uint(3)"),
        Call("expr_create", b"b'xy'"),
        Call("expr_create", b"duration('1s')"),
        Call("expr_evaluate", token(9)),
        Call("expr_evaluate", token(10)),
        Call("expr_evaluate", token(11)),
        Call("expr_evaluate", token(12)),
        Call("expr_create", b"plugin_root_id + ' ' + plugin_vm_id"),
        Call("expr_evaluate", token(13)),
        Call("expr_create", b"request.method in ['GET', 'HEAD'] && request.url_path == '/get'"),
        Call("expr_evaluate", token(14)),
        Call("expr_create", b"source.address"),
        Call("expr_evaluate", token(15), compare="status"),
        Call("expr_create", b"xds.node.id"),
        Call("expr_evaluate", token(16)),
    ],
}
PATHS = (
    "filter_state/envoy.string,filter_state/envoy.tcp_proxy.cluster,filter_state/envoy.upstream.dynamic_port"
)
# Declared on the root context when the plugin starts (its configuration), then used on a stream.
ROOT_DECLARATIONS = [
    Call("declare_property", declare("ro_prop", readonly=True)),
    Call("declare_property", declare("rw_prop")),
]
STREAM_DECLARATIONS = [
    Call("declare_property", declare("decl_a")),
    Call("declare_property", declare("decl_a")),  # already declared on this context
    Call("declare_property", b"\xff"),
    Call(
        "declare_property", declare("decl_b", readonly=True, kind=1)
    ),  # on the stream: set_property ignores it
    Call("declare_property", b""),
]
SETTINGS = "ro_prop=v1,ro_prop=v2,rw_prop=v1,rw_prop=v2,decl_b=1,decl_b=2"


NODE = Attributes(node_id="meshwasm-gateway")  # the session's Envoy


def spec(calls: list[Call]) -> str:
    return ",".join(f"{call.name}:{call.argument.hex()}" for call in calls)


def compare(calls: list[Call], envoy: list[str], host: list[str]) -> None:
    assert len(envoy) == len(host) == len(calls), (envoy, host)
    for call, by_envoy, by_host in zip(calls, envoy, host, strict=True):
        if call.compare == "exact":
            assert by_host == by_envoy, call
            continue
        assert by_host.rsplit(" ", 1)[0] == by_envoy.rsplit(" ", 1)[0], call  # the status
        if call.compare == "ecdsa":  # SignResult {result: true, signature}: each must verify
            for line in (by_envoy, by_host):
                result = bytes.fromhex(line.rsplit(" ", 1)[1])
                assert result[:3] == b"\x08\x01\x12"
                EC_KEY.public_key().verify(result[4:], TEXT, ec.ECDSA(hashes.SHA256()))


# The probe's upstream does not matter: a direct response (httpbin refuses header fields over 8 KiB).
OK_ROUTE = [r.virtual_host("ok", ["*"], [r.direct_response_route("/", 200, "ok")])]


def ok(headers: HeaderMap, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    return 200, [], b"ok"


@pytest.fixture(scope="module")
def probe(diff, sdk_examples_wasm):
    root_id = f"probe/{next_name()}"
    port = diff.serve(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples", virtual_hosts=OK_ROUTE)
    return root_id, port


@pytest.mark.parametrize("group", list(GROUPS))
def test_foreign_functions_as_in_envoy(diff, sdk_examples_wasm, probe, group):
    root_id, port = probe
    calls = GROUPS[group]
    request = Request(
        path="/get", headers=[("x-probe", "foreign"), ("x-foreign", spec(calls)), ("x-paths", PATHS)]
    )
    earlier = messages(diff.envoy_logs(root_id))
    assert diff.via_envoy(port, request).status == 200
    envoy = messages(diff.wait_envoy_log(root_id, "foreign done", count=earlier.count("foreign done") + 1))
    envoy = envoy[len(earlier) :]
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples", attributes=NODE)
    assert diff.via_host(plugin, request, ok).status == 200
    host = plugin.logs_at("info")
    calls_of = lambda logs: [m for m in logs if m.startswith("stream foreign ")]  # noqa: E731
    compare(calls, calls_of(envoy), calls_of(host))
    properties_of = lambda logs: [m for m in logs if m.startswith("foreign ")]  # noqa: E731
    assert properties_of(host) == properties_of(envoy)


def test_declared_properties_as_in_envoy(diff, sdk_examples_wasm):
    root_id = f"probe/{next_name()}"
    config = spec(ROOT_DECLARATIONS)
    port = diff.serve(
        sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples", config=config, virtual_hosts=OK_ROUTE
    )
    request = Request(
        path="/get",
        headers=[
            ("x-probe", "foreign"),
            ("x-foreign", spec(STREAM_DECLARATIONS)),
            ("x-set", SETTINGS),
            ("x-paths", "decl_a,ro_prop,rw_prop,decl_b"),
        ],
    )
    assert diff.via_envoy(port, request).status == 200
    envoy = messages(diff.wait_envoy_log(root_id, "foreign done"))
    plugin = Plugin.load(sdk_examples_wasm, root_id=root_id, vm_id="sdk-examples", config=config)
    assert diff.via_host(plugin, request, ok).status == 200
    host = plugin.logs_at("info")
    wanted = ("start foreign ", "stream foreign ", "set ", "foreign ")
    # Envoy starts the plugin once per thread: the root context's lines show once per VM copy.
    envoy_lines = [m for m in envoy if m.startswith(wanted[1:])]
    assert [m for m in host if m.startswith(wanted[1:])] == envoy_lines
    started = [m for m in host if m.startswith(wanted[0])]
    assert (
        started
        == [m for m in envoy if m.startswith(wanted[0])][: len(started)]
        == ["start foreign declare_property: ok "] * len(ROOT_DECLARATIONS)
    )
    assert "set ro_prop=v2: error status returned by host: bad argument" in envoy_lines  # readonly
    assert "foreign ro_prop=7631" in envoy_lines
