"""The real wasmfetcher process against a malicious registry (and a DNS server) of our own.

Each case asserts the named error (status and code), the bound on time, the bound on memory
(peak RSS of the fetcher from /proc/<pid>/status), that nothing was cached or left in
staging, and that nothing is still running (no pull in flight, no registry answer still being
read). Issue 15, items 1-7.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import shutil
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hostile_helpers import Fetcher, MiB, error_of, vm_hwm
from hostile_registry import (
    TAR_GZIP,
    WASM_HEADER,
    Blob,
    DnsServer,
    HostileRegistry,
    RecordingServer,
    compat_variant,
    descriptor,
    manifest_doc,
    oci_variant,
    port_free_on_both,
    tar_bomb,
    tar_gz,
    zeros,
)

from fixtures.oci_modules import synthetic_module
from meshwasm.fetcher.process import FetcherProcess
from meshwasm.fetcher.unbox import MAX_DEPTH
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference

pytestmark = pytest.mark.registry

DEADLINE = 10.0  # pull.timeout_seconds, as the case
MAX_MODULE = 128 * MiB
MEMORY_BOUND = 48 * MiB  # peak RSS growth allowed over the warmed-up fetcher for any hostile case
UNPARSABLE = ("0177.0.0.1", "0x7f.0.0.1", "2130706433", "127.1")


def small_module(seed: int) -> Blob:
    return Blob.of(synthetic_module(2000, seed=seed))


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, hostile: HostileRegistry, registry: LocalRegistry
) -> Iterator[Fetcher]:
    """One fetcher for the error cases: the hostile registry and the real one allowed, loopback
    allowed, a 10 s pull deadline, :latest re-resolved on every request."""
    port = hostile.port
    proc = FetcherProcess(
        tmp_path_factory.mktemp("hostile-shared"),
        {
            "allow": [hostile.address, registry.address, *(f"{h}:{port}" for h in UNPARSABLE)],
            "security": {"allow_loopback": True},
            "pull": {
                "timeout_seconds": DEADLINE,
                "max_module_bytes": MAX_MODULE,
                "failure_backoff_seconds": 0,
                "resolve_interval_seconds": 0,
            },
        },
    )
    proc.start()
    try:
        fetcher = Fetcher(proc)
        hostile.repos["warm/up"] = oci_variant(small_module(1))
        assert fetcher.get(f"oci://{hostile.address}/warm/up:v1").status_code == 200
        fetcher.baseline_hwm = vm_hwm(proc.pid)
        yield fetcher
    finally:
        proc.stop()


def refused(
    fetcher: Fetcher, hostile: HostileRegistry, repo: str, expected: tuple[int, str], *, within: float
) -> httpx.Response:
    """Fetch ``repo`` from the hostile registry; assert the named error, the time and memory
    bounds, that nothing was cached and that nothing is left running."""
    url = f"oci://{hostile.address}/{repo}:v1"
    response, elapsed = fetcher.timed(url, timeout=within + 15)
    assert error_of(response) == expected, response.text
    assert elapsed <= within, f"answered after {elapsed:.1f} s (bound {within} s)"
    assert fetcher.grown() <= MEMORY_BOUND, f"peak RSS grew by {fetcher.grown() / MiB:.0f} MiB"
    fetcher.assert_nothing_running(hostile)
    fetcher.assert_nothing_cached(f"oci://{hostile.address}/{repo}")
    return response


# --- item 1: a whole-pull deadline, and slots a slow registry cannot take from the others


def test_a_registry_dripping_a_byte_every_half_second_ends_at_the_pull_deadline(
    shared: Fetcher, hostile: HostileRegistry
) -> None:
    repo = oci_variant(small_module(2))
    repo.drip = 0.5
    hostile.repos["drip/blob"] = repo
    start = time.monotonic()
    response = refused(shared, hostile, "drip/blob", (504, "pull_timeout"), within=DEADLINE + 2.5)
    assert time.monotonic() - start >= DEADLINE - 0.5  # it was the deadline, not something else
    assert "10 s deadline" in response.json()["error"]["message"]


def test_an_http_source_dripping_a_byte_every_half_second_ends_at_the_pull_deadline(
    shared: Fetcher, hostile: HostileRegistry
) -> None:
    hostile.files["/drip/m.wasm"] = (synthetic_module(2000, seed=12), 0.5)
    url = f"http://{hostile.address}/drip/m.wasm"
    response, elapsed = shared.timed(url, timeout=DEADLINE + 15)
    assert error_of(response) == (504, "pull_timeout"), response.text
    assert DEADLINE - 0.5 <= elapsed <= DEADLINE + 2.5
    assert hostile.count("GET", "/drip/m.wasm") == 1  # a timeout is not retried past the deadline
    assert shared.grown() <= MEMORY_BOUND
    shared.assert_nothing_running(hostile)
    shared.assert_nothing_cached(url)


def test_eight_slow_pulls_do_not_hold_up_a_good_one(
    shared: Fetcher, hostile: HostileRegistry, registry: LocalRegistry
) -> None:
    for i in range(8):
        repo = oci_variant(small_module(10 + i))
        repo.drip = 0.5
        hostile.repos[f"slow/m{i}"] = repo
    good = synthetic_module(30_000, seed=99)
    same_host_module = synthetic_module(3000, seed=98)
    hostile.repos["slow/good"] = oci_variant(Blob.of(same_host_module))
    with RegistryClient() as client:
        client.push_image(build_image(good), parse_reference(f"{registry.address}/good/m:v1"))
    outcomes: list[tuple[int, str]] = []

    def slow(i: int) -> None:
        outcomes.append(error_of(shared.get(f"oci://{hostile.address}/slow/m{i}:v1", timeout=DEADLINE + 15)))

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 5
        while hostile.count("GET", "/slow/") < 16 and time.monotonic() < deadline:  # 8 manifests, 8 blobs
            time.sleep(0.05)
        assert hostile.active >= 8, "the eight slow pulls are not all running"
        response = shared.get(f"oci://{registry.address}/good/m:v1", timeout=DEADLINE / 2)
        assert response.status_code == 200
        assert response.content == good
        # A good image on the slow registry itself is not held up either.
        same_host = shared.get(f"oci://{hostile.address}/slow/good:v1", timeout=DEADLINE / 2)
        assert same_host.status_code == 200
        assert same_host.content == same_host_module
        assert not outcomes, "the good pulls had to wait for slow ones to end"
        assert hostile.active >= 8
    finally:
        for thread in threads:
            thread.join(timeout=DEADLINE + 20)
    assert outcomes == [(504, "pull_timeout")] * 8
    shared.assert_nothing_running(hostile)
    for i in range(8):
        shared.assert_nothing_cached(f"oci://{hostile.address}/slow/m{i}")


def test_a_cached_latest_stays_available_while_its_registry_is_slow(
    shared: Fetcher, hostile: HostileRegistry
) -> None:
    module = small_module(3)
    repo = oci_variant(module)
    hostile.repos["slow/latest"] = repo
    url = f"oci://{hostile.address}/slow/latest:latest"
    first = shared.get(url)
    assert first.status_code == 200
    repo.manifest_drip = 0.5  # the revalidation's manifest HEAD now crawls
    response, elapsed = shared.timed(url, timeout=DEADLINE + 5)
    assert response.status_code == 200
    assert response.content == first.content
    assert response.headers["x-wasmfetcher-cache"] == "stale"
    assert elapsed <= 2 + 2.0, f"the cached module took {elapsed:.1f} s"  # revalidate_wait_seconds: 2
    shared.assert_nothing_running(hostile, within=DEADLINE + 3)  # the revalidation ends at its deadline
    assert "reason=revalidation_pending" in shared.proc.log_text()


# --- item 2: bounded memory and bounded extraction


def test_a_tar_layer_with_hundreds_of_thousands_of_members_is_refused_fast_and_cheaply(
    shared: Fetcher, hostile: HostileRegistry
) -> None:
    hostile.repos["bomb/tar"] = compat_variant(tar_bomb(300_000))
    response = refused(shared, hostile, "bomb/tar", (502, "layer_too_many_members"), within=3)
    assert "1000 entries" in response.json()["error"]["message"]


def test_a_gzip_bomb_that_is_not_wasm_is_refused_at_its_first_bytes(
    shared: Fetcher, hostile: HostileRegistry
) -> None:
    size = 120 * MiB  # under the module cap: only its content gives it away
    layer = tar_gz(iter([("plugin.wasm", size, zeros(size, head=b"MZ\x90\x00"))]), level=1)
    hostile.repos["bomb/notwasm"] = compat_variant(layer)
    refused(shared, hostile, "bomb/notwasm", (422, "not_wasm"), within=3)


def test_a_gzip_bomb_past_the_module_cap_is_refused(shared: Fetcher, hostile: HostileRegistry) -> None:
    members = ((f"junk{i}", 16 * MiB, zeros(16 * MiB)) for i in range(12))  # 192 MiB of zeros
    hostile.repos["bomb/gzip"] = compat_variant(tar_gz(members, level=1))
    refused(shared, hostile, "bomb/gzip", (413, "module_too_large"), within=5)


def http_refused(
    fetcher: Fetcher, hostile: HostileRegistry, path: str, expected: tuple[int, str], *, within: float
) -> str:
    """Fetch ``path`` from the hostile registry's plain http side; the same checks as :func:`refused`."""
    url = f"http://{hostile.address}{path}"
    response, elapsed = fetcher.timed(url, timeout=within + 15)
    assert error_of(response) == expected, response.text
    assert elapsed <= within, f"answered after {elapsed:.1f} s (bound {within} s)"
    assert fetcher.grown() <= MEMORY_BOUND, f"peak RSS grew by {fetcher.grown() / MiB:.0f} MiB"
    fetcher.assert_nothing_running(hostile)
    fetcher.assert_nothing_cached(url)
    return str(response.json()["error"]["message"])


