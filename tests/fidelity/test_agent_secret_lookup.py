"""Which Secret an imagePullSecret names and what istiod reads from it: Istio's credentials
controller (the oracle's ``credential`` question) against ``meshwasm.gateway.pull_secrets.lookup``.

Only ``kubernetes://`` references reach the lookup in istiod (other forms are dropped or read as
missing earlier; ``test_agent_plugins.py`` covers them end to end).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from fixtures.istio_agent import AgentSession
from meshwasm.errors import UsageError
from meshwasm.gateway import pull_secrets

CONFIG = '{"auths":{"registry.example.com":{"auth":"dTpw"}}}'


def secret(
    name: str, namespace: str = "gw", kind: str = "kubernetes.io/dockerconfigjson", **data: str
) -> dict[str, Any]:
    encoded = {k.replace("_", "."): base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": kind,
        "data": encoded,
    }


CASES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "right": ("pull", [secret("pull", _dockerconfigjson=CONFIG)]),
    "type-opaque": ("pull", [secret("pull", kind="Opaque", _dockerconfigjson=CONFIG)]),
    "older-dockercfg-type": ("pull", [secret("pull", kind="kubernetes.io/dockercfg", _dockercfg=CONFIG)]),
    "no-dockerconfigjson-key": ("pull", [secret("pull", config_json=CONFIG)]),
    "empty-value": ("pull", [secret("pull", _dockerconfigjson="")]),
    "other-namespace": ("pull", [secret("pull", namespace="other", _dockerconfigjson=CONFIG)]),
    "absent": ("pull", []),
    "namespace-in-the-name": ("other/pull", [secret("pull", _dockerconfigjson=CONFIG)]),
    "namespace-in-the-name-only-there": (
        "other/pull",
        [secret("pull", namespace="other", _dockerconfigjson=CONFIG)],
    ),
    "kubernetes-uri": ("kubernetes://pull", [secret("pull", _dockerconfigjson=CONFIG)]),
    "kubernetes-uri-with-namespace": ("kubernetes://other/pull", [secret("pull", _dockerconfigjson=CONFIG)]),
    "three-segments": ("a/pull/extra", [secret("pull", _dockerconfigjson=CONFIG)]),
}


@pytest.mark.parametrize("case", CASES)
def test_the_secret_read_is_the_one_istiod_reads(case: str, istio_agent: AgentSession) -> None:
    name, secrets = CASES[case]
    answer = istio_agent.ask("credential", secrets=secrets, name=name, namespace="gw")
    found = pull_secrets.lookup(name, "gw", secrets)
    credential = answer.get("credential")
    if credential:
        assert found.docker_config == credential.encode()
    else:  # not found, or empty: istiod sends an empty secret and the agent fails the fetch
        assert found.missing, f"Istio: {answer.get('error') or 'empty'}; meshwasm: {found}"
        assert found.problem


def test_secret_files_given_to_up_must_be_namespaced_secrets(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: pull, namespace: gw}\n"
        "type: kubernetes.io/dockerconfigjson\ndata: {.dockerconfigjson: e30=}\n"
    )
    (loaded,) = pull_secrets.load_secret_files([good])
    assert pull_secrets.lookup("pull", "gw", [loaded]).docker_config == b"{}"
    unnamespaced = tmp_path / "unnamespaced.yaml"
    unnamespaced.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: pull}\n")
    with pytest.raises(UsageError, match=r"needs metadata\.name and metadata\.namespace"):
        pull_secrets.load_secret_files([unnamespaced])
    config_map = tmp_path / "cm.yaml"
    config_map.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: gw}\n")
    with pytest.raises(UsageError, match="not a v1 Secret"):
        pull_secrets.load_secret_files([config_map])
    with pytest.raises(UsageError, match="cannot read"):
        pull_secrets.load_secret_files([tmp_path / "missing.yaml"])
