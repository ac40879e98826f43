"""An independent client agrees: skopeo reads what meshwasm pushed, and meshwasm pulls what skopeo pushed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fixtures.oci_modules import skopeo
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image, write_layout
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference

pytestmark = pytest.mark.registry
PLAIN = "--tls-verify=false"  # our registries are plain http on loopback


def _ok(result: object) -> str:
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    return result.stdout  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("variant", ["compat", "oci"])
def test_skopeo_reads_what_meshwasm_pushed(variant: str, registry: LocalRegistry, go_wasm: Path) -> None:
    image = build_image(go_wasm.read_bytes(), variant=variant)  # type: ignore[arg-type]
    ref = parse_reference(f"{registry.address}/agree/add-header:{variant}")
    with RegistryClient() as client:
        digest = client.push_image(image, ref)
    raw = _ok(skopeo("inspect", PLAIN, "--raw", f"docker://{ref}"))
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest == image.manifest_digest
    manifest = json.loads(raw)
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    if variant == "compat":
        assert manifest["config"]["mediaType"] == mt.OCI_CONFIG
        assert [layer["mediaType"] for layer in manifest["layers"]] == [mt.OCI_LAYER_TAR_GZIP]
        assert manifest["annotations"][mt.VARIANT_ANNOTATION] == "compat"
        summary = json.loads(_ok(skopeo("inspect", PLAIN, f"docker://{ref}")))
        assert summary["Digest"] == digest
        assert summary["Layers"] == [image.layers[0].digest]
    else:
        assert manifest["config"]["mediaType"] == mt.WASM_CONFIG
        # The spec's two layers, which Istio's agent requires: runtime config, then the module.
        assert [layer["mediaType"] for layer in manifest["layers"]] == [mt.WASM_CONFIG, mt.WASM_LAYER]
        config = json.loads(_ok(skopeo("inspect", PLAIN, "--config", "--raw", f"docker://{ref}")))
        assert config["type"] == "envoy_proxy"


def test_skopeo_copies_meshwasm_layouts_and_images_byte_for_byte(
    registry: LocalRegistry, go_wasm: Path, tmp_path: Path
) -> None:
    module = go_wasm.read_bytes()
    image = build_image(module, variant="compat")
    write_layout(image, tmp_path / "ours", tag="v1")
    # skopeo pushes OUR layout; meshwasm pulls it.
    target = f"{registry.address}/skopeo-pushed/add-header:v1"
    _ok(
        skopeo(
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            f"oci:{tmp_path / 'ours'}:v1",
            f"docker://{target}",
        )
    )
    with RegistryClient() as client:
        pulled = client.pull_module(parse_reference(target))
    assert pulled.data == module
    assert pulled.manifest_digest == image.manifest_digest  # skopeo kept our manifest unchanged
    # skopeo copies what meshwasm pushed back into a layout: same manifest, same blobs.
    _ok(
        skopeo(
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            f"docker://{target}",
            f"oci:{tmp_path / 'theirs'}:v1",
        )
    )
    index = json.loads((tmp_path / "theirs" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [image.manifest_digest]
    for digest, data in image.blobs.items():
        assert (tmp_path / "theirs" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == data


def test_meshwasm_pulls_a_docker_v2_image_skopeo_made(registry: LocalRegistry, go_wasm: Path) -> None:
    """skopeo converts the compat image to a Docker v2 schema 2 manifest (docker media types): the
    shape `docker build` + `docker push` of the seed's Dockerfile produces."""
    module = go_wasm.read_bytes()
    source = parse_reference(f"{registry.address}/docker-src/add-header:v1")
    with RegistryClient() as client:
        client.push_image(build_image(module, variant="compat"), source)
    target = f"{registry.address}/docker-v2/add-header:v1"
    plain_both = ("--src-tls-verify=false", "--dest-tls-verify=false")
    _ok(
        skopeo(
            "--insecure-policy",
            "copy",
            "--format",
            "v2s2",
            *plain_both,
            f"docker://{source}",
            f"docker://{target}",
        )
    )
    manifest = json.loads(_ok(skopeo("inspect", PLAIN, "--raw", f"docker://{target}")))
    assert manifest["mediaType"] == mt.DOCKER_MANIFEST
    assert manifest["layers"][-1]["mediaType"] == mt.DOCKER_LAYER_TAR_GZIP
    with RegistryClient() as client:
        pulled = client.pull_module(parse_reference(target))
        info = client.inspect(parse_reference(target))
    assert pulled.variant == "docker"
    assert pulled.data == module
    assert info.media_type == mt.DOCKER_MANIFEST
    assert info.module_size == len(module)
