"""cosign's simple-signing payload and signature image, as pure functions.

The format is cosign's "Signature Specification" (sigstore/cosign, specs/SIGNATURE_SPEC.md): a
signature of image digest ``sha256:H`` is stored in the same repository under the tag
``sha256-H.sig``, as an OCI image manifest whose layers each hold one simple-signing payload
(media type ``application/vnd.dev.cosign.simplesigning.v1+json``) with the base64 signature of
that payload in the layer annotation ``dev.cosignproject.cosign/signature``.

The payload is JSON::

    {"critical": {"identity": {"docker-reference": "REGISTRY/REPOSITORY"},
                  "image": {"docker-manifest-digest": "sha256:H"},
                  "type": "cosign container image signature"},
     "optional": null | {annotations}}

It is serialized exactly as cosign (Go's encoding/json) does, so that signing the same image
twice gives the same payload bytes and cosign's duplicate detection recognizes meshwasm's
signatures and the other way round.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshwasm.oci import mediatypes as mt
from meshwasm.oci.image import Descriptor, sha256_digest
from meshwasm.oci.reference import DOCKER_HUB, Reference

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
SIGNATURE_TAG_SUFFIX = ".sig"
# cosign refuses signature images with more layers than this (pkg/oci/remote maxLayers).
MAX_SIGNATURE_LAYERS = 1000
# A payload is a few hundred bytes; this cap only stops a hostile registry from feeding us a huge one.
MAX_PAYLOAD_SIZE = 1024 * 1024
# go-containerregistry's zero time: cosign's signature image config carries no real timestamps.
_ZERO_TIME = "0001-01-01T00:00:00Z"


def signature_tag(digest: str) -> str:
    """``sha256-<hex>.sig``: the tag cosign stores the signatures of ``digest`` under."""
    algorithm, sep, hex_digest = digest.partition(":")
    if not sep or algorithm != "sha256" or len(hex_digest) != 64:
        raise ValueError(f"{digest!r} is not a sha256 digest")
    return f"{algorithm}-{hex_digest}{SIGNATURE_TAG_SUFFIX}"


def docker_reference(ref: Reference) -> str:
    """The identity cosign writes for ``ref``: registry/repository, Docker Hub as ``index.docker.io``
    (go-containerregistry's ``Repository.Name()``)."""
    registry = "index.docker.io" if ref.registry == DOCKER_HUB else ref.registry
    return f"{registry}/{ref.repository}"


def go_json(value: Any) -> bytes:
    """``value`` as Go's ``json.Marshal`` writes it: compact, map keys sorted, ``<``, ``>``, ``&``,
    U+2028 and U+2029 escaped, other non-ASCII characters kept as UTF-8."""
    text = json.dumps(_sorted_maps(value), separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def _sorted_maps(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _sorted_maps(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_sorted_maps(v) for v in value]
    return value


def simple_signing_payload(identity: str, digest: str, annotations: Mapping[str, Any] | None = None) -> bytes:
    """The payload cosign signs for image ``digest`` claimed as ``identity`` (struct field order as
    cosign's Go types declare it; ``optional`` is ``null`` without annotations)."""
    critical = (
        b'{"identity":{"docker-reference":'
        + go_json(identity)
        + b'},"image":{"docker-manifest-digest":'
        + go_json(digest)
        + b'},"type":'
        + go_json(COSIGN_SIGNATURE_TYPE)
        + b"}"
    )
    optional = go_json(dict(annotations)) if annotations else b"null"
    return b'{"critical":' + critical + b',"optional":' + optional + b"}"


@dataclass(frozen=True)
class Claim:
    """What a simple-signing payload claims."""

    identity: str
    digest: str
    annotations: dict[str, Any] = field(default_factory=dict)


class MalformedPayload(ValueError):
    """A payload that is not a cosign simple-signing claim."""


def parse_payload(raw: bytes) -> Claim:
    """The claim in ``raw``; raises :class:`MalformedPayload` saying what is wrong."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedPayload(f"payload is not JSON ({exc})") from exc
    critical = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(critical, dict):
        raise MalformedPayload("payload has no 'critical' object")
    kind = critical.get("type")
    if kind != COSIGN_SIGNATURE_TYPE:
        raise MalformedPayload(f"payload type is {kind!r}, not {COSIGN_SIGNATURE_TYPE!r}")
    image = critical.get("image")
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(digest, str):
        raise MalformedPayload("payload has no critical.image.docker-manifest-digest")
    identity_doc = critical.get("identity")
    identity = identity_doc.get("docker-reference") if isinstance(identity_doc, dict) else None
    optional = doc.get("optional")
    return Claim(
        identity=identity if isinstance(identity, str) else "",
        digest=digest,
        annotations=dict(optional) if isinstance(optional, dict) else {},
    )


@dataclass(frozen=True)
class SignatureLayer:
    """One signature: the payload's descriptor and the base64 signature from its annotation."""

    descriptor: Descriptor
    signature_b64: str

    @property
    def extra_annotations(self) -> dict[str, str]:
        """The layer's annotations other than the signature (certificates, bundles, ...)."""
        return {k: v for k, v in self.descriptor.annotations.items() if k != SIGNATURE_ANNOTATION}

    def signature(self) -> bytes | None:
        """The decoded signature, or None when the annotation is not valid base64."""
        try:
            return base64.b64decode(self.signature_b64, validate=True)
        except binascii.Error:
            return None


def signature_layers(manifest: Mapping[str, Any], *, where: str) -> list[SignatureLayer]:
    """The simple-signing layers of a signature manifest (other layers are ignored, as cosign does
    for signature verification); raises ValueError for a manifest cosign would refuse too."""
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ValueError(f"{where}: signature manifest has no layers list")
    if len(layers) > MAX_SIGNATURE_LAYERS:
        raise ValueError(
            f"{where}: {len(layers)} signature layers, over cosign's limit of {MAX_SIGNATURE_LAYERS}"
        )
    found = []
    for i, doc in enumerate(layers):
        desc = Descriptor.from_json(doc, where=f"{where} layers[{i}]")
        if desc.media_type != SIMPLESIGNING_MEDIA_TYPE:
            continue
        found.append(SignatureLayer(desc, desc.annotations.get(SIGNATURE_ANNOTATION, "")))
    return found


def signature_layer(
    payload: bytes, signature: bytes, annotations: Mapping[str, str] | None = None
) -> Descriptor:
    """The descriptor of a new signature layer for ``payload``."""
    return Descriptor(
        SIMPLESIGNING_MEDIA_TYPE,
        sha256_digest(payload),
        len(payload),
        annotations={**(annotations or {}), SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()},
    )


@dataclass(frozen=True)
class SignatureImage:
    """A signature manifest ready to push: its config blob, and the manifest bytes."""

    config: bytes
    config_descriptor: Descriptor
    manifest: bytes


def signature_image(layers: list[Descriptor]) -> SignatureImage:
    """The signature image holding ``layers``, shaped as cosign writes it: an OCI manifest with an
    OCI image config whose ``rootfs.diff_ids`` list the layer digests (signature layers are not
    compressed, so diff id and digest are the same), so cosign can append to it."""
    config_doc = {
        "architecture": "",
        "created": _ZERO_TIME,
        "history": [{"created": _ZERO_TIME} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "config": {},
    }
    config = go_json(config_doc)
    config_desc = Descriptor(mt.OCI_CONFIG, sha256_digest(config), len(config))
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [_layer_json(layer) for layer in layers],
    }
    return SignatureImage(config, config_desc, json.dumps(manifest_doc, separators=(",", ":")).encode())


def _layer_json(layer: Descriptor) -> dict[str, Any]:
    doc: dict[str, Any] = {"mediaType": layer.media_type, "size": layer.size, "digest": layer.digest}
    if layer.annotations:
        doc["annotations"] = dict(sorted(layer.annotations.items()))
    return doc
