"""meshwasm.bench.report: the arithmetic the tables rest on (made-up figures, no timing), the
derived memory per worker, and reading a report back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.bench_reports import MIB, meta, run_of
from meshwasm.bench import render
from meshwasm.bench.errors import BenchError
from meshwasm.bench.report import build, load, summarize, worker_memory


def test_costs_are_paired_round_by_round_against_no_filter_and_the_baseline() -> None:
    results = summarize(run_of([25, 35, 25]), against="native")
    plugin = next(r for r in results if r.key == "plugin" and r.workers == 1)
    # Round 2 is slower for everyone: paired differences cancel it.
    assert (plugin.added_us.median, plugin.added_us.min, plugin.added_us.max) == (5, 5, 5)  # type: ignore[union-attr]
    assert plugin.vs_against_us is not None
    assert plugin.vs_against_us.median == 3
    assert plugin.cpu_us.median == 25
    assert plugin.start_added_s == pytest.approx(0.3)
    assert plugin.rss_added_bytes == 25 * MIB
    assert plugin.linear_memory_end == [128 * 1024, 320 * 1024, 384 * 1024]
    none = next(r for r in results if r.key == "none" and r.workers == 1)
    assert none.added_us is None
    assert none.start_added_s is None
    native = next(r for r in results if r.key == "native" and r.workers == 1)
    assert native.vs_against_us is None  # the baseline is not held against itself


def test_linear_memory_is_withheld_when_proc_disagrees_with_envoys_count() -> None:
    run = run_of([25, 35, 25])
    run[1].vm_count = 4  # Envoy counts 4 VMs, /proc shows 3: not attributable
    plugin = summarize(run)[1]
    assert plugin.linear_memory_end is None


def test_memory_per_worker_is_the_rss_step_between_worker_counts() -> None:
    memory = {m.key: m for m in worker_memory(summarize(run_of([25, 35, 25])))}
    assert memory["none"].per_worker_bytes == 2 * MIB
    assert memory["none"].added_per_worker_bytes is None
    assert memory["plugin"].per_worker_bytes == 4 * MIB
    assert memory["plugin"].added_per_worker_bytes == 2 * MIB  # 4 MiB minus Envoy's own 2
    assert memory["plugin"].added_fixed_bytes == 23 * MIB  # 25 MiB added at 1 worker, 2 of them per worker


def test_memory_per_worker_needs_two_worker_counts() -> None:
    one = [m for m in run_of([25, 35, 25]) if m.workers == 1]
    assert worker_memory(summarize(one)) == []


def test_report_round_trips_through_json(tmp_path: Path) -> None:
    report = build(run_of([25, 35, 25]), meta(), plugin="plugin", against="native", config='{"a": 1}')
    path = tmp_path / "r.json"
    path.write_text(report.to_json())
    assert json.loads(path.read_text())["schema"] == "meshwasm.bench/1"
    assert load(path) == report


def test_load_names_what_is_wrong_with_a_file(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no such file"):
        load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BenchError, match="is not a JSON file"):
        load(bad)
    bad.write_text(json.dumps({"meta": {}, "rows": []}))  # bench/dataplane.py's own format
    with pytest.raises(BenchError, match="not a meshwasm bench report"):
        load(bad)
    report = json.loads(
        build(run_of([25, 35, 25]), meta(), plugin="plugin", against=None, config=None).to_json()
    )
    report["results"][0]["cpu_us"] = {"median": "fast"}
    bad.write_text(json.dumps(report))
    with pytest.raises(BenchError, match=r"not a valid bench report at results\.0\.cpu_us"):
        load(bad)


def test_headline_gives_a_ratio_only_to_a_cost_above_the_noise() -> None:
    clear = build(run_of([25, 35, 25]), meta(), plugin="plugin", against="native", config=None)
    lines = render.summary_lines(clear)
    assert any("adds 5.0 (5.0..5.0) us" in line and "(2.5x its added cost)" in line for line in lines)
    # The native filter's added cost straddles zero: no ratio.
    noisy = build(
        run_of([25, 35, 25], native_cpu=[22, 29, 21]), meta(), plugin="plugin", against="native", config=None
    )
    one_worker = [line for line in render.summary_lines(noisy) if "with 1 worker;" in line]
    assert one_worker
    assert not any("its added cost" in line for line in one_worker)


def test_summary_notes_a_busy_machine() -> None:
    quiet = build(run_of([25, 35, 25]), meta(), plugin="plugin", against=None, config=None)
    busy = build(
        run_of([25, 35, 25]), meta(loadavg_end=(9.0, 5.0, 3.0)), plugin="plugin", against=None, config=None
    )
    assert "load average 1.00 at start, 1.50 at end" in "\n".join(render.summary_lines(quiet))
    assert not any("busy" in line for line in render.summary_lines(quiet))
    assert any("the machine was busy" in line for line in render.summary_lines(busy))
