"""`meshwasm doctor`'s pure parts: selection reasons, tie-breaks, dump/stats/log parsing, fetch
reasons, and the diagnosis of each filter state. Every state is also produced for real and
diagnosed in tests/e2e/test_doctor.py; these pin the rules, including inputs only a cluster
gives (an ``istioctl proxy-config all -o json`` dump, Istio's log format, its agent's words).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from meshwasm.envoy import resources as r
from meshwasm.gateway.agent import Resolution
from meshwasm.gateway.doctor import (
    AgentRecord,
    DoctorInput,
    Finding,
    GatewayFacts,
    agent_records,
    diagnose,
    refused_config_lines,
    render_text,
    selection,
    to_json,
    up_record,
)
from meshwasm.gateway.dump_facts import (
    DumpError,
    parse_config_dump,
    parse_log,
    parse_stats,
    plugin_of_filter,
)
from meshwasm.gateway.fetch_reasons import classify_fetch_error, istio_agent_failures, up_agent_failures
from meshwasm.manifests import istio, load
from meshwasm.translate import tsb_to_istio
from meshwasm.translate.istio_to_envoy import ListenPort, listen_ports
from meshwasm.translate.wasm_plugins import filter_name

LABELS = {"app": "gw", "istio": "ingressgateway"}
GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: tier2}
spec:
  selector: {app: gw}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: gw, namespace: tier2}
spec:
  selector: {app: gw}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def wasm_plugin(name: str, namespace: str = "tier2", **spec: Any) -> str:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if "creationTimestamp" in spec:
        metadata["creationTimestamp"] = spec.pop("creationTimestamp")
    document = {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": metadata,
        "spec": {"url": "oci://registry.example.com/team/m:v1", **spec},
    }
    return json.dumps(document)


def plugins_and_gateway(
    tmp_path: Path, *docs: str, labels: dict[str, str] = LABELS
) -> tuple[list[istio.WasmPlugin], GatewayFacts]:
    path = tmp_path / "tree.yaml"
    path.write_text("\n---\n".join([GATEWAY, *docs]))
    resources = tsb_to_istio(load(path), fetcher_base=None)
    ports = listen_ports(resources, workload_labels=labels, workload_namespace="tier2")
    return resources.wasm_plugins, GatewayFacts(labels=dict(labels), namespace="tier2", listen_ports=ports)


def by_plugin(findings: list[Finding]) -> dict[str, Finding]:
    return {f"order:{f.plugin}" if f.status == "ordering" else f.plugin: f for f in findings}


# ----- selection


def test_each_reason_a_plugin_is_not_selected(tmp_path: Path) -> None:
    plugins, gateway = plugins_and_gateway(
        tmp_path,
        SERVICE,
        wasm_plugin("labels", selector={"matchLabels": {"app": "other", "team": "a"}}),
        wasm_plugin("server", match=[{"mode": "SERVER"}]),
        wasm_plugin("port-80", match=[{"ports": [{"number": 80}]}]),
        wasm_plugin("port-8080", match=[{"mode": "CLIENT", "ports": [{"number": 8080}]}]),
        wasm_plugin("elsewhere", namespace="shop"),
        wasm_plugin("root", namespace="istio-system"),
        wasm_plugin(
            "refs", targetRefs=[{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]
        ),
    )
    assert [lp.port for lp in gateway.listen_ports] == [8080]
    results = {p.name: selection(p, gateway) for p in plugins}
    reasons = {k: (v.reason if isinstance(v, Finding) else [lp.port for lp in v]) for k, v in results.items()}
    assert reasons == {
        "labels": "labels",
        "server": "match-mode",
        "port-80": "match-ports",
        "port-8080": [8080],
        "elsewhere": "namespace",
        "root": [8080],  # the root namespace reaches every gateway
        "refs": "target-refs",
    }
    labels = results["labels"]
    assert isinstance(labels, Finding)
    assert "app=other (the gateway has app=gw); team=a (the gateway has no team)" in labels.summary
    ports = results["port-80"]
    assert isinstance(ports, Finding)
    assert "8080 (Service tier2/gw maps gateway port 80 to it)" in ports.summary
    assert ports.fix.endswith("(the Service's targetPort, not its port): 8080")
    refs = results["refs"]
    assert isinstance(refs, Finding)
    assert "deployed from an Istio Gateway" in refs.summary


def test_a_url_istiod_cannot_parse_is_dropped(tmp_path: Path) -> None:
    plugins, gateway = plugins_and_gateway(tmp_path, wasm_plugin("colon", url="127.0.0.1:5000/team/m:v1"))
    (plugin,) = plugins
    found = selection(plugin, gateway)
    assert isinstance(found, Finding)
    assert found.reason == "url"
    assert "first path segment in URL cannot contain colon" in found.summary


def test_target_refs_on_a_gateway_api_gateway_name_another_gateway(tmp_path: Path) -> None:
    labels = {"app": "gw", "gateway.networking.k8s.io/gateway-name": "gw"}
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway"}
    plugins, gateway = plugins_and_gateway(
        tmp_path,
        wasm_plugin("mine", targetRefs=[{**ref, "name": "gw"}]),
        wasm_plugin("theirs", targetRefs=[{**ref, "name": "other"}]),
        labels=labels,
    )
    results = {p.name: selection(p, gateway) for p in plugins}
    assert isinstance(results["mine"], list)
    theirs = results["theirs"]
    assert isinstance(theirs, Finding)
    assert theirs.reason == "target-refs"
    assert "name Gateway/other, not this gateway (Gateway/gw in namespace tier2)" in theirs.summary


# ----- ordering


def test_each_tie_break_is_named(tmp_path: Path) -> None:
    plugins, gateway = plugins_and_gateway(
        tmp_path,
        wasm_plugin("a"),
        wasm_plugin("a-b"),
        wasm_plugin("global", namespace="istio-system", priority=5),
        wasm_plugin("local", priority=5),
        wasm_plugin("late", priority=7, creationTimestamp="2025-01-02T00:00:00Z"),
        wasm_plugin("early", priority=7, creationTimestamp="2025-01-01T00:00:00Z"),
        wasm_plugin("alone", priority=9),
    )
    found = by_plugin(diagnose(DoctorInput(plugins=plugins, gateway=gateway)))
    orders = {k: v for k, v in found.items() if k.startswith("order:")}
    assert set(orders) == {"order:tier2/a-b", "order:tier2/local", "order:tier2/early"}
    names = orders["order:tier2/a-b"]
    assert names.other == "tier2/a"
    assert "both without a priority" in names.summary
    assert "`-` sorts before `~`, so a-b comes before a" in names.summary
    assert "the gateway's namespace (tier2) comes before the root namespace (istio-system)" in (
        orders["order:tier2/local"].summary
    )
    assert "both priority 5" in orders["order:tier2/local"].summary
    assert "created first (2025-01-01T00:00:00+00:00 before 2025-01-02T00:00:00+00:00)" in (
        orders["order:tier2/early"].summary
    )


def test_a_dump_that_runs_tied_plugins_the_other_way_is_pointed_out(tmp_path: Path) -> None:
    plugins, gateway = plugins_and_gateway(tmp_path, wasm_plugin("a"), wasm_plugin("a-b"))
    a, ab = (filter_name(p) for p in sorted(plugins, key=lambda p: p.name))
    dump = dump_of(listeners=[listener("0.0.0.0_80", [a, ab])], filters=[])
    found = by_plugin(diagnose(DoctorInput(plugins=plugins, gateway=gateway, dump=parse_config_dump(dump))))
    assert found["order:tier2/a-b"].evidence == [
        "but 0.0.0.0_80 runs tier2/a, then tier2/a-b: its config predates the tree"
    ]


# ----- config dumps, stats, logs


def listener(name: str, http_filters: list[str], *, prefix: str | None = None, state: str = "active") -> dict:
    built = r.http_listener(
        name=name,
        address="0.0.0.0",
        port=int(name.rsplit("_", 1)[1]),
        virtual_hosts=[],
        http_filters=[r.ecds_http_filter(f, r.ads_config_source()) for f in http_filters],
        stat_prefix=prefix or name,
    )
    return {"name": name, f"{state}_state": {"version_info": "v1", "listener": built}}


def ecds(name: str, typed: dict, last_updated: str = "2026-08-27T10:00:00.000Z") -> dict:
    return {"ecds_filter": r.typed_extension_config(name, typed), "last_updated": last_updated}


def dump_of(*, listeners: list[dict], filters: list[dict], node: dict | None = None) -> dict:
    configs: list[dict] = []
    if node is not None:
        configs.append(
            {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {"node": node}}
        )
    configs.append(
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": listeners}
    )
    configs.append({"@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump", "ecds_filters": filters})
    return {"configs": configs}


def wasm(config_name: str, module: str, *, policy: str = "FAIL_CLOSED", root_id: str = "") -> dict:
    return r.wasm_filter_config(
        name=config_name, root_id=root_id, filename=module, configuration='{"a": 1}', failure_policy=policy
    )


A = "extensions.istio.io/trafficextension/tier2.a~istio-translated-wasmplugin"
B = "extensions.istio.io/trafficextension/tier2.b~istio-translated-wasmplugin"
CHECKSUM = "5" * 64


def istioctl_dump() -> dict:
    """A gateway's ``istioctl proxy-config all POD -o json``: exactly the pod's admin /config_dump
    (istioctl's allConfigCmd prints those bytes), shaped as Istio's own testdata
    (istioctl/pkg/proxyconfig/testdata/config_dump.json) with what a gateway running WasmPlugins
    adds: node metadata LABELS and NAMESPACE (pkg/model NodeMetadata), a 0.0.0.0_8080 listener whose
    connection manager's stat_prefix is outbound_0.0.0.0_8080 with Istio's metadata-exchange filter
    and two ECDS filters from ADS, and the agent's rewrite of them in the ECDS dump (a module in
    /var/lib/istio/data/<sha256(module name)>/<checksum>.wasm, and the deny-all stand-in)."""
    node = {
        "id": "router~10.0.0.7~tier2-gateway-7d9f-abcde.tier2~tier2.svc.cluster.local",
        "metadata": {
            "LABELS": {"app": "gw", "istio": "ingressgateway"},
            "NAMESPACE": "tier2",
            "ISTIO_VERSION": "1.31.0",
        },
    }
    gateway = listener("0.0.0.0_8080", [A, B], prefix="outbound_0.0.0.0_8080")
    hcm = gateway["active_state"]["listener"]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, {"name": "istio.metadata_exchange", "typed_config": {"@type": "x"}})
    module = f"/var/lib/istio/data/{'c' * 64}/{CHECKSUM}.wasm"
    return dump_of(
        listeners=[gateway],
        filters=[
            ecds(A, wasm("tier2.a~istio-translated-wasmplugin", module)),
            ecds(B, r.rbac_filter_config(allow=False)),
        ],
        node=node,
    )


ISTIO_LOG = [
    "2026-08-27T10:00:00.100000Z\tinfo\twasm\tfetching image team/b from registry registry.example.com"
    " with tag v2",
    "2026-08-27T10:00:00.200000Z\terror\twasm\terror in converting the wasm config to local: cannot fetch"
    " Wasm module oci://registry.example.com/team/b:v2: could not fetch Wasm OCI image: could not fetch"
    " manifest: GET https://registry.example.com/v2/team/b/manifests/v2: MANIFEST_UNKNOWN: manifest"
    " unknown; unknown tag=v2. applying deny RBAC filter",
]


def test_an_istioctl_dump_with_istios_logs(tmp_path: Path) -> None:
    facts = parse_config_dump(istioctl_dump())
    assert facts.node_labels == {"app": "gw", "istio": "ingressgateway"}
    assert facts.node_namespace == "tier2"
    (gateway_listener,) = facts.listeners
    assert gateway_listener.stat_prefixes == ["outbound_0.0.0.0_8080"]
    assert gateway_listener.http_filters == ["istio.metadata_exchange", A, B, "envoy.filters.http.router"]
    assert (facts.filters[A].kind, facts.filters[B].kind) == ("wasm", "rbac-deny")
    assert facts.filters[B].rbac_stat_prefix == "wasm-default-deny"
    log = parse_log(ISTIO_LOG)
    assert [(line.level, line.component) for line in log] == [("info", "wasm"), ("error", "wasm")]

    plugins, _ = plugins_and_gateway(
        tmp_path,
        wasm_plugin("a", url="oci://registry.example.com/team/a:v1"),
        wasm_plugin("b", url="oci://registry.example.com/team/b:v2"),
    )
    # The gateway as the dump's node says it is, listening on 8080 (a Service's targetPort).
    gateway = GatewayFacts(
        labels=facts.node_labels,
        namespace=facts.node_namespace,
        listen_ports=[ListenPort(80, 8080, "tier2/gw")],
    )
    inputs = DoctorInput(
        plugins=plugins,
        gateway=gateway,
        dump=facts,
        log=log,
        agent_log=istio_agent_failures([line.message for line in log]),
    )
    found = by_plugin(diagnose(inputs))
    a, b = found["tier2/a"], found["tier2/b"]
    assert (a.status, b.status, b.reason) == ("running", "fetch-failed", "not-found")
    assert a.module_sha256.startswith(f"checksum {CHECKSUM} (Istio's cache key")
    assert a.position == "HTTP filter 2 of 4 on 0.0.0.0_8080 (after istio.metadata_exchange, before tier2/b)"
    assert "MANIFEST_UNKNOWN" in b.summary
    assert b.stand_in is not None
    assert b.stand_in["effect"] == "deny"
    assert b.stand_in["requests"] is None
    assert b.fix.startswith("push the module under that tag")


def test_a_dump_alone_still_says_what_runs() -> None:
    found = by_plugin(diagnose(DoctorInput(dump=parse_config_dump(istioctl_dump()))))
    assert found["tier2/a"].status == "running"
    assert (found["tier2/b"].status, found["tier2/b"].reason) == ("stand-in", "unknown")
    assert "--log" in found["tier2/b"].fix


def test_not_a_config_dump_nor_stats() -> None:
    with pytest.raises(DumpError, match="expected a JSON object with a `configs` list"):
        parse_config_dump({"stats": []})
    with pytest.raises(DumpError, match="Prometheus"):
        parse_stats("# TYPE envoy_server_live gauge\nenvoy_server_live 1\n")


def test_stats_text_and_json() -> None:
    text = (
        "http.l.rbac.wasm-default-deny.denied: 3\n"
        'extension_config_discovery.http_filter.x.version_text: ""\n'
        "http.l.downstream_rq_time: P0(nan,1) P25(nan,1)\n"
        "cluster.a.upstream_rq_time: No recorded values\n"
        "server.uptime: 12\n"
    )
    assert parse_stats(text) == {"http.l.rbac.wasm-default-deny.denied": 3, "server.uptime": 12}
    document = {"stats": [{"name": "a.b", "value": 2}, {"name": "v", "value": "text"}, {"histograms": {}}]}
    assert parse_stats(json.dumps(document)) == {"a.b": 2}


def test_plugin_names_from_filter_names() -> None:
    assert plugin_of_filter(A) == ("tier2", "a")
    assert plugin_of_filter("extensions.istio.io/wasmplugin/istio-system.auth") == ("istio-system", "auth")
    assert plugin_of_filter("envoy.filters.http.router") is None


def test_log_lines_in_envoys_default_format_are_local_time() -> None:
    (line,) = parse_log(
        ["[2026-08-27 10:00:00.500][4242][critical][wasm] [source/x.cc:1] wasm log a: invalid configuration"]
    )
    assert (line.thread, line.level, line.component) == ("4242", "critical", "wasm")
    assert line.message == "wasm log a: invalid configuration"
    assert line.time == datetime(2026, 8, 27, 10, 0, 0, 500000).astimezone(UTC)


def envoy_line(time: str, thread: str, level: str, message: str) -> str:
    return f"[2026-08-27 {time}][{thread}][{level}][wasm] [source/extensions/common/wasm/x.cc:1] {message}"


def test_refusals_are_paired_with_their_plugin_even_without_a_root_id() -> None:
    # Envoy writes "wasm log: ..." for a plugin without root_id; the next "Plugin <name> failed to
    # load" on the same thread names it.
    log = parse_log(
        [
            envoy_line(
                "10:00:00.100", "1", "critical", "wasm log: invalid configuration: configuration is empty"
            ),
            envoy_line("10:00:00.100", "1", "error", "Wasm VM failed Failed to configure base Wasm plugin"),
            envoy_line(
                "10:00:00.101", "1", "critical", "Plugin tier2.x~istio-translated-wasmplugin failed to load"
            ),
            envoy_line("10:00:00.200", "1", "critical", "wasm log y: invalid configuration: path: bad"),
            envoy_line(
                "10:00:00.201", "1", "critical", "Plugin tier2.y~istio-translated-wasmplugin failed to load"
            ),
        ]
    )
    x = refused_config_lines(log, "tier2.x~istio-translated-wasmplugin")
    y = refused_config_lines(log, "tier2.y~istio-translated-wasmplugin")
    assert [line.message for line in x] == ["wasm log: invalid configuration: configuration is empty"]
    assert [line.message for line in y] == ["wasm log y: invalid configuration: path: bad"]


def ecds_stats(name: str, **values: int) -> dict[str, int]:
    return {f"extension_config_discovery.http_filter.{name}.{k}": v for k, v in values.items()}


def test_a_refused_update_over_a_good_config_leaves_the_good_one_running() -> None:
    dump = dump_of(
        listeners=[listener("l_80", [A])],
        filters=[ecds(A, wasm("tier2.a~istio-translated-wasmplugin", "/m.wasm"), "2026-08-27T10:00:05.000Z")],
    )
    accepted_ms = int(datetime(2026, 8, 27, 10, 0, 0, tzinfo=UTC).timestamp() * 1000)
    stats = ecds_stats(A, update_success=1, update_rejected=1, config_fail=1, update_time=accepted_ms)
    log = parse_log(
        [
            envoy_line("10:00:05.010", "1", "critical", "wasm log a: invalid configuration: path: bad"),
            envoy_line(
                "10:00:05.011", "1", "critical", "Plugin tier2.a~istio-translated-wasmplugin failed to load"
            ),
        ]
    )
    found = by_plugin(diagnose(DoctorInput(dump=parse_config_dump(dump), stats=stats, log=log)))["tier2/a"]
    assert (found.status, found.reason) == ("config-refused", "previous-config")
    assert "runs the one it accepted at 10:00:00: invalid configuration: path: bad." in found.summary
    # The same dump, the update accepted: running.
    stats = ecds_stats(A, update_success=2, config_fail=1, update_time=accepted_ms + 5000)
    found = by_plugin(diagnose(DoctorInput(dump=parse_config_dump(dump), stats=stats, log=log)))["tier2/a"]
    assert found.status == "running"


def test_a_config_refused_from_the_start() -> None:
    dump = dump_of(
        listeners=[listener("l_80", [A])],
        filters=[ecds(A, wasm("tier2.a~istio-translated-wasmplugin", "/m.wasm"))],
    )
    stats = ecds_stats(A, update_success=0, update_rejected=1, config_fail=1)
    found = by_plugin(diagnose(DoctorInput(dump=parse_config_dump(dump), stats=stats)))["tier2/a"]
    assert (found.status, found.reason) == ("config-refused", "never-loaded")


TRAP = "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"


def test_a_trap_is_pinned_to_the_plugin_whose_listener_failed() -> None:
    dump = dump_of(
        listeners=[listener("l_80", [A]), listener("l_81", [B])],
        filters=[
            ecds(A, wasm("tier2.a~istio-translated-wasmplugin", "/a.wasm")),
            ecds(B, wasm("tier2.b~istio-translated-wasmplugin", "/b.wasm")),
        ],
    )
    log = parse_log([envoy_line("10:00:10.000", "7", "error", TRAP)])
    stats = {"http.l_80.downstream_rq_5xx": 0, "http.l_81.downstream_rq_5xx": 2}
    found = by_plugin(diagnose(DoctorInput(dump=parse_config_dump(dump), stats=stats, log=log)))
    assert found["tier2/a"].status == "running"
    b = found["tier2/b"]
    assert (b.status, b.reason) == ("vm-crashed", "trap")
    assert f"its VM trapped: {TRAP}; fail closed: requests through it get 503 (2 5xx" in b.summary
    # Both listeners failing: Envoy's line names no plugin, so doctor says it is one of the two.
    stats["http.l_80.downstream_rq_5xx"] = 1
    found = by_plugin(diagnose(DoctorInput(dump=parse_config_dump(dump), stats=stats, log=log)))
    assert "it is this one or tier2/b" in found["tier2/a"].summary
    assert "it is this one or tier2/a" in found["tier2/b"].summary
    # A trap from before the plugin's last update is history, not its state.
    log = parse_log([envoy_line("09:59:00.000", "7", "error", TRAP)])
    found = by_plugin(diagnose(DoctorInput(dump=parse_config_dump(dump), stats=stats, log=log)))
    assert found["tier2/b"].status == "running"


def test_fail_reload_reloads_are_a_crash_without_any_log() -> None:
    dump = dump_of(
        listeners=[listener("l_80", [A])],
        filters=[ecds(A, wasm("tier2.a~istio-translated-wasmplugin", "/a.wasm", policy="FAIL_RELOAD"))],
    )
    stats = {"wasm.tier2.a~istio-translated-wasmplugin.vm_reload_success": 2}
    found = by_plugin(diagnose(DoctorInput(dump=parse_config_dump(dump), stats=stats)))["tier2/a"]
    assert (found.status, found.reason) == ("vm-crashed", "trap")
    assert (
        "fail reload: Envoy reloads the VM (wasm.tier2.a~istio-translated-wasmplugin.vm_reload_success = 2)"
        in (found.summary)
    )


def test_stand_ins_say_what_they_let_through_or_denied() -> None:
    dump = dump_of(
        listeners=[listener("l_80", [A, B])],
        filters=[ecds(A, r.rbac_filter_config(allow=True)), ecds(B, r.rbac_filter_config(allow=False))],
    )
    stats = {"http.l_80.downstream_rq_total": 9, "http.l_80.rbac.wasm-default-deny.denied": 4}
    agent = {
        "tier2/a": AgentRecord(
            "tier2/a", "oci://r/a:v1", None, None, "cannot reach registry r: connection refused"
        ),
    }
    found = by_plugin(diagnose(DoctorInput(dump=parse_config_dump(dump), stats=stats, agent=agent)))
    a, b = found["tier2/a"], found["tier2/b"]
    assert (a.status, a.reason) == ("fetch-failed", "unreachable")
    assert a.stand_in == {
        "policy": "FAIL_OPEN",
        "effect": "allow",
        "requests": 9,
        "counters": ["http.l_80.downstream_rq_total = 9"],
        "text": "Fail open: requests pass without it (9 requests through its listener(s) so far).",
    }
    assert (b.status, b.reason) == ("stand-in", "unknown")
    assert b.stand_in is not None
    assert b.stand_in["requests"] == 4
    assert "Fail closed: requests are denied (4 denied by it so far)." in b.summary


# ----- fetch reasons


@pytest.mark.parametrize(
    ("message", "code"),
    [
        # meshwasm's agent (the words e2e/test_doctor.py sees)
        ("127.0.0.1:41000 is not on the fetcher's allowlist; add it to `allow` in the config", "allowlist"),
        ("cannot reach registry 127.0.0.1:33191: connection refused", "unreachable"),
        ("cannot resolve registry.unreachable.invalid: [Errno -2] Name or service not known", "unreachable"),
        ("image 127.0.0.1:4384/doctor/add-header:no-such-tag not found in 127.0.0.1:4384", "not-found"),
        (
            "fetching manifest of 127.0.0.1:5273/doctor/add-header:v1: registry 127.0.0.1:5273 requires"
            " credentials and none were given (HTTP 401)",
            "auth",
        ),
        (
            "module from oci://r/m:pinned has sha256 9bb7, but the WasmPlugin pins 0000",
            "digest-mismatch",
        ),
        (
            "127.0.0.1:4384/signing/unsigned@sha256:625e is not signed: there is no sha256-625e.sig in"
            " 127.0.0.1:4384/signing/unsigned",
            "signature",
        ),
        (
            "cannot fetch Wasm module tier2/x: missing image pulling secret (Secret tier2/creds not found)",
            "pull-secret",
        ),
        # through the wasmfetcher: its code decides, whatever the words
        (
            "http://127.0.0.1:5949/fetch/b2Np answered 404: image r/m:x not found in r\n  hint: check the"
            " repository and tag [image_not_found]",
            "not-found",
        ),
        ("http://f/fetch/x answered 403: r/m is not signed [signature_missing]", "signature"),
        (
            "http://f/fetch/x answered 413: http://h/m.wasm is over the 10-byte module cap"
            " [module_too_large]",
            "too-large",
        ),
        (
            "http://f/fetch/x answered 502: cannot reach registry r: refused [registry_unavailable]",
            "unreachable",
        ),
        ("http://f/fetch/x answered 502: fetching manifest: 401 [registry_auth_failed]", "auth"),
        ("http://f/fetch/x answered 403: r is not on the fetcher's allowlist [not_allowed]", "allowlist"),
        # Istio's agent (pkg/wasm and go-containerregistry)
        ("could not fetch Wasm OCI image: GET https://r/v2/: UNAUTHORIZED: authentication required", "auth"),
        (
            'could not fetch Wasm OCI image: Get "https://r/v2/": dial tcp 10.0.0.1:443: connect:'
            " connection refused",
            "unreachable",
        ),
        (
            "module downloaded from oci://r/m:v1 has checksum abc, which does not match: def",
            "digest-mismatch",
        ),
        ("something nobody foresaw", "other"),
    ],
)
def test_fetch_reasons(message: str, code: str) -> None:
    assert classify_fetch_error(message).code == code


def test_ups_own_output_is_an_agent_log() -> None:
    lines = [
        "resolving module for tier2/a: http://127.0.0.1:1/fetch/x",
        "  plugin tier2/a failed: http://127.0.0.1:1/fetch/x answered 404: image r/m:x not found in r",
        "  hint: check the repository and tag [image_not_found]; requests are denied with 403 (fail closed)",
        "  plugin tier2/b failed: cannot reach registry r: connection refused; requests pass without it"
        " (fail open)",
    ]
    failures = up_agent_failures(lines)
    assert [(f.what, f.stand_in) for f in failures] == [("tier2/a", "deny"), ("tier2/b", "allow")]
    assert failures[0].error.endswith("check the repository and tag [image_not_found]")
    assert classify_fetch_error(failures[0].error).code == "not-found"


# ----- up's record and the output


def test_ups_record_round_trips(tmp_path: Path) -> None:
    resolutions = [
        Resolution("tier2/a", "oci://r/a:v1", "/c/a.wasm", "ab" * 32),
        Resolution("tier2/b", "oci://r/b:v1", None, None, error="boom"),
    ]
    record = up_record(
        resolutions, envoy_log=tmp_path / "envoy.log", tree=tmp_path, labels=LABELS, namespace="tier2"
    )
    assert json.loads(json.dumps(record))["workload"] == {"labels": LABELS, "namespace": "tier2"}
    records = agent_records(record)
    assert records["tier2/a"] == AgentRecord("tier2/a", "oci://r/a:v1", "/c/a.wasm", "ab" * 32, None)
    assert records["tier2/b"].error == "boom"


def test_text_and_json_output() -> None:
    finding = Finding("tier2/a", "not-selected", "labels", "its selector does not match.", "set it", ["ev"])
    assert render_text([finding]) == "tier2/a: not selected: its selector does not match. Fix: set it\n    ev"
    assert (
        render_text([finding], evidence=False)
        == "tier2/a: not selected: its selector does not match. Fix: set it"
    )
    (entry,) = to_json([finding])["findings"]
    assert entry["running"] is False
    assert entry["reason"] == "labels"
    assert entry["evidence"] == ["ev"]


# ----- the evidence a user points at


def test_bad_evidence_is_named(tmp_path: Path) -> None:
    from meshwasm.errors import ExitCode, MeshwasmError, UsageError
    from meshwasm.gateway.doctor_inputs import gather

    options: dict[str, Any] = {
        "tree": None,
        "admin": None,
        "config_dump": None,
        "stats": None,
        "logs": [],
        "gateway": None,
        "state_file": tmp_path / "up-state.json",
    }
    with pytest.raises(MeshwasmError, match="no running gateway found") as missing:
        gather(**options)
    assert missing.value.exit_code == ExitCode.NOT_FOUND
    with pytest.raises(UsageError, match="--stats goes with --config-dump"):
        gather(**{**options, "stats": tmp_path / "stats.txt"})
    not_a_dump = tmp_path / "dump.json"
    not_a_dump.write_text('{"stats": []}')
    with pytest.raises(UsageError, match="not an Envoy config dump"):
        gather(**{**options, "config_dump": not_a_dump})
    not_json = tmp_path / "dump.txt"
    not_json.write_text("server.uptime: 3\n")
    with pytest.raises(UsageError, match="not JSON"):
        gather(**{**options, "config_dump": not_json})


def test_saved_files_with_a_tree_and_no_gateway_in_it(tmp_path: Path) -> None:
    """A cluster's case: the WasmPlugins alone, the dump's node and listeners for the gateway."""
    from meshwasm.gateway.doctor_inputs import gather

    dump, log = tmp_path / "dump.json", tmp_path / "proxy.log"
    dump.write_text(json.dumps(istioctl_dump()))
    log.write_text("\n".join(ISTIO_LOG) + "\n")
    tree = tmp_path / "plugins.yaml"
    tree.write_text(
        "\n---\n".join(
            [
                wasm_plugin("a", url="oci://registry.example.com/team/a:v1"),
                wasm_plugin(
                    "b", url="oci://registry.example.com/team/b:v2", match=[{"ports": [{"number": 8080}]}]
                ),
                wasm_plugin("c", selector={"matchLabels": {"app": "other"}}),
            ]
        )
    )
    gathered = gather(
        tree=tree,
        admin=None,
        config_dump=dump,
        stats=None,
        logs=[log],
        gateway=None,
        state_file=tmp_path / "x",
    )
    assert any("listen ports from the dump [8080]" in note for note in gathered.notes)
    assert any("no --stats" in note for note in gathered.notes)
    found = by_plugin(diagnose(gathered.inputs))
    assert {k: (f.status, f.reason) for k, f in found.items()} == {
        "tier2/a": ("running", ""),
        "tier2/b": ("fetch-failed", "not-found"),
        "tier2/c": ("not-selected", "labels"),
        "order:tier2/a": ("ordering", "tie-break"),
    }
    assert found["order:tier2/a"].evidence == ["0.0.0.0_8080 runs them in this order"]


def test_the_wasmfetchers_log_says_why_a_pull_through_it_failed() -> None:
    from meshwasm.gateway.fetch_reasons import fetched_url, fetcher_code, fetcher_log_results

    log = [
        "ts=2026-11-30T00:18:14.068Z level=info logger=meshwasm.fetcher event=pull kind=oci reason=miss"
        " registry=r:5000 image=team/m tag=latest digest=sha256:2f37 result=ok duration_ms=89.5 size=44078",
        "ts=2026-11-30T00:19:12.214Z level=warning logger=meshwasm.fetcher event=pull kind=oci reason=miss"
        " registry=r:5000 image=team/m tag=v2 digest=- result=image_not_found duration_ms=5.5 size=0",
        "ts=2026-11-30T00:19:13.000Z level=warning logger=meshwasm.fetcher event=signature_refused"
        " image=r:5000/team/unsigned digest=sha256:abcd reason=unsigned",
    ]
    results = fetcher_log_results(log)
    assert results == {
        "oci://r:5000/team/m:v2": "image_not_found",
        "oci://r:5000/team/unsigned": "signature_unsigned",
    }
    fetch = "http://127.0.0.1:56083/fetch/b2NpOi8vcjo1MDAwL3RlYW0vbTp2Mg=="  # oci://r:5000/team/m:v2
    assert fetched_url(fetch) == "oci://r:5000/team/m:v2"
    assert fetcher_code(fetch, results) == "image_not_found"
    assert fetcher_code("oci://r:5000/team/unsigned:v1", results) == "signature_unsigned"
    assert fetcher_code("oci://r:5000/team/m:latest", results) is None
    # Istio's http fetcher keeps only the status; the fetcher's code says more, and wins.
    istio = (
        f"cannot fetch Wasm module {fetch}: wasm module download failed after 1 attempts, last error:"
        " wasm module download request failed: status code 403"
    )
    assert classify_fetch_error(istio).code == "refused"
    assert classify_fetch_error(istio, "signature_unsigned").code == "signature"
    assert classify_fetch_error(istio.replace("403", "404")).code == "not-found"
    assert classify_fetch_error(istio.replace("403", "502")).code == "upstream-failed"
