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
import json
import re
import struct
from collections.abc import Iterator, Mapping
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
    is not plain JSON, or is over the bounds (the YAML path then reads it, and reports any problem
    with its line)."""
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not _within_bounds(data):
        return None
    line = text[: len(text) - len(text.lstrip())].count("\n") + 1
    return YamlDocument(data=data, file=file, line=line, lines=_LazyLines(text, file))


def _within_bounds(data: Any) -> bool:
    """Whether parsed JSON is within MAX_DEPTH and MAX_NODES (walked level by level, without
    recursion; JSON gives plain dicts and lists, so their exact types are tested)."""
    level: list[Any] = [data]
    depth = nodes = 0
    while level:
        depth += 1
        nodes += len(level)
        if depth > MAX_DEPTH or nodes > MAX_NODES:
            return False
        below: list[Any] = []
        for value in level:
            kind = type(value)
            if kind is dict:
                below.extend(value.values())
            elif kind is list:
                below.extend(value)
        level = below
    return True


def parse_documents(text: str, file: str) -> tuple[list[YamlDocument], list[Problem]]:
    """Every non-empty document in ``text``; problems (syntax, duplicate keys, bounds) name file and line.

    Bounds hold for any input, so a hostile file costs little time and memory: at most MAX_DEPTH
    levels of nesting, and at most MAX_NODES values per file once aliases are expanded (an
    "alias bomb" of a few lines can otherwise expand to billions of values); a recursive alias,
    which has no finite value, is refused.
    """
    if text.lstrip().startswith("{"):
        document = _parse_json(text, file)
        if document is not None:
            return [document], []
    return _parse_yaml(text, file)


class YamlBoundError(Exception):
    """A YAML document over the bounds, or with a recursive alias: where, and why."""

    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.message = message
        self.line = line


def _parse_yaml(text: str, file: str) -> tuple[list[YamlDocument], list[Problem]]:
    documents: list[YamlDocument] = []
    problems: list[Problem] = []
    loader = _Loader(text)
    budget = _Budget()
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _measure(node, budget)  # refuses alias bombs, recursion and depth before building anything
            lines: dict[FieldPath, int] = {}
            data = _Converter(loader, lines, problems, file, budget).convert(node, (), 1)
            if data is None:
                continue
            documents.append(YamlDocument(data=data, file=file, line=node.start_mark.line + 1, lines=lines))
    except YamlBoundError as exc:
        problems.append(Problem(exc.message, file=file, line=exc.line))
        documents.clear()  # nothing half-read is used
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


# Nesting levels a document may have (Kubernetes objects need a few dozen at most), and values a
# file may expand to, aliases included (a large List file of real objects stays well under it).
MAX_DEPTH = 100
MAX_NODES = 250_000


class _Budget:
    def __init__(self) -> None:
        self.nodes = MAX_NODES


def _measure(root: yaml.Node, budget: _Budget) -> None:
    """Size and depth of a document with its aliases expanded, from the composed node graph (each
    distinct node visited once, without recursion), checked against the bounds before conversion:
    an alias bomb is refused in microseconds, however large it would expand."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            depths[key] = 1 + max((depths[id(c)] for c in children), default=0)
            if sizes[key] > budget.nodes:
                raise YamlBoundError(
                    f"the YAML expands to more than {MAX_NODES:,} values (aliases repeating large"
                    " parts?); meshwasm reads no more",
                    node.start_mark.line + 1,
                )
            if depths[key] > MAX_DEPTH:
                raise YamlBoundError(
                    f"the YAML is nested deeper than {MAX_DEPTH} levels", node.start_mark.line + 1
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlBoundError(
                "recursive YAML alias: a value contains itself (it has no finite value)",
                node.start_mark.line + 1,
            )
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise YamlBoundError(
                    "recursive YAML alias: a value contains itself (it has no finite value)",
                    child.start_mark.line + 1,
                )
            if id(child) not in sizes:
                stack.append((child, False))


_MERGE = "tag:yaml.org,2002:merge"


def _children(node: yaml.Node) -> list[yaml.Node]:
    """What a node's value is made of. A merge key (``<<: [*a, *b]``) brings in each merged
    mapping's entries once, however often it is named (PyYAML merges without repeating them)."""
    if isinstance(node, yaml.MappingNode):
        out: list[yaml.Node] = []
        merged: dict[int, yaml.Node] = {}
        for key, value in node.value:
            if key.tag == _MERGE:
                for mapping in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                    merged[id(mapping)] = mapping
            else:
                out += (key, value)
        return out + list(merged.values())
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _Converter:
    """Plain data from composed nodes, with the line of each field, within the bounds."""

    def __init__(
        self,
        loader: yaml.SafeLoader,
        lines: dict[FieldPath, int],
        problems: list[Problem],
        file: str,
        budget: _Budget,
    ):
        self.loader = loader
        self.lines = lines
        self.problems = problems
        self.file = file
        self.budget = budget
        self.active: set[int] = set()  # nodes being converted: meeting one again is a recursive alias

    def convert(self, node: yaml.Node, path: FieldPath, depth: int) -> Any:
        line = node.start_mark.line + 1
        self.budget.nodes -= 1
        if self.budget.nodes < 0:
            raise YamlBoundError(
                f"the YAML expands to more than {MAX_NODES:,} values (aliases repeating large"
                " parts?); meshwasm reads no more",
                line,
            )
        if depth > MAX_DEPTH:
            raise YamlBoundError(f"the YAML is nested deeper than {MAX_DEPTH} levels", line)
        self.lines.setdefault(path, line)
        if isinstance(node, yaml.ScalarNode):
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, datetime.date | datetime.datetime):
                return node.value
            return value
        if id(node) in self.active:
            raise YamlBoundError(
                "recursive YAML alias: a value contains itself (it has no finite value)", line
            )
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path, depth)
            return [self.convert(item, (*path, index), depth + 1) for index, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: FieldPath, depth: int) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)  # YAML merge keys (<<): sized, and checked for loops, by _measure
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self.loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str | int | float | bool) or key is None:
                self.problems.append(
                    Problem(
                        "mapping keys must be strings", file=self.file, line=line, field=format_path(path)
                    )
                )
                continue
            key = _json_key(key)
            child = (*path, key)
            if key in out:
                self.problems.append(
                    Problem(
                        f"duplicate key {key!r} (first at line {self.lines.get(child)})",
                        file=self.file,
                        line=line,
                        field=format_path(child),
                    )
                )
                continue
            self.lines[child] = line
            out[key] = self.convert(value_node, child, depth + 1)
        return out
