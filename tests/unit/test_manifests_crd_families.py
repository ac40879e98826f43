"""A SpecFamily says of each member exactly what the full CRD check says, and skips the full
walk only where that is exact (see meshwasm.manifests.crd_families)."""

from __future__ import annotations

from typing import Any

import pytest

from meshwasm.manifests import crd_families
from meshwasm.manifests.cel import compile_rule
from meshwasm.manifests.crd_families import SpecFamily
from meshwasm.manifests.crd_validation import (
    SchemaNode,
    SchemaValidator,
    _Errors,
    cel_type,
    validate_manifest,
    validator_for,
)

API, KIND = "extensions.istio.io/v1alpha1", "WasmPlugin"
HOLES = ("selector", "pluginConfig", "pluginName")
TEMPLATE: dict[str, Any] = {
    "url": "oci://registry/repo:v1",
    "phase": "AUTHN",
    "priority": 10,
    "failStrategy": "FAIL_CLOSE",
    "match": [{"mode": "CLIENT", "ports": [{"number": 80}]}],
}
CONFIG = {"a": 1}


def member(
    name: str, selector: Any, config: Any = CONFIG, template: dict[str, Any] = TEMPLATE, **extra: Any
) -> dict[str, Any]:
    """A manifest built as the translation builds them: the template's very objects plus holes
    (by default with the witness's keys, so only the fast path's own checks can tell them apart)."""
    spec = dict(template)
    spec["selector"] = selector
    if config is not None:
        spec["pluginConfig"] = config
    spec["pluginName"] = name
    spec.update(extra)
    return {"apiVersion": API, "kind": KIND, "metadata": {"name": name, "namespace": "ns"}, "spec": spec}


@pytest.fixture
def full_checks(monkeypatch) -> list[dict[str, Any]]:
    """The manifests the family handed to the full check."""
    seen: list[dict[str, Any]] = []

    def counting(manifest: Any) -> Any:
        seen.append(manifest)
        return validate_manifest(manifest)

    monkeypatch.setattr(crd_families, "validate_manifest", counting)
    return seen


def test_wasm_plugin_family_takes_the_fast_path_for_valid_members(full_checks):
    family = SpecFamily(API, KIND, HOLES)
    assert family.fast
    good = {"matchLabels": {"app": "gw1"}}
    first = member("p0", good, {"a": 1})
    assert family.errors(first) == []
    assert full_checks == [first]
    others = [member(f"p{i}", {"matchLabels": {"app": f"gw{i}"}}, {"n": i}) for i in range(1, 6)]
    for m in others:
        assert family.errors(m) == []
    assert full_checks == [first], "valid members sharing the template are vouched for"


BAD_MEMBERS = {
    "wildcard label value in the selector": lambda: member("p", {"matchLabels": {"app": "a*"}}),
    "wildcard label key in the selector": lambda: member("p", {"matchLabels": {"*": "a"}}),
    "selector of the wrong type": lambda: member("p", ["app"]),
    "null selector": lambda: member("p", None),
    "null plugin config": lambda: member("p", {"matchLabels": {"app": "x"}}, pluginConfig=None),
    "plugin config not an object": lambda: member("p", {"matchLabels": {"app": "x"}}, pluginConfig="x"),
    "plugin name not a string": lambda: member("p", {"matchLabels": {"app": "x"}}, pluginName=7),
    "targetRef beside the selector (CEL rule on spec)": lambda: member(
        "p", {"matchLabels": {"app": "x"}}, targetRef={"kind": "Gateway", "name": "g"}
    ),
    "unknown field": lambda: member("p", {"matchLabels": {"app": "x"}}, colour="red"),
    "non-hole field changed (a new object)": lambda: member(
        "p", {"matchLabels": {"app": "x"}}, template={**TEMPLATE, "phase": "NOWHERE"}
    ),
    "non-hole field of the witness's value but another object": lambda: member(
        "p", {"matchLabels": {"app": "x"}}, template={**TEMPLATE, "match": [{"mode": "SIDEWAYS"}]}
    ),
    "wrong apiVersion": lambda: {
        **member("p", {"matchLabels": {"app": "x"}}),
        "apiVersion": "extensions.istio.io/v9",
    },
    "extra top-level key": lambda: {**member("p", {"matchLabels": {"app": "x"}}), "status": {"x": 1}},
}


@pytest.mark.parametrize("case", list(BAD_MEMBERS))
def test_member_errors_are_the_full_checks_after_a_witness(case):
    family = SpecFamily(API, KIND, HOLES)
    assert family.errors(member("w", {"matchLabels": {"app": "w"}}, {"a": 1})) == []
    bad = BAD_MEMBERS[case]()
    expected = validate_manifest(bad)
    assert family.errors(bad) == expected
    if case != "extra top-level key":  # status is in the CRD: checked, but may pass
        assert expected, f"{case}: the fixture must be one the full check refuses"


