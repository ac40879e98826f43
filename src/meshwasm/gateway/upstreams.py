"""Real upstream services for the local gateway: httpbin on a real WSGI server."""

from __future__ import annotations

import sys
from pathlib import Path

from meshwasm.errors import MeshwasmError
from meshwasm.net import free_port, http_ok, wait_until
from meshwasm.process import ManagedProcess


class HttpbinProcess(ManagedProcess):
    """httpbin (PyPI) served by gunicorn on loopback: the seed's upstream, for real."""

    def __init__(self, *, workdir: Path, host: str = "127.0.0.1", port: int | None = None, workers: int = 2):
        self.host = host
        self.port = port or free_port(host)
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{host}:{self.port}",
            "--workers",
            str(workers),
            "--threads",
            "4",
            "--access-logfile",
            "-",
            "httpbin:app",
        ]
        super().__init__("httpbin", argv, log_path=workdir / "httpbin.log")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not wait_until(
            lambda: http_ok(f"{self.url}/get"), timeout=timeout, interval=0.1, alive=self.alive
        ):
            self.ensure_alive()
            raise MeshwasmError(f"httpbin did not answer on {self.url} within {timeout:.0f} s")
