"""The module cache: Istio's layout, atomic writes, verification, LRU cap, expiry, restarts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from meshwasm.errors import IntegrityError
from meshwasm.fetcher.cache import ChecksumMismatchError, ModuleCache

NAME = "oci://127.0.0.1:5000/team/add-header"
DIGEST = "sha256:" + "d" * 64


def module(n: int, fill: bytes = b"x") -> bytes:
    return b"\0asm\x01\0\0\0" + fill * n


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_is_istios(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path)
    data = module(10)
    entry = cache.put(NAME, DIGEST, data)
    folder = hashlib.sha256(NAME.encode()).hexdigest()
    assert entry.path == tmp_path / folder / f"{'d' * 64}.wasm"
    assert entry.path.read_bytes() == data
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert cache.get(NAME, DIGEST) == entry


def test_http_modules_are_keyed_by_their_sha256(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path)
    data = module(5)
    entry = cache.put("http://h/m.wasm", None, data)
    assert entry.checksum == hashlib.sha256(data).hexdigest() == entry.path.stem


def test_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path)
    with pytest.raises(ChecksumMismatchError):
        cache.put(NAME, DIGEST, module(5), expect_sha256="0" * 64)
    assert cache.entries() == []
    assert files(tmp_path) == []


def test_an_aborted_download_leaves_nothing(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path)

    def interrupted_download() -> None:
        with cache.begin(NAME) as pending:
            pending.write(b"\0asm partial")
            raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError):
        interrupted_download()
    assert files(tmp_path) == []


def test_a_killed_download_is_cleared_at_start(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path)
    pending = cache.begin(NAME)
    pending.write(b"\0asm partial")  # the process "dies" here: no commit, no abort
    assert any(".tmp" in f for f in files(tmp_path))
    restarted = ModuleCache(tmp_path)
    assert files(tmp_path) == []
    assert restarted.entries() == []


def test_entries_survive_a_restart_and_are_reverified_once(tmp_path: Path) -> None:
    data = module(100)
    ModuleCache(tmp_path).put(NAME, DIGEST, data)
    restarted = ModuleCache(tmp_path)
    assert not restarted.is_verified(NAME, DIGEST.removeprefix("sha256:"))
    entry = restarted.get(NAME, DIGEST)
    assert entry is not None
    assert entry.path.read_bytes() == data
    assert restarted.is_verified(NAME, "d" * 64)


def test_corrupted_entry_is_dropped_on_first_read_after_start(tmp_path: Path) -> None:
    entry = ModuleCache(tmp_path).put(NAME, DIGEST, module(100))
    raw = bytearray(entry.path.read_bytes())
    raw[-1] ^= 0xFF  # same size, different bytes
    entry.path.write_bytes(bytes(raw))
    restarted = ModuleCache(tmp_path)
    assert restarted.get(NAME, DIGEST) is None
    assert not entry.path.exists()


def test_half_written_entries_are_discarded_at_start(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path)
    entry = cache.put(NAME, DIGEST, module(10))
    entry.path.unlink()  # crash between the record's rename and the module's
    orphan = tmp_path / entry.path.parent.name / f"{'e' * 64}.wasm"
    orphan.write_bytes(module(3))  # a module without a record
    ModuleCache(tmp_path)
    assert files(tmp_path) == []


def test_lru_eviction_keeps_the_cache_under_its_cap(tmp_path: Path) -> None:
    clock = Clock()
    evicted: list[str] = []
    cache = ModuleCache(
        tmp_path, max_bytes=250, clock=clock, on_evict=lambda e, why: evicted.append(e.module_name)
    )
    for name in ("a", "b"):
        cache.put(f"http://h/{name}", None, module(100, name.encode()))
        clock.now += 1
    cache.get("http://h/a", cache.entries()[0].checksum)  # a is now the most recently used
    clock.now += 1
    cache.put("http://h/c", None, module(100, b"c"))
    assert sorted(e.module_name for e in cache.entries()) == ["http://h/a", "http://h/c"]
    assert evicted == ["http://h/b"]
    assert cache.total_bytes <= 250


def test_a_module_larger_than_the_cap_is_still_stored_alone(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path, max_bytes=50)
    cache.put("http://h/a", None, module(10))
    big = cache.put("http://h/big", None, module(100))
    assert cache.entries() == [big]


def test_expired_entries_are_purged(tmp_path: Path) -> None:
    clock = Clock()
    cache = ModuleCache(tmp_path, expiry_seconds=60, clock=clock)
    old = cache.put("http://h/old", None, module(1, b"o"))
    clock.now += 50
    fresh = cache.put("http://h/fresh", None, module(1, b"f"))
    clock.now += 20
    assert cache.purge_expired() == 1
    assert cache.entries() == [fresh]
    assert not old.path.exists()


def test_refs_survive_restarts(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path)
    cache.put("oci://r/a", DIGEST, module(3))
    cache.set_ref("oci://r/a:v1", "oci://r/a", DIGEST, resolved_at=123.0)
    ref = ModuleCache(tmp_path).get_ref("oci://r/a:v1")
    assert ref is not None
    assert (ref.checksum, ref.resolved_at) == ("d" * 64, 123.0)


def test_refs_go_with_their_module(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path, max_bytes=150)
    a = cache.put("http://h/a", None, module(100, b"a"))
    cache.set_ref("http://h/a", a.module_name, a.checksum)
    cache.set_ref("http://h/a?alias", a.module_name, a.checksum)
    assert len(list((tmp_path / "refs").iterdir())) == 2
    cache.put("http://h/b", None, module(100, b"b"))  # evicts a
    assert cache.get_ref("http://h/a") is None
    assert cache.get_ref("http://h/a?alias") is None
    assert list((tmp_path / "refs").iterdir()) == []


def test_refs_without_their_module_are_dropped_at_start(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path)
    cache.set_ref("oci://r/a:v1", "oci://r/a", DIGEST)  # its module was never stored
    assert ModuleCache(tmp_path).get_ref("oci://r/a:v1") is None
    assert list((tmp_path / "refs").iterdir()) == []


def test_entries_and_refs_are_bounded_in_number_whatever_the_bytes(tmp_path: Path) -> None:
    clock = Clock()
    cache = ModuleCache(tmp_path, max_bytes=None, max_entries=3, clock=clock)
    for i in range(10):
        entry = cache.put(f"http://h/{i}", None, module(1, bytes([65 + i])))
        for alias in range(3):
            cache.set_ref(f"http://h/{i}?{alias}", entry.module_name, entry.checksum)
        clock.now += 1
    assert [e.module_name for e in cache.entries()] == [f"http://h/{i}" for i in (7, 8, 9)]
    assert len(cache.refs()) <= 3
    folders = [p for p in tmp_path.iterdir() if p.name not in (".tmp", "refs")]
    assert len(folders) == 3
    assert len(list((tmp_path / "refs").iterdir())) <= 3


def test_a_module_changed_on_disk_is_detected_by_its_identity_and_evicted(tmp_path: Path) -> None:
    evicted: list[str] = []
    cache = ModuleCache(tmp_path, on_evict=lambda e, why: evicted.append(why))
    entry = cache.put(NAME, DIGEST, module(100))
    assert cache.unchanged(entry)
    with entry.path.open("r+b") as f:  # same size, one byte flipped, in place
        f.seek(50)
        f.write(b"\xff")
    assert not cache.unchanged(entry)
    assert cache.open_unchanged(entry) is None
    assert not cache.reverify(entry)
    assert evicted == ["corrupt"]
    assert cache.entries() == []
    assert not entry.path.exists()


def test_a_rewrite_with_the_same_bytes_is_verified_again_and_kept(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path)
    data = module(100)
    entry = cache.put(NAME, DIGEST, data)
    entry.path.write_bytes(data)  # touched, bytes unchanged
    assert not cache.unchanged(entry)
    assert cache.reverify(entry)
    assert cache.unchanged(entry)
    handle = cache.open_unchanged(entry)
    assert handle is not None
    with handle:
        assert handle.read() == data


def test_last_use_is_recorded_without_touching_the_module(tmp_path: Path) -> None:
    clock = Clock()
    cache = ModuleCache(tmp_path, clock=clock)
    entry = cache.put(NAME, DIGEST, module(10))
    before = entry.path.stat()
    clock.now += 3600
    assert cache.get(NAME, DIGEST) is not None  # recorded as used (on the record file)
    after = entry.path.stat()
    assert (after.st_mtime_ns, after.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)
    assert cache.unchanged(entry)


def test_checksums_must_be_sha256_hex(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError):
        ModuleCache(tmp_path).put(NAME, "../../etc/passwd", module(1))


def test_downloads_in_progress_share_a_staging_budget(tmp_path: Path) -> None:
    from meshwasm.fetcher.cache import CacheFullError

    cache = ModuleCache(tmp_path, max_staging_bytes=1000)
    with cache.begin("http://h/a") as first:
        first.write(b"\0asm" + b"a" * 596)
        with pytest.raises(CacheFullError, match="staging"), cache.begin("http://h/b") as second:
            second.write(b"\0asm" + b"b" * 496)  # 600 + 500 > 1000
        assert cache.staging.used == 600  # the refused one charged nothing, and left no file
        first.commit()
    assert cache.staging.used == 0  # committed: it is cache bytes now, not staging
    with cache.begin("http://h/c") as third:
        third.write(b"\0asm" + b"c" * 900)
    assert cache.staging.used == 0  # aborted: released
    assert files(tmp_path / ".tmp") == []
