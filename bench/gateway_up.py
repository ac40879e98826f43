"""How fast `meshwasm up tsb/` serves, and how fast edits reach Envoy.

For each module given (e.g. the Go and the Zig add-header), in one run:
- cold: `meshwasm up` with an empty cache to the first 200 carrying the header;
- warm: the same with the cache the cold run left;
- edits: the tree's header value changed N times under a request loop from a
  second process; time from each write to the first response with the new
  value, and the number of failed requests;
- new module: the same module with other bytes pushed under the same tag
  (imagePullPolicy Always); time from the push to Envoy running it, through
  `up --poll-modules` (Istio itself re-pulls only when the WasmPlugin changes).

Usage: bench/gateway_up.py --wasm go=build/add-header-go.wasm --wasm zig=build/add-header-zig.wasm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
HOST = "httpbin.tetrate.io"
sys.path.insert(0, str(ROOT / "src"))

from meshwasm.net import free_port, wait_until  # noqa: E402


def prepare_tree(workdir: Path) -> Path:
    tree = workdir / "tsb"
    shutil.copytree(ROOT / "tsb", tree)
    ext = tree / "wasm-extension.yaml"
    text = ext.read_text().replace("127.0.0.1:5000", f"127.0.0.1:{free_port()}")
    ext.write_text(text.replace("../plugins/", f"{ROOT}/plugins/"))
    return tree


def new_module_latency(tree: Path, wasm: Path, workdir: Path) -> float:
    """Push ``wasm`` with an extra custom section under the tree's tag; seconds until Envoy runs it."""
    import hashlib
    import re

    from meshwasm.oci.client import RegistryClient
    from meshwasm.oci.image import build_image
    from meshwasm.oci.reference import parse_reference

    name = b"bench"
    payload = bytes([len(name)]) + name + str(time.time()).encode()
    module = wasm.read_bytes() + b"\x00" + bytes([len(payload)]) + payload
    digest = hashlib.sha256(module).hexdigest()
    url = re.search(r"url: (oci://\S+)", (tree / "wasm-extension.yaml").read_text())
    assert url is not None
    admin = json.loads((workdir / "state.json").read_text())["admin"]

    def running() -> bool:
        try:
            dump = httpx.get(f"{admin}/config_dump", timeout=5).text
        except httpx.HTTPError:
            return False
        return f"{digest}.wasm" in dump

    with RegistryClient() as client:
        pushed = time.monotonic()
        client.push_image(build_image(module, variant="compat"), parse_reference(url[1]))
    if not wait_until(running, timeout=60, interval=0.02):
        raise SystemExit("the new module never reached Envoy")
    return time.monotonic() - pushed


def start(tree: Path, wasm: Path, cache: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], float, int]:
    """Start `up`; returns the process, seconds to the first good response, and the port."""
    state = workdir / "state.json"
    state.unlink(missing_ok=True)
    env = {**os.environ, "MESHWASM_CACHE_DIR": str(cache)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshwasm.cli",
            "-q",
            "up",
            str(tree),
            "--registry",
            "--push",
            str(wasm),
            "--poll-modules",
            "--state-file",
            str(state),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "up.log").open("a"),
        env=env,
    )
    port = 0

    def served() -> bool:
        nonlocal port
        if not port:
            if not state.exists():
                return False
            port = int(json.loads(state.read_text())["ports"]["80"])
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/get", headers={"host": HOST}, timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and "x-ingress-header" in response.headers

    if not wait_until(served, timeout=180, interval=0.02, alive=lambda: proc.poll() is None):
        proc.kill()
        raise SystemExit(
            f"up did not serve (exit {proc.poll()}):\n" + (workdir / "up.log").read_text()[-3000:]
        )
    return proc, time.monotonic() - started, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def measure_edits(tree: Path, port: int, edits: int, workdir: Path) -> tuple[list[float], int, int]:
    out = workdir / "load.json"
    seconds = edits * 3 + 2
    load = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "e2e" / "load_loop.py"),
            f"http://127.0.0.1:{port}/get",
            HOST,
            str(seconds),
            "100000",
            str(out),
        ]
    )
    gateway = tree / "tier2" / "gateway.yaml"
    latencies = []
    current = "from tsb ingress gateway"
    time.sleep(1)
    for i in range(edits):
        new = f"edit {i}"
        gateway.write_text(gateway.read_text().replace(f"value: {current}", f"value: {new}"))
        written = time.monotonic()

        def seen(value: str = new) -> bool:
            response = httpx.get(f"http://127.0.0.1:{port}/get", headers={"host": HOST}, timeout=5)
            return response.headers.get("x-ingress-header") == value

        if not wait_until(seen, timeout=30, interval=0.01):
            raise SystemExit(f"edit {i} never arrived")
        latencies.append(time.monotonic() - written)
        current = new
        time.sleep(1.5)
    load.wait(timeout=seconds + 30)
    records = json.loads(out.read_text())
    return latencies, len(records), sum(1 for r in records if r[1] != 200)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wasm", action="append", required=True, help="NAME=PATH of a module to serve")
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gateway_up.json")
    args = parser.parse_args()
    rows = []
    for item in args.wasm:
        name, _, path = item.partition("=")
        wasm = Path(path).resolve()
        with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
            workdir = Path(tmp)
            tree = prepare_tree(workdir)
            cache = workdir / "cache"
            proc, cold, _ = start(tree, wasm, cache, workdir)
            stop(proc)
            proc, warm, port = start(tree, wasm, cache, workdir)
            try:
                latencies, sent, failed = measure_edits(tree, port, args.edits, workdir)
                new_module = new_module_latency(tree, wasm, workdir)
            finally:
                stop(proc)
        rows.append(
            {
                "module": name,
                "size_bytes": wasm.stat().st_size,
                "cold_start_s": round(cold, 2),
                "warm_start_s": round(warm, 2),
                "edit_median_s": round(statistics.median(latencies), 3),
                "edit_max_s": round(max(latencies), 3),
                "requests_during_edits": sent,
                "failed_requests": failed,
                "new_module_s": round(new_module, 2),
            }
        )
    print(
        f"{'module':<8} {'size':>10} {'cold up->200':>13} {'warm up->200':>13} {'edit p50':>9} "
        f"{'edit max':>9} {'requests':>9} {'failed':>7} {'new module':>11}"
    )
    for r in rows:
        print(
            f"{r['module']:<8} {r['size_bytes']:>10} {r['cold_start_s']:>12.2f}s {r['warm_start_s']:>12.2f}s "
            f"{r['edit_median_s']:>8.3f}s {r['edit_max_s']:>8.3f}s {r['requests_during_edits']:>9} "
            f"{r['failed_requests']:>7} {r['new_module_s']:>10.2f}s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
