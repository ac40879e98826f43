"""A synchronous OCI distribution client for wasm images, on httpx.

:class:`RegistryClient` pulls a module from any shape Istio's agent accepts (verifying every
digest, capping sizes while streaming, checking ``\\0asm``), inspects images, and pushes OCI image
layouts (monolithic or chunked blob upload, cross-repository mount when asked). Authentication,
the http/https policy and the request guard live in :mod:`meshwasm.oci.transport`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from meshwasm.deadline import DeadlineExceeded, check_deadline, current_deadline, deadline_scope
from meshwasm.errors import UsageError
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.credentials import Credentials
from meshwasm.oci.errors import (
    AuthenticationError,
    BadRegistryData,
    DigestMismatch,
    ImageNotFound,
    InsecureRegistryError,
    ModuleTooLarge,
    NotAWasmImage,
    PluginNotInLayer,
    PullTimeout,
    RegistryError,
    RegistryUnavailable,
)
from meshwasm.oci.image import (
    DEFAULT_MAX_MODULE_SIZE,
    BuiltImage,
    Descriptor,
    Layout,
    check_wasm,
    referenced_blobs,
    sha256_digest,
)
from meshwasm.oci.manifest import (
    PulledVariant,
    WasmLayer,
    extract_plugin,
    find_wasm_layer,
    parse_manifest,
    select_from_index,
)
from meshwasm.oci.reference import Reference
from meshwasm.oci.transport import ChallengeGuard, RegistrySession, RequestGuard, TransportFactory

__all__ = [
    "DEFAULT_MAX_MODULE_SIZE",
    "MAX_MANIFEST_SIZE",
    "ImageInfo",
    "ProgressCallback",
    "PulledFile",
    "PulledModule",
    "RegistryClient",
]

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` while a blob moves."""

MAX_MANIFEST_SIZE = 4 * 1024 * 1024  # distribution's own limit
_READ_CHUNK = 256 * 1024
_INDEX_DEPTH = 3
# A compat layer is the module plus tar headers, gzipped: allow a little over the module cap.
_LAYER_OVERHEAD = 1 << 20


@dataclass(frozen=True)
class PulledModule:
    """A module pulled from a registry.

    ``manifest_digest`` is the digest of the image manifest holding the module (Istio's cache
    checksum); ``index_digest`` is the index the tag pointed at, when there was one.
    """

    data: bytes = field(repr=False)
    manifest_digest: str
    variant: PulledVariant
    reference: Reference
    size: int
    index_digest: str | None = None

    @property
    def sha256(self) -> str:
        """Hex sha256 of the module bytes."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class PulledFile:
    """A module pulled into a file: verified (digests, size, ``\\0asm``) while it was written.

    ``path`` is a new file in the directory given to :meth:`RegistryClient.pull_to_dir`; the
    caller owns it (moves it into place or deletes it).
    """

    path: Path
    sha256: str  # hex sha256 of the module bytes
    size: int
    manifest_digest: str
    variant: PulledVariant
    reference: Reference
    index_digest: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """What ``meshwasm image inspect`` shows: the resolved image manifest and its wasm layer."""

    reference: Reference
    digest: str
    media_type: str
    variant: PulledVariant | None
    config: Descriptor | None
    layers: list[Descriptor]
    annotations: dict[str, str]
    module_size: int | None
    manifest: dict[str, Any] = field(repr=False)
    index_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (for ``inspect --json``)."""
        return {
            "reference": str(self.reference),
            "digest": self.digest,
            "indexDigest": self.index_digest,
            "mediaType": self.media_type,
            "variant": self.variant,
            "config": self.config.to_json() if self.config else None,
            "layers": [layer.to_json() for layer in self.layers],
            "annotations": self.annotations,
            "moduleSize": self.module_size,
        }


@dataclass(frozen=True)
class _Manifest:
    media_type: str
    digest: str
    raw: bytes
    doc: dict[str, Any]


def _pull_scope(ref: Reference) -> tuple[str, ...]:
    return (f"repository:{ref.repository}:pull",)


