"""plugins/add-header/config.schema.json against the plugin's own contract vectors, and the merge."""

from __future__ import annotations

import json
import re

import pytest

from meshwasm.translate import ConfigViolation, merge_config, validate_config


@pytest.fixture(scope="module")
def schema(repo_root):
    return json.loads((repo_root / "plugins/add-header/config.schema.json").read_text())


@pytest.fixture(scope="module")
def contract(repo_root):
    return json.loads((repo_root / "plugins/add-header/testdata/contract.json").read_text())


def test_every_valid_contract_config_passes(schema, contract):
    for case in contract["valid"]:
        assert validate_config(schema, json.loads(case["config"])) == [], case["name"]


def _parsed(config):
    try:
        return json.loads(config)
    except json.JSONDecodeError:
        return None


def test_every_invalid_contract_config_fails_on_the_field_the_plugin_names(schema, contract):
    """The plugin's CRITICAL message starts with the field at fault (``headers[0].value: ...``);
    the schema must reject the same config, on that field among others. Configs that are not JSON at all
    cannot come out of a YAML tree and are the plugin's business alone."""
    checked = 0
    for case in contract["invalid"]:
        config = _parsed(case["config"])
        if config is None:
            continue
        message = case["critical"].removeprefix("invalid configuration: ")
        found = re.match(r"^([\w\[\]\.]+): ", message)
        want_field = found.group(1) if found else ""
        violations = validate_config(schema, config)
        assert violations, case["name"]
        # The plugin stops at its first error; the schema lists them all, the plugin's among them.
        assert want_field in {v.field for v in violations}, (case["name"], violations)
        checked += 1
    assert checked >= 20


def test_messages_say_what_is_wrong(schema):
    (violation,) = validate_config(schema, {"header": "x-a", "value": "v", "path": "sideways"})
    assert violation.field == "path"
    assert "'sideways' is not one of ['request', 'response']" in violation.message
    assert validate_config(schema, {"hedaer": "x-a", "value": "v"}) == [
        ConfigViolation("", "unknown key 'hedaer' (allowed: action, header, path, value)"),
        ConfigViolation("header", "missing (required)"),
    ]
    violations = validate_config(schema, {"header": "x-a", "value": "v", "hedaer": 1})
    assert [v.message for v in violations] == ["unknown key 'hedaer' (allowed: action, header, path, value)"]


def test_merge_attachment_wins_objects_merge_lists_replace_null_removes():
    base = {"header": "x-a", "value": "default", "nested": {"a": 1, "b": 2}, "headers": [{"x": 1}]}
    overlay = {"value": "mine", "nested": {"b": 3}, "headers": [{"y": 2}], "header": None}
    merged = merge_config(base, overlay)
    assert merged == {"value": "mine", "nested": {"a": 1, "b": 3}, "headers": [{"y": 2}]}
    assert base["nested"] == {"a": 1, "b": 2}  # inputs untouched
    assert base["header"] == "x-a"
    assert merge_config(None, None) == {}


def test_merge_keeps_base_key_order_shares_nothing_and_drops_only_mapping_nulls():
    base = {"z": 1, "a": {"k": [1, {"deep": "x"}]}, "m": "keep", "gone": 2}
    overlay = {"new": {"p": None, "q": [None, {"r": None}]}, "a": {"n": 2}, "gone": None, "z": 3}
    merged = merge_config(base, overlay)
    assert list(merged) == ["z", "a", "m", "new"]
    assert list(merged["a"]) == ["k", "n"]
    assert merged["new"] == {"q": [None, {"r": None}]}  # a list is a value: kept whole, nulls and all
    merged["a"]["k"][1]["deep"] = "changed"
    merged["new"]["q"][1]["r"] = 1
    assert base["a"]["k"][1]["deep"] == "x"
    assert overlay["new"]["q"][1] == {"r": None}


def test_seed_form_extension_with_list_form_attachment_merges_into_a_valid_config(schema):
    """The seed's extension default ({header, value}) plus a `headers` list on the gateway is
    invalid (both forms), unless the attachment drops the defaults with null."""
    extension = {"header": "x-ingress-header", "value": "powered by TSB"}
    attachment = {"headers": [{"header": "x-a", "value": "1"}]}
    assert validate_config(schema, merge_config(extension, attachment))
    attachment_with_nulls = {**attachment, "header": None, "value": None}
    assert validate_config(schema, merge_config(extension, attachment_with_nulls)) == []


def test_the_fast_check_agrees_with_jsonschema(schema, contract):
    """jsonschema-rs decides validity at render (jsonschema only words refusals): on the contract's
    configs and thousands of mutations of them, both must say the same."""
    import random

    import jsonschema

    from meshwasm.translate.config_schema import ConfigSchema

    compiled = ConfigSchema(schema)
    assert compiled._fast is not None
    reference = jsonschema.validators.validator_for(schema)(schema)
    rng = random.Random(20260827)
    alphabet = ["a", "Z", "0", "-", "_", ":", " ", "\r", "\n", "\x00", "é", "~", "!", "\u2028", "/", "{"]
    pieces: list = [None, 1, 1.5, True, "", "x", [], {}, "request", "response", "add", "set", "sideways"]
    configs = [c for c in (_parsed(case["config"]) for case in contract["valid"] + contract["invalid"]) if c]

    def mutate(value):
        if isinstance(value, dict) and value and rng.random() < 0.7:
            key = rng.choice(sorted(value))
            out = dict(value)
            roll = rng.random()
            if roll < 0.3:
                out[key] = mutate(out[key])
            elif roll < 0.5:
                out.pop(key)
            elif roll < 0.7:
                out[rng.choice(["header", "value", "path", "action", "headers", "extra"])] = rng.choice(
                    pieces
                )
            else:
                out[key] = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
            return out
        if isinstance(value, list) and value and rng.random() < 0.7:
            index = rng.randrange(len(value))
            return [*value[:index], mutate(value[index]), *value[index + 1 :]]
        return rng.choice([*pieces, "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))])

    checked = valid = 0
    for _ in range(3000):
        config = mutate(rng.choice(configs))
        fast = compiled._fast.is_valid(config)
        assert fast == reference.is_valid(config), config
        checked += 1
        valid += fast
    assert 0 < valid < checked  # both verdicts were exercised


def test_the_trees_copy_of_the_schema_is_the_plugins(repo_root):
    """tsb/ carries the plugin's schema (a tree reads only files inside itself): the same bytes."""
    plugin = (repo_root / "plugins/add-header/config.schema.json").read_bytes()
    assert (repo_root / "tsb/add-header.config.schema.json").read_bytes() == plugin
