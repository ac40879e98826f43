"""The add-header plugin through meshwasm's host, case for case with its Go contract tests.

Cases come from plugins/add-header/testdata/contract.json. The host follows
Envoy, so the `envoy_semantics` cases (which Go's proxytest skips) run here too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meshwasm.host import Action, LogLevel, Plugin, PluginStartError

CONTRACT = json.loads(
    (
        Path(__file__).resolve().parents[2] / "plugins" / "add-header" / "testdata" / "contract.json"
    ).read_text()
)


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


def check_side(side: str, headers: Any, expect: dict[str, list[str]]) -> None:
    for name, values in expect.items():
        assert headers.get_all(name) == values, f"{side} header {name}: {headers.pairs()}"


@pytest.mark.parametrize("case", CONTRACT["valid"], ids=_ids(CONTRACT["valid"]))
def test_valid_configuration(add_header_wasm, case):
    plugin = Plugin.load(add_header_wasm, config=case["config"])
    start_logs = list(plugin.logs)
    stream = plugin.http_stream()
    assert stream.send_request_headers(case["request"]["in"]) == Action.CONTINUE
    assert stream.send_response_headers(case["response"]["in"]) == Action.CONTINUE
    check_side("request", stream.request_headers, case["request"]["expect"])
    check_side("response", stream.response_headers, case["response"]["expect"])
    stream.complete()
    # Nothing at info level or above, on start-up or on the request path.
    loud = [entry for entry in plugin.logs if entry.level >= LogLevel.INFO]
    assert loud == [], f"unexpected logs: {loud} (start-up: {start_logs})"
    assert plugin.violations == []


@pytest.mark.parametrize("case", CONTRACT["invalid"], ids=_ids(CONTRACT["invalid"]))
def test_invalid_configuration_refuses_to_start(add_header_wasm, case):
    with pytest.raises(PluginStartError) as refused:
        Plugin.load(add_header_wasm, config=case["config"])
    assert refused.value.critical == [case["critical"]]
    assert case["critical"] in str(refused.value)


def test_dict_configuration_is_sent_as_json(add_header_wasm):
    plugin = Plugin.load(add_header_wasm, config={"header": "x-from-dict", "value": "yes", "path": "request"})
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/"})
    assert stream.request_headers["x-from-dict"] == "yes"


def test_one_plugin_serves_many_streams_independently(add_header_wasm):
    plugin = Plugin.load(add_header_wasm, config={"header": "x-n", "value": "1", "path": "request"})
    for _ in range(20):
        stream = plugin.http_stream()
        stream.send_request_headers([("x-n", "0")])
        assert stream.request_headers.get_all("x-n") == ["0", "1"]
        stream.complete()
    assert plugin._streams == {}


def test_set_replaces_every_incoming_value(add_header_wasm):
    config = {"header": "x-multi", "value": "only", "path": "request", "action": "set"}
    plugin = Plugin.load(add_header_wasm, config=config)
    stream = plugin.http_stream()
    stream.send_request_headers([("x-multi", "a"), ("X-Multi", "b"), ("other", "c")])
    assert stream.request_headers.get_all("x-multi") == ["only"]
    assert stream.request_headers["other"] == "c"
