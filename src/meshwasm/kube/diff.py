"""What an apply changes, as people read it (pure): server-set fields dropped, a unified YAML diff."""

from __future__ import annotations

import copy
import difflib
from typing import Any

import yaml

# Fields the server sets or bumps on every write: never part of what a user changes.
_SERVER_METADATA = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink")


def comparable(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """``obj`` without status and server-managed metadata, for comparing live and desired."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out.pop("status", None)
    metadata = out.get("metadata", {})
    for key in _SERVER_METADATA:
        metadata.pop(key, None)
    if not metadata.get("annotations"):
        metadata.pop("annotations", None)
    return out


def yaml_diff(before: dict[str, Any] | None, after: dict[str, Any] | None, *, label: str) -> str:
    """A unified diff of two objects' YAML (empty when they are the same)."""

    def lines(obj: dict[str, Any] | None) -> list[str]:
        if obj is None:
            return []
        return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False).splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(lines(before), lines(after), fromfile=f"live {label}", tofile=f"applied {label}")
    )
