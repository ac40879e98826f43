"""The API server's verdict (schema, CEL rules) on what meshwasm ships matches `meshwasm render`'s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cluster.conftest import ROOT, Engine
from cluster.helpers import edit, tree_copy


def _render(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshwasm.cli", "render", str(tree), "--to", "istio"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_kubectl_server_dry_run_accepts_the_fetcher_deployment(real_engine: Engine) -> None:
    kubectl = (
        str(real_engine.cluster.options.engine.kubectl) if real_engine.cluster.options.engine else "kubectl"
    )
    result = subprocess.run(
        [
            kubectl, "--kubeconfig", real_engine.kubeconfig,
            "apply", "--dry-run=server", "-k", str(ROOT / "deploy" / "fetcher"),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for kind in ("serviceaccount/wasmfetcher", "deployment.apps/wasmfetcher"):
        assert f"{kind} created (server dry run)" in result.stdout, result.stdout
    # The engine's stand-in already made the Service the Deployment's pods would sit behind.
    assert "service/wasmfetcher configured (server dry run)" in result.stdout, result.stdout


def test_the_seed_tree_is_accepted_by_both(real_engine: Engine) -> None:
    assert _render(real_engine.tree).returncode == 0
    server = real_engine.apply(real_engine.tree, "--dry-run")
    assert server.returncode == 0, server.stdout + server.stderr
    assert server.stdout.strip().splitlines()[-1].startswith("dry run (nothing written)")


def test_a_wildcard_selector_is_refused_by_both(real_engine: Engine, tmp_path: Path) -> None:
    """Istio's WasmPlugin CRD refuses a wildcard in a label value (a CEL rule)."""
    tree = tree_copy(real_engine.tree, tmp_path)
    edit(tree / "tier2" / "gateway.yaml", "      app: tier2-gateway", "      app: tier2-*")
    server = real_engine.apply(tree, "--dry-run")
    assert server.returncode == 2, server.stdout + server.stderr
    assert "WasmPlugin tier2/tier2-gateway-wasm-add-header0" in server.stderr
    assert "gateway.yaml" in server.stderr  # the file it was rendered from
    assert "wildcard not allowed in label value match" in server.stderr
    rendered = _render(tree)
    assert rendered.returncode != 0, "meshwasm render accepted what the API server refuses"
    assert "wildcard" in rendered.stderr
