"""What an extension costs the gateway: Envoy CPU per request, against no filter and native filters.

For each variant, one Envoy (``--concurrency 1``, a direct-response route, the
variant's filter adding ``x-ingress-header`` to the response) is pinned to one
core and wrk to another. Each round drives every variant in turn (A B C ...
A B C ...) for a fixed time and reads Envoy's own CPU time (user + system,
``/proc/<pid>/stat``) before and after; CPU per request is that delta over the
requests wrk completed. Medians over the rounds are reported with their spread
(min..max), and each variant's added cost is taken against "no filter" in the
same round. Start-to-first-response is measured when each Envoy starts.

    .venv/bin/python bench/dataplane.py --go-wasm build/add-header-go.wasm \\
        --zig-wasm build/add-header-zig.wasm --out bench/results

Prints the table on stdout and writes ``dataplane.json``, ``dataplane.png`` and
``dataplane.txt`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import wasmtime

from meshwasm import ui
from meshwasm.envoy import resources as r
from meshwasm.envoy.process import envoy_binary
from meshwasm.net import free_port
from meshwasm.process import ManagedProcess

HERE = Path(__file__).resolve().parent
FLOOR_WAT = HERE / "floor" / "floor.wat"
FLOOR_BOTH_WAT = HERE / "floor" / "floor_both.wat"
HEADER, VALUE = "x-ingress-header", "from tsb ingress gateway"
PLUGIN_CONFIG = json.dumps({"header": HEADER, "value": VALUE, "path": "response"})
T_HEADER_MUTATION = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
T_LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- variants -------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    http_filters: list[dict[str, Any]]
    module: Path | None = None  # the wasm module, for its size
    adds_header: bool = True


def wasm_filter(module: Path, root_id: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": r.wasm_filter_config(
            name=root_id, root_id=root_id, filename=str(module), configuration=PLUGIN_CONFIG, vm_id=root_id
        ),
    }


def native_variants() -> list[Variant]:
    header_mutation = {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": T_HEADER_MUTATION,
            "mutations": {
                "response_mutations": [
                    {
                        "append": {
                            "header": {"key": HEADER, "value": VALUE},
                            "append_action": "APPEND_IF_EXISTS_OR_ADD",
                        }
                    }
                ]
            },
        },
    }
    lua = {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": T_LUA,
            "default_source_code": {
                "inline_string": f"function envoy_on_response(h) h:headers():add('{HEADER}', '{VALUE}') end"
            },
        },
    }
    return [
        Variant("none", "no filter", [], adds_header=False),
        Variant("header_mutation", "header_mutation (native)", [header_mutation]),
        Variant("lua", "Lua", [lua]),
    ]


def wasm_variant(key: str, label: str, module: Path) -> Variant:
    return Variant(key, label, [wasm_filter(module, key)], module=module)


def compile_wat(source: Path, out_dir: Path) -> Path:
    """A module of bench/floor/ compiled with wasmtime's wat2wasm."""
    out = out_dir / f"{source.stem}.wasm"
    out.write_bytes(wasmtime.wat2wasm(source.read_text()))
    return out


# -- one Envoy per variant ------------------------------------------------------------------


def bootstrap(variant: Variant, port: int, admin_port: int) -> dict[str, Any]:
    listener = r.http_listener(
        name="bench",
        address="127.0.0.1",
        port=port,
        virtual_hosts=[r.virtual_host("bench", ["*"], [r.direct_response_route("/", 200, "ok")])],
        http_filters=variant.http_filters,
    )
    listener.pop("@type")
    return {
        "admin": {"address": r.socket_address("127.0.0.1", admin_port)},
        "static_resources": {"listeners": [listener]},
    }


