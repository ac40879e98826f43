"""Running the wasmfetcher: logging set-up and uvicorn (a production ASGI server)."""

from __future__ import annotations

import logging
import sys
import time

import uvicorn

from meshwasm.fetcher.app import create_app
from meshwasm.fetcher.config import FetcherConfig


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... <message>``: one greppable line per event."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} "
        line += record.getMessage()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request line at INFO, URLs included; our pull lines say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def serve(config: FetcherConfig) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn handles both and drains connections)."""
    configure_logging(config.log_level)
    app = create_app(config)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_config=None,  # keep our formatter
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
