"""Pull policy: when Istio's agent (the oracle) and meshwasm's fetch a module again.

Each case is a script run against both agents step by step: push module A, resolve, push B
under the same tag (or over the same http file), resolve at the same resource version, resolve
at a new one. Istio re-pulls under ``Always`` only when the resource version changed; unset means
Always only for ``oci://...:latest`` (an untagged image is IfNotPresent); a digest-pinned URL
never changes; and the agent remembers, per WasmPlugin, the version that last asked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from fixtures.file_server import FileServer
from fixtures.istio_agent import AgentSession
from fixtures.oci_modules import synthetic_module
from fixtures.wasm_images import from_built, push
from meshwasm.gateway.agent import ModuleAgent
from meshwasm.manifests import istio
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry

pytestmark = pytest.mark.registry

MODULES = {"A": synthetic_module(2200, seed=21), "B": synthetic_module(2300, seed=22)}
NAMES = {hashlib.sha256(data).hexdigest(): name for name, data in MODULES.items()}
ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


def wasm_plugin(url: str, policy: str | None, name: str) -> istio.WasmPlugin:
    spec: dict[str, object] = {"url": url}
    if policy:
        spec["imagePullPolicy"] = policy
    return istio.WasmPlugin.model_validate(
        {
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        }
    )


# A script: ("push", module) or ("get", plugin name, resource version).
SIMPLE = [
    ("push", "A"),
    ("get", "p", "1"),
    ("push", "B"),
    ("get", "p", "1"),
    ("get", "p", "2"),
    ("get", "p", "2"),
]
# Two WasmPlugins on one URL: the agent remembers each one's version.
SHARED = [
    ("push", "A"),
    ("get", "p", "1"),
    ("get", "q", "1"),
    ("push", "B"),
    ("get", "p", "2"),
    ("get", "q", "1"),
    ("get", "q", "2"),
]
# The source fails when Always asks again: no module (the fallback filter), though one is cached;
# asked again at the same version, the agent serves the cached one.
FAILING = [("push", "A"), ("get", "p", "1"), ("delete",), ("get", "p", "2"), ("get", "p", "2")]
CASES = {
    # name: (url form, imagePullPolicy, script)
    "latest-unset": ("oci:latest", None, SIMPLE),
    "untagged-unset": ("oci:untagged", None, SIMPLE),
    "tagged-unset": ("oci:v1", None, SIMPLE),
    "tagged-always": ("oci:v1", "Always", SIMPLE),
    "latest-if-not-present": ("oci:latest", "IfNotPresent", SIMPLE),
    "digest-always": ("oci:digest", "Always", SIMPLE),
    "http-unset": ("http", None, SIMPLE),
    "http-always": ("http", "Always", SIMPLE),
    "latest-shared-by-two-plugins": ("oci:latest", None, SHARED),
    "latest-re-pull-fails": ("oci:latest", None, FAILING),
    "http-always-re-pull-fails": ("http", "Always", FAILING),
}


@pytest.mark.parametrize("case", CASES)
def test_modules_are_fetched_again_exactly_when_istio_fetches_them(
    case: str,
    registry: LocalRegistry,
    files: FileServer,
    istio_agent: AgentSession,
    tmp_path: Path,
) -> None:
    form, policy, script = CASES[case]
    repo = f"{registry.address}/policy/{case}"
    url = {
        "oci:latest": f"oci://{repo}:latest",
        "oci:untagged": f"oci://{repo}",
        "oci:v1": f"oci://{repo}:v1",
        "oci:digest": f"oci://{repo}@{from_built(build_image(MODULES['A'])).digest}",
        "http": f"http://{files.address}/{case}.wasm",
    }[form]
    agent = ModuleAgent(tmp_path / "cache", allowed_hosts=[registry.address, files.address])
    seen_istio, seen_meshwasm = [], []
    for step in script:
        if step[0] == "delete":
            if form == "http":
                (files.root / f"{case}.wasm").unlink()
            else:  # both tags name the one manifest: deleting it removes both
                api = f"http://{registry.address}/v2/policy/{case}/manifests"
                digest = httpx.head(f"{api}/latest", headers=ACCEPT).headers["Docker-Content-Digest"]
                httpx.delete(f"{api}/{digest}").raise_for_status()
            continue
        if step[0] == "push":
            module = MODULES[step[1]]
            if form == "http":
                (files.root / f"{case}.wasm").write_bytes(module)
            else:
                with RegistryClient() as client:
                    for tag in ("latest", "v1"):
                        push(client, from_built(build_image(module)), f"{repo}:{tag}")
            continue
        _, name, version = step
        fetched = istio_agent.get(url, resource=f"ns.{name}", version=version, policy=policy or "")
        resolved = agent.resolve(wasm_plugin(url, policy, name), resource_version=version)
        seen_istio.append(f"{name}@{version}: {NAMES[fetched.sha256] if fetched.sha256 else 'no module'}")
        seen_meshwasm.append(
            f"{name}@{version}: {NAMES[resolved.sha256] if resolved.sha256 else 'no module'}"
        )
    assert seen_meshwasm == seen_istio


def test_the_scripts_tell_the_policies_apart(registry: LocalRegistry, istio_agent: AgentSession) -> None:
    """Istio's own answers differ between Always and IfNotPresent on the same script, and untagged
    behaves as IfNotPresent, so the comparison above is not vacuous."""
    answers = {}
    for name, tag in (("latest", ":latest"), ("untagged", "")):
        repo = f"{registry.address}/policy-apart/{name}"
        url = f"oci://{repo}{tag}"
        with RegistryClient() as client:
            push(client, from_built(build_image(MODULES["A"])), f"{repo}:latest")
            istio_agent.get(url, resource=f"ns.{name}", version="1")
            push(client, from_built(build_image(MODULES["B"])), f"{repo}:latest")
        answers[name] = NAMES[str(istio_agent.get(url, resource=f"ns.{name}", version="2").sha256)]
    assert answers == {"latest": "B", "untagged": "A"}
