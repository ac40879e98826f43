"""The load generator: wrk (Debian's), closed loop, a fixed number of connections, and the
numbers read from its ``--latency`` report."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from meshwasm.bench.errors import BenchError, LoadGeneratorMissing
from meshwasm.bench.procfs import pinned_argv

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass(frozen=True)
class LoadResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0  # wrk counts every status above 399 here
    socket_errors: int = 0  # connect + read + write + timeout


def _latency(output: str, percentile: str) -> float | None:
    found = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    return None if found is None else float(found.group(1)) * _UNITS_MS[found.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """The figures of wrk's report (run with ``--latency``)."""
    requests = re.search(r"^\s*(\d+) requests in", output, re.M)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M)
    p50, p99 = _latency(output, "50"), _latency(output, "99")
    if not (requests and rps and p50 is not None and p99 is not None):
        raise BenchError(f"cannot read wrk's report:\n{output.strip()}")
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s*(\d+)", output, re.M)
    socket = re.search(
        r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output, re.M
    )
    return LoadResult(
        requests=int(requests.group(1)),
        rps=float(rps.group(1)),
        p50_ms=p50,
        p99_ms=p99,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
    )


def wrk_argv(
    url: str, *, seconds: int, connections: int, headers: Sequence[str] = (), core: int | None = None
) -> list[str]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    return pinned_argv([*argv, url], core)


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise LoadGeneratorMissing(
            "wrk, the load generator, is not installed",
            hint="run `make get` (scripts/install-tools.sh installs it) or `apt-get install wrk`",
        )


def run_wrk(
    url: str, *, seconds: int, connections: int, headers: Sequence[str] = (), core: int | None = None
) -> LoadResult:
    argv = wrk_argv(url, seconds=seconds, connections=connections, headers=headers, core=core)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise BenchError(
            f"wrk failed (status {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return parse_wrk(proc.stdout)
