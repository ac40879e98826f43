"""Image references parse as Docker and Istio read them."""

from __future__ import annotations

import pytest

from meshwasm.errors import ExitCode
from meshwasm.oci.errors import InvalidReference
from meshwasm.oci.reference import Reference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("add-header", Reference("docker.io", "library/add-header", "latest", None)),
        (
            "sreeharikmarar/wasm-add-header:latest",
            Reference("docker.io", "sreeharikmarar/wasm-add-header", "latest"),
        ),
        (
            "oci://docker.io/sreeharikmarar/wasm-add-header:latest",
            Reference("docker.io", "sreeharikmarar/wasm-add-header", "latest"),
        ),
        ("index.docker.io/team/x:v1", Reference("docker.io", "team/x", "v1")),
        ("localhost:5000/add-header:v1", Reference("localhost:5000", "add-header", "v1")),
        ("localhost/add-header", Reference("localhost", "add-header", "latest")),
        ("127.0.0.1:5000/a/b/c:1.0", Reference("127.0.0.1:5000", "a/b/c", "1.0")),
        ("[::1]:5000/x:y", Reference("[::1]:5000", "x", "y")),
        ("ghcr.io/org/plugin@" + DIGEST, Reference("ghcr.io", "org/plugin", None, DIGEST)),
        ("ghcr.io/org/plugin:v2@" + DIGEST, Reference("ghcr.io", "org/plugin", "v2", DIGEST)),
        ("ghcr.io/org/my_plugin__x.y-z:V_1.0-rc", Reference("ghcr.io", "org/my_plugin__x.y-z", "V_1.0-rc")),
    ],
)
def test_parses(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


def test_module_name_drops_tag_and_digest_like_istio_cache_keys() -> None:
    ref = parse_reference(f"oci://ghcr.io/org/plugin:v2@{DIGEST}")
    assert ref.module_name == "oci://ghcr.io/org/plugin"
    assert parse_reference("add-header").module_name == "oci://docker.io/library/add-header"


def test_str_round_trips() -> None:
    for text in ("ghcr.io/org/plugin:v2", f"ghcr.io/org/plugin@{DIGEST}", f"localhost:5000/a:b@{DIGEST}"):
        assert str(parse_reference(text)) == text
        assert parse_reference(str(parse_reference(text))) == parse_reference(text)


def test_identifier_prefers_digest() -> None:
    assert parse_reference(f"r.io/a:v1@{DIGEST}").identifier == DIGEST
    assert parse_reference("r.io/a:v1").identifier == "v1"
    assert parse_reference("r.io/a").with_digest(DIGEST).identifier == DIGEST


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Registry.io/UPPER:tag", "lowercase"),
        ("localhost:5000/add-header:bad tag", "tag"),
        ("localhost:5000/add-header:-dash", "tag"),
        ("localhost:5000/add-header@sha256:1234", "digest"),
        ("localhost:5000/add-header@md5:" + "a" * 32, "digest"),
        ("localhost:5000//double", "repository"),
        ("localhost:5000/", "repository"),
        ("http://localhost:5000/x", "scheme"),
        ("bad_host!:5000/x", "not a registry host"),
        ("a" * 300, "longer"),
    ],
)
def test_malformed_references_are_rejected_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_reference(text)
    assert says in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE
