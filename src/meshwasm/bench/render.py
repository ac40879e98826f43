"""The report as rich tables and a few lines of text (what ``meshwasm bench`` prints)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from meshwasm.bench.compare import Change
from meshwasm.bench.report import BASELINE, Report, Result
from meshwasm.bench.stats import Spread, ratio

MIB = 1024 * 1024
_CHANGE_FORMATS = {"us": ".1f", "ms": ".3f", "s": ".2f", "MiB": ".1f"}  # else whole numbers: ",.0f"


def spread(value: Spread | None, spec: str = ".1f", *, signed: bool = False) -> str:
    """``median (min..max)``."""
    if value is None:
        return "-"
    sign = "+" if signed else ""
    return f"{value.median:{sign}{spec}} ({value.min:{spec}}..{value.max:{spec}})"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _workers(count: int) -> str:
    return f"{count} worker{'s' if count > 1 else ''}"


def _memories(values: list[int] | None) -> str:
    """Linear memory per VM in KiB, equal sizes grouped: ``1,088 + 3x1,344``."""
    if values is None:
        return "n/a"
    counts: dict[int, int] = {}
    for value in sorted(values):
        counts[value // 1024] = counts.get(value // 1024, 0) + 1
    return " + ".join(f"{n}x{kib:,}" if n > 1 else f"{kib:,}" for kib, n in counts.items()) or "-"


def _linear(result: Result) -> str:
    start, end = _memories(result.linear_memory_start), _memories(result.linear_memory_end)
    return start if start == end else f"{start} -> {end}"


def _against_label(report: Report) -> str | None:
    if report.against is None:
        return None
    return next((r.label for r in report.results if r.key == report.against), report.against)


def cpu_table(report: Report) -> Table:
    against = _against_label(report)
    table = Table(title="Envoy CPU and latency (median and min..max over rounds)", title_justify="left")
    columns = ["variant", "workers", "CPU us/req", "added vs no filter"]
    columns += [f"vs {against}"] if against else []
    columns += ["requests/s", "p50 ms", "p99 ms"]
    for name in columns:
        table.add_column(name, justify="left" if name == "variant" else "right")
    for r in report.results:
        row = [r.label, str(r.workers), spread(r.cpu_us), spread(r.added_us, signed=True)]
        row += [spread(r.vs_against_us, signed=True)] if against else []
        row += [f"{r.rps.median:,.0f}", f"{r.p50_ms.median:.3f}", f"{r.p99_ms.median:.3f}"]
        table.add_row(*row)
    return table


def memory_table(report: Report) -> Table:
    table = Table(title="Memory (after the run) and start", title_justify="left")
    columns = ["variant", "workers", "RSS MiB", "added MiB", "Wasm VMs", "linear memory per VM, KiB"]
    columns += ["cold start s", "added s", "module bytes"]
    for name in columns:
        table.add_column(name, justify="left" if name == "variant" else "right")
    for r in report.results:
        table.add_row(
            r.label,
            str(r.workers),
            f"{r.rss_bytes / MIB:.1f}",
            _num(None if r.rss_added_bytes is None else r.rss_added_bytes / MIB, "+.1f"),
            _num(r.vm_count, "d"),
            _linear(r),
            f"{r.start_s:.2f}",
            _num(r.start_added_s, "+.2f"),
            _num(r.module_bytes, ",d"),
        )
    return table


def _headline(report: Report, result: Result) -> str:
    text = f"{result.label} adds {spread(result.added_us)} us of Envoy CPU per request"
    text += f" with {_workers(result.workers)}"
    base = report.result(report.against, result.workers) if report.against else None
    if base is not None and result.vs_against_us is not None:
        text += f"; {spread(result.vs_against_us, signed=True)} us against {base.label}"
        # A ratio only to a cost clearly above the noise (its whole band above zero).
        reference = base.added_us if base.added_us is not None and base.added_us.min > 0 else None
        times = ratio(
            result.added_us.median if result.added_us else None, reference.median if reference else None
        )
        if times is not None:
            text += f" ({times:.1f}x its added cost)"
    return text


def summary_lines(report: Report) -> list[str]:
    lines = [_headline(report, r) for r in report.results if r.key == report.plugin and r.added_us]
    alone = next((m for m in report.worker_memory if m.key == BASELINE), None)
    for m in report.worker_memory:
        if m.key == report.plugin and m.added_per_worker_bytes is not None:
            fixed = _num(None if m.added_fixed_bytes is None else m.added_fixed_bytes / MIB, "+.2f")
            lines.append(
                f"{m.label} RSS: {m.added_per_worker_bytes / MIB:+.2f} MiB per worker and {fixed} MiB fixed, "
                "over no filter"
                + (f" (Envoy alone: {alone.per_worker_bytes / MIB:.2f} MiB per worker)" if alone else "")
                + "; per worker = the RSS difference between the worker counts, per worker added"
            )
    if any(r.key == report.plugin and r.vm_count for r in report.results):
        lines.append(
            "Wasm VMs: one per worker, one on the main thread and the base VM they are cloned from (never "
            "started); their linear memory is read "
            "from /proc/<pid>/maps (Envoy has no stat for it)"
        )
    meta = report.meta
    lines.append(
        f"load average {meta.loadavg_start[0]:.2f} at start, {meta.loadavg_end[0]:.2f} at end, "
        f"on {meta.cpus} CPUs; Envoy on core {meta.envoy_core}, wrk on core {meta.load_core}; "
        f"{meta.rounds} interleaved round{'s' if meta.rounds > 1 else ''} of {meta.seconds} s, "
        f"{meta.connections} connections; {meta.duration_s:.0f} s in all"
    )
    if max(meta.loadavg_start[0], meta.loadavg_end[0]) > meta.cpus:
        lines.append(
            "the machine was busy (load above its CPU count): absolute figures are inflated; "
            "the differences within a round hold better"
        )
    return lines


def report_renderable(report: Report) -> RenderableType:
    return Group(cpu_table(report), memory_table(report), Text("\n".join(summary_lines(report))))


def _change_value(value: Spread, unit: str) -> str:
    spec = _CHANGE_FORMATS.get(unit, ",.0f")
    return format(value.median, spec) if value.min == value.max else spread(value, spec)


def compare_table(changes: Sequence[Change], *, old_name: str) -> Table:
    table = Table(title=f"What changed since {old_name}", title_justify="left")
    for name in ("figure", "workers", "old", "new", "change", "verdict", "how"):
        table.add_column(name, justify="right" if name in ("workers", "old", "new", "change") else "left")
    styles = {"worse": "bold red", "better": "bold green"}
    for c in changes:
        table.add_row(
            f"{c.metric} ({c.unit})",
            "-" if c.workers is None else str(c.workers),
            _change_value(c.old, c.unit),
            _change_value(c.new, c.unit),
            format(c.delta, "+" + _CHANGE_FORMATS.get(c.unit, ",.0f")),
            Text(c.verdict, style=styles.get(c.verdict, "")),
            c.how,
        )
    return table


def wide_console(console: Console, width: int = 200) -> Console:
    """The console itself on a terminal; a wide one when the output goes to a file or a pipe
    (rich would squeeze the tables into 80 columns)."""
    if console.is_terminal:
        return console
    return Console(file=console.file, width=width, highlight=False, soft_wrap=False)
