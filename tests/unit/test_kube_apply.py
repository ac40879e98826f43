"""`meshwasm apply`'s pure parts: what counts as a change, the diff people read, the set label,
and where each rendered object came from."""

from __future__ import annotations

from pathlib import Path

from meshwasm.kube.apply import APPLY_SET_LABEL, labelled, origins
from meshwasm.kube.diff import comparable, yaml_diff
from meshwasm.manifests import load
from meshwasm.translate import tsb_to_istio

ROOT = Path(__file__).resolve().parents[2]


def _live(value: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "c",
            "namespace": "n",
            "resourceVersion": "17",
            "uid": "u",
            "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "meshwasm"}],
        },
        "data": {"k": value},
        "status": {"anything": True},
    }


def test_server_set_fields_are_not_changes() -> None:
    assert comparable(_live("a")) == comparable({**_live("a"), "metadata": {"name": "c", "namespace": "n"}})
    assert comparable(_live("a")) != comparable(_live("b"))


def test_the_diff_shows_the_changed_value() -> None:
    diff = yaml_diff(comparable(_live("a")), comparable(_live("b")), label="ConfigMap n/c")
    assert "-  k: a" in diff
    assert "+  k: b" in diff
    assert yaml_diff(comparable(_live("a")), comparable(_live("a")), label="x") == ""


def test_every_object_carries_the_apply_set_label_without_touching_the_input() -> None:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "b"}}}
    out = labelled(doc, "tsb")
    assert out["metadata"]["labels"] == {"a": "b", APPLY_SET_LABEL: "tsb"}
    assert doc["metadata"]["labels"] == {"a": "b"}


def _at(origin: str) -> tuple[Path, int]:
    file, _, line = origin.rpartition(":")
    return Path(file).resolve(), int(line)


def test_generated_objects_point_at_the_tsb_gateway_they_came_from() -> None:
    tree = load(ROOT / "tsb")
    gateway_file = str(ROOT / "tsb" / "tier2" / "gateway.yaml")
    lines = Path(gateway_file).read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.startswith("  wasmPlugins:"))
    istio = tsb_to_istio(tree, fetcher_base="http://wasmfetcher.istio-system.svc.cluster.local")
    where = origins(istio.all(), tree.resources)
    plugin = where[("extensions.istio.io", "WasmPlugin", "tier2", "tier2-gateway-wasm-add-header0")]
    assert _at(plugin) == (Path(gateway_file), line)
    assert _at(where[("networking.istio.io", "Gateway", "tier2", "tier2-gateway")]) == (Path(gateway_file), 1)
    service = where[("", "Service", "httpbin", "httpbin")]
    assert _at(service) == (ROOT / "tsb" / "httpbin" / "service.yaml", 1)
