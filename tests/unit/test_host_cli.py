"""`meshwasm test-plugin` and the installed pytest fixtures."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from meshwasm.cli import app
from meshwasm.errors import ExitCode

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["--quiet", "test-plugin", *args], catch_exceptions=False)


def test_one_exchange_as_json(add_header_wasm):
    config = json.dumps(
        {
            "headers": [
                {"header": "x-req", "value": "1", "path": "request"},
                {"header": "x-resp", "value": "2"},
            ]
        }
    )
    result = run(
        str(add_header_wasm),
        "--config",
        config,
        "--request",
        "POST /submit",
        "-H",
        "x-user: alice",
        "--body",
        "hi",
        "--json",
    )
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["actions"] == {"request_headers": 0, "request_body": 0, "response_headers": 0}
    assert ["x-req", "1"] in outcome["request_headers"]
    assert [":path", "/submit"] in outcome["request_headers"]
    assert ["x-user", "alice"] in outcome["request_headers"]
    assert outcome["request_body"] == "hi"
    assert ["x-resp", "2"] in outcome["response_headers"]
    assert outcome["violations"] == []


def test_config_from_file_and_text_output(add_header_wasm, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"header": "x-from-file", "value": "yes"}')
    result = run(str(add_header_wasm), "--config", f"@{config}")
    assert result.exit_code == 0, result.output
    assert "  x-from-file: yes" in result.stdout


def test_not_wasm_exits_with_the_integrity_code():
    # Through the real entry point, so that the error-to-exit-code path runs too.
    proc = subprocess.run(
        [sys.executable, "-m", "meshwasm.cli", "test-plugin", __file__],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == ExitCode.INTEGRITY
    assert "is not a WebAssembly module" in proc.stderr


def test_plugin_refusal_exits_non_zero(add_header_wasm):
    result = runner.invoke(app, ["--quiet", "test-plugin", str(add_header_wasm), "--config", '{"hedaer": 1}'])
    assert result.exit_code != 0
    assert 'unknown key "hedaer"' in str(result.exception)


def test_bad_request_line_is_a_usage_error(add_header_wasm):
    result = runner.invoke(app, ["--quiet", "test-plugin", str(add_header_wasm), "--request", "GET nothing"])
    assert "want 'METHOD /path'" in str(result.exception)


def test_load_plugin_fixture_is_installed(load_plugin, plugin_violations, host_wat_modules):
    plugin = load_plugin(host_wat_modules["faults"])
    stream = plugin.http_stream()
    stream.send_request_headers({})
    stream.send_request_body(b"x")
    assert plugin_violations(plugin)[0].startswith("proxy_add_header_map_value: BAD_ARGUMENT")
