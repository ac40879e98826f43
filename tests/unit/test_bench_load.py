"""meshwasm.bench.load: reading wrk's report, and wrk's command line."""

from __future__ import annotations

import pytest

from meshwasm.bench.errors import BenchError
from meshwasm.bench.load import parse_wrk, wrk_argv

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

FAILING = WRK_REPORT.replace(
    "  125612 requests in 3.00s, 11.86MB read\n",
    "  125612 requests in 3.00s, 11.86MB read\n"
    "  Socket errors: connect 0, read 3, write 0, timeout 2\n"
    "  Non-2xx or 3xx responses: 125612\n",
)


def test_reads_count_rate_and_percentiles() -> None:
    result = parse_wrk(WRK_REPORT)
    assert result.requests == 125612
    assert result.rps == pytest.approx(41870.12)
    assert result.p50_ms == pytest.approx(0.17)
    assert result.p99_ms == pytest.approx(1.2)
    assert (result.non_2xx, result.socket_errors) == (0, 0)
    assert parse_wrk(WRK_REPORT.replace("1.20ms", "1.50s")).p99_ms == pytest.approx(1500)


def test_reads_failed_responses_and_socket_errors() -> None:
    result = parse_wrk(FAILING)
    assert result.non_2xx == 125612
    assert result.socket_errors == 5


def test_refuses_a_report_without_numbers() -> None:
    with pytest.raises(BenchError, match="cannot read wrk"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_argv_pins_and_passes_headers() -> None:
    argv = wrk_argv("http://h/", seconds=2, connections=4, headers=["x-a: 1"], core=1)
    assert argv[:3] == ["taskset", "-c", "1"]
    assert argv[3:] == ["wrk", "-t1", "-c4", "-d2s", "--latency", "-H", "x-a: 1", "http://h/"]
    assert wrk_argv("http://h/", seconds=1, connections=1)[0] == "wrk"
