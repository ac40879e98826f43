"""The gateway's agent: resolves each WasmPlugin's module to a local file, as Istio's agent does.

Istio's agent (pkg/wasm: cache.go ``LocalFileCache.Get``, imagefetcher.go, httpfetcher.go,
convert.go) sits between istiod and Envoy: it downloads the module a WasmPlugin names, keeps it
in ``<cache>/<sha256(module name)>/<checksum>.wasm`` and hands Envoy that file. When it cannot,
the filter becomes an RBAC stand-in (the translator applies the failStrategy to a plugin without
a local file). This agent follows Istio's ``LocalFileCache`` step by step:

- the checksum a module is keyed and verified by is the image MANIFEST digest for ``oci://`` (the
  linux/amd64 image's, for an index) and the module's sha256 for ``http(s)://``; a WasmPlugin's
  ``sha256`` is compared with that checksum, and a digest in an ``oci://`` URL is one too;
- which checksum a URL has is remembered per process (Istio's agent keeps it in memory), with the
  resource version of each WasmPlugin that asked;
- pull policy: ``IfNotPresent`` serves what the URL last resolved to; ``Always`` asks the source
  again when the WasmPlugin's resource version changed (never by polling); unset means Always for
  an ``oci://`` URL ending in ``:latest`` and IfNotPresent otherwise (an untagged image too);
- an oci:// pull asks for the manifest first and downloads the module only when that checksum is
  not cached;
- the imagePullSecret istiod resolved (see :mod:`meshwasm.gateway.pull_secrets`) authenticates
  oci:// pulls; one that could not be read fails the fetch, whatever the URL;
- a registry whose 401 challenge names an unsafe realm is refused (:mod:`meshwasm.gateway.realm`);
- one deadline (the agent's ``timeout``, Istio's ``RequestTimeout``) bounds the whole fetch of a
  module: manifests, token fetches, redirects, the download, retries and their back-off;
- an http(s) body that is gzip or tar is unwrapped as Istio's http fetcher does
  (:mod:`meshwasm.fetcher.unbox`).

Modules are never held whole in memory: oci:// pulls stream into the cache's staging directory
and are verified there (:meth:`RegistryClient.pull_to_dir`, then :meth:`ModuleCache.install_file`),
http(s) ones stream into the cache (:class:`HttpSource`). Every connection is made to the address
the agent's guard checked (resolved once, :meth:`AddressGuard.transport`).

Not Istio: with a signature policy (``meshwasm up --require-signature``), oci:// modules it covers
are verified before they are cached, and a cached one is used only once this process verified it.

Differences kept on purpose: modules live on disk across runs (a hit still needs the URL's
checksum, which a new process learns from the source, as Istio does); ``file://`` URLs are used in
place; ``force`` (``meshwasm up --poll-modules``) re-fetches regardless of policy.
"""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from meshwasm.deadline import deadline_scope
from meshwasm.errors import MeshwasmError
from meshwasm.fetcher.cache import CacheEntry, ModuleCache, cache_error, normalize_checksum
from meshwasm.fetcher.http_source import HttpSource, HttpSourceSettings
from meshwasm.fetcher.security import AddressGuard, Allowlist, check_host_syntax
from meshwasm.fetcher.urls import ModuleSource, classify
from meshwasm.gateway.pull_secrets import NO_SECRET, PullSecret
from meshwasm.gateway.realm import refuse_unsafe_realms
from meshwasm.manifests import istio
from meshwasm.manifests.wasm_url import module_url
from meshwasm.oci.signing.policy import SignatureGate, SignaturePolicy
from meshwasm.wasm.binary import WASM_MAGIC


class AgentError(MeshwasmError):
    """The agent could not provide a module for a WasmPlugin (the failStrategy applies)."""


