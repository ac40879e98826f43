"""`meshwasm render`: what it writes, and that it writes nothing when anything is invalid."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from meshwasm.manifests import istio, load

MESHWASM = str(Path(sys.executable).parent / "meshwasm")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHWASM, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_render_istio_to_stdout_is_the_seed_stream(repo_root):
    result = run("render", str(repo_root / "tsb"), "--to", "istio")
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in documents] == [
        "Namespace",
        "ServiceAccount",
        "Service",
        "Deployment",
        "Namespace",
        "Gateway",
        "VirtualService",
        "WasmPlugin",
    ]
    assert documents[-1]["metadata"]["name"] == "tier2-gateway-wasm-add-header0"


def test_render_istio_to_a_directory_writes_a_loadable_tree(repo_root, tmp_path):
    out = tmp_path / "istio"
    result = run("render", str(repo_root / "tsb"), "--to", "istio", "-o", str(out), "--no-fetcher")
    assert result.returncode == 0, result.stderr
    assert (out / "kustomization.yaml").is_file()
    plugins = load(out).of_kind(istio.WasmPlugin)
    assert plugins[0].spec.url == "oci://127.0.0.1:5000/meshwasm/add-header:latest"


def test_render_envoy_maps_upstreams_ports_and_modules(repo_root, tmp_path):
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm\1\0\0\0")
    result = run(
        "render",
        str(repo_root / "tsb"),
        "--to",
        "envoy",
        "--module",
        f"wasm-add-header={module}",
        "--upstream",
        "httpbin/httpbin=127.0.0.1:18000",
        "--port",
        "80=18080",
        "--bind",
        "127.0.0.1",
    )
    assert result.returncode == 0, result.stderr
    bootstrap = json.loads(result.stdout)
    (listener,) = bootstrap["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}
    (cluster,) = bootstrap["static_resources"]["clusters"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert endpoint["socket_address"] == {"address": "127.0.0.1", "port_value": 18000}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] == str(
        module
    )


def test_render_without_a_module_warns_and_serves_the_deny_all_stand_in(repo_root):
    result = run("render", str(repo_root / "tsb"), "--to", "envoy")
    assert result.returncode == 0, result.stderr
    assert "deny-all RBAC filter" in result.stderr
    hcm = json.loads(result.stdout)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    rbac = hcm["typed_config"]["http_filters"][0]["typed_config"]
    assert rbac == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {},
        "rules_stat_prefix": "wasm-default-deny",
    }


def test_invalid_tree_lists_every_problem_and_writes_nothing(repo_root, tmp_path):
    tree = tmp_path / "tsb"
    shutil.copytree(repo_root / "tsb", tree)
    (tmp_path / "plugins").symlink_to(repo_root / "plugins")
    gateway = tree / "tier2" / "gateway.yaml"
    text = gateway.read_text().replace("path: request", "path: sideways")
    text = text.replace("          - header: x-ingress-header\n", "          - hedaer: x-ingress-header\n")
    gateway.write_text(text)
    out = tmp_path / "out"
    result = run("render", str(tree), "--to", "istio", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert "3 translation problems" in result.stderr
    subject = "Gateway tier2/tier2-gateway, attachment spec.wasmPlugins[0]"
    assert f"tsb/tier2/gateway.yaml:32: {subject}" in result.stderr
    assert "spec.wasmPlugins[0].config.headers[0].header: missing (required)" in result.stderr
    assert f"tsb/tier2/gateway.yaml:37: {subject}" in result.stderr
    assert "spec.wasmPlugins[0].config.headers[1].path: 'sideways' is not one of" in result.stderr
    assert not out.exists()
    assert result.stdout == ""
