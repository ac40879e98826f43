"""Load a file, a directory or a kustomize tree into typed resources, in kustomize's order.

The order is ``kustomize build --reorder none`` (what the seed runs): the
``resources`` of each kustomization in the order listed, depth first. A
kustomization's ``namespace:`` is set on every namespaced resource under it,
the outermost one winning, as kustomize does. A directory without a
kustomization is read as its YAML files by name, then its subdirectories.

Every problem in the whole tree (YAML syntax, unknown fields, missing files,
duplicates) is collected and raised together as one :class:`ManifestError`,
each naming the file, the line and the field.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
from pydantic import ValidationError

from meshwasm.manifests import names
from meshwasm.manifests.base import Passthrough, Resource
from meshwasm.manifests.bulk import fewer_collections
from meshwasm.manifests.field_errors import FieldError
from meshwasm.manifests.kinds import CLUSTER_SCOPED_KINDS, group_of, model_for
from meshwasm.manifests.problems import ManifestError, Problem, SourceRef
from meshwasm.manifests.treefs import TreeFiles, TreeRefusal
from meshwasm.manifests.tsb import ANN_CONFIG_SCHEMA, ANN_CONFIG_SCHEMA_FILE, WasmExtension
from meshwasm.manifests.yamlsrc import FieldPath, YamlDocument, format_path, parse_documents

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
YAML_SUFFIXES = (".yaml", ".yml", ".json")
MAX_SCHEMA_BYTES = 1024 * 1024  # a plugin config's JSON Schema
# Kustomization fields meshwasm applies; others are reported, since the tree kustomize builds would differ.
_KUSTOMIZATION_APPLIED = {"apiVersion", "kind", "metadata", "resources", "bases", "namespace"}

# API groups of Istio's CRDs (manifests/crds): their resources are validated as the API server does.
ISTIO_GROUPS = frozenset(
    {"networking.istio.io", "extensions.istio.io", "security.istio.io", "telemetry.istio.io"}
)

R = TypeVar("R", bound=Resource)


@dataclass
class LoadedTree:
    """The resources of a tree in kustomize order, with the warnings loading produced."""

    root: Path
    resources: list[Resource] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def of_kind(self, model: type[R]) -> list[R]:
        """The resources of one model class (e.g. ``tree.of_kind(tsb.Gateway)``), in order."""
        return [r for r in self.resources if isinstance(r, model)]


def load(path: Path) -> LoadedTree:
    """Load ``path``: a YAML file (several documents, ``kind: List``), a directory, or a
    kustomize tree (a directory or file with ``kustomization.yaml``).

    Returns a :class:`LoadedTree` whose ``resources`` are typed models (core,
    TSB, Istio) or :class:`Passthrough` for unknown kinds (each with a warning
    in ``warnings``). Raises :class:`ManifestError` listing every problem,
    each with its file, line and field.
    """
    with fewer_collections():
        return _load(Path(path))


def _load(path: Path) -> LoadedTree:
    # The root the load restrictor keeps reads under: the tree's directory (a file's own directory).
    loader = _TreeLoader(TreeFiles(path if path.is_dir() else path.parent))
    documents = list(loader.path(Path(path), via=None, stack=()))
    tree = LoadedTree(root=Path(path), files=loader.files, warnings=loader.warnings)
    seen: dict[tuple[str, str, str, str], SourceRef] = {}
    for doc in documents:
        resource = loader.typed(doc)
        if resource is None:
            continue
        key = (group_of(resource.api_version), resource.kind, resource.namespace or "", resource.name)
        source = SourceRef(doc.file, doc.line)
        if key in seen:
            loader.problems.append(
                Problem(
                    f"{resource.ref} is defined twice (first at {seen[key]}); kustomize refuses this too",
                    file=doc.file,
                    line=doc.line,
                )
            )
            continue
        seen[key] = source
        tree.resources.append(resource.with_source(source, doc.lines))
    if loader.problems:
        raise ManifestError(loader.problems, hint="fix every problem listed; nothing was rendered")
    return tree


def _display(path: Path) -> str:
    """A path as people typed it: relative to the working directory when under it."""
    text = str(path)
    if not path.is_absolute():
        return text
    cwd = os.getcwd()
    # Under the working directory (a strict descendant of it): told from the strings, which a Path
    # keeps normalised, except under a "//" root, which only Path's own comparison tells apart.
    if text.startswith("//"):
        under = Path(cwd) in path.parents
    else:
        under = text != cwd and text.startswith(cwd.rstrip(os.sep) + os.sep)
    try:
        return os.path.relpath(text, cwd) if under else text
    except ValueError:
        return text


def _kustomization_in(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        candidate = directory / name
        if candidate.exists() or candidate.is_symlink():
            return candidate  # whatever it is: reading it goes through the restrictor
    return None


@dataclass(frozen=True)
class _Via:
    """The kustomization entry a path was named by, for messages about it: its line is looked up
    only when a message needs it (a JSON file's lines are found by reading it again)."""

    file: str
    doc: YamlDocument
    where: FieldPath

    def problem(self) -> Problem:
        """The place as a message's file, line and field."""
        return Problem("", file=self.file, line=self.doc.line_of(self.where), field=format_path(self.where))


class _TreeLoader:
    def __init__(self, files: TreeFiles) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.files: list[Path] = []
        self.tree = files
        self.directories: set[str] = set()  # plain directories read (a symlink loop is read once)

    def refuse(self, refusal: TreeRefusal, via: _Via | None, path: Path) -> None:
        at = via.problem() if via is not None else Problem("", file=_display(path))
        self.problems.append(Problem(refusal.message, file=at.file, line=at.line, field=at.field))

    # -- walking ---------------------------------------------------------------------------

    def path(self, path: Path, *, via: _Via | None, stack: tuple[Path, ...]) -> Iterator[YamlDocument]:
        try:
            kind = self.tree.kind(path)
        except TreeRefusal as refusal:
            self.refuse(refusal, via, path)
            return
        if kind == "missing":
            where = via.problem() if via is not None else Problem("", file=_display(path))
            self.problems.append(
                Problem(f"{path} does not exist", file=where.file, line=where.line, field=where.field)
            )
            return
        if kind == "dir":
            kustomization = _kustomization_in(path)
            if kustomization is not None:
                yield from self.kustomization(kustomization, stack)
            else:
                yield from self.plain_directory(path, stack)
        elif path.name in KUSTOMIZATION_NAMES:
            yield from self.kustomization(path, stack)
        else:
            yield from self.file(path, via=via)

    def plain_directory(self, directory: Path, stack: tuple[Path, ...]) -> Iterator[YamlDocument]:
        real = self.tree.real(directory)
        if real in self.directories:
            return
        self.directories.add(real)
        try:
            entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
        except OSError as exc:
            self.problems.append(Problem(f"cannot list: {exc.strerror}", file=_display(directory)))
            return
        kinds: dict[Path, str] = {}
        for entry in entries:
            try:
                kinds[entry] = self.tree.kind(entry)
            except TreeRefusal as refusal:
                if entry.suffix in YAML_SUFFIXES or entry.is_dir():
                    self.refuse(refusal, None, entry)
        for entry in entries:
            if kinds.get(entry) == "file" and entry.suffix in YAML_SUFFIXES:
                yield from self.file(entry)
        for entry in entries:
            if kinds.get(entry) == "dir":
                yield from self.path(entry, via=None, stack=stack)

    def read(self, path: Path, via: _Via | None) -> str | None:
        """The text of a tree file through the restrictor and caps; None (and a problem) if refused."""
        self.files.append(path)
        try:
            return self.tree.read_text(path)
        except TreeRefusal as refusal:
            self.refuse(refusal, via, path)
            return None

    def file(self, path: Path, *, via: _Via | None = None) -> Iterator[YamlDocument]:
        text = self.read(path, via)
        if text is None:
            return
        documents, problems = parse_documents(text, _display(path))
        self.problems.extend(problems)
        for doc in documents:
            yield from self.expand_lists(doc)

    def expand_lists(self, doc: YamlDocument) -> Iterator[YamlDocument]:
        data = doc.data
        if isinstance(data, dict) and str(data.get("kind", "")).endswith("List") and "items" in data:
            items = data["items"]
            if not isinstance(items, list):
                self.problems.append(
                    Problem(
                        "items must be a list", file=doc.file, line=doc.line_of(("items",)), field="items"
                    )
                )
                return
            for index, item in enumerate(items):
                yield from self.expand_lists(doc.sub(("items", index), item))
            return
        yield doc

    def kustomization(self, path: Path, stack: tuple[Path, ...]) -> Iterator[YamlDocument]:
        directory = path.parent.resolve()
        display = _display(path)
        if directory in stack:
            self.problems.append(Problem("kustomization includes itself (a cycle)", file=display))
            return
        text = self.read(path, None)
        if text is None:
            return
        documents, problems = parse_documents(text, display)
        self.problems.extend(problems)
        if not documents:
            return
        doc = documents[0]
        spec = doc.data
        if not isinstance(spec, dict):
            self.problems.append(Problem("a kustomization must be a mapping", file=display, line=doc.line))
            return
        for key in spec:
            if key not in _KUSTOMIZATION_APPLIED:
                self.warnings.append(
                    Problem(
                        "not applied by meshwasm (only resources and namespace are); the output differs"
                        " from `kustomize build`",
                        file=display,
                        line=doc.line_of((key,)),
                        field=key,
                    )
                )
        namespace = spec.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            self.problems.append(
                Problem("must be a string", file=display, line=doc.line_of(("namespace",)), field="namespace")
            )
            namespace = None
        entries: list[tuple[FieldPath, Any]] = []
        for list_key in ("resources", "bases"):
            listed = spec.get(list_key, [])
            if not isinstance(listed, list):
                self.problems.append(
                    Problem(
                        "must be a list of paths", file=display, line=doc.line_of((list_key,)), field=list_key
                    )
                )
                continue
            entries.extend(((list_key, i), entry) for i, entry in enumerate(listed))
        for where, entry in entries:
            via = _Via(display, doc, where)
            if not isinstance(entry, str) or not entry:
                at = via.problem()
                self.problems.append(Problem("must be a path", file=at.file, line=at.line, field=at.field))
                continue
            if "://" in entry or entry.startswith(("github.com/", "git@")):
                at = via.problem()
                self.problems.append(
                    Problem(
                        f"remote resource {entry!r} is not supported; vendor it into the tree",
                        file=at.file,
                        line=at.line,
                        field=at.field,
                    )
                )
                continue
            try:
                target = self.tree.refer(path.parent, entry)
            except TreeRefusal as refusal:
                self.refuse(refusal, via, path)
                continue
            for child in self.path(target, via=via, stack=(*stack, directory)):
                if namespace:
                    _set_namespace(child, namespace)
                yield child

    # -- typing ----------------------------------------------------------------------------

    def typed(self, doc: YamlDocument) -> Resource | None:
        data = doc.data
        if not isinstance(data, dict):
            self.problems.append(
                Problem(
                    "a resource must be a mapping with apiVersion, kind and metadata",
                    file=doc.file,
                    line=doc.line,
                )
            )
            return None
        missing = False
        for key in ("apiVersion", "kind"):
            if not isinstance(data.get(key), str) or not data.get(key):
                self.problems.append(
                    Problem("missing (required)", file=doc.file, line=doc.line_of((key,)), field=key)
                )
                missing = True
        if missing:
            return None
        model = model_for(data["apiVersion"], data["kind"])
        refusals = self.refusals(data, model)
        if refusals:
            subject = f"{data['kind']} {_name_of(data)}"
            for refusal in refusals:
                self.problems.append(
                    Problem(
                        refusal.detail,
                        file=doc.file,
                        line=doc.line_of(refusal.path),
                        field=refusal.field or None,
                        subject=subject,
                    )
                )
            return None
        resource: Resource
        try:
            resource = (model or Passthrough).model_validate(data)
        except ValidationError as exc:
            subject = f"{data['kind']} {_name_of(data)}"
            for error in exc.errors():
                loc = tuple(error["loc"])
                self.problems.append(
                    Problem(
                        _message(error),
                        file=doc.file,
                        line=doc.line_of(loc),
                        field=format_path(loc) or None,
                        subject=subject,
                    )
                )
            return None
        if model is None:
            self.warnings.append(
                Problem(
                    f"kind {data['kind']} ({data['apiVersion']}) is not modelled by meshwasm; passed through"
                    " untouched",
                    file=doc.file,
                    line=doc.line,
                    subject=resource.ref,
                )
            )
        if isinstance(resource, WasmExtension):
            self.config_schema(resource, doc)
        return resource

    def refusals(self, data: dict[str, Any], model: type[Resource] | None) -> list[FieldError]:
        """What a Kubernetes API server would refuse in this manifest: its metadata (names,
        labels, annotations) and, for Istio's kinds, the CRD's schema and CEL rules."""
        group, kind = group_of(data["apiVersion"]), data["kind"]
        namespaced = model.NAMESPACED if model is not None else kind not in CLUSTER_SCOPED_KINDS
        found = names.metadata_errors(group, kind, data.get("metadata"), namespaced=namespaced)
        if group in ISTIO_GROUPS:
            from meshwasm.manifests.crd_validation import validate_manifest  # loads CEL only when needed

            found.extend(validate_manifest(data))
        return found

    def config_schema(self, extension: WasmExtension, doc: YamlDocument) -> None:
        """Read and check the extension's config schema annotation (inline JSON or a file)."""
        annotations = extension.metadata.annotations
        for key in (ANN_CONFIG_SCHEMA, ANN_CONFIG_SCHEMA_FILE):
            if key not in annotations:
                continue
            loc: FieldPath = ("metadata", "annotations", key)
            line, field_name = doc.line_of(loc), format_path(loc)

            def problem(message: str, line: int = line, field_name: str = field_name) -> Problem:
                return Problem(message, file=doc.file, line=line, field=field_name, subject=extension.ref)

            raw = annotations[key]
            if key == ANN_CONFIG_SCHEMA_FILE:
                try:
                    schema_path = self.tree.refer(Path(doc.file).parent, raw)
                    if self.tree.kind(schema_path) == "missing":
                        self.problems.append(problem(f"the config schema {schema_path} does not exist"))
                        continue
                    raw = self.tree.read_text(schema_path, limit=MAX_SCHEMA_BYTES)
                except TreeRefusal as refusal:
                    self.problems.append(problem(f"the config schema: {refusal.message}"))
                    continue
            try:
                schema = json.loads(raw)
            except (json.JSONDecodeError, RecursionError) as exc:
                self.problems.append(problem(f"config schema is not valid JSON: {exc}"))
                continue
            if not isinstance(schema, dict):
                self.problems.append(problem("config schema must be a JSON object"))
                continue
            invalid = _schema_refusal(json.dumps(schema, sort_keys=True))
            if invalid is not None:
                self.problems.append(problem(f"config schema is not a valid JSON Schema: {invalid}"))
                continue
            if key == ANN_CONFIG_SCHEMA_FILE:
                extension.set_schema_from_file(schema)


@functools.lru_cache(maxsize=64)
def _schema_refusal(schema_json: str) -> str | None:
    """Why a config schema is not a valid JSON Schema (checked against its metaschema once per
    distinct schema: extensions of a large tree share theirs), or None."""
    schema = json.loads(schema_json)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return str(exc.message)
    return None


def _set_namespace(doc: YamlDocument, namespace: str) -> None:
    data = doc.data
    if not isinstance(data, dict) or data.get("kind") in CLUSTER_SCOPED_KINDS:
        return
    model = model_for(str(data.get("apiVersion", "")), str(data.get("kind", "")))
    if model is not None and not model.NAMESPACED:
        return
    metadata = data.setdefault("metadata", {})
    if isinstance(metadata, dict):
        metadata["namespace"] = namespace


def _name_of(data: dict[str, Any]) -> str:
    metadata = data.get("metadata")
    if isinstance(metadata, dict):
        name = metadata.get("name", "?")
        namespace = metadata.get("namespace")
        return f"{namespace}/{name}" if namespace else str(name)
    return "?"


def _message(error: Any) -> str:
    kind = error.get("type")
    if kind == "extra_forbidden":
        return "unknown field (a typo? meshwasm rejects fields it would otherwise ignore)"
    if kind == "missing":
        return "missing (required)"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")
