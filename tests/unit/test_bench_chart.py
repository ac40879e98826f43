"""meshwasm.bench.chart: a clear refusal without matplotlib (the PNG itself is checked by
tests/integration/test_bench_envoy.py, through the CLI).

matplotlib is installed here (the `bench` extra), so its absence is simulated by hiding it
from the import system (``sys.modules["matplotlib"] = None``): a real environment without it
cannot be had in the same test run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fixtures.bench_reports import meta, run_of
from meshwasm.bench import chart
from meshwasm.bench.report import build


def test_without_matplotlib_the_refusal_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(chart.ChartUnavailable, match="matplotlib is not installed") as refused:
        chart.require_matplotlib()
    assert "meshwasm[bench]" in str(refused.value)
    with pytest.raises(chart.ChartUnavailable):
        chart.report_chart(
            build(run_of([25, 35, 25]), meta(), plugin="plugin", against=None, config=None),
            tmp_path / "r.png",
        )
    assert not (tmp_path / "r.png").exists()
