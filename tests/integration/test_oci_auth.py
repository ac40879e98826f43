"""Registry authentication against real registries: htpasswd Basic auth and bearer tokens.

The token-auth registry is the real distribution registry verifying real EdDSA JWTs; the token
service it points at is the small local one in tests/fixtures/token_server.py (a full token
server is out of scope).
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from fixtures.oci_modules import run_meshwasm, skopeo, synthetic_module
from fixtures.registry import AuthedRegistry
from meshwasm.errors import ExitCode
from meshwasm.net import free_port, http_ok, wait_until
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.credentials import Credentials, RegistryAuth
from meshwasm.oci.errors import AuthenticationError
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference
from meshwasm.process import ManagedProcess

pytestmark = pytest.mark.registry
MODULE = synthetic_module(30_000, seed=11)


def _docker_config(tmp_path: Path, registry: str, username: str, password: str) -> Path:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {f"http://{registry}": {"auth": auth}}}))
    return path


def test_basic_auth_push_with_password_stdin_pull_with_docker_config(
    auth_registry: AuthedRegistry, tmp_path: Path
) -> None:
    (tmp_path / "m.wasm").write_bytes(MODULE)
    ref = f"{auth_registry.address}/basic/x:v1"
    pushed = run_meshwasm(
        "-q", "image", "push", str(tmp_path / "m.wasm"), ref,
        "--username", auth_registry.username, "--password-stdin",
        stdin=auth_registry.password + "\n",
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    config = _docker_config(tmp_path, auth_registry.address, auth_registry.username, auth_registry.password)
    pulled = run_meshwasm("image", "pull", ref, "-o", str(tmp_path / "out"), "--docker-config", str(config))
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "out" / "plugin.wasm").read_bytes() == MODULE
    # skopeo, with the same login, sees the same digest.
    creds = f"{auth_registry.username}:{auth_registry.password}"
    raw = skopeo(
        "inspect", "--tls-verify=false", "--creds", creds, "--format", "{{.Digest}}", f"docker://{ref}"
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.strip() == pushed.stdout.strip().split("@")[1]


def test_wrong_password_names_the_registry_and_never_the_password(
    auth_registry: AuthedRegistry, tmp_path: Path
) -> None:
    wrong = "not-the-Password-42"
    result = run_meshwasm(
        "image", "pull", f"{auth_registry.address}/basic/x:v1", "-o", str(tmp_path / "out"),
        "--username", auth_registry.username, "--password-stdin", stdin=wrong,
    )  # fmt: skip
    assert result.returncode == ExitCode.AUTH
    assert auth_registry.address in result.stderr
    assert "rejected the credentials" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


def test_missing_credentials_say_so(auth_registry: AuthedRegistry, tmp_path: Path) -> None:
    empty = tmp_path / "config.json"
    empty.write_text("{}")
    result = run_meshwasm(
        "image", "inspect", f"{auth_registry.address}/basic/x:v1", "--docker-config", str(empty)
    )
    assert result.returncode == ExitCode.AUTH
    assert f"registry {auth_registry.address} requires credentials and none were given" in result.stderr


def test_credentials_for_another_registry_are_not_sent(auth_registry: AuthedRegistry) -> None:
    creds = Credentials({"other.example:5000": RegistryAuth(auth_registry.username, auth_registry.password)})
    with (
        RegistryClient(credentials=creds) as client,
        pytest.raises(AuthenticationError, match="none were given"),
    ):
        client.inspect(parse_reference(f"{auth_registry.address}/basic/x:v1"))


def test_bearer_token_flow(token_registry: AuthedRegistry) -> None:
    tokens = token_registry.token_server
    assert tokens is not None
    ref = parse_reference(f"{token_registry.address}/token/x:v1")
    login = Credentials.explicit(token_registry.username, token_registry.password, token_registry.address)
    issued_before = len(tokens.issued)
    seen: list[str] = []
    with RegistryClient(credentials=login, request_guard=lambda r: seen.append(str(r.url))) as client:
        digest = client.push_image(build_image(MODULE), ref)
        pulled = client.pull_module(ref)
    assert pulled.data == MODULE
    assert pulled.manifest_digest == digest
    new = tokens.issued[issued_before:]
    # Tokens are cached per scope: one for push (pull,push), one for pull; not one per request.
    assert 1 <= len(new) <= 3, new
    assert any("repository:token/x:pull,push" in scopes for scopes in new)
    assert any(url.startswith(tokens.realm) for url in seen)  # the guard also sees token requests


def test_identity_token_uses_the_refresh_token_grant(token_registry: AuthedRegistry) -> None:
    ref = parse_reference(f"{token_registry.address}/token/identity:v1")
    creds = Credentials({token_registry.address: RegistryAuth(identity_token=token_registry.refresh_token)})
    with RegistryClient(credentials=creds) as client:
        client.push_image(build_image(MODULE, variant="oci"), ref)
        assert client.pull_module(ref).data == MODULE


def test_token_auth_failures(token_registry: AuthedRegistry) -> None:
    ref = parse_reference(f"{token_registry.address}/token/x:v1")
    wrong = Credentials.explicit(token_registry.username, "wrong-secret-pw", token_registry.address)
    with RegistryClient(credentials=wrong) as client, pytest.raises(AuthenticationError) as caught:
        client.pull_module(ref)
    assert token_registry.address in str(caught.value)
    assert "rejected" in str(caught.value)
    assert "wrong-secret-pw" not in str(caught.value)
    with RegistryClient() as client, pytest.raises(AuthenticationError, match="none were given"):
        client.pull_module(ref)


def test_skopeo_agrees_through_the_token_flow(token_registry: AuthedRegistry) -> None:
    ref = parse_reference(f"{token_registry.address}/token/skopeo:v1")
    login = Credentials.explicit(token_registry.username, token_registry.password)
    with RegistryClient(credentials=login) as client:
        digest = client.push_image(build_image(MODULE), ref)
    creds = f"{token_registry.username}:{token_registry.password}"
    result = skopeo(
        "inspect", "--tls-verify=false", "--creds", creds, "--format", "{{.Digest}}", f"docker://{ref}"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == digest


@pytest.fixture(scope="module")
def auth_redirecting_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthedRegistry]:
    """Basic auth AND blob downloads redirected (307) to a separate static server on another port."""
    workdir = tmp_path_factory.mktemp("auth-redirect-registry")
    storage = workdir / "storage"
    storage.mkdir()
    port = free_port()
    blob_server = ManagedProcess(
        "blob-server",
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(storage), str(port)],
        log_path=workdir / "blob-server.log",
    )
    username, password = "redirect-user", f"pw-{secrets.token_hex(8)}"
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    server = LocalRegistry(workdir, htpasswd=htpasswd, redirect_blobs_to=f"http://127.0.0.1:{port}")
    try:
        blob_server.start()
        assert wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"), timeout=15, alive=blob_server.alive)
        server.start()
        server.wait_ready()
        yield AuthedRegistry(server, username, password)
    finally:
        server.stop()
        blob_server.stop()


def test_credentials_are_not_forwarded_to_the_redirect_target(
    auth_redirecting_registry: AuthedRegistry,
) -> None:
    registry = auth_redirecting_registry
    ref = parse_reference(f"{registry.address}/redirect/secret:v1")
    login = Credentials.explicit(registry.username, registry.password, registry.address)
    sent: list[tuple[str, str | None]] = []

    def record(request: httpx.Request) -> None:
        sent.append((request.url.netloc.decode(), request.headers.get("Authorization")))

    with RegistryClient(credentials=login) as client:
        client.push_image(build_image(MODULE, variant="oci"), ref)
    with RegistryClient(credentials=login, request_guard=record) as client:
        assert client.pull_module(ref).data == MODULE
    to_registry = [auth for host, auth in sent if host == registry.address]
    to_storage = [auth for host, auth in sent if host != registry.address]
    assert any(auth and auth.startswith("Basic ") for auth in to_registry)
    assert to_storage  # the blob really was redirected
    assert all(auth is None for auth in to_storage)
