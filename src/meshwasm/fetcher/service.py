"""The fetcher's core: from a module URL to verified cached bytes (cache, policy, single flight).

Async at the edge, synchronous underneath: the cache, the registry client and
the http source are synchronous and run in worker threads, limited by their
own capacity limiter so pulls can never starve the threads that serve cached
modules. Requests for the same URL share one pull (single flight); a request
for a cached module never waits for anybody else's pull.

Bounded by design:

- time: each pull runs under one deadline (``pull.timeout_seconds``) that
  covers DNS, connect, TLS, headers, body, redirects, token fetches and layer
  extraction (:mod:`meshwasm.deadline`); waiting for a pull slot is bounded by
  the same budget (then 503 ``pull_slots_busy``);
- slots: at most ``max_concurrent_per_host`` pulls per host, so a slow
  registry cannot take the slots other registries' pulls need;
- availability: a cached module whose revalidation (``Always``, ``:latest``)
  is slow is served after ``revalidate_wait_seconds`` while the revalidation
  goes on in the background;
- memory: modules stream to the cache's staging directory and are verified
  there; only the small hot set is held in memory, as verified copies;
- integrity: before every serve the file's identity is compared with the one
  verified (:meth:`ModuleCache.unchanged`); a changed file is hashed again,
  and evicted and pulled again when it no longer matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.to_thread
import httpx

from meshwasm.deadline import DeadlineExceeded, deadline_scope
from meshwasm.fetcher.cache import CacheEntry, CacheError, ModuleCache, cache_error, normalize_checksum
from meshwasm.fetcher.config import FetcherConfig
from meshwasm.fetcher.errors import (
    BadRequest,
    ChecksumMismatch,
    FetchError,
    PullSlotsBusy,
    UpstreamFailed,
    from_cache_error,
    from_registry_error,
)
from meshwasm.fetcher.http_source import HttpSource, HttpSourceSettings
from meshwasm.fetcher.metrics import FetcherMetrics
from meshwasm.fetcher.policy import Action, decide, effective_policy
from meshwasm.fetcher.security import AddressGuard, Allowlist, check_host_syntax, parse_networks
from meshwasm.fetcher.signatures import FetcherSignatures
from meshwasm.fetcher.urls import ModuleSource, classify

if TYPE_CHECKING:
    from meshwasm.oci.client import RegistryClient

log = logging.getLogger("meshwasm.fetcher")

CacheState = Literal["hit", "miss", "stale"]
_MAX_REMEMBERED_FAILURES = 1024


@dataclass(frozen=True)
class Served:
    """A module ready to send: its cache entry and either its verified bytes (the hot set) or
    its file, opened and checked to be the verified one (the caller closes it)."""

    entry: CacheEntry
    body: bytes | None
    cache: CacheState
    file: IO[bytes] | None = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class ModuleChanged(Exception):
    """The cached module's file no longer holds the verified bytes; it was evicted."""


class HostSlots:
    """At most ``per_host`` pulls per host; limiters exist only while a host has pulls."""

    def __init__(self, per_host: int):
        self.per_host = per_host
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, host: str, *, wait: float) -> AsyncIterator[None]:
        limiter = self._limiters.get(host)
        if limiter is None:
            limiter = self._limiters[host] = anyio.CapacityLimiter(self.per_host)
        self._users[host] = self._users.get(host, 0) + 1
        try:
            await _acquire(limiter, wait, f"all {self.per_host} pull slots for {host}")
            try:
                yield
            finally:
                limiter.release()
        finally:
            self._users[host] -= 1
            if not self._users[host]:
                del self._users[host], self._limiters[host]


async def _acquire(limiter: anyio.CapacityLimiter, wait: float, what: str) -> None:
    try:
        with anyio.fail_after(wait):
            await limiter.acquire()
    except TimeoutError:
        raise PullSlotsBusy(
            f"{what} stayed taken for {wait:g} s (slow sources); retry later",
            code="pull_slots_busy",
        ) from None


