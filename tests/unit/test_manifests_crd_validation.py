"""Istio resources are refused as a Kubernetes API server refuses them: CRD schema and CEL rules.

One violating fixture per CEL rule of WasmPlugin, Gateway, VirtualService and ServiceEntry
(the vendored CRDs' storage versions); a test fails when a refreshed CRD brings a rule that no
fixture covers. Every rule of every vendored CRD must compile (type-checked, as the API server
does when the CRD is created).
"""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest

from meshwasm.manifests import ManifestError, istio_crds, load
from meshwasm.manifests.cel import UrlError, parse_request_uri
from meshwasm.manifests.crd_validation import validate_manifest, validator_for

WASM = {
    "apiVersion": "extensions.istio.io/v1alpha1",
    "kind": "WasmPlugin",
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {"selector": {"matchLabels": {"app": "gw"}}, "url": "oci://registry/repo:v1"},
}
GATEWAY = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "g", "namespace": "ns"},
    "spec": {
        "selector": {"app": "gw"},
        "servers": [
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["a.example.com"]}
        ],
    },
}
VIRTUAL_SERVICE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "v", "namespace": "ns"},
    "spec": {"hosts": ["a.example.com"], "http": [{"route": [{"destination": {"host": "svc"}}]}]},
}
SERVICE_ENTRY = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "ServiceEntry",
    "metadata": {"name": "s", "namespace": "ns"},
    "spec": {
        "hosts": ["api.example.com"],
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "resolution": "STATIC",
        "endpoints": [{"address": "10.0.0.1"}],
    },
}
BASES = {
    "WasmPlugin": WASM,
    "Gateway": GATEWAY,
    "VirtualService": VIRTUAL_SERVICE,
    "ServiceEntry": SERVICE_ENTRY,
}


