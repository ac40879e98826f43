"""A Kubernetes API client on manifest dicts (lightkube underneath): get, server-side apply,
list by label, delete, token requests. Kinds are resolved from the server, so custom resources
(WasmPlugin, ...) work once their CRDs are installed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkube import ApiError, Client, KubeConfig
from lightkube.codecs import resource_registry
from lightkube.core.exceptions import ConfigError, LoadResourceError
from lightkube.generic_resource import load_in_cluster_generic_resources
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccountToken

from meshwasm.errors import ExitCode, MeshwasmError

Manifest = dict[str, Any]


@dataclass(frozen=True)
class FieldCause:
    field: str
    message: str


class ServerRejected(MeshwasmError):
    """The API server refused one object (validation, admission, conflict)."""

    def __init__(self, reason: str, message: str, causes: list[FieldCause], code: int):
        super().__init__(message, exit_code=ExitCode.USAGE)
        self.reason = reason
        self.causes = causes
        self.code = code


def describe(doc: Manifest) -> str:
    meta = doc.get("metadata", {})
    ns = meta.get("namespace")
    return f"{doc.get('kind')} {ns}/{meta.get('name')}" if ns else f"{doc.get('kind')} {meta.get('name')}"


def _rejected(exc: ApiError) -> ServerRejected:
    status = exc.status
    causes = []
    details = status.details
    for cause in (details.causes if details and details.causes else []) or []:
        causes.append(FieldCause(cause.field or "", cause.message or cause.reason or ""))
    return ServerRejected(status.reason or "", status.message or str(exc), causes, status.code or 0)


class KubeClient:
    def __init__(self, kubeconfig: Path | None = None, *, context: str | None = None, field_manager: str):
        try:
            config = (KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()).get(
                context_name=context
            )
        except (ConfigError, OSError) as exc:
            where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
            raise MeshwasmError(
                f"cannot read the kubeconfig {where}: {exc}",
                hint="pass --kubeconfig PATH (`meshwasm cluster up` prints its own)",
                exit_code=ExitCode.NOT_FOUND,
            ) from exc
        if config is None:
            raise MeshwasmError(f"the kubeconfig {kubeconfig or ''} has no context {context or ''}".strip())
        self.server = config.cluster.server
        self.client = Client(config, field_manager=field_manager, lazy=False)
        self.field_manager = field_manager
        self._crds_loaded = False

    # ----- kinds

    def resource_class(self, doc: Manifest) -> Any:
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        try:
            return resource_registry.load(api_version, kind)
        except LoadResourceError:
            pass
        if not self._crds_loaded:
            self.refresh_kinds()
            with contextlib.suppress(LoadResourceError):
                return resource_registry.load(api_version, kind)
        raise MeshwasmError(
            f"{describe(doc)}: the server knows no kind {kind} in {api_version}",
            hint="install its CustomResourceDefinition first (Istio's CRDs for WasmPlugin, Gateway, ...)",
            exit_code=ExitCode.USAGE,
        )

    def refresh_kinds(self) -> None:
        """Learn the server's custom resource kinds (after CRDs were installed)."""
        self._guard(lambda: load_in_cluster_generic_resources(self.client))
        self._crds_loaded = True

    def _obj(self, doc: Manifest) -> Any:
        return self.resource_class(doc).from_dict(doc)

    # ----- calls

    def _guard(self, call: Any) -> Any:
        try:
            return call()
        except ApiError:
            raise
        except Exception as exc:  # transport errors: httpx2's and the OS's
            if isinstance(exc, MeshwasmError):
                raise
            raise MeshwasmError(
                f"cannot reach the Kubernetes API server at {self.server}: {exc}",
                exit_code=ExitCode.NETWORK,
            ) from exc

    def get(self, doc: Manifest) -> Manifest | None:
        cls = self.resource_class(doc)
        meta = doc["metadata"]
        try:
            obj = self._guard(lambda: self.client.get(cls, meta["name"], namespace=meta.get("namespace")))
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise _rejected(exc) from exc
        out: Manifest = obj.to_dict()
        return out

    def apply(self, doc: Manifest, *, dry_run: bool = False, force: bool = False) -> Manifest:
        """Server-side apply ``doc`` with this client's field manager; the object as the server has it."""
        obj = self._obj(doc)
        try:
            result = self._guard(
                lambda: self.client.apply(obj, field_manager=self.field_manager, force=force, dry_run=dry_run)
            )
        except ApiError as exc:
            raise _rejected(exc) from exc
        out: Manifest = result.to_dict()
        return out

    def list(self, api_version: str, kind: str, *, labels: dict[str, Any]) -> list[Manifest]:
        cls = self.resource_class({"apiVersion": api_version, "kind": kind, "metadata": {}})
        namespaced = "Namespaced" in " ".join(c.__name__ for c in cls.__mro__)
        try:
            items = self._guard(
                lambda: list(self.client.list(cls, namespace="*" if namespaced else None, labels=labels))
            )
        except ApiError as exc:
            if exc.status.code == 404:
                return []
            raise _rejected(exc) from exc
        out = []
        for item in items:
            data = item.to_dict()
            data.setdefault("apiVersion", api_version)
            data.setdefault("kind", kind)
            out.append(data)
        return out

    def delete(self, doc: Manifest) -> None:
        cls = self.resource_class(doc)
        meta = doc["metadata"]
        try:
            self._guard(lambda: self.client.delete(cls, meta["name"], namespace=meta.get("namespace")))
        except ApiError as exc:
            if exc.status.code != 404:
                raise _rejected(exc) from exc

    def service_account_token(self, namespace: str, name: str, *, audience: str, seconds: int) -> str:
        """A token for ``namespace/name`` (what `kubectl create token` gets) for ``audience``."""
        request = ServiceAccountToken(
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec=TokenRequestSpec(audiences=[audience], expirationSeconds=seconds),
        )
        try:
            result = self._guard(lambda: self.client.create(request, name, namespace=namespace))
        except ApiError as exc:
            raise _rejected(exc) from exc
        token: str = result.status.token
        return token

    def watch_until(self, doc: Manifest, check: Any, *, timeout: float) -> Manifest | None:
        """Poll ``doc`` until ``check(obj)`` is true; the object, or None at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(doc)
            if obj is not None and check(obj):
                return obj
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client._client._client.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def iter_docs(text: str) -> Iterator[Manifest]:
    import yaml

    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc:
            yield doc


__all__ = ["FieldCause", "KubeClient", "ServerRejected", "describe", "iter_docs"]
