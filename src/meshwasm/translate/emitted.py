"""Emitted Istio resources built as their manifests first, then validated into models (pure).

A translated WasmPlugin is written out as a manifest (``Resource.to_manifest``: camelCase keys
in the model's order, no null or unset field); its content hash is over that spec, and the API
server's checks run on that manifest. Building the manifest directly, and the model from it
once, costs a third of building the models field by field and dumping them twice (1,000
gateways x 10 attachments render in a benchmark, bench/render.py). The model's
``to_manifest()`` gives back the same manifest (tests/unit/test_translate_emitted.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import pydantic_core
from pydantic import TypeAdapter

from meshwasm.manifests import istio, tsb

# What a config is written out as: the serializer of WasmPluginSpec.pluginConfig's type, so a
# value JSON cannot hold comes out as the model's dump writes it (a non-finite float as null).
_CONFIG_JSON = TypeAdapter(dict[str, Any])
# The fields of a spec template each plugin fills in (its place is kept in the template).
_SELECTOR, _CONFIG, _NAME = "selector", "pluginConfig", "pluginName"
PLUGIN_HOLES = (_SELECTOR, _CONFIG, _NAME)


def content_hash(spec: Mapping[str, Any]) -> str:
    """``xcp.tetrate.io/contentHash``: the first 32 hex digits of the SHA-256 of the spec as
    written out (pydantic-core's compact JSON, in the manifest's key order)."""
    return hashlib.sha256(pydantic_core.to_json(spec)).hexdigest()[:32]


def spec_template(extension: tsb.WasmExtension, url: str) -> dict[str, Any]:
    """The WasmPlugin spec every attachment of ``extension`` shares, as written out, with its
    per-attachment fields (selector, pluginConfig, pluginName) holding their places in the key
    order. Dumped from the model, so the extension's fields are written exactly as a plugin
    model built from them would be."""
    spec = extension.spec
    vm_config = None
    if spec.vm_config and spec.vm_config.env:
        vm_config = istio.WasmVmConfig(
            env=[
                istio.WasmEnvVar(name=e.name, value_from=e.value_from, value=e.value)
                for e in spec.vm_config.env
            ]
        )
    model = istio.WasmPluginSpec(
        selector=istio.LabelSelector(),
        url=url,
        image_pull_policy=spec.image_pull_policy,
        image_pull_secret=spec.image_pull_secret,
        plugin_config={},
        plugin_name="",
        priority=spec.priority,
        phase=spec.phase,
        fail_strategy=spec.fail_strategy,
        vm_config=vm_config,
        match=list(spec.match) or None,
    )
    return model.model_dump(by_alias=True, exclude_none=True, exclude_unset=True, mode="json")


def wasm_plugin(
    template: Mapping[str, Any],
    *,
    metadata: dict[str, Any],
    selector: Mapping[str, Any],
    config: dict[str, Any],
) -> tuple[istio.WasmPlugin, dict[str, Any]]:
    """One attachment's WasmPlugin and its manifest. ``metadata`` is the manifest's (name,
    namespace, labels, annotations); its ``xcp.tetrate.io/contentHash`` annotation is set here,
    in the place it already holds. ``selector`` is the written selector (``{"matchLabels": ...}``,
    one object for all of a gateway's plugins). An empty ``config`` is left out, as a null one is."""
    spec = dict(template)
    spec[_SELECTOR] = selector
    if config:
        spec[_CONFIG] = config
    else:
        del spec[_CONFIG]
    spec[_NAME] = metadata["name"]
    written = spec
    if config:
        written = dict(spec)
        written[_CONFIG] = _CONFIG_JSON.dump_python(config, mode="json")
    metadata["annotations"][ANN_CONTENT_HASH] = content_hash(written)
    plugin = istio.WasmPlugin.model_validate({"metadata": metadata, "spec": spec})
    manifest = {"apiVersion": plugin.api_version, "kind": plugin.kind, "metadata": metadata, "spec": written}
    return plugin, manifest


ANN_CONTENT_HASH = "xcp.tetrate.io/contentHash"
