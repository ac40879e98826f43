"""Helpers of the hostile-input suite: a fetcher handle with its memory baseline, and what every
case checks after the fact (peak memory from /proc, nothing cached or written, nothing running)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hostile_registry import HostileRegistry

from meshwasm.fetcher.process import FetcherProcess
from meshwasm.net import wait_until

MiB = 1 << 20
# One client for the suite: a new one per request costs a TLS context (~0.2 s on a busy machine).
CLIENT = httpx.Client()


def vm_hwm(pid: int) -> int:
    """Peak resident memory (VmHWM) of a running process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


@dataclass
class Fetcher:
    """A running wasmfetcher and the memory it had after warming up (one small pull)."""

    proc: FetcherProcess
    baseline_hwm: int = 0

    def get(self, url: str, *, timeout: float = 30.0, **kwargs: Any) -> httpx.Response:
        return CLIENT.get(self.proc.fetch_url(url), timeout=timeout, **kwargs)

    def timed(self, url: str, *, timeout: float = 30.0) -> tuple[httpx.Response, float]:
        start = time.monotonic()
        response = self.get(url, timeout=timeout)
        return response, time.monotonic() - start

    @property
    def hwm(self) -> int:
        return vm_hwm(self.proc.pid)

    def grown(self) -> int:
        """How far peak memory rose above the warmed-up baseline."""
        return self.hwm - self.baseline_hwm

    def gauge(self, name: str) -> float:
        return self.proc.metrics().get(name, 0.0)

    def assert_nothing_running(self, registry: HostileRegistry | None = None, *, within: float = 5.0) -> None:
        """No pull in flight, and no answer of the registry still being read."""
        assert wait_until(lambda: self.gauge("wasmfetcher_pulls_inflight") == 0, timeout=within), (
            "a pull is still running"
        )
        if registry is not None:
            assert registry.wait_idle(within), f"{registry.active} registry answers are still being read"

    def assert_nothing_cached(self, module_name: str, *, root: Path | None = None) -> None:
        """No entry for ``module_name``, no reference naming it, nothing left in staging."""
        cache = root or self.proc.cache_dir
        folder = cache / hashlib.sha256(module_name.encode()).hexdigest()
        assert not folder.exists(), f"{module_name} was cached: {list(folder.iterdir())}"
        leftovers = [p.name for p in (cache / ".tmp").iterdir()]
        assert leftovers == [], f"staging files left behind: {leftovers}"
        for ref in (cache / "refs").glob("*.json"):
            assert module_name not in ref.read_text(), f"a reference names {module_name}: {ref}"


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"]
