"""The bench's report: medians and spreads per variant and worker count, differences against
"no filter" and the chosen baseline in the same round, memory per worker; and its JSON (pure).

Memory per worker is derived, not read: Envoy has one process, so its RSS is measured with the
fewest and the most workers asked for, and one more worker costs the difference divided by the
workers added (its thread, event loop, connection buffers, and for a Wasm filter its own VM
clone and linear memory). The plugin's share is that figure minus the no-filter Envoy's, and its
fixed share (the VMs on the main thread, the compiled module) is what remains at one worker.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meshwasm.bench.errors import BenchError
from meshwasm.bench.measurements import Measured, Meta, Sample
from meshwasm.bench.stats import Spread, paired_differences
from meshwasm.errors import ExitCode

SCHEMA: Literal["meshwasm.bench/1"] = "meshwasm.bench/1"
BASELINE = "none"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Result(_Model):
    """One variant at one worker count."""

    key: str
    label: str
    workers: int
    cpu_us: Spread  # Envoy CPU per request
    added_us: Spread | None  # minus no filter, round by round
    vs_against_us: Spread | None  # minus the --against baseline, round by round
    rps: Spread
    p50_ms: Spread
    p99_ms: Spread
    start_s: float  # process start to the first 200
    start_added_s: float | None  # minus no filter's
    rss_bytes: int  # after the last round
    rss_added_bytes: int | None  # minus no filter's
    vm_count: int | None  # Envoy's wasm.wasm_vm_count
    linear_memory_start: list[int] | None  # bytes per VM at the first 200; None: not attributable
    linear_memory_end: list[int] | None  # after the last round
    module_bytes: int | None
    module_sha256: str | None
    samples: list[Sample]


class WorkerMemory(_Model):
    """What one more worker costs in RSS, derived from two worker counts (see the module doc)."""

    key: str
    label: str
    per_worker_bytes: float  # Envoy with this variant
    added_per_worker_bytes: float | None  # the variant's share (minus no filter's)
    added_fixed_bytes: float | None  # the variant's share that does not grow with workers


class Report(_Model):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_id: Literal["meshwasm.bench/1"] = Field(default=SCHEMA, alias="schema")
    plugin: str  # the key of the variant under test
    against: str | None  # the key of the baseline variant, if any
    config: str | None  # the plugin's configuration
    results: list[Result]
    worker_memory: list[WorkerMemory]
    meta: Meta

    def result(self, key: str, workers: int) -> Result | None:
        return next((r for r in self.results if r.key == key and r.workers == workers), None)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=1)


def _spread_vs(samples: Sequence[Sample], reference: Sequence[Sample] | None) -> Spread | None:
    if reference is None:
        return None
    return Spread.of(
        paired_differences([s.cpu_us_per_request for s in samples], [s.cpu_us_per_request for s in reference])
    )


def _linear_memory(memories: list[int], vm_count: int | None) -> list[int] | None:
    """The VMs' linear memories, when ``/proc`` found exactly the VMs Envoy counts."""
    if vm_count is None:
        return memories if not memories else None
    return sorted(memories) if len(memories) == vm_count else None


def summarize(
    measured: Sequence[Measured], *, baseline: str = BASELINE, against: str | None = None
) -> list[Result]:
    """Medians and spreads; each variant's cost against ``baseline`` (and ``against``) measured
    at the same worker count in the same rounds."""
    by_key = {(m.key, m.workers): m for m in measured}
    results = []
    for m in measured:
        base = by_key.get((baseline, m.workers)) if m.key != baseline else None
        other = by_key.get((against, m.workers)) if against and m.key not in (against, baseline) else None
        results.append(
            Result(
                key=m.key,
                label=m.label,
                workers=m.workers,
                cpu_us=Spread.of(s.cpu_us_per_request for s in m.samples),
                added_us=_spread_vs(m.samples, base.samples if base else None),
                vs_against_us=_spread_vs(m.samples, other.samples if other else None),
                rps=Spread.of(s.rps for s in m.samples),
                p50_ms=Spread.of(s.p50_ms for s in m.samples),
                p99_ms=Spread.of(s.p99_ms for s in m.samples),
                start_s=m.start_s,
                start_added_s=m.start_s - base.start_s if base else None,
                rss_bytes=m.rss_end_bytes,
                rss_added_bytes=m.rss_end_bytes - base.rss_end_bytes if base else None,
                vm_count=m.vm_count,
                linear_memory_start=_linear_memory(m.linear_memory_start, m.vm_count),
                linear_memory_end=_linear_memory(m.linear_memory_end, m.vm_count),
                module_bytes=m.module_bytes,
                module_sha256=m.module_sha256,
                samples=list(m.samples),
            )
        )
    return results


def worker_memory(results: Sequence[Result], *, baseline: str = BASELINE) -> list[WorkerMemory]:
    """RSS per extra worker for each variant, from its fewest- and most-worker Envoys."""
    counts = sorted({r.workers for r in results})
    if len(counts) < 2:
        return []
    low, high = counts[0], counts[-1]
    by_key = {(r.key, r.workers): r for r in results}

    def per_worker(key: str) -> float | None:
        a, b = by_key.get((key, low)), by_key.get((key, high))
        return None if a is None or b is None else (b.rss_bytes - a.rss_bytes) / (high - low)

    base = per_worker(baseline)
    out = []
    for key, label in dict.fromkeys((r.key, r.label) for r in results):
        own = per_worker(key)
        if own is None:
            continue
        added = own - base if base is not None and key != baseline else None
        at_low = by_key[(key, low)].rss_added_bytes
        fixed = at_low - added * low if added is not None and at_low is not None else None
        out.append(
            WorkerMemory(
                key=key,
                label=label,
                per_worker_bytes=own,
                added_per_worker_bytes=added,
                added_fixed_bytes=fixed,
            )
        )
    return out


def build(
    measured: Sequence[Measured], meta: Meta, *, plugin: str, against: str | None, config: str | None
) -> Report:
    results = summarize(measured, against=against)
    return Report(
        plugin=plugin,
        against=against,
        config=config,
        results=results,
        worker_memory=worker_memory(results),
        meta=meta,
    )


def load(path: Path) -> Report:
    """A report written by ``--json``; a clear error for anything else."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{path}: no such file", exit_code=ExitCode.NOT_FOUND) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"{path} is not a JSON file: {exc}", exit_code=ExitCode.USAGE) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise BenchError(
            f"{path} is not a meshwasm bench report (schema {found!r}, want {SCHEMA!r})",
            hint="pass a file written by `meshwasm bench ... --json FILE`",
            exit_code=ExitCode.USAGE,
        )
    try:
        return Report.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BenchError(
            f"{path}: not a valid bench report at {where}: {first['msg']}", exit_code=ExitCode.USAGE
        ) from None
