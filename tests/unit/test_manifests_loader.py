"""Loading files, directories and kustomize trees: order, namespaces, lists, and every error located."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from meshwasm.manifests import ManifestError, Passthrough, core, load, tsb
from meshwasm.manifests import loader as loader_module

# The seed README's `kustomize build --reorder none | k apply -f -` output, in order.
SEED_ORDER = [
    ("WasmExtension", "wasm-add-header"),
    ("Namespace", "httpbin"),
    ("ServiceAccount", "httpbin"),
    ("Service", "httpbin"),
    ("Deployment", "httpbin"),
    ("Tenant", "httpbin"),
    ("Workspace", "httpbin-ws"),
    ("Namespace", "tier2"),
    ("Tenant", "tier2"),
    ("Workspace", "tier2-ws"),
    ("Group", "tier2-gg"),
    ("Tier1Gateway", "tier2-gateway"),
    ("Gateway", "tier2-gateway"),
]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def test_seed_tree_loads_in_the_seeds_order(repo_root):
    tree = load(repo_root / "tsb")
    assert [(r.kind, r.name) for r in tree.resources] == SEED_ORDER
    assert tree.warnings == []


def test_seed_tree_namespaces_come_from_the_kustomizations(repo_root):
    tree = load(repo_root / "tsb")
    namespaces = {(r.kind, r.name): r.namespace for r in tree.resources}
    assert namespaces[("Deployment", "httpbin")] == "httpbin"
    assert namespaces[("Gateway", "tier2-gateway")] == "tier2"
    assert namespaces[("Namespace", "tier2")] is None  # cluster-scoped: kustomize leaves it alone
    assert namespaces[("WasmExtension", "wasm-add-header")] is None


def test_seed_tree_types_what_the_gateway_needs(repo_root):
    tree = load(repo_root / "tsb")
    (extension,) = tree.of_kind(tsb.WasmExtension)
    assert extension.spec.url == "oci://127.0.0.1:5000/meshwasm/add-header:latest"
    assert extension.fqn == "organizations/tetrate/extensions/wasm-add-header"
    assert extension.config_schema is not None
    assert "$defs" in extension.config_schema
    (deployment,) = tree.of_kind(core.Deployment)
    assert deployment.spec.template.spec.containers[0].image == "docker.io/kennethreitz/httpbin"
    (gateway,) = tree.of_kind(tsb.Gateway)
    assert gateway.spec.http[0].routing.rules[0].route.service_destination.fqdn == (
        "httpbin.httpbin.svc.cluster.local"
    )
    assert gateway.source is not None
    assert gateway.source.file.endswith("tsb/tier2/gateway.yaml")


def test_outer_namespace_overrides_inner_and_nested_dirs_keep_order(tmp_path):
    write(
        tmp_path,
        {
            "kustomization.yaml": """
                namespace: outer
                resources: [b.yaml, sub, a.yaml]
            """,
            "a.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n",
            "b.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: b, namespace: mine}\n",
            "sub/kustomization.yaml": "namespace: inner\nresources: [s.yaml]\n",
            "sub/s.yaml": """
                apiVersion: v1
                kind: Namespace
                metadata: {name: s}
                ---
                apiVersion: v1
                kind: ServiceAccount
                metadata: {name: s}
            """,
        },
    )
    tree = load(tmp_path)
    assert [(r.kind, r.name, r.namespace) for r in tree.resources] == [
        ("ServiceAccount", "b", "outer"),
        ("Namespace", "s", None),
        ("ServiceAccount", "s", "outer"),
        ("ServiceAccount", "a", "outer"),
    ]


def test_kind_list_expands_and_items_keep_their_lines(tmp_path):
    write(
        tmp_path,
        {
            "list.yaml": """
                apiVersion: v1
                kind: List
                items:
                  - apiVersion: v1
                    kind: ServiceAccount
                    metadata: {name: one}
                  - apiVersion: v1
                    kind: Service
                    metadata: {name: two}
                    spec:
                      ports:
                        - port: 99999
            """
        },
    )
    with pytest.raises(ManifestError) as caught:
        load(tmp_path / "list.yaml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (12, "spec.ports[0].port")
    assert "less than or equal to 65535" in problem.message


def test_plain_directory_reads_files_by_name_then_subdirectories(tmp_path):
    write(
        tmp_path,
        {
            "z.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: z}\n",
            "a/x.yml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n",
            "b.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: b}\n",
            "notes.txt": "not yaml",
        },
    )
    assert [r.name for r in load(tmp_path).resources] == ["b", "z", "x"]


def test_all_problems_are_reported_with_file_line_and_field(tmp_path):
    write(
        tmp_path,
        {
            "kustomization.yaml": """
                resources:
                  - broken.yaml
                  - missing.yaml
                  - typo.yaml
                  - https://example.com/remote.yaml
            """,
            "broken.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: x\n",
            "typo.yaml": """
                apiVersion: extension.tsb.tetrate.io/v2
                kind: WasmExtension
                metadata:
                  name: ext
                spec:
                  url: oci://r/x:1
                  priorty: 3
                  phase: SOMETIMES
            """,
        },
    )
    with pytest.raises(ManifestError) as caught:
        load(tmp_path)
    found = {(Path(p.file or "").name, p.line, p.field) for p in caught.value.problems}
    assert found == {
        ("broken.yaml", 4, None),  # unclosed flow mapping: reported where the parser gave up
        ("kustomization.yaml", 3, "resources[1]"),
        ("typo.yaml", 7, "spec.priorty"),
        ("typo.yaml", 8, "spec.phase"),
        ("kustomization.yaml", 5, "resources[3]"),
    }
    text = str(caught.value)
    assert "missing.yaml does not exist" in text
    assert "remote resource" in text
    assert "5 manifest problems" in text


def test_duplicate_keys_and_duplicate_resources_are_errors(tmp_path):
    write(
        tmp_path,
        {
            "a.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\nkind: Service\n",
            "b.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns1}\n",
            "c.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns1}\n",
        },
    )
    with pytest.raises(ManifestError) as caught:
        load(tmp_path)
    messages = [(Path(p.file or "").name, p.line, p.message) for p in caught.value.problems]
    assert ("a.yaml", 4, "duplicate key 'kind' (first at line 2)") in messages
    assert any(f == "c.yaml" and "defined twice (first at" in m for f, _, m in messages)


def test_unknown_kinds_pass_through_untouched_with_a_warning(tmp_path):
    text = """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: deny
          namespace: tier2
        spec:
          action: DENY
          rules: [{from: [{source: {notNamespaces: [tier2]}}]}]
    """
    write(tmp_path, {"policy.yaml": text})
    tree = load(tmp_path)
    (resource,) = tree.resources
    assert isinstance(resource, Passthrough)
    assert resource.to_manifest()["spec"] == {
        "action": "DENY",
        "rules": [{"from": [{"source": {"notNamespaces": ["tier2"]}}]}],
    }
    (warning,) = tree.warnings
    assert "AuthorizationPolicy" in warning.message
    assert warning.line == 1


def test_core_resources_round_trip_as_written(repo_root):
    import yaml

    tree = load(repo_root / "tsb" / "httpbin" / "deployment.yaml")
    (deployment,) = tree.resources
    written = yaml.safe_load((repo_root / "tsb" / "httpbin" / "deployment.yaml").read_text())
    assert deployment.to_manifest() == written


def test_kustomization_cycle_is_an_error(tmp_path):
    write(
        tmp_path, {"kustomization.yaml": "resources: [sub]\n", "sub/kustomization.yaml": "resources: [..]\n"}
    )
    with pytest.raises(ManifestError, match="cycle"):
        load(tmp_path)


def test_unsupported_kustomization_fields_are_warned_about(tmp_path):
    write(
        tmp_path,
        {
            "kustomization.yaml": "resources: [a.yaml]\ncommonLabels: {team: x}\n",
            "a.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n",
        },
    )
    (warning,) = load(tmp_path).warnings
    assert (warning.field, warning.line) == ("commonLabels", 2)


def test_config_schema_annotations_are_checked_at_load(tmp_path):
    extension = """
        apiVersion: extension.tsb.tetrate.io/v2
        kind: WasmExtension
        metadata:
          name: {name}
          annotations:
            tsb.tetrate.io/organization: o
            {annotation}
        spec: {{url: "oci://r/x:1"}}
    """
    write(
        tmp_path,
        {
            "a.yaml": textwrap.dedent(extension).format(
                name="a", annotation="meshwasm.io/config-schema: '{not json'"
            ),
            "b.yaml": textwrap.dedent(extension).format(
                name="b", annotation="meshwasm.io/config-schema-file: nowhere.json"
            ),
            "c.yaml": textwrap.dedent(extension).format(
                name="c", annotation="meshwasm.io/config-schema: '{\"type\": 12}'"
            ),
            "d.yaml": textwrap.dedent(extension).format(
                name="d", annotation='meshwasm.io/config-schema: \'{"required": ["x"]}\''
            ),
        },
    )
    with pytest.raises(ManifestError) as caught:
        load(tmp_path)
    found = {(Path(p.file or "").name, p.line): p.message for p in caught.value.problems}
    assert set(found) == {("a.yaml", 7), ("b.yaml", 7), ("c.yaml", 7)}
    assert "not valid JSON" in found[("a.yaml", 7)]
    assert "the config schema" in found[("b.yaml", 7)]
    assert "does not exist" in found[("b.yaml", 7)]
    assert "not a valid JSON Schema" in found[("c.yaml", 7)]


def test_missing_path_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("cwd", "path", "shown"),
    [
        ("/work/tree", "/work/tree/gw.yaml", "gw.yaml"),
        ("/work/tree", "/work/tree/a/../gw.yaml", "gw.yaml"),
        ("/work/tree", "/work/tree", "/work/tree"),  # the directory itself is not under itself
        ("/work/tree", "/work/treetop/gw.yaml", "/work/treetop/gw.yaml"),  # a prefix, not a parent
        ("/work/tree", "/elsewhere/gw.yaml", "/elsewhere/gw.yaml"),
        ("/work/tree", "relative/gw.yaml", "relative/gw.yaml"),
        ("/", "/work/gw.yaml", "work/gw.yaml"),
        ("/", "/", "/"),
        ("/", "//net/gw.yaml", "//net/gw.yaml"),  # a "//" root is not under "/"
    ],
)
def test_paths_in_messages_are_relative_to_the_working_directory_when_under_it(
    monkeypatch: pytest.MonkeyPatch, cwd: str, path: str, shown: str
) -> None:
    monkeypatch.setattr(os, "getcwd", lambda: cwd)
    assert loader_module._display(Path(path)) == shown
