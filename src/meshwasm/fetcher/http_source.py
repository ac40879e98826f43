"""Modules from plain http(s) URLs, streamed into the cache with a size cap and retries.

Retries follow Istio's agent (docs/architecture.md, "Istio agent and images"):
5xx except 501/505/511 and network errors are retried with exponential
backoff; 4xx are not. Every request, redirects
included, may only go to an allowlisted host, and every connection passes the
address guard on the address it is made to (resolved once, see
:mod:`meshwasm.safehttp`). The whole fetch, retries and their back-off
included, runs under the caller's deadline (:mod:`meshwasm.deadline`).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from meshwasm.deadline import DeadlineExceeded, check_deadline, current_deadline, deadline_expired
from meshwasm.fetcher.cache import CacheEntry, ModuleCache
from meshwasm.fetcher.errors import FetchError, NotFound, NotWasm, TooLarge, UpstreamFailed, UpstreamTimeout
from meshwasm.fetcher.security import AddressGuard, Allowlist, check_host_syntax
from meshwasm.fetcher.urls import ModuleSource
from meshwasm.safehttp import GuardedTransport

WASM_MAGIC = b"\0asm"
_NOT_RETRIED_5XX = frozenset({501, 505, 511})


@dataclass(frozen=True)
class HttpSourceSettings:
    timeout: float = 30.0
    max_bytes: int = 256 * 1024 * 1024
    retries: int = 3
    backoff: float = 0.5


class HttpSource:
    """Downloads http(s) modules into a :class:`ModuleCache` (synchronous; run it in a thread)."""

    def __init__(
        self,
        cache: ModuleCache,
        guard: AddressGuard,
        allowlist: Allowlist,
        settings: HttpSourceSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._cache = cache
        self._guard = guard
        self._allowlist = allowlist
        self._settings = settings
        self._sleep = sleep
        self._tls: ssl.SSLContext | None = None

    def fetch(self, source: ModuleSource) -> CacheEntry:
        """Download, verify it is wasm, store it under its sha256; retries as documented above."""
        attempt = 0
        while True:
            try:
                return self._fetch_once(source)
            except DeadlineExceeded as exc:
                raise UpstreamTimeout(f"{source.url}: {exc.message}") from exc
            except _Retryable as exc:
                deadline = current_deadline()
                pause = self._settings.backoff * (2**attempt)
                if attempt >= self._settings.retries:
                    raise exc.error from None
                if deadline is not None and deadline.remaining() <= pause:
                    raise UpstreamTimeout(
                        f"{source.url}: {deadline.error().message} (retrying after: {exc.error.message})"
                    ) from None
                self._sleep(pause)
                attempt += 1

    def _guard_request(self, request: httpx.Request) -> None:
        url = request.url
        check_host_syntax(url.host)
        hostname = url.host.lower()
        shown = f"[{hostname}]" if ":" in hostname else hostname
        host = hostname if url.port is None else f"{shown}:{url.port}"
        self._allowlist.check(host, hostname)

    def _transport(self) -> GuardedTransport:
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return GuardedTransport(
            verify=self._tls, resolver=self._guard.resolver, check=self._guard.check_addresses
        )

    def _fetch_once(self, source: ModuleSource) -> CacheEntry:
        settings = self._settings
        try:
            with (
                httpx.Client(
                    timeout=settings.timeout,
                    follow_redirects=True,
                    max_redirects=5,
                    event_hooks={"request": [self._guard_request]},
                    trust_env=False,
                    transport=self._transport(),
                ) as client,
                client.stream("GET", source.url) as response,
            ):
                status = response.status_code
                if status == 404 or status == 410:
                    raise NotFound(f"{source.url} answered {status}", code="module_not_found")
                if status >= 500:
                    error = UpstreamFailed(f"{source.url} answered {status}", code="upstream_5xx")
                    if status in _NOT_RETRIED_5XX:
                        raise error
                    raise _Retryable(error)
                if status >= 400:
                    detail = _error_detail(response)
                    raise UpstreamFailed(f"{source.url} answered {status}{detail}", code="upstream_4xx")
                if status != 200:
                    raise UpstreamFailed(
                        f"{source.url} answered {status}, expected 200", code="upstream_status"
                    )
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > settings.max_bytes:
                    raise TooLarge(
                        f"{source.url} is {declared} bytes, over the {settings.max_bytes}-byte module cap"
                    )
                return self._stream_into_cache(source, response)
        except FetchError:
            raise
        except httpx.TooManyRedirects as exc:
            raise UpstreamFailed(f"{source.url}: too many redirects", code="too_many_redirects") from exc
        except httpx.TimeoutException as exc:
            if deadline_expired():
                deadline = current_deadline()
                assert deadline is not None
                raise UpstreamTimeout(f"{source.url}: {deadline.error().message}") from exc
            raise _Retryable(
                UpstreamFailed(f"{source.url}: timed out after {settings.timeout} s", code="upstream_timeout")
            ) from exc
        except httpx.TransportError as exc:
            raise _Retryable(
                UpstreamFailed(f"{source.url}: {type(exc).__name__}: {exc}", code="upstream_unreachable")
            ) from exc

    def _stream_into_cache(self, source: ModuleSource, response: httpx.Response) -> CacheEntry:
        limit = self._settings.max_bytes
        with self._cache.begin(source.module_name) as pending:
            head = b""
            for chunk in response.iter_bytes(1 << 16):
                if len(head) < 4:
                    head = (head + chunk)[:4]
                    if len(head) == 4 and head != WASM_MAGIC:
                        raise NotWasm(f"{source.url} is not a wasm module (it does not start with \\0asm)")
                if pending.size + len(chunk) > limit:
                    raise TooLarge(f"{source.url} is over the {limit}-byte module cap")
                pending.write(chunk)
                check_deadline()
            if head != WASM_MAGIC:
                raise NotWasm(f"{source.url} is not a wasm module ({pending.size} bytes, no \\0asm header)")
            return pending.commit()


def _error_detail(response: httpx.Response) -> str:
    """``: <message>`` from a wasmfetcher's JSON error (e.g. why a signature was refused), else ``""``."""
    body = b""
    for chunk in response.iter_bytes(4096):
        body += chunk
        if len(body) >= 4096:
            break
    try:
        message = json.loads(body[:4096])["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f": {str(message)[:500]}" if isinstance(message, str) else ""


class _Retryable(Exception):
    def __init__(self, error: FetchError):
        super().__init__(str(error))
        self.error = error
