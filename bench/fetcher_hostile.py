"""The wasmfetcher under a hostile registry: this tree beside a baseline version, in one run.

1. Peak RSS (VmHWM of the fetcher process, from /proc) while eight 250 MiB modules are pulled
   and served at once (the shipped Deployment limits the container to 512 MiB).
2. How long a good, uncached image waits while eight pulls from a registry that drips one
   byte every half second are running (``pull.timeout_seconds: 10``): the good image on another
   registry, and on the slow registry itself; and when the eight slow pulls end.

The baseline is another revision of ``src/meshwasm`` (default ``main``), exported with
``git archive`` and run with PYTHONPATH pointing at it, against the same registries with the
same settings (the settings both versions know, plus what the new one needs for 2 GiB of
pulls in flight). The malicious registry is the test suite's (tests/hostile), in this process.

    .venv/bin/python bench/fetcher_hostile.py [--baseline main] [--size-mib 250] [--skip-memory]

Prints a Markdown table on stdout. Needs ~4.5 GiB of free disk and up to ~3 GiB of memory for
the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "hostile"))

from hostile_registry import Blob, HostileRegistry, oci_variant  # noqa: E402

from meshwasm.fetcher.process import FetcherProcess  # noqa: E402

MiB = 1 << 20
DEADLINE = 10.0
WAIT_CAP = 60.0  # a good pull still waiting after this long is reported as ">60 s"


@dataclass
class Version:
    name: str
    pythonpath: Path | None  # None: this tree (the installed package)
    slug: str = "v"  # for repository names

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.pythonpath is not None:
            env["PYTHONPATH"] = str(self.pythonpath)
        return env


def export(revision: str, into: Path) -> Path:
    """``src/`` of ``revision`` as files under ``into`` (no worktree, nothing registered)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def start_fetcher(version: Version, workdir: Path, settings: dict[str, Any]) -> FetcherProcess:
    proc = FetcherProcess(workdir, settings, env=version.env())
    proc.start(timeout=60)
    return proc


def settings_for(version: Version, registry: HostileRegistry, **pull: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "allow": [registry.address],
        "security": {"allow_loopback": True},
        "cache": {"max_bytes": 8 * 1024 * MiB},
        "pull": {"timeout_seconds": DEADLINE, "failure_backoff_seconds": 0} | pull,
    }
    if version.pythonpath is None:  # the new version bounds staging disk; give it room for 2 GiB
        settings["cache"]["max_staging_bytes"] = 8 * 1024 * MiB
    return settings


def memory_case(version: Version, registry: HostileRegistry, size: int, workdir: Path) -> dict[str, float]:
    expected: dict[str, str] = {}
    for i in range(8):
        name = f"mem/m{i}"
        blob = Blob.large_module(size, seed=5000 + i)
        registry.repos[name] = oci_variant(blob)
        expected[name] = blob.digest
    registry.repos.setdefault("mem/warm", oci_variant(Blob.large_module(4096, seed=4999)))
    # A generous deadline: this case measures memory, and 2 GiB from one Python registry takes a while.
    settings = settings_for(version, registry, max_module_bytes=256 * MiB, timeout_seconds=600)
    proc = start_fetcher(version, workdir, settings)
    try:
        assert (
            httpx.get(proc.fetch_url(f"oci://{registry.address}/mem/warm:v1"), timeout=30).status_code == 200
        )
        idle = vm_hwm(proc.pid)
        results: dict[str, str] = {}
        peak_rss = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_rss
            while not done.is_set():
                try:
                    peak_rss = max(peak_rss, vm_rss(proc.pid))
                except (OSError, RuntimeError):
                    return
                time.sleep(0.05)

        def pull(name: str) -> None:
            digest = hashlib.sha256()
            url = proc.fetch_url(f"oci://{registry.address}/{name}:v1")
            try:
                with httpx.stream("GET", url, timeout=600) as response:
                    if response.status_code != 200:
                        results[name] = f"HTTP {response.status_code}"
                        return
                    for chunk in response.iter_bytes(MiB):
                        digest.update(chunk)
            except httpx.HTTPError as exc:
                results[name] = type(exc).__name__
                return
            results[name] = "ok" if "sha256:" + digest.hexdigest() == expected[name] else "wrong bytes"

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        threads = [threading.Thread(target=pull, args=(n,)) for n in expected]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)
        elapsed = time.monotonic() - start
        done.set()
        sampler.join(timeout=5)
        peak = vm_hwm(proc.pid)
        failures = sum(1 for r in results.values() if r != "ok")
        return {
            "idle_mib": idle / MiB,
            "peak_mib": peak / MiB,
            "sampled_rss_mib": peak_rss / MiB,
            "seconds": elapsed,
            "failures": failures,
        }
    finally:
        proc.stop()


