"""Reading manifests the way Istio's agent does (pure: bytes and dicts in, decisions out).

Istio (pkg/wasm/imagefetcher.go ``PrepareFetch``) resolves an index to its linux/amd64 image
(go-containerregistry's default platform; see :func:`select_from_index`), then takes the module from

- a Docker v2 schema 2 manifest: ``plugin.wasm`` in the LAST layer, which must be
  ``application/vnd.docker.image.rootfs.diff.tar.gzip`` (any number of layers; nothing else is tried);
- any other (OCI) manifest: first the ``compat`` variant, ``plugin.wasm`` in the LAST layer if that
  layer is ``application/vnd.oci.image.layer.v1.tar+gzip`` (any number of layers); if that fails,
  the ``oci`` variant: EXACTLY two layers, the module being the first one of media type
  ``application/vnd.module.wasm.content.layer.v1+wasm`` (the other is the runtime config).

Neither the manifest's ``module.wasm.image/variant`` annotation nor its config is looked at.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import IO, Any, Literal

from meshwasm.oci import mediatypes as mt
from meshwasm.oci.errors import NotAWasmImage, RegistryError
from meshwasm.oci.image import Descriptor, check_wasm
from meshwasm.oci.layer import extract_member

PulledVariant = Literal["compat", "oci", "docker"]
# go-containerregistry's default platform, the one Istio's agent resolves indexes to.
_OS, _ARCHITECTURE = "linux", "amd64"


@dataclass(frozen=True)
class WasmLayer:
    """Which layer of an image manifest holds the module, and in which variant."""

    variant: PulledVariant
    layer: Descriptor
    fallback: WasmLayer | None = None


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
    """The image an index resolves to, as Istio's agent resolves it: the FIRST entry whose platform
    is linux/amd64 (any variant; an entry without a platform counts as linux/amd64), which is
    go-containerregistry's default platform (remote/index.go ``childByPlatform``). An index without
    one is refused, even if it holds a wasm image for another platform."""
    entries = doc.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise NotAWasmImage(f"{where}: image index lists no manifests")
    descriptors = [Descriptor.from_json(e, where=f"{where} manifests[{i}]") for i, e in enumerate(entries)]
    for desc in descriptors:
        platform = desc.platform or {"os": _OS, "architecture": _ARCHITECTURE}
        if platform.get("os") == _OS and platform.get("architecture") == _ARCHITECTURE:
            return desc
    found = ", ".join(_platform_name(d.platform) for d in descriptors)
    raise NotAWasmImage(
        f"{where}: the image index has no {_OS}/{_ARCHITECTURE} image (it has {found})",
        hint=f"Istio's agent takes an index's {_OS}/{_ARCHITECTURE} entry and nothing else; push the wasm "
        f"image itself (no index), or list it in the index with platform {_OS}/{_ARCHITECTURE}",
    )


def _platform_name(platform: dict[str, Any] | None) -> str:
    if not platform:
        return "no platform"
    return f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"


def find_wasm_layer(media_type: str, doc: dict[str, Any], *, where: str) -> WasmLayer:
    """Decide, as Istio does, which layer holds the module; :class:`NotAWasmImage` if none can.

    The answer's ``fallback`` is the layer Istio tries next when extracting from this one fails
    (an OCI manifest's last tar+gzip layer without ``plugin.wasm``, beside a wasm layer).
    """
    raw_layers = doc.get("layers")
    layers = [
        Descriptor.from_json(item, where=f"{where} layer {i}")
        for i, item in enumerate(raw_layers if isinstance(raw_layers, list) else [])
    ]
    if media_type == mt.DOCKER_MANIFEST:
        if not layers:
            raise NotAWasmImage(f"{where}: the Docker image has no layers, so no wasm module", hint=_SHAPES)
        last = layers[-1]
        if last.media_type != mt.DOCKER_LAYER_TAR_GZIP:
            raise NotAWasmImage(
                f"{where}: the Docker image's last layer is {last.media_type}, not "
                f"{mt.DOCKER_LAYER_TAR_GZIP} (Istio takes the module from the last layer only)",
                hint=_SHAPES,
            )
        return WasmLayer("docker", last)
    problems: list[str] = []
    compat: WasmLayer | None = None
    if not layers:
        problems.append("compat: the image has no layers")
    elif layers[-1].media_type == mt.OCI_LAYER_TAR_GZIP:
        compat = WasmLayer("compat", layers[-1])
    else:
        problems.append(f"compat: the last layer is {layers[-1].media_type}, not {mt.OCI_LAYER_TAR_GZIP}")
    artifact: WasmLayer | None = None
    if len(layers) != 2:
        problems.append(f"oci: it has {len(layers)} layers, not exactly 2 (runtime config and module)")
    else:
        wasm = next((layer for layer in layers if layer.media_type == mt.WASM_LAYER), None)
        if wasm is None:
            problems.append(f"oci: neither of its 2 layers is {mt.WASM_LAYER}")
        else:
            artifact = WasmLayer("oci", wasm)
    if compat is not None:
        return WasmLayer(compat.variant, compat.layer, fallback=artifact)
    if artifact is not None:
        return artifact
    raise NotAWasmImage(f"{where}: not a wasm image ({'; '.join(problems)})", hint=_SHAPES)


_SHAPES = (
    "Istio's agent takes plugin.wasm from the last tar+gzip layer (Docker or compat variant), or an "
    "application/vnd.module.wasm.content.layer.v1+wasm layer from an image of exactly two layers (oci "
    "variant); build one with `meshwasm image build`"
)


def plugin_member(member: tarfile.TarInfo) -> bool:
    """The tar entry that holds the module, as Istio's agent picks it (pkg/wasm/imagefetcher.go
    ``extractWasmPluginBinary``): the FIRST entry whose base name is ``plugin.wasm``, of any type. A
    directory or link of that name is taken too (and yields no module, see
    :func:`meshwasm.oci.layer.extract_member`); a regular file after it is never reached."""
    return go_base(member.name) == mt.PLUGIN_FILE


def go_base(name: str) -> str:
    """Go's ``filepath.Base`` on Linux: trailing slashes dropped, then the last element; ``.`` and
    ``..`` are elements like any other (unlike :class:`pathlib.PurePosixPath`, which drops ``.``)."""
    if not name:
        return "."
    stripped = name.rstrip("/")
    if not stripped:
        return "/"
    return stripped.rsplit("/", 1)[-1]


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
