"""Credentials from Docker config.json and Kubernetes .dockerconfigjson secrets."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from meshwasm.errors import MeshwasmError
from meshwasm.oci.credentials import Credentials, RegistryAuth


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


CONFIG = {
    "auths": {
        "https://index.docker.io/v1/": {"auth": _b64("hubuser:hub:pass")},
        "localhost:5000": {"username": "alice", "password": "s3cret"},
        "http://registry.internal:8443/v2/": {"auth": _b64("bob:pw")},
        "ghcr.io": {"identitytoken": "refresh-me"},
        "quay.io": {},
    },
}


def test_docker_config_forms(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG))
    creds = Credentials.from_docker_config(path)
    hub = creds.for_registry("docker.io")
    assert hub is not None
    assert (hub.username, hub.password) == (
        "hubuser",
        "hub:pass",
    )
    local = creds.for_registry("localhost:5000")
    assert local is not None
    assert (local.username, local.password) == ("alice", "s3cret")
    internal = creds.for_registry("registry.internal:8443")
    assert internal is not None
    assert internal.username == "bob"
    ghcr = creds.for_registry("ghcr.io")
    assert ghcr is not None
    assert ghcr.identity_token == "refresh-me"
    assert not ghcr.has_basic
    assert creds.for_registry("quay.io") is None
    assert creds.for_registry("localhost:5001") is None


def test_host_without_port_entry_matches_any_port() -> None:
    creds = Credentials.from_dockerconfigjson(json.dumps({"auths": {"reg.example": {"auth": _b64("u:p")}}}))
    found = creds.for_registry("reg.example:5000")
    assert found is not None
    assert found.username == "u"


def test_kubernetes_secret_and_legacy_dockercfg() -> None:
    secret = json.dumps(
        {"auths": {"ghcr.io": {"username": "u", "password": "p", "auth": _b64("u:p")}}}
    ).encode()
    assert Credentials.from_dockerconfigjson(secret).for_registry("ghcr.io") is not None
    legacy = json.dumps({"ghcr.io": {"auth": _b64("old:pw")}})
    found = Credentials.from_dockerconfigjson(legacy).for_registry("ghcr.io")
    assert found is not None
    assert found.username == "old"


def test_explicit_credentials_and_merge() -> None:
    file_creds = Credentials({"localhost:5000": RegistryAuth(username="a", password="1")})
    explicit = Credentials.explicit("b", "2", "localhost:5000")
    merged = file_creds.merged(explicit)
    found = merged.for_registry("localhost:5000")
    assert found is not None
    assert found.username == "b"
    anywhere = Credentials.explicit("c", "3")
    assert anywhere.for_registry("any.registry") is not None


def test_secrets_never_in_repr() -> None:
    creds = Credentials.from_dockerconfigjson(json.dumps(CONFIG))
    text = repr(creds) + repr(creds.for_registry("localhost:5000")) + repr(creds.for_registry("ghcr.io"))
    assert "s3cret" not in text
    assert "refresh-me" not in text
    assert "hub:pass" not in text
    assert "localhost:5000" in text


def test_missing_default_config_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nowhere"))
    assert Credentials.from_docker_config().registries == []


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not valid JSON"),
        ('["list"]', "JSON object"),
        ('{"auths": []}', "'auths' must be an object"),
        ('{"auths": {"r.io": {"auth": "!!!"}}}', "base64"),
        ('{"auths": {"r.io": {"auth": "' + _b64("nocolon") + '"}}}', "user:password"),
    ],
)
def test_malformed_configs_are_clear(content: str, says: str) -> None:
    with pytest.raises(MeshwasmError) as caught:
        Credentials.from_dockerconfigjson(content)
    assert says in str(caught.value)


def test_unreadable_explicit_config_path(tmp_path: Path) -> None:
    with pytest.raises(MeshwasmError, match="cannot read Docker config"):
        Credentials.from_docker_config(tmp_path / "missing.json")


HELPER = """#!/bin/sh
# A docker-credential helper (Docker's protocol: `get`, server URL on stdin, JSON on stdout).
read -r server
case "$server" in
  helped.example) echo '{"ServerURL": "helped.example", "Username": "helper-user", "Secret": "helper-pw"}' ;;
  token.example) echo '{"ServerURL": "token.example", "Username": "<token>", "Secret": "refresh-tok"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "bin" / "docker-credential-test"
    helper.parent.mkdir()
    helper.write_text(HELPER)
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    config = {
        "auths": {"explicit.example": {"auth": _b64("file-user:pw")}},
        "credHelpers": {"helped.example": "test", "token.example": "test"},
        "credsStore": "test",
    }
    creds = Credentials.from_dockerconfigjson(json.dumps(config))
    helped = creds.for_registry("helped.example")
    assert helped is not None
    assert (helped.username, helped.password) == ("helper-user", "helper-pw")
    token = creds.for_registry("token.example")
    assert token is not None
    assert token.identity_token == "refresh-tok"
    assert not token.has_basic
    explicit = creds.for_registry("explicit.example")  # file entries win over the store
    assert explicit is not None
    assert explicit.username == "file-user"
    assert creds.for_registry("unknown.example") is None  # "credentials not found": anonymous
    assert "helper-pw" not in repr(creds)


def test_missing_credential_helper_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    creds = Credentials.from_dockerconfigjson(json.dumps({"auths": {}, "credsStore": "desktop"}))
    with pytest.raises(MeshwasmError, match="docker-credential-desktop is not installed"):
        creds.for_registry("ghcr.io")
