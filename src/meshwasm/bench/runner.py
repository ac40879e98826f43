"""The interleaved rounds: every variant at every worker count once per round, Envoy's CPU
time read from ``/proc`` around each load, memory read once the load is over.

The figures it returns are the types of :mod:`meshwasm.bench.measurements` (re-exported here)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshwasm.bench import envoys, procfs
from meshwasm.bench.envoys import BenchEnvoy
from meshwasm.bench.errors import BenchError
from meshwasm.bench.load import LoadResult, require_wrk, run_wrk
from meshwasm.bench.measurements import Measured, Meta, Sample
from meshwasm.bench.variants import Variant
from meshwasm.envoy.process import envoy_binary
from meshwasm.errors import UsageError

Progress = Callable[[str], None]
__all__ = ["Measured", "Meta", "Progress", "Sample", "Settings", "run"]


@dataclass(frozen=True)
class Settings:
    rounds: int = 5
    seconds: int = 3  # load per variant per round (wrk takes whole seconds)
    warmup: int = 1  # seconds of load per Envoy before the first round (0: none)
    connections: int = 8
    path: str = "/"
    headers: tuple[str, ...] = ()

    def check(self) -> None:
        if self.rounds < 1 or self.seconds < 1 or self.warmup < 0 or self.connections < 1:
            raise UsageError(
                "want --rounds >= 1, --seconds >= 1, --warmup >= 0 and --connections >= 1, got "
                f"{self.rounds}, {self.seconds}, {self.warmup} and {self.connections}"
            )


def _read_through(path: Path) -> None:
    """Read a file once, into the page cache."""
    with path.open("rb") as handle:
        while handle.read(1 << 20):
            pass


def envoy_version() -> str:
    """What ``envoy --version`` says, e.g. ``.../1.40.0/Clean/RELEASE/BoringSSL`` ("" if it won't)."""
    try:
        proc = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    found = re.search(r"version:\s*(\S+)", proc.stdout)
    return found.group(1) if found else ""


def _module_facts(variant: Variant) -> tuple[int | None, str | None]:
    if variant.module is None:
        return None, None
    data = variant.module.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def _measure(envoy: BenchEnvoy, settings: Settings, core: int | None) -> Sample:
    before = envoy.cpu_seconds()
    result: LoadResult = run_wrk(
        envoy.url,
        seconds=settings.seconds,
        connections=settings.connections,
        headers=settings.headers,
        core=core,
    )
    _check_load(envoy, result, settings)  # before /proc: a dead Envoy is named, not a missing file
    after = envoy.cpu_seconds()
    return Sample(
        cpu_us_per_request=(after - before) * 1e6 / result.requests,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        requests=result.requests,
        socket_errors=result.socket_errors,
    )


def _check_load(envoy: BenchEnvoy, result: LoadResult, settings: Settings) -> None:
    if not envoy.process.alive():
        raise BenchError(
            f"Envoy for {envoy.name} exited during the load (status {envoy.process.returncode}); "
            f"last lines of {envoy.process.log_path}:\n{envoy.process.log_tail()}"
        )
    if result.non_2xx:
        status = envoy.probe_status(settings.headers)
        raise envoy.failing_error(
            None if status == 200 else status, f"{result.non_2xx} of {result.requests} requests"
        )
    if result.requests == 0:
        raise BenchError(f"{envoy.name}: wrk completed no request ({result.socket_errors} socket errors)")


def run(
    variants: Sequence[Variant],
    *,
    workers: Sequence[int],
    settings: Settings,
    workdir: Path,
    progress: Progress = lambda _: None,
) -> tuple[list[Measured], Meta]:
    """Start one Envoy per variant and worker count, load them in interleaved rounds, stop them."""
    settings.check()
    require_wrk()
    pinning = procfs.choose_cores()
    if not pinning.pinned:
        progress("fewer than two cores (or no taskset): Envoy and wrk are not pinned")
    loadavg_start, t0, started = procfs.read_loadavg(), time.monotonic(), time.gmtime()
    running: list[tuple[BenchEnvoy, Measured]] = []
    try:
        # The first start on a machine reads the 100 MB binary from disk: read it first, so
        # "no filter" (started first) does not look slow to start.
        _read_through(Path(envoy_binary()))
        for count in workers:
            for variant in variants:
                progress(f"starting Envoy: {variant.label}, {count} worker(s)")
                envoy = envoys.start(
                    variant,
                    workers=count,
                    workdir=workdir,
                    core=pinning.envoy_core,
                    path=settings.path,
                    headers=settings.headers,
                )
                size, digest = _module_facts(variant)
                measured = Measured(
                    variant.key,
                    variant.label,
                    count,
                    envoy.start_s,
                    rss_start_bytes=envoy.rss_bytes(),
                    linear_memory_start=envoy.linear_memories(),
                    module_bytes=size,
                    module_sha256=digest,
                )
                running.append((envoy, measured))
                progress(f"  first 200 after {envoy.start_s:.2f} s")
        if settings.warmup:
            progress(f"warming up ({settings.warmup} s each)")
            for envoy, _ in running:
                result = run_wrk(
                    envoy.url,
                    seconds=settings.warmup,
                    connections=settings.connections,
                    headers=settings.headers,
                    core=pinning.load_core,
                )
                _check_load(envoy, result, settings)
        for n in range(settings.rounds):
            for envoy, measured in running:
                sample = _measure(envoy, settings, pinning.load_core)
                measured.samples.append(sample)
                progress(
                    f"round {n + 1}/{settings.rounds} {envoy.name}: "
                    f"{sample.cpu_us_per_request:.1f} us/req, {sample.rps:.0f} rps"
                )
        for envoy, measured in running:
            measured.rss_end_bytes = envoy.rss_bytes()
            measured.linear_memory_end = envoy.linear_memories()
            measured.vm_count = envoy.vm_count()
    finally:
        for envoy, _ in running:
            envoy.stop()
    meta = Meta(
        rounds=settings.rounds,
        seconds=settings.seconds,
        warmup=settings.warmup,
        connections=settings.connections,
        workers=list(workers),
        envoy=envoy_binary(),
        envoy_version=envoy_version(),
        envoy_core=pinning.envoy_core,
        load_core=pinning.load_core,
        cpus=os.cpu_count() or 1,
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", started),
        loadavg_start=loadavg_start,
        loadavg_end=procfs.read_loadavg(),
        duration_s=time.monotonic() - t0,
    )
    return [m for _, m in running], meta
