"""The header-map wire format (as Envoy and proxy-wasm-cpp-host write it) and HeaderMap semantics."""

from __future__ import annotations

import struct

import pytest

from meshwasm.host import HeaderMap
from meshwasm.host.abi import deserialize_pairs, serialize_pairs


def test_serialization_matches_envoy_layout():
    data = serialize_pairs([(b":path", b"/"), (b"a", b"bc")])
    expected = (
        struct.pack("<I", 2)
        + struct.pack("<II", 5, 1)
        + struct.pack("<II", 1, 2)
        + b":path\0/\0"
        + b"a\0bc\0"
    )
    assert data == expected


def test_round_trip_keeps_order_repeats_and_empty_values():
    pairs = [(b"x", b"1"), (b"x", b""), (b"y", b"\xff\x00z")]
    assert deserialize_pairs(serialize_pairs(pairs)) == pairs


def test_empty_map_is_a_zero_count():
    assert serialize_pairs([]) == b"\0\0\0\0"
    assert deserialize_pairs(b"") == []
    assert deserialize_pairs(b"\0\0\0\0") == []


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\0",
        struct.pack("<I", 3) + b"\0" * 8,
        struct.pack("<I", 1) + struct.pack("<II", 10, 10) + b"k\0v\0",
    ],
)
def test_malformed_maps_are_rejected(data):
    with pytest.raises(ValueError, match="header map"):
        deserialize_pairs(data)


def test_header_map_is_case_insensitive_and_keeps_repeats():
    headers = HeaderMap([("X-A", "1"), ("x-a", "2"), ("b", "3")])
    assert headers["x-a"] == "1,2"
    assert headers.get_all("X-a") == ["1", "2"]
    assert "X-A" in headers
    assert headers.get("missing") is None
    assert list(headers) == ["x-a", "b"]
    assert len(headers) == 2


def test_set_is_envoys_set_copy_remove_then_append():
    headers = HeaderMap([("x", "1"), ("y", "2"), ("x", "3")])
    headers.set("X", "new")
    assert headers.pairs() == [("y", "2"), ("x", "new")]
    headers.remove("y")
    assert headers.pairs() == [("x", "new")]


def test_properties_are_encoded_as_envoy_does():
    from meshwasm.host.properties import encode_property, property_path

    assert encode_property("v") == b"v"
    assert encode_property(7) == (7).to_bytes(8, "little")
    assert encode_property(True) == b"\x01"
    assert encode_property(0.5) == struct.pack("<d", 0.5)
    assert property_path("node.metadata.NAME") == ("node", "metadata", "NAME")


def test_plugin_answers_its_own_and_given_properties(host_wat_modules):
    from meshwasm.host import Plugin

    plugin = Plugin.load(host_wat_modules["no_wasi"], root_id="r", vm_id="v", properties={"node.id": "n1"})
    assert plugin._get_property(("plugin_root_id",)) == b"r"
    assert plugin._get_property(("plugin_vm_id",)) == b"v"
    assert plugin._get_property(("plugin_name",)) == b"r"
    assert plugin._get_property(("node", "id")) == b"n1"
    assert plugin._get_property(("request", "path")) is None  # no stream current
