"""A real OCI registry on loopback (CNCF distribution ``registry``), for tests, benchmarks and demos.

Started with its own config file, storage directory and log file; stopped by pid. Optional
htpasswd (Basic) auth, or token auth with a given realm and JWKS (the token server is the
caller's). The access log lines (``"GET /v2/... HTTP/1.1" 200``) let callers count pulls.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from meshwasm.errors import MeshwasmError, ToolchainError
from meshwasm.net import free_port, wait_until
from meshwasm.process import ManagedProcess

_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>/v2/\S*) HTTP/[\d.]+" (?P<status>\d{3})')


def find_registry_binary() -> Path:
    """The distribution ``registry`` in the venv (``make get``), on PATH, or Debian's ``docker-registry``."""
    candidates = [Path(sys.prefix) / "bin" / "registry"]
    for name in ("registry", "docker-registry"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ToolchainError(
        "no OCI registry binary found (distribution `registry` or Debian `docker-registry`)",
        hint="run `make get` (installs it into .venv/bin through the Go module proxy)",
    )


@dataclass(frozen=True)
class TokenAuth:
    """Token auth settings: the realm clients get tokens from, and the JWKS file that signs them."""

    realm: str
    service: str
    issuer: str
    jwks_path: Path


@dataclass(frozen=True)
class AccessLogEntry:
    """One request the registry served."""

    method: str
    path: str
    status: int


class LocalRegistry(ManagedProcess):
    """A distribution registry on ``127.0.0.1:<free port>`` with its own storage and log.

    ``htpasswd``: Basic auth from that bcrypt file, challenging with ``basic_realm``; ``token``:
    bearer-token auth;
    ``redirect_blobs_to``: blob downloads redirect to that base URL plus the storage path.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        htpasswd: Path | None = None,
        token: TokenAuth | None = None,
        redirect_blobs_to: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        basic_realm: str = "meshwasm-local",
    ):
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.htpasswd = htpasswd
        self.token = token
        self.redirect_blobs_to = redirect_blobs_to
        self.basic_realm = basic_realm
        binary = find_registry_binary()
        argv = [str(binary), "serve", str(self.config_path)]
        env = dict(os.environ)
        env["OTEL_TRACES_EXPORTER"] = "none"  # v3 would otherwise try to export traces
        super().__init__("registry", argv, log_path=self.workdir / "registry.log", env=env)

    @property
    def address(self) -> str:
        """``host:port``, as it appears in image references."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL (plain http: loopback)."""
        return f"http://{self.address}"

    def config(self) -> dict[str, Any]:
        """The registry's configuration document."""
        doc: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.address, "secret": secrets.token_hex(16)},
        }
        if self.redirect_blobs_to:
            # Blob GETs answer 307 to <base>/<storage path>, as with S3/GCS storage behind a CDN.
            doc["middleware"] = {
                "storage": [{"name": "redirect", "options": {"baseurl": self.redirect_blobs_to}}]
            }
        if self.htpasswd is not None:
            doc["auth"] = {"htpasswd": {"realm": self.basic_realm, "path": str(self.htpasswd)}}
        elif self.token is not None:
            doc["auth"] = {
                "token": {
                    "realm": self.token.realm,
                    "service": self.token.service,
                    "issuer": self.token.issuer,
                    "jwks": str(self.token.jwks_path),
                }
            }
        return doc

    def start(self) -> None:
        """Write the config (JSON is YAML) and start the registry; see :meth:`wait_ready`."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        super().start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until ``/v2/`` answers (200, or 401 with auth on)."""

        def answering() -> bool:
            try:
                return httpx.get(f"{self.url}/v2/", timeout=1.0).status_code in (200, 401)
            except httpx.HTTPError:
                return False

        if not wait_until(answering, timeout=timeout, interval=0.1, alive=self.alive):
            self.ensure_alive()
            raise MeshwasmError(f"registry did not answer on {self.url} within {timeout:.0f} s")

    def access_log(self) -> list[AccessLogEntry]:
        """The requests served so far, from the registry's own log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [AccessLogEntry(m["method"], m["path"], int(m["status"])) for m in _ACCESS_LINE.finditer(text)]

    def count_requests(self, method: str, path_contains: str = "", status: int | None = None) -> int:
        """How many ``method`` requests whose path contains ``path_contains`` (and had ``status``)."""
        return sum(
            1
            for e in self.access_log()
            if e.method == method and path_contains in e.path and (status is None or e.status == status)
        )

    def blob_data_path(self, digest: str) -> Path:
        """Where the registry stores a blob on disk (tests corrupt it to fake tampering)."""
        algorithm, _, hex_digest = digest.partition(":")
        return (
            self.storage_dir
            / "docker"
            / "registry"
            / "v2"
            / "blobs"
            / algorithm
            / hex_digest[:2]
            / hex_digest
            / "data"
        )
