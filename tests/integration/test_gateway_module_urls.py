"""The local gateway's agent fetches the module URL istiod sends, not the one written.

istiod reads a WasmPlugin url with Go's net/url (docs/fidelity.md, 7d): no scheme means ``oci://``
and the scheme is lower-cased, so ``OCI://registry/m:v1`` reaches the agent as ``oci://...``.
``meshwasm up`` must pull that image from the real registry, and the translation must then run
that module rather than the fail-closed stand-in. (A scheme-less url cannot name a registry with a
port: istiod drops it; the fidelity suite checks that.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fixtures.oci_modules import synthetic_module
from meshwasm.envoy import resources as r
from meshwasm.gateway.agent import ModuleAgent
from meshwasm.gateway.runner import LocalGateway, UpOptions
from meshwasm.manifests import istio
from meshwasm.manifests.base import ObjectMeta
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference
from meshwasm.translate import IstioResources, istio_to_envoy

pytestmark = pytest.mark.registry


def test_the_url_istiod_sends_is_the_one_pulled(registry: LocalRegistry, tmp_path: Path) -> None:
    module = synthetic_module(2048)
    with RegistryClient() as client:
        client.push_image(build_image(module), parse_reference(f"oci://{registry.address}/upper/x:v1"))
    plugin = istio.WasmPlugin(
        metadata=ObjectMeta(name="noscheme", namespace="edge"),
        spec=istio.WasmPluginSpec(url=f"OCI://{registry.address}/upper/x:v1"),
    )
    resources = IstioResources(wasm_plugins=[plugin])
    said: list[str] = []
    gateway = LocalGateway(UpOptions(tree=tmp_path, cache_dir=tmp_path / "cache"), said.append)
    try:
        gateway.agent = ModuleAgent(tmp_path / "agent", allowed_hosts=[registry.address])
        files = gateway.resolve_modules(resources, forced=set())
    finally:
        shutil.rmtree(gateway.workdir, ignore_errors=True)
    oci_url = f"oci://{registry.address}/upper/x:v1"
    assert set(files) == {oci_url}, said
    assert Path(files[oci_url]).read_bytes() == module
    assert any(f"resolving module for edge/noscheme: {oci_url}" in line for line in said)
    # The translation finds that module under the URL istiod sends.
    resources.gateways.append(
        istio.Gateway.model_validate(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "Gateway",
                "metadata": {"name": "edge", "namespace": "edge"},
                "spec": {
                    "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]
                },
            }
        )
    )
    config = istio_to_envoy(
        resources,
        workload_labels={"app": "edge"},
        workload_namespace="edge",
        module_files=files,
        upstreams={},
        xds=lambda _name: r.ads_config_source(),
    )
    (ecds,) = config.filters
    assert ecds["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] == files[oci_url]
