"""Which layer holds the module, decided as Istio's agent decides (pkg/wasm/imagefetcher.go)."""

from __future__ import annotations

import gzip
import io
import tarfile
from typing import Any

import pytest

from fixtures.oci_modules import synthetic_module
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.errors import ModuleTooLarge, NotAWasmImage
from meshwasm.oci.manifest import find_wasm_layer, parse_manifest, plugin_from_tar_gz, select_from_index


def _desc(media_type: str, n: int = 1) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + f"{n:x}" * 64, "size": 10 * n}


def _manifest(*layers: str, config: str = mt.OCI_CONFIG) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "config": _desc(config, 9),
        "layers": [_desc(m, i + 1) for i, m in enumerate(layers)],
    }


def test_docker_v2_uses_the_last_layer() -> None:
    doc = _manifest(mt.DOCKER_LAYER_TAR_GZIP, mt.DOCKER_LAYER_TAR_GZIP, config=mt.DOCKER_CONFIG)
    found = find_wasm_layer(mt.DOCKER_MANIFEST, doc, where="x")
    assert found.variant == "docker"
    assert found.layer.digest == doc["layers"][-1]["digest"]


def test_compat_and_oci_variants() -> None:
    assert find_wasm_layer(mt.OCI_MANIFEST, _manifest(mt.OCI_LAYER_TAR_GZIP), where="x").variant == "compat"
    oci = _manifest(mt.WASM_LAYER, config=mt.WASM_CONFIG)
    assert find_wasm_layer(mt.OCI_MANIFEST, oci, where="x").variant == "oci"


@pytest.mark.parametrize(
    "layers",
    [
        (),  # no layers at all
        ("application/vnd.oci.image.layer.v1.tar",),  # uncompressed tar: not a shape Istio takes
        (mt.OCI_LAYER_TAR_GZIP, mt.OCI_LAYER_TAR_GZIP),  # compat must have exactly one layer
        (mt.WASM_LAYER, mt.WASM_LAYER),  # oci variant: config + exactly one wasm layer
        ("application/vnd.cncf.helm.chart.content.v1.tar+gzip",),
    ],
)
def test_images_without_a_wasm_layer_are_refused(layers: tuple[str, ...]) -> None:
    with pytest.raises(NotAWasmImage) as caught:
        find_wasm_layer(mt.OCI_MANIFEST, _manifest(*layers), where="reg/x:v1")
    assert "reg/x:v1" in str(caught.value)
    assert caught.value.hint
    assert "meshwasm image build" in caught.value.hint


def test_index_prefers_wasm_then_linux_amd64_then_first() -> None:
    def entry(os_name: str, arch: str, n: int) -> dict[str, Any]:
        return {**_desc(mt.OCI_MANIFEST, n), "platform": {"os": os_name, "architecture": arch}}

    arm, amd, wasm = entry("linux", "arm64", 1), entry("linux", "amd64", 2), entry("wasip1", "wasm", 3)
    assert select_from_index({"manifests": [arm, amd, wasm]}, where="x").digest == wasm["digest"]
    assert select_from_index({"manifests": [arm, amd]}, where="x").digest == amd["digest"]
    assert select_from_index({"manifests": [arm]}, where="x").digest == arm["digest"]
    with pytest.raises(NotAWasmImage, match="no manifests"):
        select_from_index({"manifests": []}, where="x")


def test_parse_manifest_media_types() -> None:
    assert parse_manifest(b'{"manifests": []}', content_type=None, where="x")[0] == mt.OCI_INDEX
    assert (
        parse_manifest(b'{"layers": []}', content_type=mt.DOCKER_MANIFEST, where="x")[0] == mt.DOCKER_MANIFEST
    )
    with pytest.raises(NotAWasmImage, match="schema 1"):
        parse_manifest(
            b'{"mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"}',
            content_type=None,
            where="x",
        )


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue())


def test_plugin_extraction() -> None:
    module = synthetic_module(2048)
    layer = _tar_gz({"README.md": b"hello", "./plugin.wasm": module})
    assert plugin_from_tar_gz(layer, max_size=4096, where="x") == module
    with pytest.raises(ModuleTooLarge, match="over the 1024-byte limit"):
        plugin_from_tar_gz(layer, max_size=1024, where="x")
    with pytest.raises(NotAWasmImage, match=r"no plugin\.wasm"):
        plugin_from_tar_gz(_tar_gz({"other.wasm": module}), max_size=4096, where="x")
    with pytest.raises(NotAWasmImage, match="not a WebAssembly module"):
        plugin_from_tar_gz(_tar_gz({"plugin.wasm": b"ELF...."}), max_size=4096, where="x")
    with pytest.raises(NotAWasmImage, match="tar"):
        plugin_from_tar_gz(b"not gzip at all", max_size=4096, where="x")


def test_gzip_bomb_stops_at_the_cap() -> None:
    bomb = _tar_gz({"filler": b"\0" * (8 << 20), "plugin.wasm": synthetic_module(64)})
    assert len(bomb) < 100_000
    with pytest.raises(ModuleTooLarge, match="expands past"):
        plugin_from_tar_gz(bomb, max_size=1 << 20, where="x")
