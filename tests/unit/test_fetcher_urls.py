"""Decoding /fetch/<b64> paths and classifying module URLs."""

from __future__ import annotations

import base64

import pytest

from meshwasm.fetcher.errors import BadRequest
from meshwasm.fetcher.urls import classify, decode_fetch_path, encode_fetch_path

SEED_PATH = "b2NpOi8vZG9ja2VyLmlvL3NyZWVoYXJpa21hcmFyL3dhc20tYWRkLWhlYWRlcjpsYXRlc3Q="


def test_seed_path_decodes_to_the_seed_image() -> None:
    assert decode_fetch_path(SEED_PATH) == "oci://docker.io/sreeharikmarar/wasm-add-header:latest"


@pytest.mark.parametrize("strip_padding", [False, True])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_standard_and_urlsafe_with_and_without_padding(urlsafe: bool, strip_padding: bool) -> None:
    url = "https://example.com/m??.wasm?x=1>"  # bytes that need + and / (or - and _)
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(url.encode()).decode()
    assert ("-" in encoded) if urlsafe else ("+" in encoded)
    if strip_padding:
        encoded = encoded.rstrip("=")
    assert decode_fetch_path(encoded) == url


@pytest.mark.parametrize("bad", ["", "!!!!", "abc$def", "a", "/w==", base64.b64encode(b"\xff\xfe").decode()])
def test_malformed_base64_is_a_400(bad: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode_fetch_path(bad)
    assert info.value.status == 400


def test_control_characters_in_the_url_are_refused() -> None:
    with pytest.raises(BadRequest, match="control characters"):
        decode_fetch_path(encode_fetch_path("http://a/\nb"))


def test_oci_reference_classified_as_istio_names_it() -> None:
    src = classify("oci://127.0.0.1:5000/team/add-header:v1")
    assert (src.kind, src.host, src.hostname, src.port) == ("oci", "127.0.0.1:5000", "127.0.0.1", 5000)
    assert src.module_name == "oci://127.0.0.1:5000/team/add-header"
    assert src.tag == "v1"
    assert src.pinned_digest is None
    assert not src.is_latest


def test_only_a_written_latest_tag_is_latest_as_istio_decides_pull_policy() -> None:
    # Istio: Always by default only for an oci:// URL ending in ":latest"; untagged is IfNotPresent.
    assert classify("oci://registry.example.com/add-header:latest").is_latest
    assert not classify("oci://registry.example.com/add-header").is_latest
    assert not classify("oci://127.0.0.1:5000/add-header").is_latest  # the port is not a tag


def test_digest_pinned_reference() -> None:
    digest = "sha256:" + "a" * 64
    src = classify(f"oci://registry.example.com/add-header@{digest}")
    assert src.pinned_digest == digest
    assert not src.is_latest


def test_http_module_name_is_the_full_url() -> None:
    src = classify("http://[::1]:8000/m.wasm")
    assert (src.kind, src.host, src.hostname, src.port) == ("http", "[::1]:8000", "::1", 8000)
    assert src.module_name == "http://[::1]:8000/m.wasm"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x/m.wasm",
        "oci://UPPER/Repo",
        "http:///nohost",
        "http://user:pw@host/m.wasm",
        "file:///etc/passwd",
    ],
)
def test_unsupported_or_invalid_urls_are_a_400(url: str) -> None:
    with pytest.raises(BadRequest):
        classify(url)