def _gzip_of(chunks: Iterator[bytes]) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join(compressor.compress(chunk) for chunk in chunks) + compressor.flush()


def test_an_http_gzip_bomb_is_unwrapped_only_up_to_the_module_cap(
    shared: Fetcher, hostile: HostileRegistry
) -> None:
    """Istio's agent unwraps a gzip body (unboxIfPossible); here it is streamed to disk and stopped
    at the module cap (Istio truncates at its own), in bounded memory."""
    hostile.files["/bomb/module.wasm.gz"] = (_gzip_of(zeros(192 * MiB, head=WASM_HEADER)), 0)
    message = http_refused(shared, hostile, "/bomb/module.wasm.gz", (413, "module_too_large"), within=8)
    assert "unwrapped" in message


def test_an_http_gzip_bomb_that_is_not_wasm_is_refused_at_its_first_unwrapped_bytes(
    shared: Fetcher, hostile: HostileRegistry
) -> None:
    hostile.files["/bomb/page.gz"] = (_gzip_of(zeros(120 * MiB, head=b"MZ\x90\x00")), 0)
    http_refused(shared, hostile, "/bomb/page.gz", (422, "not_wasm"), within=3)


def test_a_module_wrapped_in_gzip_beyond_the_nesting_bound_is_refused(
    shared: Fetcher, hostile: HostileRegistry
) -> None:
    body = synthetic_module(2000, seed=31)
    for _ in range(MAX_DEPTH + 1):
        body = gzip.compress(body)
    hostile.files["/nested/m.wasm.gz"] = (body, 0)
    message = http_refused(shared, hostile, "/nested/m.wasm.gz", (422, "not_wasm"), within=3)
    assert f"more than {MAX_DEPTH} times" in message


