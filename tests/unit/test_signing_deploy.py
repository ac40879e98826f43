"""The signature policy's way into a cluster: render's ConfigMap and deploy/fetcher's mount agree."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fixtures.oci_modules import run_meshwasm
from meshwasm.fetcher.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "fetcher"


def test_deploy_mounts_the_configmap_where_the_config_would_read_the_policy() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    (deployment,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    # The switch is commented out in config.yaml (no policy by default); turned on, it names a
    # file in the mounted ConfigMap that `meshwasm render --require-signature` writes.
    text = (DEPLOY / "config.yaml").read_text()
    match = re.search(r"^# (require_signature_file: .*)$", text, re.MULTILINE)
    assert match is not None
    assert load_config(DEPLOY / "config.yaml").require_signature_file is None
    enabled = yaml.safe_load(match.group(1))
    policy = Path(enabled["require_signature_file"])
    volume = volumes[mounts[str(policy.parent)]]
    assert volume["configMap"]["name"] == "wasmfetcher-signatures"
    assert policy.name == "policy.yaml"
    # Not nested in the config ConfigMap's read-only mount.
    assert not str(policy.parent).startswith("/etc/wasmfetcher/")


def test_render_refuses_the_policy_for_envoy_output_and_bad_flags(repo_root: Path, tmp_path: Path) -> None:
    tree = str(repo_root / "tsb")
    done = run_meshwasm("render", tree, "--to", "envoy", "--require-signature", "reg.example.com=k.pub")
    assert done.returncode == 2
    assert "use it with --to istio" in done.stderr
    done = run_meshwasm("render", tree, "--require-signature", "reg.example.com")
    assert done.returncode == 2
    assert "SCOPE=PUBLIC_KEY_FILE" in done.stderr
    done = run_meshwasm("render", tree, "--require-signature", f"reg.example.com={tmp_path / 'none.pub'}")
    assert done.returncode == 2
    assert "cannot read public key" in done.stderr


def test_render_to_stdout_appends_the_configmap(repo_root: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "k.pub").write_bytes(pem)
    plain = run_meshwasm("render", str(repo_root / "tsb"))
    done = run_meshwasm(
        "render", str(repo_root / "tsb"), "--require-signature", f"Reg.Example.com/Team={tmp_path / 'k.pub'}"
    )
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all(done.stdout))
    assert docs[:-1] == list(yaml.safe_load_all(plain.stdout))  # the Istio output is unchanged
    policy = yaml.safe_load(docs[-1]["data"]["policy.yaml"])
    assert policy == {"require_signature": [{"scope": "reg.example.com/team", "public_keys": [pem.decode()]}]}
