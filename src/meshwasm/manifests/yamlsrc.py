"""YAML documents with the line of every field, so errors can point into the file.

PyYAML's composer gives nodes with marks; we build plain Python data from
them and keep a map from each field path (``("spec", "http", 0, "port")``)
to its 1-based line. Scalars are typed the way YAML 1.1 safe loading types
them, except timestamps, which stay strings (Kubernetes treats them so).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshwasm.manifests.problems import Problem

FieldPath = tuple[str | int, ...]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class YamlDocument:
    """One document of a YAML stream: its data and where each field of it is."""

    data: Any
    file: str
    line: int
    lines: Mapping[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: FieldPath) -> int:
        """The line of ``path``, or of its nearest ancestor that exists in the document."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return self.line

    def sub(self, path: FieldPath, data: Any) -> YamlDocument:
        """The part of this document at ``path`` (an item of a ``kind: List``) as its own document."""
        lines = {p[len(path) :]: n for p, n in self.lines.items() if p[: len(path)] == path}
        return YamlDocument(data=data, file=self.file, line=self.line_of(path), lines=lines)


def format_path(path: FieldPath) -> str:
    """``("spec", "http", 0, "port")`` -> ``spec.http[0].port``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _LazyLines(Mapping[FieldPath, int]):
    """The line of each field of a JSON document, found only if a message needs one (by reading
    the text again as YAML, which JSON is): a large tree of valid JSON never pays for it."""

    def __init__(self, text: str, file: str):
        self._text = text
        self._file = file
        self._lines: dict[FieldPath, int] | None = None

    def _load(self) -> dict[FieldPath, int]:
        if self._lines is None:
            documents, _ = _parse_yaml(self._text, self._file)
            self._lines = dict(documents[0].lines) if documents else {}
        return self._lines

    def __getitem__(self, key: FieldPath) -> int:
        return self._load()[key]

    def __iter__(self) -> Iterator[FieldPath]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __bool__(self) -> bool:
        return True


class _NotPlainJson(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _NotPlainJson("duplicate key")  # the YAML path reports it with its line
    return out


def _constant(name: str) -> Any:
    raise _NotPlainJson(name)  # NaN and Infinity are not JSON; YAML reads them as strings


def _parse_json(text: str, file: str) -> YamlDocument | None:
    """A file that is one JSON object, parsed as JSON (many times faster than YAML); None when it
    is not plain JSON (the YAML path then reads it, and reports any problem with its line)."""
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    line = text[: len(text) - len(text.lstrip())].count("\n") + 1
    return YamlDocument(data=data, file=file, line=line, lines=_LazyLines(text, file))


def parse_documents(text: str, file: str) -> tuple[list[YamlDocument], list[Problem]]:
    """Every non-empty document in ``text``; problems (syntax, duplicate keys) name file and line."""
    if text.lstrip().startswith("{"):
        document = _parse_json(text, file)
        if document is not None:
            return [document], []
    return _parse_yaml(text, file)


def _parse_yaml(text: str, file: str) -> tuple[list[YamlDocument], list[Problem]]:
    documents: list[YamlDocument] = []
    problems: list[Problem] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[FieldPath, int] = {}
            data = _convert(loader, node, (), lines, problems, file)
            if data is None:
                continue
            documents.append(YamlDocument(data=data, file=file, line=node.start_mark.line + 1, lines=lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        problems.append(Problem(f"invalid YAML: {what}", file=file, line=line))
    except yaml.YAMLError as exc:
        problems.append(Problem(f"invalid YAML: {exc}", file=file))
    finally:
        loader.dispose()
    return documents, problems


def _convert(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    problems: list[Problem],
    file: str,
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool) or key is None:
                problems.append(
                    Problem("mapping keys must be strings", file=file, line=line, field=format_path(path))
                )
                continue
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            if key in out:
                problems.append(
                    Problem(
                        f"duplicate key {key!r} (first at line {lines.get(child)})",
                        file=file,
                        line=line,
                        field=format_path(child),
                    )
                )
                continue
            lines[child] = line
            out[key] = _convert(loader, value_node, child, lines, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(loader, item, (*path, index), lines, problems, file)
            for index, item in enumerate(node.value)
        ]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, datetime.date | datetime.datetime):
        return node.value
    return value
