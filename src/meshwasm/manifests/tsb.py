"""TSB resources (GitOps form): WasmExtension, Gateway, Tenant, Workspace, gateway Group, installs.

In TSB's GitOps form the place of a resource in the hierarchy is given by
annotations (``tsb.tetrate.io/organization``, ``tenant``, ``workspace``,
``gatewayGroup``); :meth:`TsbResource.fqn` turns them into TSB's fully
qualified name, as the seed's WasmPlugin annotation shows it.

What meshwasm translates is strict (an unknown field in a WasmExtension or
an HTTP server is an error: it is usually a typo, and silently dropping it
would change behaviour); the rest is kept as written.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, model_validator

from meshwasm.manifests.base import Model, OpenModel, Resource

Phase = Literal["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]
PullPolicy = Literal["UNSPECIFIED_POLICY", "IfNotPresent", "Always"]
FailStrategy = Literal["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"]

ANN_ORGANIZATION = "tsb.tetrate.io/organization"
ANN_TENANT = "tsb.tetrate.io/tenant"
ANN_WORKSPACE = "tsb.tetrate.io/workspace"
ANN_GATEWAY_GROUP = "tsb.tetrate.io/gatewayGroup"
# meshwasm's own: a JSON Schema for an extension's config, inline or as a file
# next to the manifest (the loader reads the file; see WasmExtension.config_schema).
ANN_CONFIG_SCHEMA = "meshwasm.io/config-schema"
ANN_CONFIG_SCHEMA_FILE = "meshwasm.io/config-schema-file"


class TsbResource(Resource):
    """A TSB resource: its organization and parents come from annotations."""

    def annotation(self, key: str) -> str | None:
        return self.metadata.annotations.get(key)

    @property
    def organization(self) -> str | None:
        return self.annotation(ANN_ORGANIZATION)


# -- extensions ------------------------------------------------------------------------------


class EnvVar(Model):
    name: str = Field(min_length=1)
    value_from: Literal["INLINE", "HOST"] = "INLINE"
    value: str | None = None


class VmConfig(Model):
    env: list[EnvVar] = Field(default_factory=list)


class PortSelector(Model):
    number: int = Field(ge=1, le=65535)


class TrafficSelector(Model):
    mode: Literal["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"] = "UNDEFINED"
    ports: list[PortSelector] = Field(default_factory=list)


class WasmExtensionSpec(Model):
    """``extension.tsb.tetrate.io/v2`` WasmExtension spec (docs/architecture.md, "TSB").

    ``failStrategy`` is meshwasm's addition (carried to the WasmPlugin); TSB
    leaves it to Istio's default, FAIL_CLOSE.
    """

    url: str | None = None
    image: str | None = None  # deprecated in TSB in favour of url
    source: str | None = None
    config: dict[str, Any] | None = None
    description: str | None = None
    priority: int = 0
    phase: Phase | None = None
    allowed_in: list[str] = Field(default_factory=list)
    image_pull_policy: PullPolicy | None = None
    image_pull_secret: str | None = None
    vm_config: VmConfig | None = None
    match: list[TrafficSelector] = Field(default_factory=list)
    fail_strategy: FailStrategy | None = None

    @model_validator(mode="after")
    def _one_module_reference(self) -> WasmExtensionSpec:
        if not self.url and not self.image:
            raise ValueError("set spec.url (or the deprecated spec.image) to the module's oci:// or http URL")
        if self.url and self.image and self.url != self.image:
            raise ValueError("spec.url and spec.image name different modules; keep only spec.url")
        return self

    @property
    def module_url(self) -> str:
        return self.url or self.image or ""


class WasmExtension(TsbResource):
    GROUP: ClassVar[str] = "extension.tsb.tetrate.io"
    KIND: ClassVar[str] = "WasmExtension"
    spec: WasmExtensionSpec

    # Set by the loader from ANN_CONFIG_SCHEMA_FILE; the inline annotation is parsed on demand.
    _schema_from_file: dict[str, Any] | None = PrivateAttr(default=None)

    def set_schema_from_file(self, schema: dict[str, Any]) -> None:
        self._schema_from_file = schema

    @property
    def fqn(self) -> str:
        return f"organizations/{self.organization}/extensions/{self.name}"

    @property
    def config_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of this extension's config: annotation ``meshwasm.io/config-schema``
        (inline JSON) or ``meshwasm.io/config-schema-file`` (a path relative to the manifest)."""
        if self._schema_from_file is not None:
            return self._schema_from_file
        raw = self.annotation(ANN_CONFIG_SCHEMA)
        if raw is None:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None


# -- gateways ------------------------------------------------------------------------------


class StringMatch(Model):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StringMatch:
        if sum(v is not None for v in (self.exact, self.prefix, self.regex)) != 1:
            raise ValueError("set exactly one of exact, prefix, regex")
        return self


class HttpMatchCondition(Model):
    uri: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)


class ServiceDestination(Model):
    host: str = Field(description="namespace/fqdn of the service")
    port: int | None = Field(default=None, ge=1, le=65535)
    weight: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _namespaced_host(self) -> ServiceDestination:
        namespace, _, fqdn = self.host.partition("/")
        if not namespace or not fqdn:
            raise ValueError(
                f"host {self.host!r} must be namespace/fqdn, e.g. httpbin/httpbin.httpbin.svc.cluster.local"
            )
        return self

    @property
    def fqdn(self) -> str:
        return self.host.partition("/")[2]

    @property
    def service_namespace(self) -> str:
        return self.host.partition("/")[0]


