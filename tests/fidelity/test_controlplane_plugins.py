"""WasmPlugins on a gateway: Istio's control plane (the oracle) and meshwasm give the same Envoy config.

Each case is Istio YAML for one gateway proxy, chosen so that a wrong implementation of one rule
gives a different answer from the right one; each first checks that the oracle's answer shows the
rule (so the case keeps meaning something when the pin moves), then compares the whole gateway
(oracle_controlplane.view): listeners and filter chains, connection manager and route settings,
and every ECDS resource as Envoy gets it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from oracle_controlplane import (
    ISTIO_ONLY_HTTP_FILTERS,
    GatewayCase,
    ask_oracle,
    diff,
    istio_only_filters,
    load_istio,
    meshwasm_view,
    oracle_view,
    plugin_chain,
    translate,
)

from fixtures.oracle import IstioOracle, OracleFailed
from meshwasm.translate import TranslationError

GW_NS = "web"  # sorts after the root namespace: the order of namespaces is not alphabetical
ROOT_NS = "istio-system"
LABELS = {"app": "edge-gateway", "istio": "ingressgateway"}
MODULE = "/var/lib/istio/data/{name}.wasm"


def gateway(ports: tuple[int, ...] = (80,), namespace: str = GW_NS, name: str = "edge") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"app": "edge-gateway"},
            "servers": [
                {"port": {"number": p, "name": f"http-{p}", "protocol": "HTTP"}, "hosts": ["*"]}
                for p in ports
            ],
        },
    }


def virtual_service(namespace: str = GW_NS, gateway_ref: str = "edge", **route: Any) -> dict[str, Any]:
    http = {
        "route": [{"destination": {"host": "httpbin.httpbin.svc.cluster.local", "port": {"number": 8000}}}]
    }
    http.update(route)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "edge-routes", "namespace": namespace},
        "spec": {"hosts": ["*"], "gateways": [gateway_ref], "http": [http]},
    }


def plugin(name: str, namespace: str = GW_NS, created: str | None = None, **spec: Any) -> dict[str, Any]:
    # A resourceVersion as the API server gives one (istiod passes it to the agent).
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": "1042"}
    if created:
        metadata["creationTimestamp"] = created
    body: dict[str, Any] = {"url": f"oci://registry.example/{name}:v1"}
    if "selector" not in spec and "targetRefs" not in spec and "targetRef" not in spec:
        body["selector"] = {"matchLabels": {"app": "edge-gateway"}}
    body.update(spec)
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": metadata,
        "spec": body,
    }


def service(target_ports: dict[int, int], namespace: str = GW_NS, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "edge-gateway", "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"app": "edge-gateway"},
            "ports": [{"name": f"http-{p}", "port": p, "targetPort": t} for p, t in target_ports.items()],
        },
    }


def modules_for(*docs: dict[str, Any], missing: tuple[str, ...] = ()) -> dict[str, str]:
    """A local file for every plugin's module except the ``missing`` plugins'."""
    out = {}
    for doc in docs:
        if doc["kind"] == "WasmPlugin" and doc["metadata"]["name"] not in missing:
            scheme, sep, rest = doc["spec"]["url"].partition("://")
            url = f"{scheme.lower()}://{rest}" if sep else f"oci://{scheme}"
            out[url] = MODULE.format(name=doc["metadata"]["name"])
    return out


def case(
    name: str,
    *docs: dict[str, Any],
    labels: dict[str, str] | None = None,
    namespace: str = GW_NS,
    missing: tuple[str, ...] = (),
    check: Callable[[dict[str, Any]], None],
) -> Any:
    gateway_case = GatewayCase(
        name=name,
        yaml=yaml.safe_dump_all(docs, sort_keys=False),
        namespace=namespace,
        labels=labels or LABELS,
        modules=modules_for(*docs, missing=missing),
    )
    return pytest.param(gateway_case, check, id=name)


def chain(answer: dict[str, Any], listener: str = "0.0.0.0_80") -> list[str]:
    return plugin_chain(answer, listener)


def ecds_kind(answer: dict[str, Any], plugin_name: str) -> str:
    """``Wasm``/``RBAC`` (http or network) of a plugin's ECDS resource as Envoy gets it."""
    (found,) = [
        e for e in answer["envoy_ecds"] if e["name"].endswith(f".{plugin_name}~istio-translated-wasmplugin")
    ]
    typed: dict[str, Any] = found["typed_config"]
    return typed["@type"].split("filters.", 1)[1]


