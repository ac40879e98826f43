"""The wasmfetcher's HTTP face (Starlette): /fetch, /healthz, /readyz, /metrics.

``GET|HEAD /fetch/<b64>`` answers the module named by the base64 URL (the path
TSB writes into WasmPlugins, seed README). With a signing key configured,
``/fetch/<b64>?sig=<hex HMAC-SHA256(key, url)>`` is required, unless
``security.allow_unsigned`` keeps the plain form open for TSB. Every error is
``{"error": {"code", "message"}}`` with a status that says whose fault it is.

``/readyz`` answers 503 while the cache cannot take a new module (``cache_full``,
``cache_unwritable``): a probe file is written and synced where downloads go.

Modules too large for the in-memory hot set are streamed from their file with
the file's bytes hashed as they are sent; the last chunk is held back until the
hash matches, so a file changed while it is being sent ends the response short
(the client sees a truncated body, never a complete wrong one) and is evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import IO

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from meshwasm.fetcher.cache import CacheEntry, CacheError, CacheFullError
from meshwasm.fetcher.config import FetcherConfig
from meshwasm.fetcher.errors import FetchError, Forbidden, from_cache_error
from meshwasm.fetcher.security import verify_signature
from meshwasm.fetcher.service import ModuleFetcher, Served
from meshwasm.fetcher.urls import decode_fetch_path

log = logging.getLogger("meshwasm.fetcher")

WASM_TYPE = "application/wasm"


def create_app(config: FetcherConfig, *, fetcher: ModuleFetcher | None = None) -> Starlette:
    service = fetcher or ModuleFetcher(config)
    signing_key = config.signing_key()
    ready = asyncio.Event()

    async def fetch(request: Request) -> Response:
        try:
            url = decode_fetch_path(request.path_params["b64"])
            _check_signature(
                signing_key, config.security.allow_unsigned, url, request.query_params.get("sig")
            )
            served = await service.fetch(url)
        except CacheError as exc:  # reading or recording in the cache outside a pull
            error = from_cache_error(exc)
            service.metrics.responses.labels(str(error.status)).inc()
            return error_response(error.status, error.code, error.message)
        except FetchError as exc:
            service.metrics.responses.labels(str(exc.status)).inc()
            return error_response(exc.status, exc.code, exc.message)
        response = _module_response(request, served, service)
        service.metrics.responses.labels(str(response.status_code)).inc()
        if response.status_code == 200 and request.method == "GET":
            service.metrics.bytes_served.inc(served.entry.size)
        return response

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        if not ready.is_set() or not service.cache.root.is_dir():
            return error_response(503, "not_ready", "the fetcher is starting or its cache directory is gone")
        problem = await anyio.to_thread.run_sync(service.cache.probe_writable)
        if problem is not None:
            code = "cache_full" if isinstance(problem, CacheFullError) else "cache_unwritable"
            log.warning("event=not_ready reason=%s error=%s", code, _one_line(problem.message))
            return error_response(503, code, problem.message)
        return JSONResponse({"status": "ready", "cache_entries": len(service.cache.entries())})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        purger = asyncio.create_task(_purge_periodically(service, config))
        ready.set()
        log.info(
            "event=start listen=%s cache_dir=%s cache_entries=%d allow=%s",
            config.listen,
            config.cache.dir,
            len(service.cache.entries()),
            ",".join(config.allow) or "-",
        )
        try:
            yield
        finally:
            ready.clear()
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(
            exc.status_code, "not_found" if exc.status_code == 404 else "http_error", exc.detail
        )

    async def internal_error(_request: Request, exc: Exception) -> Response:
        log.exception("event=internal_error error=%s", type(exc).__name__)
        return error_response(
            500, "internal", f"internal error ({type(exc).__name__}); see the fetcher's log"
        )

    app = Starlette(
        routes=[
            Route("/fetch/{b64:path}", fetch, methods=["GET", "HEAD"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
    app.state.fetcher = service
    return app


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _check_signature(key: bytes | None, allow_unsigned: bool, url: str, signature: str | None) -> None:
    if key is None:
        return
    if signature is None:
        if allow_unsigned:
            return
        raise Forbidden(
            "this fetcher serves signed paths only: add ?sig=<HMAC-SHA256 of the URL> "
            "(`meshwasm fetcher sign URL`)",
            code="signature_required",
        )
    if not verify_signature(key, url, signature):
        raise Forbidden("the path's signature does not match its URL", code="bad_signature")


def _module_response(request: Request, served: Served, service: ModuleFetcher) -> Response:
    entry = served.entry
    etag = f'"{entry.sha256}"'
    headers = {
        "etag": etag,
        "cache-control": "no-cache",
        "x-wasmfetcher-cache": served.cache,
        "x-wasmfetcher-checksum": entry.checksum,
    }
    if _etag_matches(request.headers.get("if-none-match"), entry.sha256):
        served.close()
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        served.close()
        headers["content-length"] = str(entry.size)
        return Response(b"", media_type=WASM_TYPE, headers=headers)
    if served.body is not None:
        return Response(served.body, media_type=WASM_TYPE, headers=headers)
    assert served.file is not None

    def changed() -> None:
        service.metrics.serves_aborted.inc()
        service.cache.remove(entry.module_name, entry.checksum, reason="corrupt")
        log.warning(
            "event=module_changed_while_serving module=%s checksum=%s action=response_cut_short_and_evicted",
            entry.module_name,
            entry.checksum,
        )

    return VerifiedFileResponse(served.file, entry, headers=headers, on_mismatch=changed)


class VerifiedFileResponse(Response):
    """Sends an opened module file, hashing it as it goes; the last chunk only if it verifies."""

    chunk_size = 256 * 1024

    def __init__(
        self,
        handle: IO[bytes],
        entry: CacheEntry,
        *,
        headers: dict[str, str],
        on_mismatch: Callable[[], None],
    ):
        super().__init__(None, media_type=WASM_TYPE, headers={**headers, "content-length": str(entry.size)})
        self._handle = handle
        self._entry = entry
        self._on_mismatch = on_mismatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        digest = hashlib.sha256()
        size = 0

        def read() -> bytes:
            chunk = self._handle.read(self.chunk_size)
            digest.update(chunk)
            return chunk

        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            held = await anyio.to_thread.run_sync(read)
            size += len(held)
            while True:
                chunk = await anyio.to_thread.run_sync(read)
                if not chunk:
                    break
                size += len(chunk)
                await send({"type": "http.response.body", "body": held, "more_body": True})
                held = chunk
            if size != self._entry.size or digest.hexdigest() != self._entry.sha256:
                self._on_mismatch()
                return  # the server closes the connection: the response is incomplete
            await send({"type": "http.response.body", "body": held, "more_body": False})
        except OSError:
            return  # the client went away
        finally:
            self._handle.close()


def _one_line(text: str) -> str:
    return text.replace("\n", " ").replace(" ", "_")[:200]


def _etag_matches(header: str | None, sha256: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        value = candidate.strip().removeprefix("W/").strip('"')
        if value == sha256:
            return True
    return False


async def _purge_periodically(service: ModuleFetcher, config: FetcherConfig) -> None:
    expiry = config.cache.expiry_seconds
    if expiry is None:
        return
    interval = min(max(expiry / 4, 1.0), 300.0)
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await service.purge_expired()
        except Exception:
            log.exception("event=purge_failed")
            continue
        if removed:
            log.info("event=purge removed=%d", removed)
