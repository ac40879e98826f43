"""The gateway's agent: resolves each WasmPlugin's module to a local file, as Istio's agent does.

Istio's agent (pkg/wasm: imagefetcher, httpfetcher, cache) sits between the
control plane and Envoy: it downloads the module a WasmPlugin names, keeps it
in ``<cache>/<sha256(module name)>/<checksum>.wasm``, and hands Envoy a local
filename. When it cannot, the filter becomes an RBAC stand-in (the failStrategy
is applied by the translator when a url has no local file). Sources:

- ``http(s)://`` (the wasmfetcher's ``/fetch/<b64>`` in the seed): downloaded
  with retries on 5xx and network errors (not 501/505/511), no retry on 4xx;
- ``oci://``: pulled straight from the registry;
- ``file://``: used in place after checking it is a wasm module.

Pull policy as Istio: ``IfNotPresent`` by default, ``Always`` for an OCI URL
tagged ``latest``; a given ``sha256`` is verified and makes a cached copy a hit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from meshwasm.errors import MeshwasmError
from meshwasm.fetcher.cache import CacheEntry, ModuleCache
from meshwasm.fetcher.http_source import HttpSource, HttpSourceSettings
from meshwasm.fetcher.security import AddressGuard, Allowlist
from meshwasm.fetcher.urls import classify
from meshwasm.manifests import istio
from meshwasm.oci.signing.policy import SignatureGate, SignaturePolicy
from meshwasm.wasm.binary import WASM_MAGIC


@dataclass(frozen=True)
class Resolution:
    """What the agent made of one WasmPlugin: a local module, or why there is none."""

    plugin: str  # namespace/name
    url: str
    path: str | None
    sha256: str | None
    error: str | None = None
    fetched: bool = False  # downloaded in this round (not a cache hit)


def pull_policy(plugin: istio.WasmPlugin) -> str:
    """Istio's effective policy: explicit, else Always for ``oci://...:latest``, else IfNotPresent."""
    spec = plugin.spec
    if spec.image_pull_policy and spec.image_pull_policy != "UNSPECIFIED_POLICY":
        return spec.image_pull_policy
    url = spec.url
    if url.startswith("oci://"):
        from meshwasm.oci.errors import InvalidReference
        from meshwasm.oci.reference import parse_reference

        try:
            reference = parse_reference(url)
        except InvalidReference:
            return "IfNotPresent"  # the pull reports the bad reference
        # No tag means latest, as for any image reference.
        return "Always" if reference.digest is None and reference.tag in (None, "latest") else "IfNotPresent"
    # The seed's fetcher URLs hide the tag in base64; the fetcher applies the tag's policy itself.
    return "IfNotPresent"


