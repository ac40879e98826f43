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

import gzip
import io
import json
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any, Literal

from meshwasm.oci import mediatypes as mt
from meshwasm.oci.errors import ModuleTooLarge, NotAWasmImage, RegistryError
from meshwasm.oci.image import Descriptor, check_wasm

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


class _CappedReader(io.RawIOBase):
    """Reads from ``inner`` but raises :class:`ModuleTooLarge` past ``cap`` bytes (gzip bombs)."""

    def __init__(self, inner: IO[bytes], cap: int, where: str):
        self._inner, self._cap, self._where, self._count = inner, cap, where, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        self._count += len(data)
        if self._count > self._cap:
            raise ModuleTooLarge(f"{self._where}: layer expands past {self._cap} bytes")
        buffer[: len(data)] = data
        return len(data)


def plugin_from_tar_gz(layer: bytes, *, max_size: int, where: str) -> bytes:
    """The ``plugin.wasm`` member of a tar+gzip layer, size-capped while decompressing."""
    # The tar around the module adds headers; a layer that expands far beyond the cap is not ours.
    capped = _CappedReader(gzip.GzipFile(fileobj=io.BytesIO(layer)), max_size + (1 << 20), where)  # type: ignore[arg-type]
    try:
        with tarfile.open(fileobj=io.BufferedReader(capped), mode="r|") as tar:
            for member in tar:
                if not member.isfile() or PurePosixPath(member.name).name != mt.PLUGIN_FILE:
                    continue
                if member.size > max_size:
                    raise ModuleTooLarge(
                        f"{where}: plugin.wasm is {member.size} bytes, over the {max_size}-byte limit"
                    )
                extracted = tar.extractfile(member)
                data = extracted.read() if extracted is not None else b""
                check_wasm(data, source=f"{where} plugin.wasm")
                return data
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise NotAWasmImage(f"{where}: layer is not a readable tar+gzip ({exc})") from exc
    raise NotAWasmImage(f"{where}: the layer holds no plugin.wasm", hint=_SHAPES)


def tar_member_size(layer: bytes, *, max_size: int, where: str) -> int:
    """Size of ``plugin.wasm`` inside a tar+gzip layer (for inspect)."""
    return len(plugin_from_tar_gz(layer, max_size=max_size, where=where))