def wait_case(
    version: Version, registry: HostileRegistry, other: HostileRegistry, workdir: Path
) -> dict[str, float]:
    for i in range(8):
        repo = oci_variant(Blob.large_module(4096, seed=6000 + i))
        repo.drip = 0.5
        registry.repos[f"slow/{version.slug}/m{i}"] = repo
    registry.repos[f"slow/{version.slug}/good"] = oci_variant(Blob.large_module(8192, seed=6100))
    other.repos[f"good/{version.slug}"] = oci_variant(Blob.large_module(8192, seed=6200))
    settings = settings_for(version, registry)
    settings["allow"].append(other.address)
    proc = start_fetcher(version, workdir, settings)
    ended: list[float] = []
    start = time.monotonic()

    def slow(i: int) -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(
                proc.fetch_url(f"oci://{registry.address}/slow/{version.slug}/m{i}:v1"), timeout=WAIT_CAP + 30
            )
        ended.append(time.monotonic() - start)

    def timed_get(url: str) -> float:
        began = time.monotonic()
        try:
            response = httpx.get(proc.fetch_url(url), timeout=WAIT_CAP)
        except httpx.TimeoutException:
            return float("inf")
        if response.status_code != 200:
            return float("nan")
        return time.monotonic() - began

    threads = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(8)]
    try:
        for t in threads:
            t.start()
        limit = time.monotonic() + 10
        while registry.active < 8 and time.monotonic() < limit:
            time.sleep(0.05)
        other_host = timed_get(f"oci://{other.address}/good/{version.slug}:v1")
        same_host = timed_get(f"oci://{registry.address}/slow/{version.slug}/good:v1")
        for t in threads:
            t.join(timeout=WAIT_CAP + 40)
        gave_up = len(ended) < 8 or max(ended) >= WAIT_CAP + 30 - 0.5  # our client's timeout, not theirs
        return {
            "other_host_s": other_host,
            "same_host_s": same_host,
            "slow_end_s": float("inf") if gave_up else max(ended),
        }
    finally:
        proc.stop()


def seconds(value: float, cap: float = WAIT_CAP) -> str:
    if value == float("inf"):
        return f">{cap:.0f} s"
    if value != value:  # NaN
        return "error"
    return f"{value:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", default="main", help="git revision to compare with [main]")
    parser.add_argument("--size-mib", type=int, default=250, help="module size for the memory case [250]")
    parser.add_argument("--skip-memory", action="store_true", help="only the slow-registry case")
    args = parser.parse_args()
    if shutil.disk_usage(tempfile.gettempdir()).free < 5 * 1024 * MiB and not args.skip_memory:
        sys.exit("bench/fetcher_hostile.py: needs about 5 GiB free in the temp directory")

    with tempfile.TemporaryDirectory(prefix="bench-fetcher-hostile-") as tmp:
        base = Path(tmp)
        (base / "baseline").mkdir()
        versions = [
            Version(f"baseline ({args.baseline})", export(args.baseline, base / "baseline"), "baseline"),
            Version("this tree", None, "tree"),
        ]
        registry = HostileRegistry().start()
        other = HostileRegistry().start()
        rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
        try:
            for n, version in enumerate(versions):
                print(f"# {version.name}: slow-registry case ...", file=sys.stderr)
                waits = wait_case(version, registry, other, base / f"wait{n}")
                memory: dict[str, float] = {}
                if not args.skip_memory:
                    print(f"# {version.name}: eight {args.size_mib} MiB pulls ...", file=sys.stderr)
                    memory = memory_case(version, registry, args.size_mib * MiB, base / f"mem{n}")
                rows.append((version.name, waits, memory))
        finally:
            registry.stop()
            other.stop()

    print(f"\n## wasmfetcher under a hostile registry (deadline {DEADLINE:g} s)\n")
    if not args.skip_memory:
        print(
            f"| version | idle VmHWM | VmHWM, 8 × {args.size_mib} MiB pulls at once | "
            "max sampled VmRSS | wall time | failed pulls |"
        )
        print("|---|---|---|---|---|---|")
        for name, _, memory in rows:
            print(
                f"| {name} | {memory['idle_mib']:.0f} MiB | {memory['peak_mib']:.0f} MiB | "
                f"{memory['sampled_rss_mib']:.0f} MiB | {memory['seconds']:.1f} s | "
                f"{memory['failures']:.0f} |"
            )
        print()
    print(
        "| version | good pull, other registry, during 8 slow pulls | good pull, same (slow) registry | "
        "8 slow pulls ended after |"
    )
    print("|---|---|---|---|")
    for name, waits, _ in rows:
        print(
            f"| {name} | {seconds(waits['other_host_s'])} | {seconds(waits['same_host_s'])} | "
            f"{seconds(waits['slow_end_s'], WAIT_CAP + 30)} |"
        )


if __name__ == "__main__":
    main()
