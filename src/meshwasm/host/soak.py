"""Leak finding: run many streams through one VM and watch its linear memory.

A plugin that keeps per-stream state and never frees it grows its memory with every
stream until the proxy kills it; one that does not levels off once its allocator has
warmed up. :func:`soak` runs a warm-up, then N full streams (context create, request
headers and body, response headers and body, done, log, delete), and reports the
memory before and after in 64 KiB pages, the growth per 1,000 streams, and which
callbacks grew the memory (the host sees every ``memory.grow``) and how often the host
had to allocate in the module for them. Above ``threshold`` pages per 1,000 streams the
report says the plugin leaks, and :meth:`SoakReport.check` raises :class:`LeakFound`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshwasm.errors import MeshwasmError

if TYPE_CHECKING:
    from meshwasm.host.plugin import Plugin

PAGE = 65536
# Pages (64 KiB) per 1,000 streams: 128 bytes a stream. A Go heap grows by up to about 1.6
# pages per 1,000 streams on its way to its steady state (about 8 MiB, which a light plugin
# reaches only after some 70,000 streams); a leak of 1 KiB a stream grows by 15.6.
DEFAULT_THRESHOLD = 2.0


@dataclass(frozen=True)
class Exchange:
    """The request and response each soak stream carries."""

    request_headers: Sequence[tuple[str, str]] = (
        (":method", "GET"),
        (":path", "/"),
        (":authority", "example.com"),
        (":scheme", "http"),
    )
    request_body: bytes | None = None
    response_headers: Sequence[tuple[str, str]] = ((":status", "200"),)
    response_body: bytes | None = None

    def run(self, plugin: Plugin) -> None:
        stream = plugin.http_stream()
        stream.send_request_headers(self.request_headers, self.request_body is None)
        if self.request_body is not None and stream.local_response is None:
            stream.send_request_body(self.request_body, True)
        if stream.local_response is None:
            stream.send_response_headers(self.response_headers, self.response_body is None)
            if self.response_body is not None:
                stream.send_response_body(self.response_body, True)
        stream.complete()


@dataclass(frozen=True)
class CallbackGrowth:
    callback: str
    grown_bytes: int
    host_allocations: int

    @property
    def pages(self) -> float:
        return self.grown_bytes / PAGE


@dataclass
class SoakReport:
    source: str
    streams: int
    warmup: int
    pages_before: int  # after the warm-up
    pages_middle: int  # after half of the measured streams
    pages_after: int
    threshold: float
    seconds: float
    callbacks: list[CallbackGrowth] = field(default_factory=list)
    settled: bool = True  # memory went flat during the warm-up

    @property
    def growth_pages(self) -> int:
        return self.pages_after - self.pages_before

    @property
    def pages_per_1000(self) -> float:
        return 1000 * self.growth_pages / self.streams if self.streams else 0.0

    @property
    def leaking(self) -> bool:
        """Over the threshold, and growing in both halves of the run: a collector's heap grows
        in steps until it settles (the warm-up waits for that), a leak keeps growing."""
        return (
            self.pages_per_1000 > self.threshold
            and self.pages_middle > self.pages_before
            and self.pages_after > self.pages_middle
        )

    def text(self) -> str:
        rate = f"{self.pages_per_1000:.2f} pages per 1,000 streams"
        if self.leaking:
            verdict = f"LEAK: {rate}, over the threshold of {self.threshold:g}, growing in both halves"
        elif self.pages_per_1000 > self.threshold:
            verdict = f"no leak: {rate}, but only in one half of the run (a heap settling, not a leak)"
        else:
            verdict = f"no leak: {rate} (threshold {self.threshold:g})"
        warmup = f"{self.warmup} to warm up" + ("" if self.settled else " (memory never went flat)")
        lines = [
            f"soak of {self.source}: {self.streams} streams after {warmup}, {self.seconds:.1f} s",
            f"linear memory: {self.pages_before} -> {self.pages_middle} -> {self.pages_after} pages"
            f" ({self.growth_pages:+d} pages, {self.growth_pages * PAGE:+,} bytes)",
            verdict,
        ]
        grown = [c for c in self.callbacks if c.grown_bytes or c.host_allocations]
        if grown:
            lines.append("what allocated, per callback, over the measured streams:")
            for c in sorted(grown, key=lambda c: (-c.grown_bytes, -c.host_allocations, c.callback)):
                grew = f"memory.grow {c.pages:+8.1f} pages"
                lines.append(f"  {c.callback:40} {grew}   host allocations {c.host_allocations}")
        return "\n".join(lines)

    def check(self) -> SoakReport:
        if self.leaking:
            raise LeakFound(self)
        return self


class LeakFound(MeshwasmError):
    """The plugin's linear memory kept growing with the number of streams."""

    def __init__(self, report: SoakReport):
        self.report = report
        grew = [c.callback for c in sorted(report.callbacks, key=lambda c: -c.grown_bytes) if c.grown_bytes]
        where = f" (memory grew in {', '.join(grew[:3])})" if grew else ""
        super().__init__(
            f"{report.source} leaks: {report.pages_per_1000:.2f} pages (64 KiB) per 1,000 streams{where}\n"
            + report.text(),
            hint="memory a callback allocates for a stream must be freed by proxy_on_delete",
        )


