"""A WasmPlugin url as istiod reads it (Go's net/url; tests/fidelity/test_agent_plugins.py checks the
same cases end to end against istiod itself)."""

from __future__ import annotations

import pytest

from meshwasm.manifests.wasm_url import UnusableModuleUrl, go_url_scheme, module_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("oci://ghcr.io/team/m:v1", "oci://ghcr.io/team/m:v1"),
        ("OCI://ghcr.io/team/m:v1", "oci://ghcr.io/team/m:v1"),  # Go lower-cases the scheme
        ("ghcr.io/team/m:v1", "oci://ghcr.io/team/m:v1"),  # no scheme: oci://
        ("docker.io/library/m", "oci://docker.io/library/m"),
        ("http://fetcher:8080/fetch/abc", "http://fetcher:8080/fetch/abc"),
        ("file:///opt/m.wasm", "file:///opt/m.wasm"),
    ],
)
def test_module_url(url: str, expected: str) -> None:
    assert module_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:5000/team/m:v1", "drops this WasmPlugin"),  # Go: first path segment has a colon
        ("localhost:5000/team/m:v1", "scheme 'localhost'"),  # a scheme Istio's validation refuses
        ("registry.example:5000/m:v1", "scheme 'registry.example'"),
        ("ftp://host/m.wasm", "scheme 'ftp'"),
        (":5000/m", "missing protocol scheme"),
        ("", "no url"),
    ],
)
def test_urls_istiod_refuses_or_drops(url: str, message: str) -> None:
    with pytest.raises(UnusableModuleUrl, match=message) as caught:
        module_url(url)
    assert caught.value.hint or not url or url.startswith(":")


def test_go_scheme_rules() -> None:
    assert go_url_scheme("a+b-c.d://x") == "a+b-c.d"
    assert go_url_scheme("1abc://x") is None  # a scheme starts with a letter
    assert go_url_scheme("team/m:v1") is None  # '/' before ':' ends the scheme
