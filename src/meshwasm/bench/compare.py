"""What changed between two bench reports of a plugin (two builds, or two configs) (pure).

A figure measured over rounds changed only when the two runs' bands (min..max over rounds) do
not overlap: inside the band is noise, whatever the medians say. The CPU figure compared is the
cost added over "no filter" in the same round, which a busier machine inflates far less than
the raw CPU per request. Figures measured once (cold start, RSS) have no band: they change when
they move by more than a tolerance (below); exact ones (linear memory, module size) change when
they differ at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from meshwasm.bench.errors import BenchError
from meshwasm.bench.report import Report, Result
from meshwasm.bench.stats import Spread
from meshwasm.errors import ExitCode

Verdict = Literal["better", "worse", "within noise", "same", "different"]
MIB = 1024 * 1024
# One-shot figures: a change smaller than max(absolute, relative * old) is taken as noise.
START_TOLERANCE = (0.05, 0.20)  # seconds, fraction
RSS_TOLERANCE = (1.0, 0.10)  # MiB, fraction


@dataclass(frozen=True)
class Change:
    metric: str
    unit: str
    workers: int | None  # None: not per worker count (the module)
    old: Spread
    new: Spread
    verdict: Verdict
    how: str  # how the verdict was reached

    @property
    def delta(self) -> float:
        return self.new.median - self.old.median


def band_verdict(old: Spread, new: Spread, *, lower_is_better: bool = True) -> Verdict:
    if new.overlaps(old):
        return "within noise"
    went_up = new.min > old.max
    return "worse" if went_up == lower_is_better else "better"


def tolerance_verdict(
    old: float, new: float, *, absolute: float, relative: float, lower_is_better: bool = True
) -> Verdict:
    if old == new:
        return "same"
    if abs(new - old) <= max(absolute, relative * abs(old)):
        return "within noise"
    return "worse" if (new > old) == lower_is_better else "better"


def exact_verdict(old: float, new: float, *, lower_is_better: bool = True) -> Verdict:
    if old == new:
        return "same"
    return "worse" if (new > old) == lower_is_better else "better"


def _one(value: float) -> Spread:
    return Spread(value, value, value)


def _banded(
    metric: str, unit: str, old: Result, new: Result, get: Callable[[Result], Spread | None], *, lower: bool
) -> Change | None:
    a, b = get(old), get(new)
    if a is None or b is None:
        return None
    how = "bands (min..max over rounds) " + ("overlap" if a.overlaps(b) else "apart")
    return Change(metric, unit, new.workers, a, b, band_verdict(a, b, lower_is_better=lower), how)


def _compare_workers(old: Result, new: Result) -> list[Change]:
    changes = [
        _banded("added CPU per request", "us", old, new, lambda r: r.added_us, lower=True),
        _banded("requests/s", "rps", old, new, lambda r: r.rps, lower=False),
        _banded("p50 latency", "ms", old, new, lambda r: r.p50_ms, lower=True),
        _banded("p99 latency", "ms", old, new, lambda r: r.p99_ms, lower=True),
    ]
    if old.start_added_s is not None and new.start_added_s is not None:
        absolute, relative = START_TOLERANCE
        verdict = tolerance_verdict(
            old.start_added_s, new.start_added_s, absolute=absolute, relative=relative
        )
        changes.append(
            Change(
                "cold start added",
                "s",
                new.workers,
                _one(old.start_added_s),
                _one(new.start_added_s),
                verdict,
                f"measured once; noise taken as {absolute:g} s or {relative:.0%}",
            )
        )
    if old.rss_added_bytes is not None and new.rss_added_bytes is not None:
        absolute, relative = RSS_TOLERANCE
        a, b = old.rss_added_bytes / MIB, new.rss_added_bytes / MIB
        verdict = tolerance_verdict(a, b, absolute=absolute, relative=relative)
        changes.append(
            Change(
                "RSS added",
                "MiB",
                new.workers,
                _one(a),
                _one(b),
                verdict,
                f"measured once; noise taken as {absolute:g} MiB or {relative:.0%}",
            )
        )
    if old.linear_memory_end and new.linear_memory_end:
        a, b = max(old.linear_memory_end) / 1024, max(new.linear_memory_end) / 1024
        changes.append(
            Change(
                "linear memory, largest VM",
                "KiB",
                new.workers,
                _one(a),
                _one(b),
                exact_verdict(a, b),
                "exact (64 KiB pages)",
            )
        )
    return [c for c in changes if c is not None]


def compare(old: Report, new: Report) -> list[Change]:
    """The plugin of ``new`` against the plugin of ``old``, at every worker count both measured."""
    pairs = [
        (o, n)
        for n in new.results
        if n.key == new.plugin
        for o in old.results
        if o.key == old.plugin and o.workers == n.workers
    ]
    if not pairs:
        raise BenchError(
            "the old report has no result for the plugin at the worker counts of this run "
            f"(old: {sorted({r.workers for r in old.results})}, new: {new.meta.workers})",
            hint="run with the same --workers as the old report",
            exit_code=ExitCode.USAGE,
        )
    changes: list[Change] = []
    old_plugin, new_plugin = pairs[0]
    if old_plugin.module_bytes is not None and new_plugin.module_bytes is not None:
        a, b = float(old_plugin.module_bytes), float(new_plugin.module_bytes)
        how = "same sha256" if old_plugin.module_sha256 == new_plugin.module_sha256 else "another build"
        changes.append(Change("module size", "bytes", None, _one(a), _one(b), exact_verdict(a, b), how))
    for o, n in pairs:
        changes.extend(_compare_workers(o, n))
    return changes