@dataclass
class RunningEnvoy:
    variant: Variant
    process: ManagedProcess
    url: str
    start_to_first_response_s: float

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole Envoy process (all threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: state is field 3, utime 14 and stime 15 (1-based).
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_envoy(variant: Variant, workdir: Path, envoy_core: int | None) -> RunningEnvoy:
    port, admin_port = free_port(), free_port()
    config = workdir / f"{variant.key}.json"
    config.write_text(json.dumps(bootstrap(variant, port, admin_port), indent=1))
    argv = [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"]
    if envoy_core is not None:
        argv = ["taskset", "-c", str(envoy_core), *argv]
    process = ManagedProcess(f"envoy-{variant.key}", argv, log_path=workdir / f"{variant.key}.log")
    url = f"http://127.0.0.1:{port}/"
    started = time.monotonic()
    process.start()
    deadline = started + 120
    with httpx.Client(timeout=1.0) as client:
        while True:
            try:
                response = client.get(url)
                if response.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            process.ensure_alive()
            if time.monotonic() > deadline:
                process.stop()
                raise RuntimeError(f"{variant.key}: no response within 120 s; see {process.log_path}")
            time.sleep(0.005)
    elapsed = time.monotonic() - started
    if variant.adds_header and response.headers.get(HEADER) != VALUE:
        process.stop()
        raise RuntimeError(f"{variant.key}: the response lacks {HEADER}: {VALUE} ({dict(response.headers)})")
    return RunningEnvoy(variant, process, url, elapsed)


# -- load -------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    rps: float
    p99_ms: float


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(output: str) -> WrkResult:
    """The numbers we use from wrk's --latency report."""
    requests = re.search(r"^\s*(\d+) requests in", output, re.M)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    if not (requests and rps and p99):
        raise RuntimeError(f"cannot read wrk's report:\n{output}")
    return WrkResult(
        int(requests.group(1)), float(rps.group(1)), float(p99.group(1)) * _UNITS_MS[p99.group(2)]
    )


def run_wrk(url: str, *, seconds: int, connections: int, core: int | None) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if core is not None:
        argv = ["taskset", "-c", str(core), *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}")
    return parse_wrk(proc.stdout)


@dataclass
class Sample:
    cpu_us_per_request: float
    rps: float
    p99_ms: float
    requests: int


def measure(envoy: RunningEnvoy, *, seconds: int, connections: int, wrk_core: int | None) -> Sample:
    before = envoy.cpu_seconds()
    result = run_wrk(envoy.url, seconds=seconds, connections=connections, core=wrk_core)
    after = envoy.cpu_seconds()
    if result.requests == 0:
        raise RuntimeError(f"{envoy.variant.key}: wrk completed no request")
    return Sample((after - before) * 1e6 / result.requests, result.rps, result.p99_ms, result.requests)


# -- summary (pure) -------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    label: str
    cpu_us: float  # median CPU us per request
    cpu_min: float
    cpu_max: float
    added_us: float | None  # median over rounds of (variant - no filter) in the same round
    added_min: float | None
    added_max: float | None
    ratio_native: float | None
    ratio_floor: float | None
    ratio_floor_both: float | None
    rps: float
    p99_ms: float
    start_s: float
    start_added_s: float | None
    module_bytes: int | None
    samples: list[dict[str, float]] = field(default_factory=list)


def summarize(
    variants: Sequence[Variant],
    samples: dict[str, list[Sample]],
    starts: dict[str, float],
    *,
    baseline: str = "none",
    native: str = "header_mutation",
    floor: str = "floor",
    floor_both: str = "floor_both",
) -> list[Row]:
    rows: list[Row] = []
    base = samples.get(baseline)
    added: dict[str, list[float]] = {}
    for v in variants:
        if base is not None and v.key != baseline:
            added[v.key] = [
                s.cpu_us_per_request - b.cpu_us_per_request for s, b in zip(samples[v.key], base, strict=True)
            ]

    def median_added(key: str) -> float | None:
        values = added.get(key)
        return statistics.median(values) if values else None

    native_added, floor_added = median_added(native), median_added(floor)
    floor_both_added = median_added(floor_both)
    for v in variants:
        cpu = [s.cpu_us_per_request for s in samples[v.key]]
        add = added.get(v.key)
        med_add = median_added(v.key)
        rows.append(
            Row(
                key=v.key,
                label=v.label,
                cpu_us=statistics.median(cpu),
                cpu_min=min(cpu),
                cpu_max=max(cpu),
                added_us=med_add,
                added_min=min(add) if add else None,
                added_max=max(add) if add else None,
                ratio_native=med_add / native_added if med_add is not None and native_added else None,
                ratio_floor=med_add / floor_added if med_add is not None and floor_added else None,
                ratio_floor_both=(
                    med_add / floor_both_added if med_add is not None and floor_both_added else None
                ),
                rps=statistics.median(s.rps for s in samples[v.key]),
                p99_ms=statistics.median(s.p99_ms for s in samples[v.key]),
                start_s=starts[v.key],
                start_added_s=starts[v.key] - starts[baseline] if baseline in starts else None,
                module_bytes=v.module.stat().st_size if v.module else None,
                samples=[asdict(s) for s in samples[v.key]],
            )
        )
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: Sequence[Row]) -> str:
    header = (
        f"{'variant':<28} {'CPU us/req':>10} {'(min..max)':>14} {'added us':>9} {'(min..max)':>14} "
        f"{'x native':>8} {'x floor':>7} {'x floor2':>8} {'rps':>8} {'p99 ms':>7} {'start s':>8} "
        f"{'module':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        spread = f"{row.cpu_min:.1f}..{row.cpu_max:.1f}"
        added_spread = "" if row.added_min is None else f"{row.added_min:.1f}..{row.added_max:.1f}"
        size = "-" if row.module_bytes is None else f"{row.module_bytes:,}"
        lines.append(
            f"{row.label:<28} {row.cpu_us:>10.1f} {spread:>14} "
            f"{_fmt(row.added_us, '.1f'):>9} {added_spread:>14} "
            f"{_fmt(row.ratio_native, '.1f'):>8} {_fmt(row.ratio_floor, '.2f'):>7} "
            f"{_fmt(row.ratio_floor_both, '.2f'):>8} {row.rps:>8.0f} "
            f"{row.p99_ms:>7.2f} {row.start_s:>8.2f} {size:>10}"
        )
    return "\n".join(lines)


def goals(rows: Sequence[Row], *, fast: str = "zig", go: str = "go", go_first: str = "go-first") -> str:
    """The issue's goals, checked against this run's medians."""
    by_key = {row.key: row for row in rows}
    lines = []
    row, floor = by_key.get(fast), by_key.get("floor")
    if row and floor and row.ratio_floor is not None:
        verdict = "met" if row.ratio_floor <= 1.3 else "NOT met"
        lines.append(
            f"fast add-header added CPU = {row.ratio_floor:.2f}x the floor's (goal <= 1.3x): {verdict}"
        )
    if row and row.start_added_s is not None:
        verdict = "met" if row.start_added_s <= 0.3 else "NOT met"
        lines.append(
            f"fast add-header start = no module + {row.start_added_s:.2f} s (goal <= 0.3 s): {verdict}"
        )
    if row and row.module_bytes is not None:
        verdict = "met" if row.module_bytes < 100 * 1024 else "NOT met"
        lines.append(f"fast add-header module = {row.module_bytes:,} bytes (goal < 100 KB): {verdict}")
    trimmed, first = by_key.get(go), by_key.get(go_first)
    if trimmed and first and trimmed.module_bytes and first.module_bytes:
        lines.append(
            f"Go add-header vs first build: {trimmed.module_bytes:,} vs {first.module_bytes:,} bytes "
            f"({100 * (1 - trimmed.module_bytes / first.module_bytes):.1f}% smaller), "
            f"added {_fmt(trimmed.added_us, '.1f')} vs {_fmt(first.added_us, '.1f')} us/request, "
            f"start {trimmed.start_s:.2f} vs {first.start_s:.2f} s"
        )
    return "\n".join(lines)


def chart(rows: Sequence[Row], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8))
    labels = [row.label for row in rows]
    values = [row.added_us or 0.0 for row in rows]
    low = [
        v - (row.added_min if row.added_min is not None else v) for v, row in zip(values, rows, strict=True)
    ]
    high = [
        (row.added_max if row.added_max is not None else v) - v for v, row in zip(values, rows, strict=True)
    ]
    bars = ax.bar(labels, values, yerr=[low, high], capsize=4, color="#4c72b0")
    for bar, row in zip(bars, rows, strict=True):
        ax.annotate(
            f"{row.added_us:.1f}" if row.added_us is not None else "base",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("Envoy CPU added per request (us), vs no filter")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# -- the run --------------------------------------------------------------------------------


def cores() -> tuple[int | None, int | None]:
    """Envoy on one core, wrk on another; no pinning on a one-core machine or without taskset."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 or shutil.which("taskset") is None:
        ui.info("fewer than two cores (or no taskset): Envoy and wrk are not pinned")
        return None, None
    return allowed[0], allowed[1]


def run(
    variants: Sequence[Variant],
    *,
    rounds: int,
    seconds: int,
    warmup: int,
    connections: int,
    workdir: Path,
) -> tuple[list[Row], dict[str, Any]]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run `make get` (scripts/install-tools.sh installs it)")
    envoy_core, wrk_core = cores()
    running: dict[str, RunningEnvoy] = {}
    try:
        for v in variants:
            ui.info(f"starting Envoy for {v.label}")
            running[v.key] = start_envoy(v, workdir, envoy_core)
            ui.info(f"  first response after {running[v.key].start_to_first_response_s:.2f} s")
        for v in variants:
            run_wrk(running[v.key].url, seconds=warmup, connections=connections, core=wrk_core)
        samples: dict[str, list[Sample]] = {v.key: [] for v in variants}
        for n in range(rounds):
            for v in variants:
                sample = measure(running[v.key], seconds=seconds, connections=connections, wrk_core=wrk_core)
                samples[v.key].append(sample)
                ui.info(
                    f"round {n + 1}/{rounds} {v.label}: {sample.cpu_us_per_request:.1f} us/req, "
                    f"{sample.rps:.0f} rps"
                )
    finally:
        for envoy in running.values():
            envoy.process.stop()
    starts = {key: e.start_to_first_response_s for key, e in running.items()}
    rows = summarize(variants, samples, starts)
    meta = {
        "rounds": rounds,
        "seconds_per_sample": seconds,
        "connections": connections,
        "envoy_core": envoy_core,
        "wrk_core": wrk_core,
        "cpus": os.cpu_count(),
        "envoy": envoy_binary(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return rows, meta


def write_results(rows: Sequence[Row], meta: dict[str, Any], out: Path, name: str, title: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = table(rows) + "\n\n" + goals(rows)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1))
    (out / f"{name}.txt").write_text(text + "\n")
    chart(rows, out / f"{name}.png", title)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--go-wasm", type=Path, required=True, help="the Go add-header module")
    parser.add_argument("--zig-wasm", type=Path, required=True, help="the fast (Zig) add-header module")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help="another add-header module to compare",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--seconds", type=int, default=3, help="load per variant per round (wrk takes whole seconds)"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be >= 1 and --seconds > 0")
    for module in [args.go_wasm, args.zig_wasm]:
        if not module.is_file():
            parser.error(f"{module}: no such module (run `make build-go build-zig` or `make bench`)")

    with tempfile.TemporaryDirectory(prefix="meshwasm-bench-") as tmp:
        workdir = Path(tmp)
        variants = [
            *native_variants(),
            wasm_variant("floor", "wasm floor (WAT)", compile_wat(FLOOR_WAT, workdir)),
            wasm_variant("floor_both", "wasm floor, both sides (WAT)", compile_wat(FLOOR_BOTH_WAT, workdir)),
            wasm_variant("go", "add-header (Go)", args.go_wasm.resolve()),
            wasm_variant("zig", "add-header (Zig)", args.zig_wasm.resolve()),
        ]
        for extra in args.extra:
            key, _, path = extra.partition("=")
            if not path or not Path(path).is_file():
                parser.error(f"--extra {extra!r}: want KEY=PATH to an existing module")
            variants.append(wasm_variant(key, f"add-header ({key})", Path(path).resolve()))
        rows, meta = run(
            variants,
            rounds=args.rounds,
            seconds=args.seconds,
            warmup=args.warmup,
            connections=args.connections,
            workdir=workdir,
        )
    text = write_results(rows, meta, args.out, "dataplane", "What add-header costs Envoy per request")
    print(text)
    print(f"\nmedians of {args.rounds} interleaved rounds of {args.seconds:g} s; results in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
