"""TSB -> Istio: the seed's WasmPlugin, Gateway and VirtualService, Istio's CRD schemas, and the checks."""

from __future__ import annotations

import base64
import copy
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from meshwasm.manifests import istio, istio_crds, load
from meshwasm.translate import TranslationError, fetcher_url, tsb_to_istio
from meshwasm.translate.istio_resources import IstioResources
from meshwasm.translate.render import istio_files

SEED_FETCH_URL = (
    "http://wasmfetcher.istio-system.svc.cluster.local/fetch/"
    "b2NpOi8vZG9ja2VyLmlvL3NyZWVoYXJpa21hcmFyL3dhc20tYWRkLWhlYWRlcjpsYXRlc3Q="
)
SEED_FQN = (
    "organizations/tetrate/tenants/tier2/workspaces/tier2-ws/gatewaygroups/tier2-gg"
    "/unifiedgateways/tier2-gateway"
)
MODULE = "oci://127.0.0.1:5000/meshwasm/add-header:latest"


@pytest.fixture(scope="module")
def seed(repo_root) -> IstioResources:
    return tsb_to_istio(load(repo_root / "tsb"))


def test_fetcher_url_is_the_seeds(repo_root):
    assert (
        fetcher_url(
            "oci://docker.io/sreeharikmarar/wasm-add-header:latest",
            "http://wasmfetcher.istio-system.svc.cluster.local",
        )
        == SEED_FETCH_URL
    )
    assert fetcher_url(MODULE, None) == MODULE
    assert fetcher_url("https://example.com/m.wasm", "http://f") == "https://example.com/m.wasm"
    assert fetcher_url(MODULE, "http://127.0.0.1:9/").startswith("http://127.0.0.1:9/fetch/")


