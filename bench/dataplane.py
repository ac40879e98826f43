"""What an extension costs the gateway: Envoy CPU per request, against no filter and native filters.

A thin user of :mod:`meshwasm.bench` (the machinery behind ``meshwasm bench``): for each
variant, one Envoy (one worker, a direct-response route, the variant's filter adding
``x-ingress-header`` to the response) pinned to one core and wrk to another, interleaved
rounds, Envoy's CPU from ``/proc/<pid>/stat`` over the requests wrk completed, medians with
min..max, each variant's added cost against "no filter" in the same round, and the start to
the first response. This script adds the issue-8 view: ratios to the native filter and to the
Wasm floors, and its goals.

    .venv/bin/python bench/dataplane.py --go-wasm build/add-header-go.wasm \\
        --zig-wasm build/add-header-zig.wasm --out bench/results

Prints the table on stdout and writes ``dataplane.json``, ``dataplane.png`` and
``dataplane.txt`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from meshwasm import ui
from meshwasm.bench import chart, runner
from meshwasm.bench import variants as v
from meshwasm.bench.report import Result, summarize
from meshwasm.bench.stats import ratio

HERE = Path(__file__).resolve().parent
FLOOR_WAT = HERE / "floor" / "floor.wat"
FLOOR_BOTH_WAT = HERE / "floor" / "floor_both.wat"
HEADER, VALUE = "x-ingress-header", "from tsb ingress gateway"
PLUGIN_CONFIG = json.dumps({"header": HEADER, "value": VALUE, "path": "response"})


# -- variants -------------------------------------------------------------------------


def native_variants() -> list[v.Variant]:
    return [v.no_filter(), v.header_mutation(HEADER, VALUE), v.lua_add_header(HEADER, VALUE)]


def wasm_variant(key: str, label: str, module: Path) -> v.Variant:
    return v.wasm_plugin(key, label, module, configuration=PLUGIN_CONFIG, expect_header=(HEADER, VALUE))


def compile_wat(source: Path, out_dir: Path) -> Path:
    """A module of bench/floor/ compiled with wasmtime's wat2wasm."""
    out = out_dir / f"{source.stem}.wasm"
    out.write_bytes(wasmtime.wat2wasm(source.read_text()))
    return out


# -- the issue-8 view of the package's results (pure) ------------------------------------


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


def rows(
    results: Sequence[Result],
    *,
    native: str = "header_mutation",
    floor: str = "floor",
    floor_both: str = "floor_both",
) -> list[Row]:
    added = {r.key: r.added_us.median for r in results if r.added_us is not None}
    out = []
    for r in results:
        med = r.added_us.median if r.added_us else None
        out.append(
            Row(
                key=r.key,
                label=r.label,
                cpu_us=r.cpu_us.median,
                cpu_min=r.cpu_us.min,
                cpu_max=r.cpu_us.max,
                added_us=med,
                added_min=r.added_us.min if r.added_us else None,
                added_max=r.added_us.max if r.added_us else None,
                ratio_native=ratio(med, added.get(native)),
                ratio_floor=ratio(med, added.get(floor)),
                ratio_floor_both=ratio(med, added.get(floor_both)),
                rps=r.rps.median,
                p99_ms=r.p99_ms.median,
                start_s=r.start_s,
                start_added_s=r.start_added_s if r.start_added_s is not None else 0.0,
                module_bytes=r.module_bytes,
                samples=[asdict(s) for s in r.samples],
            )
        )
    return out


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


# -- the run --------------------------------------------------------------------------------


def write_results(results: Sequence[Result], meta: runner.Meta, out: Path, name: str, title: str) -> str:
    found = rows(results)
    out.mkdir(parents=True, exist_ok=True)
    text = table(found) + "\n\n" + goals(found)
    loads = f"load average {meta.loadavg_start[0]:.2f} at start, {meta.loadavg_end[0]:.2f} at end"
    text += f"\n\n{loads} on {meta.cpus} CPUs"
    meta_json: dict[str, Any] = {
        "rounds": meta.rounds,
        "seconds_per_sample": meta.seconds,
        "connections": meta.connections,
        "envoy_core": meta.envoy_core,
        "wrk_core": meta.load_core,
        "cpus": meta.cpus,
        "envoy": meta.envoy,
        "time": meta.started,
        "loadavg_start": meta.loadavg_start,
        "loadavg_end": meta.loadavg_end,
    }
    (out / f"{name}.json").write_text(
        json.dumps({"meta": meta_json, "rows": [asdict(r) for r in found]}, indent=1)
    )
    (out / f"{name}.txt").write_text(text + "\n")
    added = [r.added_us for r in results]
    chart.bar_chart(
        out / f"{name}.png",
        [r.label for r in results],
        {"added": added},
        ylabel="Envoy CPU added per request (us), vs no filter",
        title=title,
    )
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
        settings = runner.Settings(
            rounds=args.rounds, seconds=args.seconds, warmup=args.warmup, connections=args.connections
        )
        measured, meta = runner.run(
            variants, workers=[1], settings=settings, workdir=workdir, progress=ui.info
        )
    text = write_results(
        summarize(measured), meta, args.out, "dataplane", "What add-header costs Envoy per request"
    )
    print(text)
    print(f"\nmedians of {args.rounds} interleaved rounds of {args.seconds:g} s; results in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
