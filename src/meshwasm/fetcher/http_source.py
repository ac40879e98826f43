"""Modules from plain http(s) URLs, streamed into the cache with a size cap and retries.

Retries follow Istio's agent (docs/architecture.md, "Istio agent and images"):
5xx except 501/505/511 and network errors are retried with exponential
backoff; 4xx are not. A body that is gzip or tar is unwrapped as Istio's http
fetcher does (:mod:`meshwasm.fetcher.unbox`), from one staged file into the
next; a module is at least the 8-byte wasm header. Every request, redirects
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
from meshwasm.fetcher.cache import CacheEntry, ModuleCache, PendingModule
from meshwasm.fetcher.errors import FetchError, NotFound, NotWasm, TooLarge, UpstreamFailed, UpstreamTimeout
from meshwasm.fetcher.security import AddressGuard, Allowlist, check_host_syntax
from meshwasm.fetcher.unbox import (
    HEAD_BYTES,
    MAX_DEPTH,
    BodyKind,
    UnboxFailed,
    UnboxTooLarge,
    body_kind,
    unwrap_once,
)
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
                    detail = _error_detail(response)
                    raise NotFound(f"{source.url} answered {status}{detail}", code="module_not_found")
                if status >= 500:
                    detail = _error_detail(response)
                    error = UpstreamFailed(f"{source.url} answered {status}{detail}", code="upstream_5xx")
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
        with self._cache.begin(source.module_name) as body:
            head = b""
            for chunk in response.iter_bytes(1 << 16):
                if len(head) < HEAD_BYTES:
                    head = (head + chunk)[:HEAD_BYTES]
                    if body_kind(head, complete=False) == "other":  # refused before the rest arrives
                        raise NotWasm(_not_wasm(source.url, head, body.size + len(chunk)))
                if body.size + len(chunk) > limit:
                    raise TooLarge(f"{source.url} is over the {limit}-byte module cap")
                body.write(chunk)
                check_deadline()
            return self._unwrapped(source, body, head, depth=0)

    def _unwrapped(self, source: ModuleSource, body: PendingModule, head: bytes, *, depth: int) -> CacheEntry:
        """Commit ``body`` if it is a module, else unwrap it (gzip, tar) into a new staged file and
        look again, as Istio's ``unboxIfPossible`` does."""
        kind = body_kind(head, complete=True)
        if kind == "wasm":
            return body.commit()
        if kind == "other" or kind is None:
            raise NotWasm(_not_wasm(source.url, head, body.size, unwrapped=depth))
        if depth >= MAX_DEPTH:
            raise NotWasm(
                f"{source.url}: the module is wrapped (gzip, tar) more than {MAX_DEPTH} times; refusing to "
                "unwrap further"
            )
        limit = self._settings.max_bytes
        with self._cache.begin(source.module_name) as inner:
            inner_head = bytearray()

            def write(chunk: bytes) -> None:
                if len(inner_head) < HEAD_BYTES:
                    inner_head.extend(chunk[: HEAD_BYTES - len(inner_head)])
                    if body_kind(bytes(inner_head), complete=False) == "other":  # no need to go on
                        raise NotWasm(
                            _not_wasm(source.url, bytes(inner_head), inner.size, unwrapped=depth + 1)
                        )
                inner.write(chunk)

            with body.read_back() as wrapped:
                try:
                    unwrap_once(kind, wrapped, write, max_bytes=limit)
                except UnboxFailed as exc:
                    raise NotWasm(
                        f"{source.url}: the body is {_kind_name(kind)} but does not unwrap: {exc}; Istio's "
                        "agent then keeps the body as it came, which is not a wasm module"
                    ) from exc
                except UnboxTooLarge as exc:
                    raise TooLarge(
                        f"{source.url}: the {_kind_name(kind)} body is over the {limit}-byte module cap "
                        f"unwrapped ({exc})"
                    ) from exc
            body.abort()  # only the unwrapped bytes stay staged
            return self._unwrapped(source, inner, bytes(inner_head), depth=depth + 1)


def _kind_name(kind: BodyKind) -> str:
    return {"gzip": "gzip", "tar": "a tar archive"}.get(kind, kind)


def _not_wasm(url: str, head: bytes, size: int, *, unwrapped: int = 0) -> str:
    what = "its content" if unwrapped == 0 else f"its content, unwrapped {unwrapped} time(s),"
    if head.startswith(WASM_MAGIC):
        return f"{url} is not a wasm module: {what} is {size} bytes, shorter than the 8-byte wasm header"
    return (
        f"{url} is not a wasm module: {what} does not start with \\0asm, and is neither gzip nor a "
        "tar archive (which Istio's agent would unwrap)"
    )


def _error_detail(response: httpx.Response) -> str:
    """``: <message> [<code>]`` from a wasmfetcher's JSON error (why a signature was refused, which
    registry was unreachable), else ``""``; `meshwasm doctor` reads the code."""
    body = b""
    for chunk in response.iter_bytes(4096):
        body += chunk
        if len(body) >= 4096:
            break
    try:
        error = json.loads(body[:4096])["error"]
        message, code = error["message"], error.get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""
    if not isinstance(message, str):
        return ""
    suffix = f" [{code}]" if isinstance(code, str) and code.replace("_", "").isalnum() else ""
    return f": {message[:500]}{suffix}"


class _Retryable(Exception):
    def __init__(self, error: FetchError):
        super().__init__(str(error))
        self.error = error
