"""What a bench run measured, as plain data (what :mod:`~meshwasm.bench.runner` returns and
:mod:`~meshwasm.bench.report` summarizes)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One variant's load in one round."""

    cpu_us_per_request: float  # Envoy's user + system CPU over the load / requests completed
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: int = 0


@dataclass
class Measured:
    """Everything measured about one variant at one worker count."""

    key: str
    label: str
    workers: int
    start_s: float
    samples: list[Sample] = field(default_factory=list)
    rss_start_bytes: int = 0  # at the first 200
    rss_end_bytes: int = 0  # after the last round
    linear_memory_start: list[int] = field(default_factory=list)  # bytes per Wasm VM
    linear_memory_end: list[int] = field(default_factory=list)
    vm_count: int | None = None  # Envoy's wasm.wasm_vm_count after the last round
    module_bytes: int | None = None
    module_sha256: str | None = None


@dataclass(frozen=True)
class Meta:
    rounds: int
    seconds: int
    warmup: int
    connections: int
    workers: list[int]
    envoy: str
    envoy_version: str
    envoy_core: int | None
    load_core: int | None
    cpus: int
    started: str  # UTC, ISO 8601
    loadavg_start: tuple[float, float, float]
    loadavg_end: tuple[float, float, float]
    duration_s: float
