"""meshwasm.bench.compare: a change is called only outside the noise band (made-up figures)."""

from __future__ import annotations

import pytest

from fixtures.bench_reports import meta, run_of
from meshwasm.bench import render
from meshwasm.bench.compare import band_verdict, compare, exact_verdict, tolerance_verdict
from meshwasm.bench.errors import BenchError
from meshwasm.bench.report import Report, build
from meshwasm.bench.runner import Measured
from meshwasm.bench.stats import Spread


def report(run: list[Measured]) -> Report:
    return build(run, meta(), plugin="plugin", against="native", config=None)


def test_band_verdicts() -> None:
    old = Spread(10, 9, 11)
    assert band_verdict(old, Spread(10.5, 10, 12)) == "within noise"
    assert band_verdict(old, Spread(13, 12, 14)) == "worse"
    assert band_verdict(old, Spread(7, 6, 8)) == "better"
    # Higher is better (requests/s).
    assert band_verdict(old, Spread(13, 12, 14), lower_is_better=False) == "better"


def test_tolerance_and_exact_verdicts() -> None:
    assert tolerance_verdict(1.0, 1.0, absolute=0.05, relative=0.2) == "same"
    assert tolerance_verdict(1.0, 1.15, absolute=0.05, relative=0.2) == "within noise"
    assert tolerance_verdict(1.0, 1.3, absolute=0.05, relative=0.2) == "worse"
    assert tolerance_verdict(0.01, 0.05, absolute=0.05, relative=0.2) == "within noise"
    assert exact_verdict(320, 384) == "worse"
    assert exact_verdict(384, 320) == "better"


def test_a_costlier_build_is_worse_and_an_equal_one_within_noise() -> None:
    old = report(run_of([25, 35, 26]))  # adds 5..6 us
    slower = report(run_of([28, 38, 28]))  # adds 8 us every round
    changes = {(c.metric, c.workers): c for c in compare(old, slower)}
    cpu = changes[("added CPU per request", 1)]
    assert cpu.verdict == "worse"
    assert cpu.delta == pytest.approx(3)
    same = report(run_of([26, 35, 25]))  # adds 5..6 us, in another order
    assert {c.verdict for c in compare(old, same) if c.metric == "added CPU per request"} == {"within noise"}


def test_memory_and_module_figures_compare_exactly() -> None:
    old_run, new_run = run_of([25, 35, 25]), run_of([25, 35, 25])
    new_run[1].linear_memory_end = [128 * 1024, 320 * 1024, 448 * 1024]
    new_run[1].module_bytes = 2000
    old_run[1].module_bytes = 1000
    changes = {(c.metric, c.workers): c for c in compare(report(old_run), report(new_run))}
    assert changes[("linear memory, largest VM", 1)].verdict == "worse"
    assert changes[("linear memory, largest VM", 2)].verdict == "same"
    assert changes[("module size", None)].verdict == "worse"
    assert changes[("RSS added", 1)].verdict == "same"


def test_no_common_worker_count_is_an_error() -> None:
    old = report([m for m in run_of([25, 35, 25]) if m.workers == 2])
    new = report([m for m in run_of([25, 35, 25]) if m.workers == 1])
    with pytest.raises(BenchError, match="no result for the plugin at the worker counts"):
        compare(old, new)


def test_the_table_shows_verdicts() -> None:
    changes = compare(report(run_of([25, 35, 26])), report(run_of([28, 38, 28])))
    table = render.compare_table(changes, old_name="old.json")
    cells = [str(cell) for column in table.columns for cell in column._cells]
    assert "worse" in cells
    assert "added CPU per request (us)" in cells