def _with(base: dict[str, Any], **spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in spec.items():
        if value is None:
            out["spec"].pop(key, None)
        else:
            out["spec"][key] = value
    return out


def _tls(**fields: Any) -> dict[str, Any]:
    server = copy.deepcopy(GATEWAY["spec"]["servers"][0])
    server["tls"] = {"mode": "SIMPLE", **fields}
    return _with(GATEWAY, servers=[server])


def _http(**fields: Any) -> dict[str, Any]:
    return _with(VIRTUAL_SERVICE, http=[{"route": [{"destination": {"host": "svc"}}], **fields}])


_TARGET = {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "g", "namespace": "other"}
_UDS = "unix:///var/run/app.sock"

# (kind, the rule's message) -> (a resource that breaks it, the field the API server names)
VIOLATIONS: dict[tuple[str, str], tuple[dict[str, Any], str]] = {
    ("WasmPlugin", "only one of targetRefs or selector can be set"): (
        _with(WASM, targetRefs=[{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "g"}]),
        "spec",
    ),
    ("WasmPlugin", "wildcard not allowed in label key match"): (
        _with(WASM, selector={"matchLabels": {"app*": "gw"}}),
        "spec.selector.matchLabels",
    ),
    ("WasmPlugin", "key must not be empty"): (
        _with(WASM, selector={"matchLabels": {"": "gw"}}),
        "spec.selector.matchLabels",
    ),
    ("WasmPlugin", "wildcard not allowed in label value match"): (
        _with(WASM, selector={"matchLabels": {"app": "gw-*"}}),
        "spec.selector.matchLabels[app]",
    ),
    ("WasmPlugin", "cross namespace referencing is not currently supported"): (
        _with(WASM, selector=None, targetRef=_TARGET),
        "spec.targetRef.namespace",
    ),
    ("WasmPlugin", "cross namespace referencing is not currently supported#targetRefs"): (
        _with(WASM, selector=None, targetRefs=[_TARGET]),
        "spec.targetRefs[0].namespace",
    ),
    ("WasmPlugin", "url must have schema one of [http, https, file, oci]"): (
        _with(WASM, url="ftp://registry/module.wasm"),
        "spec.url",
    ),
    ("WasmPlugin", "value may only be set when valueFrom is INLINE"): (
        _with(WASM, vmConfig={"env": [{"name": "POD_NAME", "valueFrom": "HOST", "value": "x"}]}),
        "spec.vmConfig.env[0]",
    ),
    ("Gateway", "only one of credentialNames or tlsCertificates can be set"): (
        _tls(credentialNames=["a"], tlsCertificates=[{"serverCertificate": "/c", "privateKey": "/k"}]),
        "spec.servers[0].tls",
    ),
    ("Gateway", "only one of credentialName or credentialNames can be set"): (
        _tls(credentialName="a", credentialNames=["b"]),
        "spec.servers[0].tls",
    ),
    ("Gateway", "only one of credentialName or tlsCertificates can be set"): (
        # The rule Istio ships under this message tests credentialNames, not credentialName; the
        # fixture breaks it as written (an API server evaluates the rule, not the message).
        _tls(credentialNames=["a"], tlsCertificates=[{"serverCertificate": "/c", "privateKey": "/k"}]),
        "spec.servers[0].tls",
    ),
    ("VirtualService", "must be a valid duration greater than 1ms"): (
        _http(timeout="500us"),
        "spec.http[0].timeout",
    ),
    ("VirtualService", "must be a valid duration greater than 1ms#corsPolicy.maxAge"): (
        _http(corsPolicy={"maxAge": "0s"}),
        "spec.http[0].corsPolicy.maxAge",
    ),
    ("VirtualService", "must be a valid duration greater than 1ms#fault.delay.exponentialDelay"): (
        _http(fault={"delay": {"exponentialDelay": "0.5ms", "percentage": {"value": 1}}}),
        "spec.http[0].fault.delay.exponentialDelay",
    ),
    ("VirtualService", "must be a valid duration greater than 1ms#fault.delay.fixedDelay"): (
        _http(fault={"delay": {"fixedDelay": "1us"}}),
        "spec.http[0].fault.delay.fixedDelay",
    ),
    ("VirtualService", "must be a valid duration greater than 1ms#retries.backoff"): (
        _http(retries={"attempts": 2, "backoff": "0ms"}),
        "spec.http[0].retries.backoff",
    ),
    ("VirtualService", "must be a valid duration greater than 1ms#retries.perTryTimeout"): (
        _http(retries={"attempts": 2, "perTryTimeout": "100ns"}),
        "spec.http[0].retries.perTryTimeout",
    ),
    ("ServiceEntry", "only one of WorkloadSelector or Endpoints can be set"): (
        _with(SERVICE_ENTRY, workloadSelector={"labels": {"app": "a"}}),
        "spec",
    ),
    ("ServiceEntry", "CIDR addresses are allowed only for NONE/STATIC resolution types"): (
        _with(SERVICE_ENTRY, addresses=["10.0.0.0/24"], resolution="DNS", endpoints=None),
        "spec",
    ),
    ("ServiceEntry", "NONE mode cannot set endpoints"): (
        _with(SERVICE_ENTRY, resolution="NONE"),
        "spec",
    ),
    ("ServiceEntry", "DNS_ROUND_ROBIN mode cannot have multiple endpoints"): (
        _with(SERVICE_ENTRY, resolution="DNS_ROUND_ROBIN", endpoints=[{"address": "a"}, {"address": "b"}]),
        "spec",
    ),
    ("ServiceEntry", "Address is required"): (
        _with(SERVICE_ENTRY, endpoints=[{"labels": {"app": "a"}}]),
        "spec.endpoints[0]",
    ),
    ("ServiceEntry", "UDS may not include ports"): (
        _with(SERVICE_ENTRY, endpoints=[{"address": _UDS, "ports": {"http": 8080}}]),
        "spec.endpoints[0]",
    ),
    ("ServiceEntry", "UDS must be an absolute path or abstract socket"): (
        _with(SERVICE_ENTRY, endpoints=[{"address": "unix://x"}]),
        "spec.endpoints[0].address",
    ),
    ("ServiceEntry", "UDS may not be a dir"): (
        _with(SERVICE_ENTRY, endpoints=[{"address": "unix:///var/run/"}]),
        "spec.endpoints[0].address",
    ),
    ("ServiceEntry", "port name must be valid"): (
        _with(SERVICE_ENTRY, endpoints=[{"address": "10.0.0.1", "ports": {"-http": 8080}}]),
        "spec.endpoints[0].ports",
    ),
    ("ServiceEntry", "port must be between 1-65535"): (
        _with(SERVICE_ENTRY, endpoints=[{"address": "10.0.0.1", "ports": {"http": 70000}}]),
        "spec.endpoints[0].ports[http]",
    ),
    ("ServiceEntry", "hostname cannot be wildcard"): (
        _with(SERVICE_ENTRY, hosts=["*"]),
        "spec.hosts[0]",
    ),
    ("ServiceEntry", "port number cannot be duplicated"): (
        _with(
            SERVICE_ENTRY,
            ports=[
                {"number": 80, "name": "http", "protocol": "HTTP"},
                {"number": 80, "name": "b", "protocol": "TCP"},
            ],
        ),
        "spec.ports",
    ),
    ("ServiceEntry", "port must be between 1-65535#ports.number"): (
        _with(SERVICE_ENTRY, ports=[{"number": 0, "name": "http", "protocol": "HTTP"}]),
        "spec.ports[0].number",
    ),
    ("ServiceEntry", "port must be between 1-65535#ports.targetPort"): (
        _with(SERVICE_ENTRY, ports=[{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 70000}]),
        "spec.ports[0].targetPort",
    ),
    ("ServiceEntry", "wildcard is not supported in selector"): (
        _with(SERVICE_ENTRY, endpoints=None, workloadSelector={"labels": {"app": "a*"}}),
        "spec.workloadSelector.labels[app]",
    ),
}


def _rules(schema: dict[str, Any], path: str = "") -> list[tuple[str, str]]:
    """(schema path, message) of every CEL rule under ``schema``."""
    found = [(path, str(r.get("message") or r["rule"])) for r in schema.get("x-kubernetes-validations") or []]
    for name, child in (schema.get("properties") or {}).items():
        found += _rules(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _rules(schema[key], path)
    return found


def _storage(group: str, kind: str) -> tuple[str, dict[str, Any]]:
    for version in istio_crds.crd(group, kind)["spec"]["versions"]:
        if version.get("storage"):
            return version["name"], version["schema"]["openAPIV3Schema"]
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("group", "kind"),
    [
        ("extensions.istio.io", "WasmPlugin"),
        ("networking.istio.io", "Gateway"),
        ("networking.istio.io", "VirtualService"),
        ("networking.istio.io", "ServiceEntry"),
    ],
)
def test_every_rule_of_the_kind_has_a_violating_fixture(group: str, kind: str) -> None:
    _, schema = _storage(group, kind)
    rules = _rules(schema)
    assert rules, f"{kind} has no CEL rules"
    covered = [message for k, message in VIOLATIONS if k == kind]
    for _, message in rules:
        assert any(c.split("#")[0] == message for c in covered), (
            f"no fixture breaks {kind}'s rule {message!r}"
        )
    # Each rule at each place it occurs has a fixture (counting repeats of one message).
    assert len(covered) >= len(rules), f"{kind}: {len(rules)} rules, {len(covered)} fixtures"


@pytest.mark.parametrize("key", list(VIOLATIONS), ids=lambda key: f"{key[0]}:{key[1]}")
def test_each_rule_refuses_its_fixture_with_the_api_servers_words(key: tuple[str, str]) -> None:
    manifest, field = VIOLATIONS[key]
    message = key[1].split("#")[0]
    refusals = [str(e) for e in validate_manifest(manifest)]
    assert any(r.startswith(f"{field}: ") and r.endswith(f": {message}") for r in refusals), refusals


@pytest.mark.parametrize("kind", list(BASES))
def test_the_base_fixtures_are_valid(kind: str) -> None:
    assert validate_manifest(BASES[kind]) == []


def test_every_rule_of_every_vendored_crd_compiles() -> None:
    compiled = 0
    for group, kind in istio_crds.kinds():
        for version in istio_crds.crd(group, kind)["spec"]["versions"]:
            validator = validator_for(f"{group}/{version['name']}", kind)
            assert validator is not None
            compiled += len(_rules(version["schema"]["openAPIV3Schema"]))
    assert compiled > 300  # the pinned CRDs hold about 345 rules


def test_scalar_values_are_printed_and_objects_are_not() -> None:
    (value_error,) = validate_manifest(
        VIOLATIONS[("WasmPlugin", "wildcard not allowed in label value match")][0]
    )
    assert str(value_error) == (
        'spec.selector.matchLabels[app]: Invalid value: "gw-*": wildcard not allowed in label value match'
    )
    (object_error,) = validate_manifest(VIOLATIONS[("ServiceEntry", "NONE mode cannot set endpoints")][0])
    assert str(object_error) == "spec: Invalid value: NONE mode cannot set endpoints"


def test_a_rule_that_cannot_evaluate_says_why() -> None:
    refusals = [str(e) for e in validate_manifest(_http(timeout="soon"))]
    assert any(
        r.startswith('spec.http[0].timeout: Invalid value: "soon":')
        and "evaluating rule: must be a valid duration greater than 1ms" in r
        for r in refusals
    ), refusals


def test_valid_durations_and_urls_pass() -> None:
    assert validate_manifest(_http(timeout="1ms", retries={"attempts": 1, "perTryTimeout": "2s"})) == []
    for url in [
        "oci://r/x:v",
        "http://fetcher/fetch/abc",
        "https://h:8443/m.wasm",
        "file:///m.wasm",
        "r/x:v",
    ]:
        assert validate_manifest(_with(WASM, url=url)) == [], url


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (
            _with(WASM, phase="LATER"),
            'spec.phase: Unsupported value: "LATER": supported values: "UNSPECIFIED_PHASE"',
        ),
        (_with(WASM, pluginConfg={}), 'spec.pluginConfg: unknown field "spec.pluginConfg"'),
        (
            _with(WASM, priority="high"),
            'spec.priority: Invalid value: "string": spec.priority in body must be of type',
        ),
        (_with(WASM, url=None), "spec.url: Required value"),
        (
            _with(SERVICE_ENTRY, hosts=[]),
            "spec.hosts: Invalid value: 0: spec.hosts in body should have at least 1 items",
        ),
    ],
)
def test_schema_refusals(manifest: dict[str, Any], expected: str) -> None:
    refusals = [str(e) for e in validate_manifest(manifest)]
    assert any(r.startswith(expected) for r in refusals), refusals


