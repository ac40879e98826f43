"""meshwasm.bench.chart: the PNG, and a clear refusal without matplotlib.

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


def test_the_report_chart_is_a_png(tmp_path: Path) -> None:
    out = tmp_path / "r.png"
    chart.report_chart(build(run_of([25, 35, 25]), meta(), plugin="plugin", against=None, config=None), out)
    assert out.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]  # no temporary file left


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
