"""The on-disk module cache, in Istio's layout, shared by the wasmfetcher and the gateway agent.

Layout (docs/architecture.md, "Istio agent and images")::

    <root>/<hex sha256(module name)>/<checksum>.wasm   the module
    <root>/<hex sha256(module name)>/<checksum>.json   its record: module name, sha256, size
    <root>/refs/<hex sha256(url)>.json                 what a tagged URL resolved to, and when
    <root>/.tmp/                                       downloads in progress (emptied at start)

The module name is ``oci://registry/repo`` (no tag or digest) or the full http
URL; the checksum is the manifest digest's hex for OCI and the module's sha256
for http. A module is written to ``.tmp``, hashed while it is written, and
renamed into place only after its checksum verifies, so a crash (even SIGKILL)
never leaves a partial entry: an entry exists only when both files do, and the
first read after a start re-hashes the bytes. The cache is synchronous and
thread-safe; async callers run slow calls in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from meshwasm.errors import IntegrityError, MeshwasmError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TMP = ".tmp"
_REFS = "refs"
# Last-use times are written to disk at most this often per entry (they order
# LRU eviction and expiry across restarts; a minute of drift does not matter).
_TOUCH_EVERY = 60.0


class CacheError(MeshwasmError):
    """The cache directory cannot be used (permissions, not a directory, disk full)."""


class ChecksumMismatchError(IntegrityError):
    """Downloaded bytes do not match the checksum they were expected to have."""


def module_dir_name(module_name: str) -> str:
    return hashlib.sha256(module_name.encode()).hexdigest()


def normalize_checksum(checksum: str) -> str:
    """``sha256:<hex>`` or ``<hex>`` -> ``<hex>``; anything else is refused (it becomes a file name)."""
    value = checksum.removeprefix("sha256:").lower()
    if not _HEX64.match(value):
        raise IntegrityError(f"invalid checksum {checksum!r}: expected 64 hex digits (sha256)")
    return value


@dataclass(frozen=True)
class CacheEntry:
    module_name: str
    checksum: str  # hex: manifest digest for OCI, module sha256 for http
    sha256: str  # hex sha256 of the module bytes (the ETag)
    size: int
    path: Path
    stored_at: float


@dataclass(frozen=True)
class RefRecord:
    """What a URL (with its tag) last resolved to, for pull policies across restarts."""

    url: str
    module_name: str
    checksum: str
    resolved_at: float
    # What the tag resolved to when that differs from the checksum (an image index's digest).
    resolved_digest: str | None = None


@dataclass
class _Slot:
    entry: CacheEntry
    last_used: float
    touched_on_disk: float
    verified: bool


class PendingModule:
    """A module being downloaded into the cache: write chunks, then :meth:`commit`.

    Leaving the ``with`` block without a commit (an error, a size cap) deletes the
    temporary file; a process killed meanwhile leaves it in ``.tmp``, which the
    next :class:`ModuleCache` removes.
    """

    def __init__(self, cache: ModuleCache, module_name: str):
        self._cache = cache
        self.module_name = module_name
        fd, name = tempfile.mkstemp(prefix="pull-", suffix=".part", dir=cache.root / _TMP)
        self.path = Path(name)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(self, checksum: str | None = None, *, expect_sha256: str | None = None) -> CacheEntry:
        """Verify and move into place. ``checksum`` defaults to the bytes' sha256 (http sources)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        actual = self.sha256
        if expect_sha256 is not None and normalize_checksum(expect_sha256) != actual:
            raise ChecksumMismatchError(
                f"{self.module_name}: module sha256 is {actual}, expected {normalize_checksum(expect_sha256)}"
            )
        final_checksum = normalize_checksum(checksum) if checksum is not None else actual
        entry = self._cache._install(self.module_name, final_checksum, actual, self.size, self.path)
        self._done = True
        return entry

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._done = True

    def __enter__(self) -> PendingModule:
        return self

    def __exit__(self, *_exc: object) -> None:
        if not self._done:
            self.abort()