def test_a_large_plugin_in_a_small_gzip_layer_streams_to_disk(
    shared: Fetcher, hostile: HostileRegistry
) -> None:
    size = 100 * MiB
    layer = tar_gz(iter([("plugin.wasm", size, zeros(size, head=WASM_HEADER))]), level=1)
    hostile.repos["bomb/large"] = compat_variant(layer)
    expected = hashlib.sha256()
    for chunk in zeros(size, head=WASM_HEADER):
        expected.update(chunk)
    digest = hashlib.sha256()
    with httpx.stream(
        "GET", shared.proc.fetch_url(f"oci://{hostile.address}/bomb/large:v1"), timeout=60
    ) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == expected.hexdigest()
    assert shared.grown() <= MEMORY_BOUND, f"peak RSS grew by {shared.grown() / MiB:.0f} MiB"


# --- wrong sizes and huge manifests: bad registry data, named


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("negative", (502, "bad_registry_data")),
        ("short", (502, "checksum_mismatch")),  # the blob is longer than its descriptor says
        ("long", (502, "checksum_mismatch")),  # the blob is shorter than its descriptor says
        ("huge-manifest", (502, "bad_registry_data")),
    ],
)
def test_sizes_that_lie_and_huge_manifests_are_bad_registry_data(
    shared: Fetcher, hostile: HostileRegistry, case: str, expected: tuple[int, str]
) -> None:
    module = small_module(4)
    if case == "negative":
        repo = oci_variant(module, layer_size=-1)
    elif case == "short":
        repo = oci_variant(module, layer_size=module.size - 100)
    elif case == "long":
        repo = oci_variant(module, layer_size=module.size + 100)
    else:
        repo = oci_variant(module)
        repo.manifest = manifest_doc(
            descriptor(TAR_GZIP, module), [descriptor(TAR_GZIP, module)] * 40_000
        )  # about 6 MiB, over distribution's 4 MiB manifest limit
        assert len(repo.manifest) > 4 * MiB
    hostile.repos[f"sizes/{case}"] = repo
    refused(shared, hostile, f"sizes/{case}", expected, within=5)


