"""Every bad input and fault of issue 3, against the real registry: a clear error, the right exit
code, nothing partial left behind."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.oci_modules import run_meshwasm, synthetic_module
from meshwasm.errors import ExitCode
from meshwasm.net import free_port
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.errors import (
    DigestMismatch,
    ImageNotFound,
    InsecureRegistryError,
    ModuleTooLarge,
    NotAWasmImage,
    RegistryUnavailable,
)
from meshwasm.oci.image import Descriptor, build_image, canonical_json, plugin_tar_gz, sha256_digest
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import Reference, parse_reference

pytestmark = pytest.mark.registry


def test_not_a_wasm_module_is_refused_before_any_upload(registry: LocalRegistry, tmp_path: Path) -> None:
    text = tmp_path / "plugin.wasm"
    text.write_text("this is not wasm")
    posts = registry.count_requests("POST")
    result = run_meshwasm("image", "push", str(text), f"{registry.address}/bad/notwasm:v1")
    assert result.returncode == ExitCode.INTEGRITY
    assert "not a WebAssembly module" in result.stderr
    assert str(text) in result.stderr
    assert registry.count_requests("POST") == posts
    built = run_meshwasm("image", "build", str(text), "-t", "x/y:z", "-o", str(tmp_path / "layout"))
    assert built.returncode == ExitCode.INTEGRITY
    assert not (tmp_path / "layout").exists()


def test_missing_file(tmp_path: Path) -> None:
    result = run_meshwasm("image", "build", str(tmp_path / "nope.wasm"), "-t", "x/y:z")
    assert result.returncode == ExitCode.NOT_FOUND
    assert "nope.wasm: no such file" in result.stderr


def test_malformed_reference(tmp_path: Path) -> None:
    result = run_meshwasm("image", "pull", "localhost:5000/Add Header:v1", "-o", str(tmp_path))
    assert result.returncode == ExitCode.USAGE
    assert "invalid image reference" in result.stderr


def test_unknown_registry_host(tmp_path: Path) -> None:
    result = run_meshwasm("image", "pull", "no-such-registry.invalid/x:v1", "-o", str(tmp_path / "out"))
    assert result.returncode == ExitCode.NETWORK
    assert "no-such-registry.invalid" in result.stderr
    assert "unknown host" in result.stderr
    assert not (tmp_path / "out").exists()


def test_connection_refused(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = run_meshwasm("image", "inspect", f"127.0.0.1:{port}/x:v1")
    assert result.returncode == ExitCode.NETWORK
    assert f"cannot reach registry 127.0.0.1:{port}: connection refused" in result.stderr


def test_image_not_found(registry: LocalRegistry, tmp_path: Path) -> None:
    with RegistryClient() as client:
        client.push_image(
            build_image(synthetic_module(500)), parse_reference(f"{registry.address}/exists/x:v1")
        )
    for missing in ("exists/x:v2", "never/pushed:v1", f"exists/x@sha256:{'0' * 64}"):
        result = run_meshwasm("image", "pull", f"{registry.address}/{missing}", "-o", str(tmp_path / "out"))
        assert result.returncode == ExitCode.NOT_FOUND, result.stderr
        assert "not found" in result.stderr
    assert not (tmp_path / "out").exists()


def _push_raw_image(client: RegistryClient, ref: Reference, layers: list[tuple[str, bytes]]) -> str:
    """Push an image with arbitrary layers (what other tools may put in a registry)."""
    config = b"{}"
    config_desc = Descriptor(mt.OCI_CONFIG, sha256_digest(config), len(config))
    descs = [Descriptor(media_type, sha256_digest(data), len(data)) for media_type, data in layers]
    for desc, data in [(config_desc, config), *zip(descs, (d for _, d in layers), strict=True)]:
        client.push_blob(ref, desc, lambda data=data: io.BytesIO(data))  # type: ignore[misc]
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [d.to_json() for d in descs],
        }
    )
    return client.put_manifest(ref, manifest, mt.OCI_MANIFEST)


def test_manifest_with_no_wasm_layer(registry: LocalRegistry, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("README.md")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    ref = parse_reference(f"{registry.address}/nowasm/readme:v1")
    with RegistryClient() as client:
        _push_raw_image(client, ref, [("application/vnd.oci.image.layer.v1.tar", buffer.getvalue())])
        info_ = client.inspect(ref)
    assert info_.variant is None
    assert info_.module_size is None
    result = run_meshwasm("image", "pull", str(ref), "-o", str(tmp_path / "out"))
    assert result.returncode == ExitCode.INTEGRITY
    assert "not a wasm image" in result.stderr
    assert not (tmp_path / "out").exists()


def test_wasm_layer_whose_content_is_not_wasm(registry: LocalRegistry) -> None:
    ref = parse_reference(f"{registry.address}/nowasm/fake:v1")
    with RegistryClient() as client:
        _push_raw_image(client, ref, [(mt.WASM_CONFIG, b"{}"), (mt.WASM_LAYER, b"#!/bin/sh\n")])
        with pytest.raises(NotAWasmImage, match="not a WebAssembly module"):
            client.pull_module(ref)
        _push_raw_image(client, ref, [(mt.OCI_LAYER_TAR_GZIP, plugin_tar_gz(b"ELF not wasm")[1])])
        with pytest.raises(NotAWasmImage, match="not a WebAssembly module"):
            client.pull_module(ref)


def test_digest_mismatch_writes_nothing(registry: LocalRegistry, tmp_path: Path) -> None:
    """The registry's stored blob is tampered with (same length, different bytes)."""
    module = synthetic_module(10_000, seed=5)
    image = build_image(module, variant="oci")
    ref = parse_reference(f"{registry.address}/tampered/x:v1")
    with RegistryClient() as client:
        client.push_image(image, ref)
    stored = registry.blob_data_path(image.layers[-1].digest)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    result = run_meshwasm("image", "pull", str(ref), "-o", str(out))
    assert result.returncode == ExitCode.INTEGRITY
    assert "content hashes to sha256:" in result.stderr
    assert image.layers[-1].digest in result.stderr
    assert list(out.iterdir()) == []


