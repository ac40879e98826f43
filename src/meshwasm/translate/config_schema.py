"""Checking an extension's merged config against the JSON Schema the extension declares.

Where the schema comes from is the manifests' business (annotation
``meshwasm.io/config-schema`` with inline JSON, or
``meshwasm.io/config-schema-file`` naming a file next to the manifest; see
:attr:`meshwasm.manifests.tsb.WasmExtension.config_schema`). Here: which
fields of a config violate it, each with a path like ``headers[1].path``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema


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
    """A JSON Schema compiled once, to check many configs (one per attachment) against it."""

    def __init__(self, schema: Mapping[str, Any]):
        cls = jsonschema.validators.validator_for(schema)
        self.validator: jsonschema.protocols.Validator = cls(dict(schema))

    def violations(self, config: Any) -> list[ConfigViolation]:
        """Every violation of the schema by ``config``, sorted by field; empty when valid."""
        return _violations(self.validator, config)


def validate_config(schema: Mapping[str, Any], config: Any) -> list[ConfigViolation]:
    """Every violation of ``schema`` by ``config``, sorted by field; empty when valid."""
    return ConfigSchema(schema).violations(config)


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
