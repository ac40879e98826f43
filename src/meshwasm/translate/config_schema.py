"""Checking an extension's merged config against the JSON Schema the extension declares.

Where the schema comes from is the manifests' business (annotation
``meshwasm.io/config-schema`` with inline JSON, or
``meshwasm.io/config-schema-file`` naming a file next to the manifest; see
:attr:`meshwasm.manifests.tsb.WasmExtension.config_schema`). Here: which
fields of a config violate it, each with a path like ``headers[1].path``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema_rs
import referencing.exceptions


@dataclass(frozen=True, order=True)
class ConfigViolation:
    """One field of a config that its schema rejects; ``field`` is empty for the config itself."""

    field: str
    message: str


def field_path(parts: Any) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class ConfigSchema:
    """A JSON Schema compiled once, to check many configs (one per attachment) against it.

    Each config is first checked by jsonschema-rs (a microsecond or two); only a refused one goes
    through jsonschema, whose messages name each field at fault, and those results are remembered
    per config (its canonical JSON: trees repeat configs, and a bad one across a fleet is checked
    once). Both implement the schema's draft; a differential test keeps them agreeing. Without
    jsonschema-rs (a schema it cannot compile) every config goes through the remembered path.
    """

    def __init__(self, schema: Mapping[str, Any]):
        cls = jsonschema.validators.validator_for(schema)
        self.validator: jsonschema.protocols.Validator = cls(dict(schema))
        self._fast = _fast_validator(schema)
        self._seen: dict[str, tuple[ConfigViolation, ...]] = {}

    def violations(self, config: Any) -> list[ConfigViolation]:
        """Every violation of the schema by ``config``, sorted by field; empty when valid."""
        if self._fast is not None and _fast_is_valid(self._fast, config):
            return []  # cheaper than any cache key
        key = _canonical(config)
        if key is not None:
            seen = self._seen.get(key)
            if seen is not None:
                return list(seen)
        try:
            found = _violations(self.validator, config)
        except referencing.exceptions.Unresolvable as exc:
            message = (
                f"the config schema's $ref {exc.ref} cannot be resolved (only refs inside the schema are)"
            )
            found = [ConfigViolation("", message)]
        if key is not None:
            if len(self._seen) >= _SEEN_MAX:
                self._seen.clear()
            self._seen[key] = tuple(found)
        return found


_SEEN_MAX = 65536
_KEY_MAX = 64 * 1024
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _canonical(config: Any) -> str | None:
    """The config's canonical JSON (equal for equal configs), or None when too large to keep."""
    try:
        text = _encode(config)
    except (TypeError, ValueError):
        return None
    return text if len(text) <= _KEY_MAX else None


def _refuse_remote(uri: str) -> Any:
    # Render never reaches the network: a schema's $ref must resolve inside the schema.
    raise ValueError(f"remote $ref {uri} is not fetched")


def _fast_validator(schema: Mapping[str, Any]) -> Any:
    try:
        return jsonschema_rs.validator_for(dict(schema), retriever=_refuse_remote)
    except (ValueError, jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError):
        return None  # a schema jsonschema-rs cannot compile is checked by jsonschema alone


def _fast_is_valid(validator: Any, config: Any) -> bool:
    try:
        return bool(validator.is_valid(config))
    except (ValueError, TypeError):
        return False  # let jsonschema say what is wrong


@functools.lru_cache(maxsize=64)
def _compiled(schema_json: str) -> ConfigSchema:
    return ConfigSchema(json.loads(schema_json))


def compiled_schema(schema: Mapping[str, Any]) -> ConfigSchema:
    """The compiled :class:`ConfigSchema` of ``schema``, shared by every translation (and every
    reload of ``meshwasm up``) that uses the same schema."""
    key = _canonical(schema)
    return _compiled(key) if key is not None else ConfigSchema(schema)


def validate_config(schema: Mapping[str, Any], config: Any) -> list[ConfigViolation]:
    """Every violation of ``schema`` by ``config``, sorted by field; empty when valid."""
    return compiled_schema(schema).violations(config)


def _violations(validator: jsonschema.protocols.Validator, config: Any) -> list[ConfigViolation]:
    found: set[ConfigViolation] = set()
    for error in validator.iter_errors(config):
        path = list(error.absolute_path)
        schema_here: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
        if error.validator == "required" and isinstance(error.instance, dict):
            for name in schema_here.get("required", []):
                if name not in error.instance:
                    found.add(ConfigViolation(field_path([*path, name]), "missing (required)"))
            continue
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = sorted(schema_here.get("properties", {}))
            extra = sorted(k for k in error.instance if k not in allowed)
            message = f"unknown key{'s' if len(extra) != 1 else ''} {', '.join(map(repr, extra))}"
            found.add(ConfigViolation(field_path(path), f"{message} (allowed: {', '.join(allowed)})"))
            continue
        description = schema_here.get("description")
        if error.validator in ("pattern", "not", "format") and description:
            message = f"{json.dumps(error.instance)} is invalid: {description}"
        else:
            message = error.message
        found.add(ConfigViolation(field_path(path), message))
    return sorted(found)