def test_an_unserved_version_is_refused() -> None:
    manifest = copy.deepcopy(WASM)
    manifest["apiVersion"] = "extensions.istio.io/v9"
    (refusal,) = validate_manifest(manifest)
    assert 'no matches for kind "WasmPlugin" in version "extensions.istio.io/v9"' in str(refusal)


@pytest.mark.parametrize(
    ("raw", "scheme"),
    [
        ("oci://registry/repo", "oci"),
        ("HTTP://h/x", "http"),
        ("localhost:5000/repo", "localhost"),  # Go reads a scheme here; an API server does too
        ("/just/a/path", ""),
    ],
)
def test_urls_parse_as_go_parses_request_uris(raw: str, scheme: str) -> None:
    assert parse_request_uri(raw)["scheme"] == scheme


@pytest.mark.parametrize(
    "raw", ["", "127.0.0.1:5000/repo", "registry/repo", "http://h:port/x", "http://a b/x"]
)
def test_strings_go_refuses_as_request_uris(raw: str) -> None:
    with pytest.raises(UrlError):
        parse_request_uri(raw)


def test_a_url_with_a_bogus_scheme_is_refused_like_the_api_server_does() -> None:
    refusals = [str(e) for e in validate_manifest(_with(WASM, url="localhost:5000/repo:v1"))]
    assert refusals == [
        'spec.url: Invalid value: "localhost:5000/repo:v1": url must have schema one of'
        " [http, https, file, oci]"
    ]


def test_render_refuses_an_istio_resource_with_file_line_and_rule(tmp_path: Path) -> None:
    (tmp_path / "se.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: s, namespace: ns}
            spec:
              hosts:
                - "*"
              resolution: STATIC
            """
        )
    )
    with pytest.raises(ManifestError) as refused:
        load(tmp_path)
    (problem,) = refused.value.problems
    assert (problem.file, problem.line, problem.field) == (str(tmp_path / "se.yaml"), 6, "spec.hosts[0]")
    assert problem.message == 'Invalid value: "*": hostname cannot be wildcard'
