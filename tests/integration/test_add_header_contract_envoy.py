"""Every case of plugins/add-header/testdata/contract.json through the real Envoy, for each build.

One listener and one ECDS filter per build on the session's Envoy; each case
replaces the filter's configuration (a new plugin, its own root_id, in the one
shared Wasm VM) and waits until Envoy applied or rejected it. One subscription
per build on purpose: every file-watched ECDS filter costs Envoy an inotify
instance, and the machine's 128 are shared by every Envoy on it. Valid cases
are checked on the request httpbin receives and on the response; invalid ones
by the exact CRITICAL line the plugin logged and by Envoy rejecting the update
(the previous configuration keeps serving; fail-closed on a first bad
configuration is covered in test_add_header_envoy.py).
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
GOOD_CONFIG = json.dumps({"header": "x-contract-ready", "value": "yes"})


@dataclass
class Deployed:
    wasm: Path
    port: int
    filter_name: str

    def root_id(self, case: Mapping[str, Any]) -> str:
        """Each case is its own plugin: Envoy's wasm log lines carry this root_id."""
        index = [c["name"] for c in [*VALID, *INVALID]].index(case["name"])
        return f"contract{index}.{self.wasm.stem}"

    def filter_config(self, root_id: str, configuration: str) -> dict[str, Any]:
        return r.typed_extension_config(
            self.filter_name,
            r.wasm_filter_config(
                name=self.filter_name,
                root_id=root_id,
                filename=str(self.wasm),
                configuration=configuration,
                vm_id=VM_ID,
            ),
        )


def _fail_count(envoy: FileXdsEnvoy, filter_name: str) -> int:
    key = f"extension_config_discovery.http_filter.{filter_name}.config_fail"
    return envoy.admin.stats("extension_config_discovery").get(key, 0)


@pytest.fixture(scope="module")
def deployed(envoy: FileXdsEnvoy, httpbin: HttpbinProcess, add_header_wasm: Path) -> Deployed:
    """One listener through one ECDS filter for this build of add-header, serving a good config."""
    envoy.upsert_cluster(r.static_cluster("httpbin", httpbin.host, httpbin.port))
    name = f"contract.{add_header_wasm.stem}"
    out = Deployed(add_header_wasm, free_port(), f"test.{name}")
    envoy.set_filter(out.filter_config(f"{name}.ready", GOOD_CONFIG))
    envoy.upsert_listener(
        r.http_listener(
            name=name,
            address="127.0.0.1",
            port=out.port,
            virtual_hosts=[r.virtual_host("httpbin", ["*"], [r.route_to_cluster("/", "httpbin")])],
            http_filters=[r.ecds_http_filter(out.filter_name, envoy.xds.ecds_source(out.filter_name))],
        )
    )
    envoy.wait_listener_active(name)
    return out


def _apply(envoy: FileXdsEnvoy, deployed: Deployed, case: Mapping[str, Any]) -> None:
    """Replace the filter's configuration with the case's; wait until Envoy applied or rejected it."""
    config = deployed.filter_config(deployed.root_id(case), case["config"])
    if "critical" not in case:
        envoy.set_filter(config)
        envoy.wait_filter_applied(config)
        return
    rejected_before = _fail_count(envoy, deployed.filter_name)
    envoy.set_filter(config)
    if not wait_until(
        lambda: _fail_count(envoy, deployed.filter_name) > rejected_before, timeout=30, interval=0.05
    ):
        raise MeshwasmError(f"Envoy did not reject {case['name']!r} within 30 s")


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
    _apply(envoy, deployed, case)
    base = f"http://127.0.0.1:{deployed.port}"
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
    assert envoy.process.log_lines(f"wasm log {deployed.root_id(case)} ") == []


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_case_in_envoy(case: dict[str, Any], deployed: Deployed, envoy: FileXdsEnvoy) -> None:
    _apply(envoy, deployed, case)
    root_id = deployed.root_id(case)
    prefix = f"wasm log {root_id} {VM_ID}: "
    wait_until(lambda: bool(envoy.process.log_lines(prefix)), timeout=5)
    lines = envoy.process.log_lines(prefix)
    # Exactly one line, at critical level, carrying exactly the contract's message.
    assert len(lines) == 1, lines
    assert "[critical][wasm]" in lines[0]
    assert lines[0].split(prefix, 1)[1] == case["critical"]
    # Rejected: the listener still serves with the configuration it had.
    response = httpx.get(f"http://127.0.0.1:{deployed.port}/headers", timeout=10)
    assert response.status_code == 200
