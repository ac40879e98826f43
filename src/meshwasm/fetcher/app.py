"""The wasmfetcher's HTTP face (Starlette): /fetch, /healthz, /readyz, /metrics.

``GET|HEAD /fetch/<b64>`` answers the module named by the base64 URL (the path
TSB writes into WasmPlugins, seed README). With a signing key configured,
``/fetch/<b64>?sig=<hex HMAC-SHA256(key, url)>`` is required, unless
``security.allow_unsigned`` keeps the plain form open for TSB. Every error is
``{"error": {"code", "message"}}`` with a status that says whose fault it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from meshwasm.fetcher.config import FetcherConfig
from meshwasm.fetcher.errors import FetchError, Forbidden
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
        except FetchError as exc:
            service.metrics.responses.labels(str(exc.status)).inc()
            return error_response(exc.status, exc.code, exc.message)
        response = _module_response(request, served)
        service.metrics.responses.labels(str(response.status_code)).inc()
        if response.status_code == 200 and request.method == "GET":
            service.metrics.bytes_served.inc(served.entry.size)
        return response

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        if not ready.is_set() or not service.cache.root.is_dir():
            return error_response(503, "not_ready", "the fetcher is starting or its cache directory is gone")
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


def _module_response(request: Request, served: Served) -> Response:
    entry = served.entry
    etag = f'"{entry.sha256}"'
    headers = {
        "etag": etag,
        "cache-control": "no-cache",
        "x-wasmfetcher-cache": served.cache,
        "x-wasmfetcher-checksum": entry.checksum,
    }
    if _etag_matches(request.headers.get("if-none-match"), entry.sha256):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["content-length"] = str(entry.size)
        return Response(b"", media_type=WASM_TYPE, headers=headers)
    if served.body is not None:
        return Response(served.body, media_type=WASM_TYPE, headers=headers)
    return FileResponse(entry.path, media_type=WASM_TYPE, headers=headers)


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