class ModuleCache:
    """Content-addressed module cache with LRU size cap and expiry (see module doc)."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int | None = None,
        expiry_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        on_evict: Callable[[CacheEntry, str], None] | None = None,
    ):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.expiry_seconds = expiry_seconds
        self._clock = clock
        self._on_evict = on_evict
        self._lock = threading.RLock()
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._refs: dict[str, RefRecord] = {}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.root / _TMP, ignore_errors=True)
            (self.root / _TMP).mkdir(exist_ok=True)
            (self.root / _REFS).mkdir(exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cannot use cache directory {self.root}: {exc}",
                hint="point --cache-dir at a writable directory",
            ) from exc
        self._load()
        self.purge_expired()
        self._evict_to_fit(keep=None)

    # ----- reading

    def get(self, module_name: str, checksum: str) -> CacheEntry | None:
        """The entry, touched as recently used; re-hashed on its first read after start.

        An entry whose bytes no longer match its record is removed and reported as
        missing, so the caller pulls it again.
        """
        key = (module_name, normalize_checksum(checksum))
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return None
            needs_verify = not slot.verified
        if needs_verify and not self._verify(slot.entry):
            self._remove(key, reason="corrupt")
            return None
        with self._lock:
            if key not in self._slots:
                return None
            slot.verified = True
            self._touch(slot)
            return slot.entry

    def is_verified(self, module_name: str, checksum: str) -> bool:
        """True when :meth:`get` would not need to hash the file (cheap to call from an event loop)."""
        with self._lock:
            slot = self._slots.get((module_name, checksum))
            return slot is not None and slot.verified

    def entries(self) -> list[CacheEntry]:
        with self._lock:
            return [s.entry for s in self._slots.values()]

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(s.entry.size for s in self._slots.values())

    # ----- writing

    def begin(self, module_name: str) -> PendingModule:
        """Start a streamed download of ``module_name`` (use as a context manager)."""
        return PendingModule(self, module_name)

    def put(
        self, module_name: str, checksum: str | None, data: bytes, *, expect_sha256: str | None = None
    ) -> CacheEntry:
        """Store ``data`` (already in memory) atomically; ``checksum`` None means its sha256."""
        with self.begin(module_name) as pending:
            pending.write(data)
            return pending.commit(checksum, expect_sha256=expect_sha256)

    def remove(self, module_name: str, checksum: str) -> None:
        self._remove((module_name, normalize_checksum(checksum)), reason="removed")

    # ----- references (tag -> checksum), for pull policies

    def get_ref(self, url: str) -> RefRecord | None:
        with self._lock:
            return self._refs.get(url)

    def set_ref(
        self,
        url: str,
        module_name: str,
        checksum: str,
        *,
        resolved_at: float | None = None,
        resolved_digest: str | None = None,
    ) -> None:
        record = RefRecord(
            url,
            module_name,
            normalize_checksum(checksum),
            resolved_at or self._clock(),
            normalize_checksum(resolved_digest) if resolved_digest else None,
        )
        path = self._ref_path(url)
        _write_json_atomic(path, record.__dict__, tmp_dir=self.root / _TMP)
        with self._lock:
            self._refs[url] = record

    # ----- housekeeping

    def purge_expired(self) -> int:
        """Remove entries unused for longer than the expiry; returns how many."""
        if self.expiry_seconds is None:
            return 0
        limit = self._clock() - self.expiry_seconds
        with self._lock:
            stale = [k for k, s in self._slots.items() if s.last_used < limit]
        for key in stale:
            self._remove(key, reason="expired")
        return len(stale)

    # ----- internals

    def _entry_paths(self, module_name: str, checksum: str) -> tuple[Path, Path]:
        folder = self.root / module_dir_name(module_name)
        return folder / f"{checksum}.wasm", folder / f"{checksum}.json"

    def _ref_path(self, url: str) -> Path:
        return self.root / _REFS / f"{hashlib.sha256(url.encode()).hexdigest()}.json"

    def _install(self, module_name: str, checksum: str, sha256: str, size: int, tmp: Path) -> CacheEntry:
        wasm_path, record_path = self._entry_paths(module_name, checksum)
        now = self._clock()
        record = {"module_name": module_name, "checksum": checksum, "sha256": sha256, "size": size}
        record["stored_at"] = now
        try:
            wasm_path.parent.mkdir(exist_ok=True)
            # The record first: a crash before the module's rename leaves a record
            # without a module, which _load() discards.
            _write_json_atomic(record_path, record, tmp_dir=self.root / _TMP)
            os.replace(tmp, wasm_path)
            _fsync_dir(wasm_path.parent)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise CacheError(f"cannot store {module_name} in {self.root}: {exc}") from exc
        entry = CacheEntry(module_name, checksum, sha256, size, wasm_path, now)
        with self._lock:
            self._slots[(module_name, checksum)] = _Slot(entry, now, now, verified=True)
        self._evict_to_fit(keep=(module_name, checksum))
        return entry

    def _verify(self, entry: CacheEntry) -> bool:
        digest = hashlib.sha256()
        try:
            with entry.path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError:
            return False
        return digest.hexdigest() == entry.sha256

    def _touch(self, slot: _Slot) -> None:
        now = self._clock()
        slot.last_used = now
        if now - slot.touched_on_disk >= _TOUCH_EVERY:
            slot.touched_on_disk = now
            with contextlib.suppress(OSError):
                os.utime(slot.entry.path, (now, now))

    def _remove(self, key: tuple[str, str], *, reason: str) -> None:
        with self._lock:
            slot = self._slots.pop(key, None)
        wasm_path, record_path = self._entry_paths(*key)
        for path in (wasm_path, record_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):
            wasm_path.parent.rmdir()  # only when empty
        if slot is not None and self._on_evict is not None:
            self._on_evict(slot.entry, reason)

    def _evict_to_fit(self, *, keep: tuple[str, str] | None) -> None:
        if self.max_bytes is None:
            return
        while True:
            with self._lock:
                total = sum(s.entry.size for s in self._slots.values())
                if total <= self.max_bytes:
                    return
                candidates = sorted((s.last_used, k) for k, s in self._slots.items() if k != keep)
            if not candidates:
                return
            self._remove(candidates[0][1], reason="evicted")

    def _load(self) -> None:
        """Index what a previous run left; drop anything incomplete."""
        for folder in self.root.iterdir():
            if not folder.is_dir() or not _HEX64.match(folder.name):
                continue
            for path in folder.iterdir():
                if path.suffix == ".json":
                    self._load_entry(folder, path)
                elif path.suffix == ".wasm" and not path.with_suffix(".json").exists():
                    path.unlink()  # a module without its record: unknown provenance
            with contextlib.suppress(OSError):
                folder.rmdir()
        for path in (self.root / _REFS).glob("*.json"):
            data = _read_json(path)
            try:
                record = RefRecord(
                    str(data["url"]),
                    str(data["module_name"]),
                    str(data["checksum"]),
                    float(data["resolved_at"]),
                    str(data["resolved_digest"]) if data.get("resolved_digest") else None,
                )
            except (KeyError, TypeError, ValueError):
                path.unlink()
                continue
            self._refs[record.url] = record

    def _load_entry(self, folder: Path, record_path: Path) -> None:
        wasm_path = record_path.with_suffix(".wasm")
        data = _read_json(record_path)
        try:
            entry = CacheEntry(
                module_name=str(data["module_name"]),
                checksum=str(data["checksum"]),
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                path=wasm_path,
                stored_at=float(data["stored_at"]),
            )
            stat = wasm_path.stat()
        except (KeyError, TypeError, ValueError, OSError):
            for path in (record_path, wasm_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return
        consistent = (
            folder.name == module_dir_name(entry.module_name)
            and record_path.stem == entry.checksum
            and stat.st_size == entry.size
        )
        if not consistent:
            record_path.unlink()
            wasm_path.unlink()
            return
        self._slots[(entry.module_name, entry.checksum)] = _Slot(
            entry, stat.st_mtime, stat.st_mtime, verified=False
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json_atomic(path: Path, data: dict[str, Any], *, tmp_dir: Path) -> None:
    fd, name = tempfile.mkstemp(prefix="record-", suffix=".part", dir=tmp_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
