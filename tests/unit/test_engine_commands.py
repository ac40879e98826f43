"""The real engine's command lines: every port explicit (none of the components' fixed defaults),
the istiod settings that make its output acceptable to upstream Envoy, the gateway's identity."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from meshwasm.engine import commands as cmd
from meshwasm.engine import workloads as wl

# Defaults of etcd, kube-apiserver, istiod, pilot-agent and Envoy that would clash between engineers.
FIXED_DEFAULTS = {2379, 2380, 6443, 8080, 9876, 15000, 15010, 15012, 15014, 15017, 15020, 15021, 15053, 15090}


def _ports() -> cmd.Ports:
    numbers = iter(range(41001, 41100))
    values = {f.name: next(numbers) for f in fields(cmd.Ports) if f.name != "gateway"}
    return cmd.Ports(**values, gateway={80: 41200})


def _numbers(text: str) -> set[int]:
    import re

    return {int(n) for n in re.findall(r"(?<![\d.])(\d{4,5})(?!\d)", text)}


def test_every_listening_port_is_the_chosen_one() -> None:
    ports = _ports()
    identity = cmd.GatewayIdentity("tier2", "tier2-gateway", {"app": "tier2-gateway"}, "127.0.0.2")
    text = " ".join(
        [
            *cmd.etcd_argv(Path("/bin/etcd"), Path("/d"), ports),
            *cmd.apiserver_argv(Path("/bin/kube-apiserver"), Path("/pki"), ports),
            *cmd.istiod_argv(Path("/bin/pilot-discovery"), Path("/k"), Path("/m"), ports),
            cmd.mesh_config(ports),
            json.dumps(cmd.agent_env(ports, identity, envoy=Path("/bin/envoy"), config_dir=Path("/c"))),
        ]
    )
    used = _numbers(text)
    assert not used & FIXED_DEFAULTS
    listeners = [f.name for f in fields(cmd.Ports) if f.name not in ("gateway", "fetcher", "httpbin")]
    chosen = {getattr(ports, name) for name in listeners}
    assert chosen <= used, sorted(chosen - used)


def test_istiod_leaves_out_istio_proxy_only_filters() -> None:
    assert cmd.ISTIOD_ENV["PILOT_ENABLE_METADATA_EXCHANGE"] == "false"
    assert cmd.ISTIOD_ENV["PILOT_ENABLE_ALPN_FILTER"] == "false"
    # No telemetry provider: the Helm chart's `prometheus` default adds the istio.stats filter.
    assert "defaultProviders" not in cmd.mesh_config(_ports())


def test_the_agent_runs_as_the_trees_gateway() -> None:
    identity = cmd.GatewayIdentity("tier2", "tier2-gateway", {"app": "tier2-gateway"}, "127.0.0.2")
    ports = _ports()
    env = cmd.agent_env(ports, identity, envoy=Path("/venv/envoy"), config_dir=Path("/c"))
    assert env["POD_NAMESPACE"] == "tier2"
    assert json.loads(env["ISTIO_METAJSON_LABELS"]) == {"app": "tier2-gateway"}
    proxy = json.loads(env["PROXY_CONFIG"])
    assert proxy["binaryPath"] == "/venv/envoy"
    # xDS and the CA both over TLS on istiod's secure port, as a stock proxy.
    assert proxy["discoveryAddress"] == f"127.0.0.1:{ports.istiod_secure_grpc}"
    assert env["CA_ADDR"] == f"127.0.0.1:{ports.istiod_secure_grpc}"
    assert "controlPlaneAuthPolicy" not in proxy  # the default: mutual TLS
    assert cmd.agent_argv(Path("/a"), Path("/t"), identity)[1:3] == ["proxy", "router"]


def test_the_gateway_service_maps_gateway_ports_to_local_ones() -> None:
    service = wl.gateway_service("gw", "tier2", {"app": "gw"}, {80: 41200, 443: 41201})
    assert service["spec"]["ports"] == [
        {"name": "http-80", "port": 80, "targetPort": 41200, "protocol": "TCP"},
        {"name": "http-443", "port": 443, "targetPort": 41201, "protocol": "TCP"},
    ]
    entry = wl.workload_entry(
        "httpbin-local", "httpbin", address="127.0.0.1", labels={"app": "httpbin"}, ports={"http": 9}
    )
    assert entry["spec"] == {"address": "127.0.0.1", "labels": {"app": "httpbin"}, "ports": {"http": 9}}