def _push_scope(ref: Reference, mount_from: Iterable[str] = ()) -> tuple[str, ...]:
    return (f"repository:{ref.repository}:pull,push", *(f"repository:{src}:pull" for src in mount_from))


class RegistryClient:
    """Pull, inspect and push wasm images over the OCI distribution API (synchronous, httpx).

    One client may be shared by threads (httpx's pool is thread-safe; the token cache is a dict
    of immutable values). Tokens are cached per registry and scope and renewed on a 401.
    """

    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        insecure: Iterable[str] = (),
        timeout: float = 30.0,
        max_module_size: int = DEFAULT_MAX_MODULE_SIZE,
        request_guard: RequestGuard | None = None,
        chunk_size: int | None = None,
        plain_http_loopback: bool = True,
        pull_timeout: float | None = None,
        transport_factory: TransportFactory | None = None,
        challenge_guard: ChallengeGuard | None = None,
    ):
        """``insecure``: registries (``host[:port]``) allowed plain http / unverified TLS (loopback
        always may use http). ``request_guard`` is called with every outgoing request, redirects
        and token requests included, and raises to refuse it. ``chunk_size``: upload blobs in
        PATCH chunks of this many bytes (``None``: one monolithic PUT). ``plain_http_loopback=False``
        treats loopback registries like any other (https unless marked insecure).
        ``pull_timeout``: the deadline of a whole pull (every request, redirect, token fetch and
        the layer's extraction), where ``timeout`` bounds each network wait. ``transport_factory``
        makes the httpx transport for verified (True) or unverified TLS; the default connects
        under the current deadline (:mod:`meshwasm.safehttp`). ``challenge_guard`` sees every
        401's ``WWW-Authenticate`` headers and raises to refuse (Istio's realm check)."""
        self.max_module_size = max_module_size
        self.chunk_size = chunk_size
        self.pull_timeout = pull_timeout
        self._session = RegistrySession(
            credentials=credentials,
            insecure=insecure,
            timeout=timeout,
            request_guard=request_guard,
            plain_http_loopback=plain_http_loopback,
            transport_factory=transport_factory,
            challenge_guard=challenge_guard,
        )

    def close(self) -> None:
        """Close connections."""
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- manifests -----------------------------------------------------------------------------

    def resolve(self, ref: Reference) -> str:
        """The digest ``ref`` points at now (an index's digest when the tag names an index).

        HEAD first (cheap, does not count as a pull on Docker Hub); GET when HEAD gives no digest.
        """
        with deadline_scope(self.pull_timeout, f"resolving {ref}"), _deadline_errors():
            return self._resolve(ref)

    def _resolve(self, ref: Reference) -> str:
        path = f"/v2/{ref.repository}/manifests/{ref.identifier}"
        headers = {"Accept": mt.ACCEPT_MANIFESTS}
        try:
            with self._session.request(
                "HEAD",
                ref.registry,
                path,
                scopes=_pull_scope(ref),
                headers=headers,
                what=f"resolving {ref}",
                not_found=lambda: _not_found(ref),
            ) as response:
                digest = response.headers.get("Docker-Content-Digest")
        except (ImageNotFound, RegistryUnavailable, AuthenticationError, InsecureRegistryError):
            raise
        except RegistryError:
            digest = None  # some registries refuse HEAD (405): fall back to GET
        if ref.digest:
            if digest and digest != ref.digest:
                raise DigestMismatch(
                    f"resolving {ref}: registry reports {digest}, not the pinned {ref.digest}"
                )
            return ref.digest
        if digest and digest.startswith("sha256:"):
            return str(digest)
        return self.get_manifest(ref).digest

    def get_manifest(self, ref: Reference) -> _Manifest:
        """Fetch and verify the manifest ``ref`` names (size-capped, digest-checked)."""
        path = f"/v2/{ref.repository}/manifests/{ref.identifier}"
        with self._session.request(
            "GET",
            ref.registry,
            path,
            scopes=_pull_scope(ref),
            headers={"Accept": mt.ACCEPT_MANIFESTS},
            what=f"fetching manifest of {ref}",
            not_found=lambda: _not_found(ref),
        ) as response:
            raw = _read_capped(response, MAX_MANIFEST_SIZE, f"manifest of {ref}", ref.registry)
            content_type = response.headers.get("Content-Type")
            announced = response.headers.get("Docker-Content-Digest")
        digest = sha256_digest(raw)
        if ref.digest and ref.digest.startswith("sha256:") and digest != ref.digest:
            raise DigestMismatch(f"manifest of {ref} hashes to {digest}, not the pinned {ref.digest}")
        if announced and announced.startswith("sha256:") and announced != digest:
            raise DigestMismatch(
                f"manifest of {ref} hashes to {digest}, but the registry announced {announced}"
            )
        with _registry_data():
            media_type, doc = parse_manifest(raw, content_type=content_type, where=str(ref))
        return _Manifest(media_type=media_type, digest=digest, raw=raw, doc=doc)

    def image_digests(self, ref: Reference) -> tuple[str, str | None]:
        """The digest of the image manifest ``ref`` resolves to (an index followed to its
        linux/amd64 image), the checksum Istio's agent compares a WasmPlugin's ``sha256`` with and
        keys its cache by; and the index's digest when ``ref`` names an index. Manifests only
        (small, capped), within ``pull_timeout``."""
        with deadline_scope(self.pull_timeout, f"resolving {ref}"), _deadline_errors():
            manifest, index_digest = self._image_manifest(ref)
        return manifest.digest, index_digest

    def _image_manifest(self, ref: Reference) -> tuple[_Manifest, str | None]:
        """The image manifest ``ref`` names, following indexes; returns it and the top index digest."""
        manifest = self.get_manifest(ref)
        index_digest: str | None = None
        depth = 0
        while manifest.media_type in mt.INDEXES:
            depth += 1
            if depth > _INDEX_DEPTH:
                raise NotAWasmImage(f"{ref}: image indexes nested deeper than {_INDEX_DEPTH}")
            index_digest = index_digest or manifest.digest
            with _registry_data():
                chosen = select_from_index(manifest.doc, where=str(ref))
            manifest = self.get_manifest(ref.with_digest(chosen.digest))
        return manifest, index_digest

    # --- pull and inspect ----------------------------------------------------------------------

    def pull_module(self, ref: Reference, *, progress: ProgressCallback | None = None) -> PulledModule:
        """Pull the module ``ref`` names into memory (small modules, tests; see :meth:`pull_to_dir`
        for the bounded-memory pull). Nothing is written anywhere that outlives the call."""
        with tempfile.TemporaryDirectory(prefix="meshwasm-pull-") as tmp:
            pulled = self.pull_to_dir(ref, Path(tmp), progress=progress)
            data = pulled.path.read_bytes()
        return PulledModule(
            data=data,
            manifest_digest=pulled.manifest_digest,
            variant=pulled.variant,
            reference=ref,
            size=pulled.size,
            index_digest=pulled.index_digest,
        )

    def pull_to_dir(
        self,
        ref: Reference,
        directory: Path,
        *,
        progress: ProgressCallback | None = None,
        on_write: Callable[[int], None] | None = None,
    ) -> PulledFile:
        """Pull the module ``ref`` names into a new file in ``directory``, streaming: every digest
        verified and the size capped while the bytes arrive, content must start with ``\\0asm``,
        all within ``pull_timeout``. On failure nothing is left in ``directory``.

        ``on_write(n)`` is told of every ``n`` bytes about to be written into ``directory`` (the
        layer and the module both) and may raise to stop the pull (a disk budget)."""
        with deadline_scope(self.pull_timeout, f"pulling {ref}"), _deadline_errors():
            manifest, index_digest = self._image_manifest(ref)
            with _registry_data():
                wasm = find_wasm_layer(manifest.media_type, manifest.doc, where=str(ref))
            path, sha256, size, wasm = self._module_file(ref, wasm, Path(directory), progress, on_write)
        return PulledFile(
            path=path,
            sha256=sha256,
            size=size,
            manifest_digest=manifest.digest,
            variant=wasm.variant,
            reference=ref,
            index_digest=index_digest,
        )

    def _module_file(
        self,
        ref: Reference,
        wasm: WasmLayer,
        directory: Path,
        progress: ProgressCallback | None,
        on_write: Callable[[int], None] | None = None,
    ) -> tuple[Path, str, int, WasmLayer]:
        """The module of ``wasm`` (or of its fallback, as Istio tries it) in a new file; returns
        the file, its sha256, its size and the layer it came from."""
        try:
            path, sha256, size = self._layer_to_file(ref, wasm, directory, progress, on_write)
        except PluginNotInLayer:
            if wasm.fallback is None:
                raise
            # Istio's order: the compat variant failed (no plugin.wasm, or an unreadable tar),
            # so the oci variant's wasm layer of the same two-layer image.
            wasm = wasm.fallback
            path, sha256, size = self._layer_to_file(ref, wasm, directory, progress, on_write)
        return path, sha256, size, wasm

    def _layer_to_file(
        self,
        ref: Reference,
        wasm: WasmLayer,
        directory: Path,
        progress: ProgressCallback | None,
        on_write: Callable[[int], None] | None,
    ) -> tuple[Path, str, int]:
        where = f"{ref} layer {wasm.layer.digest}"
        module = _TempFile(directory, ".pull-", ".wasm", on_write)
        try:
            if wasm.variant == "oci":
                with module.open() as sink:
                    self.download_blob(
                        ref, wasm.layer, sink, max_size=self.max_module_size, progress=progress
                    )
                with module.path.open("rb") as written:
                    check_wasm(written.read(8), source=where)
                return module.keep(), wasm.layer.digest.split(":", 1)[1], wasm.layer.size
            layer = _TempFile(directory, ".layer-", ".tar.gz", on_write)
            try:
                with layer.open() as sink:
                    self.download_blob(
                        ref,
                        wasm.layer,
                        sink,
                        max_size=self.max_module_size + _LAYER_OVERHEAD,
                        progress=progress,
                    )
                with layer.path.open("rb") as source, module.open() as out:
                    hashing = _HashingWriter(out)
                    size = extract_plugin(
                        source, typing.cast(IO[bytes], hashing), max_size=self.max_module_size, where=where
                    )
            finally:
                layer.discard()
            return module.keep(), hashing.hexdigest(), size
        finally:
            module.discard()

    def inspect(self, ref: Reference) -> ImageInfo:
        """Describe the image: manifest digest and type, variant, layers, module size.

        ``variant`` and ``module_size`` are ``None`` for images that hold no wasm module.
        """
        with deadline_scope(self.pull_timeout, f"inspecting {ref}"), _deadline_errors(), _registry_data():
            return self._inspect(ref)

    def _inspect(self, ref: Reference) -> ImageInfo:
        manifest, index_digest = self._image_manifest(ref)
        doc = manifest.doc
        try:
            wasm: WasmLayer | None = find_wasm_layer(manifest.media_type, doc, where=str(ref))
        except NotAWasmImage:
            wasm = None
        module_size: int | None = None
        if wasm is not None and wasm.variant == "oci":
            module_size = wasm.layer.size
        elif wasm is not None:
            with tempfile.TemporaryDirectory(prefix="meshwasm-inspect-") as tmp:
                module_size = self._module_file(ref, wasm, Path(tmp), None)[2]
        blobs = referenced_blobs(doc, where=str(ref))
        config = blobs[0] if "config" in doc else None
        annotations = doc.get("annotations") or {}
        return ImageInfo(
            reference=ref,
            digest=manifest.digest,
            media_type=manifest.media_type,
            variant=wasm.variant if wasm else None,
            config=config,
            layers=blobs[1:] if config else blobs,
            annotations={str(k): str(v) for k, v in annotations.items()}
            if isinstance(annotations, dict)
            else {},
            module_size=module_size,
            manifest=doc,
            index_digest=index_digest,
        )

    def fetch_blob(
        self, ref: Reference, desc: Descriptor, *, max_size: int, progress: ProgressCallback | None = None
    ) -> bytes:
        """Download one (small) blob into memory; see :meth:`download_blob`."""
        buffer = io.BytesIO()
        self.download_blob(ref, desc, buffer, max_size=max_size, progress=progress)
        return buffer.getvalue()

    def download_blob(
        self,
        ref: Reference,
        desc: Descriptor,
        sink: IO[bytes],
        *,
        max_size: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Stream one blob into ``sink``, refusing more than ``max_size`` or ``desc.size`` bytes as
        they arrive and verifying size and digest at the end (the caller discards ``sink`` on error)."""
        where = f"{ref} blob {desc.digest}"
        if desc.size > max_size:
            raise ModuleTooLarge(
                f"{where} is {desc.size} bytes, over the {max_size}-byte limit",
                hint="raise the limit (--max-size) if you trust it; Istio refuses modules over 256 MiB",
            )
        if not desc.digest.startswith("sha256:"):
            raise DigestMismatch(f"{where}: only sha256 digests are verified; refusing {desc.digest}")
        hashing = _HashingWriter(sink)
        with self._session.request(
            "GET",
            ref.registry,
            f"/v2/{ref.repository}/blobs/{desc.digest}",
            scopes=_pull_scope(ref),
            what=f"downloading {where}",
            not_found=lambda: ImageNotFound(f"{where} is missing in {ref.registry}"),
        ) as response:
            _copy_capped(
                response,
                hashing,
                desc.size,
                where,
                ref.registry,
                progress=progress,
                cap_error=_Oversize(max_size),
            )
        if hashing.size != desc.size:
            raise DigestMismatch(f"{where}: received {hashing.size} bytes, the manifest says {desc.size}")
        actual = "sha256:" + hashing.hexdigest()
        if actual != desc.digest:
            raise DigestMismatch(
                f"{where}: content hashes to {actual}, not {desc.digest}",
                hint="the registry's copy is corrupt or was tampered with; nothing was written",
            )

    # --- push ----------------------------------------------------------------------------------

    def push_layout(
        self,
        layout_dir: Path | str,
        ref: Reference,
        *,
        progress: ProgressCallback | None = None,
        mount_from: Iterable[str] = (),
    ) -> str:
        """Push the image of an OCI layout (the one tagged ``ref.tag``, or its only one) to ``ref``;
        returns the manifest digest. Blobs the registry has are skipped; with ``mount_from``
        (repositories in the same registry) blobs are mounted instead of uploaded when possible."""
        layout = Layout.open(Path(layout_dir))
        top = layout.select(ref.tag)
        sources = tuple(mount_from)
        blobs: dict[str, tuple[Descriptor, Callable[[], IO[bytes]]]] = {}
        manifests: list[tuple[Descriptor, bytes]] = []
        self._collect(layout, top, blobs, manifests, depth=0)
        self._push_blobs(ref, list(blobs.values()), progress, sources)
        for desc, raw in manifests[:-1]:
            self.put_manifest(ref.with_digest(desc.digest), raw, desc.media_type)
        last_desc, last_raw = manifests[-1]
        return self.put_manifest(ref, last_raw, last_desc.media_type)

    def push_image(
        self,
        image: BuiltImage,
        ref: Reference,
        *,
        progress: ProgressCallback | None = None,
        mount_from: Iterable[str] = (),
    ) -> str:
        """Push an image built in memory (:func:`meshwasm.oci.image.build_image`); returns its digest."""
        items = [image.config, *image.layers]
        blobs = [(d, _opener(image.blobs[d.digest])) for d in items]
        self._push_blobs(ref, blobs, progress, tuple(mount_from))
        return self.put_manifest(ref, image.manifest, mt.OCI_MANIFEST)

    def _collect(
        self,
        layout: Layout,
        desc: Descriptor,
        blobs: dict[str, tuple[Descriptor, Callable[[], IO[bytes]]]],
        manifests: list[tuple[Descriptor, bytes]],
        depth: int,
    ) -> None:
        raw = layout.read_blob(desc)
        media_type, doc = parse_manifest(
            raw, content_type=desc.media_type, where=f"{layout.path} {desc.digest}"
        )
        desc = Descriptor(media_type, desc.digest, desc.size)
        if media_type in mt.INDEXES:
            if depth >= _INDEX_DEPTH:
                raise NotAWasmImage(f"{layout.path}: image indexes nested deeper than {_INDEX_DEPTH}")
            for i, child in enumerate(doc.get("manifests") or []):
                child_desc = Descriptor.from_json(child, where=f"{layout.path} manifests[{i}]")
                self._collect(layout, child_desc, blobs, manifests, depth + 1)
        else:
            for blob in referenced_blobs(doc, where=f"{layout.path} {desc.digest}"):
                path = layout.blob_path(blob.digest)
                blobs.setdefault(blob.digest, (blob, _file_opener(path)))
        manifests.append((desc, raw))

    def _push_blobs(
        self,
        ref: Reference,
        blobs: list[tuple[Descriptor, Callable[[], IO[bytes]]]],
        progress: ProgressCallback | None,
        mount_from: tuple[str, ...],
    ) -> None:
        total = sum(desc.size for desc, _ in blobs)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        for desc, opener in blobs:
            self.push_blob(ref, desc, opener, progress=advance, mount_from=mount_from)

    def blob_exists(self, ref: Reference, digest: str, *, scopes: tuple[str, ...] | None = None) -> bool:
        """True when the repository already has the blob (HEAD)."""
        try:
            with self._session.request(
                "HEAD",
                ref.registry,
                f"/v2/{ref.repository}/blobs/{digest}",
                scopes=scopes or _pull_scope(ref),
                what=f"checking blob {digest} in {ref.name}",
            ):
                return True
        except ImageNotFound:
            return False

    def push_blob(
        self,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], IO[bytes]],
        *,
        progress: Callable[[int], None] | None = None,
        mount_from: tuple[str, ...] = (),
    ) -> None:
        """Upload one blob unless the repository has it; ``progress(n)`` is told of bytes sent."""
        scopes = _push_scope(ref, mount_from)
        if self.blob_exists(ref, desc.digest, scopes=scopes):
            if progress:
                progress(desc.size)
            return
        location: str | None = None
        for source in mount_from:
            status, location = self._start_upload(ref, scopes, {"mount": desc.digest, "from": source})
            if status == 201:  # mounted: nothing to upload
                if progress:
                    progress(desc.size)
                return
            break  # 202: the registry opened an ordinary upload session instead
        if location is None:
            _, location = self._start_upload(ref, scopes, None)
        try:
            if self.chunk_size and desc.size > self.chunk_size:
                location = self._upload_chunks(ref, desc, opener, location, scopes, progress)
                body: Callable[[], Iterable[bytes] | bytes] = lambda: b""  # noqa: E731
                length = 0
            else:
                body = lambda: _stream(opener, 0, desc.size, progress)  # noqa: E731
                length = desc.size
            url = httpx.URL(location).copy_merge_params({"digest": desc.digest})
            with self._session.request(
                "PUT",
                ref.registry,
                str(url),
                scopes=scopes,
                body=body,
                ok=(201, 204),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
                what=f"uploading blob {desc.digest} to {ref.name}",
            ) as response:
                stored = response.headers.get("Docker-Content-Digest")
            if stored and stored != desc.digest:
                raise DigestMismatch(f"registry {ref.registry} stored {stored} for blob {desc.digest}")
        except RegistryError:
            self._cancel_upload(ref, location, scopes)
            raise

    def _start_upload(
        self, ref: Reference, scopes: tuple[str, ...], params: dict[str, str] | None
    ) -> tuple[int, str]:
        base = self._session.base_url(ref.registry)
        with self._session.request(
            "POST",
            ref.registry,
            f"/v2/{ref.repository}/blobs/uploads/",
            scopes=scopes,
            params=params,
            headers={"Content-Length": "0"},
            ok=(201, 202),
            what=f"starting an upload to {ref.name}",
        ) as response:
            location = response.headers.get("Location")
            status = response.status_code
        if status == 202 and not location:
            raise RegistryError(f"registry {ref.registry} opened an upload without a Location")
        return status, str(httpx.URL(base).join(location or ""))

    def _upload_chunks(
        self,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], IO[bytes]],
        location: str,
        scopes: tuple[str, ...],
        progress: Callable[[int], None] | None,
    ) -> str:
        assert self.chunk_size is not None
        base = self._session.base_url(ref.registry)
        offset = 0
        while offset < desc.size:
            length = min(self.chunk_size, desc.size - offset)
            start = offset
            with self._session.request(
                "PATCH",
                ref.registry,
                location,
                scopes=scopes,
                ok=(202, 204),
                body=lambda start=start, length=length: _stream(opener, start, length, progress),  # type: ignore[misc]
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(length),
                    "Content-Range": f"{start}-{start + length - 1}",
                },
                what=f"uploading blob {desc.digest} to {ref.name} (bytes {start}-{start + length - 1})",
            ) as response:
                location = str(httpx.URL(base).join(response.headers.get("Location") or location))
            offset += length
        return location

    def _cancel_upload(self, ref: Reference, location: str, scopes: tuple[str, ...]) -> None:
        """Best effort: tell the registry to drop a failed upload session."""
        try:
            with self._session.request(
                "DELETE",
                ref.registry,
                location,
                scopes=scopes,
                ok=(200, 202, 204, 404),
                what="cancelling an upload",
            ):
                pass
        except RegistryError:
            pass

    def put_manifest(self, ref: Reference, raw: bytes, media_type: str) -> str:
        """Store a manifest under ``ref``'s tag (or digest); returns its digest, checked against the
        registry's answer."""
        digest = sha256_digest(raw)
        target = ref.tag if ref.tag and not ref.digest else ref.identifier
        with self._session.request(
            "PUT",
            ref.registry,
            f"/v2/{ref.repository}/manifests/{target}",
            scopes=_push_scope(ref),
            headers={"Content-Type": media_type},
            body=lambda: raw,
            ok=(201, 200, 204),
            what=f"pushing manifest {ref.name}:{target}",
        ) as response:
            stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise DigestMismatch(f"registry {ref.registry} stored manifest {stored}, not {digest}")
        return digest


class _Oversize:
    def __init__(self, cap: int):
        self.cap = cap


def _not_found(ref: Reference) -> ImageNotFound:
    return ImageNotFound(
        f"image {ref} not found in {ref.registry}",
        hint="check the repository and tag (meshwasm image push puts it there)",
    )


def _read_capped(response: httpx.Response, limit: int, where: str, registry: str) -> bytes:
    """Read a (small) streamed document into memory; one over ``limit`` bytes is bad registry
    data (a manifest: distribution itself refuses manifests over 4 MiB)."""
    buffer = io.BytesIO()
    try:
        _copy_capped(response, buffer, limit, where, registry)
    except ModuleTooLarge as exc:
        raise BadRegistryData(
            f"{where} is over the {limit}-byte limit for manifests", hint="no valid image has one this large"
        ) from exc
    return buffer.getvalue()


def _copy_capped(
    response: httpx.Response,
    sink: IO[bytes] | _HashingWriter,
    limit: int,
    where: str,
    registry: str,
    *,
    progress: ProgressCallback | None = None,
    cap_error: _Oversize | None = None,
) -> int:
    """Copy a streamed body into ``sink``, failing as soon as it exceeds ``limit`` bytes or the
    current deadline passes."""
    announced = response.headers.get("Content-Length")
    if announced and announced.isdigit() and int(announced) > limit:
        _too_much(where, int(announced), limit, cap_error)
    count = 0
    try:
        for chunk in response.iter_raw(_READ_CHUNK):
            count += len(chunk)
            if count > limit:
                _too_much(where, count, limit, cap_error)
            sink.write(chunk)
            if progress is not None:
                progress(count, limit)
            check_deadline()
    except httpx.HTTPError as exc:
        deadline = current_deadline()
        if deadline is not None and deadline.expired:
            raise PullTimeout(
                f"{deadline.error().message} ({count} bytes of {where} had arrived)",
                hint="the registry is too slow or stalled; nothing was stored",
            ) from exc
        raise RegistryUnavailable(
            f"downloading {where}: the connection to {registry} failed after {count} bytes ({exc})",
            hint="a retry may succeed",
        ) from exc
    return count


class _HashingWriter:
    """Passes writes to ``sink`` (if any), hashing and counting them."""

    def __init__(self, sink: IO[bytes] | None):
        self.sink = sink
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self._hash.update(chunk)
        self.size += len(chunk)
        if self.sink is not None:
            self.sink.write(chunk)
        return len(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _TempFile:
    """A new file in ``directory`` that is deleted unless :meth:`keep` was called; ``on_write``
    hears of every write before it happens."""

    def __init__(
        self, directory: Path, prefix: str, suffix: str, on_write: Callable[[int], None] | None = None
    ):
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        os.close(fd)
        self.path = Path(name)
        self._kept = False
        self._on_write = on_write

    def open(self) -> IO[bytes]:
        handle = self.path.open("wb")
        if self._on_write is None:
            return handle
        return typing.cast(IO[bytes], _MeteredFile(handle, self._on_write))

    def keep(self) -> Path:
        self._kept = True
        return self.path

    def discard(self) -> None:
        if not self._kept:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


class _MeteredFile:
    """A file whose writes are announced to ``on_write`` first."""

    def __init__(self, inner: IO[bytes], on_write: Callable[[int], None]):
        self._inner = inner
        self._on_write = on_write

    def write(self, chunk: bytes) -> int:
        self._on_write(len(chunk))
        return self._inner.write(chunk)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> _MeteredFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._inner.close()


@contextlib.contextmanager
def _deadline_errors() -> Iterator[None]:
    """Report a passed deadline as :class:`PullTimeout`, however it surfaced (a timed-out read,
    a refused connection attempt, a loop that checked it)."""
    try:
        yield
    except PullTimeout:
        raise
    except DeadlineExceeded as exc:
        raise PullTimeout(exc.message, hint=exc.hint) from exc
    except RegistryUnavailable as exc:
        deadline = current_deadline()
        if deadline is None or not deadline.expired:
            raise
        raise PullTimeout(f"{deadline.error().message} ({exc.message})", hint=exc.hint) from exc


@contextlib.contextmanager
def _registry_data() -> Iterator[None]:
    """Malformed documents from a registry are the registry's fault, not a usage error."""
    try:
        yield
    except UsageError as exc:
        raise BadRegistryData(exc.message, hint=exc.hint) from exc
    except RegistryError as exc:
        if type(exc) is not RegistryError:
            raise
        raise BadRegistryData(exc.message, hint=exc.hint) from exc


def _too_much(where: str, size: int, limit: int, cap_error: _Oversize | None) -> None:
    if cap_error is not None and size > cap_error.cap:
        raise ModuleTooLarge(f"{where}: more than {cap_error.cap} bytes, over the size limit")
    if cap_error is not None:
        raise DigestMismatch(f"{where}: the registry sent more than the {limit} bytes the manifest announced")
    raise ModuleTooLarge(f"{where}: more than {limit} bytes")


def _stream(
    opener: Callable[[], IO[bytes]], start: int, length: int, progress: Callable[[int], None] | None
) -> Iterator[bytes]:
    with opener() as handle:
        handle.seek(start)
        remaining = length
        while remaining > 0:
            chunk = handle.read(min(_READ_CHUNK, remaining))
            if not chunk:
                raise RegistryError(f"blob source ended {remaining} bytes early")
            remaining -= len(chunk)
            yield chunk
            if progress is not None:
                progress(len(chunk))


def _opener(data: bytes) -> Callable[[], IO[bytes]]:
    return lambda: io.BytesIO(data)


def _file_opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: path.open("rb")
