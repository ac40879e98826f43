"""Prometheus metrics of one fetcher instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class FetcherMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cache_hits = Counter("wasmfetcher_cache_hits", "Requests answered from the cache.", registry=r)
        self.cache_misses = Counter(
            "wasmfetcher_cache_misses", "Requests that needed a pull (or waited for one).", registry=r
        )
        self.pulls = Counter(
            "wasmfetcher_pulls",
            "Pulls from registries and http hosts, by source kind and result.",
            ["kind", "result"],
            registry=r,
        )
        self.pull_duration = Histogram(
            "wasmfetcher_pull_duration_seconds",
            "Duration of pulls (resolve, download, verify, store).",
            ["kind"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.stale_served = Counter(
            "wasmfetcher_stale_served",
            "Requests answered with the cached module because re-resolving or re-pulling failed.",
            registry=r,
        )
        self.backoff_answers = Counter(
            "wasmfetcher_backoff_answers",
            "Requests answered with a recent pull failure instead of pulling again (failure back-off).",
            registry=r,
        )
        self.bytes_served = Counter("wasmfetcher_served_bytes", "Module bytes sent to clients.", registry=r)
        self.responses = Counter(
            "wasmfetcher_responses", "Responses to /fetch requests by status.", ["status"], registry=r
        )
        self.evictions = Counter(
            "wasmfetcher_cache_evictions", "Cache entries removed, by reason.", ["reason"], registry=r
        )
        self.cache_bytes = Gauge("wasmfetcher_cache_bytes", "Bytes of modules in the cache.", registry=r)
        self.cache_entries = Gauge("wasmfetcher_cache_entries", "Modules in the cache.", registry=r)
        self.pulls_inflight = Gauge(
            "wasmfetcher_pulls_inflight", "Pulls in progress (waiting for a slot or running).", registry=r
        )
        self.serves_aborted = Counter(
            "wasmfetcher_serves_aborted",
            "Responses cut short because the module file changed while it was being sent.",
            registry=r,
        )
