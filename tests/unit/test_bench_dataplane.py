"""The pure parts of bench/dataplane.py: reading wrk's report and summarizing rounds.

No timing here: the numbers are made up; what is checked is the arithmetic
the table rests on (paired differences against "no filter", ratios, medians).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dataplane.py"

WRK_REPORT = """Running 3s test @ http://127.0.0.1:40000/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   190.12us   80.20us   3.10ms   91.00%
    Req/Sec    42.10k     1.20k   44.00k    70.00%
  Latency Distribution
     50%  170.00us
     75%  200.00us
     90%  250.00us
     99%    1.20ms
  125612 requests in 3.00s, 11.86MB read
Requests/sec:  41870.12
Transfer/sec:      3.95MB
"""


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


def test_parse_wrk_reads_count_rate_and_p99(dataplane: ModuleType) -> None:
    result = dataplane.parse_wrk(WRK_REPORT)
    assert result.requests == 125612
    assert result.rps == pytest.approx(41870.12)
    assert result.p99_ms == pytest.approx(1.2)
    assert dataplane.parse_wrk(WRK_REPORT.replace("1.20ms", "950.00us")).p99_ms == pytest.approx(0.95)


def test_parse_wrk_refuses_a_report_without_numbers(dataplane: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="cannot read wrk"):
        dataplane.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_summary_pairs_rounds_against_no_filter(dataplane: ModuleType, tmp_path: Path) -> None:
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm" + bytes(96))
    variants = [
        dataplane.Variant("none", "no filter", [], adds_header=False),
        dataplane.Variant("header_mutation", "native", []),
        dataplane.Variant("floor", "floor", [], module=module),
        dataplane.Variant("zig", "zig", [], module=module),
    ]

    def samples(*cpu: float) -> list[object]:
        return [dataplane.Sample(c, 1000.0, 1.0, 100) for c in cpu]

    # Round 2 is slower for everyone: paired differences cancel it.
    rows = dataplane.summarize(
        variants,
        {
            "none": samples(20, 30, 20),
            "header_mutation": samples(22, 32, 22),
            "floor": samples(24, 34, 24),
            "zig": samples(25, 35, 25),
        },
        {"none": 0.1, "header_mutation": 0.1, "floor": 0.1, "zig": 0.15},
    )
    by_key = {row.key: row for row in rows}
    assert by_key["none"].added_us is None
    assert by_key["zig"].added_us == pytest.approx(5)
    assert (by_key["zig"].added_min, by_key["zig"].added_max) == (pytest.approx(5), pytest.approx(5))
    assert by_key["zig"].ratio_floor == pytest.approx(5 / 4)
    assert by_key["zig"].ratio_native == pytest.approx(5 / 2)
    assert by_key["zig"].start_added_s == pytest.approx(0.05)
    assert by_key["zig"].module_bytes == 100
    assert by_key["zig"].cpu_us == pytest.approx(25)
    assert "fast add-header added CPU = 1.25x the floor's (goal <= 1.3x): met" in dataplane.goals(rows)
