"""Core Kubernetes resources the seed's tree holds: Namespace, ServiceAccount, Service, Deployment.

Only what meshwasm reads is typed (service ports, the Deployment's
container images, which the local gateway maps to real upstreams); every
other field is kept as written.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from meshwasm.manifests.base import OpenModel, Resource


class Namespace(Resource):
    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "Namespace"
    NAMESPACED: ClassVar[bool] = False


class ServiceAccount(Resource):
    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "ServiceAccount"


class ServicePort(OpenModel):
    port: int = Field(ge=1, le=65535)
    name: str | None = None
    target_port: int | str | None = None
    protocol: str | None = None


class ServiceSpec(OpenModel):
    ports: list[ServicePort] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)


class Service(Resource):
    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "Service"
    spec: ServiceSpec = Field(default_factory=ServiceSpec)

    def fqdn(self, cluster_domain: str = "cluster.local") -> str:
        """``name.namespace.svc.cluster.local``, the host a serviceDestination names."""
        return f"{self.name}.{self.namespace or 'default'}.svc.{cluster_domain}"


class ContainerPort(OpenModel):
    container_port: int = Field(ge=1, le=65535)
    name: str | None = None


class Container(OpenModel):
    name: str
    image: str | None = None
    ports: list[ContainerPort] = Field(default_factory=list)


class PodSpec(OpenModel):
    containers: list[Container] = Field(default_factory=list)
    service_account_name: str | None = None


class TemplateMeta(OpenModel):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class PodTemplate(OpenModel):
    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    spec: PodSpec = Field(default_factory=PodSpec)


class DeploymentSpec(OpenModel):
    replicas: int | None = None
    selector: dict[str, object] = Field(default_factory=dict)
    template: PodTemplate = Field(default_factory=PodTemplate)


class Deployment(Resource):
    GROUP: ClassVar[str] = "apps"
    KIND: ClassVar[str] = "Deployment"
    spec: DeploymentSpec = Field(default_factory=DeploymentSpec)
