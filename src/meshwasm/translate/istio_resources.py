"""The Istio side of the control plane: what tsb_to_istio produces and istio_to_envoy reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from meshwasm.manifests import core, istio, tsb
from meshwasm.manifests.base import Passthrough, Resource
from meshwasm.manifests.problems import Problem

# What a cluster needs besides the Istio resources: namespaces, the apps, and unknown kinds.
CORE_KINDS: tuple[type[Resource], ...] = (
    core.Namespace,
    core.ServiceAccount,
    core.Service,
    core.Deployment,
    Passthrough,
)
# TSB resources the translation consumes (they become Istio resources, or are TSB's own).
TSB_KINDS: tuple[type[Resource], ...] = (
    tsb.WasmExtension,
    tsb.Gateway,
    tsb.Tenant,
    tsb.Workspace,
    tsb.GatewayGroup,
    tsb.GatewayInstall,
)


@dataclass
class IstioResources:
    """Istio WasmPlugins, Gateways and VirtualServices, plus the core resources passed through
    untouched (``core``: Namespace, ServiceAccount, Service, Deployment and unknown kinds)."""

    wasm_plugins: list[istio.WasmPlugin] = field(default_factory=list)
    gateways: list[istio.Gateway] = field(default_factory=list)
    virtual_services: list[istio.VirtualService] = field(default_factory=list)
    core: list[Resource] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def all(self) -> list[Resource]:
        """Every resource in apply order: core (namespaces first, as written), Gateways,
        VirtualServices, WasmPlugins."""
        return [*self.core, *self.gateways, *self.virtual_services, *self.wasm_plugins]

    @classmethod
    def from_resources(cls, resources: Iterable[Resource]) -> IstioResources:
        """The Istio and core resources of an already-Istio tree (e.g. a rendered one, loaded back);
        TSB resources are ignored."""
        out = cls()
        for resource in resources:
            if isinstance(resource, istio.WasmPlugin):
                out.wasm_plugins.append(resource)
            elif isinstance(resource, istio.Gateway):
                out.gateways.append(resource)
            elif isinstance(resource, istio.VirtualService):
                out.virtual_services.append(resource)
            elif isinstance(resource, CORE_KINDS):
                out.core.append(resource)
        return out
