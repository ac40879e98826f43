"""Istio -> Envoy: listeners, routes, clusters and ECDS Wasm filters as Istio and its agent make them.

That these are what the pinned Istio makes is proven against Istio's own code in tests/fidelity;
these tests pin meshwasm's own parts (local ports and addresses, module files, upstreams, errors)
and restate a few of Istio's rules so a regression shows without the oracle.
"""

from __future__ import annotations

import json

import pytest

from meshwasm.envoy import resources as r
from meshwasm.manifests import core, istio, load
from meshwasm.manifests.base import ObjectMeta
from meshwasm.translate import IstioResources, TranslationError, istio_to_envoy, tsb_to_istio
from meshwasm.translate.render import static_bootstrap

UPSTREAM = {"httpbin.httpbin.svc.cluster.local:8000": ("127.0.0.1", 18000)}
LABELS = {"app": "tier2-gateway", "istio": "ingressgateway"}
SEED_FILTER = (
    "extensions.istio.io/trafficextension/tier2.tier2-gateway-wasm-add-header0~istio-translated-wasmplugin"
)


def ecds_name(namespace: str, name: str) -> str:
    return f"extensions.istio.io/trafficextension/{namespace}.{name}~istio-translated-wasmplugin"


def xds(name: str) -> dict:
    return r.file_config_source(f"/xds/ecds-{name}.yaml", "/xds")


@pytest.fixture(scope="module")
def seed(repo_root) -> IstioResources:
    return tsb_to_istio(load(repo_root / "tsb"))


def render(resources: IstioResources, modules: dict[str, str] | None = None, **kwargs):
    if modules is None:
        modules = {p.spec.url: f"/cache/{p.name}.wasm" for p in resources.wasm_plugins}
    options = {"workload_labels": LABELS, "upstreams": UPSTREAM, "xds": xds, **kwargs}
    return istio_to_envoy(resources, module_files=modules, **options)


def hcm(listener: dict) -> dict:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def test_seed_listener_routes_and_cluster(seed):
    config = render(seed, bind_address="127.0.0.1", port_map={80: 18080})
    (listener,) = config.listeners
    assert listener["name"] == "127.0.0.1_18080"
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}
    (vhost,) = hcm(listener)["route_config"]["virtual_hosts"]
    # Istio's form: the bare hostname, and the port ignored in host matching (so :18080 matches).
    assert vhost["domains"] == ["httpbin.tetrate.io"]
    assert hcm(listener)["route_config"]["ignore_port_in_host_matching"] is True
    (route,) = vhost["routes"]
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["cluster"] == "outbound|8000||httpbin.httpbin.svc.cluster.local"
    assert route["route"]["timeout"] == "0s"  # no route timeout, as istiod (Envoy's default is 15 s)
    (cluster,) = config.clusters
    assert cluster["name"] == "outbound|8000||httpbin.httpbin.svc.cluster.local"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18000}