@dataclass(frozen=True)
class Resolution:
    """What the agent made of one WasmPlugin: a local module, or why there is none."""

    plugin: str  # namespace/name
    url: str
    path: str | None
    sha256: str | None
    error: str | None = None
    fetched: bool = False  # downloaded in this round (not a cache hit)
    checksum: str | None = None  # what the cache keys the module by (Istio's file name)


@dataclass
class _UrlChecksum:
    """Istio's ``checksumEntry``: what a URL last resolved to, and each resource's version then."""

    checksum: str
    versions: dict[str, str] = field(default_factory=dict)


def pull_policy(plugin: istio.WasmPlugin) -> str:
    """Istio's effective policy: explicit, else Always for ``oci://...:latest``, else IfNotPresent
    (pkg/wasm/cache.go ``shouldIgnoreResourceVersion``: an untagged image is IfNotPresent)."""
    spec = plugin.spec
    if spec.image_pull_policy and spec.image_pull_policy != "UNSPECIFIED_POLICY":
        return spec.image_pull_policy
    try:
        url = module_url(spec.url)
    except MeshwasmError:
        return "IfNotPresent"  # resolving reports the URL
    parts = urlsplit(url)
    return "Always" if parts.scheme == "oci" and parts.path.endswith(":latest") else "IfNotPresent"


