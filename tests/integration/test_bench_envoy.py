"""`meshwasm bench` with the real Envoy and wrk: a complete, sane report for add-header, linear
memory read right for a module of known size, and each bad input named.

Runs are short (one round of one second, no warm-up): nothing here asserts a timing, only that
every figure is there and consistent (requests served, CPU spent, VM counts, page sizes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.bench_reports import meta, run_of
from meshwasm.bench import report as bench_report
from meshwasm.bench import runner
from meshwasm.bench import variants as v
from meshwasm.bench.report import build
from meshwasm.toolchain import build_plugin

pytestmark = pytest.mark.envoy

ROOT = Path(__file__).resolve().parents[2]
QUICK = ("--rounds", "1", "--seconds", "1", "--warmup", "0")
KIB = 1024


@pytest.fixture(scope="module")
def zig_add_header(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """build/add-header-zig.wasm as `make` hands it over, else built once now."""
    given = os.environ.get("MESHWASM_ADD_HEADER_ZIG_WASM")
    if given and Path(given).is_file():
        return Path(given)
    return build_plugin(ROOT / "plugins" / "add-header-zig", tmp_path_factory.mktemp("zig") / "a.wasm").path


def bench(*args: str, tmp: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The real `meshwasm bench`; kept Envoy logs land in ``tmp`` (TMPDIR)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "meshwasm"), "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp)},
    )


def test_add_header_gets_a_complete_report_and_a_comparison(zig_add_header: Path, tmp_path: Path) -> None:
    out, png, old = tmp_path / "report.json", tmp_path / "report.png", tmp_path / "old.json"
    # An earlier build's report, made up: its plugin costs 5 us per request at 1 and 2 workers.
    earlier = run_of([25, 35, 25])
    for measured in earlier:
        measured.module_bytes = 1000 if measured.key == "plugin" else None
    old.write_text(build(earlier, meta(), plugin="plugin", against="native", config=None).to_json())
    config = '{"header": "x-ingress-header", "value": "v"}'
    run = bench(
        str(zig_add_header), "--config", config, *QUICK,
        "--json", str(out), "--png", str(png), "--compare", str(old), tmp=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    for text in ("Envoy CPU and latency", "Memory (after the run) and start", "load average"):
        assert text in run.stdout
    assert f"{zig_add_header.name} adds" in run.stdout
    assert f"What changed since {old}" in run.stdout
    assert "added CPU per request (us)" in run.stdout
    assert "module size (bytes)" in run.stdout
    assert "another build" in run.stdout  # the made-up report has no module digest
    assert png.read_bytes().startswith(b"\x89PNG")

    report = bench_report.load(out)
    assert report.config == config
    assert {(r.key, r.workers) for r in report.results} == {
        (key, workers) for key in ("none", "plugin", "native") for workers in (1, 2)
    }
    for r in report.results:
        assert len(r.samples) == 1
        assert r.samples[0].requests > 0
        assert r.cpu_us.median > 0
        assert r.rps.median > 0
        assert 0 < r.p50_ms.median <= r.p99_ms.median
        assert r.start_s > 0
        assert r.rss_bytes > 10 * KIB * KIB
        if r.key == "plugin":
            # Envoy's count: one VM per worker, one on the main thread, the base one.
            assert r.vm_count == r.workers + 2
            assert r.linear_memory_end is not None
            assert len(r.linear_memory_end) == r.vm_count
            assert all(size > 0 and size % (64 * KIB) == 0 for size in r.linear_memory_end)
            assert r.module_bytes == zig_add_header.stat().st_size
            assert r.added_us is not None
            assert r.vs_against_us is not None
        else:
            assert r.linear_memory_end == []
            assert r.module_bytes is None
    assert {m.key for m in report.worker_memory} == {"none", "plugin", "native"}
    assert report.meta.workers == [1, 2]
    assert len(report.meta.loadavg_start) == 3


def test_linear_memory_is_read_right_for_a_module_of_known_size(
    host_wat_modules: dict[str, Path], tmp_path: Path
) -> None:
    """bench_memory.wat: 2 pages, 5 once started, 6 once it served a request (see the file)."""
    variant = v.wasm_plugin("plugin", "memory", host_wat_modules["bench_memory"], configuration=None)
    settings = runner.Settings(rounds=1, seconds=1, warmup=0)
    [measured], _ = runner.run([variant], workers=[1], settings=settings, workdir=tmp_path)
    assert measured.vm_count == 3
    # The base VM is never started; the main thread's is; the worker's served the first 200.
    assert sorted(measured.linear_memory_start) == [128 * KIB, 320 * KIB, 384 * KIB]
    assert sorted(measured.linear_memory_end) == [128 * KIB, 320 * KIB, 384 * KIB]


def _contract_refusal() -> tuple[str, str]:
    contract = json.loads((ROOT / "plugins" / "add-header" / "testdata" / "contract.json").read_text())
    case = next(c for c in contract["invalid"] if c["name"] == "missing header")
    return case["config"], case["critical"]


def test_not_wasm_is_named_before_any_envoy(tmp_path: Path) -> None:
    module = tmp_path / "plugin.wasm"
    module.write_text("#!/bin/sh\n")
    run = bench(str(module), *QUICK, tmp=tmp_path)
    assert run.returncode == 6
    assert f"{module} is not a WebAssembly module" in run.stderr
    assert "starting Envoy" not in run.stderr


def test_a_refused_config_is_named_with_the_plugins_own_line(zig_add_header: Path, tmp_path: Path) -> None:
    config, critical = _contract_refusal()
    run = bench(
        str(zig_add_header), "--config", config, *QUICK, "--workers", "1", "--against", "none", tmp=tmp_path
    )
    assert run.returncode == 2, run.stderr
    assert f"the plugin refused its configuration: {critical}" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_plugin_trapping_on_every_request_is_named(
    host_wat_modules: dict[str, Path], tmp_path: Path
) -> None:
    run = bench(
        str(host_wat_modules["bench_trap"]), *QUICK, "--workers", "1", "--against", "none", tmp=tmp_path
    )
    assert run.returncode == 1, run.stderr
    assert "bench_trap.wasm: the first request failed with status 503" in run.stderr
    assert "Envoy logged: Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable" in (
        run.stderr
    )


def test_a_plugin_failing_under_load_is_named(host_wat_modules: dict[str, Path], tmp_path: Path) -> None:
    run = bench(
        str(host_wat_modules["bench_trap_later"]), *QUICK, "--workers", "1", "--against", "none", tmp=tmp_path
    )
    assert run.returncode == 1, run.stderr
    assert "requests failed with status 503" in run.stderr
    assert "proxy_on_request_headers failed: Uncaught RuntimeError: unreachable" in run.stderr


def test_an_envoy_that_will_not_start_is_named(host_wat_modules: dict[str, Path], tmp_path: Path) -> None:
    run = bench(
        str(host_wat_modules["bench_missing_import"]),
        *QUICK,
        "--workers",
        "1",
        "--against",
        "none",
        tmp=tmp_path,
    )
    assert run.returncode == 1, run.stderr
    assert "exited with status 1 before serving" in run.stderr
    assert "Failed to load Wasm module due to a missing import: env.proxy_no_such_call" in run.stderr
