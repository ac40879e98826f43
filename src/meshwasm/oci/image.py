"""Wasm images as bytes (pure) and as OCI image layout directories (``oci-layout``, ``index.json``, blobs).

Two variants, as Istio's agent accepts them (solo-io wasm image spec):

- ``compat``: an ordinary OCI image, one ``tar+gzip`` layer holding ``plugin.wasm``, manifest
  annotation ``module.wasm.image/variant=compat``;
- ``oci``: the solo-io spec's two layers, the runtime config
  (``application/vnd.module.wasm.config.v1+json``, titled ``runtime-config.json``, also the
  manifest's config) and the raw module (``application/vnd.module.wasm.content.layer.v1+wasm``,
  titled ``plugin.wasm``). Istio's agent requires exactly two layers for this variant.

Builds are reproducible: fixed tar metadata (mtime 0, uid/gid 0, no names), gzip without
timestamp or file name, canonical JSON; ``created`` appears only when asked for.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from meshwasm.errors import ExitCode, MeshwasmError, UsageError
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.errors import DigestMismatch, ModuleTooLarge, NotAWasmImage
from meshwasm.wasm.binary import WASM_MAGIC, inspect_module

Variant = Literal["compat", "oci"]
VARIANTS: tuple[Variant, ...] = ("compat", "oci")
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
DEFAULT_MAX_MODULE_SIZE = 256 * 1024 * 1024  # Istio's agent refuses larger modules


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """Compact JSON with keys in insertion order: the same document always gives the same bytes."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about one blob."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The descriptor as it appears in a manifest or index."""
        doc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            doc["annotations"] = dict(sorted(self.annotations.items()))
        if self.platform:
            doc["platform"] = self.platform
        return doc

    @classmethod
    def from_json(cls, doc: Any, *, where: str) -> Descriptor:
        """Parse a descriptor, raising :class:`~meshwasm.errors.MeshwasmError` on a malformed one."""
        if not isinstance(doc, dict):
            raise UsageError(f"{where}: descriptor is not an object")
        try:
            media_type, digest, size = str(doc["mediaType"]), str(doc["digest"]), int(doc["size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{where}: descriptor lacks mediaType, digest or size ({exc})") from exc
        if size < 0 or ":" not in digest:
            raise UsageError(f"{where}: descriptor has a bad digest {digest!r} or size {size}")
        annotations = doc.get("annotations") or {}
        platform = doc.get("platform")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations={str(k): str(v) for k, v in annotations.items()}
            if isinstance(annotations, dict)
            else {},
            platform=platform if isinstance(platform, dict) else None,
        )


@dataclass(frozen=True)
class BuiltImage:
    """One wasm image in memory: its manifest and every blob it names."""

    variant: Variant
    manifest: bytes
    config: Descriptor
    layers: list[Descriptor]
    blobs: dict[str, bytes]  # digest -> bytes, for the config and every layer

    @property
    def manifest_digest(self) -> str:
        """The digest registries will report for this image."""
        return sha256_digest(self.manifest)

    @property
    def manifest_descriptor(self) -> Descriptor:
        """The manifest as a descriptor (for an index or ``index.json``)."""
        return Descriptor(mt.OCI_MANIFEST, self.manifest_digest, len(self.manifest))


def check_wasm(data: bytes, *, source: str) -> None:
    """Raise :class:`NotAWasmImage` unless ``data`` is at least a wasm header (8 bytes) starting with
    the magic ``\\0asm``: what Istio's agent checks (pkg/wasm/cache.go ``isValidWasmBinary``)."""
    if not data.startswith(WASM_MAGIC):
        raise NotAWasmImage(
            f"{source} is not a WebAssembly module: it starts with {data[:4]!r}, not b'\\x00asm'",
            hint="pass the .wasm file the build produced (e.g. build/add-header.wasm)",
        )
    if len(data) < 8:
        raise NotAWasmImage(
            f"{source} is not a WebAssembly module: {len(data)} bytes, shorter than the 8-byte wasm header",
            hint="pass the .wasm file the build produced (e.g. build/add-header.wasm)",
        )


