"""deploy/fetcher: the rendered Kubernetes objects and the image definition agree with the service."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshwasm.fetcher.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "fetcher"


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    if kustomize:
        argv = [kustomize, "build", str(DEPLOY)]
    elif kubectl:
        argv = [kubectl, "kustomize", str(DEPLOY)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed")
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out) if d}


def the(rendered: dict[str, dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    found = [d for key, d in rendered.items() if key.startswith(f"{kind}/{prefix}")]
    assert len(found) == 1, sorted(rendered)
    return found[0]


def test_everything_is_in_istio_system(rendered: dict[str, dict[str, Any]]) -> None:
    assert {d["metadata"]["namespace"] for d in rendered.values()} == {"istio-system"}


def test_service_port_80_reaches_the_container_port(rendered: dict[str, dict[str, Any]]) -> None:
    service = the(rendered, "Service", "wasmfetcher")
    deployment = the(rendered, "Deployment", "wasmfetcher")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["targetPort"] in named
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["metadata"]["labels"]["app"] == "wasmfetcher"  # the seed's `kubectl logs -l app=wasmfetcher`


def test_probes_resources_and_hardening(rendered: dict[str, dict[str, Any]]) -> None:
    pod = the(rendered, "Deployment", "wasmfetcher")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_config_cache_volume_and_credentials_fit_together(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    pod = the(rendered, "Deployment", "wasmfetcher")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    configmap = the(rendered, "ConfigMap", "wasmfetcher-config")
    # The config the pod reads is the one the ConfigMap holds, and it is valid.
    config_arg = container["args"][container["args"].index("--config") + 1]
    config_dir = str(Path(config_arg).parent)
    assert volumes[mounts[config_dir]]["configMap"]["name"] == configmap["metadata"]["name"]
    (tmp_path / "config.yaml").write_text(configmap["data"][Path(config_arg).name])
    config = load_config(tmp_path / "config.yaml")
    assert config.port in [p["containerPort"] for p in container["ports"]]
    # The cache lives on a writable emptyDir (the root filesystem is read-only).
    assert "emptyDir" in volumes[mounts[str(config.cache.dir)]]
    # Registry credentials come from a dockerconfigjson Secret mounted where the config looks.
    assert config.credentials.docker_config is not None
    secret_volume = volumes[mounts[str(config.credentials.docker_config.parent)]]["secret"]
    assert [i["key"] for i in secret_volume["items"]] == [config.credentials.docker_config.name]
    assert config.security.allow_loopback is False


def test_dockerfile_runs_the_fetcher_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "meshwasm.fetcher"]' in text
    user = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert user
    assert not user[-1].startswith(("0", "root"))


def test_the_shipped_config_refuses_private_and_link_local_addresses_and_allows_each_hop() -> None:
    import ipaddress

    from meshwasm.fetcher.errors import Forbidden
    from meshwasm.fetcher.security import AddressGuard, Allowlist, parse_networks

    config = load_config(DEPLOY / "config.yaml")
    guard = AddressGuard(
        blocked=parse_networks(config.security.blocked_cidrs),
        allowed=parse_networks(config.security.allowed_cidrs),
        allow_loopback=config.security.allow_loopback,
    )
    for address in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "100.64.0.10", "fd00::1", "169.254.169.254",
                    "169.254.10.1", "fe80::1", "127.0.0.1", "::ffff:10.0.0.1"):  # fmt: skip
        with pytest.raises(Forbidden):
            guard.check_addresses("registry.example", [ipaddress.ip_address(address)])
    guard.check_addresses("ghcr.io", [ipaddress.ip_address("140.82.112.33")])
    # The hops of a Docker Hub and a GitHub pull (token realm, blob storage) are allowed.
    allow = Allowlist.of(config.allow)
    for host in ("auth.docker.io", "production.cloudflare.docker.com", "ghcr.io",
                 "pkg-containers.githubusercontent.com"):  # fmt: skip
        assert allow.allows(host, host), host
    # The cache volume holds the modules and the pulls in progress.
    assert config.cache.max_bytes is not None
    assert config.cache.max_staging_bytes is not None
    assert config.cache.max_bytes + config.cache.max_staging_bytes < 2 * 1024**3
