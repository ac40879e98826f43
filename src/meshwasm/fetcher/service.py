"""The fetcher's core: from a module URL to verified cached bytes (cache, policy, single flight).

Async at the edge, synchronous underneath: the cache, the registry client and
the http source are synchronous and run in worker threads, limited by their
own capacity limiter so pulls can never starve the threads that serve cached
modules. Requests for the same URL share one pull (single flight); a request
for a cached module never waits for anybody else's pull.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.to_thread

from meshwasm.fetcher.cache import CacheEntry, ModuleCache, normalize_checksum
from meshwasm.fetcher.config import FetcherConfig
from meshwasm.fetcher.errors import (
    BadRequest,
    ChecksumMismatch,
    FetchError,
    UpstreamFailed,
    from_registry_error,
)
from meshwasm.fetcher.http_source import HttpSource, HttpSourceSettings
from meshwasm.fetcher.metrics import FetcherMetrics
from meshwasm.fetcher.policy import Action, decide, effective_policy
from meshwasm.fetcher.security import AddressGuard, Allowlist, parse_networks
from meshwasm.fetcher.signatures import FetcherSignatures
from meshwasm.fetcher.urls import ModuleSource, classify

if TYPE_CHECKING:
    from meshwasm.oci.client import RegistryClient

log = logging.getLogger("meshwasm.fetcher")

CacheState = Literal["hit", "miss", "stale"]
_MAX_REMEMBERED_FAILURES = 1024


@dataclass(frozen=True)
class Served:
    """A module ready to send: its cache entry and, when held in memory, its bytes."""

    entry: CacheEntry
    body: bytes | None
    cache: CacheState


class HotModules:
    """Small in-memory LRU of module bytes, so hot modules are served without disk reads.

    Locked: the event loop reads it while cache evictions (in pull threads) discard from it.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def fits(self, size: int) -> bool:
        return size <= self.max_bytes // 2

    def put(self, key: tuple[str, str], data: bytes) -> None:
        if not self.fits(len(data)):
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)

    def discard(self, key: tuple[str, str]) -> None:
        with self._lock:
            data = self._items.pop(key, None)
            if data is not None:
                self._size -= len(data)


