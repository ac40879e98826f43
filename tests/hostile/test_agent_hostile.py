"""`meshwasm up`'s gateway agent (in process) against the malicious registry.

The agent pulls as the wasmfetcher does: one deadline for the whole fetch, modules streamed to
disk and verified there (never whole in memory), every connection made to the address its guard
checked. Each case asserts the agent's answer (a Resolution with the error, never an exception),
the bound on time or memory, and that nothing was cached or left in staging.
"""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from pathlib import Path

import pytest
from hostile_helpers import MiB
from hostile_registry import Blob, HostileRegistry, oci_variant

from fixtures.oci_modules import synthetic_module
from meshwasm.gateway.agent import ModuleAgent
from meshwasm.manifests import istio

TIMEOUT = 3.0  # the agent's timeout: Istio's RequestTimeout, the deadline of one whole fetch


def wasm_plugin(url: str) -> istio.WasmPlugin:
    return istio.WasmPlugin.model_validate(
        {
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"url": url},
        }
    )


def agent_for(tmp_path: Path, hostile: HostileRegistry) -> ModuleAgent:
    return ModuleAgent(tmp_path / "cache", allowed_hosts=[hostile.address], timeout=TIMEOUT)


def assert_nothing_cached(agent: ModuleAgent, tmp_path: Path) -> None:
    assert agent.cache.entries() == []
    assert list((tmp_path / "cache" / ".tmp").iterdir()) == []


@pytest.mark.parametrize("source", ["oci", "http"])
def test_a_dripping_source_ends_at_the_fetch_deadline(
    source: str, hostile: HostileRegistry, tmp_path: Path
) -> None:
    if source == "oci":
        repo = oci_variant(Blob.of(synthetic_module(2000, seed=41)))
        repo.drip = 0.5
        hostile.repos["agent/drip"] = repo
        url = f"oci://{hostile.address}/agent/drip:v1"
    else:
        hostile.files["/agent/drip.wasm"] = (synthetic_module(2000, seed=42), 0.5)
        url = f"http://{hostile.address}/agent/drip.wasm"
    agent = agent_for(tmp_path, hostile)
    start = time.monotonic()
    resolved = agent.resolve(wasm_plugin(url), resource_version="1")
    elapsed = time.monotonic() - start
    assert resolved.path is None
    assert "deadline" in (resolved.error or ""), resolved.error
    assert TIMEOUT - 0.5 <= elapsed <= TIMEOUT + 2.5, f"answered after {elapsed:.1f} s"
    assert_nothing_cached(agent, tmp_path)
    assert hostile.wait_idle(5), "a registry answer is still being read"


def test_a_large_module_streams_to_disk_and_is_never_held_whole(
    hostile: HostileRegistry, tmp_path: Path
) -> None:
    size = 96 * MiB
    module = Blob.large_module(size, seed=43)
    hostile.repos["agent/large"] = oci_variant(module)
    agent = ModuleAgent(tmp_path / "cache", allowed_hosts=[hostile.address], timeout=60)
    tracemalloc.start()
    try:
        resolved = agent.resolve(wasm_plugin(f"oci://{hostile.address}/agent/large:v1"), resource_version="1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resolved.error is None, resolved.error
    assert resolved.sha256 == module.digest.removeprefix("sha256:")
    assert Path(str(resolved.path)).stat().st_size == size
    assert peak <= 16 * MiB, (
        f"Python allocations peaked at {peak / MiB:.0f} MiB for a {size // MiB} MiB module"
    )
    assert list((tmp_path / "cache" / ".tmp").iterdir()) == []


def test_a_blob_redirect_to_the_metadata_address_is_refused_at_the_connection(
    hostile: HostileRegistry, tmp_path: Path
) -> None:
    """The registry is allowed; where it redirects is checked where the connection is made."""
    repo = oci_variant(Blob.of(synthetic_module(2000, seed=44)))
    repo.redirect_blobs_to = "https://169.254.169.254/latest"
    hostile.repos["agent/redirect"] = repo
    agent = agent_for(tmp_path, hostile)
    resolved = agent.resolve(wasm_plugin(f"oci://{hostile.address}/agent/redirect:v1"), resource_version="1")
    assert resolved.path is None
    assert "cloud metadata address" in (resolved.error or ""), resolved.error
    assert_nothing_cached(agent, tmp_path)


def test_a_gzip_body_is_unwrapped_as_istio_does(hostile: HostileRegistry, tmp_path: Path) -> None:
    import gzip

    module = synthetic_module(3000, seed=45)
    hostile.files["/agent/m.wasm.gz"] = (gzip.compress(module), 0)
    agent = agent_for(tmp_path, hostile)
    resolved = agent.resolve(wasm_plugin(f"http://{hostile.address}/agent/m.wasm.gz"), resource_version="1")
    assert resolved.error is None, resolved.error
    assert resolved.sha256 == hashlib.sha256(module).hexdigest()
    assert Path(str(resolved.path)).read_bytes() == module
