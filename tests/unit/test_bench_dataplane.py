"""bench/dataplane.py, the issue-8 view over meshwasm.bench: ratios to the native filter and the
Wasm floors, and the goals. No timing here: the numbers are made up; what is checked is the
arithmetic the table rests on."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fixtures.bench_reports import measured
from meshwasm.bench.report import summarize

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dataplane.py"


@pytest.fixture(scope="module")
def dataplane() -> ModuleType:
    name = "bench_dataplane"
    spec = importlib.util.spec_from_file_location(name, BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_rows_hold_each_variant_against_no_filter_the_native_filter_and_the_floor(
    dataplane: ModuleType,
) -> None:
    # Round 2 is slower for everyone: paired differences cancel it.
    run = [
        measured("none", 1, [20, 30, 20], start=0.1),
        measured("header_mutation", 1, [22, 32, 22], start=0.1),
        measured("floor", 1, [24, 34, 24], start=0.1),
        measured("zig", 1, [25, 35, 25], start=0.15),
    ]
    run[3].module_bytes = 100
    rows = {row.key: row for row in dataplane.rows(summarize(run))}
    assert rows["none"].added_us is None
    assert rows["zig"].added_us == pytest.approx(5)
    assert (rows["zig"].added_min, rows["zig"].added_max) == (pytest.approx(5), pytest.approx(5))
    assert rows["zig"].ratio_floor == pytest.approx(5 / 4)
    assert rows["zig"].ratio_native == pytest.approx(5 / 2)
    assert rows["zig"].ratio_floor_both is None
    assert rows["zig"].start_added_s == pytest.approx(0.05)
    assert rows["zig"].module_bytes == 100
    assert rows["zig"].cpu_us == pytest.approx(25)
    goals = dataplane.goals(list(rows.values()))
    assert "fast add-header added CPU = 1.25x the floor's (goal <= 1.3x): met" in goals
    assert "fast add-header module = 100 bytes (goal < 100 KB): met" in goals
    assert "zig" not in dataplane.table(list(rows.values())).split("\n")[0]
