"""The gateway agent's pure parts and local sources (registry and fetcher paths run in tests/e2e)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from meshwasm.gateway.agent import ModuleAgent, pull_policy
from meshwasm.manifests import istio

MODULE = b"\0asm\x01\0\0\0"


def plugin(url: str, *, policy: str | None = None, sha256: str | None = None) -> istio.WasmPlugin:
    spec: dict[str, object] = {"url": url}
    if policy:
        spec["imagePullPolicy"] = policy
    if sha256:
        spec["sha256"] = sha256
    return istio.WasmPlugin.model_validate(
        {
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": spec,
        }
    )


@pytest.mark.parametrize(
    ("url", "policy", "expected"),
    [
        ("oci://r.example/team/m:latest", None, "Always"),
        ("oci://r.example/team/m:v1", None, "IfNotPresent"),
        ("oci://r.example/team/m@sha256:" + "0" * 64, None, "IfNotPresent"),
        # Untagged is not ":latest" for Istio's policy (tests/fidelity/test_agent_pull_policy.py
        # shows Istio's agent keeping the cached module); the port is not a tag.
        ("oci://127.0.0.1:5000/team/m", None, "IfNotPresent"),
        ("r.example/team/m:latest", None, "Always"),  # no scheme means oci://
        ("oci://127.0.0.1:5000/team/m:v2", None, "IfNotPresent"),
        ("oci://r.example/team/m:v1", "Always", "Always"),
        ("http://fetcher/fetch/abc", None, "IfNotPresent"),
    ],
)
def test_pull_policy_as_istio(url: str, policy: str | None, expected: str) -> None:
    assert pull_policy(plugin(url, policy=policy)) == expected


def test_file_url_is_used_in_place_and_checked(tmp_path: Path) -> None:
    agent = ModuleAgent(tmp_path / "cache", allowed_hosts=[])
    good = tmp_path / "m.wasm"
    good.write_bytes(MODULE)
    result = agent.resolve(plugin(f"file://{good}", sha256=hashlib.sha256(MODULE).hexdigest()))
    assert result.path == str(good)
    assert result.error is None

    wrong = agent.resolve(plugin(f"file://{good}", sha256="1" * 64))
    assert wrong.path is None
    assert "expected 1111" in (wrong.error or "")

    text = tmp_path / "m.txt"
    text.write_text("hello")
    assert "not a wasm module" in (agent.resolve(plugin(f"file://{text}")).error or "")
    assert "cannot read" in (agent.resolve(plugin(f"file://{tmp_path}/missing.wasm")).error or "")


def test_hosts_off_the_allowlist_are_refused_without_a_connection(tmp_path: Path) -> None:
    agent = ModuleAgent(tmp_path / "cache", allowed_hosts=["127.0.0.1:1"])
    result = agent.resolve(plugin("http://169.254.169.254/latest/meta-data/module.wasm"))
    assert result.path is None
    assert "allowlist" in (result.error or "")
    assert not list((tmp_path / "cache").glob("*/*.wasm"))


def test_a_file_url_naming_a_fifo_or_a_device_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A FIFO would block the agent (and `up`) and /dev/zero never ends: regular files only."""
    agent = ModuleAgent(tmp_path / "cache", allowed_hosts=[])
    fifo = tmp_path / "m.wasm"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        result = agent.resolve(plugin(f"file://{path}"))
        assert result.path is None
        assert "not a regular file" in (result.error or ""), result.error
