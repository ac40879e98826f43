"""Signing and verifying images in a registry, through :class:`~meshwasm.oci.client.RegistryClient`
(so every request passes the client's request guard, auth and http policy).

:func:`sign_image` appends a signature to ``sha256-<digest>.sig`` as cosign does (an identical
signature already there by the same key is not added twice). :func:`verify_digest` checks the
signatures stored for one digest against trusted public keys, the way ``cosign verify --key``
does: each payload's digest, its signature, and that the payload claims the digest being verified.
cosign does not compare the payload's ``docker-reference`` with the reference verified (signatures
follow images copied to other registries), and neither does meshwasm; the identity is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshwasm.oci import mediatypes as mt
from meshwasm.oci.errors import DigestMismatch, ImageNotFound, ModuleTooLarge, RegistryError
from meshwasm.oci.image import Descriptor
from meshwasm.oci.reference import Reference
from meshwasm.oci.signing import payload as sp
from meshwasm.oci.signing.errors import SignatureRefused
from meshwasm.oci.signing.keys import PrivateKey, PublicKey

if TYPE_CHECKING:
    from meshwasm.oci.client import RegistryClient


@dataclass(frozen=True)
class SignResult:
    """What ``meshwasm image sign`` did."""

    digest: str  # the image digest signed
    signature_ref: Reference  # the .sig tag
    payload_digest: str
    added: bool  # False: the same signature by the same key was already there
    signature_manifest_digest: str | None  # None when nothing was pushed


@dataclass(frozen=True)
class VerifiedSignature:
    key: PublicKey
    identity: str  # the payload's docker-reference (not checked, as cosign)
    payload_digest: str
    annotations: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verification:
    """A successful verification: the digest, and every signature a trusted key verified."""

    reference: Reference
    digest: str
    signatures: list[VerifiedSignature]

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "digest": self.digest,
            "verified": True,
            "signatures": [
                {
                    "key": s.key.fingerprint,
                    "keySource": s.key.source,
                    "dockerReference": s.identity,
                    "payloadDigest": s.payload_digest,
                    "annotations": s.annotations,
                }
                for s in self.signatures
            ],
        }


def signature_reference(ref: Reference, digest: str) -> Reference:
    """Where the signatures of ``digest`` in ``ref``'s repository live."""
    return ref.with_tag(sp.signature_tag(digest))


def _signature_manifest(client: RegistryClient, sig_ref: Reference) -> dict[str, Any] | None:
    try:
        manifest = client.get_manifest(sig_ref)
    except ImageNotFound:
        return None
    if manifest.media_type not in mt.IMAGE_MANIFESTS:
        raise RegistryError(
            f"{sig_ref} is a {manifest.media_type}, not a signature image manifest",
            hint="something other than cosign or meshwasm wrote this tag",
        )
    return manifest.doc


def sign_image(
    client: RegistryClient,
    ref: Reference,
    key: PrivateKey,
    *,
    annotations: Mapping[str, Any] | None = None,
    digest: str | None = None,
) -> SignResult:
    """Sign the image ``ref`` names (its index's digest when the tag names an index, as cosign);
    ``digest`` skips the resolve (the caller already knows it)."""
    digest = digest or client.resolve(ref)
    payload = sp.simple_signing_payload(sp.docker_reference(ref), digest, annotations)
    payload_digest = sp.signature_layer(payload, b"").digest
    sig_ref = signature_reference(ref, digest)
    existing_doc = _signature_manifest(client, sig_ref)
    existing: list[Descriptor] = []
    if existing_doc is not None:
        for i, layer in enumerate(existing_doc.get("layers") or []):
            existing.append(Descriptor.from_json(layer, where=f"{sig_ref} layers[{i}]"))
        if _already_signed(existing, payload_digest, key.public, payload):
            return SignResult(digest, sig_ref, payload_digest, added=False, signature_manifest_digest=None)
    if len(existing) + 1 > sp.MAX_SIGNATURE_LAYERS:
        raise RegistryError(
            f"{sig_ref} already holds {len(existing)} signatures; cosign reads at most "
            f"{sp.MAX_SIGNATURE_LAYERS}"
        )
    layer = sp.signature_layer(payload, key.sign(payload))
    image = sp.signature_image([*existing, layer])
    client.push_blob(sig_ref, layer, _opener(payload))
    client.push_blob(sig_ref, image.config_descriptor, _opener(image.config))
    manifest_digest = client.put_manifest(sig_ref, image.manifest, mt.OCI_MANIFEST)
    return SignResult(digest, sig_ref, payload_digest, added=True, signature_manifest_digest=manifest_digest)


