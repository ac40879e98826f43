"""WasmPlugins built as their manifests (meshwasm.translate.emitted) are what the model-first way
gave: the manifest the API-server checks see is the model's own ``to_manifest()``, and the content
hash is that of the model's spec as pydantic writes it out."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from test_translate_tsb_to_istio import _rich_tree  # a sibling module: pytest puts tests/unit on the path

from meshwasm.manifests import load
from meshwasm.manifests.crd_families import SpecFamily
from meshwasm.translate import tsb_to_istio
from meshwasm.translate.emitted import ANN_CONTENT_HASH


@pytest.fixture
def checked(monkeypatch) -> dict[str, dict[str, Any]]:
    """Every WasmPlugin manifest the translation hands to the CRD checks, by name."""
    seen: dict[str, dict[str, Any]] = {}
    errors = SpecFamily.errors

    def recording(self: SpecFamily, manifest: Any) -> Any:
        seen[manifest["metadata"]["name"]] = manifest
        return errors(self, manifest)

    monkeypatch.setattr(SpecFamily, "errors", recording)
    return seen


@pytest.mark.parametrize("tree", ["seed", "rich"])
def test_checked_manifest_is_the_models_and_the_hash_is_of_its_spec(tree, repo_root, tmp_path, checked):
    path = repo_root / "tsb" if tree == "seed" else _rich_tree(tmp_path)
    out = tsb_to_istio(load(path), fetcher_base=None if tree == "rich" else "http://f.example")
    assert out.wasm_plugins
    assert set(checked) == {p.name for p in out.wasm_plugins}
    for plugin in out.wasm_plugins:
        manifest = plugin.to_manifest()
        assert checked[plugin.name] == manifest
        written = plugin.spec.model_dump_json(by_alias=True, exclude_none=True, exclude_unset=True)
        assert (
            plugin.metadata.annotations[ANN_CONTENT_HASH] == hashlib.sha256(written.encode()).hexdigest()[:32]
        )