# --- item 4: the allowlist on every hop


def test_a_blob_redirect_off_the_allowlist_is_refused(shared: Fetcher, hostile: HostileRegistry) -> None:
    elsewhere = RecordingServer()
    try:
        repo = oci_variant(small_module(5))
        repo.redirect_blobs_to = elsewhere.url
        hostile.repos["hop/redirect"] = repo
        response = refused(shared, hostile, "hop/redirect", (403, "not_allowed"), within=5)
        assert f"127.0.0.1:{elsewhere.port}" in response.json()["error"]["message"]
        assert "redirect" in response.json()["error"]["message"]
        assert elsewhere.requests == []
    finally:
        elsewhere.stop()


def test_a_token_realm_off_the_allowlist_is_refused(shared: Fetcher, hostile: HostileRegistry) -> None:
    realm = RecordingServer()
    try:
        repo = oci_variant(small_module(6))
        repo.realm = f"{realm.url}/token"
        hostile.repos["hop/realm"] = repo
        response = refused(shared, hostile, "hop/realm", (403, "not_allowed"), within=5)
        assert "token realm" in response.json()["error"]["message"]
        assert realm.requests == []
    finally:
        realm.stop()


# --- item 7: named errors for unparsable hosts


@pytest.mark.parametrize("host", UNPARSABLE)
@pytest.mark.parametrize("scheme", ["oci", "http"])
def test_hosts_that_parsers_read_differently_are_refused_as_unparsable(
    shared: Fetcher, hostile: HostileRegistry, host: str, scheme: str
) -> None:
    url = f"oci://{host}:{hostile.port}/x/y:v1" if scheme == "oci" else f"http://{host}:{hostile.port}/m.wasm"
    before = len(hostile.requests)
    response = shared.get(url)
    assert error_of(response) == (400, "bad_host"), response.text
    assert host in response.json()["error"]["message"]
    assert len(hostile.requests) == before  # nothing was asked of anybody


# --- item 3: one connection, one check (DNS rebinding through a resolver we control)