def soak(
    plugin: Plugin,
    streams: int = 10_000,
    *,
    exchange: Exchange | None = None,
    warmup: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_warmup: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SoakReport:
    """Warm up, then run ``streams`` streams through ``plugin`` and report its memory.

    Allocators and garbage collectors take their memory early, in steps (a Go plugin's heap
    grows to about 8 MiB, a step every few thousand streams, before its collector settles):
    unless ``warmup`` gives a count, streams run until memory has stayed flat for four times
    the longest gap seen between two grows (and at least max(2000, streams / 5) streams; three
    times that if it has not grown at all yet), at most ``max_warmup`` streams (by default the
    larger of 50,000 and five times ``streams``); only then is growth measured.
    """
    exchange = exchange or Exchange()
    state = plugin.state
    settled = True
    if warmup is not None:
        for _ in range(warmup):
            exchange.run(plugin)
        warmed = warmup
    else:
        least_flat = max(2000, streams // 5)
        limit = max_warmup if max_warmup is not None else max(50_000, 5 * streams)
        size, last_growth, longest_gap, warmed = state.mem.size, 0, 0, 0
        while warmed < limit:
            exchange.run(plugin)
            warmed += 1
            if state.mem.size != size:
                size = state.mem.size
                longest_gap = max(longest_gap, warmed - last_growth)
                last_growth = warmed
            else:
                needed = max(4 * longest_gap, least_flat) if longest_gap else 3 * least_flat
                if warmed - last_growth >= needed:
                    break
            if progress is not None and warmed % 5000 == 0:
                progress(-warmed)
        else:
            settled = False
    state.grown_by_callback.clear()
    state.host_allocations_by_callback.clear()
    state.track_allocations = True
    pages_before = state.mem.size // PAGE
    pages_middle = pages_before
    started = time.perf_counter()
    try:
        for done in range(1, streams + 1):
            exchange.run(plugin)
            if done == streams // 2:
                pages_middle = state.mem.size // PAGE
            if progress is not None and done % 1000 == 0:
                progress(done)
    finally:
        state.track_allocations = False
    seconds = time.perf_counter() - started
    names = set(state.grown_by_callback) | set(state.host_allocations_by_callback)
    grown, allocated = state.grown_by_callback, state.host_allocations_by_callback
    callbacks = [CallbackGrowth(n, grown.get(n, 0), allocated.get(n, 0)) for n in sorted(names)]
    return SoakReport(
        source=plugin.source,
        streams=streams,
        warmup=warmed,
        pages_before=pages_before,
        pages_middle=pages_middle,
        pages_after=state.mem.size // PAGE,
        threshold=threshold,
        seconds=seconds,
        callbacks=callbacks,
        settled=settled,
    )
