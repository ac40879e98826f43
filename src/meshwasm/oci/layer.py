"""Reading one file out of a tar+gzip layer within bounds: members, bytes and time.

A layer comes from a registry and is only as honest as the registry: a few hundred kilobytes
of gzip can expand to gigabytes (a gzip bomb) or to hundreds of thousands of tar headers (a
tar bomb). :func:`extract_member` streams the layer (never holding it or the module in
memory), and refuses

- more than ``max_members`` entries before the wanted one (wasm images hold one or a few;
  Istio's agent has no such cap, but it reads headers at Go's speed, and costs nothing per
  entry it skips; Python's tarfile costs tens of microseconds and a TarInfo each),
- more than ``max_bytes`` of decompressed tar stream (Istio caps the same stream at its
  module size limit),
- running past the current deadline (:mod:`meshwasm.deadline`).

Which entry holds the module is the caller's ``select`` (see :mod:`meshwasm.oci.manifest`).
The entry's data is read as Go's tar reader (Istio's) reads it: a directory, link, device or FIFO
entry has none, whatever its size field says, so one with a size of 0 yields an empty module (which
then fails the wasm check) and one announcing more bytes is an unreadable entry.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Callable
from typing import IO, Any

from meshwasm.deadline import check_deadline
from meshwasm.oci.errors import ModuleTooLarge, NotAWasmImage, PluginNotInLayer, TooManyLayerMembers

MAX_MEMBERS = 1000
_CHUNK = 256 * 1024
# Go's archive/tar maxSpecialFileSize: the most a PAX header or GNU long name may hold.
MAX_SPECIAL_ENTRY = 1 << 20
_SPECIAL_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
# Go's archive/tar isHeaderOnlyType: entries whose data it never reads.
HEADER_ONLY_TYPES = {
    tarfile.LNKTYPE: "hard link",
    tarfile.SYMTYPE: "symbolic link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.DIRTYPE: "directory",
    tarfile.FIFOTYPE: "FIFO",
}


class _CappedReader(io.RawIOBase):
    """Reads from ``inner`` but raises :class:`ModuleTooLarge` past ``cap`` bytes (gzip bombs)."""

    def __init__(self, inner: IO[bytes], cap: int, where: str):
        self._inner, self._cap, self._where, self._count = inner, cap, where, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        check_deadline()
        data = self._inner.read(len(buffer))
        self._count += len(data)
        if self._count > self._cap:
            raise ModuleTooLarge(f"{self._where}: layer expands past {self._cap} bytes")
        buffer[: len(data)] = data
        return len(data)


class SpecialEntryTooLong(tarfile.TarError):
    """A PAX header or GNU long name over :data:`MAX_SPECIAL_ENTRY` bytes."""


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses a PAX header or GNU long name over 1 MiB before reading it: Python's tarfile would
    read any size into memory; Go's tar reader (Istio's) refuses them with ErrFieldTooLong."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _SPECIAL_TYPES and self.size > MAX_SPECIAL_ENTRY:
            raise SpecialEntryTooLong(
                f"a {self.size}-byte PAX header or long name (at most {MAX_SPECIAL_ENTRY} are read)"
            )
        processed: tarfile.TarInfo = super()._proc_member(archive)  # type: ignore[misc]  # not in typeshed
        return processed


def open_tar_stream(fileobj: IO[bytes]) -> tarfile.TarFile:
    """A streaming tar reader over ``fileobj`` whose header records are bounded as Go's are."""
    return tarfile.open(fileobj=fileobj, mode="r|", tarinfo=_BoundedTarInfo)


def extract_member(
    layer: IO[bytes],
    sink: IO[bytes],
    *,
    select: Callable[[tarfile.TarInfo], bool],
    max_size: int,
    max_bytes: int,
    where: str,
    name: str,
    max_members: int = MAX_MEMBERS,
    check_head: Callable[[bytes], None] | None = None,
    missing_hint: str | None = None,
) -> int:
    """Copy the first entry ``select`` accepts from the tar+gzip ``layer`` into ``sink``.

    Returns the entry's size. ``name`` is what the entry is called in messages; ``check_head``
    sees the entry's first bytes (up to 8) before the rest is copied. Raises
    :class:`TooManyLayerMembers`, :class:`ModuleTooLarge` (entry over ``max_size`` or stream
    over ``max_bytes``), :class:`PluginNotInLayer` (unreadable layer, entry missing: Istio
    then tries the image's oci variant), whatever ``check_head`` raises, or
    :class:`~meshwasm.deadline.DeadlineExceeded`.
    """
    capped = _CappedReader(gzip.GzipFile(fileobj=layer, mode="rb"), max_bytes, where)  # type: ignore[arg-type]
    seen = 0
    try:
        with open_tar_stream(io.BufferedReader(capped, _CHUNK)) as tar:
            while True:
                member = tar.next()
                if member is None:
                    break
                seen += 1
                tar.members.clear()  # type: ignore[attr-defined]  # streaming: else every header is kept
                if not select(member):
                    if seen >= max_members:
                        raise TooManyLayerMembers(
                            f"{where}: no {name} among the layer's first {max_members} entries; "
                            "refusing to read further (wasm image layers hold a few)"
                        )
                    check_deadline()
                    continue
                kind = HEADER_ONLY_TYPES.get(member.type)
                if kind is not None:
                    if member.size > 0:
                        # Istio: "failed to read plugin.wasm: EOF" (then it tries the oci variant).
                        raise PluginNotInLayer(
                            f"{where}: {name} is a {kind} entry announcing {member.size} bytes it "
                            "cannot hold (tar readers give such entries no data)"
                        )
                    if check_head is not None:
                        # Istio extracts 0 bytes here, then refuses them as "invalid" (no oci fallback).
                        raise NotAWasmImage(
                            f"{where}: the first entry named {name} is a {kind}, which holds no data, "
                            "so there is no WebAssembly module (the first entry of that name is taken, "
                            "whatever its type)",
                            hint=missing_hint,
                        )
                    return 0
                if member.size > max_size:
                    raise ModuleTooLarge(
                        f"{where}: {name} is {member.size} bytes, over the {max_size}-byte limit"
                    )
                # Regular entries, and (as in Go) entries of unknown types, are read as files.
                source = tar.extractfile(member)
                if source is None:
                    break
                return _copy(source, sink, member.size, check_head)
    except _SinkFailed as failed:
        raise failed.error from None  # the disk we write to, not the layer
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise PluginNotInLayer(f"{where}: layer is not a readable tar+gzip ({exc})") from exc
    raise PluginNotInLayer(f"{where}: the layer holds no {name}", hint=missing_hint)


class _SinkFailed(Exception):
    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _copy(source: IO[bytes], sink: IO[bytes], size: int, check_head: Callable[[bytes], None] | None) -> int:
    copied = 0
    head = b""
    while copied < size:
        check_deadline()
        chunk = source.read(min(_CHUNK, size - copied))
        if not chunk:
            raise EOFError(f"the entry ends after {copied} of its {size} bytes")
        if check_head is not None and len(head) < 8:
            head += chunk[: 8 - len(head)]
            if len(head) >= min(8, size):
                check_head(head)
                check_head = None
        try:
            sink.write(chunk)
        except OSError as exc:
            raise _SinkFailed(exc) from exc
        copied += len(chunk)
    if check_head is not None:
        check_head(head)
    return copied
