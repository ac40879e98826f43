"""The shape every Kubernetes-style resource shares, and the model conventions.

Models take the manifests' camelCase field names (``workloadSelector``) and
expose snake_case attributes. :meth:`Resource.to_manifest` writes them back
in Kubernetes' order (apiVersion, kind, metadata, spec) without empty fields.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic.alias_generators import to_camel

from meshwasm.manifests.problems import SourceRef


class Model(BaseModel):
    """A strict part of a manifest: unknown fields are errors (they are usually typos)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class OpenModel(BaseModel):
    """A part of a manifest meshwasm reads only partly: unknown fields are kept as they are."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class ObjectMeta(OpenModel):
    name: str = Field(min_length=1)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Resource(OpenModel):
    """A manifest with ``apiVersion``, ``kind`` and ``metadata``; subclasses type ``spec``.

    ``GROUP`` and ``KIND`` say which manifests a subclass models; ``NAMESPACED``
    whether kustomize's ``namespace:`` applies to it.
    """

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = True

    api_version: str
    kind: str
    metadata: ObjectMeta
    _source: SourceRef | None = PrivateAttr(default=None)
    # None when there are no lines (a plain default: no factory call and no dict per resource,
    # and resources are built by the ten thousand in a render).
    _lines: Mapping[tuple[str | int, ...], int] | None = PrivateAttr(default=None)

    @property
    def source(self) -> SourceRef | None:
        """The file and line this resource was read from (None when built in code)."""
        return self._source

    def with_source(
        self, source: SourceRef | None, lines: Mapping[tuple[str | int, ...], int] | None = None
    ) -> Resource:
        """Record where this resource was read (and the line of each field, for messages)."""
        self._source = source
        self._lines = lines
        return self

    def where(self, path: tuple[str | int, ...] = ()) -> SourceRef | None:
        """The file and line of a field (or of its nearest ancestor that was in the file)."""
        if self._source is None:
            return None
        lines = self._lines
        if lines is None:
            return self._source
        for end in range(len(path), -1, -1):
            line = lines.get(path[:end])
            if line is not None:
                return SourceRef(self._source.file, line)
        return self._source

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def ref(self) -> str:
        """``Kind namespace/name`` (or ``Kind name`` for cluster-scoped resources), for messages."""
        ns = self.metadata.namespace
        return f"{self.kind} {ns}/{self.name}" if ns else f"{self.kind} {self.name}"

    @property
    def group(self) -> str:
        return _group_of(self.api_version)

    def to_manifest(self) -> dict[str, Any]:
        """The resource as a manifest dict: Kubernetes key order, no null or empty defaults."""
        # exclude_unset: a resource read from a file comes back as written, defaults not added.
        data = self.model_dump(by_alias=True, exclude_none=True, exclude_unset=True, mode="json")
        data.pop("apiVersion", None)
        data.pop("kind", None)
        meta = {k: v for k, v in data.pop("metadata", {}).items() if v not in ({}, None)}
        head = {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta}
        return {**head, **data}


@functools.lru_cache(maxsize=256)
def _group_of(api_version: str) -> str:
    """The API group of ``group/version`` (empty for the core ``v1``); few are in use."""
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


class Passthrough(Resource):
    """A resource of a kind meshwasm does not model: kept untouched (extra fields and all)."""
