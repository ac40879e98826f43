"""Validating a custom resource against its CRD as a Kubernetes API server does.

An API server checks a custom resource against the CRD version's structural
schema (types, enums, required fields, bounds, patterns, ``oneOf``/``anyOf``/
``not``), refuses unknown fields under strict field validation (``kubectl
apply``'s default), and evaluates the schema's CEL rules
(``x-kubernetes-validations``) with ``self`` bound to each node's value.

A schema is compiled once into a tree of :class:`SchemaNode` (CEL rules compiled and
type-checked with it) and reused for every resource. Errors read as the API
server writes them (``spec.selector.matchLabels[app]: Invalid value: "a*":
wildcard not allowed in label value match``) and carry the path, so callers can
point at the file and line.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from cel_expr_python import cel as _cel

from meshwasm.manifests import istio_crds
from meshwasm.manifests.cel import CompiledRule, RuleCompileError, compile_rule, value_key
from meshwasm.manifests.field_errors import FieldError, FieldPath, k8s_path


def _quote(value: Any) -> str:
    """A bad value as Kubernetes prints it: strings quoted, numbers and booleans bare, else JSON."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# Remembered valid values: how big a value may be to be keyed, how many per node, and after how many
# tries a node whose values rarely repeat stops remembering.
_MEMO_BUDGET = 48
_MEMO_MAX = 4096
_MEMO_TRIAL = 64

# The JSON type of a value parsed from YAML or JSON (anything else is checked as a string).
_TYPE_OF: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    return "string"


class _Errors:
    """Errors found under one resource, with the path of the node being checked."""

    def __init__(self) -> None:
        self.found: list[FieldError] = []
        self.keys: set[int] = set()  # positions in a path that are map keys, printed as [key]

    def add(self, path: FieldPath, body: str) -> None:
        self.found.append(FieldError(path, k8s_path(path, frozenset(self.keys)), body))

    def in_body(self, path: FieldPath) -> str:
        return k8s_path(path, frozenset(self.keys))