class _LruTimes:
    """url -> time, keeping the most recent ``size`` URLs (bounded whatever URLs arrive)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, float] = OrderedDict()

    def get(self, key: str) -> float | None:
        return self._items.get(key)

    def __setitem__(self, key: str, value: float) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


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
            max_entries=config.cache.max_entries,
            max_staging_bytes=config.cache.max_staging_bytes,
        )
        self.guard = AddressGuard(
            blocked=parse_networks(config.security.blocked_cidrs),
            allowed=parse_networks(config.security.allowed_cidrs),
            allow_loopback=config.security.allow_loopback,
            resolver=_resolver(config),
        )
        self.allowlist = Allowlist.of(config.allow)
        # Every hop of a registry pull is judged by the allowlist; a registry's API host counts
        # as the registry (docker.io is served by registry-1.docker.io).
        from meshwasm.oci.transport import api_host

        self.hop_allowlist = self.allowlist.with_hosts(api_host(h) for h in self.allowlist.entries)
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
        self._last_checked = _LruTimes(config.cache.max_entries)
        self._failures: dict[str, tuple[float, FetchError]] = {}  # url -> (until, error)
        self._slots = anyio.CapacityLimiter(config.pull.max_concurrent)
        self._threads = anyio.CapacityLimiter(config.pull.max_concurrent)
        self._host_slots = HostSlots(config.pull.max_concurrent_per_host)
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
            request_guard=self._check_hop,
            transport_factory=lambda verify: self.guard.transport(verify=verify),
        )

    def _check_hop(self, request: httpx.Request) -> None:
        """Every request of a registry pull (redirects, token realms) goes to an allowed host."""
        from meshwasm.oci.transport import HOP

        check_host_syntax(request.url.host)
        hop = request.extensions.get(HOP, "a request")
        self.hop_allowlist.check_url(request.url, what=str(hop)[:1].upper() + str(hop)[1:])

    # ----- the one entry point

    async def fetch(self, url: str) -> Served:
        source = classify(url)
        check_host_syntax(source.hostname)
        if source.pinned_digest is not None and not source.pinned_digest.startswith("sha256:"):
            raise BadRequest(f"{url}: only sha256 digests are supported", code="bad_url")
        self.allowlist.check(source.host, source.hostname)
        self.signatures.check_source(source)
        try:
            return await self._fetch(source)
        except ModuleChanged:
            # Evicted; the second attempt pulls it again (and cannot find it changed again
            # unless the disk keeps flipping, which is then reported).
            try:
                return await self._fetch(source)
            except ModuleChanged as exc:
                raise UpstreamFailed(
                    f"{url}: the cached module changed on disk twice while being served; check the "
                    "cache volume",
                    status=503,
                    code="cache_corrupt",
                ) from exc

    async def _fetch(self, source: ModuleSource) -> Served:
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
            return await self._revalidate(source, entry)
        self._check_backoff(source.url)
        self.metrics.cache_misses.inc()
        try:
            task = self._flight(source.url, lambda: self._pull(source, None, "miss"))
            fresh = await asyncio.shield(task)
        except FetchError as exc:
            self._remember_failure(source.url, exc)
            raise
        self._failures.pop(source.url, None)
        return await self._serve(fresh, "miss")

    async def _revalidate(self, source: ModuleSource, entry: CacheEntry) -> Served:
        """Ask the source whether the cached module is current; serve the cached one when the
        source fails or has not answered within ``revalidate_wait_seconds`` (it goes on)."""
        self._last_checked[source.url] = self._clock()
        task = self._flight(source.url, lambda: self._pull(source, entry, "revalidate"))
        wait = self.config.pull.revalidate_wait_seconds
        try:
            fresh = await asyncio.wait_for(asyncio.shield(task), timeout=wait)
        except (FetchError, TimeoutError) as exc:
            reason = exc.code if isinstance(exc, FetchError) else "revalidation_pending"
            self.metrics.stale_served.inc()
            log.warning(
                "event=stale_served url=%s checksum=%s reason=%s",
                _loggable(source.url),
                entry.checksum,
                reason,
            )
            return await self._serve(entry, "stale")
        if fresh.checksum == entry.checksum:
            self.metrics.cache_hits.inc()
            return await self._serve(fresh, "hit")
        self.metrics.cache_misses.inc()
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
        """The verified bytes of ``entry``: from memory, or its file checked to be the verified
        one. Raises :class:`ModuleChanged` (after evicting it) when the file changed."""
        if not self.cache.unchanged(entry) and not await anyio.to_thread.run_sync(self.cache.reverify, entry):
            self._module_changed(entry)
        key = (entry.module_name, entry.checksum)
        body = self._hot.get(key)
        if body is not None:
            return Served(entry, body, state)
        handle = self.cache.open_unchanged(entry)
        if handle is None:  # replaced since the check above: hash what is there now
            if await anyio.to_thread.run_sync(self.cache.reverify, entry):
                handle = self.cache.open_unchanged(entry)
            if handle is None:
                self._module_changed(entry)
        assert handle is not None
        if not self._hot.fits(entry.size):
            return Served(entry, None, state, file=handle)
        with handle:
            data = await anyio.to_thread.run_sync(handle.read)
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            self.cache.remove(entry.module_name, entry.checksum, reason="corrupt")
            self._module_changed(entry)
        self._hot.put(key, data)
        return Served(entry, data, state)

    def _module_changed(self, entry: CacheEntry) -> None:
        log.warning(
            "event=module_changed_on_disk module=%s checksum=%s action=evicted_and_pulled_again",
            _loggable(entry.module_name),
            entry.checksum,
        )
        self._hot.discard((entry.module_name, entry.checksum))
        raise ModuleChanged(entry.module_name)

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

    def _flight(self, key: str, pull: Callable[[], Awaitable[CacheEntry]]) -> asyncio.Task[CacheEntry]:
        """The pull in progress for ``key``, started if there is none (single flight). Awaiters
        shield it: a client that hangs up does not cancel the pull the others wait for."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(_as_coroutine(pull))
            self._inflight[key] = task
            self.metrics.pulls_inflight.inc()
            task.add_done_callback(lambda t: self._pull_done(key, t))
        return task

    def _pull_done(self, key: str, task: asyncio.Task[CacheEntry]) -> None:
        self.metrics.pulls_inflight.dec()
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an unwatched failure is not reported as lost

    async def _pull(self, source: ModuleSource, cached: CacheEntry | None, why: str) -> CacheEntry:
        start = time.perf_counter()
        result = "ok"
        entry: CacheEntry | None = None
        wait = self.config.pull.timeout_seconds
        try:
            async with self._host_slots.hold(source.host, wait=wait):
                await _acquire(self._slots, wait, f"all {self._slots.total_tokens:g} pull slots")
                try:
                    entry = await anyio.to_thread.run_sync(
                        self._pull_sync, source, cached, limiter=self._threads
                    )
                finally:
                    self._slots.release()
            if cached is not None and entry.checksum == cached.checksum:
                result = "unchanged"
            return entry
        except FetchError as exc:
            result = exc.code
            raise
        except Exception as exc:
            error = _fetch_error(exc)
            if error is None:
                result = "internal_error"
                raise
            result = error.code
            raise error from exc
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.pulls.labels(source.kind, result).inc()
            self.metrics.pull_duration.labels(source.kind).observe(elapsed)
            self._update_gauges()
            self._log_pull(source, why, result, elapsed, entry)

    def _pull_sync(self, source: ModuleSource, cached: CacheEntry | None) -> CacheEntry:
        with deadline_scope(self.config.pull.timeout_seconds, f"pulling {_loggable(source.url)}"):
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
        staged = 0

        def charge(size: int) -> None:
            nonlocal staged
            self.cache.staging.charge(size)
            staged += size

        try:
            try:
                pulled = self._registry.pull_to_dir(ref, self.cache.staging_dir, on_write=charge)
            except OSError as exc:  # network errors are RegistryErrors: this is the staging disk
                raise cache_error(exc, f"storing {source.module_name}") from exc
            try:
                digest = normalize_checksum(pulled.manifest_digest)
                top = normalize_checksum(pulled.index_digest) if pulled.index_digest else digest
                pinned = source.pinned_digest
                if pinned is not None and normalize_checksum(pinned) not in (digest, top):
                    raise ChecksumMismatch(
                        f"{source.url}: registry returned manifest sha256:{digest}", code="checksum_mismatch"
                    )
                self.signatures.admit(self._registry, source.url, pulled.manifest_digest, pulled.index_digest)
                entry = self.cache.install_file(
                    source.module_name, digest, pulled.path, sha256=pulled.sha256, size=pulled.size
                )
            finally:
                pulled.path.unlink(missing_ok=True)  # installed (renamed away) or refused
        finally:
            self.cache.staging.release(staged)  # nothing of this pull is in staging any more
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


def _fetch_error(exc: Exception) -> FetchError | None:
    """The named answer for an error from a pull's layers (None: a bug, reported as such)."""
    from meshwasm.oci.errors import RegistryError

    if isinstance(exc, RegistryError | DeadlineExceeded):
        return from_registry_error(exc)
    if isinstance(exc, CacheError):
        return from_cache_error(exc)
    return None


def _resolver(config: FetcherConfig) -> Callable[[str, int], list[str]]:
    from meshwasm.safehttp import DnsServerResolver, system_resolver

    if config.resolver.servers:
        return DnsServerResolver(config.resolver.servers, timeout=config.resolver.timeout_seconds)
    return system_resolver


def _loggable(url: str) -> str:
    """A URL for logs: no query string or fragment (pre-signed URLs carry tokens there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace('"', '\\"') + '"'
    return text
