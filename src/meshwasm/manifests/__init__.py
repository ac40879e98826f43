"""Typed models of TSB, Istio and core Kubernetes resources, and loading kustomize trees.

Entry point: :func:`load` (a file, a directory or a kustomize tree) returns a
:class:`LoadedTree`; bad input raises :class:`ManifestError` listing every
problem with its file, line and field.
"""

from meshwasm.manifests import core, istio, tsb
from meshwasm.manifests.base import ObjectMeta, Passthrough, Resource
from meshwasm.manifests.loader import LoadedTree, load
from meshwasm.manifests.problems import ManifestError, Problem, SourceRef

__all__ = [
    "LoadedTree",
    "ManifestError",
    "ObjectMeta",
    "Passthrough",
    "Problem",
    "Resource",
    "SourceRef",
    "core",
    "istio",
    "load",
    "tsb",
]