class SchemaNode:
    """One schema node, compiled: checks a value and its children, then its CEL rules."""

    def __init__(self, schema: Mapping[str, Any], where: str):
        self.type: str | None = schema.get("type")
        self.nullable = bool(schema.get("nullable"))
        self.int_or_string = bool(schema.get("x-kubernetes-int-or-string"))
        self.preserve_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        self.properties = {
            name: SchemaNode(child, f"{where}.{name}")
            for name, child in (schema.get("properties") or {}).items()
        }
        additional = schema.get("additionalProperties")
        self.additional = SchemaNode(additional, f"{where}[*]") if isinstance(additional, dict) else None
        self.items = (
            SchemaNode(schema["items"], f"{where}[*]") if isinstance(schema.get("items"), dict) else None
        )
        self.required: list[str] = list(schema.get("required") or [])
        self.enum: list[Any] | None = schema.get("enum")
        self.minimum = schema.get("minimum")
        self.maximum = schema.get("maximum")
        self.exclusive_minimum = bool(schema.get("exclusiveMinimum"))
        self.exclusive_maximum = bool(schema.get("exclusiveMaximum"))
        self.min_length = schema.get("minLength")
        self.max_length = schema.get("maxLength")
        self.pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
        self.pattern_text = schema.get("pattern")
        self.min_items = schema.get("minItems")
        self.max_items = schema.get("maxItems")
        self.max_properties = schema.get("maxProperties")
        self.one_of = [_Shape(s) for s in schema.get("oneOf") or []]
        self.any_of = [_Shape(s) for s in schema.get("anyOf") or []]
        self.all_of = [_Shape(s) for s in schema.get("allOf") or []]
        self.not_ = _Shape(schema["not"]) if isinstance(schema.get("not"), dict) else None
        self.rules: list[CompiledRule] = []
        entries = schema.get("x-kubernetes-validations") or []
        if entries:
            self_type = cel_type(schema)
            for entry in entries:
                try:
                    self.rules.append(compile_rule(entry, self_type))
                except RuleCompileError as exc:
                    raise RuleCompileError(f"{where}: {exc}") from None
        self.string_checks = self.max_length is not None or self.min_length is not None or bool(self.pattern)
        self.number_checks = self.maximum is not None or self.minimum is not None
        self.shapes = bool(self.one_of or self.any_of or self.all_of or self.not_ is not None)
        # A field whose schema checks only its type (most strings and numbers of a CRD).
        self.free = (
            self.type in ("string", "integer", "boolean", "number")
            and not (self.nullable or self.int_or_string or self.enum is not None or self.rules)
            and not (self.string_checks or self.number_checks or self.shapes)
            and self.type != "number"  # an integer is a valid number: let check() decide
        )
        # Remembering valid values pays only where checking costs something: constraints below.
        self.memo: set[Any] | None = set() if self._costly() else None
        self.memo_tries = 0
        self.memo_hits = 0
        self.open = self.preserve_unknown or (
            self.type == "object" and not self.properties and self.additional is None
        )
        # An object that keeps whatever it holds (a WasmPlugin's pluginConfig): any dict passes.
        self.any_object = (
            self.type == "object"
            and self.open
            and self.additional is None
            and not (self.int_or_string or self.required or self.rules or self.shapes)
            and self.enum is None
            and self.max_properties is None
        )

    def child(self, name: str) -> SchemaNode | None:
        """The node that checks field ``name`` of an object value here (None when nothing does:
        an object that keeps unknown fields, or a field it does not know)."""
        if self.additional is not None:
            return self.additional
        return None if self.open else self.properties.get(name)

    def reads_values_of(self, names: frozenset[str]) -> bool:
        """Whether this node's own checks of an object (not its fields' checks) may depend on the
        value of a field in ``names`` beyond whether it is there: an enum of whole objects, a
        oneOf/anyOf/allOf/not shape, or a rule that reads such a field's value or ``self`` whole.
        (Required fields, unknown fields and maxProperties depend on the field names alone.)"""
        if self.enum is not None or self.shapes:
            return True
        return any(rule.fields is None or bool(rule.fields & names) for rule in self.rules)

    def accepts(self, value: Any, path: FieldPath) -> bool:
        """Whether ``value`` at ``path`` passes this node and everything under it, without error."""
        if self.free and _TYPE_OF.get(type(value)) == self.type:
            return True  # nothing to check but the type, which is right (as _check_object skips it)
        if self.any_object and type(value) is dict:
            return True
        errors = _Errors()
        self.check(value, path, errors)
        return not errors.found

    def check(self, value: Any, path: FieldPath, errors: _Errors) -> bool:
        """Check ``value``; False when it has a structural error at this node (its rules are skipped).

        A node's verdict depends on its value alone, and trees repeat values (a gateway's selector
        in each of its plugins), so an object or list found valid is remembered by value. A node
        whose values rarely repeat stops remembering (the key would cost more than it saves).
        """
        if self.memo is None or type(value) not in (dict, list):
            return self._check(value, path, errors)
        key = value_key(value, budget=_MEMO_BUDGET)
        if key is None:
            return self._check(value, path, errors)
        self.memo_tries += 1
        if key in self.memo:
            self.memo_hits += 1
            return True
        before = len(errors.found)
        ok = self._check(value, path, errors)
        if ok and len(errors.found) == before:
            if len(self.memo) >= _MEMO_MAX:
                self.memo.clear()
            self.memo.add(key)
        if self.memo_tries >= _MEMO_TRIAL and self.memo_hits * 2 < self.memo_tries:
            self.memo = None
        return ok

    def _check(self, value: Any, path: FieldPath, errors: _Errors) -> bool:
        found = _TYPE_OF.get(type(value), "string")
        if found == "null":
            if self.nullable:
                return True
            errors.add(
                path, f'Invalid value: "null": {errors.in_body(path)} in body must be of type {self.type}'
            )
            return False
        if self.int_or_string:
            if found not in ("string", "integer"):
                errors.add(
                    path,
                    f'Invalid value: "{found}": {errors.in_body(path)} in body must be of type'
                    " integer or string",
                )
                return False
        elif (
            self.type is not None
            and found != self.type
            and not (self.type == "number" and found == "integer")
        ):
            errors.add(
                path,
                f'Invalid value: "{found}": {errors.in_body(path)} in body must be of type'
                f' {self.type}: "{found}"',
            )
            return False
        ok = True
        if self.enum is not None and value not in self.enum:
            supported = ", ".join(json.dumps(str(v)) for v in self.enum)
            errors.add(path, f"Unsupported value: {_quote(value)}: supported values: {supported}")
            ok = False
        if found == "object":
            ok = self._check_object(value, path, errors) and ok
        elif found == "array":
            ok = self._check_list(value, path, errors) and ok
        elif found == "string":
            if self.string_checks:
                ok = self._check_string(value, path, errors) and ok
        elif self.number_checks and found in ("integer", "number"):
            ok = self._check_number(value, path, errors) and ok
        if self.shapes:
            ok = self._check_shapes(value, path, errors) and ok
        if ok and self.rules:
            for rule in self.rules:
                detail = rule.failure(value)
                if detail is not None:
                    _rule_error(rule, value, path, detail, errors)
        return ok

    def _costly(self) -> bool:
        children = [*self.properties.values(), *(n for n in (self.additional, self.items) if n is not None)]
        return bool(self.rules) or any(child.memo is not None or child.rules for child in children)

    def _check_string(self, value: str, path: FieldPath, errors: _Errors) -> bool:
        ok = True
        if self.max_length is not None and len(value) > self.max_length:
            unit = "byte" if self.max_length == 1 else "bytes"
            errors.add(path, f"Too long: may not be more than {self.max_length} {unit}")
            ok = False
        if self.min_length is not None and len(value) < self.min_length:
            errors.add(
                path,
                f"Invalid value: {_quote(value)}: {errors.in_body(path)} in body should be at least"
                f" {self.min_length} chars long",
            )
            ok = False
        if self.pattern is not None and not self.pattern.search(value):
            errors.add(
                path,
                f"Invalid value: {_quote(value)}: {errors.in_body(path)} in body should match"
                f" '{self.pattern_text}'",
            )
            ok = False
        return ok

    def _check_number(self, value: float, path: FieldPath, errors: _Errors) -> bool:
        ok = True
        if self.maximum is not None and (
            value > self.maximum or (self.exclusive_maximum and value == self.maximum)
        ):
            relation = "less than" if self.exclusive_maximum else "less than or equal to"
            errors.add(
                path,
                f"Invalid value: {_quote(value)}: {errors.in_body(path)} in body should be {relation}"
                f" {self.maximum}",
            )
            ok = False
        if self.minimum is not None and (
            value < self.minimum or (self.exclusive_minimum and value == self.minimum)
        ):
            relation = "greater than" if self.exclusive_minimum else "greater than or equal to"
            errors.add(
                path,
                f"Invalid value: {_quote(value)}: {errors.in_body(path)} in body should be {relation}"
                f" {self.minimum}",
            )
            ok = False
        return ok

    def _check_list(self, value: list[Any], path: FieldPath, errors: _Errors) -> bool:
        ok = True
        if self.max_items is not None and len(value) > self.max_items:
            unit = "item" if self.max_items == 1 else "items"
            errors.add(path, f"Too many: {len(value)}: must have at most {self.max_items} {unit}")
            ok = False
        if self.min_items is not None and len(value) < self.min_items:
            errors.add(
                path,
                f"Invalid value: {len(value)}: {errors.in_body(path)} in body should have at least"
                f" {self.min_items} items",
            )
            ok = False
        if self.items is not None:
            for index, item in enumerate(value):
                self.items.check(item, (*path, index), errors)
        return ok

    def _check_object(self, value: dict[str, Any], path: FieldPath, errors: _Errors) -> bool:
        ok = True
        for name in self.required:
            if name not in value:
                errors.add((*path, name), "Required value")
                ok = False
        if self.max_properties is not None and len(value) > self.max_properties:
            unit = "item" if self.max_properties == 1 else "items"
            errors.add(path, f"Too many: {len(value)}: must have at most {self.max_properties} {unit}")
            ok = False
        if self.additional is not None:
            position = len(path)
            errors.keys.add(position)
            try:
                for key, item in value.items():
                    self.additional.check(item, (*path, key), errors)
            finally:
                errors.keys.discard(position)
            return ok
        if self.open:
            return ok
        properties = self.properties
        for key, item in value.items():
            child = properties.get(key)
            if child is not None and child.free and _TYPE_OF.get(type(item)) == child.type:
                continue  # a field with nothing to check but its type, which is right
            if child is None:
                where = k8s_path((*path, key), frozenset(errors.keys))
                errors.found.append(FieldError((*path, key), where, f"unknown field {json.dumps(where)}"))
            else:
                child.check(item, (*path, key), errors)
        return ok

    def _check_shapes(self, value: Any, path: FieldPath, errors: _Errors) -> bool:
        where = errors.in_body(path)
        ok = True
        if self.one_of and sum(shape.matches(value) for shape in self.one_of) != 1:
            errors.add(
                path,
                f'Invalid value: "{_type_name(value)}": {where} in body must validate one and only'
                " one schema (oneOf)" + _shape_hint(self.one_of, value),
            )
            ok = False
        if self.any_of and not any(shape.matches(value) for shape in self.any_of):
            errors.add(
                path,
                f'Invalid value: "{_type_name(value)}": {where} in body must validate at least'
                " one schema (anyOf)",
            )
            ok = False
        for shape in self.all_of:
            if not shape.matches(value):
                errors.add(
                    path,
                    f'Invalid value: "{_type_name(value)}": {where} in body must validate all the'
                    " schemas (allOf)",
                )
                ok = False
                break
        if self.not_ is not None and self.not_.matches(value):
            errors.add(
                path,
                f'Invalid value: "{_type_name(value)}": {where} in body should not be valid'
                " against schema (not)" + _shape_hint([self.not_], value),
            )
            ok = False
        return ok


