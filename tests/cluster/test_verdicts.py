"""The API server's verdict (schema, CEL rules) on what meshwasm ships matches `meshwasm render`'s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


WILDCARD_REFUSAL = (
    'spec.selector.matchLabels[app]: Invalid value: "tier2-*": wildcard not allowed in label value match'
)


def _wildcard_plugin(real_engine: Engine, tmp_path: Path) -> Path:
    """The seed's rendered WasmPlugin with a wildcard in its selector's label value, which Istio's
    WasmPlugin CRD refuses (a CEL rule). Rendered from the valid tree, then edited, so the
    server sees it whatever meshwasm's own checks say."""
    out = tmp_path / "rendered"
    rendered = subprocess.run(
        [
            sys.executable, "-m", "meshwasm.cli", "render", str(real_engine.tree),
            "--to", "istio", "-o", str(out),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    plugin = next(out.glob("*wasmplugin*.yaml"))
    edit(plugin, "      app: tier2-gateway", "      app: tier2-*")
    return plugin


def test_the_server_and_render_refuse_a_wildcard_selector_in_the_same_words(
    real_engine: Engine, tmp_path: Path
) -> None:
    plugin = _wildcard_plugin(real_engine, tmp_path)
    server = subprocess.run(
        [
            str(_kubectl(real_engine)), "--kubeconfig", real_engine.kubeconfig,
            "apply", "--dry-run=server", "-f", str(plugin),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert server.returncode != 0, server.stdout
    assert WILDCARD_REFUSAL in server.stderr, server.stderr
    rendered = _render(plugin.parent)
    assert rendered.returncode == 2, rendered.stdout
    assert WILDCARD_REFUSAL in rendered.stderr, rendered.stderr
    # The seed's tree with the wildcard in the TSB gateway's labels: render points at that file.
    tree = tree_copy(real_engine.tree, tmp_path)
    edit(tree / "tier2" / "gateway.yaml", "      app: tier2-gateway", "      app: tier2-*")
    from_tree = _render(tree)
    assert from_tree.returncode == 2
    assert WILDCARD_REFUSAL in from_tree.stderr
    assert "gateway.yaml" in from_tree.stderr


def test_apply_reports_a_server_refusal_per_object_and_writes_nothing(
    real_engine: Engine, tmp_path: Path
) -> None:
    """meshwasm's apply against the server's own verdict (render's check bypassed): the refused
    object is named with its origin and the server's field, and the valid one is not written."""
    import yaml

    from meshwasm.kube.apply import ApplyRefused, Desired, apply_documents
    from meshwasm.kube.client import KubeClient

    plugin = yaml.safe_load(_wildcard_plugin(real_engine, tmp_path).read_text())
    plugin["metadata"]["name"] = "refused-by-the-server"
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "written-only-with-the-rest", "namespace": "tier2"},
        "data": {"k": "v"},
    }
    with KubeClient(Path(real_engine.kubeconfig), field_manager="tests") as kube:
        with pytest.raises(ApplyRefused) as refused:
            apply_documents(
                kube,
                [Desired(config_map, "cm.yaml:1"), Desired(plugin, "tier2/gateway.yaml:26")],
                apply_set="verdict-test",
            )
        assert kube.get(config_map) is None
    [rejection] = refused.value.rejections
    assert rejection.ref == "WasmPlugin tier2/refused-by-the-server"
    assert rejection.origin == "tier2/gateway.yaml:26"
    assert any(c.field == "spec.selector.matchLabels[app]" for c in rejection.error.causes), (
        rejection.error.causes
    )
    assert "wildcard not allowed in label value match" in str(refused.value)


def _kubectl(real_engine: Engine) -> Path:
    engine = real_engine.cluster.options.engine
    assert engine is not None
    return engine.kubectl