class ModuleFetcher:
    def __init__(
        self,
        config: FetcherConfig,
        *,
        registry: RegistryClient | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.metrics = FetcherMetrics()
        self._clock = clock
        self._hot = HotModules(config.cache.memory_bytes)
        self.cache = ModuleCache(
            config.cache.dir,
            max_bytes=config.cache.max_bytes,
            expiry_seconds=config.cache.expiry_seconds,
            clock=clock,
            on_evict=self._evicted,
        )
        self.guard = AddressGuard(
            blocked=parse_networks(config.security.blocked_cidrs),
            allow_loopback=config.security.allow_loopback,
        )
        self.allowlist = Allowlist.of(config.allow)
        self.http = HttpSource(
            self.cache,
            self.guard,
            self.allowlist,
            HttpSourceSettings(
                timeout=config.pull.timeout_seconds,
                max_bytes=config.pull.max_module_bytes,
                retries=config.pull.http_retries,
                backoff=config.pull.http_backoff_seconds,
            ),
        )
        self.signatures = FetcherSignatures.from_config(
            config.require_signature, config.require_signature_file
        )
        self._registry = registry if registry is not None else self._make_registry_client()
        self._inflight: dict[str, asyncio.Task[CacheEntry]] = {}
        self._last_checked: dict[str, float] = {}
        self._failures: dict[str, tuple[float, FetchError]] = {}  # url -> (until, error)
        self._limiter = anyio.CapacityLimiter(config.pull.max_concurrent)
        self._update_gauges()

    def _make_registry_client(self) -> RegistryClient:
        from meshwasm.oci.client import RegistryClient
        from meshwasm.oci.credentials import Credentials

        path = self.config.credentials.docker_config
        credentials = None
        if path is not None and (path.exists() or not self.config.credentials.optional):
            credentials = Credentials.from_docker_config(path)
            log.info("event=credentials file=%s registries=%s", path, ",".join(credentials.registries) or "-")
        elif path is not None:
            log.warning("event=credentials file=%s missing=true note=anonymous_pulls_only", path)
        return RegistryClient(
            credentials=credentials,
            insecure=self.config.insecure_registries,
            timeout=self.config.pull.timeout_seconds,
            max_module_size=self.config.pull.max_module_bytes,
            request_guard=self.guard.request_guard,
        )

    # ----- the one entry point

    async def fetch(self, url: str) -> Served:
        source = classify(url)
        if source.pinned_digest is not None and not source.pinned_digest.startswith("sha256:"):
            raise BadRequest(f"{url}: only sha256 digests are supported", code="bad_url")
        self.allowlist.check(source.host, source.hostname)
        self.signatures.check_source(source)

        policy = effective_policy(source, self.config.pull.policy, self.config.pull.always)
        ref = self.cache.get_ref(source.url)
        # A pinned digest may name an index; the ref record then knows the image manifest's.
        known = ref.checksum if ref is not None else None
        if known is None and source.pinned_digest is not None:
            known = normalize_checksum(source.pinned_digest)
        entry = await self._cached(source.module_name, known) if known else None
        entry = self.signatures.usable(entry)  # not verified by this process: pull and verify again
        checked = [t for t in (ref.resolved_at if ref else None, self._last_checked.get(source.url)) if t]
        decision = decide(
            policy=policy,
            cached_checksum=entry.checksum if entry else None,
            last_checked=max(checked) if checked else None,
            now=self._clock(),
            resolve_interval=self.config.pull.resolve_interval_seconds,
        )
        if decision.action is Action.SERVE and entry is not None:
            self.metrics.cache_hits.inc()
            return await self._serve(entry, "hit")
        if decision.action is Action.REVALIDATE and entry is not None:
            self._last_checked[source.url] = self._clock()
            try:
                fresh = await self._single_flight(source.url, lambda: self._pull(source, entry, "revalidate"))
            except FetchError as exc:
                self.metrics.stale_served.inc()
                log.warning(
                    "event=stale_served url=%s checksum=%s reason=%s",
                    _loggable(source.url),
                    entry.checksum,
                    exc.code,
                )
                return await self._serve(entry, "stale")
            if fresh.checksum == entry.checksum:
                self.metrics.cache_hits.inc()
                return await self._serve(fresh, "hit")
            self.metrics.cache_misses.inc()
            return await self._serve(fresh, "miss")
        self._check_backoff(source.url)
        self.metrics.cache_misses.inc()
        try:
            fresh = await self._single_flight(source.url, lambda: self._pull(source, None, "miss"))
        except FetchError as exc:
            self._remember_failure(source.url, exc)
            raise
        self._failures.pop(source.url, None)
        return await self._serve(fresh, "miss")

    def _check_backoff(self, url: str) -> None:
        failure = self._failures.get(url)
        if failure is None:
            return
        until, error = failure
        remaining = until - self._clock()
        if remaining <= 0:
            del self._failures[url]
            return
        self.metrics.backoff_answers.inc()
        raise type(error)(
            f"{error.message} (recent failure; next attempt in {remaining:.1f} s)",
            status=error.status,
            code=error.code,
        )

    def _remember_failure(self, url: str, error: FetchError) -> None:
        backoff = self.config.pull.failure_backoff_seconds
        # Local refusals (400, 403) cost the source nothing; only failures that reached it are remembered.
        if backoff > 0 and error.status not in (400, 403):
            now = self._clock()
            if len(self._failures) >= _MAX_REMEMBERED_FAILURES:
                for key in [k for k, (until, _) in self._failures.items() if until <= now]:
                    del self._failures[key]
                while len(self._failures) >= _MAX_REMEMBERED_FAILURES:
                    del self._failures[next(iter(self._failures))]  # the oldest
            self._failures[url] = (now + backoff, error)

    # ----- cache access

    async def _cached(self, module_name: str, checksum: str) -> CacheEntry | None:
        if self.cache.is_verified(module_name, checksum):
            return self.cache.get(module_name, checksum)
        # The first read after a start hashes the file: not on the event loop.
        return await anyio.to_thread.run_sync(self.cache.get, module_name, checksum)

    async def _serve(self, entry: CacheEntry, state: CacheState) -> Served:
        key = (entry.module_name, entry.checksum)
        body = self._hot.get(key)
        if body is None and self._hot.fits(entry.size):
            try:
                body = await anyio.to_thread.run_sync(entry.path.read_bytes)
            except FileNotFoundError as exc:  # evicted between lookup and read
                raise UpstreamFailed(
                    "the module was evicted while being served; retry", code="evicted"
                ) from exc
            self._hot.put(key, body)
        return Served(entry, body, state)

    def _evicted(self, entry: CacheEntry, reason: str) -> None:
        self._hot.discard((entry.module_name, entry.checksum))
        self.metrics.evictions.labels(reason).inc()

    def _update_gauges(self) -> None:
        entries = self.cache.entries()
        self.metrics.cache_entries.set(len(entries))
        self.metrics.cache_bytes.set(sum(e.size for e in entries))

    async def purge_expired(self) -> int:
        removed = await anyio.to_thread.run_sync(self.cache.purge_expired)
        self._update_gauges()
        return removed

    # ----- pulls

    async def _single_flight(self, key: str, pull: Callable[[], Awaitable[CacheEntry]]) -> CacheEntry:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(_as_coroutine(pull))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._pull_done(key, t))
        # Shielded: a client that hangs up does not cancel the pull the others wait for.
        return await asyncio.shield(task)

    def _pull_done(self, key: str, task: asyncio.Task[CacheEntry]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an unwatched failure is not reported as lost

    async def _pull(self, source: ModuleSource, cached: CacheEntry | None, why: str) -> CacheEntry:
        start = time.perf_counter()
        result = "ok"
        entry: CacheEntry | None = None
        try:
            entry = await anyio.to_thread.run_sync(self._pull_sync, source, cached, limiter=self._limiter)
            if cached is not None and entry.checksum == cached.checksum:
                result = "unchanged"
            return entry
        except FetchError as exc:
            result = exc.code
            raise
        except Exception as exc:
            from meshwasm.oci.errors import RegistryError

            if isinstance(exc, RegistryError):
                error = from_registry_error(exc)
                result = error.code
                raise error from exc
            result = "internal_error"
            raise
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.pulls.labels(source.kind, result).inc()
            self.metrics.pull_duration.labels(source.kind).observe(elapsed)
            self._update_gauges()
            self._log_pull(source, why, result, elapsed, entry)

    def _pull_sync(self, source: ModuleSource, cached: CacheEntry | None) -> CacheEntry:
        if source.kind == "http":
            entry = self.http.fetch(source)
            self.cache.set_ref(source.url, source.module_name, entry.checksum)
            return entry
        return self._pull_oci(source, cached)

    def _pull_oci(self, source: ModuleSource, cached: CacheEntry | None) -> CacheEntry:
        from meshwasm.oci.reference import parse_reference

        ref = parse_reference(source.url)
        if cached is not None:
            # Revalidation: one manifest HEAD is enough when the tag has not moved. The tag
            # may name an image index, whose digest is not the cached manifest's.
            resolved = normalize_checksum(self._registry.resolve(ref))
            record = self.cache.get_ref(source.url)
            if resolved in (cached.checksum, record.resolved_digest if record else None):
                self._remember(source, cached.checksum, resolved)
                return cached
            ref = ref.with_digest(f"sha256:{resolved}")
        pulled = self._registry.pull_module(ref)
        digest = normalize_checksum(pulled.manifest_digest)
        top = normalize_checksum(pulled.index_digest) if pulled.index_digest else digest
        if source.pinned_digest is not None and normalize_checksum(source.pinned_digest) not in (digest, top):
            raise ChecksumMismatch(
                f"{source.url}: registry returned manifest sha256:{digest}", code="checksum_mismatch"
            )
        self.signatures.admit(self._registry, source.url, pulled.manifest_digest, pulled.index_digest)
        entry = self.cache.put(source.module_name, digest, pulled.data)
        self._remember(source, digest, pulled.index_digest)
        return entry

    def _remember(self, source: ModuleSource, checksum: str, resolved: str | None) -> None:
        resolved_digest = normalize_checksum(resolved) if resolved else None
        if resolved_digest == checksum:
            resolved_digest = None
        self.cache.set_ref(source.url, source.module_name, checksum, resolved_digest=resolved_digest)

    def _log_pull(
        self, source: ModuleSource, why: str, result: str, elapsed: float, entry: CacheEntry | None
    ) -> None:
        fields: dict[str, object] = {"event": "pull", "kind": source.kind, "reason": why}
        if source.kind == "oci":
            from meshwasm.oci.reference import parse_reference

            ref = parse_reference(source.url)
            fields.update(registry=ref.registry, image=ref.repository, tag=ref.tag or "-")
            fields["digest"] = f"sha256:{entry.checksum}" if entry else (ref.digest or "-")
        else:
            fields.update(host=source.host, url=_loggable(source.url))
            fields["digest"] = f"sha256:{entry.checksum}" if entry else "-"
        fields.update(result=result, duration_ms=round(elapsed * 1000, 1), size=entry.size if entry else 0)
        line = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        (log.info if result in ("ok", "unchanged") else log.warning)(line)


async def _as_coroutine(pull: Callable[[], Awaitable[CacheEntry]]) -> CacheEntry:
    return await pull()


def _loggable(url: str) -> str:
    """A URL for logs: no query string or fragment (pre-signed URLs carry tokens there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace('"', '\\"') + '"'
    return text
