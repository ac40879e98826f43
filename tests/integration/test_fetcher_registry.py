"""The wasmfetcher service over HTTP against a real distribution registry on loopback.

Both image variants, the pull policies, single flight (counted in the
registry's own access log), restarts, credentials, and every registry-side
fault with its JSON error: missing image, unreachable registry, not wasm,
checksum mismatch (a blob corrupted in the registry's storage), size cap.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fetcher_helpers import ThrottlingProxy

from fixtures.oci_modules import synthetic_module
from fixtures.registry import AuthedRegistry, RedirectingRegistry
from meshwasm.fetcher.process import FetcherProcess
from meshwasm.net import free_port, wait_until
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.credentials import Credentials
from meshwasm.oci.image import BuiltImage, Descriptor, build_image, canonical_json, sha256_digest
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference

pytestmark = pytest.mark.registry

MAX_MODULE = 3_000_000


def push(registry_address: str, image: str, module: bytes, *, variant: str = "compat") -> str:
    """Push ``module`` as ``image`` (repo:tag); returns the manifest digest."""
    with RegistryClient() as client:
        built = build_image(module, variant=variant)  # type: ignore[arg-type]
        return client.push_image(built, parse_reference(f"{registry_address}/{image}"))


def push_built(registry_address: str, image: str, built: BuiltImage) -> str:
    with RegistryClient() as client:
        return client.push_image(built, parse_reference(f"{registry_address}/{image}"))


def layer_digest(module: bytes, variant: str = "compat") -> str:
    # The layer holding the module: the last one (the oci variant has its runtime config first).
    return build_image(module, variant=variant).layers[-1].digest  # type: ignore[arg-type]


def get(fetcher: FetcherProcess, url: str, **kwargs: object) -> httpx.Response:
    return httpx.get(fetcher.fetch_url(url), timeout=60, **kwargs)  # type: ignore[arg-type]


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"]


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


OK_PULLS = 'wasmfetcher_pulls_total{kind="oci",result="ok"}'


@pytest.fixture(scope="module")
def docker_config(tmp_path_factory: pytest.TempPathFactory, auth_registry: AuthedRegistry) -> Path:
    path = tmp_path_factory.mktemp("docker") / "config.json"
    token = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode()).decode()
    path.write_text(json.dumps({"auths": {auth_registry.address: {"auth": token}}}))
    return path


@pytest.fixture(scope="module")
def fetcher(
    tmp_path_factory: pytest.TempPathFactory,
    registry: LocalRegistry,
    auth_registry: AuthedRegistry,
    docker_config: Path,
) -> Iterator[FetcherProcess]:
    """IfNotPresent, :latest re-resolved at most once an hour, credentials for auth_registry."""
    proc = FetcherProcess(
        tmp_path_factory.mktemp("fetcher-registry"),
        {
            "allow": [registry.address, auth_registry.address, "127.0.0.1"],
            "security": {"allow_loopback": True},
            "pull": {"resolve_interval_seconds": 3600, "max_module_bytes": MAX_MODULE},
            "credentials": {"docker_config": str(docker_config)},
        },
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def eager(
    tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry, auth_registry: AuthedRegistry
) -> Iterator[FetcherProcess]:
    """Re-resolves :latest on every request (interval 0); no credentials."""
    proc = FetcherProcess(
        tmp_path_factory.mktemp("fetcher-eager"),
        {
            "allow": [registry.address, auth_registry.address],
            "security": {"allow_loopback": True},
            "pull": {"resolve_interval_seconds": 0},
        },
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("variant", ["compat", "oci"])
def test_both_image_variants_are_served_and_cached_in_istios_layout(
    registry: LocalRegistry, fetcher: FetcherProcess, variant: str
) -> None:
    module = synthetic_module(40_000, seed=1 if variant == "compat" else 2)
    digest = push(registry.address, f"variants/{variant}:v1", module, variant=variant)
    url = f"oci://{registry.address}/variants/{variant}:v1"
    response = get(fetcher, url)
    assert response.status_code == 200
    assert response.content == module
    assert response.headers["content-type"] == "application/wasm"
    assert response.headers["etag"] == f'"{hashlib.sha256(module).hexdigest()}"'
    name = f"oci://{registry.address}/variants/{variant}"
    cached = (
        fetcher.cache_dir
        / hashlib.sha256(name.encode()).hexdigest()
        / f"{digest.removeprefix('sha256:')}.wasm"
    )
    assert cached.read_bytes() == module


def test_single_flight_one_registry_pull_for_concurrent_requests(
    registry: LocalRegistry, fetcher: FetcherProcess
) -> None:
    module = synthetic_module(1_000_000, seed=3)
    push(registry.address, "flight/module:v1", module)
    # Through a proxy sending 1 MB/s, the pull lasts about a second: every request overlaps it.
    proxy = ThrottlingProxy(registry.host, registry.port, rate=1_000_000)
    proxy.start()
    try:
        url = f"oci://{proxy.netloc}/flight/module:v1"
        blob = layer_digest(module)
        before = fetcher.metrics()
        n = 8
        with ThreadPoolExecutor(n) as pool:
            responses = list(pool.map(lambda _: get(fetcher, url), range(n)))
        after = fetcher.metrics()
    finally:
        proxy.stop()
    assert [r.status_code for r in responses] == [200] * n
    assert all(r.content == module for r in responses)
    assert [r.headers["x-wasmfetcher-cache"] for r in responses] == ["miss"] * n  # all waited for it
    assert delta(before, after, OK_PULLS) == 1
    assert registry.count_requests("GET", f"/flight/module/blobs/{blob}") == 1


def test_a_cached_module_is_served_while_another_pull_is_in_flight(
    registry: LocalRegistry, fetcher: FetcherProcess
) -> None:
    cached = synthetic_module(10_000, seed=4)
    push(registry.address, "busy/cached:v1", cached)
    assert get(fetcher, f"oci://{registry.address}/busy/cached:v1").status_code == 200
    slow = synthetic_module(1_000_000, seed=5)
    push(registry.address, "busy/slow:v1", slow)
    proxy = ThrottlingProxy(registry.host, registry.port, rate=500_000)  # about 2 s
    proxy.start()
    try:
        pulling = threading.Thread(target=get, args=(fetcher, f"oci://{proxy.netloc}/busy/slow:v1"))
        pulling.start()
        assert wait_until(lambda: registry.count_requests("GET", "/busy/slow/blobs/") == 1, timeout=20)
        hit = get(fetcher, f"oci://{registry.address}/busy/cached:v1")
        assert hit.status_code == 200
        assert hit.headers["x-wasmfetcher-cache"] == "hit"
        assert pulling.is_alive()  # answered while the other pull was still downloading
        pulling.join(timeout=30)
    finally:
        proxy.stop()


def test_if_not_present_keeps_serving_the_cached_tag(
    registry: LocalRegistry, fetcher: FetcherProcess
) -> None:
    first, second = synthetic_module(5_000, seed=6), synthetic_module(5_000, seed=7)
    push(registry.address, "policy/ifnp:v1", first)
    url = f"oci://{registry.address}/policy/ifnp:v1"
    assert get(fetcher, url).content == first
    push(registry.address, "policy/ifnp:v1", second)
    manifests_before = registry.count_requests("HEAD", "/policy/ifnp/manifests/") + registry.count_requests(
        "GET", "/policy/ifnp/manifests/"
    )
    response = get(fetcher, url)
    assert response.content == first
    assert response.headers["x-wasmfetcher-cache"] == "hit"
    manifests_after = registry.count_requests("HEAD", "/policy/ifnp/manifests/") + registry.count_requests(
        "GET", "/policy/ifnp/manifests/"
    )
    assert manifests_after == manifests_before  # the registry was not asked


def test_latest_is_re_resolved_at_most_once_per_interval(
    registry: LocalRegistry, fetcher: FetcherProcess
) -> None:
    first, second = synthetic_module(5_000, seed=8), synthetic_module(5_000, seed=9)
    push(registry.address, "policy/interval:latest", first)
    url = f"oci://{registry.address}/policy/interval:latest"
    assert get(fetcher, url).content == first
    push(registry.address, "policy/interval:latest", second)
    # The interval (an hour) has not passed: the cached module, without asking the registry.
    heads = registry.count_requests("HEAD", "/policy/interval/manifests/latest")
    assert get(fetcher, url).content == first
    assert registry.count_requests("HEAD", "/policy/interval/manifests/latest") == heads


def test_latest_moves_when_the_interval_has_passed(registry: LocalRegistry, eager: FetcherProcess) -> None:
    first, second = synthetic_module(5_000, seed=10), synthetic_module(5_000, seed=11)
    push(registry.address, "policy/moving:latest", first)
    url = f"oci://{registry.address}/policy/moving:latest"
    assert get(eager, url).content == first
    same = get(eager, url)  # re-resolved, unchanged: a hit without a blob download
    assert same.content == first
    assert same.headers["x-wasmfetcher-cache"] == "hit"
    assert registry.count_requests("GET", f"/policy/moving/blobs/{layer_digest(first)}") == 1
    push(registry.address, "policy/moving:latest", second)
    assert get(eager, url).content == second


def test_failed_re_pull_keeps_serving_the_cached_module(
    registry: LocalRegistry, eager: FetcherProcess
) -> None:
    first, second = synthetic_module(5_000, seed=12), synthetic_module(5_000, seed=13)
    push(registry.address, "policy/stale:latest", first)
    url = f"oci://{registry.address}/policy/stale:latest"
    assert get(eager, url).content == first
    push(registry.address, "policy/stale:latest", second)
    corrupt_blob(registry, layer_digest(second))  # the new version cannot verify
    before = eager.metrics()
    response = get(eager, url)
    assert response.status_code == 200
    assert response.content == first
    assert response.headers["x-wasmfetcher-cache"] == "stale"
    after = eager.metrics()
    assert delta(before, after, "wasmfetcher_stale_served_total") == 1
    assert delta(before, after, 'wasmfetcher_pulls_total{kind="oci",result="checksum_mismatch"}') == 1
    assert "event=stale_served" in eager.log_text()


def test_a_pinned_digest_is_a_hit_without_the_registry(
    registry: LocalRegistry, eager: FetcherProcess
) -> None:
    module = synthetic_module(5_000, seed=14)
    digest = push(registry.address, "policy/pinned:latest", module)
    url = f"oci://{registry.address}/policy/pinned@{digest}"
    assert get(eager, url).content == module
    asked = len(registry.access_log())
    second = get(eager, url)
    assert second.content == module
    assert second.headers["x-wasmfetcher-cache"] == "hit"
    assert len(registry.access_log()) == asked


def test_the_cache_survives_a_restart_and_is_reverified(
    registry: LocalRegistry, fetcher: FetcherProcess
) -> None:
    kept, damaged = synthetic_module(20_000, seed=15), synthetic_module(20_000, seed=22)
    push(registry.address, "restart/kept:v1", kept)
    damaged_digest = push(registry.address, "restart/damaged:v1", damaged)
    kept_url, damaged_url = (f"oci://{registry.address}/restart/{n}:v1" for n in ("kept", "damaged"))
    assert get(fetcher, kept_url).status_code == 200
    assert get(fetcher, damaged_url).status_code == 200
    asked = len(registry.access_log())
    fetcher.stop()
    # Damage one cached module on disk while the service is down (same size, one byte flipped).
    name = f"oci://{registry.address}/restart/damaged"
    folder = fetcher.cache_dir / hashlib.sha256(name.encode()).hexdigest()
    cached = folder / f"{damaged_digest.removeprefix('sha256:')}.wasm"
    data = bytearray(cached.read_bytes())
    data[100] ^= 0xFF
    cached.write_bytes(bytes(data))
    fetcher.start_again()

    response = get(fetcher, kept_url)
    assert response.content == kept
    assert response.headers["x-wasmfetcher-cache"] == "hit"
    assert len(registry.access_log()) == asked  # served from the cache, the registry not asked
    response = get(fetcher, damaged_url)
    assert response.content == damaged  # the damage was caught on first serve and the module pulled again
    assert response.headers["x-wasmfetcher-cache"] == "miss"
    assert registry.count_requests("GET", f"/restart/damaged/blobs/{layer_digest(damaged)}") == 2


def test_credentials_from_a_docker_config_are_used_and_never_logged(
    auth_registry: AuthedRegistry, fetcher: FetcherProcess, eager: FetcherProcess
) -> None:
    module = synthetic_module(5_000, seed=16)
    with RegistryClient(
        credentials=Credentials.explicit(
            auth_registry.username, auth_registry.password, auth_registry.address
        )
    ) as client:
        client.push_image(build_image(module), parse_reference(f"{auth_registry.address}/private/module:v1"))
    url = f"oci://{auth_registry.address}/private/module:v1"
    assert get(fetcher, url).content == module
    assert error_of(get(eager, url)) == (502, "registry_auth_failed")  # eager has no credentials
    for proc in (fetcher, eager):
        assert auth_registry.password not in proc.log_text()


def test_missing_image_or_tag_is_a_404(registry: LocalRegistry, fetcher: FetcherProcess) -> None:
    push(registry.address, "missing/module:v1", synthetic_module(1_000, seed=17))
    assert error_of(get(fetcher, f"oci://{registry.address}/missing/module:v2")) == (404, "image_not_found")
    assert error_of(get(fetcher, f"oci://{registry.address}/missing/nothing:v1")) == (404, "image_not_found")


def test_unreachable_registry_is_a_502(fetcher: FetcherProcess) -> None:
    # 127.0.0.1 (any port) is allowlisted; nothing listens on this one.
    url = f"oci://127.0.0.1:{free_port()}/gone/module:v1"
    assert error_of(get(fetcher, url)) == (502, "registry_unavailable")


def test_registry_not_on_the_allowlist_is_a_403(eager: FetcherProcess) -> None:
    # eager allows only the two fixture registries, not the rest of loopback.
    url = f"oci://127.0.0.1:{free_port()}/other/module:v1"
    assert error_of(get(eager, url)) == (403, "not_allowed")


def test_blob_redirects_are_followed_through_the_address_guard(
    redirecting_registry: RedirectingRegistry, fetcher: FetcherProcess
) -> None:
    module = synthetic_module(6_000, seed=21)
    push(redirecting_registry.address, "redirected/module:v1", module)
    response = get(fetcher, f"oci://{redirecting_registry.address}/redirected/module:v1")
    assert response.status_code == 200
    assert response.content == module


def not_wasm_image() -> BuiltImage:
    layer = b"#!/bin/sh\necho this is not a wasm module\n"
    config = canonical_json({"type": "envoy_proxy"})
    config_desc = Descriptor(mt.WASM_CONFIG, sha256_digest(config), len(config))
    layer_desc = Descriptor(mt.WASM_LAYER, sha256_digest(layer), len(layer))
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer_desc.to_json()],
        }
    )
    blobs = {config_desc.digest: config, layer_desc.digest: layer}
    return BuiltImage("oci", manifest, config_desc, [layer_desc], blobs)


def no_wasm_layer_image() -> BuiltImage:
    config = canonical_json({"architecture": "amd64", "os": "linux"})
    config_desc = Descriptor(mt.OCI_CONFIG, sha256_digest(config), len(config))
    manifest = canonical_json(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_desc.to_json(), "layers": []}
    )
    return BuiltImage("oci", manifest, config_desc, [], {config_desc.digest: config})


@pytest.mark.parametrize(
    "make_image", [not_wasm_image, no_wasm_layer_image], ids=["not-wasm", "no-wasm-layer"]
)
def test_not_wasm_is_a_422_and_nothing_is_cached(
    registry: LocalRegistry, fetcher: FetcherProcess, make_image: object
) -> None:
    assert callable(make_image)
    repo = f"bad/{make_image.__name__.replace('_', '-')}"
    push_built(registry.address, f"{repo}:v1", make_image())
    assert error_of(get(fetcher, f"oci://{registry.address}/{repo}:v1")) == (422, "not_wasm")
    assert_nothing_cached(fetcher, f"oci://{registry.address}/{repo}")


def test_checksum_mismatch_is_a_502_and_nothing_is_cached(
    registry: LocalRegistry, fetcher: FetcherProcess
) -> None:
    module = synthetic_module(8_000, seed=18)
    push(registry.address, "bad/tampered:v1", module)
    corrupt_blob(registry, layer_digest(module))
    response = get(fetcher, f"oci://{registry.address}/bad/tampered:v1")
    assert error_of(response) == (502, "checksum_mismatch")
    assert_nothing_cached(fetcher, f"oci://{registry.address}/bad/tampered")


def test_module_over_the_cap_is_a_413_and_nothing_is_cached(
    registry: LocalRegistry, fetcher: FetcherProcess
) -> None:
    module = synthetic_module(MAX_MODULE + 100_000, seed=19)
    push(registry.address, "bad/huge:v1", module, variant="oci")
    assert error_of(get(fetcher, f"oci://{registry.address}/bad/huge:v1")) == (413, "module_too_large")
    assert_nothing_cached(fetcher, f"oci://{registry.address}/bad/huge")


def test_pull_log_lines_name_image_registry_tag_result_and_duration(
    registry: LocalRegistry, fetcher: FetcherProcess
) -> None:
    push(registry.address, "logged/module:v7", synthetic_module(2_000, seed=20))
    get(fetcher, f"oci://{registry.address}/logged/module:v7")
    (line,) = [line for line in fetcher.log_text().splitlines() if "image=logged/module" in line]
    for field in (f"registry={registry.address}", "tag=v7", "digest=sha256:", "result=ok", "duration_ms="):
        assert field in line


def corrupt_blob(registry: LocalRegistry, digest: str) -> None:
    path = registry.blob_data_path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))


def assert_nothing_cached(fetcher: FetcherProcess, module_name: str) -> None:
    folder = fetcher.cache_dir / hashlib.sha256(module_name.encode()).hexdigest()
    assert not folder.exists() or not any(folder.iterdir())
    assert not list((fetcher.cache_dir / ".tmp").glob("*"))