def plugin_tar_gz(module: bytes) -> tuple[bytes, bytes]:
    """The compat layer: a reproducible tar holding ``plugin.wasm``, and its gzip. Returns (tar, tar.gz)."""
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        member = tarfile.TarInfo(mt.PLUGIN_FILE)
        member.size = len(module)
        member.mode = 0o644
        member.mtime = 0
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        tar.addfile(member, io.BytesIO(module))
    raw = tar_buffer.getvalue()
    gz_buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buffer, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    return raw, gz_buffer.getvalue()


def build_image(
    module: bytes,
    *,
    variant: Variant = "compat",
    annotations: Mapping[str, str] | None = None,
    source: str = "module",
    max_module_size: int = DEFAULT_MAX_MODULE_SIZE,
) -> BuiltImage:
    """Build a wasm image of ``variant`` around ``module`` (pure: bytes in, bytes out).

    ``annotations`` go on the manifest (``org.opencontainers.image.created`` only if given there).
    Modules over ``max_module_size`` are refused: Istio's agent would refuse to load them.
    """
    check_wasm(module, source=source)
    if len(module) > max_module_size:
        raise ModuleTooLarge(
            f"{source} is {len(module)} bytes, over the {max_module_size}-byte limit",
            hint="Istio's agent refuses modules over 256 MiB; strip debug info (wasm-opt -O --strip-debug)",
        )
    if variant not in VARIANTS:
        raise UsageError(f"unknown image variant {variant!r}", hint="use --variant compat or --variant oci")
    manifest_annotations = dict(annotations or {})
    created = manifest_annotations.get(mt.CREATED_ANNOTATION)
    if variant == "compat":
        tar_bytes, layer = plugin_tar_gz(module)
        config_doc: dict[str, Any] = {"architecture": "wasm", "os": "wasip1"}
        if created:
            config_doc["created"] = created
        config_doc["config"] = {}
        config_doc["rootfs"] = {"type": "layers", "diff_ids": [sha256_digest(tar_bytes)]}
        config = canonical_json(config_doc)
        config_desc = Descriptor(mt.OCI_CONFIG, sha256_digest(config), len(config))
        layer_desc = Descriptor(mt.OCI_LAYER_TAR_GZIP, sha256_digest(layer), len(layer))
        manifest_annotations[mt.VARIANT_ANNOTATION] = "compat"
        layers = [layer_desc]
        blobs = {config_desc.digest: config, layer_desc.digest: layer}
    else:
        info = inspect_module(module, source=source)
        config_doc = {"type": "envoy_proxy"}
        abi = ["v" + version.replace("_", ".") for version in info.abi_versions]
        if abi:
            config_doc["abiVersions"] = abi
        if created:
            config_doc["created"] = created
        config = canonical_json(config_doc)
        config_desc = Descriptor(mt.WASM_CONFIG, sha256_digest(config), len(config))
        # The spec's two layers: the runtime config, then the module. Istio's agent refuses an oci
        # variant image without exactly two layers (pkg/wasm/imagefetcher.go extractOCIArtifactImage).
        runtime_config_layer = Descriptor(
            mt.WASM_CONFIG,
            config_desc.digest,
            config_desc.size,
            annotations={mt.TITLE_ANNOTATION: mt.RUNTIME_CONFIG_FILE},
        )
        module_layer = Descriptor(
            mt.WASM_LAYER,
            sha256_digest(module),
            len(module),
            annotations={mt.TITLE_ANNOTATION: mt.PLUGIN_FILE},
        )
        layers = [runtime_config_layer, module_layer]
        blobs = {config_desc.digest: config, module_layer.digest: module}
    manifest_doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if manifest_annotations:
        manifest_doc["annotations"] = dict(sorted(manifest_annotations.items()))
    return BuiltImage(
        variant=variant,
        manifest=canonical_json(manifest_doc),
        config=config_desc,
        layers=layers,
        blobs=blobs,
    )


