"""The wasmfetcher beside its baselines, measured in one run on this machine.

1. Cache hits: requests per second and p50/p99 latency for a 4 MB module, the
   fetcher (uvicorn, one process) beside nginx (Debian, one worker, sendfile)
   serving the same bytes from disk. wrk drives both in alternating rounds.
2. Cold pulls: a module not yet cached, fetched through the fetcher (registry
   pull, digest checks, atomic cache write, HTTP answer) beside ``skopeo copy``
   of the same image from the same registry into an OCI layout. skopeo's own
   process start-up (``skopeo --version``) is printed too, since it is in its time.

    make bench-fetcher          # installs nginx (bench only), then runs this
    .venv/bin/python bench/fetcher.py [--rounds 3] [--seconds 4] [--pulls 5]

Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from meshwasm.fetcher.process import FetcherProcess
from meshwasm.net import free_port, http_ok, wait_until
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference
from meshwasm.process import ManagedProcess

MODULE_SIZE = 4 * 1024 * 1024


def synthetic_module(size: int) -> bytes:
    """A valid wasm module of ``size`` bytes: the header and one custom section of random filler."""
    header = b"\0asm\x01\0\0\0"
    name = b"\x04fill"
    payload = size - len(header) - 1 - 5 - len(name)
    length = len(name) + payload
    leb = bytes([(length >> (7 * i) & 0x7F) | (0x80 if i < 4 else 0) for i in range(5)])
    return header + b"\x00" + leb + name + os.urandom(payload)


# -- wrk ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    server_cpu_ms_per_request: float = 0.0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every process in a process group (nginx: master and worker)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> WrkResult:
    def latency(pct: str) -> float:
        match = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not match:
            raise RuntimeError(f"no {pct}% latency in wrk's report:\n{output}")
        return float(match[1]) * _UNITS[match[2]]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not rps:
        raise RuntimeError(f"cannot read wrk's report:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = re.search(r"(\d+) requests in", output)
    return WrkResult(
        float(rps[1]),
        latency("50"),
        latency("99"),
        errors + int(non2xx[1] if non2xx else 0),
        int(requests[1]) if requests else 0,
    )


def run_wrk(url: str, *, seconds: float, connections: int, server_pgid: int) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    cpu_before = group_cpu_seconds(server_pgid)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    cpu = group_cpu_seconds(server_pgid) - cpu_before
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}")
    result = parse_wrk(proc.stdout)
    per_request = cpu * 1000 / result.requests if result.requests else 0.0
    return replace(result, server_cpu_ms_per_request=per_request)


# -- nginx -------------------------------------------------------------------------------


def start_nginx(workdir: Path, docroot: Path) -> tuple[ManagedProcess, str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        sys.exit("nginx is not installed: run `make bench-fetcher` (scripts/install-tools.sh --bench)")
    port = free_port()
    temp = workdir / "nginx-tmp"
    temp.mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  types {{ application/wasm wasm; }}
  server {{
    listen 127.0.0.1:{port};
    root {docroot};
  }}
}}
"""
    )
    proc = ManagedProcess(
        "nginx", [nginx, "-c", str(conf), "-p", str(workdir)], log_path=workdir / "nginx.log"
    )
    proc.start()
    base = f"http://127.0.0.1:{port}"
    if not wait_until(lambda: http_ok(f"{base}/module.wasm"), timeout=15, alive=proc.alive):
        proc.stop()
        raise RuntimeError(f"nginx did not start: {proc.log_tail()}")
    return proc, f"{base}/module.wasm"