def test_a_name_that_rebinds_to_a_blocked_address_never_reaches_it(
    fetchers: Callable[..., Fetcher],
) -> None:
    port = port_free_on_both("127.0.0.1", "127.0.0.2")
    registry = HostileRegistry("127.0.0.1", port).start()
    internal = RecordingServer("127.0.0.2", port)  # what the attacker wants the fetcher to reach
    # The first answer passes the guard; every later one names the blocked address.
    dns = DnsServer({"rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})
    try:
        registry.repos["evil/m"] = oci_variant(small_module(7))
        fetcher = fetchers(
            {
                "allow": [f"rebind.test:{port}"],
                "insecure_registries": [f"rebind.test:{port}"],
                "security": {"allow_loopback": True, "blocked_cidrs": ["127.0.0.2/32"]},
                "resolver": {"servers": [dns.address]},
                "pull": {"timeout_seconds": DEADLINE, "failure_backoff_seconds": 0},
            }
        )
        response = fetcher.get(f"oci://rebind.test:{port}/evil/m:v1")
        assert error_of(response) == (403, "blocked_address"), response.text
        assert "127.0.0.2" in response.json()["error"]["message"]
        assert internal.requests == []
        # One query per connection, and the refused one made none.
        assert dns.queries["rebind.test"] == registry.connections + 1
        fetcher.assert_nothing_cached(f"oci://rebind.test:{port}/evil/m")
        fetcher.assert_nothing_running(registry)
    finally:
        dns.stop()
        internal.stop()
        registry.stop()


# --- item 5: what is served is what was verified


@pytest.mark.parametrize(
    ("memory_bytes", "size"),
    [(64 * MiB, 200_000), (0, 200_000), (64 * MiB, 40 * MiB)],
    ids=["in-memory-cache-on", "in-memory-cache-off", "large-module"],
)
def test_a_module_flipped_on_disk_is_evicted_and_pulled_again(
    fetchers: Callable[..., Fetcher], hostile: HostileRegistry, memory_bytes: int, size: int
) -> None:
    module = Blob.large_module(size, seed=size + memory_bytes)
    name = f"flip/m{memory_bytes}-{size}"
    hostile.repos[name] = oci_variant(module)
    fetcher = fetchers(
        {
            "allow": [hostile.address],
            "security": {"allow_loopback": True},
            "cache": {"memory_bytes": memory_bytes},
        }
    )
    url = f"oci://{hostile.address}/{name}:v1"
    etag = f'"{module.digest.split(":")[1]}"'
    first = fetcher.get(url)
    assert first.status_code == 200
    assert first.headers["etag"] == etag
    cached = next((fetcher.proc.cache_dir).glob("*/*.wasm"))
    with cached.open("r+b") as handle:  # one byte, in place, same size
        handle.seek(size // 2)
        byte = handle.read(1)
        handle.seek(size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    blobs_before = hostile.count("GET", f"/{name}/blobs/{module.digest}")
    second = fetcher.get(url)
    assert second.status_code == 200
    assert second.headers["etag"] == etag
    assert hashlib.sha256(second.content).hexdigest() == module.digest.split(":")[1]
    assert hostile.count("GET", f"/{name}/blobs/{module.digest}") == blobs_before + 1  # pulled again
    metrics = fetcher.proc.metrics()
    assert metrics.get('wasmfetcher_cache_evictions_total{reason="corrupt"}') == 1
    assert "event=module_changed_on_disk" in fetcher.proc.log_text()


# --- item 6: reference records are pruned with their modules; the directory is bounded


def test_distinct_urls_do_not_grow_the_cache_without_bound(
    fetchers: Callable[..., Fetcher], hostile: HostileRegistry
) -> None:
    fetcher = fetchers(
        {"allow": [hostile.address], "security": {"allow_loopback": True}, "cache": {"max_bytes": 10_000}}
    )
    for i in range(30):
        hostile.repos[f"many/m{i}"] = oci_variant(small_module(100 + i))
        assert fetcher.get(f"oci://{hostile.address}/many/m{i}:v1").status_code == 200
    cache = fetcher.proc.cache_dir
    modules = list(cache.glob("*/*.wasm"))
    refs = list((cache / "refs").glob("*.json"))
    assert 1 <= len(modules) <= 5  # 2 KB modules under a 10 KB cap
    assert len(refs) == len(modules), "reference records outlived their modules"


def test_the_number_of_entries_is_bounded_whatever_the_bytes(
    fetchers: Callable[..., Fetcher], hostile: HostileRegistry
) -> None:
    fetcher = fetchers(
        {
            "allow": [hostile.address],
            "security": {"allow_loopback": True},
            "cache": {"max_bytes": 1 << 30, "max_entries": 4},
        }
    )
    for i in range(12):
        hostile.repos[f"count/m{i}"] = oci_variant(small_module(200 + i))
        for tag in ("v1", "v2"):
            assert fetcher.get(f"oci://{hostile.address}/count/m{i}:{tag}").status_code == 200
    cache = fetcher.proc.cache_dir
    assert len(list(cache.glob("*/*.wasm"))) == 4
    assert len([p for p in cache.iterdir() if p.name not in (".tmp", "refs")]) == 4
    assert len(list((cache / "refs").glob("*.json"))) <= 4


# --- item 2 at suite scale: concurrent large pulls stream to disk


def test_concurrent_large_pulls_do_not_hold_modules_in_memory(
    fetchers: Callable[..., Fetcher], hostile: HostileRegistry
) -> None:
    size = 48 * MiB
    modules = [Blob.large_module(size, seed=1000 + i) for i in range(4)]
    for i, module in enumerate(modules):
        hostile.repos[f"big/m{i}"] = oci_variant(module)
    hostile.repos["big/warm"] = oci_variant(small_module(8))
    fetcher = fetchers({"allow": [hostile.address], "security": {"allow_loopback": True}})
    assert fetcher.get(f"oci://{hostile.address}/big/warm:v1").status_code == 200
    fetcher.baseline_hwm = fetcher.hwm
    digests: dict[int, str] = {}

    def pull(i: int) -> None:
        digest = hashlib.sha256()
        with httpx.stream(
            "GET", fetcher.proc.fetch_url(f"oci://{hostile.address}/big/m{i}:v1"), timeout=120
        ) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes(MiB):
                digest.update(chunk)
        digests[i] = "sha256:" + digest.hexdigest()

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert digests == {i: m.digest for i, m in enumerate(modules)}
    # Four 48 MiB modules held in memory would be 192 MiB at least.
    assert fetcher.grown() <= MEMORY_BOUND, f"peak RSS grew by {fetcher.grown() / MiB:.0f} MiB"


# --- item 7: a full or read-only cache while running, named and reported by /readyz


def _private_mounts() -> bool:
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.skipif(not _private_mounts(), reason="needs unshare --mount (CAP_SYS_ADMIN) for a private tmpfs")
def test_a_full_or_read_only_cache_gets_named_errors_and_readiness_says_so(
    fetchers: Callable[..., Fetcher], hostile: HostileRegistry, tmp_path: Path
) -> None:
    # A real small file system, private to the fetcher's mount namespace (gone with it).
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    mount = 'mount -t tmpfs -o size=8m tmpfs "$0" && exec "$@"'
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, str(cache_dir)]
    fetcher = fetchers(
        {
            "allow": [hostile.address],
            "security": {"allow_loopback": True},
            "pull": {"failure_backoff_seconds": 0},
        },
        cache_dir=cache_dir,
        wrapper=wrapper,
    )
    seen = Path(f"/proc/{fetcher.proc.pid}/root") / str(cache_dir).lstrip("/")  # the fetcher's view
    readyz = f"{fetcher.proc.url}/readyz"
    hostile.repos["disk/small"] = oci_variant(small_module(9))
    hostile.repos["disk/big"] = oci_variant(Blob.large_module(12 * MiB, seed=9))
    hostile.repos["disk/other"] = oci_variant(small_module(10))
    assert fetcher.get(f"oci://{hostile.address}/disk/small:v1").status_code == 200

    # A module larger than the room left: 507, nothing left behind, and ready again after.
    assert error_of(fetcher.get(f"oci://{hostile.address}/disk/big:v1")) == (507, "cache_full")
    fetcher.assert_nothing_cached(f"oci://{hostile.address}/disk/big", root=seen)
    assert httpx.get(readyz, timeout=5).status_code == 200

    # The file system filled by someone else: not ready, and pulls say why.
    filler = seen / "filler"
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * MiB)
    try:
        assert error_of(httpx.get(readyz, timeout=5)) == (503, "cache_full")
        assert error_of(fetcher.get(f"oci://{hostile.address}/disk/other:v1")) == (507, "cache_full")
        fetcher.assert_nothing_cached(f"oci://{hostile.address}/disk/other", root=seen)
    finally:
        filler.unlink()
    assert httpx.get(readyz, timeout=5).status_code == 200

    # Remounted read-only: not ready, new pulls refused by name, cached modules still served.
    subprocess.run(
        ["nsenter", "-t", str(fetcher.proc.pid), "-m", "mount", "-o", "remount,ro", str(cache_dir)],
        check=True,
        timeout=10,
    )
    assert error_of(httpx.get(readyz, timeout=5)) == (503, "cache_unwritable")
    assert error_of(fetcher.get(f"oci://{hostile.address}/disk/other:v1")) == (503, "cache_unwritable")
    cached = fetcher.get(f"oci://{hostile.address}/disk/small:v1")
    assert cached.status_code == 200
    assert "internal" not in fetcher.proc.log_text()
