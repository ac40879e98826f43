"""What a WasmPlugin's ``sha256`` is compared with: Istio's agent (the oracle) against meshwasm's.

For ``oci://`` URLs Istio compares the image MANIFEST digest (of the linux/amd64 image, for an
index), not the module's bytes; for ``http(s)://`` URLs the module's sha256. A digest in an
``oci://`` URL is a checksum too, so an index's digest there never matches. Both agents must give
the same module (and key it by the same checksum in the same cache directory) or both refuse.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fixtures.istio_agent import AgentSession, Fetched
from fixtures.oci_modules import synthetic_module
from fixtures.wasm_images import from_built, index, push
from meshwasm.gateway.agent import ModuleAgent, Resolution
from meshwasm.manifests import istio
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry

pytestmark = pytest.mark.registry

MODULE = synthetic_module(2500, seed=11)
MODULE_SHA = hashlib.sha256(MODULE).hexdigest()
AMD64 = {"os": "linux", "architecture": "amd64"}


def wasm_plugin(
    url: str, *, sha256: str | None = None, policy: str | None = None, name: str = "p"
) -> istio.WasmPlugin:
    spec: dict[str, object] = {"url": url}
    if sha256:
        spec["sha256"] = sha256
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


def same(fetched: Fetched, resolved: Resolution) -> None:
    """Both agents give the same module under the same cache key, or both refuse a checksum."""
    if fetched.error is not None:
        assert resolved.path is None, f"Istio refused ({fetched.error}); meshwasm gave {resolved.path}"
        assert "which does not match" in fetched.error
        assert resolved.error is not None
        assert "which does not match" in resolved.error
        return
    assert resolved.path is not None, f"Istio gave a module; meshwasm refused: {resolved.error}"
    path = Path(resolved.path)
    assert (resolved.sha256, path.stem, path.parent.name) == (
        fetched.sha256,
        fetched.checksum,
        fetched.module_dir,
    )


@pytest.fixture(scope="module")
def images(registry: LocalRegistry) -> dict[str, str]:
    """The module as a compat image, as an index (its linux/amd64 entry), and as an http blob URL."""
    compat = from_built(build_image(MODULE, variant="compat"))
    oci = from_built(build_image(MODULE, variant="oci"))
    indexed = index([(compat, AMD64)])
    with RegistryClient() as client:
        push(client, compat, f"{registry.address}/sums/compat:v1")
        push(client, oci, f"{registry.address}/sums/oci:v1")
        push(client, indexed, f"{registry.address}/sums/indexed:v1")
    return {
        "compat": f"oci://{registry.address}/sums/compat:v1",
        "manifest": compat.digest.removeprefix("sha256:"),
        "indexed": f"oci://{registry.address}/sums/indexed:v1",
        "index": indexed.digest.removeprefix("sha256:"),
        "repo": f"oci://{registry.address}/sums/compat",
        # The oci variant's module layer is the raw module: a plain http URL for it.
        "http": f"http://{registry.address}/v2/sums/oci/blobs/sha256:{MODULE_SHA}",
    }


CASES = {
    # name: (url key or template, sha256 given)
    "oci-sha256-is-the-manifest-digest": ("compat", "manifest"),
    "oci-sha256-of-the-module-bytes": ("compat", MODULE_SHA),
    "oci-wrong-sha256": ("compat", "0" * 64),
    "oci-no-sha256": ("compat", None),
    "index-sha256-is-the-amd64-manifest-digest": ("indexed", "manifest"),
    "index-sha256-is-the-index-digest": ("indexed", "index"),
    "digest-in-url-is-the-manifest": ("repo@manifest", None),
    "digest-in-url-is-an-index": ("indexed-repo@index", None),
    "digest-in-url-and-a-different-sha256": ("repo@manifest", "1" * 64),
    "http-sha256-of-the-module": ("http", MODULE_SHA),
    "http-sha256-is-a-manifest-digest": ("http", "manifest"),
    "http-no-sha256": ("http", None),
}


def _resolve_case(images: dict[str, str], url_key: str, sha_key: str | None) -> tuple[str, str]:
    if url_key == "repo@manifest":
        url = f"{images['repo']}@sha256:{images['manifest']}"
    elif url_key == "indexed-repo@index":
        url = images["indexed"].rsplit(":", 1)[0] + f"@sha256:{images['index']}"
    else:
        url = images[url_key]
    sha = images.get(sha_key, sha_key) if sha_key else ""
    return url, sha or ""


@pytest.mark.parametrize("case", CASES)
def test_sha256_is_compared_with_what_istio_compares(
    case: str, images: dict[str, str], istio_agent: AgentSession, registry: LocalRegistry, tmp_path: Path
) -> None:
    url, sha = _resolve_case(images, *CASES[case])
    fetched = istio_agent.get(url, checksum=sha, resource="ns.p")
    agent = ModuleAgent(tmp_path / "cache", allowed_hosts=[registry.address])
    resolved = agent.resolve(wasm_plugin(url, sha256=sha or None), resource_version="1")
    same(fetched, resolved)


def test_the_cases_show_the_manifest_digest_rule(images: dict[str, str], istio_agent: AgentSession) -> None:
    """Istio's own answers on the cases that tell the rules apart (so a pin that changed them shows)."""
    manifest = istio_agent.get(images["compat"], checksum=images["manifest"], resource="ns.a")
    module = istio_agent.get(images["compat"], checksum=MODULE_SHA, resource="ns.b")
    pinned_index = istio_agent.get(
        images["indexed"].rsplit(":", 1)[0] + f"@sha256:{images['index']}", resource="ns.c"
    )
    assert manifest.sha256 == MODULE_SHA
    assert manifest.checksum == images["manifest"]
    assert module.error is not None
    assert pinned_index.error is not None