def test_a_hole_value_that_passed_once_is_not_rechecked_but_a_bad_one_always_is(full_checks):
    family = SpecFamily(API, KIND, HOLES)
    shared = {"matchLabels": {"app": "gw"}}  # one selector object for all of a gateway's plugins
    bad = {"matchLabels": {"app": "gw*"}}
    results = [family.errors(member(f"p{i}", shared if i % 2 else bad, {"i": i})) for i in range(6)]
    assert [bool(r) for r in results] == [True, False, True, False, True, False]
    assert all(r == results[0] for r in results[::2])
    # The bad ones go through the full check every time (never remembered); so does the first good one.
    assert len(full_checks) == 4


def test_a_rule_reading_a_holes_value_disables_the_fast_path(monkeypatch, full_checks):
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                "x-kubernetes-validations": [{"rule": "self.a != self.b", "message": "a and b differ"}],
            }
        },
    }
    validator = SchemaValidator(schema, name="T")
    monkeypatch.setattr(crd_families, "validator_for", lambda api, kind: validator)
    monkeypatch.setattr(
        crd_families, "validate_manifest", lambda m: (full_checks.append(m), validator.errors(m))[1]
    )
    family = SpecFamily("x/v1", "T", ("b",))
    assert not family.fast
    a = "same"
    witness = {"apiVersion": "x/v1", "kind": "T", "metadata": {}, "spec": {"a": a, "b": "other"}}
    clash = {"apiVersion": "x/v1", "kind": "T", "metadata": {}, "spec": {"a": a, "b": "same"}}
    assert family.errors(witness) == []
    assert [e.detail for e in family.errors(clash)] == ["Invalid value: a and b differ"]
    assert len(full_checks) == 2


def test_a_rule_testing_only_a_holes_presence_keeps_it_and_still_catches_its_violation(monkeypatch):
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"a": {"type": "string"}, "b": {"type": "string", "nullable": True}},
                "x-kubernetes-validations": [
                    {"rule": "!(has(self.a) && has(self.b))", "message": "one of a, b"}
                ],
            }
        },
    }
    validator = SchemaValidator(schema, name="T")
    monkeypatch.setattr(crd_families, "validator_for", lambda api, kind: validator)
    monkeypatch.setattr(crd_families, "validate_manifest", validator.errors)
    family = SpecFamily("x/v1", "T", ("b",))
    assert family.fast
    only_b = {"apiVersion": "x/v1", "kind": "T", "metadata": {}, "spec": {"b": "1"}}
    assert family.errors(only_b) == []
    assert family.errors({**only_b, "spec": {"b": "2"}}) == []
    both = {**only_b, "spec": {"a": "x", "b": "2"}}
    assert family.errors(both) == validator.errors(both) != []
    null_b = {**only_b, "spec": {"b": None}}
    assert family.errors(null_b) == validator.errors(null_b)


def test_cel_rule_presence_fields_are_told_from_value_fields():
    rule = compile_rule(
        {"rule": "(has(self.a) ? 1 : 0) + (has(self.b) ? 1 : 0) <= 1 && (!has(self.c) || self.c != 'x')"},
        cel_type({"type": "object"}),
    )
    assert rule.fields == frozenset({"c"})
    assert rule.presence == frozenset({"a", "b"})
    # Remembered per presence of a and b, and per c's value: each verdict right whatever came first.
    cases = [
        ({"a": "1"}, None),
        ({"a": "2"}, None),
        ({"a": "1", "b": "2"}, "fail"),
        ({"a": "3", "b": "4"}, "fail"),
        ({"c": "x"}, "fail"),
        ({"c": "y", "a": "5"}, None),
        ({"b": "1", "c": "y"}, None),
    ]
    for value, verdict in cases:
        assert (rule.failure(value) is not None) == (verdict == "fail"), value


@pytest.mark.parametrize("hole", HOLES)
@pytest.mark.parametrize(
    "value",
    [
        {},
        {"a": [1, {"b": None}]},
        {"matchLabels": {"app": "x"}},
        {"matchLabels": {"app": "x*"}},
        "p",
        7,
        None,
        [1],
    ],
)
def test_a_nodes_shortcut_verdict_is_its_full_checks(hole, value):
    spec = validator_for(API, KIND).root.child("spec")
    node = spec.child(hole)
    full = _Errors()
    node.check(value, ("spec", hole), full)
    assert node.accepts(value, ("spec", hole)) == (not full.found)


def test_families_sharing_what_passed_still_refuse_a_bad_hole(monkeypatch):
    shared: dict[Any, Any] = {}
    first, second = (SpecFamily(API, KIND, HOLES, passed=shared) for _ in range(2))
    other = {**TEMPLATE, "phase": "STATS"}  # another extension's template
    selector, bad = {"matchLabels": {"app": "gw"}}, {"matchLabels": {"app": "gw*"}}
    assert first.errors(member("a0", selector)) == []
    assert second.errors(member("b0", {"matchLabels": {"app": "w"}}, template=other)) == []
    checked: list[Any] = []
    accepts = SchemaNode.accepts
    monkeypatch.setattr(SchemaNode, "accepts", lambda n, v, p: (checked.append(v), accepts(n, v, p))[1])
    assert second.errors(member("b1", selector, template=other)) == []
    assert all(v is not selector for v in checked), "it passed in the first family's witness"
    refused = member("b2", bad, template=other)
    assert second.errors(refused) == validate_manifest(refused) != []
    assert first.errors(member("a1", bad)) == validate_manifest(member("a1", bad)) != []
