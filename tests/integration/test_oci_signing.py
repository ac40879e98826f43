"""`meshwasm image sign` and `meshwasm image verify` against a real registry (CNCF distribution).

Each case of issue 14 (signed, unsigned, another key, a signature for another digest, a tag moved
to an unsigned image after signing) through the real command, with the reason it gives; and the
signature image itself: appended to as cosign does, an identical signature not added twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.oci_modules import run_meshwasm
from fixtures.signing import KEY_PASSWORD, KeyPair, SigningCases, make_key_pair, push_module
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference
from meshwasm.oci.signing import payload as sp
from meshwasm.oci.signing.remote import sign_image, signature_reference, verify_image

pytestmark = pytest.mark.registry


def _verify(ref: str, *keys: Path) -> tuple[int, dict[str, object]]:
    args = [arg for key in keys for arg in ("--key", str(key))]
    done = run_meshwasm("image", "verify", ref, *args, "--json")
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize("case", ["signed", "unsigned", "other_key", "other_digest", "tag_moved"])
def test_verify_each_case(case: str, signing_cases: SigningCases, trusted_key: KeyPair) -> None:
    expected = signing_cases[case]
    code, result = _verify(str(expected.ref), trusted_key.public_path)
    assert result["digest"] == expected.digest
    if expected.expected_reason is None:
        assert (code, result["verified"]) == (0, True)
        (signature,) = result["signatures"]  # type: ignore[misc]
        assert signature["dockerReference"] == expected.ref.name
    else:
        assert (code, result["verified"], result["reason"]) == (6, False, expected.expected_reason)


def test_refusals_in_text_mode_say_why_and_exit_6(signing_cases: SigningCases, trusted_key: KeyPair) -> None:
    other = signing_cases["other_digest"]
    done = run_meshwasm("image", "verify", str(other.ref), "--key", str(trusted_key.public_path))
    assert done.returncode == 6
    assert f"not {other.digest} (a signature copied from another image)" in done.stderr
    unsigned = signing_cases["tag_moved"]
    done = run_meshwasm("image", "verify", str(unsigned.ref), "--key", str(trusted_key.public_path))
    assert done.returncode == 6
    assert f"there is no sha256-{unsigned.digest.removeprefix('sha256:')}.sig" in done.stderr


def test_any_of_several_keys_may_have_signed(
    signing_cases: SigningCases, trusted_key: KeyPair, other_key: KeyPair
) -> None:
    code, _ = _verify(str(signing_cases["other_key"].ref), trusted_key.public_path, other_key.public_path)
    assert code == 0


def test_sign_appends_and_does_not_repeat_itself(
    registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_key_pair(tmp_path, "first"), make_key_pair(tmp_path, "second")
    ref = parse_reference(f"{registry.address}/signing/append:v1")
    with RegistryClient() as client:
        digest = push_module(client, ref, seed=8100)
    monkeypatch.setenv("COSIGN_PASSWORD", KEY_PASSWORD)

    def sign(key: KeyPair) -> str:
        done = run_meshwasm("image", "sign", str(ref), "--key", str(key.private_path))
        assert done.returncode == 0, done.stderr
        return done.stdout

    def layers() -> list[dict[str, object]]:
        with RegistryClient() as client:
            return list(client.get_manifest(signature_reference(ref, digest)).doc["layers"])

    assert "pushed:" in sign(first)
    assert "unchanged: the same signature by this key is already there" in sign(first)
    assert len(layers()) == 1
    with RegistryClient() as client:  # the API the command is a front for, to save a process
        assert sign_image(client, ref, second.key).added
        stored = layers()
        assert len(stored) == 2
        assert {layer["digest"] for layer in stored} == {  # the same claim, two signatures
            sp.signature_layer(sp.simple_signing_payload(ref.name, digest), b"").digest
        }
        for key in (first, second):
            assert len(verify_image(client, ref, [key.key.public]).signatures) == 1


def test_sign_with_annotations_puts_them_in_the_payload(
    registry: LocalRegistry, trusted_key: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = parse_reference(f"{registry.address}/signing/annotated:v1")
    with RegistryClient() as client:
        push_module(client, ref, seed=8200)
    monkeypatch.setenv("COSIGN_PASSWORD", KEY_PASSWORD)
    done = run_meshwasm("image", "sign", str(ref), "--key", str(trusted_key.private_path), "-a", "build=42")
    assert done.returncode == 0, done.stderr
    with RegistryClient() as client:
        assert verify_image(client, ref, [trusted_key.key.public]).signatures[0].annotations == {
            "build": "42"
        }


def test_sign_refuses_a_bad_password_before_touching_the_registry(
    registry: LocalRegistry, trusted_key: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = f"{registry.address}/signing/never-pushed:v1"
    monkeypatch.setenv("COSIGN_PASSWORD", "wrong")
    done = run_meshwasm("image", "sign", ref, "--key", str(trusted_key.private_path))
    assert done.returncode == 2
    assert "wrong password" in done.stderr
    monkeypatch.delenv("COSIGN_PASSWORD")
    done = run_meshwasm("image", "sign", ref, "--key", str(trusted_key.private_path))
    assert done.returncode == 2
    assert "set COSIGN_PASSWORD" in done.stderr


def test_verify_with_a_private_key_says_to_pass_the_public_one(
    signing_cases: SigningCases, trusted_key: KeyPair
) -> None:
    done = run_meshwasm(
        "image", "verify", str(signing_cases["signed"].ref), "--key", str(trusted_key.private_path)
    )
    assert done.returncode == 2
    assert "pass the public half" in done.stderr


def test_a_payload_corrupted_in_the_registry_is_refused_as_unreadable(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    """The signature image names a payload digest; the registry's copy no longer hashes to it (its
    storage was tampered with): nothing verifies, and the refusal says the payload was unreadable."""
    key = make_key_pair(tmp_path, "k")
    ref = parse_reference(f"{registry.address}/signing/corrupted:v1")
    with RegistryClient() as client:
        digest = push_module(client, ref, seed=8300)
    with RegistryClient() as client:
        sign_image(client, ref, key.key)
    payload_digest = sp.signature_layer(sp.simple_signing_payload(ref.name, digest), b"").digest
    path = registry.blob_data_path(payload_digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    code, result = _verify(str(ref), key.public_path)
    assert (code, result["reason"]) == (6, "malformed_signature")
    assert "payload(s) unreadable" in str(result["message"])