def resource_version(plugin: istio.WasmPlugin) -> str:
    """A local stand-in for the WasmPlugin's Kubernetes ``resourceVersion``: it changes whenever the
    rendered resource does (spec, labels, annotations), as the API server's does on every write."""
    manifest = json.dumps(plugin.to_manifest(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(manifest.encode()).hexdigest()[:16]


def plugin_key(plugin: istio.WasmPlugin) -> str:
    """``namespace/name``: how the agent and its callers name a WasmPlugin."""
    return f"{plugin.namespace or 'default'}/{plugin.name}"


class ModuleAgent:
    """Resolves WasmPlugin URLs into a :class:`ModuleCache` (synchronous)."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        allowed_hosts: list[str],
        timeout: float = 30.0,
        signature_policy: SignaturePolicy | None = None,
    ):
        self.cache = ModuleCache(cache_dir)
        # oci:// modules it pulls itself; http(s) ones come from the wasmfetcher, which applies
        # the same policy (meshwasm up starts it with the policy).
        self._signatures = SignatureGate(signature_policy or SignaturePolicy())
        # The agent only talks to the hosts the gateway was told about (the local
        # fetcher and registry), never to link-local or metadata addresses.
        self._guard = AddressGuard(allow_loopback=True)
        self._allowed = Allowlist.of(allowed_hosts)
        self._timeout = timeout
        self._http = HttpSource(
            self.cache,
            self._guard,
            self._allowed,
            # Istio makes 5 attempts with backoff from 0.5 s; locally 4 from 0.3 s (the same
            # verdicts, a faster fail-closed when the fetcher is down). 4xx are not retried.
            HttpSourceSettings(timeout=timeout, retries=3, backoff=0.3),
        )
        self._checksums: dict[str, _UrlChecksum] = {}  # url -> what it last resolved to
        self._loaded: dict[str, CacheEntry] = {}  # url -> module last handed out (for polling)

    # ----- the one entry point

    def resolve(
        self,
        plugin: istio.WasmPlugin,
        *,
        resource_version: str = "",
        pull_secret: PullSecret = NO_SECRET,
        force: bool = False,
    ) -> Resolution:
        """The module for one WasmPlugin at ``resource_version`` (see the module doc).

        ``force`` fetches from the source whatever the policy (``meshwasm up --poll-modules``)."""
        name = plugin_key(plugin)
        raw_url = plugin.spec.url
        try:
            if pull_secret.missing:
                raise AgentError(
                    f"cannot fetch Wasm module {name}: missing image pulling secret ({pull_secret.problem})"
                )
            url = module_url(raw_url)
            if url.startswith("file://"):
                return self._local_file(name, url, Path(unquote(urlsplit(url).path)), plugin.spec.sha256)
            entry, fetched = self._get(url, plugin, name, resource_version, pull_secret, force=force)
        except MeshwasmError as exc:
            return Resolution(name, raw_url, None, None, error=exc.message)
        self._loaded[url] = entry
        return Resolution(
            name, raw_url, str(entry.path), entry.sha256, fetched=fetched, checksum=entry.checksum
        )

    # ----- Istio's LocalFileCache.getOrFetch

    def _get(
        self,
        url: str,
        plugin: istio.WasmPlugin,
        resource: str,
        resource_version: str,
        pull_secret: PullSecret,
        *,
        force: bool,
    ) -> tuple[CacheEntry, bool]:
        source = classify(url)
        checksum = normalize_checksum(plugin.spec.sha256) if plugin.spec.sha256 else None
        ignore_version = pull_policy(plugin) != "Always"
        pinned = source.pinned_digest if source.kind == "oci" else None
        if checksum is None and pinned is not None and pinned.startswith("sha256:"):
            checksum = normalize_checksum(pinned)
        if checksum is None:
            known = self._checksums.get(url)
            if known is not None:
                # force: as if the version had changed (the source is asked what the URL is now).
                if not force and (ignore_version or known.versions.get(resource) == resource_version):
                    checksum = known.checksum
                known.versions[resource] = resource_version
        if checksum is not None and not force:
            hit = self._signed_hit(url, self.cache.get(source.module_name, checksum))
            if hit is not None:
                self._remember(url, source, hit.checksum, resource, resource_version)
                return hit, False
        # Istio's getOrFetch: one context with RequestTimeout for the whole fetch.
        with deadline_scope(self._timeout, f"fetching Wasm module {url}"):
            if source.kind == "http":
                entry = self._fetch_http(url, source, checksum)
            else:
                entry = self._fetch_oci(url, source, checksum, pull_secret, force=force)
        self._remember(url, source, entry.checksum, resource, resource_version)
        return entry, True

    def _fetch_http(self, url: str, source: ModuleSource, expected: str | None) -> CacheEntry:
        present = {(e.module_name, e.checksum) for e in self.cache.entries()}
        entry = self._http.fetch(source)
        if expected is not None and entry.checksum != expected:
            if (entry.module_name, entry.checksum) not in present:
                self.cache.remove(entry.module_name, entry.checksum)
            raise AgentError(_mismatch(url, entry.checksum, expected))
        return entry

    def _fetch_oci(
        self, url: str, source: ModuleSource, expected: str | None, pull_secret: PullSecret, *, force: bool
    ) -> CacheEntry:
        from meshwasm.oci.client import RegistryClient
        from meshwasm.oci.credentials import Credentials
        from meshwasm.oci.reference import parse_reference

        reference = parse_reference(url)
        self._allowed.check(source.host, source.hostname)
        secret = pull_secret.docker_config
        credentials = Credentials.from_dockerconfigjson(secret) if secret else None
        with RegistryClient(
            credentials=credentials,
            timeout=self._timeout,
            pull_timeout=self._timeout,
            request_guard=_check_host_syntax,
            # Resolved once, checked, connected there: every hop (redirects and token realms too).
            transport_factory=lambda verify: self._guard.transport(verify=verify),
            challenge_guard=refuse_unsafe_realms,
        ) as client:
            # Istio asks for the manifest first: its digest is the checksum.
            manifest_digest, index_digest = client.image_digests(reference)
            digest = normalize_checksum(manifest_digest)
            if expected is not None and digest != expected:
                raise AgentError(_mismatch(url, digest, expected))
            if not force:
                hit = self._signed_hit(url, self.cache.get(source.module_name, digest))
                if hit is not None:
                    return hit
            try:
                pulled = client.pull_to_dir(reference.with_digest(manifest_digest), self.cache.staging_dir)
            except OSError as exc:  # network errors are RegistryErrors: this is the staging disk
                raise cache_error(exc, f"storing {source.module_name}") from exc
            try:
                self._signatures.admit(client, reference, pulled.manifest_digest, index_digest)
                return self.cache.install_file(
                    source.module_name, digest, pulled.path, sha256=pulled.sha256, size=pulled.size
                )
            finally:
                pulled.path.unlink(missing_ok=True)  # installed (renamed away) or refused

    def _signed_hit(self, url: str, hit: CacheEntry | None) -> CacheEntry | None:
        """A cached oci:// module the policy covers is used only once verified by this process."""
        if hit is None or not self._signatures or not url.startswith("oci://"):
            return hit
        from meshwasm.oci.reference import parse_reference

        reference = parse_reference(url)
        if self._signatures.policy.rule_for(reference) is None:
            return hit
        return hit if self._signatures.is_admitted(reference, f"sha256:{hit.checksum}") else None

    def _remember(self, url: str, source: ModuleSource, checksum: str, resource: str, version: str) -> None:
        # Istio's updateChecksum: not for digest-pinned oci:// URLs, whose checksum is in the URL.
        if source.kind == "oci" and "@" in url:
            return
        known = self._checksums.setdefault(url, _UrlChecksum(checksum))
        known.checksum = checksum
        known.versions[resource] = version

    # ----- not Istio: polling (meshwasm up --poll-modules)

    def changed_upstream(self, plugin: istio.WasmPlugin) -> bool:
        """For plugins served over http: whether the server now has other bytes.

        A HEAD compares the fetcher's ETag (the module's sha256) with what is
        loaded, so polling costs no download when nothing changed. Istio never
        polls; ``meshwasm up --poll-modules`` does.
        """
        try:
            url = module_url(plugin.spec.url)
        except MeshwasmError:
            return False
        if not url.startswith(("http://", "https://")):
            return False
        try:
            self._allowed.check_url(httpx.URL(url), what="polling a module")
            with httpx.Client(
                timeout=5.0, transport=self._guard.transport(), trust_env=False
            ) as client:  # the address is checked where the connection is made
                response = client.head(url)
        except (httpx.HTTPError, MeshwasmError):
            return False  # a failed poll keeps the loaded module
        etag = response.headers.get("etag", "").strip('"')
        if response.status_code != 200 or not etag:
            return False
        current = self._loaded.get(url)
        # No module yet (its first pull failed) and now there is one: that is a change too.
        return current is None or etag != current.sha256

    # ----- file://

    @staticmethod
    def _local_file(name: str, url: str, path: Path, expect: str | None) -> Resolution:
        try:
            # A FIFO or device (/dev/zero) would block or never end: regular files only, streamed.
            if not stat.S_ISREG(path.stat().st_mode):
                return Resolution(name, url, None, None, error=f"{path} is not a regular file")
            with path.open("rb") as handle:
                head = handle.read(8)
                if len(head) < 8 or not head.startswith(WASM_MAGIC):
                    return Resolution(
                        name, url, None, None, error=f"{path} is not a wasm module (no \\0asm header)"
                    )
                handle.seek(0)
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            return Resolution(name, url, None, None, error=f"cannot read {path}: {exc.strerror}")
        if expect and digest != expect.lower():
            return Resolution(name, url, None, None, error=f"{path} has sha256 {digest}, expected {expect}")
        return Resolution(name, url, str(path), digest, checksum=digest)


def _check_host_syntax(request: httpx.Request) -> None:
    # Hosts that resolvers and Go read differently are refused before any connection.
    check_host_syntax(request.url.host)


def _mismatch(url: str, actual: str, expected: str) -> str:
    # Istio's words (pkg/wasm/cache.go), and which checksum it is.
    kind = "manifest digest" if url.startswith("oci://") else "sha256"
    return (
        f"module downloaded from {url} has checksum {actual}, which does not match: {expected} "
        f"(for {url.split('://', 1)[0]}:// URLs Istio compares the {kind})"
    )