# -- the run -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating wrk rounds per server")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one wrk round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--pulls", type=int, default=5, help="cold pulls per client")
    args = parser.parse_args()
    for tool in ("wrk", "skopeo"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed: run `make get`")

    module = synthetic_module(MODULE_SIZE)
    with tempfile.TemporaryDirectory(prefix="bench-fetcher-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        docroot = work / "www"
        docroot.mkdir(mode=0o755)
        (docroot / "module.wasm").write_bytes(module)
        registry = LocalRegistry(work / "registry")
        registry.start()
        registry.wait_ready()
        fetcher = FetcherProcess(
            work / "fetcher",
            {"allow": [registry.address], "security": {"allow_loopback": True}, "log_level": "warning"},
        )
        nginx: ManagedProcess | None = None
        try:
            print(
                f"pushing {args.pulls * 2 + 1} copies of a {MODULE_SIZE} B module to {registry.address}",
                file=sys.stderr,
            )
            image = build_image(module, variant="oci")
            with RegistryClient() as client:
                for name in [
                    "hot",
                    *(f"cold-f{i}" for i in range(args.pulls)),
                    *(f"cold-s{i}" for i in range(args.pulls)),
                ]:
                    client.push_image(image, parse_reference(f"{registry.address}/bench/{name}:v1"))
            fetcher.start()
            (work / "nginx").mkdir()
            nginx, nginx_url = start_nginx(work / "nginx", docroot)
            hot_url = fetcher.fetch_url(f"oci://{registry.address}/bench/hot:v1")
            for url in (hot_url, nginx_url):
                body = httpx.get(url, timeout=60).content
                if body != module:
                    raise RuntimeError(f"{url} did not serve the module")

            hits: dict[str, list[WrkResult]] = {"wasmfetcher": [], "nginx": []}
            for round_no in range(args.rounds):
                for label, url, pgid in (
                    ("wasmfetcher", hot_url, fetcher.pid),
                    ("nginx", nginx_url, nginx.pid),
                ):
                    print(f"round {round_no + 1}/{args.rounds}: wrk {label}", file=sys.stderr)
                    result = run_wrk(
                        url, seconds=args.seconds, connections=args.connections, server_pgid=pgid
                    )
                    hits[label].append(result)

            cold_fetcher: list[float] = []
            cold_skopeo: list[float] = []
            layouts = work / "layouts"
            layouts.mkdir()
            for i in range(args.pulls):
                started = time.perf_counter()
                response = httpx.get(
                    fetcher.fetch_url(f"oci://{registry.address}/bench/cold-f{i}:v1"), timeout=120
                )
                cold_fetcher.append(time.perf_counter() - started)
                if response.status_code != 200 or response.headers["x-wasmfetcher-cache"] != "miss":
                    raise RuntimeError(f"cold pull {i} was not a miss: {response.status_code}")
                started = time.perf_counter()
                subprocess.run(
                    [
                        "skopeo", "copy", "--quiet", "--src-tls-verify=false",
                        f"docker://{registry.address}/bench/cold-s{i}:v1", f"oci:{layouts / str(i)}:v1",
                    ],
                    check=True, timeout=120,
                )  # fmt: skip
                cold_skopeo.append(time.perf_counter() - started)
            startup: list[float] = []
            for _ in range(args.pulls):
                started = time.perf_counter()
                subprocess.run(["skopeo", "--version"], check=True, capture_output=True, timeout=30)
                startup.append(time.perf_counter() - started)
        finally:
            if nginx is not None:
                nginx.stop()
            fetcher.stop()
            registry.stop()

    print_table(args, hits, cold_fetcher, cold_skopeo, startup)


def print_table(
    args: argparse.Namespace,
    hits: dict[str, list[WrkResult]],
    cold_fetcher: list[float],
    cold_skopeo: list[float],
    skopeo_startup: list[float],
) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    def spread(values: list[float], fmt: str) -> str:
        return f"{format(min(values), fmt)}..{format(max(values), fmt)}"

    f, n = hits["wasmfetcher"], hits["nginx"]
    print(f"\n### Cache hits, {MODULE_SIZE // 1024 // 1024} MB module")
    print(
        f"wrk -t1 -c{args.connections}, {args.rounds} alternating rounds of {args.seconds:g} s; "
        "median (min..max) over rounds; 2 shared cores, no pinning\n"
    )
    print("| server | requests/s | p50 ms | p99 ms | server CPU ms/request | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, results in (("wasmfetcher", f), ("nginx (Debian)", n)):
        rps = [r.rps for r in results]
        p50 = [r.p50_ms for r in results]
        p99 = [r.p99_ms for r in results]
        cpu = [r.server_cpu_ms_per_request for r in results]
        print(
            f"| {label} | {med(rps):.0f} ({spread(rps, '.0f')}) | {med(p50):.2f} ({spread(p50, '.2f')}) "
            f"| {med(p99):.2f} ({spread(p99, '.2f')}) | {med(cpu):.3f} ({spread(cpu, '.3f')}) "
            f"| {sum(r.errors for r in results)} |"
        )
    ratio = med([r.rps for r in f]) / med([r.rps for r in n])
    cpu_ratio = med([r.server_cpu_ms_per_request for r in f]) / med([r.server_cpu_ms_per_request for r in n])
    print(f"\nwasmfetcher / nginx: requests per second {ratio:.2f}, server CPU per request {cpu_ratio:.2f}")

    mb = MODULE_SIZE // 1024 // 1024
    print(f"\n### Cold pulls, {mb} MB module, same registry, {len(cold_fetcher)} pulls each\n")
    print("| client | median s | min..max s |")
    print("|---|---:|---:|")
    print(f"| wasmfetcher (GET /fetch, uncached) | {med(cold_fetcher):.3f} | {spread(cold_fetcher, '.3f')} |")
    print(f"| skopeo copy to an OCI layout | {med(cold_skopeo):.3f} | {spread(cold_skopeo, '.3f')} |")
    print(
        f"| (skopeo --version, its start-up) | {med(skopeo_startup):.3f} | {spread(skopeo_startup, '.3f')} |"
    )
    print(f"\nwasmfetcher / skopeo cold-pull time: {med(cold_fetcher) / med(cold_skopeo):.2f}")


if __name__ == "__main__":
    main()