def read_wasm_file(path: Path) -> bytes:
    """Read a module file for packaging: missing file and non-wasm content are clear errors."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MeshwasmError(
            f"{path}: no such file", hint="build it first (make build)", exit_code=ExitCode.NOT_FOUND
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a .wasm file") from None
    check_wasm(data, source=str(path))
    return data


# --- OCI image layout directories -------------------------------------------------------------


def write_layout(image: BuiltImage, layout_dir: Path, *, tag: str) -> Path:
    """Write ``image`` as an OCI image layout at ``layout_dir``, tagged ``tag`` in ``index.json``.

    Written into a temporary directory beside it and renamed into place, so a failed
    build leaves nothing partial; an existing layout there is replaced.
    """
    layout_dir = Path(layout_dir)
    not_a_layout = layout_dir.exists() and not (layout_dir / "oci-layout").is_file()
    if not_a_layout and (not layout_dir.is_dir() or any(layout_dir.iterdir())):
        raise UsageError(
            f"{layout_dir} exists and is not an OCI image layout; refusing to replace it",
            hint="choose another -o directory, or remove it",
        )
    layout_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{layout_dir.name}.", dir=layout_dir.parent))
    try:
        (staging / "oci-layout").write_bytes(canonical_json(LAYOUT_VERSION))
        blob_dir = staging / "blobs" / "sha256"
        blob_dir.mkdir(parents=True)
        for digest, data in {**image.blobs, image.manifest_digest: image.manifest}.items():
            (blob_dir / digest.split(":", 1)[1]).write_bytes(data)
        entry = Descriptor(
            mt.OCI_MANIFEST,
            image.manifest_digest,
            len(image.manifest),
            annotations={mt.REF_NAME_ANNOTATION: tag},
        )
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [entry.to_json()]}
        (staging / "index.json").write_bytes(canonical_json(index))
        _replace_dir(staging, layout_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return layout_dir


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class Layout:
    """An OCI image layout directory opened for reading (e.g. to push it)."""

    path: Path
    manifests: list[Descriptor]

    @classmethod
    def open(cls, path: Path) -> Layout:
        """Open ``path``; raise a clear error unless it holds ``oci-layout`` and ``index.json``."""
        path = Path(path)
        if not (path / "oci-layout").is_file() or not (path / "index.json").is_file():
            raise UsageError(
                f"{path} is not an OCI image layout (no oci-layout / index.json)",
                hint="create one with `meshwasm image build WASM -t REF -o DIR`, or push the .wasm directly",
            )
        try:
            index = json.loads((path / "index.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}/index.json is unreadable: {exc}") from exc
        entries = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(entries, list) or not entries:
            raise UsageError(f"{path}/index.json lists no manifests")
        manifests = [Descriptor.from_json(e, where=f"{path}/index.json") for e in entries]
        return cls(path=path, manifests=manifests)

    def select(self, tag: str | None) -> Descriptor:
        """The manifest tagged ``tag`` (``org.opencontainers.image.ref.name``), or the only one."""
        if tag is not None:
            for desc in self.manifests:
                if desc.annotations.get(mt.REF_NAME_ANNOTATION) == tag:
                    return desc
        if len(self.manifests) == 1:
            return self.manifests[0]
        names = [d.annotations.get(mt.REF_NAME_ANNOTATION, d.digest) for d in self.manifests]
        raise UsageError(f"{self.path} holds several images ({', '.join(names)}); none is tagged {tag!r}")

    def blob_path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives in the layout (it must exist)."""
        algorithm, _, hex_digest = digest.partition(":")
        path = self.path / "blobs" / algorithm / hex_digest
        if not path.is_file():
            raise UsageError(f"{self.path} is incomplete: blob {digest} is missing")
        return path

    def read_blob(self, desc: Descriptor) -> bytes:
        """Read a (small) blob and verify its digest and size."""
        data = self.blob_path(desc.digest).read_bytes()
        if sha256_digest(data) != desc.digest or len(data) != desc.size:
            raise DigestMismatch(f"{self.path}: blob {desc.digest} does not match its digest or size")
        return data


def referenced_blobs(manifest: Mapping[str, Any], *, where: str) -> list[Descriptor]:
    """The config and layer descriptors an image manifest names (config first)."""
    found: list[Descriptor] = []
    if "config" in manifest:
        found.append(Descriptor.from_json(manifest["config"], where=f"{where} config"))
    layers = manifest.get("layers") or []
    if not isinstance(layers, list):
        raise UsageError(f"{where}: 'layers' is not a list")
    found.extend(Descriptor.from_json(layer, where=f"{where} layer {i}") for i, layer in enumerate(layers))
    return found


def remove_quietly(path: Path) -> None:
    """Delete a file if it exists (used to leave nothing partial behind)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
