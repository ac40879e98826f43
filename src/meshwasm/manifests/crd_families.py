"""Checking a family of manifests against their CRD fast: many resources that share all of their
spec but a few top-level fields.

A translation emits thousands of WasmPlugins whose specs are one extension's fields plus a few
of their own (selector, pluginConfig, pluginName: the *holes*). Validating each in full repeats
the same work on the shared part. A :class:`SpecFamily` validates one member in full (the
witness) and accepts a later member without the full walk when that is exact:

- it has the same spec keys, in the same order, as a witness, and the very same objects in
  every field of its spec that is not a hole (members are built from one template and never
  changed); its metadata is not the CRD schema's to check (names.metadata_errors checks every
  member's);
- each hole's value passes the schema node of that field on its own, and is not null (so a
  rule's ``has()`` of it sees what it saw in the witness, whose holes are not null either);
- no check above the holes depends on a hole's value: neither the root's nor the spec's own
  rules read one (a rule that only tests ``has(self.<hole>)`` depends on the key alone, the same
  as the witness's), and neither has a shape (oneOf, anyOf, ...) or an enum of whole objects.

Then the full check finds nothing either: every check it makes is one the witness passed, or a
hole's own. Anything else goes through :func:`validate_manifest`, so a refusal is always the full
check's, in its words and order (tests/unit/test_manifests_crd_families.py compares the two on
mutated manifests; tests/unit/test_translate_emitted.py checks what a translation hands over).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshwasm.manifests.crd_validation import FieldError, SchemaNode, validate_manifest, validator_for

_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec"})

# Hole values seen to pass: (id of the hole's schema node, id of the value) -> the node and value.
PassedHoles = dict[tuple[int, int], tuple[SchemaNode, Any]]


class SpecFamily:
    """Manifests of one kind that share their spec but the ``holes`` (see the module docstring).

    One family lives as long as one batch of checks (a translation): it keeps its witnesses and
    the hole values it has seen pass, by identity, and relies on the members not changing.
    Families of one batch may share ``passed`` (the hole values seen to pass, per schema node): a
    gateway's one selector object is in a plugin of each of its extensions.
    """

    def __init__(
        self,
        api_version: str,
        kind: str,
        holes: Iterable[str],
        passed: PassedHoles | None = None,
    ):
        self.api_version = api_version
        self.kind = kind
        self.holes = frozenset(holes)
        validator = validator_for(api_version, kind)
        spec = validator.root.child("spec") if validator is not None else None
        self._spec: SchemaNode | None = None
        self._nodes: dict[str, SchemaNode | None] = {}
        # Only when no check above the holes reads their values is the fast path exact.
        if (
            validator is not None
            and spec is not None
            and spec.type == "object"
            and not validator.root.reads_values_of(frozenset({"spec"}))
            and not spec.reads_values_of(self.holes)
        ):
            self._spec = spec
            self._nodes = {name: spec.child(name) for name in self.holes}
        # Spec keys (in order) -> the witness's values of the fields that are not holes.
        self._witnesses: dict[tuple[str, ...], dict[str, Any]] = {}
        # (id of a hole's node, id of a value) -> the node and the value, which passed it (both
        # kept, so neither id is reused meanwhile).
        self._passed: PassedHoles = passed if passed is not None else {}

    @property
    def fast(self) -> bool:
        """Whether the schema allows the fast path at all (see the module docstring)."""
        return self._spec is not None

    def errors(self, manifest: Mapping[str, Any]) -> list[FieldError]:
        """What :func:`validate_manifest` says of ``manifest``, without its full walk when the
        manifest is a member the family can vouch for."""
        if self._accepts(manifest):
            return []
        found = validate_manifest(manifest)
        if not found:
            self._remember(manifest)
        return found

    def _accepts(self, manifest: Mapping[str, Any]) -> bool:
        if self._spec is None or manifest.keys() != _TOP_LEVEL:
            return False
        if manifest["apiVersion"] != self.api_version or manifest["kind"] != self.kind:
            return False
        spec = manifest["spec"]
        if type(spec) is not dict:
            return False
        witness = self._witnesses.get(tuple(spec))
        if witness is None:
            return False
        for name, value in witness.items():
            if spec[name] is not value:
                return False
        return all(self._hole_passes(name, spec[name]) for name in self.holes if name in spec)

    def _hole_passes(self, name: str, value: Any) -> bool:
        if value is None:
            return False
        node = self._nodes[name]
        if node is None:
            return True  # nothing checks it (a hole the witness had too, so not an unknown field)
        key = (id(node), id(value))
        seen = self._passed.get(key)
        if seen is not None and seen[0] is node and seen[1] is value:
            return True
        if not node.accepts(value, ("spec", name)):
            return False
        self._passed[key] = (node, value)
        return True

    def _remember(self, manifest: Mapping[str, Any]) -> None:
        """A member the full check found nothing in becomes the witness for its spec keys."""
        spec = manifest.get("spec")
        if self._spec is None or manifest.keys() != _TOP_LEVEL or type(spec) is not dict:
            return
        if manifest["apiVersion"] != self.api_version or manifest["kind"] != self.kind:
            return
        if any(spec[name] is None for name in self.holes & spec.keys()):
            return
        self._witnesses.setdefault(tuple(spec), {k: v for k, v in spec.items() if k not in self.holes})
        for name in self.holes & spec.keys():
            node = self._nodes[name]
            if node is not None:
                self._passed[(id(node), id(spec[name]))] = (node, spec[name])
