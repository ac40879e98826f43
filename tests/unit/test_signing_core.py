"""The pure parts of signed modules: cosign's payload and signature image, keys, the policy.

The interop with the real cosign CLI (same payload bytes, signatures verifying both ways) is in
tests/integration/test_oci_signing_cosign.py; these pin the details a wrong implementation
would get wrong.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from meshwasm.errors import UsageError
from meshwasm.oci.reference import parse_reference
from meshwasm.oci.signing import payload as sp
from meshwasm.oci.signing.errors import SigningKeyError
from meshwasm.oci.signing.keys import (
    encrypt_cosign_key,
    load_private_key,
    load_public_keys,
)
from meshwasm.oci.signing.policy import (
    SignatureRuleConfig,
    load_policy,
    normalize_scope,
    parse_rule_flag,
)

DIGEST = "sha256:" + "ab" * 32


def _pkcs8(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ----- payload


def test_signature_tag_is_cosigns() -> None:
    assert sp.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    with pytest.raises(ValueError, match="not a sha256 digest"):
        sp.signature_tag("sha512:" + "ab" * 64)


def test_docker_reference_is_the_repository_without_tag_and_docker_hub_as_index_docker_io() -> None:
    assert sp.docker_reference(parse_reference("127.0.0.1:5000/team/mod:v1")) == "127.0.0.1:5000/team/mod"
    assert sp.docker_reference(parse_reference("busybox:1")) == "index.docker.io/library/busybox"


def test_payload_bytes_are_what_cosigns_go_types_marshal() -> None:
    raw = sp.simple_signing_payload("127.0.0.1:5000/team/mod", DIGEST)
    assert raw == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/team/mod"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


def test_payload_annotations_are_sorted_and_html_escaped_as_go_does() -> None:
    raw = sp.simple_signing_payload("r.example/m", DIGEST, {"z": "1", "a": "<&>\u2028é"})
    assert raw.endswith(b',"optional":{"a":"\\u003c\\u0026\\u003e\\u2028\xc3\xa9","z":"1"}}')
    claim = sp.parse_payload(raw)
    assert claim.annotations == {"a": "<&>\u2028é", "z": "1"}
    assert (claim.identity, claim.digest) == ("r.example/m", DIGEST)


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"not json", "not JSON"),
        (b"[]", "no 'critical'"),
        (b'{"critical":{"type":"atomic container signature","image":{}}}', "payload type"),
        (b'{"critical":{"type":"cosign container image signature","image":{}}}', "docker-manifest-digest"),
    ],
)
def test_bad_payloads_are_named(raw: bytes, complaint: str) -> None:
    with pytest.raises(sp.MalformedPayload, match=complaint):
        sp.parse_payload(raw)


def test_signature_image_lists_every_layer_in_manifest_and_config() -> None:
    first = sp.signature_layer(b"one", b"sig1")
    second = sp.signature_layer(b"two", b"sig2")
    image = sp.signature_image([first, second])
    manifest = json.loads(image.manifest)
    config = json.loads(image.config)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["digest"] == image.config_descriptor.digest
    assert [layer["digest"] for layer in manifest["layers"]] == [first.digest, second.digest]
    assert config["rootfs"] == {"type": "layers", "diff_ids": [first.digest, second.digest]}
    layer = manifest["layers"][1]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]) == b"sig2"
    parsed = sp.signature_layers(manifest, where="test")
    assert [p.signature() for p in parsed] == [b"sig1", b"sig2"]


def test_signature_layers_skips_other_media_types_and_refuses_too_many() -> None:
    other = {"mediaType": "application/octet-stream", "digest": DIGEST, "size": 1}
    assert sp.signature_layers({"layers": [other]}, where="t") == []
    with pytest.raises(ValueError, match="over cosign's limit of 1000"):
        sp.signature_layers({"layers": [other] * 1001}, where="t")


# ----- keys


def test_plain_pkcs8_and_sec1_keys_sign_and_their_public_keys_verify() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sec1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    for pem in (_pkcs8(key), sec1):
        private = load_private_key(pem, source="k", password=None)
        signature = private.sign(b"payload")
        (public,) = load_public_keys(_public_pem(key), source="p")
        assert public.verifies(signature, b"payload")
        assert not public.verifies(signature, b"payload!")
        assert public.fingerprint == private.public.fingerprint


def test_encrypted_cosign_key_needs_the_right_password() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = encrypt_cosign_key(key, b"s3cret")
    assert pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    private = load_private_key(pem, source="cosign.key", password=b"s3cret")
    assert private.key.private_numbers() == key.private_numbers()
    with pytest.raises(SigningKeyError, match="wrong password"):
        load_private_key(pem, source="cosign.key", password=b"wrong")
    with pytest.raises(SigningKeyError, match="COSIGN_PASSWORD"):
        load_private_key(pem, source="cosign.key", password=None)


def test_encrypted_key_with_unknown_scrypt_parameters_is_refused_before_deriving() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = encrypt_cosign_key(key, b"pw")
    body = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    doc = json.loads(body)
    doc["kdf"]["params"]["N"] = 1 << 30
    text = base64.b64encode(json.dumps(doc).encode()).decode()
    kind = "ENCRYPTED SIGSTORE PRIVATE KEY"
    tampered = f"-----BEGIN {kind}-----\n{text}\n-----END {kind}-----\n"
    with pytest.raises(SigningKeyError, match="unsupported scrypt parameters N=1073741824"):
        load_private_key(tampered.encode(), source="k", password=b"pw")


def test_non_ecdsa_keys_are_refused_with_the_reason() -> None:
    for other in (rsa.generate_private_key(65537, 2048), ed25519.Ed25519PrivateKey.generate()):
        with pytest.raises(SigningKeyError, match="ECDSA keys only"):
            load_private_key(_pkcs8(other), source="k", password=None)
        public = other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with pytest.raises(SigningKeyError, match="ECDSA keys only"):
            load_public_keys(public, source="p")


def test_public_key_files_may_hold_several_keys_but_not_a_private_one() -> None:
    one, two = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())
    keys = load_public_keys(_public_pem(one) + _public_pem(two), source="both.pub")
    assert len(keys) == 2
    with pytest.raises(SigningKeyError, match="PUBLIC KEY was expected"):
        load_public_keys(_pkcs8(one), source="cosign.key")
    with pytest.raises(SigningKeyError, match="no PEM block"):
        load_public_keys(b"ssh-ed25519 AAAA", source="id.pub")


# ----- policy


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("oci://Registry.Example.com/Team/", "registry.example.com/team"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("index.docker.io/library/x", "docker.io/library/x"),
        ("*", "*"),
    ],
)
def test_scopes_are_normalized(written: str, normal: str) -> None:
    assert normalize_scope(written) == normal


@pytest.mark.parametrize("bad", ["registry.example.com/team:v1", "reg.example/x@sha256:ab", "", "a b"])
def test_scopes_with_tags_digests_or_junk_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="signature scope"):
        normalize_scope(bad)


def test_the_most_specific_scope_decides_and_uncovered_modules_need_nothing(tmp_path: Path) -> None:
    keys = {}
    for name in ("registry", "team", "anything"):
        key = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / f"{name}.pub").write_bytes(_public_pem(key))
        keys[name] = load_public_keys(_public_pem(key), source=name)[0].fingerprint
    policy = load_policy(
        [
            SignatureRuleConfig(scope="reg.example.com", public_keys=("registry.pub",)),
            SignatureRuleConfig(scope="reg.example.com/team", public_keys=(str(tmp_path / "team.pub"),)),
        ],
        base=tmp_path,
    )

    def fingerprint(ref: str) -> str | None:
        rule = policy.rule_for(parse_reference(ref))
        return rule.keys[0].fingerprint if rule else None

    assert fingerprint("reg.example.com/team/mod:v1") == keys["team"]
    assert fingerprint("reg.example.com/team:v1") == keys["team"]
    assert fingerprint("reg.example.com/teamster/mod:v1") == keys["registry"]  # not a path prefix
    assert fingerprint("other.example.com/team/mod:v1") is None
    assert policy.covers_everything() is None
    star = load_policy(
        [
            SignatureRuleConfig(scope="*", public_keys=((tmp_path / "anything.pub").read_text(),)),
            SignatureRuleConfig(scope="reg.example.com", public_keys=(str(tmp_path / "registry.pub"),)),
        ]
    )
    assert star.rule_for(parse_reference("other.example.com/x:1")).keys[0].fingerprint == keys["anything"]  # type: ignore[union-attr]
    assert star.rule_for(parse_reference("reg.example.com/x:1")).keys[0].fingerprint == keys["registry"]  # type: ignore[union-attr]
    assert star.covers_everything() is not None


def test_policy_with_a_missing_key_file_or_a_repeated_scope_fails_whole(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read public key .*missing\.pub"):
        load_policy(
            [SignatureRuleConfig(scope="reg.example.com", public_keys=("missing.pub",))], base=tmp_path
        )
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "k.pub").write_bytes(_public_pem(key))
    rule = SignatureRuleConfig(scope="reg.example.com", public_keys=("k.pub",))
    with pytest.raises(UsageError, match="appears twice"):
        load_policy([rule, rule], base=tmp_path)
    with pytest.raises(ValueError, match="at least 1"):
        SignatureRuleConfig(scope="reg.example.com", public_keys=())


def test_rule_flags() -> None:
    rule = parse_rule_flag("127.0.0.1:5000/team=a.pub,b.pub")
    assert (rule.scope, rule.public_keys) == ("127.0.0.1:5000/team", ("a.pub", "b.pub"))
    with pytest.raises(UsageError, match="SCOPE=PUBLIC_KEY_FILE"):
        parse_rule_flag("cosign.pub")
    with pytest.raises(UsageError, match="signature scope"):
        parse_rule_flag("reg.example.com/x:v1=cosign.pub")
