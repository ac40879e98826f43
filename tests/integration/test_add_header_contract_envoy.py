"""Every case of plugins/add-header/testdata/contract.json through the real Envoy, for each build.

One listener and one ECDS filter per case on the session's Envoy, all written
at once per implementation (one shared Wasm VM serves them, as in a gateway):
valid cases are checked on the request httpbin receives and on the response,
invalid ones by the exact CRITICAL line the plugin logged in Envoy's log and
by Envoy rejecting the filter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshwasm.envoy import resources as r
from meshwasm.envoy.runtime import FileXdsEnvoy
from meshwasm.errors import MeshwasmError
from meshwasm.gateway.upstreams import HttpbinProcess
from meshwasm.net import free_port, wait_until

pytestmark = pytest.mark.envoy

CONTRACT = Path(__file__).resolve().parents[2] / "plugins" / "add-header" / "testdata" / "contract.json"
CASES: dict[str, Any] = json.loads(CONTRACT.read_text())
VALID: list[dict[str, Any]] = CASES["valid"]
INVALID: list[dict[str, Any]] = CASES["invalid"]
VM_ID = "add-header"
HTTPBIN_OWN_RESPONSE_HEADERS = {("content-type", "application/json")}


@dataclass
class Deployed:
    wasm: Path
    ports: dict[str, int]  # case name -> listener port
    root_ids: dict[str, str]  # case name -> root_id, as Envoy's wasm log lines carry it
    filters: dict[str, str]  # case name -> ECDS filter name


def _fail_count(envoy: FileXdsEnvoy, filter_name: str) -> int:
    key = f"extension_config_discovery.http_filter.{filter_name}.config_fail"
    return envoy.admin.stats("extension_config_discovery").get(key, 0)


@pytest.fixture(scope="module")
def deployed(envoy: FileXdsEnvoy, httpbin: HttpbinProcess, add_header_wasm: Path) -> Deployed:
    """All contract cases as listeners for this build of add-header."""
    envoy.upsert_cluster(r.static_cluster("httpbin", httpbin.host, httpbin.port))
    out = Deployed(add_header_wasm, {}, {}, {})
    for index, case in enumerate([*VALID, *INVALID]):
        name = f"contract{index}.{add_header_wasm.stem}"
        out.root_ids[case["name"]] = name
        out.filters[case["name"]] = f"test.{name}"
        envoy.set_filter(
            r.typed_extension_config(
                f"test.{name}",
                r.wasm_filter_config(
                    name=f"test.{name}",
                    root_id=name,
                    filename=str(add_header_wasm),
                    configuration=case["config"],
                    vm_id=VM_ID,
                ),
            )
        )
    for case in [*VALID, *INVALID]:
        port = out.ports[case["name"]] = free_port()
        valid = "critical" not in case
        filter_name = out.filters[case["name"]]
        envoy.upsert_listener(
            r.http_listener(
                name=out.root_ids[case["name"]],
                address="127.0.0.1",
                port=port,
                virtual_hosts=[r.virtual_host("httpbin", ["*"], [r.route_to_cluster("/", "httpbin")])],
                http_filters=[
                    r.ecds_http_filter(
                        filter_name,
                        # A rejected filter never arrives: its listener warms without it after 1 s.
                        envoy.xds.ecds_source(filter_name, initial_fetch_timeout="0s" if valid else "1s"),
                    )
                ],
            )
        )
    for case in VALID:
        envoy.wait_listener_active(out.root_ids[case["name"]])
    for case in INVALID:
        filter_name = out.filters[case["name"]]
        if not wait_until(lambda f=filter_name: _fail_count(envoy, f) > 0, timeout=30, interval=0.1):
            raise MeshwasmError(f"Envoy did not reject {filter_name} ({case['name']!r}) within 30 s")
    return out


def _joined(values: list[str]) -> str:
    """How httpbin echoes a repeated request header: values joined by commas."""
    return ",".join(values)


def _echoed(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


@pytest.mark.parametrize("case", VALID, ids=[c["name"] for c in VALID])
def test_valid_case_in_envoy(case: dict[str, Any], deployed: Deployed, envoy: FileXdsEnvoy) -> None:
    port = deployed.ports[case["name"]]
    base = f"http://127.0.0.1:{port}"
    request_in = [(k, v) for k, v in case["request"]["in"]]
    echoed = httpx.get(f"{base}/headers", headers=request_in, timeout=10)
    assert echoed.status_code == 200, echoed.text
    seen = echoed.json()["headers"]
    for name, values in case["request"]["expect"].items():
        want = _joined(values) if values else None
        assert _echoed(seen, name) == want, f"request header {name}: {seen}"

    # httpbin's /response-headers answers with the query parameters as headers,
    # besides its own content-type (application/json), which is not repeated.
    response_in = [(k, v) for k, v in case["response"]["in"] if (k, v) not in HTTPBIN_OWN_RESPONSE_HEADERS]
    response = httpx.get(f"{base}/response-headers", params=response_in, timeout=10)
    assert response.status_code == 200, response.text
    for name, values in case["response"]["expect"].items():
        assert response.headers.get_list(name) == values, f"response header {name}: {response.headers}"

    # Nothing logged by the plugin on the request path (info level and above reach the log).
    assert envoy.process.log_lines(f"wasm log {deployed.root_ids[case['name']]} ") == []


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_case_in_envoy(case: dict[str, Any], deployed: Deployed, envoy: FileXdsEnvoy) -> None:
    root_id = deployed.root_ids[case["name"]]
    lines = envoy.process.log_lines(f"wasm log {root_id} {VM_ID}: ")
    assert lines, f"no wasm log line for {root_id}"
    # Exactly one line, at critical level, ending with exactly the contract's message.
    assert len(lines) == 1, lines
    assert "[critical][wasm]" in lines[0]
    assert lines[0].split(f"wasm log {root_id} {VM_ID}: ", 1)[1] == case["critical"]
    assert _fail_count(envoy, deployed.filters[case["name"]]) >= 1
    # Fail closed: the listener serves without the plugin only an error, never the upstream.
    response = httpx.get(f"http://127.0.0.1:{deployed.ports[case['name']]}/headers", timeout=10)
    assert response.status_code >= 500