def test_module_over_the_size_limit(registry: LocalRegistry, tmp_path: Path) -> None:
    module = synthetic_module(200_000, seed=6)
    ref = parse_reference(f"{registry.address}/big/x:v1")
    with RegistryClient() as client:
        client.push_image(build_image(module, variant="oci"), ref)
    blob_gets = registry.count_requests("GET", "/v2/big/x/blobs/")
    result = run_meshwasm("image", "pull", str(ref), "-o", str(tmp_path / "out"), "--max-size", "100000")
    assert result.returncode == ExitCode.INTEGRITY
    assert "over the 100000-byte limit" in result.stderr
    assert registry.count_requests("GET", "/v2/big/x/blobs/") == blob_gets  # refused before downloading
    assert not (tmp_path / "out").exists()
    # compat: the limit holds for the module inside the tar+gzip layer too.
    compat = parse_reference(f"{registry.address}/big/compat:v1")
    with RegistryClient() as client:
        client.push_image(build_image(module, variant="compat"), compat)
    with RegistryClient(max_module_size=100_000) as client, pytest.raises(ModuleTooLarge):
        client.pull_module(compat)


def test_registry_sending_more_than_announced_is_cut_off(registry: LocalRegistry) -> None:
    """The stored blob grows past its descriptor: the registry streams more than the manifest says;
    the client stops at the cap (a size over the cap is ModuleTooLarge, under it a mismatch)."""
    module = synthetic_module(5_000, seed=8)
    image = build_image(module, variant="oci")
    ref = parse_reference(f"{registry.address}/grown/x:v1")
    with RegistryClient() as client:
        client.push_image(image, ref)
    stored = registry.blob_data_path(image.layers[-1].digest)
    stored.write_bytes(stored.read_bytes() + b"\0" * 2_000_000)
    with RegistryClient(max_module_size=1_000_000) as client, pytest.raises(ModuleTooLarge):
        client.pull_module(ref)
    with RegistryClient() as client, pytest.raises(DigestMismatch, match="more than"):
        client.pull_module(ref)


def test_plain_http_needs_insecure_outside_loopback(registry: LocalRegistry) -> None:
    """With loopback treated like any host, a plain-http registry is refused until marked insecure."""
    ref = parse_reference(f"{registry.address}/insecure/x:v1")
    with RegistryClient(plain_http_loopback=False) as client, pytest.raises(InsecureRegistryError) as caught:
        client.push_image(build_image(synthetic_module(500)), ref)
    assert "--insecure" in (caught.value.hint or "")
    with RegistryClient(plain_http_loopback=False, insecure=[registry.address]) as client:
        client.push_image(build_image(synthetic_module(500)), ref)
        assert client.pull_module(ref).size == 500


class _CuttingProxy:
    """A loopback TCP proxy to the registry that, on the first connection carrying more than
    ``cut_after`` bytes from the client, closes both sides mid-stream (a registry or load balancer
    dropping the connection mid-upload: a fault the real registry cannot be made to produce)."""

    def __init__(self, upstream: tuple[str, int], cut_after: int):
        self.upstream, self.cut_after, self.cuts = upstream, cut_after, 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        cut = threading.Event()

        def pump(src: socket.socket, dst: socket.socket, count: bool) -> None:
            sent = 0
            try:
                while not cut.is_set():
                    data = src.recv(65536)
                    if not data:
                        break
                    sent += len(data)
                    if count and self.cuts == 0 and sent > self.cut_after:
                        self.cuts += 1
                        cut.set()
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

        back = threading.Thread(target=pump, args=(upstream, client, False), daemon=True)
        back.start()
        pump(client, upstream, True)
        back.join(timeout=5)
        client.close()
        upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=5)


@pytest.fixture
def cutting_proxy(registry: LocalRegistry) -> Iterator[_CuttingProxy]:
    proxy = _CuttingProxy((registry.host, registry.port), cut_after=300_000)
    try:
        yield proxy
    finally:
        proxy.close()


def test_connection_dropped_mid_upload_fails_then_a_retry_succeeds(
    registry: LocalRegistry, cutting_proxy: _CuttingProxy, tmp_path: Path
) -> None:
    module = synthetic_module(1_000_000, seed=9)
    (tmp_path / "m.wasm").write_bytes(module)
    ref = f"127.0.0.1:{cutting_proxy.port}/dropped/x:v1"
    args = ("image", "push", str(tmp_path / "m.wasm"), ref, "--variant", "oci")
    failed = run_meshwasm(*args)
    assert cutting_proxy.cuts == 1
    assert failed.returncode == ExitCode.NETWORK, failed.stderr
    assert f"the connection to registry 127.0.0.1:{cutting_proxy.port} was dropped" in failed.stderr
    with RegistryClient() as client, pytest.raises(ImageNotFound):  # the failed push left no image
        client.resolve(parse_reference(f"{registry.address}/dropped/x:v1"))
    retried = run_meshwasm(*args)
    assert retried.returncode == 0, retried.stderr
    with RegistryClient() as client:
        assert client.pull_module(parse_reference(f"{registry.address}/dropped/x:v1")).data == module
    assert json.loads(run_meshwasm("image", "inspect", ref, "--json").stdout)["moduleSize"] == len(module)


def test_registry_unavailable_error_is_a_network_exit_code() -> None:
    assert RegistryUnavailable("x").exit_code == ExitCode.NETWORK
