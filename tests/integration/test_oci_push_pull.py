"""Build, push, pull and inspect wasm images against a real registry (CNCF distribution on loopback)."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fixtures.oci_modules import run_meshwasm, synthetic_module
from fixtures.registry import RedirectingRegistry
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import Descriptor, build_image, canonical_json, write_layout
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference

pytestmark = pytest.mark.registry


@pytest.mark.parametrize("variant", ["compat", "oci"])
def test_cli_round_trip(variant: str, registry: LocalRegistry, go_wasm: Path, tmp_path: Path) -> None:
    module = go_wasm.read_bytes()
    ref = f"{registry.address}/cli/add-header:{variant}"
    layout = tmp_path / "layout"
    built = run_meshwasm("image", "build", str(go_wasm), "-t", ref, "--variant", variant, "-o", str(layout))
    assert built.returncode == 0, built.stderr
    built_digest = built.stdout.split("digest:")[1].split()[0]

    pushed = run_meshwasm("--quiet", "image", "push", str(layout), ref)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == f"{registry.address}/cli/add-header@{built_digest}"
    assert pushed.stderr == ""  # --quiet: no progress

    out = tmp_path / "pulled"
    pulled = run_meshwasm("image", "pull", f"oci://{ref}", "-o", str(out))
    assert pulled.returncode == 0, pulled.stderr
    assert (out / "plugin.wasm").read_bytes() == module
    assert f"sha256:  {hashlib.sha256(module).hexdigest()}" in pulled.stdout
    assert f"variant: {variant}" in pulled.stdout
    assert sorted(p.name for p in out.iterdir()) == ["plugin.wasm"]  # no temp file left

    inspected = run_meshwasm("image", "inspect", ref, "--json")
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    assert info["digest"] == built_digest
    assert info["variant"] == variant
    assert info["moduleSize"] == len(module)
    # The oci variant has the spec's two layers, runtime config then module (Istio requires two).
    expected_layers = [mt.WASM_CONFIG, mt.WASM_LAYER] if variant == "oci" else [mt.OCI_LAYER_TAR_GZIP]
    assert [layer["mediaType"] for layer in info["layers"]] == expected_layers


def test_same_wasm_pushed_twice_gives_the_same_digest(registry: LocalRegistry, go_wasm: Path) -> None:
    first = run_meshwasm("-q", "image", "push", str(go_wasm), f"{registry.address}/twice/add-header:v1")
    again = run_meshwasm("-q", "image", "push", str(go_wasm), f"{registry.address}/twice/add-header:v2")
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert first.stdout.split("@")[1] == again.stdout.split("@")[1]
    expected = build_image(go_wasm.read_bytes(), variant="compat").manifest_digest
    assert first.stdout.strip().endswith(expected)


def test_resolve_uses_head_and_matches_push(registry: LocalRegistry) -> None:
    ref = parse_reference(f"{registry.address}/resolve/x:v1")
    with RegistryClient() as client:
        digest = client.push_image(build_image(synthetic_module(1000)), ref)
        gets_before = registry.count_requests("GET", "/v2/resolve/x/manifests/")
        assert client.resolve(ref) == digest
        assert client.resolve(ref.with_digest(digest)) == digest
    assert registry.count_requests("HEAD", "/v2/resolve/x/manifests/v1", status=200) >= 1
    assert registry.count_requests("GET", "/v2/resolve/x/manifests/") == gets_before


def test_chunked_upload_and_progress(registry: LocalRegistry, tmp_path: Path) -> None:
    module = synthetic_module(3 * 1024 * 1024 + 17)
    image = build_image(module, variant="oci")
    write_layout(image, tmp_path / "layout", tag="chunked")
    ref = parse_reference(f"{registry.address}/chunked/x:chunked")
    pushes: list[tuple[int, int]] = []
    pulls: list[tuple[int, int]] = []
    with RegistryClient(chunk_size=1024 * 1024) as client:
        digest = client.push_layout(tmp_path / "layout", ref, progress=lambda d, t: pushes.append((d, t)))
        pulled = client.pull_module(ref, progress=lambda d, t: pulls.append((d, t)))
    assert digest == image.manifest_digest
    assert pulled.data == module
    assert registry.count_requests("PATCH", "/v2/chunked/x/blobs/uploads/", status=202) == 4
    total = image.config.size + len(module)
    assert pushes[-1] == (total, total)
    assert [d for d, _ in pushes] == sorted(d for d, _ in pushes)
    assert pulls[-1] == (len(module), len(module))


def test_blobs_already_present_are_not_uploaded_again_and_mount_is_used(registry: LocalRegistry) -> None:
    image = build_image(synthetic_module(50_000, seed=7), variant="oci")
    source = parse_reference(f"{registry.address}/mount/source:v1")
    target = parse_reference(f"{registry.address}/mount/target:v1")
    with RegistryClient() as client:
        client.push_image(image, source)
        puts = registry.count_requests("PUT", "/blobs/uploads/")
        client.push_image(image, source)  # everything exists: no upload at all
        assert registry.count_requests("PUT", "/blobs/uploads/") == puts
        client.push_image(image, target, mount_from=[source.repository])
        assert registry.count_requests("PUT", "/blobs/uploads/") == puts
        assert (
            registry.count_requests("POST", "/v2/mount/target/blobs/uploads/?mount=sha256%3A", status=201)
            == 2
        )
        assert client.pull_module(target).manifest_digest == image.manifest_digest


def _index_layout(path: Path, images: dict[tuple[str, str], bytes]) -> tuple[str, dict[tuple[str, str], str]]:
    """An OCI layout whose tag names an index of (os, arch) -> image; returns index and image digests."""
    blobs: dict[str, bytes] = {}
    entries = []
    digests = {}
    for (os_name, arch), module in images.items():
        image = build_image(module, variant="oci")
        blobs.update(image.blobs)
        blobs[image.manifest_digest] = image.manifest
        digests[(os_name, arch)] = image.manifest_digest
        entry = image.manifest_descriptor.to_json()
        entry["platform"] = {"os": os_name, "architecture": arch}
        entries.append(entry)
    index = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})
    index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
    blobs[index_digest] = index
    (path / "blobs" / "sha256").mkdir(parents=True)
    for digest, data in blobs.items():
        (path / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    top = Descriptor(mt.OCI_INDEX, index_digest, len(index), annotations={mt.REF_NAME_ANNOTATION: "multi"})
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top.to_json()]}))
    return index_digest, digests


def test_image_index_is_pushed_and_followed(registry: LocalRegistry, tmp_path: Path) -> None:
    # Followed as Istio's agent follows it: to the linux/amd64 entry, even after a wasm platform
    # (tests/fidelity/test_images_shapes.py compares the index cases with Istio's own code).
    arm, wasm, amd = (synthetic_module(3000, seed=n) for n in (1, 2, 3))
    index_digest, digests = _index_layout(
        tmp_path / "layout", {("linux", "arm64"): arm, ("wasip1", "wasm"): wasm, ("linux", "amd64"): amd}
    )
    ref = parse_reference(f"{registry.address}/index/x:multi")
    with RegistryClient() as client:
        assert client.push_layout(tmp_path / "layout", ref) == index_digest
        assert client.resolve(ref) == index_digest
        pulled = client.pull_module(ref)
        info = client.inspect(ref)
    assert pulled.data == amd
    assert pulled.index_digest == index_digest
    assert pulled.manifest_digest == digests[("linux", "amd64")]
    assert info.index_digest == index_digest
    assert info.digest == digests[("linux", "amd64")]


def test_request_guard_sees_every_request_including_redirects(
    redirecting_registry: RedirectingRegistry, tmp_path: Path
) -> None:
    module = synthetic_module(20_000, seed=3)
    ref = parse_reference(f"{redirecting_registry.address}/redirect/x:v1")
    with RegistryClient() as client:
        client.push_image(build_image(module, variant="oci"), ref)

    seen: list[str] = []
    with RegistryClient(request_guard=lambda request: seen.append(str(request.url))) as client:
        assert client.pull_module(ref).data == module
    blob_host = httpx.URL(redirecting_registry.blob_url).netloc.decode()
    assert any(blob_host in url and url.endswith("/data") for url in seen), seen  # the redirect target
    assert any("/v2/redirect/x/blobs/" in url for url in seen)

    class Blocked(Exception):
        pass

    def refuse_blob_host(request: httpx.Request) -> None:
        if request.url.netloc.decode() == blob_host:
            raise Blocked(f"refused {request.url}")

    with RegistryClient(request_guard=refuse_blob_host) as client, pytest.raises(Blocked):
        client.pull_module(ref)


def test_one_client_shared_by_threads(registry: LocalRegistry) -> None:
    """The fetcher shares one client between worker threads."""
    module = synthetic_module(300_000, seed=4)
    ref = parse_reference(f"{registry.address}/threads/x:v1")
    with RegistryClient() as client:
        client.push_image(build_image(module, variant="compat"), ref)
    with RegistryClient() as client, ThreadPoolExecutor(max_workers=4) as pool:
        pulled = list(pool.map(lambda _: client.pull_module(ref).data, range(8)))
    assert all(data == module for data in pulled)