class ModuleAgent:
    """Resolves WasmPlugin URLs into a :class:`ModuleCache` (synchronous)."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        allowed_hosts: list[str],
        timeout: float = 120.0,
        signature_policy: SignaturePolicy | None = None,
    ):
        self.cache = ModuleCache(cache_dir)
        # oci:// modules it pulls itself; http(s) ones come from the wasmfetcher, which applies
        # the same policy (meshwasm up starts it with the policy).
        self._signatures = SignatureGate(signature_policy or SignaturePolicy())
        # The agent only talks to the hosts the gateway was told about (the local
        # fetcher and registry), never to link-local or metadata addresses.
        self._http = HttpSource(
            self.cache,
            AddressGuard(allow_loopback=True),
            Allowlist.of(allowed_hosts),
            HttpSourceSettings(timeout=timeout, retries=3, backoff=0.3),
        )
        self._guard = AddressGuard(allow_loopback=True)
        self._allowed = Allowlist.of(allowed_hosts)
        self._current: dict[str, CacheEntry] = {}  # url -> module last resolved

    def resolve(self, plugin: istio.WasmPlugin, *, force: bool = False) -> Resolution:
        """Resolve one plugin's module; ``force`` fetches even when a copy is cached."""
        name = f"{plugin.namespace or 'default'}/{plugin.name}"
        url = plugin.spec.url
        expect = (plugin.spec.sha256 or "").lower() or None
        try:
            if url.startswith("file://"):
                path = Path(unquote(urlsplit(url).path))
                return self._local_file(name, url, path, expect)
            if not force:
                hit = self._signed_hit(url, self._cached(url, expect))
                if hit is not None:
                    self._current[url] = hit
                    return Resolution(name, url, str(hit.path), hit.sha256)
            entry = self._fetch(url, expect)
        except MeshwasmError as exc:
            return Resolution(name, url, None, None, error=exc.message)
        self._current[url] = entry
        self.cache.set_ref(url, entry.module_name, entry.checksum)
        return Resolution(name, url, str(entry.path), entry.sha256, fetched=True)

    def changed_upstream(self, plugin: istio.WasmPlugin) -> bool:
        """For ``Always`` plugins served over http: whether the server now has other bytes.

        A HEAD compares the fetcher's ETag (the module's sha256) with what is
        loaded, so polling costs no download when nothing changed.
        """
        url = plugin.spec.url
        if not url.startswith(("http://", "https://")):
            return False
        try:
            self._guard.request_guard(httpx.Request("HEAD", url))
            response = httpx.head(url, timeout=5.0)
        except (httpx.HTTPError, MeshwasmError):
            return False  # a failed poll keeps the loaded module, as Istio does on re-pull failure
        etag = response.headers.get("etag", "").strip('"')
        if response.status_code != 200 or not etag:
            return False
        current = self._current.get(url)
        # No module yet (its first pull failed) and now there is one: that is a change too.
        return current is None or etag != current.sha256

    # ----- sources

    def _cached(self, url: str, expect: str | None) -> CacheEntry | None:
        source = classify(url) if not url.startswith("file://") else None
        if source is None:
            return None
        if expect:
            # A pinned sha256 is a cache hit whatever the URL's tag now points at.
            for entry in self.cache.entries():
                if entry.module_name == source.module_name and entry.sha256 == expect:
                    return self.cache.get(entry.module_name, entry.checksum)
            return None
        current = self._current.get(url)
        if current is not None:
            return self.cache.get(current.module_name, current.checksum)
        ref = self.cache.get_ref(url)
        if ref is not None:
            return self.cache.get(ref.module_name, ref.checksum)
        return None

    def _fetch(self, url: str, expect: str | None) -> CacheEntry:
        source = classify(url)
        entry = self._http.fetch(source) if source.kind == "http" else self._pull_oci(url, source.module_name)
        if expect and entry.sha256 != expect:
            self.cache.remove(entry.module_name, entry.checksum)
            raise MeshwasmError(
                f"module from {url} has sha256 {entry.sha256}, but the WasmPlugin pins {expect}"
            )
        return entry

    def _pull_oci(self, url: str, module_name: str) -> CacheEntry:
        from meshwasm.oci.client import RegistryClient
        from meshwasm.oci.reference import parse_reference

        reference = parse_reference(url)
        self._allowed.check(reference.registry, reference.registry.rsplit(":", 1)[0])
        with RegistryClient(request_guard=self._guard.request_guard) as client:
            pulled = client.pull_module(reference)
            self._signatures.admit(client, reference, pulled.manifest_digest, pulled.index_digest)
        return self.cache.put(module_name, pulled.manifest_digest, pulled.data)

    def _signed_hit(self, url: str, hit: CacheEntry | None) -> CacheEntry | None:
        """A cached oci:// module the policy covers is used only once verified by this process."""
        if hit is None or not self._signatures or not url.startswith("oci://"):
            return hit
        from meshwasm.oci.reference import parse_reference

        reference = parse_reference(url)
        if self._signatures.policy.rule_for(reference) is None:
            return hit
        return hit if self._signatures.is_admitted(reference, f"sha256:{hit.checksum}") else None

    @staticmethod
    def _local_file(name: str, url: str, path: Path, expect: str | None) -> Resolution:
        try:
            data = path.read_bytes()
        except OSError as exc:
            return Resolution(name, url, None, None, error=f"cannot read {path}: {exc.strerror}")
        if not data.startswith(WASM_MAGIC):
            return Resolution(name, url, None, None, error=f"{path} is not a wasm module (no \\0asm header)")
        digest = hashlib.sha256(data).hexdigest()
        if expect and digest != expect:
            return Resolution(name, url, None, None, error=f"{path} has sha256 {digest}, expected {expect}")
        return Resolution(name, url, str(path), digest)
