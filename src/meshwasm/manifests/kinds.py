"""Which model reads which manifest: (API group, kind) -> model class."""

from __future__ import annotations

from meshwasm.manifests import core, istio, tsb
from meshwasm.manifests.base import Resource

MODELS: tuple[type[Resource], ...] = (
    core.Namespace,
    core.ServiceAccount,
    core.Service,
    core.Deployment,
    tsb.WasmExtension,
    tsb.Gateway,
    tsb.Tenant,
    tsb.Workspace,
    tsb.GatewayGroup,
    tsb.IngressGateway,
    tsb.Tier1Gateway,
    tsb.EgressGateway,
    istio.WasmPlugin,
    istio.Gateway,
    istio.VirtualService,
)

_BY_GROUP_KIND: dict[tuple[str, str], type[Resource]] = {(m.GROUP, m.KIND): m for m in MODELS}

# Kinds kustomize never puts in a namespace, besides the ones modelled as cluster-scoped.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "APIService",
    }
)


def group_of(api_version: str) -> str:
    """``apps/v1`` -> ``apps``; ``v1`` -> ``""`` (the core group)."""
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def model_for(api_version: str, kind: str) -> type[Resource] | None:
    """The model for this manifest, or None for a kind meshwasm passes through."""
    return _BY_GROUP_KIND.get((group_of(api_version), kind))
