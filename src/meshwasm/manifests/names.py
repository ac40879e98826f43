"""Kubernetes' rules for names, namespaces, label keys and values, and annotation keys.

The API server refuses an object whose ``metadata`` breaks them; meshwasm
checks them at render so `kubectl apply` does not fail later. Rules and
messages are those of k8s.io/apimachinery (``pkg/util/validation``,
``pkg/api/validate/content``); lengths are in bytes, as Go counts them.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from meshwasm.manifests.field_errors import FieldError

_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT = _LABEL_FMT + r"(\." + _LABEL_FMT + ")*"
_DNS1035_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_VALUE_FMT = "(" + _KEY_FMT + ")?"

_LABEL = re.compile(_LABEL_FMT)
_SUBDOMAIN = re.compile(_SUBDOMAIN_FMT)
_DNS1035 = re.compile(_DNS1035_FMT)
_KEY = re.compile(_KEY_FMT)
_VALUE = re.compile(_VALUE_FMT)

_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start"
    " and end with an alphanumeric character"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must"
    " start and end with an alphanumeric character"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic"
    " character, and end with an alphanumeric character"
)
_KEY_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric"
    " character"
)
_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must"
    " start and end with an alphanumeric character"
)
ANNOTATIONS_MAX_BYTES = 256 * 1024


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"


def _too_long(limit: int) -> str:
    return f"must be no more than {limit} bytes"


def _size(value: str) -> int:
    return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))


@functools.lru_cache(maxsize=8192)
def dns1123_label(value: str) -> tuple[str, ...]:
    """Why ``value`` is not an RFC 1123 label (namespaces); empty when it is one."""
    errors = []
    if _size(value) > 63:
        errors.append(_too_long(63))
    if not _LABEL.fullmatch(value):
        if _SUBDOMAIN.fullmatch(value):
            errors.append("must not contain dots")
        else:
            errors.append(_regex_error(_LABEL_MSG, _LABEL_FMT, "my-name", "123-abc"))
    return tuple(errors)


@functools.lru_cache(maxsize=8192)
def dns1123_subdomain(value: str) -> tuple[str, ...]:
    """Why ``value`` is not an RFC 1123 subdomain (most object names); empty when it is one."""
    errors = []
    if _size(value) > 253:
        errors.append(_too_long(253))
    if not _SUBDOMAIN.fullmatch(value):
        errors.append(_regex_error(_SUBDOMAIN_MSG, _SUBDOMAIN_FMT, "example.com"))
    return tuple(errors)


@functools.lru_cache(maxsize=8192)
def dns1035_label(value: str) -> tuple[str, ...]:
    """Why ``value`` is not an RFC 1035 label (Service names); empty when it is one."""
    errors = []
    if _size(value) > 63:
        errors.append(_too_long(63))
    if not _DNS1035.fullmatch(value):
        errors.append(_regex_error(_DNS1035_MSG, _DNS1035_FMT, "my-name", "abc-123"))
    return tuple(errors)


@functools.lru_cache(maxsize=8192)
def label_key(value: str) -> tuple[str, ...]:
    """Why ``value`` is not a label key (``[prefix/]name``, a qualified name); empty when it is one."""
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) > 2:
        return (
            "a valid label key "
            + _regex_error(_KEY_MSG, _KEY_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
        )
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend(f"prefix part {m}" for m in dns1123_subdomain(prefix))
    if not name:
        errors.append("name part must be non-empty")
    elif _size(name) > 63:
        errors.append(f"name part {_too_long(63)}")
    if not _KEY.fullmatch(name):
        errors.append("name part " + _regex_error(_KEY_MSG, _KEY_FMT, "MyName", "my.name", "123-abc"))
    return tuple(errors)


@functools.lru_cache(maxsize=8192)
def label_value(value: str) -> tuple[str, ...]:
    """Why ``value`` is not a label value; empty when it is one."""
    errors = []
    if _size(value) > 63:
        errors.append(_too_long(63))
    if not _VALUE.fullmatch(value):
        errors.append(_regex_error(_VALUE_MSG, _VALUE_FMT, "MyValue", "my_value", "12345"))
    return tuple(errors)


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


# How the API server checks ``metadata.name`` per kind (core kinds differ; custom resources and
# most others are DNS-1123 subdomains).
NAME_RULES = {
    ("", "Namespace"): dns1123_label,
    ("", "Service"): dns1035_label,
}


def labels_errors(labels: Any, path: tuple[str | int, ...]) -> list[FieldError]:
    """Label keys and values (``metadata.labels``, a selector's labels) as the API server checks them."""
    found: list[FieldError] = []
    if not isinstance(labels, Mapping):
        return found
    where = ".".join(str(p) for p in path)
    for key, value in labels.items():
        key_errors = label_key(str(key))
        value_errors = label_value(value) if isinstance(value, str) else ()
        if key_errors or value_errors:
            found.extend(
                FieldError((*path, key), where, f"Invalid value: {_quoted(str(key))}: {m}")
                for m in key_errors
            )
            found.extend(
                FieldError((*path, key), where, f"Invalid value: {_quoted(str(value))}: {m}")
                for m in value_errors
            )
    return found


@functools.lru_cache(maxsize=1024)
def _annotation_key_errors(keys: tuple[str, ...]) -> tuple[FieldError, ...]:
    """Annotation keys are qualified names, case aside (as the API server checks them)."""
    return tuple(
        FieldError(
            ("metadata", "annotations", key), "metadata.annotations", f"Invalid value: {_quoted(key)}: {m}"
        )
        for key in keys
        for m in label_key(key.lower())
    )


@functools.lru_cache(maxsize=1024)
def _metadata_labels_errors(labels: frozenset[tuple[str, str]]) -> tuple[FieldError, ...]:
    return tuple(labels_errors(dict(sorted(labels)), ("metadata", "labels")))


def metadata_errors(group: str, kind: str, metadata: Any, *, namespaced: bool = True) -> list[FieldError]:
    """What the API server refuses in an object's ``metadata``: its name (by kind), namespace,
    label keys and values, annotation keys and total size."""
    # Exact dicts told first: the Mapping ABC's isinstance is slow (a render checks 10,000s).
    if type(metadata) is not dict and not isinstance(metadata, Mapping):
        return []
    found: list[FieldError] = []
    name = metadata.get("name")
    if isinstance(name, str) and name:
        name_errors = NAME_RULES.get((group, kind), dns1123_subdomain)(name)
        if name_errors:
            found.extend(
                FieldError(("metadata", "name"), "metadata.name", f"Invalid value: {_quoted(name)}: {m}")
                for m in name_errors
            )
    namespace = metadata.get("namespace")
    if namespaced and isinstance(namespace, str) and namespace:
        namespace_errors = dns1123_label(namespace)
        if namespace_errors:
            found.extend(
                FieldError(
                    ("metadata", "namespace"),
                    "metadata.namespace",
                    f"Invalid value: {_quoted(namespace)}: {m}",
                )
                for m in namespace_errors
            )
    labels = metadata.get("labels")
    if labels:
        # Every resource rendered for a workspace carries the same labels: check each set once.
        if type(labels) is dict and all(type(k) is str and type(v) is str for k, v in labels.items()):
            found.extend(_metadata_labels_errors(frozenset(labels.items())))
        else:
            found.extend(labels_errors(labels, ("metadata", "labels")))
    annotations = metadata.get("annotations")
    if (type(annotations) is dict or isinstance(annotations, Mapping)) and annotations:
        found.extend(_annotations_errors(annotations))
    return found


def _annotations_errors(annotations: Mapping[Any, Any]) -> tuple[FieldError, ...]:
    keys = tuple(map(str, annotations))
    found = _annotation_key_errors(keys)
    total = sum(map(len, keys)) + sum(map(len, map(str, annotations.values())))
    # Characters first (cheap); bytes only when the total could be over (UTF-8: at most 4 per char).
    if total > ANNOTATIONS_MAX_BYTES // 4 and (
        sum(_size(str(k)) + _size(str(v)) for k, v in annotations.items()) > ANNOTATIONS_MAX_BYTES
    ):
        too_long = FieldError(
            ("metadata", "annotations"),
            "metadata.annotations",
            f"Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes",
        )
        return (*found, too_long)
    return found


__all__ = [
    "dns1035_label",
    "dns1123_label",
    "dns1123_subdomain",
    "label_key",
    "label_value",
    "labels_errors",
    "metadata_errors",
]
