"""Istio resources meshwasm emits and reads: WasmPlugin, Gateway, VirtualService.

Field names and enums follow Istio's own CRDs (docs/architecture.md, "Istio control plane"),
which the tests validate every emitted resource against. Only the fields
meshwasm produces or translates to Envoy are typed; others are errors on
read, so a resource that uses them is not silently half-applied.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from meshwasm.manifests.base import Model, OpenModel, Resource
from meshwasm.manifests.tsb import FailStrategy, Phase, PortSelector, PullPolicy, StringMatch, TrafficSelector

WASM_API_VERSION = "extensions.istio.io/v1alpha1"
NETWORKING_API_VERSION = "networking.istio.io/v1"


class LabelSelector(Model):
    match_labels: dict[str, str] = Field(default_factory=dict)


class WasmEnvVar(Model):
    name: str
    value_from: Literal["INLINE", "HOST"] | None = None
    value: str | None = None


class WasmVmConfig(Model):
    env: list[WasmEnvVar] = Field(default_factory=list)


# The kinds a targetRef may name (Istio's validation: allowedTargetRefs), as (group, kind).
TARGET_REF_KINDS = frozenset(
    {
        ("", "Service"),
        ("networking.istio.io", "ServiceEntry"),
        ("gateway.networking.k8s.io", "Gateway"),
        ("gateway.networking.k8s.io", "GatewayClass"),
    }
)


class PolicyTargetReference(Model):
    """``targetRef(s)`` of a WasmPlugin: the Kubernetes Gateway (or Service) it attaches to."""

    group: str = ""
    kind: str
    name: str = Field(min_length=1)
    namespace: str | None = None

    @model_validator(mode="after")
    def _as_istio_validates(self) -> PolicyTargetReference:
        if self.namespace:
            raise ValueError(
                "targetRef namespace must not be set: Istio does not support cross-namespace references"
            )
        if (self.group if self.group != "core" else "", self.kind) not in TARGET_REF_KINDS:
            allowed = ", ".join(f"{g or 'core'}/{k}" for g, k in sorted(TARGET_REF_KINDS))
            raise ValueError(f"targetRef to {self.group or 'core'}/{self.kind}: Istio allows only {allowed}")
        return self


class WasmPluginSpec(Model):
    selector: LabelSelector | None = None
    target_ref: PolicyTargetReference | None = None  # deprecated by Istio in favour of targetRefs
    target_refs: list[PolicyTargetReference] | None = None
    url: str
    sha256: str | None = None
    image_pull_policy: PullPolicy | None = None
    image_pull_secret: str | None = None
    plugin_config: dict[str, Any] | None = None
    plugin_name: str | None = None
    phase: Phase | None = None
    priority: int | None = None
    fail_strategy: FailStrategy | None = None
    vm_config: WasmVmConfig | None = None
    match: list[TrafficSelector] | None = None
    type: Literal["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"] | None = None

    @model_validator(mode="after")
    def _selector_or_target_refs(self) -> WasmPluginSpec:
        # Istio's validation (validateOneOfSelectorType) admits only one way of attaching.
        if self.target_ref is None and not self.target_refs:
            return self  # at most a selector (every WasmPlugin a translation emits): one way at most
        attachments = [
            name
            for name, value in (
                ("selector", self.selector),
                ("targetRef", self.target_ref),
                ("targetRefs", self.target_refs),
            )
            if value
        ]
        if len(attachments) > 1:
            raise ValueError(
                f"only one of selector, targetRef or targetRefs may be set (found {attachments})"
            )
        return self

    @property
    def all_target_refs(self) -> list[PolicyTargetReference]:
        """``targetRefs``, or the deprecated ``targetRef`` as a list of one (as Istio merges them)."""
        if self.target_refs:
            return list(self.target_refs)
        return [self.target_ref] if self.target_ref else []


class WasmPlugin(Resource):
    GROUP: ClassVar[str] = "extensions.istio.io"
    KIND: ClassVar[str] = "WasmPlugin"
    api_version: str = WASM_API_VERSION
    kind: str = "WasmPlugin"
    spec: WasmPluginSpec


class Port(Model):
    number: int = Field(ge=1, le=65535)
    protocol: str
    name: str
    target_port: int | None = None


class ServerTlsSettings(OpenModel):
    mode: Literal[
        "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
    ] = "SIMPLE"
    credential_name: str | None = None
    https_redirect: bool | None = None


class Server(Model):
    port: Port
    hosts: list[str] = Field(min_length=1)
    name: str | None = None
    tls: ServerTlsSettings | None = None
    bind: str | None = None


class GatewaySpec(Model):
    selector: dict[str, str] = Field(default_factory=dict)
    servers: list[Server] = Field(default_factory=list)


class Gateway(Resource):
    GROUP: ClassVar[str] = "networking.istio.io"
    KIND: ClassVar[str] = "Gateway"
    api_version: str = NETWORKING_API_VERSION
    kind: str = "Gateway"
    spec: GatewaySpec


__all__ = [
    "Destination",
    "Gateway",
    "GatewaySpec",
    "HttpMatchRequest",
    "HttpRoute",
    "LabelSelector",
    "PolicyTargetReference",
    "Port",
    "PortSelector",
    "RouteDestination",
    "Server",
    "ServerTlsSettings",
    "StringMatch",
    "TrafficSelector",
    "VirtualService",
    "VirtualServiceSpec",
    "WasmEnvVar",
    "WasmPlugin",
    "WasmPluginSpec",
    "WasmVmConfig",
]


class Destination(Model):
    host: str
    port: PortSelector | None = None
    subset: str | None = None


class RouteDestination(Model):
    destination: Destination
    weight: int | None = None


class HttpMatchRequest(Model):
    name: str | None = None
    uri: StringMatch | None = None
    headers: dict[str, StringMatch] | None = None


class HttpRoute(Model):
    name: str | None = None
    match: list[HttpMatchRequest] | None = None
    route: list[RouteDestination] = Field(min_length=1)
    timeout: str | None = None


class VirtualServiceSpec(Model):
    hosts: list[str] = Field(min_length=1)
    gateways: list[str] = Field(default_factory=list)
    http: list[HttpRoute] = Field(default_factory=list)
    export_to: list[str] | None = None


class VirtualService(Resource):
    GROUP: ClassVar[str] = "networking.istio.io"
    KIND: ClassVar[str] = "VirtualService"
    api_version: str = NETWORKING_API_VERSION
    kind: str = "VirtualService"
    spec: VirtualServiceSpec