def _already_signed(layers: list[Descriptor], payload_digest: str, key: PublicKey, payload: bytes) -> bool:
    """cosign's duplicate detection: a simple-signing layer with the same payload, no other
    annotations, whose signature the signing key verifies."""
    for desc in layers:
        if desc.media_type != sp.SIMPLESIGNING_MEDIA_TYPE or desc.digest != payload_digest:
            continue
        signature = sp.SignatureLayer(desc, desc.annotations.get(sp.SIGNATURE_ANNOTATION, "")).signature()
        if signature and key.verifies(signature, payload):
            return True
    return False


def verify_digest(
    client: RegistryClient, ref: Reference, digest: str, keys: Sequence[PublicKey]
) -> Verification:
    """Verify the signatures stored for ``digest`` in ``ref``'s repository; raises
    :class:`SignatureRefused` (with its ``reason``) when no signature is valid for it."""
    if not keys:
        raise ValueError("verify_digest needs at least one public key")
    sig_ref = signature_reference(ref, digest)
    doc = _signature_manifest(client, sig_ref)
    where = f"{ref.name}@{digest}"
    if doc is None:
        raise SignatureRefused(
            f"{where} is not signed: there is no {sig_ref.tag} in {ref.name}",
            reason="unsigned",
            digest=digest,
            hint="sign it with `meshwasm image sign` (or cosign sign --key) and the trusted key",
        )
    try:
        layers = sp.signature_layers(doc, where=str(sig_ref))
    except ValueError as exc:
        raise SignatureRefused(str(exc), reason="malformed_signature", digest=digest) from exc
    if not layers:
        raise SignatureRefused(
            f"{where} is not signed: {sig_ref.tag} holds no simple-signing layer",
            reason="unsigned",
            digest=digest,
        )
    verified: list[VerifiedSignature] = []
    other_digests: list[str] = []
    malformed: list[str] = []
    unreadable: list[str] = []
    for layer in layers:
        signature = layer.signature()
        if not signature:
            continue
        try:
            payload = client.fetch_blob(sig_ref, layer.descriptor, max_size=sp.MAX_PAYLOAD_SIZE)
        except (DigestMismatch, ModuleTooLarge, ImageNotFound) as exc:
            unreadable.append(exc.message)  # missing, oversized, or not what the layer names
            continue
        key = next((k for k in keys if k.verifies(signature, payload)), None)
        if key is None:
            continue
        try:
            claim = sp.parse_payload(payload)
        except sp.MalformedPayload as exc:
            malformed.append(str(exc))
            continue
        if claim.digest != digest:
            other_digests.append(claim.digest)
            continue
        verified.append(VerifiedSignature(key, claim.identity, layer.descriptor.digest, claim.annotations))
    if verified:
        return Verification(ref.with_digest(digest), digest, verified)
    if other_digests:
        raise SignatureRefused(
            f"{where}: the trusted key signed {', '.join(sorted(set(other_digests)))}, not {digest} "
            f"(a signature copied from another image)",
            reason="digest_mismatch",
            digest=digest,
        )
    if malformed:
        raise SignatureRefused(
            f"{where}: the trusted key's signature holds no valid claim: {malformed[0]}",
            reason="malformed_signature",
            digest=digest,
        )
    if unreadable:
        raise SignatureRefused(
            f"{where}: no signature verifies; {len(unreadable)} payload(s) unreadable: {unreadable[0]}",
            reason="malformed_signature",
            digest=digest,
        )
    fingerprints = ", ".join(k.fingerprint[:19] for k in keys)
    raise SignatureRefused(
        f"{where}: none of its {len(layers)} signature(s) verifies with the trusted key(s) ({fingerprints})",
        reason="untrusted_signature",
        digest=digest,
        hint="it was signed with another key; sign it with a trusted key or trust the signer's public key",
    )


def verify_image(client: RegistryClient, ref: Reference, keys: Sequence[PublicKey]) -> Verification:
    """Verify what ``ref`` names now (its digest, resolved once, then verified)."""
    return verify_digest(client, ref, client.resolve(ref), keys)


def _opener(data: bytes) -> Any:
    import io

    return lambda: io.BytesIO(data)
