"""The wasmfetcher as a child process (tests, the local demo): config file in, URL out."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from meshwasm.fetcher.urls import encode_fetch_path
from meshwasm.net import free_port, http_ok, wait_until
from meshwasm.process import ManagedProcess, ProcessExited


class FetcherProcess:
    """``meshwasm fetcher serve`` on a free loopback port, with its cache and log in ``workdir``.

    ``settings`` is the config file's content (``listen`` and ``cache.dir`` are
    filled in); the same workdir and cache survive :meth:`restart` and :meth:`kill`.
    ``wrapper`` runs before the fetcher's own argv (e.g. ``unshare`` with a mount of
    its own for the cache); it must ``exec`` it, so :attr:`pid` is the fetcher's.
    ``env`` replaces the environment (e.g. a PYTHONPATH naming another version).
    """

    def __init__(
        self,
        workdir: Path,
        settings: dict[str, Any] | None = None,
        *,
        port: int | None = None,
        cache_dir: Path | None = None,
        wrapper: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ):
        self.wrapper = list(wrapper)
        self.env = dict(env) if env is not None else None
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.cache_dir = cache_dir or workdir / "cache"
        self.config_path = workdir / "fetcher.yaml"
        self.log_path = workdir / "fetcher.log"
        config = dict(settings or {})
        config["listen"] = f"{self.host}:{self.port}"
        config.setdefault("cache", {})
        config["cache"] = {**config["cache"], "dir": str(self.cache_dir)}
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))
        self._proc = self._new_process()

    def _new_process(self) -> ManagedProcess:
        argv = [
            *self.wrapper,
            sys.executable,
            "-c",
            "from meshwasm.cli import main; main()",
            "--quiet",
            "fetcher",
            "serve",
            "--config",
            str(self.config_path),
        ]
        return ManagedProcess("wasmfetcher", argv, log_path=self.log_path, env=self.env)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def argv(self) -> list[str]:
        """The command line, for a caller that runs the process itself (the real engine)."""
        return list(self._proc.argv)

    def fetch_url(self, module_url: str) -> str:
        return f"{self.url}/fetch/{encode_fetch_path(module_url)}"

    def start(self, timeout: float = 30.0) -> None:
        self._proc.start()
        ready = wait_until(lambda: http_ok(f"{self.url}/readyz"), timeout=timeout, alive=self._proc.alive)
        if not ready:
            self._proc.ensure_alive()
            raise ProcessExited(f"wasmfetcher did not become ready in {timeout} s; log: {self.log_path}")

    def stop(self) -> None:
        self._proc.stop()

    def kill(self) -> None:
        self._proc.kill()

    def restart(self) -> None:
        self._proc.stop()
        self._proc = self._new_process()
        self.start()

    def start_again(self) -> None:
        """Start after :meth:`kill` (same port, cache and log)."""
        self._proc = self._new_process()
        self.start()

    def metrics(self) -> dict[str, float]:
        """The Prometheus samples as ``{'name{labels}': value}``."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
