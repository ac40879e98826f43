"""Unwrapping an http(s) module body as Istio's http fetcher does, within bounds.

Istio's agent (pkg/wasm/httpfetcher.go ``unboxIfPossible``) looks at what an http(s) URL served
and, until it is a wasm module (8 bytes or more, starting with ``\\0asm``), unwraps it:

- gzip (it starts with ``1f 8b``): the whole decompressed stream, every member of it;
- a POSIX tar (``ustar`` at offset 257): the FIRST entry, whatever its type or name;
- anything else, or an unwrapping that fails: the ORIGINAL body, which then fails Istio's wasm
  check ("fetched Wasm binary ... is invalid").

So a ``.wasm.gz``, a ``.tar`` or a ``.tar.gz`` holding the module works in Istio, and the module's
sha256 (the checksum a WasmPlugin's ``sha256`` is compared with) is that of the unwrapped bytes.

Here each layer of wrapping is streamed from one file into the next (never held in memory), the
output of each is capped at the module cap (a gzip bomb is refused while it expands; Istio
truncates at its cap instead), the nesting is bounded (:data:`MAX_DEPTH`; Istio has no bound, so
a gzip quine would loop there forever) and every loop honours the current deadline.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Literal

from meshwasm.deadline import check_deadline
from meshwasm.oci.layer import HEADER_ONLY_TYPES, open_tar_stream

WASM_MAGIC = b"\0asm"
GZIP_MAGIC = b"\x1f\x8b"
TAR_MAGIC = b"ustar"
_TAR_MAGIC_AT = 257
_TAR_MAGIC_END = _TAR_MAGIC_AT + len(TAR_MAGIC)
HEAD_BYTES = _TAR_MAGIC_END + 1  # Istio's tar test wants more than 262 bytes
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip wrapper, CRC and length checked
MAX_DEPTH = 8
_CHUNK = 256 * 1024
_GLOBAL_HEADER_TYPE = ord(tarfile.XGLTYPE)
_TYPEFLAG_AT = 156

BodyKind = Literal["wasm", "gzip", "tar", "other"]


class UnboxFailed(Exception):
    """The body looked like gzip or tar but did not unwrap (Istio then keeps the raw body)."""


class UnboxTooLarge(Exception):
    """Unwrapping produced more than the module cap."""


def body_kind(head: bytes, *, complete: bool) -> BodyKind | None:
    """What Istio's ``unboxIfPossible`` makes of a body starting with ``head`` (its first
    :data:`HEAD_BYTES` bytes, or all of it when ``complete``); ``None``: not decided yet."""
    if len(head) >= 8 and head.startswith(WASM_MAGIC):
        return "wasm"
    if len(head) > 2 and head.startswith(GZIP_MAGIC):
        return "gzip"
    if len(head) > _TAR_MAGIC_END and head[_TAR_MAGIC_AT:_TAR_MAGIC_END] == TAR_MAGIC:
        return "tar"
    if complete or len(head) >= HEAD_BYTES:
        return "other"
    return None


def gunzip(source: IO[bytes], write: Callable[[bytes], None], *, max_bytes: int) -> int:
    """Decompress every gzip member of ``source`` into ``write``, as Go's ``gzip.Reader`` does
    (multistream): the stream must end exactly after a member; a bad header, CRC or length, a
    truncated member, or trailing bytes that do not start another member fail it. Returns the
    size; past ``max_bytes`` of output it stops with :class:`UnboxTooLarge`."""
    total = 0
    for chunk in _inflated(source):
        total += len(chunk)
        if total > max_bytes:
            raise UnboxTooLarge(f"it decompresses past {max_bytes} bytes")
        write(chunk)
    return total


def _inflated(source: IO[bytes]) -> Iterator[bytes]:
    members = 0
    data = b""
    while True:
        if not data:
            data = source.read(_CHUNK)
            if not data:
                if members == 0:
                    raise UnboxFailed("the gzip stream is empty")
                return  # the stream ends exactly after a member
        member = zlib.decompressobj(_GZIP_WBITS)
        while True:
            check_deadline()
            try:
                out = member.decompress(data, _CHUNK)  # output capped: memory stays bounded
            except zlib.error as exc:
                raise UnboxFailed(f"the gzip stream is corrupt ({exc})") from exc
            if out:
                yield out
            if member.eof:  # trailer (CRC, length) checked by zlib
                data = member.unused_data
                members += 1
                break
            data = member.unconsumed_tail
            if not data and len(out) < _CHUNK:  # all input taken, no output held back: read on
                data = source.read(_CHUNK)
                if not data:
                    raise UnboxFailed("the gzip stream ends inside a member")


def first_tar_entry(source: IO[bytes], write: Callable[[bytes], None], *, max_bytes: int) -> int:
    """Copy the data of the first entry of the tar ``source`` into ``write``, as Go's tar reader
    gives it to Istio: a directory, link, device or FIFO entry has none (Istio gets 0 bytes, or an
    error when its size field says more); a PAX global header comes back as an entry of its own,
    so a tar that starts with one has an empty first entry. Returns the size."""
    start = source.tell()
    block = source.read(512)
    source.seek(start)
    if len(block) == 512 and block[_TYPEFLAG_AT] == _GLOBAL_HEADER_TYPE:
        raise UnboxFailed("its first entry is a PAX global header, which holds no file")
    try:
        with open_tar_stream(source) as tar:
            member = tar.next()
            if member is None:
                raise UnboxFailed("the tar holds no entry")
            if member.type in HEADER_ONLY_TYPES:
                raise UnboxFailed(f"its first entry, {member.name!r}, is not a file")
            if member.size > max_bytes:
                raise UnboxTooLarge(f"its first entry is {member.size} bytes")
            data = tar.extractfile(member)
            if data is None:
                raise UnboxFailed(f"its first entry, {member.name!r}, has no data")
            copied = 0
            while copied < member.size:
                check_deadline()
                chunk = data.read(min(_CHUNK, member.size - copied))
                if not chunk:
                    raise UnboxFailed(f"its first entry ends after {copied} of its {member.size} bytes")
                write(chunk)
                copied += len(chunk)
            return copied
    except (tarfile.TarError, EOFError) as exc:
        raise UnboxFailed(f"the tar is unreadable ({exc})") from exc


def unwrap_once(kind: BodyKind, source: IO[bytes], write: Callable[[bytes], None], *, max_bytes: int) -> int:
    """One layer of wrapping (``kind`` is ``gzip`` or ``tar``) from ``source`` into ``write``."""
    if kind == "gzip":
        return gunzip(source, write, max_bytes=max_bytes)
    if kind == "tar":
        return first_tar_entry(source, write, max_bytes=max_bytes)
    raise ValueError(f"nothing to unwrap in a {kind} body")
