"""`meshwasm render tsb/ --to envoy` through the real Envoy: `--mode validate`, then live traffic.

The rendered bootstrap inlines the Wasm filter, so `envoy --mode validate`
really loads the module (it does not read ECDS sources); the live test feeds
the same translation to the session's Envoy through file xDS, the way the
local gateway does, and checks both of the seed's header effects on httpbin.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from meshwasm.envoy.process import envoy_binary
from meshwasm.manifests import load
from meshwasm.net import free_port
from meshwasm.translate import istio_to_envoy, tsb_to_istio

pytestmark = pytest.mark.envoy

MESHWASM = str(Path(sys.executable).parent / "meshwasm")


def envoy_validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--disable-hot-restart", "-l", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def render_envoy(repo_root: Path, out: Path, module: Path) -> Path:
    result = subprocess.run(
        [
            MESHWASM,
            "render",
            str(repo_root / "tsb"),
            "--to",
            "envoy",
            "-o",
            str(out),
            "--module",
            f"wasm-add-header={module}",
            "--admin-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (bootstrap,) = out.glob("bootstrap-*.json")
    return bootstrap


def test_rendered_seed_passes_envoy_validate(repo_root, tmp_path, add_header_wasm):
    bootstrap = render_envoy(repo_root, tmp_path / "out", add_header_wasm)
    assert bootstrap.name == "bootstrap-tier2-tier2-gateway.json"
    config = json.loads(bootstrap.read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = hcm["http_filters"][0]["typed_config"]["config"]
    assert wasm["vm_config"]["code"]["local"]["filename"] == str(add_header_wasm.resolve())
    result = envoy_validate(bootstrap)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_envoy_validate_rejects_a_module_that_is_not_wasm(repo_root, tmp_path):
    """The check above means something: the same render with a bogus module fails validation."""
    bogus = tmp_path / "bogus.wasm"
    bogus.write_bytes(b"this is not a wasm module")
    bootstrap = render_envoy(repo_root, tmp_path / "out", bogus)
    result = envoy_validate(bootstrap)
    assert result.returncode != 0


def test_seed_translation_serves_both_seed_effects_through_envoy(repo_root, envoy, httpbin, add_header_wasm):
    istio = tsb_to_istio(load(repo_root / "tsb"))
    port = free_port()
    config = istio_to_envoy(
        istio,
        workload_labels={"app": "tier2-gateway"},
        module_files={istio.wasm_plugins[0].spec.url: str(add_header_wasm)},
        upstreams={"httpbin.httpbin.svc.cluster.local:8000": (httpbin.host, httpbin.port)},
        bind_address="127.0.0.1",
        port_map={80: port},
        xds=envoy.xds.ecds_source,
    )
    for cluster in config.clusters:
        envoy.upsert_cluster(cluster)
    for extension_config in config.filters:
        envoy.set_filter(extension_config)
    (listener,) = config.listeners
    envoy.upsert_listener(listener)
    try:
        envoy.wait_listener_active(listener["name"])
        envoy.wait_filter_applied(config.filters[0])
        response = httpx.get(
            f"http://127.0.0.1:{port}/headers",
            headers={"host": "httpbin.tetrate.io", "x-request-header": "some value"},
            timeout=10,
        )
        assert response.status_code == 200
        assert response.headers["x-ingress-header"] == "from tsb ingress gateway"
        assert response.json()["headers"]["X-Request-Header"] == "changed/created by wasm"
        # A host the Gateway does not serve gets no route.
        other = httpx.get(f"http://127.0.0.1:{port}/headers", headers={"host": "other.example"}, timeout=10)
        assert other.status_code == 404
    finally:
        envoy.remove_listener(listener["name"])
        for extension_config in config.filters:
            envoy.remove_filter(extension_config["name"])
