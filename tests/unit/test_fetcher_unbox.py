"""Unwrapping http module bodies as Istio's unboxIfPossible does, within bounds (the comparison
with Istio's own code is tests/fidelity/test_agent_http_bodies.py)."""

from __future__ import annotations

import gzip
import io
import tarfile
import time

import pytest

from meshwasm.deadline import DeadlineExceeded, deadline_scope
from meshwasm.fetcher.unbox import (
    HEAD_BYTES,
    UnboxFailed,
    UnboxTooLarge,
    body_kind,
    first_tar_entry,
    gunzip,
)

MODULE = b"\0asm\x01\0\0\0" + bytes(range(256)) * 40


def tar(entries: list[tuple[str, bytes] | tarfile.TarInfo], **options: object) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", **options) as archive:  # type: ignore[call-overload]
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                archive.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                archive.addfile(info, io.BytesIO(entry[1]))
    return raw.getvalue()


def directory(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def gunzipped(data: bytes, *, max_bytes: int = 1 << 20) -> bytes:
    out = io.BytesIO()
    gunzip(io.BytesIO(data), out.write, max_bytes=max_bytes)
    return out.getvalue()


def first_entry(data: bytes) -> bytes:
    out = io.BytesIO()
    first_tar_entry(io.BytesIO(data), out.write, max_bytes=1 << 20)
    return out.getvalue()


@pytest.mark.parametrize(
    ("head", "complete", "kind"),
    [
        (MODULE[:8], True, "wasm"),
        (MODULE[:7], True, "other"),  # shorter than the 8-byte header
        (MODULE[:7], False, None),
        (b"\x1f\x8b\x08", False, "gzip"),
        (b"\x1f\x8b", True, "other"),  # Istio's isGZ wants more than 2 bytes
        (b"<html>", True, "other"),
        (b"<html>" * 40, False, None),  # a tar's magic is at offset 257
        (b"<html>" * 100, False, "other"),
        (tar([("m.wasm", MODULE)])[:HEAD_BYTES], False, "tar"),
        (tar([("m.wasm", MODULE)])[:262], True, "other"),  # Istio's isPosixTar wants more than 262
    ],
)
def test_what_a_body_is(head: bytes, complete: bool, kind: str | None) -> None:
    assert body_kind(head[:HEAD_BYTES], complete=complete) == kind


def test_every_gzip_member_is_decompressed() -> None:
    two = gzip.compress(MODULE[:100]) + gzip.compress(MODULE[100:])
    assert gunzipped(two) == MODULE


@pytest.mark.parametrize(
    ("case", "body"),
    [
        # Go's gzip reader wants another member after one; Python's gzip module ignores zero padding.
        ("zero padding", gzip.compress(MODULE) + b"\0" * 8),
        ("trailing text", gzip.compress(MODULE) + b"trailing"),
        ("a partial next header", gzip.compress(MODULE) + b"\x1f\x8b\x08"),
        ("truncated", gzip.compress(MODULE)[:-5]),
        ("bad crc", gzip.compress(MODULE)[:-8] + b"\0\0\0\0" + gzip.compress(MODULE)[-4:]),
    ],
)
def test_a_gzip_stream_go_would_not_read_fails(case: str, body: bytes) -> None:
    with pytest.raises(UnboxFailed):
        gunzipped(body)


def test_a_gzip_bomb_is_stopped_at_the_cap_in_bounded_chunks() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB in about 64 KiB
    largest = 0

    def write(chunk: bytes) -> None:
        nonlocal largest
        largest = max(largest, len(chunk))

    with pytest.raises(UnboxTooLarge, match="past 4194304 bytes"):
        gunzip(io.BytesIO(bomb), write, max_bytes=4 << 20)
    assert largest <= 256 * 1024  # never more than one output chunk in memory


def test_unwrapping_stops_at_the_deadline() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    with deadline_scope(0.01, "unwrapping"):
        time.sleep(0.02)
        with pytest.raises(DeadlineExceeded):
            gunzip(io.BytesIO(bomb), lambda _c: None, max_bytes=1 << 30)


def test_the_first_tar_entry_whatever_its_name() -> None:
    assert first_entry(tar([("README", b"read me"), ("plugin.wasm", MODULE)])) == b"read me"
    assert first_entry(tar([("m", MODULE)], format=tarfile.GNU_FORMAT)) == MODULE
    # A long name goes before the entry in a record of its own; the entry is still the first.
    assert first_entry(tar([("d/" * 80 + "m", MODULE)], format=tarfile.GNU_FORMAT)) == MODULE


@pytest.mark.parametrize(
    "body",
    [
        tar([directory("filter"), ("filter/plugin.wasm", MODULE)]),
        tar([("m", MODULE)], format=tarfile.PAX_FORMAT, pax_headers={"comment": "a global header"}),
        b"\0" * 1024,  # the end-of-archive marker alone
    ],
    ids=["a directory first", "a PAX global header first", "no entry"],
)
def test_a_tar_whose_first_entry_is_no_file_fails(body: bytes) -> None:
    with pytest.raises(UnboxFailed):
        first_entry(body)


def test_a_long_name_over_a_mebibyte_is_not_read() -> None:
    with pytest.raises(UnboxFailed, match="PAX header or long name"):
        first_entry(tar([("d/" * (1 << 19) + "m", MODULE)], format=tarfile.GNU_FORMAT))