def wasm_config(answer: dict[str, Any], plugin_name: str) -> dict[str, Any]:
    (found,) = [
        e for e in answer["envoy_ecds"] if e["name"].endswith(f".{plugin_name}~istio-translated-wasmplugin")
    ]
    config: dict[str, Any] = found["typed_config"]["config"]
    return config


# ----- the corpus


def _priorities(answer: dict[str, Any]) -> None:
    order = chain(answer)
    # Higher priority first; at equal priority the workload's namespace before the root
    # namespace even when created later; then creation time, then name; unset is lowest.
    assert order.index("web.p10-late") < order.index("istio-system.p10-early")
    assert order.index("web.p0") < order.index("istio-system.p0")
    assert order.index("web.pneg") < order.index("web.b-unset")
    assert order.index("web.b-unset") < order.index("web.m-unset")  # same time: by name
    assert order.index("istio-system.z-unset-early") < order.index("istio-system.a-unset-late")
    assert order[-2:] == ["istio-system.z-unset-early", "istio-system.a-unset-late"]
    assert "elsewhere.other-ns" not in order


T0, T1, T2, T3 = (
    "2024-01-01T00:00:00Z",
    "2024-01-02T00:00:00Z",
    "2024-01-03T00:00:00Z",
    "2024-01-09T00:00:00Z",
)

PRIORITIES = (
    gateway(),
    virtual_service(),
    plugin("z-unset-early", ROOT_NS, T0),
    plugin("a-unset-late", ROOT_NS, T1),
    plugin("m-unset", GW_NS, T2),
    plugin("b-unset", GW_NS, T2),
    plugin("p0", ROOT_NS, T0, priority=0),
    plugin("p0", GW_NS, T3, priority=0),
    plugin("pneg", GW_NS, T3, priority=-5),
    plugin("pmin", GW_NS, T1, priority=-2147483648),
    plugin("p10-early", ROOT_NS, T0, priority=10),
    plugin("p10-late", GW_NS, T3, priority=10),
    plugin("other-ns", "elsewhere", T0, priority=100),
)


def _phases(answer: dict[str, Any]) -> None:
    order = chain(answer)
    # Phase dominates priority: AUTHN, AUTHZ, STATS, then unspecified (explicit or unset).
    assert order[:3] == ["web.authn-low", "web.authz-low", "web.stats-low"]
    assert set(order[3:]) == {"web.unspecified-high", "web.no-phase-mid"}


PHASES = (
    gateway(),
    virtual_service(),
    plugin("unspecified-high", phase="UNSPECIFIED_PHASE", priority=100),
    plugin("no-phase-mid", priority=50),
    plugin("stats-low", phase="STATS", priority=1),
    plugin("authz-low", phase="AUTHZ", priority=2),
    plugin("authn-low", phase="AUTHN", priority=3),
)


def _modes(answer: dict[str, Any]) -> None:
    order = set(chain(answer))
    # A gateway's listeners are CLIENT-side.
    assert {"web.client", "web.client-and-server", "web.undefined", "web.server-or-client-80"} <= order
    assert not order & {"web.server", "web.server-80", "web.client-443"}


MODES = (
    gateway(),
    virtual_service(),
    plugin("client", match=[{"mode": "CLIENT"}]),
    plugin("server", match=[{"mode": "SERVER"}]),
    plugin("client-and-server", match=[{"mode": "CLIENT_AND_SERVER"}]),
    plugin("undefined", match=[{"mode": "UNDEFINED"}]),
    plugin("server-80", match=[{"mode": "SERVER", "ports": [{"number": 80}]}]),
    plugin("client-443", match=[{"mode": "CLIENT", "ports": [{"number": 443}]}]),
    plugin("server-or-client-80", match=[{"mode": "SERVER"}, {"mode": "CLIENT", "ports": [{"number": 80}]}]),
)


def _remapped_ports(answer: dict[str, Any]) -> None:
    # The Service maps port 80 to 8080: the gateway listens on 8080 and plugins match 8080.
    assert sorted(listener["name"] for listener in answer["listeners"]) == ["0.0.0.0_8080", "0.0.0.0_8081"]
    assert chain(answer, "0.0.0.0_8080") == ["web.any", "web.port-8080"]
    assert set(chain(answer, "0.0.0.0_8081")) == {"web.any", "web.ports-80-8081"}


REMAPPED_PORTS = (
    gateway(ports=(80, 8081)),
    service({80: 8080, 8081: 8081}),
    virtual_service(),
    plugin("any"),
    plugin("port-80", match=[{"ports": [{"number": 80}]}]),
    plugin("port-8080", match=[{"ports": [{"number": 8080}]}]),
    plugin("ports-80-8081", match=[{"ports": [{"number": 80}, {"number": 8081}]}]),
)


