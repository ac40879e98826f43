"""What a ``/fetch/<b64>`` path names: decoding and classifying module URLs (pure).

TSB writes ``http://wasmfetcher.../fetch/<base64(oci url)>`` into the WasmPlugin
(seed README). We accept standard and URL-safe base64, with or without padding,
of an ``oci://``, ``http://`` or ``https://`` URL.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from meshwasm.fetcher.errors import BadRequest

_B64_CHARS = re.compile(r"^[A-Za-z0-9+/_-]+=*$")
_MAX_URL = 4096


@dataclass(frozen=True)
class ModuleSource:
    """A module URL, classified.

    ``module_name`` is Istio's cache key (``oci://registry/repo`` without tag or
    digest, or the full http URL); ``pinned_digest`` is set for ``@sha256:``
    references, whose content can never change.
    """

    url: str
    kind: Literal["oci", "http"]
    host: str  # host[:port] as written, lower-cased: what the allowlist names
    hostname: str  # host without port, for DNS resolution
    port: int
    module_name: str
    tag: str | None = None
    pinned_digest: str | None = None

    @property
    def is_latest(self) -> bool:
        """Tagged ``:latest`` as written, Istio's rule for the default pull policy
        (pkg/wasm/cache.go ``shouldIgnoreResourceVersion``): an untagged image is not."""
        return self.kind == "oci" and urlsplit(self.url).path.endswith(":latest")


def decode_fetch_path(b64: str) -> str:
    """The URL in a ``/fetch/<b64>`` path segment; :class:`BadRequest` when it is not base64 of text."""
    text = b64.strip()
    if not text or len(text) > _MAX_URL * 2 or not _B64_CHARS.match(text):
        raise BadRequest(
            f"fetch path {b64[:80]!r} is not base64 (standard or URL-safe alphabet)",
            code="bad_base64",
        )
    body = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        url = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(
            f"fetch path {b64[:80]!r} does not decode to a UTF-8 URL: {exc}", code="bad_base64"
        ) from exc
    if not url.isprintable() or any(ch.isspace() for ch in url):
        raise BadRequest("the decoded URL contains control characters or spaces", code="bad_url")
    return url


def encode_fetch_path(url: str) -> str:
    """The path segment TSB would write for ``url`` (standard base64, padded)."""
    return base64.b64encode(url.encode()).decode()


def classify(url: str) -> ModuleSource:
    """Split a module URL into what the allowlist, the cache and the pull policy need."""
    if url.startswith("oci://"):
        return _classify_oci(url)
    if url.startswith(("http://", "https://")):
        return _classify_http(url)
    raise BadRequest(
        f"unsupported module URL {url[:200]!r}: expected oci://, http:// or https://", code="bad_url"
    )


def _classify_oci(url: str) -> ModuleSource:
    from meshwasm.oci.errors import RegistryError
    from meshwasm.oci.reference import parse_reference

    try:
        ref = parse_reference(url)
    except RegistryError as exc:
        raise BadRequest(f"invalid OCI reference {url[:200]!r}: {exc}", code="bad_url") from exc
    hostname, port = _split_host(ref.registry, default_port=443)
    return ModuleSource(
        url=url,
        kind="oci",
        host=ref.registry.lower(),
        hostname=hostname,
        port=port,
        module_name=ref.module_name,
        tag=ref.tag,
        pinned_digest=ref.digest,
    )


def _classify_http(url: str) -> ModuleSource:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"invalid URL {url[:200]!r}: {exc}", code="bad_url") from exc
    if not parts.hostname:
        raise BadRequest(f"URL {url[:200]!r} has no host", code="bad_url")
    if parts.username or parts.password:
        raise BadRequest("credentials in module URLs are not accepted", code="bad_url")
    default = 443 if parts.scheme == "https" else 80
    hostname = parts.hostname.lower()
    host = hostname if port is None else f"{_bracket(hostname)}:{port}"
    return ModuleSource(
        url=url,
        kind="http",
        host=host,
        hostname=hostname,
        port=port or default,
        module_name=url,
    )


def _bracket(hostname: str) -> str:
    return f"[{hostname}]" if ":" in hostname else hostname


def _split_host(host: str, *, default_port: int) -> tuple[str, int]:
    """``registry:5000`` / ``[::1]:5000`` / ``ghcr.io`` -> (hostname, port)."""
    parts = urlsplit(f"//{host}")
    try:
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"invalid registry host {host!r}: {exc}", code="bad_url") from exc
    return (parts.hostname or host).lower(), port or default_port
