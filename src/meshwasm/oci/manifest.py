"""Reading manifests the way Istio's agent does (pure: bytes and dicts in, decisions out).

Istio (pkg/wasm/imagefetcher.go) accepts, in this order:

- a Docker v2 manifest: the module is ``plugin.wasm`` in the LAST layer (a tar+gzip);
- an OCI manifest with exactly one ``application/vnd.oci.image.layer.v1.tar+gzip`` layer holding
  ``plugin.wasm`` (the ``compat`` variant);
- an OCI manifest with exactly one ``application/vnd.module.wasm.content.layer.v1+wasm`` layer (the
  ``oci`` variant: config + wasm layer, two descriptors).

Indexes and manifest lists are followed to one image (see :func:`select_from_index`).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any, Literal

from meshwasm.oci import mediatypes as mt
from meshwasm.oci.errors import NotAWasmImage, RegistryError
from meshwasm.oci.image import Descriptor, check_wasm
from meshwasm.oci.layer import extract_member

PulledVariant = Literal["compat", "oci", "docker"]
_TAR_GZIP_LAYERS = (mt.OCI_LAYER_TAR_GZIP, mt.DOCKER_LAYER_TAR_GZIP)
# Platforms tried in order when an index lists several images.
_PREFERRED_PLATFORMS = (("wasip1", "wasm"), ("wasi", "wasm"), ("linux", "amd64"))


@dataclass(frozen=True)
class WasmLayer:
    """Which layer of an image manifest holds the module, and in which variant."""

    variant: PulledVariant
    layer: Descriptor


def parse_manifest(raw: bytes, *, content_type: str | None, where: str) -> tuple[str, dict[str, Any]]:
    """Decode a manifest; returns (media type, document). The media type comes from the document,
    else the Content-Type header, else the shape (``manifests`` means an index)."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{where}: manifest is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"{where}: manifest is not a JSON object")
    media_type = doc.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        header = (content_type or "").split(";", 1)[0].strip()
        if header in mt.IMAGE_MANIFESTS or header in mt.INDEXES:
            media_type = header
        else:
            media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if media_type not in mt.IMAGE_MANIFESTS and media_type not in mt.INDEXES:
        raise NotAWasmImage(
            f"{where}: unsupported manifest type {media_type!r}",
            hint="wasm images are OCI or Docker v2 schema 2 manifests (schema 1 is not supported)",
        )
    return media_type, doc


def select_from_index(doc: dict[str, Any], *, where: str) -> Descriptor:
    """Pick the image an index points at: a wasm platform first, then linux/amd64 (what Istio's
    go-containerregistry picks by default), else the only entry, else the first."""
    entries = doc.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise NotAWasmImage(f"{where}: image index lists no manifests")
    descriptors = [Descriptor.from_json(e, where=f"{where} manifests[{i}]") for i, e in enumerate(entries)]
    for os_name, arch in _PREFERRED_PLATFORMS:
        for desc in descriptors:
            platform = desc.platform or {}
            if platform.get("os") == os_name and platform.get("architecture") == arch:
                return desc
    return descriptors[0]


def find_wasm_layer(media_type: str, doc: dict[str, Any], *, where: str) -> WasmLayer:
    """Decide, as Istio does, which layer holds the module; :class:`NotAWasmImage` if none does."""
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise NotAWasmImage(f"{where}: the manifest has no layers, so no wasm module", hint=_SHAPES)
    layers = [Descriptor.from_json(item, where=f"{where} layer {i}") for i, item in enumerate(raw_layers)]
    if media_type == mt.DOCKER_MANIFEST:
        last = layers[-1]
        if last.media_type in _TAR_GZIP_LAYERS:
            return WasmLayer("docker", last)
    elif len(layers) == 1 and layers[0].media_type == mt.OCI_LAYER_TAR_GZIP:
        return WasmLayer("compat", layers[0])
    elif len(layers) == 1 and layers[0].media_type == mt.WASM_LAYER:
        return WasmLayer("oci", layers[0])
    kinds = ", ".join(layer.media_type for layer in layers)
    raise NotAWasmImage(f"{where}: no wasm layer in this image (layers: {kinds})", hint=_SHAPES)


_SHAPES = (
    "a wasm image has one application/vnd.module.wasm.content.layer.v1+wasm layer (oci variant) or one "
    "tar+gzip layer holding plugin.wasm (compat); build one with `meshwasm image build`"
)


def plugin_member(member: tarfile.TarInfo) -> bool:
    """The tar entry that holds the module (the compat spec's ``plugin.wasm``)."""
    return member.isfile() and PurePosixPath(member.name).name == mt.PLUGIN_FILE


def extract_plugin(layer: IO[bytes], sink: IO[bytes], *, max_size: int, where: str) -> int:
    """Stream ``plugin.wasm`` out of a tar+gzip layer into ``sink``; returns its size.

    Bounded in entries, bytes and time by :func:`meshwasm.oci.layer.extract_member`; the tar
    around the module adds headers, so the stream may exceed the module cap by a MiB.
    """
    return extract_member(
        layer,
        sink,
        select=plugin_member,
        max_size=max_size,
        max_bytes=max_size + (1 << 20),
        where=where,
        name=mt.PLUGIN_FILE,
        check_head=lambda head: check_wasm(head, source=f"{where} plugin.wasm"),
        missing_hint=_SHAPES,
    )


def plugin_from_tar_gz(layer: bytes, *, max_size: int, where: str) -> bytes:
    """The ``plugin.wasm`` member of a tar+gzip layer held in memory (small layers, tests)."""
    out = io.BytesIO()
    extract_plugin(io.BytesIO(layer), out, max_size=max_size, where=where)
    return out.getvalue()


def tar_member_size(layer: bytes, *, max_size: int, where: str) -> int:
    """Size of ``plugin.wasm`` inside a tar+gzip layer (for inspect)."""
    return len(plugin_from_tar_gz(layer, max_size=max_size, where=where))
