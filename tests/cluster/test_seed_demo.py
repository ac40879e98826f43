"""The seed's demo through the real engine: `meshwasm apply tsb/`, then the seed's curl through the
pilot-agent-driven Envoy; the module travelled istiod -> istio-agent -> wasmfetcher -> registry."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import httpx

from cluster.conftest import HOST, Engine
from meshwasm.engine.cluster import ISTIO_DATA_DIR
from meshwasm.fetcher.urls import decode_fetch_path


def _wasm_plugin_url(real_engine: Engine) -> str:
    from meshwasm.kube.client import KubeClient

    with KubeClient(Path(real_engine.kubeconfig), field_manager="tests") as kube:
        plugin = kube.get(
            {
                "apiVersion": "extensions.istio.io/v1alpha1",
                "kind": "WasmPlugin",
                "metadata": {"namespace": "tier2", "name": "tier2-gateway-wasm-add-header0"},
            }
        )
    assert plugin is not None, "meshwasm apply did not create the seed's WasmPlugin"
    url: str = plugin["spec"]["url"]
    return url


def test_apply_then_the_seeds_curl_shows_both_headers(real_engine: Engine) -> None:
    applied = real_engine.apply(real_engine.tree)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    # Created, or unchanged when an earlier test of the session applied the same tree.
    assert re.search(
        r"^(create|unchanged) +WasmPlugin tier2/tier2-gateway-wasm-add-header0 ", applied.stdout, re.M
    )
    assert real_engine.wait_header("from tsb ingress gateway", timeout=120), real_engine.log("agent")[-3000:]
    port = real_engine.port
    result = subprocess.run(
        [
            "curl", "-s", "-v", f"http://{HOST}:{port}/get",
            "--resolve", f"{HOST}:{port}:127.0.0.1", "--header", "x-request-header: some value",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "< x-ingress-header: from tsb ingress gateway" in result.stderr
    body = json.loads(result.stdout)
    assert body["headers"]["X-Request-Header"] == "changed/created by wasm"


def test_the_module_came_through_istiod_the_agent_the_fetcher_and_the_registry(real_engine: Engine) -> None:
    assert real_engine.wait_header("from tsb ingress gateway", timeout=120)
    url = _wasm_plugin_url(real_engine)
    # The WasmPlugin names the wasmfetcher, which names the registry image.
    assert url.startswith(real_engine.state.fetcher_base + "/fetch/")
    image = decode_fetch_path(url.rsplit("/fetch/", 1)[1])
    assert image == f"oci://{real_engine.registry.address}/meshwasm/add-header:latest"
    # istiod serves it: its debug endpoint lists the WasmPlugin it read from the API server.
    ports = real_engine.state.ports
    configz = httpx.get(f"http://127.0.0.1:{ports['istiod_http']}/debug/configz", timeout=10).json()
    assert any(
        c.get("kind") == "WasmPlugin"
        and c.get("metadata", {}).get("name") == "tier2-gateway-wasm-add-header0"
        for c in configz
    )
    # The agent fetched the URL and cached it in Istio's layout: <sha256(url)>/<sha256(bytes)>.wasm.
    wanted = hashlib.sha256(real_engine.wasm.read_bytes()).hexdigest()
    cached = ISTIO_DATA_DIR / hashlib.sha256(url.encode()).hexdigest() / f"{wanted}.wasm"
    assert cached.is_file(), sorted(p.name for p in ISTIO_DATA_DIR.iterdir())
    # Envoy runs that file, handed over by the agent over ECDS.
    dump = httpx.get(f"{real_engine.state.admin}/config_dump", timeout=10).json()
    ecds = next(c for c in dump["configs"] if c["@type"].endswith("EcdsConfigDump"))["ecds_filters"]
    files = [
        e["ecds_filter"]["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
        for e in ecds
        if "config" in e["ecds_filter"]["typed_config"]
    ]
    assert str(cached) in files
    # The fetcher pulled the image from the registry for that request.
    pulls = [line for line in real_engine.log("fetcher").splitlines() if "event=pull" in line]
    assert any(
        f"registry={real_engine.registry.address} image=meshwasm/add-header tag=latest" in line
        and "result=ok" in line
        for line in pulls
    ), pulls
    registry_log = Path(real_engine.registry.log_path).read_text(errors="replace")
    assert "/v2/meshwasm/add-header/manifests/latest" in registry_log


def _resource_versions(real_engine: Engine) -> dict[str, str]:
    from meshwasm.kube.apply import APPLY_SET_LABEL, PRUNABLE_KINDS
    from meshwasm.kube.client import KubeClient, describe

    out = {}
    with KubeClient(Path(real_engine.kubeconfig), field_manager="tests") as kube:
        for api_version, kind in PRUNABLE_KINDS:
            for obj in kube.list(api_version, kind, labels={APPLY_SET_LABEL: "cluster-tests"}):
                out[describe(obj)] = obj["metadata"]["resourceVersion"]
    return out


def test_a_second_apply_is_a_no_op(real_engine: Engine) -> None:
    first = real_engine.apply(real_engine.tree)
    assert first.returncode == 0, first.stderr
    before = _resource_versions(real_engine)
    assert "WasmPlugin tier2/tier2-gateway-wasm-add-header0" in before
    second = real_engine.apply(real_engine.tree)
    assert second.returncode == 0, second.stderr
    actions = [
        line.split()[0] for line in second.stdout.splitlines()[:-1] if line and not line.startswith(" ")
    ]
    assert actions, second.stdout
    assert set(actions) == {"unchanged"}, second.stdout
    assert re.fullmatch(r"applied: \d+ unchanged", second.stdout.strip().splitlines()[-1]), second.stdout
    assert _resource_versions(real_engine) == before
