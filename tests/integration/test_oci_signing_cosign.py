"""meshwasm and the real cosign CLI (built from sigstore's Go module by ``make get-cosign``) verify
each other's signatures, in a real registry, and refuse the same bad cases.

The matrix: signer (meshwasm, cosign) x verifier (meshwasm, cosign) x case (signed, unsigned,
another key, a signature copied from another digest, a tag moved to an unsigned image). Keys
cross too: the trusted key is one ``cosign generate-key-pair`` wrote (meshwasm opens it to sign),
the other key is one meshwasm encrypted (cosign opens it to sign). Beyond the matrix: the payload
cosign signs is byte for byte the one meshwasm builds, and each tool appends to, and recognizes
duplicates in, the other's signature image.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.oci_modules import run_meshwasm
from fixtures.signing import (
    CASES,
    KEY_PASSWORD,
    Cosign,
    KeyPair,
    SigningCases,
    build_cases,
    make_key_pair,
    meshwasm_signer,
    push_module,
)
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import Reference, parse_reference
from meshwasm.oci.signing import payload as sp
from meshwasm.oci.signing.errors import SignatureRefused
from meshwasm.oci.signing.keys import load_private_key
from meshwasm.oci.signing.remote import sign_image, signature_reference, verify_image

pytestmark = pytest.mark.registry

# What cosign says for each refusal (cosign's own messages, pinned so a change is noticed).
COSIGN_REFUSALS = {
    "unsigned": "no signatures found",
    "untrusted_signature": "no matching signatures",
    "digest_mismatch": "invalid or missing digest in claim",
}


@pytest.fixture(scope="module")
def cosign_key(cosign: Cosign, tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A key pair written by ``cosign generate-key-pair`` (encrypted with COSIGN_PASSWORD)."""
    directory = tmp_path_factory.mktemp("cosign-keys")
    done = cosign.run(
        "generate-key-pair", "--output-key-prefix", "trusted", password=KEY_PASSWORD, cwd=directory
    )
    assert done.returncode == 0, done.stderr
    private = directory / "trusted.key"
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    key = load_private_key(private.read_bytes(), source=str(private), password=KEY_PASSWORD.encode())
    return KeyPair(private, directory / "trusted.pub", key)