def _shape_hint(shapes: list[_Shape], value: Any) -> str:
    """Which mutually exclusive fields are set together (the usual reason a oneOf/not fails)."""
    if not isinstance(value, dict):
        return ""
    named = sorted({name for shape in shapes for name in shape.names() if name in value})
    return f" (set: {', '.join(named)})" if len(named) > 1 else ""


class _Shape:
    """A ``oneOf``/``anyOf``/``allOf``/``not`` branch. In structural schemas these carry only
    value validations (Istio's: ``required`` sets that make fields mutually exclusive)."""

    def __init__(self, schema: Mapping[str, Any]):
        self.required: list[str] = list(schema.get("required") or [])
        self.any_of = [_Shape(s) for s in schema.get("anyOf") or []]
        self.one_of = [_Shape(s) for s in schema.get("oneOf") or []]
        self.all_of = [_Shape(s) for s in schema.get("allOf") or []]
        self.not_ = _Shape(schema["not"]) if isinstance(schema.get("not"), dict) else None
        self.properties = {k: _Shape(v) for k, v in (schema.get("properties") or {}).items()}

    def matches(self, value: Any) -> bool:
        if self.required and not (isinstance(value, dict) and all(n in value for n in self.required)):
            return False
        if self.any_of and not any(s.matches(value) for s in self.any_of):
            return False
        if self.one_of and sum(s.matches(value) for s in self.one_of) != 1:
            return False
        if any(not s.matches(value) for s in self.all_of):
            return False
        if self.not_ is not None and self.not_.matches(value):
            return False
        if self.properties and isinstance(value, dict):
            return all(s.matches(value[k]) for k, s in self.properties.items() if k in value)
        return True

    def names(self) -> Iterator[str]:
        yield from self.required
        for shape in (*self.any_of, *self.one_of, *self.all_of, *([self.not_] if self.not_ else [])):
            yield from shape.names()