def test_seed_wasm_plugin_matches_the_seed_readme(seed):
    (plugin,) = seed.wasm_plugins
    manifest = plugin.to_manifest()
    assert manifest["apiVersion"] == "extensions.istio.io/v1alpha1"
    assert manifest["metadata"]["name"] == "tier2-gateway-wasm-add-header0"
    assert manifest["metadata"]["namespace"] == "tier2"
    labels = manifest["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "tsb"
    assert labels["istio.io/rev"] == "default"
    assert labels["xcp.tetrate.io/gatewayGroup"] == "tier2-gg"
    assert labels["xcp.tetrate.io/workspace"].startswith("tier2-ws-")
    annotations = manifest["metadata"]["annotations"]
    assert annotations["tsb.tetrate.io/fqn"] == SEED_FQN
    assert annotations["tsb.tetrate.io/config-mode"] == "bridged"
    spec = manifest["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "tier2-gateway"}}
    assert spec["pluginName"] == "tier2-gateway-wasm-add-header0"
    assert spec["priority"] == 0
    prefix = "http://wasmfetcher.istio-system.svc.cluster.local/fetch/"
    assert spec["url"].startswith(prefix)
    assert base64.b64decode(spec["url"][len(prefix) :]).decode() == MODULE
    assert spec["pluginConfig"] == {
        "headers": [
            {"header": "x-ingress-header", "value": "from tsb ingress gateway", "path": "response"},
            {
                "header": "x-request-header",
                "value": "changed/created by wasm",
                "path": "request",
                "action": "set",
            },
        ]
    }


def test_seed_gateway_and_virtual_service(seed):
    (gateway,) = seed.gateways
    assert (gateway.namespace, gateway.name) == ("tier2", "tier2-gateway")
    assert gateway.spec.selector == {"app": "tier2-gateway"}
    (server,) = gateway.spec.servers
    assert (server.port.number, server.port.protocol, server.hosts) == (80, "HTTP", ["httpbin.tetrate.io"])
    (vs,) = seed.virtual_services
    assert vs.spec.hosts == ["httpbin.tetrate.io"]
    assert vs.spec.gateways == ["tier2/tier2-gateway"]
    (destination,) = vs.spec.http[0].route
    assert destination.destination.host == "httpbin.httpbin.svc.cluster.local"
    assert destination.destination.port == istio.PortSelector(number=8000)


def test_core_resources_pass_through_and_tsb_ones_are_consumed(seed):
    assert [(r.kind, r.name) for r in seed.core] == [
        ("Namespace", "httpbin"),
        ("ServiceAccount", "httpbin"),
        ("Service", "httpbin"),
        ("Deployment", "httpbin"),
        ("Namespace", "tier2"),
    ]


# -- Istio's own CRD schemas ---------------------------------------------------------------


def _closed(schema: Any) -> Any:
    """Make every object schema reject unknown fields (the API server would prune them silently;
    `kubectl apply --validate=strict` rejects them), unless it preserves unknown fields."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """Istio's CRDs as vendored in the package (src/meshwasm/manifests/crds, from the pinned module)."""
    validators = {}
    for group, kind in [
        ("extensions.istio.io", "WasmPlugin"),
        ("networking.istio.io", "Gateway"),
        ("networking.istio.io", "VirtualService"),
    ]:
        crd = istio_crds.crd(group, kind)
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema["properties"].update(
                {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
            )
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(_closed(schema))
    return validators


def crd_errors(validators, manifest: dict[str, Any]) -> list[str]:
    validator = validators[(manifest["apiVersion"], manifest["kind"])]
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(manifest)]


def test_every_emitted_istio_resource_validates_against_istios_crds(
    seed, crd_validators, repo_root, tmp_path
):
    rich = tsb_to_istio(load(_rich_tree(tmp_path)))
    emitted = [*seed.wasm_plugins, *seed.gateways, *seed.virtual_services]
    emitted += [*rich.wasm_plugins, *rich.gateways, *rich.virtual_services]
    assert len(emitted) >= 8
    for resource in emitted:
        manifest = resource.to_manifest()
        assert crd_errors(crd_validators, manifest) == [], resource.ref


def test_crd_validation_catches_what_istio_would_refuse(seed, crd_validators):
    manifest = seed.wasm_plugins[0].to_manifest()
    manifest["spec"]["phase"] = "LATER"
    manifest["spec"]["pluginConfg"] = {}
    errors = crd_errors(crd_validators, manifest)
    assert any("LATER" in e for e in errors)
    assert any("pluginConfg" in e for e in errors)


def test_rendered_istio_tree_loads_back_as_the_same_resources(seed, tmp_path):
    for name, text in istio_files(seed).items():
        (tmp_path / name).write_text(text)
    back = IstioResources.from_resources(load(tmp_path).resources)
    assert [r.to_manifest() for r in back.all()] == [r.to_manifest() for r in seed.all()]


# -- a richer tree and the checks ------------------------------------------------------------

HEADER = """
apiVersion: extension.tsb.tetrate.io/v2
kind: WasmExtension
metadata:
  name: {name}
  annotations:
    tsb.tetrate.io/organization: tetrate
    meshwasm.io/config-schema-file: {schema}
spec:
  url: oci://127.0.0.1:5000/meshwasm/{name}:v1
  config: {{header: x-default, value: d}}
  priority: {priority}
  phase: {phase}
  allowedIn: [{allowed}]
  imagePullPolicy: IfNotPresent
  imagePullSecret: regcred
  failStrategy: FAIL_OPEN
  vmConfig:
    env: [{{name: MODE, value: fast}}, {{name: HOSTNAME, valueFrom: HOST}}]
  match: [{{mode: SERVER, ports: [{{number: 80}}]}}]
"""

GATEWAY = """
apiVersion: gateway.tsb.tetrate.io/v2
kind: Gateway
metadata:
  name: edge
  namespace: edge
  annotations:
    tsb.tetrate.io/organization: tetrate
    tsb.tetrate.io/tenant: {tenant}
    tsb.tetrate.io/workspace: ws
    tsb.tetrate.io/gatewayGroup: gg
spec:
  workloadSelector:
    namespace: edge
    labels: {{app: edge}}
  http:
    - name: api
      hostname: api.example.com
      port: 80
      routing:
        rules:
          - match: [{{uri: {{prefix: /v1}}, headers: {{x-canary: {{exact: "yes"}}}}}}]
            route: {{serviceDestination: {{host: api/api.api.svc.cluster.local, port: 8080}}}}
          - route: {{serviceDestination: {{host: api/api.api.svc.cluster.local}}}}
    - name: secure
      hostname: secure.example.com
      port: 443
      tls: {{mode: SIMPLE, secretName: secure-cert}}
      routing:
        rules:
          - route: {{serviceDestination: {{host: api/api.api.svc.cluster.local, port: 8080}}}}
  wasmPlugins:
    - fqn: organizations/tetrate/extensions/first
      config: {{value: from-gateway}}
  extension:
    - fqn: organizations/tetrate/extensions/second
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: api, namespace: api}
spec:
  ports: [{port: 8080}]
"""


def _rich_tree(tmp_path: Path, *, tenant: str = "edge", gateway_extra: str = "") -> Path:
    schema = Path(__file__).resolve().parents[2] / "plugins/add-header/config.schema.json"
    docs = [
        HEADER.format(
            name="first",
            schema=schema,
            priority=10,
            phase="AUTHN",
            allowed="organizations/tetrate/tenants/edge",
        ),
        HEADER.format(name="second", schema=schema, priority=0, phase="STATS", allowed=""),
        SERVICE,
        GATEWAY.format(tenant=tenant) + textwrap.dedent(gateway_extra),
    ]
    path = tmp_path / "tree.yaml"
    path.write_text("---\n".join(docs))
    return path


def test_rich_gateway_carries_every_extension_field(tmp_path):
    out = tsb_to_istio(load(_rich_tree(tmp_path)), fetcher_base=None)
    first, second = out.wasm_plugins
    assert (first.name, second.name) == ("edge-first0", "edge-second1")
    spec = first.spec
    assert spec.url == "oci://127.0.0.1:5000/meshwasm/first:v1"
    assert spec.plugin_config == {"header": "x-default", "value": "from-gateway"}
    assert (spec.priority, spec.phase, spec.fail_strategy) == (10, "AUTHN", "FAIL_OPEN")
    assert (spec.image_pull_policy, spec.image_pull_secret) == ("IfNotPresent", "regcred")
    assert spec.vm_config is not None
    assert [(e.name, e.value_from) for e in spec.vm_config.env] == [
        ("MODE", "INLINE"),
        ("HOSTNAME", "HOST"),
    ]
    assert spec.match is not None
    assert spec.match[0].ports[0].number == 80
    assert second.spec.plugin_config == {"header": "x-default", "value": "d"}
    (gateway,) = out.gateways
    https = gateway.spec.servers[1]
    assert (https.port.protocol, https.tls and https.tls.credential_name) == ("HTTPS", "secure-cert")
    api, _secure = out.virtual_services
    first_route, second_route = api.spec.http
    assert first_route.match is not None
    assert first_route.match[0].uri is not None
    assert first_route.match[0].uri.prefix == "/v1"
    # No port on the destination: the Service in the tree has exactly one.
    assert second_route.route[0].destination.port == istio.PortSelector(number=8080)


def test_all_problems_are_reported_together_with_gateway_attachment_and_field(tmp_path):
    extra = """
    - name: api
      hostname: api.example.com
      port: 443
      routing:
        rules:
          - route: {serviceDestination: {host: api/other.api.svc.cluster.local}}
    """
    tree = _rich_tree(tmp_path, tenant="elsewhere")
    text = tree.read_text()
    # The attachment turns invalid, a dangling fqn is added, and a plain-HTTP server shares port 443.
    text = text.replace("config: {value: from-gateway}", "config: {value: from-gateway, path: sideways}")
    text = text.replace(
        "    - fqn: organizations/tetrate/extensions/second",
        "    - fqn: organizations/tetrate/extensions/second\n"
        "    - fqn: organizations/tetrate/extensions/ghost",
    )
    servers = textwrap.indent(textwrap.dedent(extra).strip("\n"), "    ")
    text = text.replace("  wasmPlugins:", servers + "\n  wasmPlugins:")
    tree.write_text(text)
    with pytest.raises(TranslationError) as caught:
        tsb_to_istio(load(tree))
    problems = {(p.field, p.message.split(";")[0].split(" (")[0]) for p in caught.value.problems}
    assert problems == {
        ("spec.http[2].name", "server name 'api' is already used by spec.http[0]"),
        ("spec.http[2].port", "port 443 clashes with spec.http[1]: one serves TLS, the other plain HTTP"),
        (
            "spec.http[2].routing.rules[0].route.serviceDestination.port",
            "missing: other.api.svc.cluster.local has no Service in the tree, so name the port",
        ),
        (
            "spec.wasmPlugins[0].fqn",
            "WasmExtension first is not allowed in organizations/tetrate/tenants/elsewhere",
        ),
        ("spec.extension[1].fqn", "no WasmExtension with this fqn"),
    }
    # Every problem names the gateway and carries the file and line.
    assert all(p.subject and "Gateway edge/edge" in p.subject and p.line for p in caught.value.problems)


def test_invalid_merged_config_names_gateway_attachment_and_field(tmp_path):
    tree = _rich_tree(tmp_path)
    tree.write_text(
        tree.read_text().replace("config: {value: from-gateway}", "config: {path: sideways, header: null}")
    )
    with pytest.raises(TranslationError) as caught:
        tsb_to_istio(load(tree))
    found = sorted((p.field, p.message.split(" (merged")[0]) for p in caught.value.problems)
    assert found == [
        ("spec.wasmPlugins[0].config.header", "missing (required)"),
        ("spec.wasmPlugins[0].config.path", "'sideways' is not one of ['request', 'response']"),
    ]
    (problem, _) = caught.value.problems
    assert (
        problem.subject
        == "Gateway edge/edge, attachment spec.wasmPlugins[0] (organizations/tetrate/extensions/first)"
    )
    text = str(caught.value)
    assert "tree.yaml:" in text


def test_two_gateways_producing_the_same_istio_resource_is_an_error(tmp_path):
    tree = _rich_tree(tmp_path)
    text = tree.read_text()
    gateway = text[text.index("apiVersion: gateway.tsb.tetrate.io/v2") :]
    # The same gateway again, from another TSB namespace, onto the same workload namespace.
    tree.write_text(
        text
        + "\n---\n"
        + gateway.replace("namespace: edge\n  annotations", "namespace: other\n  annotations")
    )
    with pytest.raises(TranslationError) as caught:
        tsb_to_istio(load(tree))
    messages = [p.message for p in caught.value.problems]
    produced = sorted(m.split(" is also produced by ")[0] for m in messages)
    assert produced == [
        "Gateway edge/edge",
        "VirtualService edge/edge-api",
        "VirtualService edge/edge-secure",
        "WasmPlugin edge/edge-first0",
        "WasmPlugin edge/edge-second1",
    ]
    assert all(m.endswith("is also produced by Gateway edge/edge; rename one") for m in messages)
    assert all(p.subject == "Gateway other/edge" for p in caught.value.problems)