@pytest.fixture(scope="module")
def meshwasm_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A key pair meshwasm wrote (cosign's encrypted format, meshwasm's encryption)."""
    return make_key_pair(tmp_path_factory.mktemp("meshwasm-keys"), "other")


def cosign_sign(cosign: Cosign, ref: Reference, digest: str, key: KeyPair, *extra: str) -> None:
    done = cosign.run(
        "sign", "--key", str(key.private_path), "--tlog-upload=false", "--yes", *extra,
        f"{ref.name}@{digest}", password=KEY_PASSWORD,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def cosign_verify(cosign: Cosign, ref: str, key: KeyPair) -> tuple[int, str, str]:
    done = cosign.run("verify", "--key", str(key.public_path), "--insecure-ignore-tlog=true", ref)
    # Nothing was fetched from outside: no TUF root was asked for (see the Cosign fixture).
    assert "trusted_root.json" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def cases_by_signer(
    registry: LocalRegistry, cosign: Cosign, cosign_key: KeyPair, meshwasm_key: KeyPair
) -> dict[str, SigningCases]:
    def by_cosign(ref: Reference, digest: str, key: KeyPair) -> None:
        cosign_sign(cosign, ref, digest, key)

    trusted, other = cosign_key, meshwasm_key
    return {
        "meshwasm": build_cases(
            registry, trusted, other, prefix="by-meshwasm", seed=9000, signer=meshwasm_signer
        ),
        "cosign": build_cases(registry, trusted, other, prefix="by-cosign", seed=9500, signer=by_cosign),
    }


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("verifier", ["meshwasm", "cosign"])
@pytest.mark.parametrize("signer", ["meshwasm", "cosign"])
def test_matrix(
    signer: str,
    verifier: str,
    case: str,
    cases_by_signer: dict[str, SigningCases],
    cosign: Cosign,
    cosign_key: KeyPair,
) -> None:
    expected = cases_by_signer[signer][case]
    if verifier == "cosign":
        code, out, err = cosign_verify(cosign, str(expected.ref), cosign_key)
        if expected.expected_reason is None:
            assert code == 0, err
            (claim,) = json.loads(out)
            assert claim["critical"]["image"]["docker-manifest-digest"] == expected.digest
            assert claim["critical"]["identity"]["docker-reference"] == expected.ref.name
        else:
            assert code != 0, out
            assert COSIGN_REFUSALS[expected.expected_reason] in err, err
        return
    # meshwasm's verification through its API (the CLI over it: tests/integration/test_oci_signing.py).
    with RegistryClient() as client:
        if expected.expected_reason is None:
            verified = verify_image(client, expected.ref, [cosign_key.key.public])
            assert verified.digest == expected.digest
            assert [s.identity for s in verified.signatures] == [expected.ref.name]
            return
        with pytest.raises(SignatureRefused) as refused:
            verify_image(client, expected.ref, [cosign_key.key.public])
    assert (refused.value.reason, refused.value.digest) == (expected.expected_reason, expected.digest)


def _payloads(ref: Reference, digest: str) -> list[bytes]:
    with RegistryClient() as client:
        sig_ref = signature_reference(ref, digest)
        manifest = client.get_manifest(sig_ref)
        layers = sp.signature_layers(manifest.doc, where=str(sig_ref))
        return [
            client.fetch_blob(sig_ref, layer.descriptor, max_size=sp.MAX_PAYLOAD_SIZE) for layer in layers
        ]


def test_cosigns_payload_is_byte_for_byte_meshwasms(
    registry: LocalRegistry, cosign: Cosign, cosign_key: KeyPair
) -> None:
    ref = parse_reference(f"{registry.address}/interop/payload:v1")
    with RegistryClient() as client:
        digest = push_module(client, ref, seed=9900)
    annotations = {"build": "42", "note": "a<b & c>d", "ünï": "cödé"}
    cosign_sign(
        cosign, ref, digest, cosign_key, *[arg for k, v in annotations.items() for arg in ("-a", f"{k}={v}")]
    )
    (payload,) = _payloads(ref, digest)
    assert payload == sp.simple_signing_payload(sp.docker_reference(ref), digest, annotations)


def _layer_count(ref: Reference, digest: str) -> int:
    with RegistryClient() as client:
        return len(client.get_manifest(signature_reference(ref, digest)).doc["layers"])


def test_each_tool_appends_to_the_others_signatures_and_skips_duplicates(
    registry: LocalRegistry,
    cosign: Cosign,
    cosign_key: KeyPair,
    meshwasm_key: KeyPair,
) -> None:
    for order in ("meshwasm-first", "cosign-first"):
        ref = parse_reference(f"{registry.address}/interop/append-{order}:v1")
        with RegistryClient() as client:
            digest = push_module(client, ref, seed=9910 if order == "meshwasm-first" else 9920)
        first_key, second_key = (
            (cosign_key, meshwasm_key) if order == "meshwasm-first" else (meshwasm_key, cosign_key)
        )

        def meshwasm_sign(key: KeyPair, ref: Reference = ref) -> str:
            with RegistryClient() as client:
                return "added" if sign_image(client, ref, key.key).added else "unchanged"

        if order == "meshwasm-first":
            meshwasm_sign(first_key)
            cosign_sign(cosign, ref, digest, first_key)  # the same signature: cosign sees a duplicate
            assert _layer_count(ref, digest) == 1
            cosign_sign(cosign, ref, digest, second_key)  # appended to meshwasm's signature image
        else:
            cosign_sign(cosign, ref, digest, first_key)
            assert "unchanged" in meshwasm_sign(first_key)  # meshwasm sees cosign's as a duplicate
            assert _layer_count(ref, digest) == 1
            meshwasm_sign(second_key)  # appended to cosign's signature image
        assert _layer_count(ref, digest) == 2
        for key in (first_key, second_key):
            code, _, err = cosign_verify(cosign, str(ref), key)
            assert code == 0, (order, err)
            with RegistryClient() as client:
                assert verify_image(client, ref, [key.key.public]).digest == digest


def test_meshwasm_reads_a_key_cosign_wrote_and_cosign_one_meshwasm_wrote(
    cosign_key: KeyPair, meshwasm_key: KeyPair, cosign: Cosign, tmp_path: Path
) -> None:
    # cosign's public-key-from-private-key command opens meshwasm's encrypted key.
    done = cosign.run("public-key", "--key", str(meshwasm_key.private_path), password=KEY_PASSWORD)
    assert done.returncode == 0, done.stderr
    assert done.stdout.encode().strip() == meshwasm_key.public_path.read_bytes().strip()
    # and meshwasm opened cosign's (the cosign_key fixture): its public half is cosign's .pub.
    assert cosign_key.key.public.pem().strip() == cosign_key.public_path.read_bytes().strip()
    wrong = cosign.run("public-key", "--key", str(meshwasm_key.private_path), password="wrong")
    assert wrong.returncode != 0


def test_a_signature_copied_with_its_image_to_another_repository_verifies_in_both_tools(
    registry: LocalRegistry, cosign: Cosign, cosign_key: KeyPair
) -> None:
    """cosign checks the payload's digest, not its docker-reference (images and their signatures
    are copied between registries); meshwasm does the same, and reports the claimed identity."""
    import io

    from meshwasm.oci import mediatypes as mt
    from meshwasm.oci.image import Descriptor

    source = parse_reference(f"{registry.address}/interop/copy-src:v1")
    target = parse_reference(f"{registry.address}/interop/copy-dst:v1")
    with RegistryClient() as client:
        digest = push_module(client, source, seed=9930)
        assert push_module(client, target, seed=9930) == digest  # the same image in another repository
        cosign_sign(cosign, source, digest, cosign_key)
        signatures = client.get_manifest(signature_reference(source, digest))
        doc = signatures.doc
        for blob in [doc["config"], *doc["layers"]]:
            desc = Descriptor.from_json(blob, where="copy")
            data = client.fetch_blob(signature_reference(source, digest), desc, max_size=1 << 20)
            client.push_blob(signature_reference(target, digest), desc, lambda data=data: io.BytesIO(data))  # type: ignore[misc]
        client.put_manifest(signature_reference(target, digest), signatures.raw, mt.OCI_MANIFEST)
    code, out, err = cosign_verify(cosign, str(target), cosign_key)
    assert code == 0, err
    assert json.loads(out)[0]["critical"]["identity"]["docker-reference"] == source.name
    done = run_meshwasm("image", "verify", str(target), "--key", str(cosign_key.public_path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["signatures"][0]["dockerReference"] == source.name
