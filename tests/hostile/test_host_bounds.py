"""Hostile modules against meshwasm.host (issue 15, items 12 and 13): bounded time and memory,
and a named error for each, never a raw wasmtime, ctypes or UnicodeDecodeError, nor a hang.

Each case runs in a fresh process (tests/fixtures/hostile_host.py) that reports the error it
ended with, its wall time and its peak RSS from /proc; the child's data segment is capped, so
a host that allocated gigabytes fails there rather than on the machine.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import wasmtime

from fixtures.hostile_host import ROOT, run_case

RSS_BOUND_MB = 400  # Python, wasmtime and a small module need about 100


def _module(body: str, *, memory: int = 2, imports: str = "", extra: str = "") -> str:
    """A proxy-wasm module (WAT) whose on_request_headers (and on_vm_start, via $start_hook) run ``body``."""
    return f"""(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  {imports}
  (memory (export "memory") {memory})
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $ptr))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    {body}
    (i32.const 0))
  {extra}
)"""


FD_WRITE = (
    '(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))'
)


GET_PROPERTY = '(import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))'


def _wasm_file(tmp_path: Path, name: str, wat: str) -> Path:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path


def _stream_case(wasm: Path, options: str = "") -> str:
    return (
        "from meshwasm.host import Plugin\n"
        f"plugin = Plugin.load({str(wasm)!r}{', ' + options if options else ''})\n"
        "plugin.http_stream().send_request_headers({':path': '/'})\n"
    )


def test_fd_write_of_one_megabyte_named_4096_times(tmp_path):
    """Every iovec names the same megabyte: 4 GiB the host would have to copy."""
    wat = _module(
        """
    (local $i i32)
    (block $done (loop $fill
      (br_if $done (i32.ge_u (local.get $i) (i32.const 4096)))
      (i32.store (i32.add (i32.const 2000000) (i32.mul (local.get $i) (i32.const 8))) (i32.const 65536))
      (i32.store (i32.add (i32.const 2000004) (i32.mul (local.get $i) (i32.const 8))) (i32.const 1048576))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $fill)))
    (drop (call $fd_write (i32.const 1) (i32.const 2000000) (i32.const 4096) (i32.const 1000)))""",
        memory=40,
        imports=FD_WRITE,
    )
    result = run_case(_stream_case(_wasm_file(tmp_path, "fd_write", wat)))
    assert (result.module, result.error) == ("meshwasm.host.errors", "ResourceLimitError"), result
    assert "fd_write of 4096 iovecs needs 4294967296 bytes" in result.message
    assert result.seconds < 30
    assert result.peak_rss_mb < RSS_BOUND_MB


def test_stdout_without_newlines_is_linear(tmp_path):
    """100,000 writes of 16 bytes, none with a newline, in one callback (the first host joined
    them into a growing line, copying it on every write: 80 GB of copying here)."""
    wat = _module(
        """
    (local $i i32)
    (i32.store (i32.const 3000) (i32.const 4000))
    (i32.store (i32.const 3004) (i32.const 16))
    (block $done (loop $write
      (br_if $done (i32.ge_u (local.get $i) (i32.const 100000)))
      (drop (call $fd_write (i32.const 1) (i32.const 3000) (i32.const 1) (i32.const 3008)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $write)))""",
        imports=FD_WRITE,
        extra='(data (i32.const 4000) "sixteen bytes.. ")',
    )
    code = _stream_case(_wasm_file(tmp_path, "stdout", wat), "deadline=120") + (
        "assert len(plugin.logs) == 100000, len(plugin.logs)\n"
        "assert plugin.logs[-1].message == 'sixteen bytes.. '\n"
    )
    result = run_case(code)
    assert result.error is None, result
    assert result.seconds < 60
    assert result.peak_rss_mb < RSS_BOUND_MB


def test_start_section_under_a_fuel_limit(tmp_path):
    wat = _module("", extra="(func $spin (loop $forever (br $forever))) (start $spin)")
    wasm = _wasm_file(tmp_path, "start", wat)
    result = run_case(f"from meshwasm.host import Plugin\nPlugin.load({str(wasm)!r}, fuel_limit=100_000)\n")
    assert (result.module, result.error) == ("meshwasm.host.errors", "ResourceLimitError"), result
    assert "start section" in result.message
    assert "fuel cap of 100000 exhausted" in result.message
    assert result.seconds < 30
    assert result.peak_rss_mb < RSS_BOUND_MB


def test_property_path_that_is_not_utf8(tmp_path):
    wat = _module(
        """
    ;; get_property("\\xff\\xfe") then log its status as a digit
    (i32.store8 (i32.const 3100)
      (i32.add (i32.const 48)
        (call $get_property (i32.const 3000) (i32.const 2) (i32.const 3004) (i32.const 3008))))
    (drop (call $log (i32.const 2) (i32.const 3100) (i32.const 1)))""",
        imports=GET_PROPERTY,
        extra='(data (i32.const 3000) "\\ff\\fe")',
    )
    wasm = _wasm_file(tmp_path, "property", wat)
    result = run_case(_stream_case(wasm) + "assert plugin.logs_at('info') == ['1'], plugin.logs\n")
    assert result.error is None, result  # NotFound (1), as in Envoy
    assert result.peak_rss_mb < RSS_BOUND_MB
    proc = subprocess.run(
        [sys.executable, "-m", "meshwasm.cli", "test-plugin", str(wasm)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "log [info] 1" in proc.stdout


def test_shared_queue_ping_pong(host_wat_modules):
    wasm = host_wat_modules["queue_peer"]
    code = (
        "from meshwasm.host import Plugin, SharedQueues\n"
        "queues = SharedQueues()\n"
        f"a = Plugin.load({str(wasm)!r}, vm_id='a', vm_config='b', config=b'\\x00', shared_queues=queues)\n"
        f"b = Plugin.load({str(wasm)!r}, vm_id='b', vm_config='a', config=b'\\x00', shared_queues=queues)\n"
        "a.tick()\n"
    )
    result = run_case(code)
    assert (result.module, result.error) == ("meshwasm.host.errors", "ResourceLimitError"), result
    assert "shared-queue ping-pong" in result.message
    assert result.seconds < 60
    assert result.peak_rss_mb < RSS_BOUND_MB


def test_memory_growth_past_the_cap_in_large_steps(tmp_path):
    """memory.grow by 1,000 pages at once, past a 1 MiB cap: refused (-1), then the module traps."""
    wat = _module("(if (i32.eq (memory.grow (i32.const 1000)) (i32.const -1)) (then unreachable))")
    result = run_case(_stream_case(_wasm_file(tmp_path, "grow", wat), "memory_limit=1 << 20"))
    assert (result.module, result.error) == ("meshwasm.host.errors", "ResourceLimitError"), result
    assert "memory.grow from 131072 to 65667072 bytes was refused" in result.message
    assert result.seconds < 30
    assert result.peak_rss_mb < RSS_BOUND_MB


LOOP = _module("(loop $forever (br $forever))")


def test_infinite_loop_without_fuel_meets_the_deadline(tmp_path):
    result = run_case(_stream_case(_wasm_file(tmp_path, "loop", LOOP), "deadline=0.5"), timeout=60)
    assert (result.module, result.error) == ("meshwasm.host.errors", "DeadlineExceeded"), result
    assert "proxy_on_request_headers" in result.message
    assert result.seconds < 10
    assert result.peak_rss_mb < RSS_BOUND_MB


def _test_plugin(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "meshwasm.cli", "test-plugin", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_test_plugin_stops_an_infinite_loop_at_its_deadline(tmp_path):
    started = time.monotonic()
    proc = _test_plugin(str(_wasm_file(tmp_path, "loop", LOOP)), "--deadline", "1")
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "plugin ran past its deadline in proxy_on_request_headers" in stderr
    assert "Traceback" not in stderr
    assert time.monotonic() - started < 30


@pytest.mark.skipif(sys.platform != "linux", reason="signals as on Linux")
def test_test_plugin_honours_ctrl_c(tmp_path):
    proc = _test_plugin(str(_wasm_file(tmp_path, "loop", LOOP)), "--deadline", "600")
    try:
        deadline = time.monotonic() + 60
        # Wait until the plugin is running (its load line is on stderr), then a second more.
        assert proc.stderr is not None
        while "loading" not in proc.stderr.readline() and time.monotonic() < deadline:
            pass
        time.sleep(1.5)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - interrupted < 10
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
