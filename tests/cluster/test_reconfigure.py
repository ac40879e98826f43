"""The running engine reconfigured through the API server: a live edit under load, pruning,
and an unreachable module under each failStrategy compared with the embedded engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.conftest import Engine
from cluster.helpers import edit, meshwasm_up, outcome, tree_copy
from meshwasm.net import free_port, wait_until

LOAD_LOOP = Path(__file__).resolve().parents[1] / "e2e" / "load_loop.py"
GATEWAY = Path("tier2") / "gateway.yaml"


def test_a_live_plugin_config_edit_reaches_envoy_without_failed_requests(
    real_engine: Engine, tmp_path: Path
) -> None:
    tree = tree_copy(real_engine.tree, tmp_path)
    applied = real_engine.apply(tree)
    assert applied.returncode == 0, applied.stderr
    assert real_engine.wait_header("from tsb ingress gateway", timeout=120)
    records_path = tmp_path / "load.json"
    url = f"http://127.0.0.1:{real_engine.port}/get"
    load = subprocess.Popen(
        [sys.executable, str(LOAD_LOOP), url, "httpbin.tetrate.io", "25", "2000", str(records_path)]
    )
    try:
        edit(tree / GATEWAY, "value: from tsb ingress gateway", "value: edited through istiod")
        applied = real_engine.apply(tree)
        assert applied.returncode == 0, applied.stderr
        assert "update    WasmPlugin tier2/tier2-gateway-wasm-add-header0" in applied.stdout
        assert "edited through istiod" in applied.stdout  # the diff shows it
        assert real_engine.wait_header("edited through istiod", timeout=60)
    finally:
        load.wait(timeout=60)
    records = json.loads(records_path.read_text())
    statuses = {status for _, status, _ in records}
    assert statuses == {200}, [r for r in records if r[1] != 200][:5]
    values = [value for _, _, value in records]
    assert "edited through istiod" in values
    # One switch from the old value to the new one, never back.
    first_new = values.index("edited through istiod")
    assert set(values[:first_new]) == {"from tsb ingress gateway"}
    assert set(values[first_new:]) == {"edited through istiod"}


def test_removing_the_attachment_prunes_its_wasmplugin(real_engine: Engine, tmp_path: Path) -> None:
    tree = tree_copy(real_engine.tree, tmp_path)
    assert real_engine.apply(tree).returncode == 0
    text = (tree / GATEWAY).read_text()
    (tree / GATEWAY).write_text(text.split("  wasmPlugins:")[0])
    applied = real_engine.apply(tree)
    assert applied.returncode == 0, applied.stderr
    assert "prune     WasmPlugin tier2/tier2-gateway-wasm-add-header0" in applied.stdout
    from meshwasm.kube.client import KubeClient

    with KubeClient(Path(real_engine.kubeconfig), field_manager="tests") as kube:
        gone = kube.get(
            {
                "apiVersion": "extensions.istio.io/v1alpha1",
                "kind": "WasmPlugin",
                "metadata": {"namespace": "tier2", "name": "tier2-gateway-wasm-add-header0"},
            }
        )
    assert gone is None
    assert real_engine.wait_header(None, timeout=60)
    # Applying the full tree again brings it back.
    assert real_engine.apply(real_engine.tree).returncode == 0
    assert real_engine.wait_header("from tsb ingress gateway", timeout=120)


@pytest.mark.parametrize("strategy", ["FAIL_CLOSE", "FAIL_OPEN"])
def test_an_unreachable_module_behaves_as_on_the_embedded_engine(
    real_engine: Engine, tmp_path: Path, strategy: str
) -> None:
    tree = tree_copy(real_engine.tree, tmp_path)
    unreachable = f"127.0.0.1:{free_port()}"  # nothing listens there
    extension = tree / "wasm-extension.yaml"
    edit(extension, real_engine.registry.address, unreachable)
    edit(extension, "  imagePullPolicy: Always", f"  imagePullPolicy: Always\n  failStrategy: {strategy}")
    applied = real_engine.apply(tree)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    expected_status = 403 if strategy == "FAIL_CLOSE" else 200

    def settled() -> bool:
        try:
            seen = outcome(real_engine.port)
        except Exception:
            return False
        return seen.status == expected_status and seen.ingress_header is None

    assert wait_until(settled, timeout=120, interval=0.5), (
        outcome(real_engine.port),
        real_engine.log("agent")[-3000:],
    )
    on_istio = outcome(real_engine.port)
    with meshwasm_up(tmp_path, tree, "--no-watch") as embedded:
        on_embedded = outcome(embedded.port)
    assert on_istio == on_embedded
    # Back to the seed's tree for the tests after this one.
    assert real_engine.apply(real_engine.tree).returncode == 0
    assert real_engine.wait_header("from tsb ingress gateway", timeout=120)