def _unmapped_ports(answer: dict[str, Any]) -> None:
    # No Service selects the gateway (or it opts out of translation): it listens on 80 itself.
    assert set(chain(answer, "0.0.0.0_80")) == {"web.port-80", "web.ports-80-8081"}


UNMAPPED_PORTS = (
    gateway(ports=(80,)),
    service({80: 8080}, **{"experimental.istio.io/disable-gateway-port-translation": "true"}),
    virtual_service(),
    plugin("port-80", match=[{"ports": [{"number": 80}]}]),
    plugin("port-8080", match=[{"ports": [{"number": 8080}]}]),
    plugin("ports-80-8081", match=[{"ports": [{"number": 80}, {"number": 8081}]}]),
)


def _fail_strategies(answer: dict[str, Any]) -> None:
    # Missing modules become the agent's RBAC stand-ins: allow for FAIL_OPEN only.
    assert ecds_kind(answer, "open-missing") == "http.rbac.v3.RBAC"
    for name in ("close-missing", "reload-missing", "unset-missing"):
        assert ecds_kind(answer, name) == "http.rbac.v3.RBAC"
    # A module that is there keeps failStrategy as failure_policy.
    assert wasm_config(answer, "reload")["failure_policy"] == "FAIL_RELOAD"
    assert wasm_config(answer, "unset")["failure_policy"] == "FAIL_CLOSED"


FAIL_STRATEGIES = (
    gateway(),
    virtual_service(),
    plugin("open", failStrategy="FAIL_OPEN"),
    plugin("close", failStrategy="FAIL_CLOSE"),
    plugin("reload", failStrategy="FAIL_RELOAD"),
    plugin("unset"),
    plugin("open-missing", failStrategy="FAIL_OPEN"),
    plugin("close-missing", failStrategy="FAIL_CLOSE"),
    plugin("reload-missing", failStrategy="FAIL_RELOAD"),
    plugin("unset-missing"),
)
FAIL_MISSING = ("open-missing", "close-missing", "reload-missing", "unset-missing")


def _urls(answer: dict[str, Any]) -> None:
    (fetched,) = [f for f in answer["agent_fetches"] if "no-scheme" in f["resource_name"]]
    assert fetched["url"] == "oci://registry.example/no-scheme:v1"  # no scheme means oci://
    (upper,) = [f for f in answer["agent_fetches"] if "upper-scheme" in f["resource_name"]]
    assert upper["url"] == "oci://registry.example/upper-scheme:v1"  # Go lower-cases the scheme
    # A scheme-less url with a port: Go refuses to parse it, istiod drops the plugin.
    assert "web.host-port" not in chain(answer)
    assert wasm_config(answer, "file")["vm_config"]["code"] == {
        "local": {"filename": "/opt/plugins/file.wasm"}
    }


URLS = (
    gateway(),
    virtual_service(),
    plugin("no-scheme", url="registry.example/no-scheme:v1"),
    plugin("upper-scheme", url="OCI://registry.example/upper-scheme:v1"),
    plugin("host-port", url="127.0.0.1:5000/team/host-port:v1"),
    plugin("http", url="http://fetcher.example/fetch/aHR0cDovL3g="),
    plugin("file", url="file:///opt/plugins/file.wasm", imagePullPolicy="IfNotPresent"),
)


def _target_refs_classic(answer: dict[str, Any]) -> None:
    # A gateway made from an Istio Gateway: targetRef'd plugins never attach.
    assert chain(answer) == ["web.by-selector"]