def test_seed_wasm_plugin_becomes_the_seeds_ecds_filter(seed):
    config = render(seed)
    wasm_filter, router = hcm(config.listeners[0])["http_filters"]
    assert wasm_filter == {
        "name": SEED_FILTER,
        "config_discovery": {
            "config_source": xds(SEED_FILTER),
            "type_urls": [
                "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            ],
        },
    }
    assert router["name"] == "envoy.filters.http.router"
    (ecds,) = config.filters
    assert ecds["@type"] == "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
    assert ecds["name"] == SEED_FILTER
    plugin = ecds["typed_config"]["config"]
    assert ecds["typed_config"]["@type"] == "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    assert plugin["name"] == "tier2.tier2-gateway-wasm-add-header0~istio-translated-wasmplugin"
    assert plugin["root_id"] == "tier2-gateway-wasm-add-header0"
    assert plugin["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert plugin["vm_config"]["code"]["local"]["filename"] == "/cache/tier2-gateway-wasm-add-header0.wasm"
    assert plugin["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    assert json.loads(plugin["configuration"]["value"]) == seed.wasm_plugins[0].spec.plugin_config
    assert plugin["failure_policy"] == "FAIL_CLOSED"  # failStrategy unset is FAIL_CLOSE
    assert "fail_open" not in plugin


def test_missing_module_becomes_the_rbac_stand_in_per_fail_strategy(seed):
    config = render(seed, modules={})
    assert config.filters[0]["typed_config"] == r.rbac_filter_config(allow=False)  # FAIL_CLOSE by default
    assert "deny-all" in config.warnings[0].message
    fail_open = _plugins(seed, [("open", None, None, "FAIL_OPEN")])
    config = render(fail_open, modules={})
    assert config.filters[0]["typed_config"] == r.rbac_filter_config(allow=True)


def _plugins(seed: IstioResources, specs) -> IstioResources:
    """The seed with its WasmPlugins replaced by (name, phase, priority, failStrategy) ones."""
    out = IstioResources(gateways=seed.gateways, virtual_services=seed.virtual_services)
    template = seed.wasm_plugins[0]
    for name, phase, priority, fail in specs:
        spec = template.spec.model_copy(
            update={"phase": phase, "priority": priority, "fail_strategy": fail, "plugin_name": name}
        )
        out.wasm_plugins.append(
            istio.WasmPlugin(metadata=ObjectMeta(name=name, namespace="tier2"), spec=spec)
        )
    return out


def test_filters_are_ordered_by_phase_then_priority_as_istio_orders_them(seed):
    resources = _plugins(
        seed,
        [
            ("plain-low", None, 1, None),
            ("stats", "STATS", 100, None),
            ("authz", "AUTHZ", 0, None),
            ("plain-high", "UNSPECIFIED_PHASE", 50, None),
            ("authn-b", "AUTHN", 5, None),
            ("authn-a", "AUTHN", 5, None),
            ("authn-top", "AUTHN", 9, None),
        ],
    )
    config = render(resources)
    names = [f["name"] for f in hcm(config.listeners[0])["http_filters"][:-1]]
    expected = ["authn-top", "authn-a", "authn-b", "authz", "stats", "plain-high", "plain-low"]
    assert names == [ecds_name("tier2", n) for n in expected]
    assert [f["name"] for f in config.filters] == names


def test_plugins_apply_only_to_their_workload_namespace_and_ports(seed):
    resources = _plugins(
        seed,
        [
            ("mine", None, None, None),
            ("other-labels", None, None, None),
            ("other-ns", None, None, None),
            ("port-443", None, None, None),
            ("client-only", None, None, None),
            ("server-only", None, None, None),
            ("root-ns", None, None, None),
        ],
    )
    by_name = {p.name: p for p in resources.wasm_plugins}
    by_name["other-labels"].spec.selector = istio.LabelSelector(match_labels={"app": "someone-else"})
    by_name["other-ns"].metadata.namespace = "elsewhere"
    by_name["root-ns"].metadata.namespace = "istio-system"
    by_name["port-443"].spec.match = [istio.TrafficSelector(ports=[istio.PortSelector(number=443)])]
    by_name["client-only"].spec.match = [istio.TrafficSelector(mode="CLIENT")]
    by_name["server-only"].spec.match = [istio.TrafficSelector(mode="SERVER")]
    config = render(resources, workload_namespace="tier2")
    names = [f["name"] for f in hcm(config.listeners[0])["http_filters"][:-1]]
    # A gateway's listeners are CLIENT-side; same phase and (unset) priority: the workload's
    # namespace before the root namespace, then by name.
    assert names == [
        ecds_name("tier2", "client-only"),
        ecds_name("tier2", "mine"),
        ecds_name("istio-system", "root-ns"),
    ]


def test_vm_env_reaches_the_vm_but_not_istiods_agent_variables(seed):
    resources = _plugins(seed, [("env", None, None, None)])
    plugin = resources.wasm_plugins[0]
    plugin.spec.vm_config = istio.WasmVmConfig(
        env=[istio.WasmEnvVar(name="MODE", value="fast"), istio.WasmEnvVar(name="HOME", value_from="HOST")]
    )
    plugin.metadata = ObjectMeta.model_validate(
        {"name": "env", "namespace": "tier2", "resourceVersion": "42"}
    )
    env = render(resources).filters[0]["typed_config"]["config"]["vm_config"]["environment_variables"]
    # istiod's ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION is the agent's: it strips it.
    assert env == {"key_values": {"MODE": "fast"}, "host_env_keys": ["HOME"]}


def test_unmapped_upstream_says_how_to_map_it(seed):
    with pytest.raises(TranslationError) as caught:
        render(seed, upstreams={})
    (problem,) = caught.value.problems
    assert "--upstream httpbin/httpbin=HOST:PORT" in problem.message
    assert "'httpbin.httpbin.svc.cluster.local:8000'" in problem.message
    assert problem.subject == "VirtualService tier2/tier2-gateway-httpbin"


def test_no_gateway_for_the_workload_is_an_error(seed):
    with pytest.raises(TranslationError, match="no Istio Gateway selects"):
        render(seed, workload_labels={"app": "nobody"})


def test_gateway_ports_mapping_to_one_local_port_is_an_error(seed):
    gateway = seed.gateways[0].model_copy(deep=True)
    gateway.spec.servers.append(
        istio.Server(port=istio.Port(number=8080, protocol="HTTP", name="alt"), hosts=["alt.example"])
    )
    resources = IstioResources(gateways=[gateway], virtual_services=seed.virtual_services)
    with pytest.raises(TranslationError, match="both map to local port 9000"):
        render(resources, port_map={80: 9000, 8080: 9000})


def test_https_servers_are_refused_not_served_in_plain_text(seed):
    gateway = seed.gateways[0].model_copy(deep=True)
    gateway.spec.servers[0].port.protocol = "HTTPS"
    resources = IstioResources(gateways=[gateway], virtual_services=seed.virtual_services)
    with pytest.raises(TranslationError, match="HTTPS servers need certificates"):
        render(resources)


def test_routes_with_matches_and_weights(seed):
    vs = seed.virtual_services[0].model_copy(deep=True)
    vs.spec.http = [
        istio.HttpRoute(
            match=[
                istio.HttpMatchRequest(
                    uri=istio.StringMatch(exact="/get"), headers={"x-v": istio.StringMatch(prefix="2")}
                )
            ],
            route=[
                istio.RouteDestination(
                    destination=istio.Destination(
                        host="httpbin.httpbin.svc.cluster.local", port=istio.PortSelector(number=8000)
                    ),
                    weight=90,
                ),
                istio.RouteDestination(
                    destination=istio.Destination(
                        host="canary.httpbin.svc.cluster.local", port=istio.PortSelector(number=8000)
                    ),
                    weight=10,
                ),
            ],
        )
    ]
    upstreams = {**UPSTREAM, "canary.httpbin.svc.cluster.local:8000": ("127.0.0.1", 18001)}
    config = render(IstioResources(gateways=seed.gateways, virtual_services=[vs]), upstreams=upstreams)
    (route,) = hcm(config.listeners[0])["route_config"]["virtual_hosts"][0]["routes"]
    assert route["match"] == {
        "path": "/get",
        "case_sensitive": True,
        "headers": [{"name": "x-v", "string_match": {"prefix": "2"}}],
    }
    assert route["route"]["weighted_clusters"]["clusters"] == [
        {"name": "outbound|8000||httpbin.httpbin.svc.cluster.local", "weight": 90},
        {"name": "outbound|8000||canary.httpbin.svc.cluster.local", "weight": 10},
    ]
    assert len(config.clusters) == 2


def test_static_bootstrap_inlines_the_ecds_filters(seed):
    config = render(seed)
    bootstrap = static_bootstrap(config, admin_port=19000)
    (listener,) = bootstrap["static_resources"]["listeners"]
    assert "@type" not in listener
    wasm_filter = hcm(listener)["http_filters"][0]
    assert wasm_filter == {"name": SEED_FILTER, "typed_config": config.filters[0]["typed_config"]}
    assert bootstrap["admin"]["address"]["socket_address"]["port_value"] == 19000
    # The EnvoyConfig itself is untouched (the gateway feeds it to Envoy through ECDS).
    assert "config_discovery" in hcm(config.listeners[0])["http_filters"][0]


def test_workload_views_give_each_workload_what_a_full_scan_gives(seed):
    """The indexed per-workload views (linear for large trees) select exactly what istio_to_envoy
    would select from the whole set: two gateways, plugins on each, one in the root namespace."""
    from meshwasm.translate.render import workload_views

    second = seed.gateways[0].model_copy(deep=True)
    second.metadata = ObjectMeta(name="edge", namespace="edge")
    second.spec.selector = {"app": "edge"}
    vs = seed.virtual_services[0].model_copy(deep=True)
    vs.metadata = ObjectMeta(name="edge", namespace="edge")
    vs.spec.gateways = ["edge"]
    resources = _plugins(seed, [("a", None, None, None), ("b", None, None, None), ("root", None, None, None)])
    resources.gateways = [*seed.gateways, second]
    resources.virtual_services = [*seed.virtual_services, vs]
    resources.wasm_plugins[1].metadata.namespace = "edge"
    resources.wasm_plugins[1].spec.selector = istio.LabelSelector(match_labels={"app": "edge"})
    resources.wasm_plugins[2].metadata.namespace = "istio-system"
    resources.wasm_plugins[2].spec.selector = None
    # The gateway's Service turns port 80 into 8080 (and a port-8080 plugin applies there).
    resources.core.append(
        core.Service.model_validate(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "tier2-gateway", "namespace": "tier2"},
                "spec": {"selector": {"app": "tier2-gateway"}, "ports": [{"port": 80, "targetPort": 8080}]},
            }
        )
    )
    resources.wasm_plugins[0].spec.match = [istio.TrafficSelector(ports=[istio.PortSelector(number=8080)])]
    views = workload_views(resources)
    assert [(w.ref, len(v.wasm_plugins), len(v.virtual_services)) for w, v in views] == [
        ("tier2/tier2-gateway", 2, 1),
        ("edge/edge", 2, 1),
    ]
    for workload, view in views:
        options = {
            "workload_labels": workload.labels,
            "workload_namespace": workload.namespace,
            "modules": {seed.wasm_plugins[0].spec.url: "/cache/m.wasm"},
        }
        assert render(view, **options).to_json() == render(resources, **options).to_json()
    tier2 = render(views[0][1], workload_labels={"app": "tier2-gateway"}, workload_namespace="tier2")
    assert [listener["name"] for listener in tier2.listeners] == ["0.0.0.0_8080"]
    assert hcm(tier2.listeners[0])["http_filters"][0]["name"] == ecds_name("tier2", "a")
