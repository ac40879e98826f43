"""Deep-merging an extension's default config with an attachment's config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_config(base: Mapping[str, Any] | None, overlay: Mapping[str, Any] | None) -> dict[str, Any]:
    """``overlay`` merged over ``base`` with JSON Merge Patch semantics (RFC 7386).

    Objects merge key by key, recursively; anything else in the overlay
    (a string, a number, a list) replaces the base's value; ``null`` in the
    overlay removes the key. So an attachment can replace the extension's
    ``headers`` list, or drop a default with ``header: null``. Inputs are not
    modified.
    """
    base = base or {}
    overlay = overlay or {}
    result: dict[str, Any] = {}
    # Keep the base's key order, then the overlay's new keys (as a JSON Merge Patch applied in place).
    for key, value in base.items():
        if key not in overlay:
            result[key] = _fresh(value)
        else:
            change = overlay[key]
            if change is None:
                continue
            if isinstance(change, Mapping) and isinstance(value, Mapping):
                result[key] = merge_config(value, change)
            else:
                result[key] = _fresh(change, drop_nulls=True)
    for key, change in overlay.items():
        if change is not None and key not in base:
            result[key] = _fresh(change, drop_nulls=True)
    return result


# Values copied as they are: immutable, and what most of a config is.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _fresh(value: Any, *, drop_nulls: bool = False) -> Any:
    """A copy of a JSON-like value sharing nothing mutable with it (cheaper than copy.deepcopy:
    no memo, since values read from YAML or JSON have no cycles). With ``drop_nulls``, nulls in
    mappings are dropped (a merge patch's nulls mean "absent"); a list is a value, kept whole."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return [_fresh(v) for v in value]
    # Exact types first: an isinstance test against the Mapping ABC costs more than the copy.
    if kind is dict or isinstance(value, Mapping):
        return {
            k: _fresh(v, drop_nulls=drop_nulls) for k, v in value.items() if not (drop_nulls and v is None)
        }
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value
