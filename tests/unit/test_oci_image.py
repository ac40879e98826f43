"""Wasm images in both variants, exactly as Istio's agent accepts them, built reproducibly."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from fixtures.oci_modules import synthetic_module
from meshwasm.errors import ExitCode, MeshwasmError
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.errors import NotAWasmImage
from meshwasm.oci.image import Layout, build_image, plugin_tar_gz, sha256_digest, write_layout

MODULE = synthetic_module(4096)


def test_compat_variant_shape() -> None:
    image = build_image(MODULE, variant="compat")
    manifest = json.loads(image.manifest)
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    assert manifest["config"]["mediaType"] == mt.OCI_CONFIG
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob = image.blobs[layer["digest"]]
    assert sha256_digest(blob) == layer["digest"]
    assert len(blob) == layer["size"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        [member] = tar.getmembers()
        assert member.name == "plugin.wasm"
        assert member.mtime == 0
        assert member.uid == 0
        assert member.mode == 0o644
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert extracted.read() == MODULE
    config = json.loads(image.blobs[manifest["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [sha256_digest(gzip.decompress(blob))]
    assert "created" not in config


def test_oci_variant_has_the_specs_two_layers_runtime_config_then_module() -> None:
    # Istio's agent refuses an oci-variant image unless it has exactly two layers
    # (tests/fidelity/test_images_shapes.py proves it against Istio's own code).
    image = build_image(MODULE, variant="oci")
    manifest = json.loads(image.manifest)
    assert manifest["config"]["mediaType"] == "application/vnd.module.wasm.config.v1+json"
    runtime_config, module = manifest["layers"]
    assert runtime_config["mediaType"] == "application/vnd.module.wasm.config.v1+json"
    assert runtime_config["annotations"] == {"org.opencontainers.image.title": "runtime-config.json"}
    assert runtime_config["digest"] == manifest["config"]["digest"]
    assert json.loads(image.blobs[runtime_config["digest"]])["type"] == "envoy_proxy"
    assert module["mediaType"] == "application/vnd.module.wasm.content.layer.v1+wasm"
    assert module["annotations"] == {"org.opencontainers.image.title": "plugin.wasm"}
    assert image.blobs[module["digest"]] == MODULE
    assert "annotations" not in manifest


def test_builds_are_reproducible_and_inputs_change_digests() -> None:
    for variant in ("compat", "oci"):
        first = build_image(MODULE, variant=variant)  # type: ignore[arg-type]
        again = build_image(bytes(MODULE), variant=variant)  # type: ignore[arg-type]
        assert first.manifest == again.manifest
        assert first.manifest_digest == again.manifest_digest
    assert build_image(MODULE).manifest_digest != build_image(MODULE, variant="oci").manifest_digest
    assert build_image(MODULE).manifest_digest != build_image(synthetic_module(4096, seed=1)).manifest_digest
    annotated = build_image(MODULE, annotations={mt.SOURCE_ANNOTATION: "https://example/src"})
    assert annotated.manifest_digest != build_image(MODULE).manifest_digest
    assert json.loads(annotated.manifest)["annotations"][mt.SOURCE_ANNOTATION] == "https://example/src"


def test_gzip_has_no_timestamp_or_name() -> None:
    _, layer = plugin_tar_gz(MODULE)
    assert layer[4:8] == b"\0\0\0\0"  # MTIME
    assert not layer[3] & 0x08  # no FNAME


def test_created_only_when_asked() -> None:
    stamp = "2024-01-02T03:04:05Z"
    for variant in ("compat", "oci"):
        image = build_image(MODULE, variant=variant, annotations={mt.CREATED_ANNOTATION: stamp})  # type: ignore[arg-type]
        assert json.loads(image.blobs[image.config.digest])["created"] == stamp
        assert json.loads(image.manifest)["annotations"][mt.CREATED_ANNOTATION] == stamp


def test_not_wasm_is_refused() -> None:
    with pytest.raises(NotAWasmImage, match="not a WebAssembly module") as caught:
        build_image(b"#!/bin/sh\necho hi\n", source="script.sh")
    assert "script.sh" in str(caught.value)
    assert caught.value.exit_code == ExitCode.INTEGRITY


def test_unknown_variant() -> None:
    with pytest.raises(MeshwasmError, match="variant"):
        build_image(MODULE, variant="docker")  # type: ignore[arg-type]


def test_layout_is_standard_and_replaceable(tmp_path: Path) -> None:
    target = tmp_path / "out" / "image"
    image = build_image(MODULE)
    write_layout(image, target, tag="v1")
    assert json.loads((target / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((target / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["digest"] == image.manifest_digest
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "v1"}
    blobs = {p.name for p in (target / "blobs" / "sha256").iterdir()}
    assert blobs == {d.split(":")[1] for d in [*image.blobs, image.manifest_digest]}
    layout = Layout.open(target)
    assert layout.select("v1").digest == image.manifest_digest
    # Rebuilding as the other variant replaces the layout, leaving no stale blob and no temp dir.
    oci = build_image(MODULE, variant="oci")
    write_layout(oci, target, tag="v1")
    assert Layout.open(target).select(None).digest == oci.manifest_digest
    assert {p.name for p in (target / "blobs" / "sha256").iterdir()} == {
        d.split(":")[1] for d in [*oci.blobs, oci.manifest_digest]
    }
    assert sorted(p.name for p in target.parent.iterdir()) == ["image"]


def test_layout_refuses_to_replace_other_directories(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(MeshwasmError, match="not an OCI image layout"):
        write_layout(build_image(MODULE), tmp_path, tag="v1")
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_opening_a_non_layout_is_clear(tmp_path: Path) -> None:
    with pytest.raises(MeshwasmError, match="not an OCI image layout"):
        Layout.open(tmp_path)
