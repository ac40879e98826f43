"""The transport's policy and error mapping (pure: requests and responses built here, no network)."""

from __future__ import annotations

import httpx
import pytest

from meshwasm.errors import ExitCode
from meshwasm.oci.credentials import Credentials
from meshwasm.oci.errors import (
    AuthenticationError,
    DigestMismatch,
    ImageNotFound,
    InsecureRegistryError,
    RegistryError,
    RegistryUnavailable,
)
from meshwasm.oci.transport import RegistrySession, api_host, is_loopback, parse_challenge


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:samalba/my-app:pull,push",
    }
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.8.9.10", True),
        ("[::1]:5000", True),
        ("registry.localhost:80", True),
        ("10.0.0.1:5000", False),
        ("169.254.169.254", False),
        ("registry.example", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_docker_hub_api_host() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("ghcr.io") == "ghcr.io"


def _session(**kwargs: object) -> RegistrySession:
    defaults: dict[str, object] = {"credentials": None, "insecure": (), "timeout": 5.0, "request_guard": None}
    defaults.update(kwargs)
    return RegistrySession(**defaults)  # type: ignore[arg-type]


def test_plain_http_only_to_loopback_or_insecure() -> None:
    session = _session(insecure=["registry.internal:5000", "bare.host"])
    session._check_request(httpx.Request("GET", "http://127.0.0.1:5000/v2/"))
    session._check_request(httpx.Request("GET", "http://registry.internal:5000/v2/"))
    session._check_request(httpx.Request("GET", "http://bare.host:8080/v2/"))
    session._check_request(httpx.Request("GET", "https://anything.example/v2/"))
    with pytest.raises(InsecureRegistryError, match=r"refusing plain http to storage\.example"):
        session._check_request(httpx.Request("GET", "http://storage.example/blob"))  # e.g. a redirect
    with pytest.raises(InsecureRegistryError):
        _session(plain_http_loopback=False)._check_request(httpx.Request("GET", "http://127.0.0.1:5000/v2/"))


def test_guard_runs_before_the_scheme_policy_and_can_refuse() -> None:
    seen: list[str] = []

    def guard(request: httpx.Request) -> None:
        seen.append(str(request.url))
        if request.url.host == "169.254.169.254":
            raise PermissionError("metadata address blocked")

    session = _session(request_guard=guard)
    session._check_request(httpx.Request("GET", "https://ghcr.io/v2/"))
    with pytest.raises(PermissionError):
        session._check_request(httpx.Request("GET", "https://169.254.169.254/latest"))
    assert seen == ["https://ghcr.io/v2/", "https://169.254.169.254/latest"]


def _response(status: int, body: dict[str, object] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body or {}, request=httpx.Request("GET", "https://r.example/v2/x"))


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (
            404,
            {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
            ImageNotFound,
            ExitCode.NOT_FOUND,
        ),
        (500, None, RegistryUnavailable, ExitCode.NETWORK),
        (503, None, RegistryUnavailable, ExitCode.NETWORK),
        (429, None, RegistryUnavailable, ExitCode.NETWORK),
        (
            400,
            {"errors": [{"code": "DIGEST_INVALID", "message": "digest invalid"}]},
            DigestMismatch,
            ExitCode.INTEGRITY,
        ),
        (400, {"errors": [{"code": "MANIFEST_INVALID", "message": "bad"}]}, RegistryError, ExitCode.ERROR),
        (401, None, AuthenticationError, ExitCode.AUTH),
        (403, None, AuthenticationError, ExitCode.AUTH),
    ],
)
def test_status_mapping(
    status: int, body: dict[str, object] | None, error: type[Exception], code: ExitCode
) -> None:
    session = _session()
    with pytest.raises(error) as caught:
        session._raise_for_status(_response(status, body), "r.example", "pulling r.example/x:v1", None)
    assert caught.value.exit_code == code  # type: ignore[attr-defined]
    assert "r.example" in str(caught.value)
    if body:
        assert body["errors"][0]["code"] in str(caught.value)  # type: ignore[index]


def test_auth_messages_name_the_user_never_the_password() -> None:
    session = _session(credentials=Credentials.explicit("alice", "hunter2-secret", "r.example"))
    with pytest.raises(AuthenticationError) as rejected:
        session._raise_for_status(_response(401), "r.example", "pushing", None)
    assert "rejected the credentials of user 'alice'" in str(rejected.value)
    with pytest.raises(AuthenticationError) as denied:
        session._raise_for_status(_response(403), "r.example", "pushing", None)
    assert "denied access to user 'alice'" in str(denied.value)
    assert "hunter2" not in str(rejected.value) + str(denied.value)
