"""`meshwasm up`'s module resolution with an imagePullSecret: the Secret comes from the tree or from
``--pull-secret``; without it the fetch fails (the failStrategy applies), as in Istio.

Runs the gateway's resolution step against a real registry that needs a login; Envoy is not
needed for this (tests/fidelity/test_agent_plugins.py compares the same rules with Istio's code).
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from fixtures.oci_modules import synthetic_module
from fixtures.registry import AuthedRegistry
from meshwasm.gateway.agent import ModuleAgent
from meshwasm.gateway.runner import LocalGateway, UpOptions
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.credentials import Credentials
from meshwasm.oci.image import build_image
from meshwasm.oci.reference import parse_reference

pytestmark = pytest.mark.registry

MODULE = synthetic_module(2048, seed=41)


def secret_manifest(auth: AuthedRegistry, *, password: str | None = None) -> str:
    login = base64.b64encode(f"{auth.username}:{password or auth.password}".encode()).decode()
    config = json.dumps({"auths": {auth.address: {"auth": login}}})
    return (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: tier2\n"
        "type: kubernetes.io/dockerconfigjson\n"
        f"data:\n  .dockerconfigjson: {base64.b64encode(config.encode()).decode()}\n"
    )


@pytest.fixture
def tree(tmp_path: Path, repo_root: Path, auth_registry: AuthedRegistry) -> Path:
    """The seed's tree, its image on the auth registry, naming imagePullSecret regcred."""
    tree = tmp_path / "tsb"
    shutil.copytree(repo_root / "tsb", tree)
    ext = tree / "wasm-extension.yaml"
    text = ext.read_text().replace("127.0.0.1:5000", auth_registry.address)
    text = text.replace("../plugins/add-header", str(repo_root / "plugins" / "add-header"))
    ext.write_text(
        text.replace("  imagePullPolicy: Always\n", "  imagePullPolicy: Always\n  imagePullSecret: regcred\n")
    )
    url = next(line.split("url: ", 1)[1] for line in text.splitlines() if "url: oci://" in line)
    credentials = Credentials.explicit(auth_registry.username, auth_registry.password, auth_registry.address)
    with RegistryClient(credentials=credentials) as client:
        client.push_image(build_image(MODULE), parse_reference(url))
    return tree


def resolve(
    tree: Path, tmp_path: Path, auth: AuthedRegistry, *files: Path
) -> tuple[dict[str, str], list[str]]:
    said: list[str] = []
    gateway = LocalGateway(
        UpOptions(tree=tree, use_fetcher=False, pull_secret_files=list(files)), said.append
    )
    try:
        gateway.agent = ModuleAgent(tmp_path / "cache", allowed_hosts=[auth.address])
        return gateway.resolve_modules(gateway.render().istio, forced=set()), said
    finally:
        gateway.stop()


def test_the_secret_in_the_tree_authenticates_the_pull(
    tree: Path, tmp_path: Path, auth_registry: AuthedRegistry
) -> None:
    (tree / "tier2" / "pull-secret.yaml").write_text(secret_manifest(auth_registry))
    kustomization = tree / "tier2" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "  - pull-secret.yaml\n")
    files, said = resolve(tree, tmp_path, auth_registry)
    (path,) = files.values()
    assert Path(path).read_bytes() == MODULE, said


def test_a_secret_given_to_up_authenticates_the_pull(
    tree: Path, tmp_path: Path, auth_registry: AuthedRegistry
) -> None:
    given = tmp_path / "regcred.yaml"
    given.write_text(secret_manifest(auth_registry))
    files, said = resolve(tree, tmp_path, auth_registry, given)
    (path,) = files.values()
    assert Path(path).read_bytes() == MODULE, said


def test_a_missing_or_wrong_secret_fails_the_fetch_and_the_fail_strategy_applies(
    tree: Path, tmp_path: Path, auth_registry: AuthedRegistry
) -> None:
    files, said = resolve(tree, tmp_path, auth_registry)
    assert files == {}
    assert any(
        "missing image pulling secret" in line and "no Secret tier2/regcred" in line for line in said
    ), said
    assert any("denied with 403 (fail closed)" in line for line in said)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(secret_manifest(auth_registry, password="not-the-password"))
    files, said = resolve(tree, tmp_path, auth_registry, wrong)
    assert files == {}
    assert any("failed" in line for line in said), said
