"""YAML documents with the line of every field, so errors can point into the file.

PyYAML's composer gives nodes with marks; we build plain Python data from
them and keep a map from each field path (``("spec", "http", 0, "port")``)
to its 1-based line. Scalars are typed the way YAML 1.1 safe loading types
them, except timestamps, which stay strings (Kubernetes treats them so).
"""

from __future__ import annotations

import datetime
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
    lines: dict[FieldPath, int] = field(default_factory=dict)

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


def parse_documents(text: str, file: str) -> tuple[list[YamlDocument], list[Problem]]:
    """Every non-empty document in ``text``; problems (syntax, duplicate keys) name file and line."""
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
