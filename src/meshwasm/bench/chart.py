"""The report as a PNG: added CPU per request and requests/s per variant and worker count.

matplotlib is the ``bench`` extra (``pip install 'meshwasm[bench]'``); without it there is no
PNG and :class:`ChartUnavailable` says how to get one.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshwasm.bench.errors import BenchError
from meshwasm.bench.report import Report
from meshwasm.bench.stats import Spread
from meshwasm.errors import ExitCode
from meshwasm.fsutil import write_atomic


class ChartUnavailable(BenchError):
    exit_code = ExitCode.TOOLCHAIN


def _missing() -> ChartUnavailable:
    return ChartUnavailable(
        "no PNG: matplotlib is not installed",
        hint="pip install 'meshwasm[bench]' (or matplotlib), or leave out --png; "
        "the table and the JSON need nothing more",
    )


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise _missing() from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def require_matplotlib() -> None:
    """Fail before a long run, not after it, when a PNG is asked for and cannot be drawn
    (without importing it: pyplot takes seconds to import)."""
    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # in sys.modules without a spec: not importable either
        found = False
    if not found:
        raise _missing()


def _save(plt: Any, fig: Any, out: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_atomic(out, buffer.getvalue())


def _label(value: Spread | None) -> str:
    if value is None:
        return "base"
    return f"{value.median:,.0f}" if abs(value.median) >= 100 else f"{value.median:.1f}"


def _bars(ax: Any, labels: Sequence[str], series: Mapping[str, Sequence[Spread | None]], ylabel: str) -> None:
    """Grouped bars (one group per label, one bar per series) with min..max error bars."""
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        medians = [v.median if v else 0.0 for v in values]
        low = [v.median - v.min if v else 0.0 for v in values]
        high = [v.max - v.median if v else 0.0 for v in values]
        bars = ax.bar(xs, medians, width, yerr=[low, high], capsize=3, label=name)
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                _label(value),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)


def bar_chart(
    out: Path,
    labels: Sequence[str],
    series: Mapping[str, Sequence[Spread | None]],
    *,
    ylabel: str,
    title: str,
) -> None:
    """One panel of grouped bars (what ``make bench`` draws)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.8))
    _bars(ax, labels, series, ylabel)
    ax.set_title(title)
    fig.tight_layout()
    _save(plt, fig, out)


def report_chart(report: Report, out: Path) -> None:
    """Added CPU per request (against no filter) and requests/s, grouped by worker count."""
    plt = _pyplot()
    labels = list(dict.fromkeys(r.label for r in report.results))
    workers = sorted({r.workers for r in report.results})

    def series(get: Any) -> dict[str, list[Spread | None]]:
        out: dict[str, list[Spread | None]] = {}
        for w in workers:
            by_label = {r.label: r for r in report.results if r.workers == w}
            out[f"{w} worker{'s' if w > 1 else ''}"] = [
                get(by_label[label]) if label in by_label else None for label in labels
            ]
        return out

    fig, (cpu, rps) = plt.subplots(1, 2, figsize=(12, 4.8))
    _bars(cpu, labels, series(lambda r: r.added_us), "Envoy CPU added per request (us) vs no filter")
    _bars(rps, labels, series(lambda r: r.rps), "requests/s (one core)")
    plugin = next((r.label for r in report.results if r.key == report.plugin), report.plugin)
    fig.suptitle(f"What {plugin} costs Envoy")
    fig.tight_layout()
    _save(plt, fig, out)
