"""The typed models: required fields, TSB naming, and what they refuse."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from meshwasm.manifests import istio, tsb


def extension(**spec):
    return tsb.WasmExtension.model_validate(
        {
            "apiVersion": "extension.tsb.tetrate.io/v2",
            "kind": "WasmExtension",
            "metadata": {"name": "ext", "annotations": {"tsb.tetrate.io/organization": "org"}},
            "spec": spec,
        }
    )


def test_extension_needs_a_module_url_and_accepts_the_deprecated_image():
    with pytest.raises(ValidationError, match=r"set spec\.url"):
        extension(config={"a": 1})
    assert extension(image="oci://r/x:1").spec.module_url == "oci://r/x:1"
    with pytest.raises(ValidationError, match="different modules"):
        extension(url="oci://r/x:1", image="oci://r/y:1")


def test_extension_fields_from_architecture_are_typed():
    ext = extension(
        url="oci://r/x:1",
        source="https://example.com/src",
        config={"header": "x"},
        description="d",
        priority=5,
        phase="AUTHZ",
        allowedIn=["organizations/org/tenants/t"],
        imagePullPolicy="IfNotPresent",
        imagePullSecret="pull-secret",
        vmConfig={"env": [{"name": "A", "value": "1"}, {"name": "HOME", "valueFrom": "HOST"}]},
        match=[{"mode": "SERVER", "ports": [{"number": 80}]}],
    )
    assert ext.fqn == "organizations/org/extensions/ext"
    assert ext.spec.allowed_in == ["organizations/org/tenants/t"]
    assert ext.spec.vm_config is not None
    assert ext.spec.vm_config.env[1].value_from == "HOST"
    assert ext.spec.match[0].ports[0].number == 80
    with pytest.raises(ValidationError, match="phase"):
        extension(url="oci://r/x:1", phase="LATER")


def gateway(**spec):
    base = {"workloadSelector": {"namespace": "ns", "labels": {"app": "gw"}}}
    return tsb.Gateway.model_validate(
        {
            "apiVersion": "gateway.tsb.tetrate.io/v2",
            "kind": "Gateway",
            "metadata": {
                "name": "gw",
                "annotations": {
                    "tsb.tetrate.io/organization": "o",
                    "tsb.tetrate.io/tenant": "t",
                    "tsb.tetrate.io/workspace": "w",
                    "tsb.tetrate.io/gatewayGroup": "g",
                },
            },
            "spec": {**base, **spec},
        }
    )


def server(host="httpbin/httpbin.httpbin.svc.cluster.local", **extra):
    return {
        "name": "s",
        "hostname": "h.example",
        "port": 80,
        "routing": {"rules": [{"route": {"serviceDestination": {"host": host, "port": 8000}}}]},
        **extra,
    }


def test_gateway_fqn_and_attachments_in_order():
    gw = gateway(
        http=[server()],
        wasmPlugins=[{"fqn": "organizations/o/extensions/a"}],
        extension=[{"fqn": "organizations/o/extensions/b", "config": {"k": 1}}],
    )
    assert gw.fqn == "organizations/o/tenants/t/workspaces/w/gatewaygroups/g/unifiedgateways/gw"
    assert [(path, a.fqn) for path, a in gw.attachments()] == [
        ("spec.wasmPlugins[0]", "organizations/o/extensions/a"),
        ("spec.extension[0]", "organizations/o/extensions/b"),
    ]


def test_service_destination_must_be_namespace_slash_fqdn():
    with pytest.raises(ValidationError, match="must be namespace/fqdn"):
        gateway(http=[server(host="httpbin.httpbin.svc.cluster.local")])


def test_attachment_fqn_must_name_an_extension():
    with pytest.raises(ValidationError, match="fqn"):
        gateway(wasmPlugins=[{"fqn": "wasm-add-header"}])


def test_tls_server_is_typed():
    gw = gateway(http=[server(tls={"mode": "SIMPLE", "secretName": "cert"})])
    assert gw.spec.http[0].tls_enabled
    assert gw.spec.http[0].tls is not None
    assert gw.spec.http[0].tls.secret_name == "cert"


_REF = {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}


@pytest.mark.parametrize(
    ("ways", "refused"),
    [
        ({"selector": {"matchLabels": {"app": "gw"}}}, None),
        ({"selector": {}}, None),
        ({"targetRef": _REF}, None),
        ({"targetRefs": [_REF]}, None),
        ({"selector": {"matchLabels": {"app": "gw"}}, "targetRefs": []}, None),  # an empty list is unset
        ({"selector": {"matchLabels": {"app": "gw"}}, "targetRef": _REF}, "['selector', 'targetRef']"),
        ({"selector": {}, "targetRefs": [_REF]}, "['selector', 'targetRefs']"),
        ({"targetRef": _REF, "targetRefs": [_REF]}, "['targetRef', 'targetRefs']"),
    ],
)
def test_a_wasm_plugin_attaches_one_way_at_most(ways: dict[str, object], refused: str | None) -> None:
    spec = {"url": "oci://r.example/p:v1", **ways}
    if refused is None:
        istio.WasmPluginSpec.model_validate(spec)
        return
    with pytest.raises(
        ValidationError,
        match=re.escape(f"only one of selector, targetRef or targetRefs may be set (found {refused})"),
    ):
        istio.WasmPluginSpec.model_validate(spec)
