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
first read after a start re-hashes the bytes.

What is served is what was verified: each verification records the file's
identity (inode, size, mtime and ctime in ns; a write, even one that restores
the mtime, moves the ctime). :meth:`ModuleCache.unchanged` compares it with a
stat, cheaply, before every serve; a file that changed is hashed again
(:meth:`ModuleCache.reverify`) and evicted when it no longer matches. The
cache never writes a module file after installing it (last use is recorded on
the record file), so its own bookkeeping never looks like a change.

Bounded whatever the URLs: ``max_bytes`` caps module bytes, ``max_entries``
the number of modules and of reference records (LRU), and a module's
reference records go with it.

The cache is synchronous and thread-safe; async callers run slow calls in a
worker thread. Write failures are :class:`CacheFullError` (ENOSPC, EDQUOT) or
:class:`CacheUnwritableError` (read-only, permissions, I/O).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
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
DEFAULT_MAX_ENTRIES = 4096
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_HASH_CHUNK = 1 << 20

Signature = tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns


class CacheError(MeshwasmError):
    """The cache directory cannot be used (permissions, not a directory, disk full)."""


class CacheFullError(CacheError):
    """The cache's file system has no room (ENOSPC, EDQUOT, EFBIG)."""


class CacheUnwritableError(CacheError):
    """The cache directory cannot be written (read-only file system, permissions, I/O errors)."""


def cache_error(exc: OSError, what: str) -> CacheError:
    """The named cache error for an OSError met while writing the cache."""
    if exc.errno in _FULL_ERRNOS:
        return CacheFullError(
            f"{what}: the cache is full ({exc.strerror or exc})", hint="free space or raise its size"
        )
    return CacheUnwritableError(
        f"{what}: the cache cannot be written ({exc.strerror or exc})",
        hint="the cache directory must be writable (check the volume and its mount options)",
    )


def _signature(stat: os.stat_result) -> Signature:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


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
    signature: Signature | None = None  # the file as it was when its bytes were verified


