"""A WasmPlugin's ``imagePullSecret``, looked up as istiod looks it up (pure).

istiod (1) normalises the name (pilot/pkg/model/credentials: ``ToResourceName``,
``ParseResourceName``) and forces the WasmPlugin's own namespace (pilot/pkg/model/extensions.go:
the Secret must sit beside the WasmPlugin); a name it cannot parse is dropped, as if no secret
were named. (2) Its ECDS generator reads only ``kubernetes://<namespace>/<name>`` references
(pilot/pkg/xds/ecds.go) through the credentials controller, which wants a Secret of type
``kubernetes.io/dockerconfigjson`` with a ``.dockerconfigjson`` key
(pilot/pkg/credentials/kube/secrets.go ``GetDockerCredential``). (3) Whatever it cannot read is
sent to the agent as an empty secret (pilot/pkg/networking/core/extension/extensionfilter.go),
and the agent then refuses the fetch: "missing image pulling secret" (pkg/wasm/convert.go), so
the failStrategy applies, for http:// URLs too.

Locally the Secrets come from the tree (``kind: Secret`` manifests) and from ``meshwasm up
--pull-secret FILE``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshwasm.errors import UsageError
from meshwasm.manifests.base import Resource

DOCKER_CONFIG_JSON_TYPE = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_JSON_KEY = ".dockerconfigjson"
_KUBERNETES = "kubernetes://"
_TYPED_PREFIXES = ("configmap://", _KUBERNETES, "kubernetes-gateway://")


@dataclass(frozen=True)
class PullSecret:
    """What the agent gets for one WasmPlugin.

    ``docker_config`` is None when no (usable) secret is named: the agent pulls anonymously
    (Istio's default keychain, which has no credentials in a gateway pod); ``b""`` when one is named
    but istiod could not read it (the fetch fails); else the ``.dockerconfigjson`` bytes.
    ``problem`` says why a named secret is unusable.
    """

    docker_config: bytes | None
    problem: str | None = None

    @property
    def missing(self) -> bool:
        return self.docker_config == b""


NO_SECRET = PullSecret(None)


def _resource_name(image_pull_secret: str, namespace: str) -> str | None:
    """istiod's normalised reference (``<type>://<namespace>/<name>``), or None when it drops it."""
    name = image_pull_secret
    if name.startswith("builtin://"):
        return None  # becomes "default", an unknown resource type
    if name.startswith("invalid://"):
        return f"invalid://{namespace}/"
    if not name.startswith(_TYPED_PREFIXES):
        name = _KUBERNETES + name
    kind, _, rest = name.partition("://")
    parts = rest.split("/")
    if kind == "kubernetes":
        secret = parts[1] if len(parts) > 1 else parts[0]
    else:  # configmap://, kubernetes-gateway:// need namespace/name
        if len(parts) <= 1 or not parts[0] or not parts[1]:
            return None
        secret = parts[1]
    return f"{kind}://{namespace}/{secret}"


def lookup(image_pull_secret: str | None, namespace: str, secrets: Iterable[Mapping[str, Any]]) -> PullSecret:
    """The pull secret istiod sends the agent for a WasmPlugin in ``namespace`` naming
    ``image_pull_secret``, given the cluster's (the tree's) Secret manifests."""
    if not image_pull_secret:
        return NO_SECRET
    reference = _resource_name(image_pull_secret, namespace)
    if reference is None:
        return NO_SECRET
    if not reference.startswith(_KUBERNETES) or len(reference[len(_KUBERNETES) :].split("/")) != 2:
        return PullSecret(b"", f"imagePullSecret {image_pull_secret!r} is not a Kubernetes Secret reference")
    secret_namespace, name = reference[len(_KUBERNETES) :].split("/")
    where = f"Secret {secret_namespace}/{name}"
    for secret in secrets:
        metadata = secret.get("metadata") or {}
        if metadata.get("name") != name or (metadata.get("namespace") or "default") != secret_namespace:
            continue
        if secret.get("type") != DOCKER_CONFIG_JSON_TYPE:
            kind = secret.get("type")
            return PullSecret(b"", f"{where} is of type {kind!r}, not {DOCKER_CONFIG_JSON_TYPE}")
        value = _secret_value(secret, DOCKER_CONFIG_JSON_KEY)
        if value is None:
            return PullSecret(b"", f"{where} has no {DOCKER_CONFIG_JSON_KEY} key")
        if not value:
            return PullSecret(b"", f"{where} has an empty {DOCKER_CONFIG_JSON_KEY}")
        return PullSecret(value)
    return PullSecret(
        b"",
        f"no {where} (the Secret must be in the WasmPlugin's namespace; give it in the tree or "
        "with --pull-secret FILE)",
    )


def _secret_value(secret: Mapping[str, Any], key: str) -> bytes | None:
    """``data[key]`` base64-decoded, else ``stringData[key]`` (what the API server would store)."""
    data = secret.get("data") or {}
    if isinstance(data, Mapping) and isinstance(data.get(key), str):
        try:
            return base64.b64decode(data[key], validate=True)
        except (binascii.Error, ValueError):
            return None
    string_data = secret.get("stringData") or {}
    if isinstance(string_data, Mapping) and isinstance(string_data.get(key), str):
        return str(string_data[key]).encode()
    return None


def secrets_in(resources: Iterable[Resource]) -> list[dict[str, Any]]:
    """The ``kind: Secret`` manifests among a tree's resources (they pass through untyped)."""
    return [r.to_manifest() for r in resources if r.kind == "Secret" and r.api_version == "v1"]


def load_secret_files(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Secret manifests from files (``meshwasm up --pull-secret``): YAML or JSON, one or more
    documents, each a namespaced ``v1`` Secret."""
    found: list[dict[str, Any]] = []
    for path in paths:
        try:
            documents = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
        except OSError as exc:
            raise UsageError(f"--pull-secret {path}: cannot read it ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise UsageError(f"--pull-secret {path}: not YAML or JSON ({exc})") from exc
        if not documents:
            raise UsageError(f"--pull-secret {path}: the file holds no Secret")
        for i, doc in enumerate(documents):
            where = f"--pull-secret {path} (document {i + 1})"
            if not isinstance(doc, dict) or doc.get("kind") != "Secret" or doc.get("apiVersion") != "v1":
                raise UsageError(f"{where}: not a v1 Secret manifest")
            metadata = doc.get("metadata")
            if not isinstance(metadata, dict) or not metadata.get("name") or not metadata.get("namespace"):
                raise UsageError(
                    f"{where}: the Secret needs metadata.name and metadata.namespace",
                    hint="Istio reads an imagePullSecret from the WasmPlugin's own namespace; put the "
                    "Secret there",
                )
            found.append(doc)
    return found
