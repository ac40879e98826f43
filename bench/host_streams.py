"""How fast meshwasm's Python host runs plugins: full HTTP streams per second, and the
wall time of the add-header host test file.

A full stream is what a test does per request: create the HTTP context, request
headers, response headers, then on_done / on_log / on_delete. Each module runs
``--rounds`` rounds of at most ``--streams`` streams or ``--seconds`` seconds,
whichever ends first; the median rate is reported with its spread, and each
module's cost per stream is compared with a minimal WAT module measured in the
same run (tests/fixtures/wasm/no_wasi.wat: one log and one header lookup per
request), which shows the host's own machinery (wasmtime calls, Python host
functions) rather than the plugin's work.

    .venv/bin/python bench/host_streams.py --add-header build/add-header-go.wasm \\
        --zig build/add-header-zig.wasm

Rates are given per second of wall time and per second of this process's CPU
time (one core: what the host costs, even when the machine is shared and the
wall clock is not the plugin's alone); the load average is printed beside them.
Every callback runs under the default deadline (wasmtime epoch interruption on);
the Zig build is measured once more with deadline=None (epoch off) to show what
the deadline costs.

Start-up (first load, then a warm load; wasmtime's code cache may make the first
a cache hit) is shown too, then the test file is run once with pytest and timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import wasmtime

from meshwasm.host import Plugin

ROOT = Path(__file__).resolve().parents[1]
FLOOR_WAT = ROOT / "tests" / "fixtures" / "wasm" / "no_wasi.wat"
TEST_FILE = "tests/unit/test_host_add_header.py"
CONFIG = json.dumps({"header": "x-ingress-header", "value": "from tsb ingress gateway", "path": "response"})
REQUEST = [
    (":method", "GET"),
    (":path", "/headers"),
    (":authority", "httpbin.tetrate.io"),
    ("x-request-header", "v"),
]
RESPONSE = [(":status", "200"), ("content-type", "application/json")]


def one_round(plugin: Plugin, max_streams: int, max_seconds: float) -> tuple[float, float]:
    """Streams per second of wall time and of CPU time over one bounded round."""
    done = 0
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + max_seconds
    while done < max_streams and time.perf_counter() < deadline:
        stream = plugin.http_stream()
        stream.send_request_headers(REQUEST)
        stream.send_response_headers(RESPONSE)
        stream.complete()
        done += 1
    return done / (time.perf_counter() - start), done / max(time.process_time() - cpu, 1e-9)


def measure(path: Path, config: str | None, args: argparse.Namespace, **options: Any) -> dict[str, float]:
    t0 = time.perf_counter()
    Plugin.load(path, config=config, **options)
    first_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    plugin = Plugin.load(path, config=config, **options)
    warm_load = time.perf_counter() - t0
    one_round(plugin, 200, 2.0)  # warm-up
    rounds = [one_round(plugin, args.streams, args.seconds) for _ in range(args.rounds)]
    wall = [w for w, _ in rounds]
    cpu = [c for _, c in rounds]
    return {
        "median": statistics.median(wall),
        "min": min(wall),
        "max": max(wall),
        "cpu_median": statistics.median(cpu),
        "cpu_min": min(cpu),
        "cpu_max": max(cpu),
        "first_load_s": first_load,
        "warm_load_ms": warm_load * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--add-header", type=Path, default=ROOT / "build" / "add-header-go.wasm")
    parser.add_argument("--zig", type=Path, help="the Zig add-header module, measured too when given")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=5000, help="at most this many streams per round")
    parser.add_argument("--seconds", type=float, default=3.0, help="at most this long per round")
    parser.add_argument("--skip-tests", action="store_true", help="do not time the pytest file")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        floor = Path(tmp) / "no_wasi.wasm"
        floor.write_bytes(wasmtime.wat2wasm(FLOOR_WAT.read_text()))
        rows = [("minimal: no_wasi.wat", measure(floor, None, args))]
        for path in [args.add_header, *([args.zig] if args.zig else [])]:
            rows.append((f"add-header: {path.name}", measure(path, CONFIG, args)))
        if args.zig:
            rows.append(
                (f"  same, epoch off: {args.zig.name}", measure(args.zig, CONFIG, args, deadline=None))
            )
    load_after = os.getloadavg()[0]

    floor_us = 1e6 / rows[0][1]["cpu_median"]
    bounds = f"{args.rounds} rounds, <= {args.streams} streams or {args.seconds:.0f} s each"
    print(f"full HTTP streams through the host ({bounds}); deadline (epoch interruption) on unless said")
    print(f"load average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs")
    header = ("module", "per CPU-s", "(min..max)", "wall /s", "us CPU", "vs minimal", "1st load", "warm load")
    print("{:36} {:>9} {:>15} {:>8} {:>7} {:>10} {:>9} {:>10}".format(*header))
    for name, row in rows:
        us = 1e6 / row["cpu_median"]
        spread = "({:.0f}..{:.0f})".format(row["cpu_min"], row["cpu_max"])
        print(
            f"{name:36} {row['cpu_median']:9.0f} {spread:>15} {row['median']:8.0f} {us:7.1f}"
            f" {us / floor_us:9.2f}x {row['first_load_s']:8.2f}s {row['warm_load_ms']:8.1f}ms"
        )

    if not args.skip_tests:
        # Hand the test session the modules measured above, so that it builds nothing.
        env_hint = {"MESHWASM_ADD_HEADER_GO_WASM": str(args.add_header.resolve())}
        if args.zig:
            env_hint["MESHWASM_ADD_HEADER_ZIG_WASM"] = str(args.zig.resolve())
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", TEST_FILE, "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env={**os.environ, **env_hint},
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
        summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"\n{TEST_FILE}: {elapsed:.1f} s wall, including interpreter start ({summary})")


if __name__ == "__main__":
    main()