class HttpRoute(Model):
    service_destination: ServiceDestination


class HttpRule(Model):
    match: list[HttpMatchCondition] = Field(default_factory=list)
    route: HttpRoute


class HttpRouting(Model):
    rules: list[HttpRule] = Field(min_length=1)


class ServerTls(OpenModel):
    mode: Literal["DISABLED", "SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"] = "DISABLED"
    secret_name: str | None = None


class HttpServer(Model):
    name: str = Field(min_length=1)
    hostname: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    tls: ServerTls | None = None
    routing: HttpRouting

    @property
    def tls_enabled(self) -> bool:
        return self.tls is not None and self.tls.mode != "DISABLED"


class Attachment(Model):
    """A WasmExtension attached to a gateway: ``fqn`` of the extension plus a config overlay."""

    fqn: str = Field(pattern=r"^organizations/[^/]+/extensions/[^/]+$")
    config: dict[str, Any] | None = None


class WorkloadSelector(Model):
    namespace: str = Field(min_length=1)
    labels: dict[str, str] = Field(min_length=1)


class GatewaySpec(OpenModel):
    display_name: str | None = None
    description: str | None = None
    workload_selector: WorkloadSelector
    http: list[HttpServer] = Field(default_factory=list)
    wasm_plugins: list[Attachment] = Field(default_factory=list)
    extension: list[Attachment] = Field(default_factory=list)


class Gateway(TsbResource):
    """``gateway.tsb.tetrate.io/v2`` Gateway (TSB's unified gateway)."""

    GROUP: ClassVar[str] = "gateway.tsb.tetrate.io"
    KIND: ClassVar[str] = "Gateway"
    spec: GatewaySpec

    @property
    def tenant(self) -> str | None:
        return self.annotation(ANN_TENANT)

    @property
    def workspace(self) -> str | None:
        return self.annotation(ANN_WORKSPACE)

    @property
    def gateway_group(self) -> str | None:
        return self.annotation(ANN_GATEWAY_GROUP)

    @property
    def fqn(self) -> str:
        return (
            f"organizations/{self.organization}/tenants/{self.tenant}/workspaces/{self.workspace}"
            f"/gatewaygroups/{self.gateway_group}/unifiedgateways/{self.name}"
        )

    def attachments(self) -> list[tuple[str, Attachment]]:
        """``(field path, attachment)`` for ``wasmPlugins`` then ``extension``, in order."""
        return [(f"spec.wasmPlugins[{i}]", a) for i, a in enumerate(self.spec.wasm_plugins)] + [
            (f"spec.extension[{i}]", a) for i, a in enumerate(self.spec.extension)
        ]


# -- hierarchy ------------------------------------------------------------------------------


class NamespaceSelector(OpenModel):
    names: list[str] = Field(default_factory=list)


class TenantSpec(OpenModel):
    display_name: str | None = None


class Tenant(TsbResource):
    GROUP: ClassVar[str] = "tsb.tetrate.io"
    KIND: ClassVar[str] = "Tenant"
    spec: TenantSpec = Field(default_factory=TenantSpec)

    @property
    def fqn(self) -> str:
        return f"organizations/{self.organization}/tenants/{self.name}"


class WorkspaceSpec(OpenModel):
    display_name: str | None = None
    namespace_selector: NamespaceSelector = Field(default_factory=NamespaceSelector)


class Workspace(TsbResource):
    GROUP: ClassVar[str] = "tsb.tetrate.io"
    KIND: ClassVar[str] = "Workspace"
    spec: WorkspaceSpec = Field(default_factory=WorkspaceSpec)

    @property
    def tenant(self) -> str | None:
        return self.annotation(ANN_TENANT)


class GroupSpec(OpenModel):
    display_name: str | None = None
    namespace_selector: NamespaceSelector = Field(default_factory=NamespaceSelector)
    config_mode: Literal["BRIDGED", "DIRECT"] = "BRIDGED"


class GatewayGroup(TsbResource):
    """``gateway.tsb.tetrate.io/v2`` Group: the gateway group a Gateway belongs to."""

    GROUP: ClassVar[str] = "gateway.tsb.tetrate.io"
    KIND: ClassVar[str] = "Group"
    spec: GroupSpec = Field(default_factory=GroupSpec)

    @property
    def tenant(self) -> str | None:
        return self.annotation(ANN_TENANT)

    @property
    def workspace(self) -> str | None:
        return self.annotation(ANN_WORKSPACE)


class InstallSpec(OpenModel):
    kube_spec: dict[str, Any] = Field(default_factory=dict)


class GatewayInstall(Resource):
    """``install.tetrate.io`` gateway installs (IngressGateway, Tier1Gateway, ...): they deploy the
    gateway workload, a Deployment and Service named after the resource with label ``app: <name>``."""

    GROUP: ClassVar[str] = "install.tetrate.io"
    spec: InstallSpec = Field(default_factory=InstallSpec)

    def workload_labels(self) -> dict[str, str]:
        return {"app": self.name, "istio": "ingressgateway"}


class IngressGateway(GatewayInstall):
    KIND: ClassVar[str] = "IngressGateway"


class Tier1Gateway(GatewayInstall):
    KIND: ClassVar[str] = "Tier1Gateway"


class EgressGateway(GatewayInstall):
    KIND: ClassVar[str] = "EgressGateway"