def _rule_error(rule: CompiledRule, value: Any, path: FieldPath, detail: str, errors: _Errors) -> None:
    where = path
    if rule.field_path:
        where = (*path, *(p for p in rule.field_path.strip(".").split(".") if p))
    if rule.reason == "FieldValueForbidden":
        errors.add(where, f"Forbidden: {detail}")
    elif rule.reason == "FieldValueRequired":
        errors.add(where, f"Required value: {detail}")
    elif isinstance(value, dict | list):
        errors.add(where, f"Invalid value: {detail}")
    else:
        errors.add(where, f"Invalid value: {_quote(value)}: {detail}")


def cel_type(schema: Mapping[str, Any]) -> Any:
    """The CEL type of values of ``schema`` (what ``self`` is in its rules)."""
    if schema.get("x-kubernetes-int-or-string") or schema.get("x-kubernetes-preserve-unknown-fields"):
        return _cel.Type.DYN
    kind = schema.get("type")
    if kind == "string":
        return _cel.Type.STRING
    if kind == "integer":
        return _cel.Type.INT
    if kind == "number":
        return _cel.Type.DOUBLE
    if kind == "boolean":
        return _cel.Type.BOOL
    if kind == "array" and isinstance(schema.get("items"), dict):
        return _cel.Type.List(cel_type(schema["items"]))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return _cel.Type.Map(_cel.Type.STRING, cel_type(schema["additionalProperties"]))
    if kind == "object":
        return _cel.Type.Map(_cel.Type.STRING, _cel.Type.DYN)
    return _cel.Type.DYN


