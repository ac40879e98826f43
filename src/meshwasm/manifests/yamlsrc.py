"""YAML documents with the line of every field, so errors can point into the file.

PyYAML's composer gives nodes with marks; we build plain Python data from
them and keep a map from each field path (``("spec", "http", 0, "port")``)
to its 1-based line. Scalars are typed the way Kubernetes' YAML (sigs.k8s.io/yaml,
go-yaml v2, what kubectl sends the API server) types them, not PyYAML's YAML 1.1:
``1e21``, ``1e-7``, ``-.5`` and ``0o17`` are numbers, ``y`` and ``n`` booleans,
``1:30`` a string (not sexagesimal 90), timestamps stay strings, and non-string
keys become their JSON text (``true``, ``2.5``). A WasmPlugin's pluginConfig
reaches the plugin as Kubernetes would have parsed it (tests/fidelity compares).
"""

from __future__ import annotations

import datetime
import re
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import yaml

from meshwasm.manifests.problems import Problem

FieldPath = tuple[str | int, ...]

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOLS = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
}


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loading with go-yaml v2's implicit scalar types (see the module docstring)."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }


_Loader.add_implicit_resolver(_BOOL, re.compile("^(?:" + "|".join(_BOOLS) + ")$"), list("yYnNtTfFoO"))
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^[-+]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9][0-9_]*)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return _BOOLS[loader.construct_scalar(node)]


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | float:
    """go-yaml v2: underscores dropped, then Go's ParseInt with base prefixes (a leading 0 is
    octal); what does not parse as an integer is a float (``019``)."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    bases = {"0x": 16, "0X": 16, "0o": 8, "0O": 8, "0b": 2, "0B": 2}
    try:
        if body[:2] in bases:
            return sign * int(body[2:], bases[body[:2]])
        if len(body) > 1 and body.startswith("0"):
            return sign * int(body, 8)
        return sign * int(body)
    except ValueError:
        return float(text)


_Loader.add_constructor(_BOOL, _construct_bool)
_Loader.add_constructor(_INT, _construct_int)


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


def _json_key(key: str | int | float | bool) -> str:
    """A mapping key as sigs.k8s.io/yaml writes it into JSON (bools as JSON, floats as Go's
    FormatFloat(key, 'g', -1, 32): a float32's shortest digits, e-form below 1e-4 or from 1e6)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float):
        return _go_float32_g(key)
    return str(key)


def _go_float32_g(number: float) -> str:
    if number != number:
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "+Inf" if number > 0 else "-Inf"
    if number == 0:
        return "0"
    single = struct.unpack("f", struct.pack("f", number))[0]
    for precision in range(1, 10):  # the shortest digits that give the same float32 back
        text = format(single, f".{precision}e")
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            break
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text)
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    if exponent < -4 or exponent >= 6:
        return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    fixed = format(Decimal(f"{mantissa}e{exponent}"), "f")
    return fixed.rstrip("0").rstrip(".") if "." in fixed else fixed


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
            key = _json_key(key)
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
