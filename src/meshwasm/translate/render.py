"""Pure rendering of translation results into documents: Istio YAML, a static Envoy bootstrap.

:func:`static_bootstrap` makes one self-contained Envoy config from an
:class:`EnvoyConfig`: listeners and clusters as static resources, each ECDS
filter inlined in place of its ``config_discovery`` reference. That is what
``envoy --mode validate`` can check fully (it does not read ECDS sources,
but it does load an inline Wasm filter's module) and what ``envoy -c`` runs
without an xDS directory.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from meshwasm.envoy.resources import Json, socket_address
from meshwasm.manifests import core, istio
from meshwasm.manifests.base import Resource
from meshwasm.translate.istio_resources import IstioResources
from meshwasm.translate.istio_to_envoy import ROOT_NAMESPACE, EnvoyConfig

_UNSAFE = re.compile(r"[^a-z0-9.-]+")
# libyaml's emitter when PyYAML has it: the same YAML, several times faster for large trees.
_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def istio_documents(resources: IstioResources) -> list[dict[str, Any]]:
    """Every resource as a manifest dict, in apply order."""
    return [r.to_manifest() for r in resources.all()]


def istio_yaml(resources: IstioResources) -> str:
    """All resources as one multi-document YAML stream."""
    return yaml.dump_all(istio_documents(resources), Dumper=_Dumper, sort_keys=False, explicit_start=True)


def manifest_file_name(index: int, resource: Resource) -> str:
    """``03-wasmplugin-tier2-tier2-gateway-wasm-add-header0.yaml``: sorted like apply order."""
    parts = [resource.kind, resource.namespace or "", resource.name]
    stem = _UNSAFE.sub("-", "-".join(p for p in parts if p).lower()).strip("-")
    return f"{index:03d}-{stem}.yaml"


def istio_files(resources: IstioResources) -> dict[str, str]:
    """One file per resource plus a ``kustomization.yaml`` listing them in order, so the output
    directory is itself a tree that ``kubectl apply -k`` and ``meshwasm render`` read."""
    files: dict[str, str] = {}
    for index, resource in enumerate(resources.all()):
        files[manifest_file_name(index, resource)] = yaml.dump(
            resource.to_manifest(), Dumper=_Dumper, sort_keys=False
        )
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(files),
    }
    files["kustomization.yaml"] = "# Rendered by `meshwasm render --to istio`.\n" + yaml.safe_dump(
        kustomization, sort_keys=False
    )
    return files


@dataclass(frozen=True)
class Workload:
    """A gateway workload: the namespace and labels an Istio Gateway selects."""

    namespace: str
    name: str
    labels: Mapping[str, str]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def gateway_workloads(resources: IstioResources) -> list[Workload]:
    """One workload per distinct (namespace, selector) of the Istio Gateways, named after the
    first Gateway that selects it."""
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], Workload] = {}
    for gateway in resources.gateways:
        namespace = gateway.namespace or "default"
        key = (namespace, tuple(sorted(gateway.spec.selector.items())))
        seen.setdefault(key, Workload(namespace, gateway.name, dict(gateway.spec.selector)))
    return list(seen.values())


def _subsets(labels: Mapping[str, str]) -> list[frozenset[tuple[str, str]]]:
    items = sorted(labels.items())
    return [
        frozenset(item for bit, item in enumerate(items) if mask >> bit & 1)
        for mask in range(1 << len(items))
    ]


def workload_views(resources: IstioResources) -> list[tuple[Workload, IstioResources]]:
    """Each gateway workload with only the resources that can apply to it, found through indexes
    so rendering every workload of a large tree stays linear in its size.

    A Gateway or WasmPlugin applies when its selector is a subset of the workload's labels, so the
    lookups enumerate the subsets of those labels (a handful) instead of scanning every resource;
    :func:`istio_to_envoy` then applies its own exact selection to the small view.
    """
    gateways: dict[frozenset[tuple[str, str]], list[istio.Gateway]] = {}
    for gateway in resources.gateways:
        gateways.setdefault(frozenset(gateway.spec.selector.items()), []).append(gateway)
    services: dict[str, list[istio.VirtualService]] = {}
    for vs in resources.virtual_services:
        for ref in vs.spec.gateways:
            key = ref if "/" in ref else f"{vs.namespace or 'default'}/{ref}"
            services.setdefault(key, []).append(vs)
    plugins: dict[tuple[str, frozenset[tuple[str, str]]], list[istio.WasmPlugin]] = {}
    for plugin in resources.wasm_plugins:
        selector = plugin.spec.selector.match_labels if plugin.spec.selector else {}
        plugins.setdefault((plugin.namespace or "default", frozenset(selector.items())), []).append(plugin)
    kube_services: dict[str, list[Resource]] = {}
    for resource in resources.core:
        if isinstance(resource, core.Service):
            kube_services.setdefault(resource.namespace or "default", []).append(resource)
    views = []
    for workload in gateway_workloads(resources):
        subsets = _subsets(workload.labels)
        # The workload's namespace's Services: one selecting the gateway turns ports into targetPorts.
        view = IstioResources(core=list(kube_services.get(workload.namespace, [])))
        for subset in subsets:
            view.gateways.extend(gateways.get(subset, []))
            for namespace in dict.fromkeys((workload.namespace, ROOT_NAMESPACE)):
                view.wasm_plugins.extend(plugins.get((namespace, subset), []))
        seen: set[int] = set()
        for gateway in view.gateways:
            for vs in services.get(f"{gateway.namespace or 'default'}/{gateway.name}", []):
                if id(vs) not in seen:
                    seen.add(id(vs))
                    view.virtual_services.append(vs)
        views.append((workload, view))
    return views


def destinations(resources: IstioResources) -> list[tuple[str, int]]:
    """Every ``(host, port)`` the VirtualServices route to, in order, once each."""
    out: dict[tuple[str, int], None] = {}
    for vs in resources.virtual_services:
        for route in vs.spec.http:
            for dest in route.route:
                if dest.destination.port is not None:
                    out[(dest.destination.host, dest.destination.port.number)] = None
    return list(out)


def original_module_url(plugin: istio.WasmPlugin) -> str | None:
    """The module URL a wasmfetcher URL (``.../fetch/<base64(url)>``) stands for, else None."""
    import base64
    import binascii

    head, sep, encoded = plugin.spec.url.rpartition("/fetch/")
    if not sep or not head:
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _without_type(resource: Json) -> Json:
    out = dict(resource)
    out.pop("@type", None)
    return out


def static_bootstrap(
    config: EnvoyConfig,
    *,
    node_id: str = "meshwasm-gateway",
    cluster: str = "meshwasm",
    admin_address: str = "127.0.0.1",
    admin_port: int = 15000,
) -> Json:
    """A self-contained bootstrap: static listeners and clusters, ECDS filters inlined."""
    filters = {f["name"]: f["typed_config"] for f in config.filters}
    listeners = copy.deepcopy([_without_type(listener) for listener in config.listeners])
    for listener in listeners:
        for chain in listener.get("filter_chains", []):
            # NETWORK WasmPlugins are ECDS network filters ahead of the connection manager.
            chain["filters"] = [_inline(f, filters) for f in chain.get("filters", [])]
            for network_filter in chain["filters"]:
                hcm = network_filter.get("typed_config", {})
                if "http_filters" in hcm:
                    hcm["http_filters"] = [_inline(f, filters) for f in hcm["http_filters"]]
    return {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {"address": socket_address(admin_address, admin_port)},
        "static_resources": {
            "listeners": listeners,
            "clusters": [_without_type(c) for c in config.clusters],
        },
    }


def _inline(ecds_filter: Json, filters: Mapping[str, Json]) -> Json:
    if "config_discovery" not in ecds_filter:
        return ecds_filter
    return {"name": ecds_filter["name"], "typed_config": filters[ecds_filter["name"]]}


def bootstrap_json(bootstrap: Json) -> str:
    return json.dumps(bootstrap, indent=1) + "\n"


def envoy_files(bootstraps: Sequence[tuple[Workload, Json]]) -> dict[str, str]:
    """``bootstrap-<namespace>-<gateway>.json`` per workload."""
    return {
        f"bootstrap-{_slug(workload.namespace)}-{_slug(workload.name)}.json": bootstrap_json(bootstrap)
        for workload, bootstrap in bootstraps
    }


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text.lower())