class SchemaValidator:
    """One CRD version's schema, compiled: :meth:`errors` lists what an API server refuses."""

    def __init__(self, schema: Mapping[str, Any], *, name: str = ""):
        self.name = name
        self.root = SchemaNode(schema, name)

    def errors(self, manifest: Mapping[str, Any]) -> list[FieldError]:
        """Every refusal for ``manifest`` (apiVersion, kind and metadata are checked elsewhere)."""
        found = _Errors()
        body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}
        self.root.check(body, (), found)
        return found.found


@functools.cache
def validator_for(api_version: str, kind: str) -> SchemaValidator | None:
    """The compiled schema of ``kind`` in ``api_version`` from Istio's vendored CRDs, or None when
    Istio defines no such kind (or does not serve that version)."""
    group, _, version = api_version.rpartition("/")
    if (group, kind) not in istio_crds.kinds():
        return None
    try:
        schema = istio_crds.version_schema(group, kind, version)
    except KeyError:
        return None
    return SchemaValidator(schema, name=f"{kind}.{group}/{version}")


def served_versions(api_version: str, kind: str) -> list[str]:
    group = api_version.rpartition("/")[0]
    if (group, kind) not in istio_crds.kinds():
        return []
    return [v["name"] for v in istio_crds.crd(group, kind)["spec"]["versions"] if v.get("served", True)]


def validate_manifest(manifest: Mapping[str, Any]) -> list[FieldError]:
    """What the API server refuses in an Istio resource: its CRD's schema and CEL rules. A kind
    Istio does not define gives no errors; an unserved version of an Istio kind gives one."""
    api_version, kind = str(manifest.get("apiVersion", "")), str(manifest.get("kind", ""))
    validator = validator_for(api_version, kind)
    if validator is not None:
        return validator.errors(manifest)
    versions = served_versions(api_version, kind)
    if versions:
        group = api_version.rpartition("/")[0]
        served = ", ".join(f"{group}/{v}" for v in versions)
        detail = f'no matches for kind "{kind}" in version "{api_version}" (served: {served})'
        return [FieldError(("apiVersion",), "apiVersion", detail)]
    return []


__all__ = [
    "FieldError",
    "SchemaNode",
    "SchemaValidator",
    "cel_type",
    "k8s_path",
    "validate_manifest",
    "validator_for",
]