TARGET_REFS_CLASSIC = (
    gateway(),
    virtual_service(),
    plugin("by-selector"),
    plugin(
        "to-gateway", targetRefs=[{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}]
    ),
    plugin("to-service", targetRefs=[{"group": "", "kind": "Service", "name": "edge-gateway"}]),
    plugin("legacy-ref", targetRef={"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}),
)

GATEWAY_API_LABELS = {**LABELS, "gateway.networking.k8s.io/gateway-name": "edge"}


def _target_refs_gateway_api(answer: dict[str, Any]) -> None:
    order = set(chain(answer))
    assert {"web.by-selector", "web.to-gateway", "web.legacy-ref"} <= order
    assert not order & {"web.to-other-gateway", "web.to-service", "istio-system.root-ref"}


TARGET_REFS_GATEWAY_API = (
    gateway(),
    virtual_service(),
    plugin("by-selector"),
    plugin(
        "to-gateway", targetRefs=[{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}]
    ),
    plugin(
        "to-other-gateway",
        targetRefs=[{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "x"}],
    ),
    plugin("to-service", targetRefs=[{"group": "", "kind": "Service", "name": "edge-gateway"}]),
    plugin("legacy-ref", targetRef={"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}),
    plugin(
        "root-ref",
        ROOT_NS,
        targetRefs=[{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}],
    ),
)


def _network(answer: dict[str, Any]) -> None:
    # NETWORK plugins are network filters ahead of the connection manager, in their own order.
    (listener,) = answer["listeners"]
    names = [f["name"] for f in listener["filter_chains"][0]["network_filters"]]
    assert names[-1] == "envoy.filters.network.http_connection_manager"
    assert [n.rsplit("/", 1)[1] for n in names[:-1]] == [
        "web.net-authn~istio-translated-wasmplugin",
        "web.net-high~istio-translated-wasmplugin",
        "web.net-missing~istio-translated-wasmplugin",
    ]
    assert ecds_kind(answer, "net-high") == "network.wasm.v3.Wasm"
    assert ecds_kind(answer, "net-missing") == "network.rbac.v3.RBAC"
    assert "web.http" in chain(answer)


NETWORK = (
    gateway(),
    virtual_service(),
    plugin("http", type="HTTP"),
    plugin("net-missing", type="NETWORK", failStrategy="FAIL_OPEN"),
    plugin("net-high", type="NETWORK", priority=5),
    plugin("net-authn", type="NETWORK", phase="AUTHN"),
)


def _plugin_config(answer: dict[str, Any]) -> None:
    config = wasm_config(answer, "config")
    assert config["configuration"]["value"].startswith('{"10":"numeric key","alpha":')
    assert wasm_config(answer, "empty")["configuration"] == {}
    env = wasm_config(answer, "env")["vm_config"]["environment_variables"]
    assert env == {"key_values": {"MODE": "fast", "EMPTY": ""}, "host_env_keys": ["HOME", "POD_NAME"]}
    assert "environment_variables" not in wasm_config(answer, "pull")["vm_config"]  # the agent's, stripped


PLUGIN_CONFIG = (
    gateway(),
    virtual_service(),
    plugin(
        "config",
        pluginName="config-root",
        pluginConfig={
            "zeta": 1,
            "alpha": {"b": 2.5, "a": [1, "x", True, None]},
            "big": 12345678901234567890,
            "small": 0.000001,
            "tiny": 1.5e-7,
            "huge": 1.0e300,
            "whole": 3.0,
            "negative_zero": -0.0,
            "html": "<a href='x'>&</a>",
            "text": 'héllo ☃ \u2028 \u2029 \b\f\x01\x7f\t\n\r"\\/ \U0001f600',
            "10": "numeric key",
        },
    ),
    plugin("empty", pluginConfig={}),
    plugin(
        "env",
        vmConfig={
            "env": [
                {"name": "MODE", "value": "fast"},
                {"name": "HOME", "valueFrom": "HOST"},
                {"name": "EMPTY", "valueFrom": "INLINE"},
                {"name": "POD_NAME", "valueFrom": "HOST"},
            ]
        },
    ),
    plugin("pull", imagePullPolicy="Always", sha256="a" * 64),
)


def _workload_in_root_namespace(answer: dict[str, Any]) -> None:
    assert chain(answer) == ["istio-system.second", "istio-system.first"]


ROOT_WORKLOAD = (
    gateway(namespace=ROOT_NS),
    virtual_service(namespace=ROOT_NS),
    plugin("first", ROOT_NS, T0),
    plugin("second", ROOT_NS, T1, priority=1),
    plugin("in-gwns", GW_NS, T0, priority=9),
)


def _selectors(answer: dict[str, Any]) -> None:
    assert set(chain(answer)) == {"web.subset", "web.all-labels", "web.no-selector"}


SELECTORS = (
    gateway(),
    virtual_service(),
    plugin("subset", selector={"matchLabels": {"istio": "ingressgateway"}}),
    plugin("all-labels", selector={"matchLabels": LABELS}),
    plugin("no-selector", selector={}),
    plugin("other-value", selector={"matchLabels": {"app": "other"}}),
    plugin("extra-label", selector={"matchLabels": {**LABELS, "version": "v2"}}),
)

# pluginConfig as written by hand: Kubernetes' YAML (what kubectl sends) types these scalars, not
# YAML 1.1 as PyYAML does: numbers with exponents and no dot, 0o octal, y/n, no sexagesimal.
SCALARS_YAML = f"""
{yaml.safe_dump(gateway(), sort_keys=False)}
---
{yaml.safe_dump(virtual_service(), sort_keys=False)}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: scalars, namespace: {GW_NS}, resourceVersion: "3"}}
spec:
  selector: {{matchLabels: {{app: edge-gateway}}}}
  url: oci://registry.example/scalars:v1
  pluginConfig:
    exp: 1e21
    small_exp: 1e-7
    negative_dot: -.5
    upper_exp: 1.5E+3
    hex: 0x1F
    octal: 0o17
    old_octal: 017
    not_octal: 019
    binary: 0b101
    underscores: 1_000.5
    plus: +12
    big: 99999999999999999999
    y: y
    n: n
    yes_word: yes
    off_word: off
    sexagesimal: 1:30
    date: 2024-01-01
    tilde: ~
    empty:
    keys: {{1: a, 2.5: b, 1e6: c, 16777217.0: d, 0.00001: e, true: f}}
"""


def _scalars(answer: dict[str, Any]) -> None:
    text = wasm_config(answer, "scalars")["configuration"]["value"]
    assert '"exp":1e+21' in text
    assert '"sexagesimal":"1:30"' in text
    assert '"true":true' in text  # the key y is a boolean too


CASES = [
    pytest.param(
        GatewayCase(
            name="yaml-scalars",
            yaml=SCALARS_YAML,
            namespace=GW_NS,
            labels=LABELS,
            modules={"oci://registry.example/scalars:v1": MODULE.format(name="scalars")},
        ),
        _scalars,
        id="yaml-scalars",
    ),
    case("priorities", *PRIORITIES, check=_priorities),
    case("phases", *PHASES, check=_phases),
    case("match-modes", *MODES, check=_modes),
    case("match-ports-service-remap", *REMAPPED_PORTS, check=_remapped_ports),
    case("match-ports-no-translation", *UNMAPPED_PORTS, check=_unmapped_ports),
    case("fail-strategies", *FAIL_STRATEGIES, missing=FAIL_MISSING, check=_fail_strategies),
    case("urls", *URLS, check=_urls),
    case("target-refs-istio-gateway", *TARGET_REFS_CLASSIC, check=_target_refs_classic),
    case(
        "target-refs-gateway-api",
        *TARGET_REFS_GATEWAY_API,
        labels=GATEWAY_API_LABELS,
        check=_target_refs_gateway_api,
    ),
    case("network", *NETWORK, missing=("net-missing",), check=_network),
    case("plugin-config", *PLUGIN_CONFIG, check=_plugin_config),
    case("workload-in-root-namespace", *ROOT_WORKLOAD, namespace=ROOT_NS, check=_workload_in_root_namespace),
    case("selectors", *SELECTORS, check=_selectors),
]


@pytest.mark.parametrize(("gateway_case", "check"), CASES)
def test_meshwasm_gives_the_gateway_istio_gives(
    istio_oracle: IstioOracle,
    gateway_case: GatewayCase,
    check: Callable[[dict[str, Any]], None],
    tmp_path: Path,
) -> None:
    answer = ask_oracle(istio_oracle, gateway_case)
    check(answer)
    unknown = istio_only_filters(answer) - ISTIO_ONLY_HTTP_FILTERS
    assert not unknown, f"Istio's gateway chain has filters meshwasm neither emits nor documents: {unknown}"
    ours = meshwasm_view(translate(gateway_case, load_istio(gateway_case, tmp_path)))
    differences = diff(oracle_view(answer), ours)
    assert differences == [], "meshwasm differs from Istio:\n  " + "\n  ".join(differences)


def test_a_url_scheme_istio_refuses_is_refused(istio_oracle: IstioOracle, tmp_path: Path) -> None:
    """``localhost:5000/m:v1`` has the scheme ``localhost`` to Go: Istio's validation refuses it."""
    docs = (gateway(), virtual_service(), plugin("localhost", url="localhost:5000/team/m:v1"))
    gateway_case = GatewayCase(
        name="bad-scheme", yaml=yaml.safe_dump_all(docs, sort_keys=False), namespace=GW_NS, labels=LABELS
    )
    with pytest.raises(OracleFailed, match="unsupported scheme: localhost"):
        ask_oracle(istio_oracle, gateway_case)
    with pytest.raises(TranslationError, match="url scheme 'localhost' is not one Istio accepts"):
        translate(gateway_case, load_istio(gateway_case, tmp_path))
