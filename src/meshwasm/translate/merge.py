"""Deep-merging an extension's default config with an attachment's config."""

from __future__ import annotations

import copy
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
    result: dict[str, Any] = copy.deepcopy(dict(base or {}))
    for key, value in (overlay or {}).items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = merge_config(result[key], value)
        else:
            result[key] = copy.deepcopy(_drop_nulls(value))
    return result


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value