class StagingBudget:
    """Bytes that downloads in progress may occupy in ``.tmp`` together: pulls stream to disk
    instead of memory, so the disk they take is bounded too (a charge over the limit raises
    :class:`CacheFullError`, and that pull fails; the others go on)."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, size: int) -> None:
        with self._lock:
            if self.limit is not None and self.used + size > self.limit:
                raise CacheFullError(
                    f"downloads in progress would take more than {self.limit} bytes of staging space",
                    hint="retry later, or raise cache.max_staging_bytes (and the volume with it)",
                )
            self.used += size

    def release(self, size: int) -> None:
        with self._lock:
            self.used = max(self.used - size, 0)


class PendingModule:
    """A module being downloaded into the cache: write chunks, then :meth:`commit`.

    Leaving the ``with`` block without a commit (an error, a size cap) deletes the
    temporary file; a process killed meanwhile leaves it in ``.tmp``, which the
    next :class:`ModuleCache` removes.
    """

    def __init__(self, cache: ModuleCache, module_name: str):
        self._cache = cache
        self.module_name = module_name
        try:
            fd, name = tempfile.mkstemp(prefix="pull-", suffix=".part", dir=cache.root / _TMP)
        except OSError as exc:
            raise cache_error(exc, f"storing {module_name}") from exc
        self.path = Path(name)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False
        self._released = False

    def write(self, chunk: bytes) -> None:
        self._cache.staging.charge(len(chunk))
        self.size += len(chunk)
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise cache_error(exc, f"storing {self.module_name}") from exc
        self._hash.update(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def read_back(self) -> IO[bytes]:
        """The bytes written so far, from the start: for a pass over them before :meth:`commit`."""
        try:
            self._file.flush()
            return self.path.open("rb")
        except OSError as exc:
            raise cache_error(exc, f"storing {self.module_name}") from exc

    def commit(self, checksum: str | None = None, *, expect_sha256: str | None = None) -> CacheEntry:
        """Verify and move into place. ``checksum`` defaults to the bytes' sha256 (http sources)."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            raise cache_error(exc, f"storing {self.module_name}") from exc
        actual = self.sha256
        if expect_sha256 is not None and normalize_checksum(expect_sha256) != actual:
            raise ChecksumMismatchError(
                f"{self.module_name}: module sha256 is {actual}, expected {normalize_checksum(expect_sha256)}"
            )
        final_checksum = normalize_checksum(checksum) if checksum is not None else actual
        try:
            entry = self._cache._install(self.module_name, final_checksum, actual, self.size, self.path)
        finally:
            self._release()
        self._done = True
        return entry

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._cache.staging.release(self.size)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._release()
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
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_staging_bytes: int | None = None,
    ):
        self.root = Path(root)
        self.staging = StagingBudget(max_staging_bytes)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.expiry_seconds = expiry_seconds
        self._clock = clock
        self._on_evict = on_evict
        self._lock = threading.RLock()
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._refs: OrderedDict[str, RefRecord] = OrderedDict()  # least recently used first
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
        try:
            self._load()
        except OSError as exc:
            raise cache_error(exc, f"loading the cache {self.root}") from exc
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
        if needs_verify:
            signature = self._verify(slot.entry)
            if signature is None:
                self._remove(key, reason="corrupt")
                return None
            slot.signature = signature
        with self._lock:
            if key not in self._slots:
                return None
            slot.verified = True
            self._touch(slot)
            return slot.entry

    def unchanged(self, entry: CacheEntry) -> bool:
        """True when the module file is, by its identity, the one whose bytes were verified
        (one stat; cheap enough for an event loop). False: call :meth:`reverify`."""
        with self._lock:
            slot = self._slots.get((entry.module_name, entry.checksum))
            expected = slot.signature if slot is not None and slot.verified else None
        if expected is None:
            return False
        try:
            return _signature(os.stat(entry.path)) == expected
        except OSError:
            return False

    def open_unchanged(self, entry: CacheEntry) -> IO[bytes] | None:
        """The module file opened for serving, if the file opened is the verified one (the check
        is on the open descriptor, so a file swapped in after it is not what is read)."""
        with self._lock:
            slot = self._slots.get((entry.module_name, entry.checksum))
            expected = slot.signature if slot is not None and slot.verified else None
        if expected is None:
            return None
        try:
            handle = entry.path.open("rb")
        except OSError:
            return None
        if _signature(os.fstat(handle.fileno())) != expected:
            handle.close()
            return None
        return handle

    def reverify(self, entry: CacheEntry) -> bool:
        """Hash the module again (it may have changed on disk); a mismatch evicts it.

        Returns True when the file still holds the verified bytes (its identity is recorded
        anew); False when it was evicted or is gone.
        """
        key = (entry.module_name, entry.checksum)
        with self._lock:
            if key not in self._slots:
                return False
        signature = self._verify(entry)
        if signature is None:
            self._remove(key, reason="corrupt")
            return False
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return False
            slot.signature, slot.verified = signature, True
        return True

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

    def remove(self, module_name: str, checksum: str, *, reason: str = "removed") -> None:
        self._remove((module_name, normalize_checksum(checksum)), reason=reason)

    @property
    def staging_dir(self) -> Path:
        """Where downloads in progress are written (emptied at start); files for :meth:`install_file`."""
        return self.root / _TMP

    def install_file(
        self, module_name: str, checksum: str, path: Path, *, sha256: str, size: int
    ) -> CacheEntry:
        """Move a verified download from :attr:`staging_dir` into the cache (``sha256`` and ``size``
        were computed while it was written; the file is synced before it is renamed)."""
        try:
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise cache_error(exc, f"storing {module_name}") from exc
        return self._install(module_name, normalize_checksum(checksum), sha256, size, path)

    # ----- references (tag -> checksum), for pull policies

    def get_ref(self, url: str) -> RefRecord | None:
        with self._lock:
            record = self._refs.get(url)
            if record is not None:
                self._refs.move_to_end(url)
            return record

    def refs(self) -> list[RefRecord]:
        with self._lock:
            return list(self._refs.values())

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
        try:
            _write_json_atomic(path, record.__dict__, tmp_dir=self.root / _TMP)
        except OSError as exc:
            raise cache_error(exc, f"recording what {url} resolved to") from exc
        with self._lock:
            self._refs[url] = record
            self._refs.move_to_end(url)
            dropped = []
            while len(self._refs) > self.max_entries:
                dropped.append(self._refs.popitem(last=False)[0])
        for old in dropped:
            with contextlib.suppress(OSError):
                self._ref_path(old).unlink()

    # ----- health

    def probe_writable(self) -> CacheError | None:
        """Write, sync and delete a small file where downloads go: None when that works, else
        the named error (full, read-only, ...). For readiness probes."""
        try:
            fd, name = tempfile.mkstemp(prefix="probe-", dir=self.root / _TMP)
        except OSError as exc:
            return cache_error(exc, f"probing the cache {self.root}")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        except OSError as exc:
            return cache_error(exc, f"probing the cache {self.root}")
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name)
        return None

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
            signature = _signature(os.stat(wasm_path))
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise cache_error(exc, f"storing {module_name} in {self.root}") from exc
        entry = CacheEntry(module_name, checksum, sha256, size, wasm_path, now)
        with self._lock:
            self._slots[(module_name, checksum)] = _Slot(entry, now, now, verified=True, signature=signature)
        self._evict_to_fit(keep=(module_name, checksum))
        return entry

    def _verify(self, entry: CacheEntry) -> Signature | None:
        """Hash the file; its identity when the bytes match (and did not change meanwhile)."""
        digest = hashlib.sha256()
        try:
            with entry.path.open("rb") as f:
                before = _signature(os.fstat(f.fileno()))
                for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                    digest.update(chunk)
                after = _signature(os.fstat(f.fileno()))
        except OSError:
            return None
        if digest.hexdigest() != entry.sha256 or before != after:
            return None
        return after

    def _touch(self, slot: _Slot) -> None:
        now = self._clock()
        slot.last_used = now
        if now - slot.touched_on_disk >= _TOUCH_EVERY:
            slot.touched_on_disk = now
            record_path = self._entry_paths(slot.entry.module_name, slot.entry.checksum)[1]
            with contextlib.suppress(OSError):
                os.utime(record_path, (now, now))  # never the module: its identity is its proof

    def _remove(self, key: tuple[str, str], *, reason: str) -> None:
        with self._lock:
            slot = self._slots.pop(key, None)
        wasm_path, record_path = self._entry_paths(*key)
        for path in (wasm_path, record_path):
            # A read-only cache keeps the files; the entry is gone from memory all the same,
            # and the next start re-verifies whatever is left.
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            wasm_path.parent.rmdir()  # only when empty
        self._prune_refs(key)
        if slot is not None and self._on_evict is not None:
            self._on_evict(slot.entry, reason)

    def _prune_refs(self, key: tuple[str, str]) -> None:
        """Reference records go with the module they name."""
        with self._lock:
            urls = [u for u, r in self._refs.items() if (r.module_name, r.checksum) == key]
            for url in urls:
                del self._refs[url]
        for url in urls:
            with contextlib.suppress(OSError):
                self._ref_path(url).unlink()

    def _evict_to_fit(self, *, keep: tuple[str, str] | None) -> None:
        while True:
            with self._lock:
                total = sum(s.entry.size for s in self._slots.values())
                over_bytes = self.max_bytes is not None and total > self.max_bytes
                if not over_bytes and len(self._slots) <= self.max_entries:
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
        records: list[RefRecord] = []
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
                record = None
            # A record whose module is gone names nothing: it goes (a previous run died mid-eviction).
            if record is None or (record.module_name, record.checksum) not in self._slots:
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            records.append(record)
        records.sort(key=lambda r: r.resolved_at)
        for record in records[-self.max_entries :]:
            self._refs[record.url] = record
        for record in records[: -self.max_entries]:
            with contextlib.suppress(OSError):
                self._ref_path(record.url).unlink()

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
        try:
            last_used = record_path.stat().st_mtime  # _touch records last use on the record
        except OSError:
            last_used = stat.st_mtime
        self._slots[(entry.module_name, entry.checksum)] = _Slot(entry, last_used, last_used, verified=False)


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
