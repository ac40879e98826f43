"""Which layer holds the module, decided as Istio's agent decides (pkg/wasm/imagefetcher.go)."""

from __future__ import annotations

import gzip
import io
import tarfile
from typing import Any

import pytest

from fixtures.oci_modules import synthetic_module
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.errors import ModuleTooLarge, NotAWasmImage, PluginNotInLayer
from meshwasm.oci.manifest import find_wasm_layer, parse_manifest, plugin_from_tar_gz, select_from_index


def _desc(media_type: str, n: int = 1) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + f"{n:x}" * 64, "size": 10 * n}


def _manifest(*layers: str, config: str = mt.OCI_CONFIG) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "config": _desc(config, 9),
        "layers": [_desc(m, i + 1) for i, m in enumerate(layers)],
    }


def test_docker_v2_uses_the_last_layer_and_only_a_docker_layer() -> None:
    doc = _manifest(mt.DOCKER_LAYER_TAR_GZIP, mt.DOCKER_LAYER_TAR_GZIP, config=mt.DOCKER_CONFIG)
    found = find_wasm_layer(mt.DOCKER_MANIFEST, doc, where="x")
    assert found.variant == "docker"
    assert found.layer.digest == doc["layers"][-1]["digest"]
    # An OCI layer type in a Docker manifest: Istio tries nothing else.
    with pytest.raises(NotAWasmImage, match=r"last layer is application/vnd\.oci\.image\.layer\.v1\.tar"):
        find_wasm_layer(mt.DOCKER_MANIFEST, _manifest(mt.OCI_LAYER_TAR_GZIP), where="x")


def test_compat_takes_the_last_layer_of_any_number() -> None:
    for count in (1, 3):
        doc = _manifest(*[mt.OCI_LAYER_TAR_GZIP] * count)
        found = find_wasm_layer(mt.OCI_MANIFEST, doc, where="x")
        assert (found.variant, found.layer.digest) == ("compat", doc["layers"][-1]["digest"])
        assert found.fallback is None


def test_oci_variant_needs_exactly_two_layers_and_takes_the_wasm_one() -> None:
    for layers in ((mt.WASM_CONFIG, mt.WASM_LAYER), (mt.WASM_LAYER, mt.WASM_CONFIG)):
        doc = _manifest(*layers, config=mt.WASM_CONFIG)
        found = find_wasm_layer(mt.OCI_MANIFEST, doc, where="x")
        assert found.variant == "oci"
        assert found.layer.media_type == mt.WASM_LAYER
    with pytest.raises(NotAWasmImage, match="1 layers, not exactly 2"):
        find_wasm_layer(mt.OCI_MANIFEST, _manifest(mt.WASM_LAYER, config=mt.WASM_CONFIG), where="x")
    # A last tar+gzip layer comes first (compat); the wasm layer is where Istio goes next.
    both = find_wasm_layer(mt.OCI_MANIFEST, _manifest(mt.WASM_LAYER, mt.OCI_LAYER_TAR_GZIP), where="x")
    assert both.variant == "compat"
    assert both.fallback is not None
    assert both.fallback.variant == "oci"


@pytest.mark.parametrize(
    "layers",
    [
        (),  # no layers at all
        ("application/vnd.oci.image.layer.v1.tar",),  # uncompressed tar: not a shape Istio takes
        (mt.OCI_LAYER_TAR_GZIP, mt.DOCKER_LAYER_TAR_GZIP),  # compat: the last layer must be OCI tar+gzip
        (mt.WASM_LAYER,),  # oci variant: exactly two layers
        (mt.WASM_LAYER, mt.WASM_CONFIG, mt.WASM_CONFIG),
        (mt.WASM_CONFIG, mt.WASM_CONFIG),  # two layers, none of them wasm
        ("application/vnd.cncf.helm.chart.content.v1.tar+gzip",),
    ],
)
def test_images_without_a_wasm_layer_are_refused(layers: tuple[str, ...]) -> None:
    with pytest.raises(NotAWasmImage) as caught:
        find_wasm_layer(mt.OCI_MANIFEST, _manifest(*layers), where="reg/x:v1")
    assert "reg/x:v1" in str(caught.value)
    assert caught.value.hint
    assert "meshwasm image build" in caught.value.hint


def test_index_takes_the_first_linux_amd64_entry_and_nothing_else() -> None:
    def entry(n: int, os_name: str | None = None, arch: str = "", variant: str = "") -> dict[str, Any]:
        doc = _desc(mt.OCI_MANIFEST, n)
        if os_name:
            doc["platform"] = {"os": os_name, "architecture": arch}
            if variant:
                doc["platform"]["variant"] = variant
        return doc

    arm, amd, wasm = entry(1, "linux", "arm64"), entry(2, "linux", "amd64"), entry(3, "wasip1", "wasm")
    amd_v3 = entry(4, "linux", "amd64", "v3")
    assert select_from_index({"manifests": [wasm, arm, amd]}, where="x").digest == amd["digest"]
    assert select_from_index({"manifests": [arm, amd_v3, amd]}, where="x").digest == amd_v3["digest"]
    # An entry without a platform counts as linux/amd64 (go-containerregistry).
    bare = entry(5)
    assert select_from_index({"manifests": [arm, bare, amd]}, where="x").digest == bare["digest"]
    with pytest.raises(NotAWasmImage, match=r"no linux/amd64 image \(it has linux/arm64, wasip1/wasm\)"):
        select_from_index({"manifests": [arm, wasm]}, where="x")
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
    with pytest.raises(PluginNotInLayer, match=r"no plugin\.wasm"):
        plugin_from_tar_gz(_tar_gz({"other.wasm": module}), max_size=4096, where="x")
    with pytest.raises(NotAWasmImage, match="not a WebAssembly module"):
        plugin_from_tar_gz(_tar_gz({"plugin.wasm": b"ELF...."}), max_size=4096, where="x")
    with pytest.raises(PluginNotInLayer, match="tar"):
        plugin_from_tar_gz(b"not gzip at all", max_size=4096, where="x")
    # Content that is not wasm is not a missing plugin: Istio does not try another variant then.
    with pytest.raises(NotAWasmImage) as caught:
        plugin_from_tar_gz(_tar_gz({"plugin.wasm": b"\0asm"}), max_size=4096, where="x")
    assert not isinstance(caught.value, PluginNotInLayer)


def test_gzip_bomb_stops_at_the_cap() -> None:
    bomb = _tar_gz({"filler": b"\0" * (8 << 20), "plugin.wasm": synthetic_module(64)})
    assert len(bomb) < 100_000
    with pytest.raises(ModuleTooLarge, match="expands past"):
        plugin_from_tar_gz(bomb, max_size=1 << 20, where="x")
