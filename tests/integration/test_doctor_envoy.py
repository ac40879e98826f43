"""`meshwasm doctor` on the session's Envoy with the real registry, wasmfetcher and agent: the fetch
refusals `meshwasm up` cannot be made to produce (its wasmfetcher has the default 256 MiB module
cap and no registry credentials of the user's choosing).

The wasmfetcher here caps modules at 16 KiB and has no credentials for the authenticated registry;
the gateway agent fetches both plugins through it, exactly as in `meshwasm up`, and the translated
config (with the failStrategy stand-ins) is served by the real Envoy.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from fixtures.oci_modules import synthetic_module
from fixtures.registry import AuthedRegistry
from meshwasm.envoy.runtime import FileXdsEnvoy
from meshwasm.fetcher.process import FetcherProcess
from meshwasm.gateway.agent import ModuleAgent
from meshwasm.gateway.doctor import AgentRecord, DoctorInput, GatewayFacts, diagnose
from meshwasm.gateway.dump_facts import parse_config_dump, parse_stats
from meshwasm.manifests import load
from meshwasm.net import free_port
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.credentials import Credentials
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference
from meshwasm.translate import IstioResources, fetcher_url, istio_to_envoy
from meshwasm.translate.istio_to_envoy import listen_ports

pytestmark = [pytest.mark.envoy, pytest.mark.registry]

LABELS = {"app": "doctor-edge"}
CAP = 16 * 1024


def gateway_and_plugins(fetcher: str, plugins: dict[str, tuple[str, str]]) -> list[dict[str, object]]:
    docs: list[dict[str, object]] = [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "doctor"},
            "spec": {
                "selector": LABELS,
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
            },
        }
    ]
    for name, (url, strategy) in plugins.items():
        docs.append(
            {
                "apiVersion": "extensions.istio.io/v1alpha1",
                "kind": "WasmPlugin",
                "metadata": {"name": name, "namespace": "doctor"},
                "spec": {"url": fetcher_url(url, fetcher), "failStrategy": strategy, "priority": 10},
            }
        )
    return docs


def test_the_wasmfetchers_size_cap_and_missing_credentials(
    envoy: FileXdsEnvoy, registry: LocalRegistry, auth_registry: AuthedRegistry, tmp_path: Path
) -> None:
    big = f"oci://{registry.address}/doctor-envoy/big:v1"
    authed = f"oci://{auth_registry.address}/doctor-envoy/small:v1"
    with RegistryClient() as client:
        client.push_image(build_image(synthetic_module(4 * CAP), variant="compat"), parse_reference(big))
    login = Credentials.explicit(auth_registry.username, auth_registry.password)
    with RegistryClient(credentials=login) as client:
        client.push_image(build_image(synthetic_module(1024), variant="compat"), parse_reference(authed))
    registries = [registry.address, auth_registry.address]
    fetcher = FetcherProcess(
        tmp_path / "fetcher",
        {
            "allow": registries,
            "insecure_registries": registries,
            "security": {"allow_loopback": True},
            "pull": {"max_module_bytes": CAP},
        },
    )
    fetcher.start()
    port = free_port()
    config = None
    try:
        source = tmp_path / "tree.yaml"
        plugins = {"over-cap": (big, "FAIL_CLOSE"), "needs-credentials": (authed, "FAIL_OPEN")}
        source.write_text("\n---\n".join(json.dumps(d) for d in gateway_and_plugins(fetcher.url, plugins)))
        resources = IstioResources.from_resources(load(source).resources)
        agent = ModuleAgent(tmp_path / "agent", allowed_hosts=[f"127.0.0.1:{fetcher.port}"])
        resolutions = [agent.resolve(plugin) for plugin in resources.wasm_plugins]
        assert not any(r.path for r in resolutions)
        config = istio_to_envoy(
            resources,
            workload_labels=LABELS,
            workload_namespace="doctor",
            module_files={},
            upstreams={},
            bind_address="127.0.0.1",
            port_map={80: port},
            xds=envoy.xds.ecds_source,
        )
        for extension_config in config.filters:
            envoy.set_filter(extension_config)
        (listener,) = config.listeners
        envoy.upsert_listener(listener)
        envoy.wait_listener_active(listener["name"])
        for extension_config in config.filters:
            envoy.wait_filter_applied(extension_config)
        statuses = [httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code for _ in range(2)]
        assert statuses == [403, 403]

        inputs = DoctorInput(
            plugins=resources.wasm_plugins,
            gateway=GatewayFacts(
                labels=LABELS,
                namespace="doctor",
                listen_ports=listen_ports(resources, workload_labels=LABELS, workload_namespace="doctor"),
                local_ports={80: port},
            ),
            agent={r.plugin: AgentRecord(r.plugin, r.url, r.path, r.sha256, r.error) for r in resolutions},
            dump=parse_config_dump(envoy.admin.config_dump()),
            stats=parse_stats(httpx.get(f"{envoy.admin.base}/stats", timeout=10).text),
        )
        found = {f.plugin: f for f in diagnose(inputs) if f.status != "ordering"}
    finally:
        fetcher.stop()
        if config is not None:
            for listener in config.listeners:
                envoy.remove_listener(listener["name"])
            for extension_config in config.filters:
                envoy.remove_filter(extension_config["name"])
    over, creds = found["doctor/over-cap"], found["doctor/needs-credentials"]
    assert (over.status, over.reason) == ("fetch-failed", "too-large")
    assert "answered 413" in over.summary
    assert "[module_too_large]" in over.summary
    assert over.stand_in is not None
    assert over.stand_in["requests"] == 2  # the two 403s, counted by the stand-in
    assert over.fix.startswith("shrink the module")
    assert (creds.status, creds.reason) == ("fetch-failed", "auth")
    assert "[registry_auth_failed]" in creds.summary
    assert creds.stand_in is not None
    assert creds.stand_in["effect"] == "allow"
    # Equal priorities (10): the tie-break is named, and the config runs them in that order.
    order = next(f for f in diagnose(inputs) if f.status == "ordering")
    assert (order.plugin, order.other) == ("doctor/needs-credentials", "doctor/over-cap")
    assert f"127.0.0.1_{port} runs them in this order" in order.evidence
