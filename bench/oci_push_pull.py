"""Push and pull times of a 4 MiB wasm module against a local registry, beside `skopeo copy`.

Starts its own registry (CNCF distribution on a free loopback port), then for each variant
times, as the median of --runs runs (each run into a fresh repository, so every blob moves):

- meshwasm API: RegistryClient.push_layout / pull_module in this process;
- meshwasm CLI: `meshwasm -q image push LAYOUT REF` / `image pull REF -o DIR` (a new process,
  as a script would run it; includes Python start-up);
- skopeo copy: `oci:LAYOUT:tag -> docker://REF` (push) and `docker://REF -> oci:DIR` (pull).

It also times `meshwasm --version` (CLI start-up alone) so the CLI column can be read as
start-up plus transfer.

Usage: .venv/bin/python bench/oci_push_pull.py [--runs 5] [--size 4194304] [--wasm PATH]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image, write_layout
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference

MESHWASM = str(Path(sys.executable).parent / "meshwasm")


def synthetic_module(size: int) -> bytes:
    """A valid wasm module of ``size`` bytes: header plus one custom section of pseudo-random bytes
    (incompressible: the worst case for the compat variant's gzip)."""
    header, name = b"\0asm\x01\0\0\0", b"\x04fill"
    payload = size - len(header) - 1 - 5 - len(name)
    length = len(name) + payload
    leb = bytes([(length >> (7 * i) & 0x7F) | (0x80 if i < 4 else 0) for i in range(5)])
    state, filler = 1, bytearray()
    while len(filler) < payload:
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        filler += state.to_bytes(8, "little")
    return header + b"\x00" + leb + name + bytes(filler[:payload])


def timed(action: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    action(*args)
    return time.perf_counter() - start


def run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=300)


def measure(registry: LocalRegistry, skopeo: str, layout: Path, work: Path, name: str) -> dict[str, float]:
    """One run of every client against fresh repositories ``<registry>/<name>/...``."""
    base = f"{registry.address}/{name}"
    api_ref = parse_reference(f"{base}/api:v1")
    cli_ref, sk_ref = f"{base}/cli:v1", f"docker://{base}/skopeo:v1"
    result: dict[str, float] = {}
    with RegistryClient() as client:
        result["api push"] = timed(client.push_layout, layout, api_ref)
        result["api pull"] = timed(client.pull_module, api_ref)
    result["cli push"] = timed(run, MESHWASM, "-q", "image", "push", str(layout), cli_ref)
    result["cli pull"] = timed(run, MESHWASM, "-q", "image", "pull", cli_ref, "-o", str(work / f"{name}-out"))
    copy = (skopeo, "--insecure-policy", "copy", "-q")
    result["skopeo push"] = timed(run, *copy, "--dest-tls-verify=false", f"oci:{layout}:v1", sk_ref)
    result["skopeo pull"] = timed(
        run, *copy, "--src-tls-verify=false", sk_ref, f"oci:{work / f'{name}-sk'}:v1"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--wasm", type=Path, help="use this module instead of a synthetic one")
    args = parser.parse_args()
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        sys.exit("skopeo is missing: run `make get`")
    module = args.wasm.read_bytes() if args.wasm else synthetic_module(args.size)
    runs = max(1, min(args.runs, 50))

    with tempfile.TemporaryDirectory(prefix="oci-bench-") as tmp:
        work = Path(tmp)
        registry = LocalRegistry(work / "registry")
        registry.start()
        try:
            registry.wait_ready()
            rows = []
            startups: list[float] = []
            variants = ("oci", "compat")
            layouts = {v: work / f"layout-{v}" for v in variants}
            for variant, layout in layouts.items():
                write_layout(build_image(module, variant=variant), layout, tag="v1")
            samples: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
            for i in range(runs):  # interleaved, so load changes hit every column alike
                startups.append(timed(run, MESHWASM, "--version"))
                for variant in variants:
                    samples[variant].append(
                        measure(registry, skopeo, layouts[variant], work, f"b-{variant}-{i}")
                    )
            for variant in variants:
                med = {
                    key: statistics.median(s[key] for s in samples[variant]) for key in samples[variant][0]
                }
                for op in ("push", "pull"):
                    rows.append((variant, op, med[f"api {op}"], med[f"cli {op}"], med[f"skopeo {op}"]))
            startup = statistics.median(startups)
        finally:
            registry.stop()

    print(f"module: {len(module)} bytes ({'synthetic, incompressible' if not args.wasm else args.wasm}); "
          f"median of {runs} runs; registry: distribution on loopback")  # fmt: skip
    print(f"meshwasm CLI start-up alone (`meshwasm --version`, same run): {startup:.3f} s median")
    print()
    print("| variant | op   | meshwasm API (s) | meshwasm CLI (s) | CLI - start-up (s) | skopeo copy (s) |"
          " API / skopeo | CLI / skopeo |")  # fmt: skip
    print("|---------|------|-----------------:|-----------------:|-------------------:|----------------:|"
          "-------------:|-------------:|")  # fmt: skip
    for variant, op, api, cli, sk in rows:
        print(
            f"| {variant:<7} | {op:<4} | {api:16.3f} | {cli:16.3f} | {cli - startup:18.3f} | {sk:15.3f} |"
            f" {api / sk:12.2f} | {cli / sk:12.2f} |"
        )


if __name__ == "__main__":
    main()
