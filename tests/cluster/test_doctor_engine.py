"""`meshwasm doctor` on the real engine (`meshwasm up --engine istio`): Istio's own agent
(pilot-agent) fetches the module and writes the stand-in, istiod's ECDS reaches Envoy, and doctor
reads Istio's log format, Istio's agent's words and the wasmfetcher's log. The same diagnoses as
on the embedded engine (tests/e2e/test_doctor.py), from the real thing: running, a missing tag
(fail closed, the stand-in's counter), a config the plugin refuses, a VM that traps."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cluster.conftest import copy_tree
from cluster.helpers import RunningUp, edit, meshwasm_up
from fixtures.wasm.build import build_all
from meshwasm.engine.binaries import EngineFiles
from meshwasm.gateway.doctor import Finding, diagnose
from meshwasm.gateway.doctor_inputs import gather
from meshwasm.net import wait_until
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image, read_wasm_file
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference

pytestmark = [pytest.mark.envoy, pytest.mark.registry, pytest.mark.slow]

SEED = "tier2/tier2-gateway-wasm-add-header0"


def finding(tmp: Path) -> Finding | None:
    gathered = gather(
        tree=None, admin=None, config_dump=None, stats=None, logs=[], gateway=None,
        state_file=tmp / "cache" / "up-state.json",
    )  # fmt: skip
    return next((f for f in diagnose(gathered.inputs) if f.plugin == SEED), None)


def wait_for(tmp: Path, status: str, contains: str = "", timeout: float = 90) -> Finding:
    seen: list[Finding | None] = []

    def settled() -> bool:
        seen.append(finding(tmp))
        return seen[-1] is not None and seen[-1].status == status and contains in seen[-1].summary

    assert wait_until(settled, timeout=timeout, interval=1.0), f"{seen[-1]}"
    found = seen[-1]
    assert found is not None
    return found


def get(up: RunningUp) -> int:
    import httpx

    response = httpx.get(
        f"http://127.0.0.1:{up.port}/get", headers={"host": "httpbin.tetrate.io"}, timeout=10
    )
    return response.status_code


def test_doctor_on_istios_agent_and_envoy(
    engine: EngineFiles, registry: LocalRegistry, cluster_wasm: Path, tmp_path: Path
) -> None:
    del engine  # the binaries must be built (the fixture skips or fails otherwise)
    tree = copy_tree(tmp_path, registry.address)
    url = f"oci://{registry.address}/doctor-engine/add-header:latest"
    ext, gateway = tree / "wasm-extension.yaml", tree / "tier2" / "gateway.yaml"
    edit(ext, f"oci://{registry.address}/meshwasm/add-header:latest", url)
    with RegistryClient() as client:
        client.push_image(build_image(read_wasm_file(cluster_wasm), variant="compat"), parse_reference(url))
    trap = build_all(tmp_path / "wasm")["bench_trap"]
    with meshwasm_up(tmp_path, tree, "--engine", "istio", timeout=420) as up:
        running = wait_for(tmp_path, "running")
        assert running.module_sha256 == f"sha256 {hashlib.sha256(cluster_wasm.read_bytes()).hexdigest()}"
        assert running.position.startswith("HTTP filter 1 of ")  # istiod adds its own filters after it

        edit(ext, "/add-header:latest", "/add-header:no-such-tag")
        failed = wait_for(tmp_path, "fetch-failed")
        assert failed.reason == "not-found"
        # Istio's agent keeps only the status; the wasmfetcher's log says why.
        assert "wasm module download request failed: status code 404" in failed.summary
        assert f"the wasmfetcher logged image_not_found for {url.replace(':latest', ':no-such-tag')}" in (
            failed.summary
        )
        assert [get(up) for _ in range(2)] == [403, 403]
        failed = wait_for(tmp_path, "fetch-failed", "2 denied by it so far", timeout=30)
        assert failed.stand_in is not None
        assert failed.stand_in["requests"] == 2
        edit(ext, "/add-header:no-such-tag", "/add-header:latest")
        wait_for(tmp_path, "running")

        schema_line = next(ln for ln in ext.read_text().splitlines(keepends=True) if "config-schema" in ln)
        edit(ext, schema_line, "")
        edit(gateway, "path: response", "path: sideways")
        refused = wait_for(tmp_path, "config-refused")
        assert refused.reason == "previous-config"
        assert 'path: must be "request" or "response", got "sideways"' in refused.summary
        edit(gateway, "path: sideways", "path: response")

        edit(ext, url, f"file://{trap}")
        wait_for(tmp_path, "running", hashlib.sha256(trap.read_bytes()).hexdigest())
        assert get(up) == 503
        crashed = wait_for(tmp_path, "vm-crashed", timeout=30)
        assert (
            "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable" in crashed.summary
        )
