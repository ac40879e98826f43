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
    for key, value in base.items():
        if key not in overlay:
            result[key] = _fresh(value)
    for key, value in overlay.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            result[key] = merge_config(base[key], value)
        else:
            result[key] = _fresh(value, drop_nulls=True)
    # Keep the base's key order, then the overlay's new keys (as a JSON Merge Patch applied in place).
    order = [k for k in base if k in result] + [k for k in overlay if k in result and k not in base]
    return {k: result[k] for k in order}


def _fresh(value: Any, *, drop_nulls: bool = False) -> Any:
    """A copy of a JSON-like value sharing nothing mutable with it (cheaper than copy.deepcopy:
    no memo, since values read from YAML or JSON have no cycles). With ``drop_nulls``, nulls in
    mappings are dropped (a merge patch's nulls mean "absent"); a list is a value, kept whole."""
    if isinstance(value, Mapping):
        return {
            k: _fresh(v, drop_nulls=drop_nulls) for k, v in value.items() if not (drop_nulls and v is None)
        }
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value
