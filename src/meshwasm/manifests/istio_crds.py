"""Istio's CustomResourceDefinitions, carried with the package (``crds/``).

They come from the Istio module pinned in ``oracle/istio/go.mod``
(``manifests/charts/base/files/crd-all.gen.yaml``, Apache-2.0; ``crds/SOURCE.md``
says which version), one file per CRD, refreshed by ``make crds``. Each is read
once, on first use.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

CRD_DIR = Path(__file__).resolve().parent / "crds"

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _index() -> dict[tuple[str, str], Path]:
    """(group, kind) -> the CRD's file, from the file names (``<plural>.<group>.yaml``) and kinds."""
    out: dict[tuple[str, str], Path] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        group = path.stem.partition(".")[2]
        out[(group, _kind_of(path))] = path
    return out


def _kind_of(path: Path) -> str:
    # The names block sits near the end of a large file; find ``kind:`` under ``names:`` cheaply.
    in_names = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line == "  names:":
            in_names = True
        elif in_names and line.startswith("    kind: "):
            return line.removeprefix("    kind: ").strip()
        elif in_names and not line.startswith("    "):
            in_names = False
    raise ValueError(f"{path}: no spec.names.kind")


def kinds() -> list[tuple[str, str]]:
    """Every (group, kind) the vendored CRDs define."""
    return sorted(_index())


@functools.cache
def crd(group: str, kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of ``group``/``kind`` as data; KeyError if Istio has none."""
    path = _index()[(group, kind)]
    data: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    return data


def version_schema(group: str, kind: str, version: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of one served version; KeyError if it is not served."""
    for entry in crd(group, kind)["spec"]["versions"]:
        if entry["name"] == version and entry.get("served", True):
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"{kind}.{group} has no served version {version}")
