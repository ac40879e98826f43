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
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Callable
from typing import IO, Any

from meshwasm.deadline import check_deadline
from meshwasm.oci.errors import ModuleTooLarge, NotAWasmImage, TooManyLayerMembers

MAX_MEMBERS = 1000
_CHUNK = 256 * 1024


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
    over ``max_bytes``), :class:`NotAWasmImage` (unreadable layer, entry missing) or
    :class:`~meshwasm.deadline.DeadlineExceeded`.
    """
    capped = _CappedReader(gzip.GzipFile(fileobj=layer, mode="rb"), max_bytes, where)  # type: ignore[arg-type]
    seen = 0
    try:
        with tarfile.open(fileobj=io.BufferedReader(capped, _CHUNK), mode="r|") as tar:
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
                if member.size > max_size:
                    raise ModuleTooLarge(
                        f"{where}: {name} is {member.size} bytes, over the {max_size}-byte limit"
                    )
                source = tar.extractfile(member)
                if source is None:
                    break
                return _copy(source, sink, member.size, check_head)
    except _SinkFailed as failed:
        raise failed.error from None  # the disk we write to, not the layer
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise NotAWasmImage(f"{where}: layer is not a readable tar+gzip ({exc})") from exc
    raise NotAWasmImage(f"{where}: the layer holds no {name}", hint=missing_hint)


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
