"""Reading plugin.wasm out of a registry's tar+gzip layer, within bounds (members, bytes, time)."""

from __future__ import annotations

import gzip
import io
import tarfile
import time

import pytest

from meshwasm.deadline import DeadlineExceeded, deadline_scope
from meshwasm.oci.errors import ModuleTooLarge, NotAWasmImage, TooManyLayerMembers
from meshwasm.oci.layer import MAX_MEMBERS
from meshwasm.oci.manifest import extract_plugin

MODULE = b"\0asm\x01\0\0\0" + b"m" * 5000


def layer(members: list[tuple[str, bytes]]) -> io.BytesIO:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return io.BytesIO(gzip.compress(raw.getvalue()))


def test_the_plugin_is_streamed_out() -> None:
    out = io.BytesIO()
    size = extract_plugin(layer([("./", b""), ("plugin.wasm", MODULE)]), out, max_size=1 << 20, where="t")
    assert (size, out.getvalue()) == (len(MODULE), MODULE)


def test_entries_beyond_the_bound_are_not_read() -> None:
    many = [(f"f{i}", b"") for i in range(MAX_MEMBERS)] + [("plugin.wasm", MODULE)]
    with pytest.raises(TooManyLayerMembers, match=f"first {MAX_MEMBERS} entries"):
        extract_plugin(layer(many), io.BytesIO(), max_size=1 << 20, where="t")
    # The last entry the bound allows is still found.
    out = io.BytesIO()
    extract_plugin(layer(many[1:]), out, max_size=1 << 20, where="t")
    assert out.getvalue() == MODULE


def test_a_stream_expanding_past_the_cap_is_refused_while_it_expands() -> None:
    junk = [(f"junk{i}", b"\0" * (1 << 20)) for i in range(4)]
    with pytest.raises(ModuleTooLarge, match="expands past"):
        extract_plugin(layer([*junk, ("plugin.wasm", MODULE)]), io.BytesIO(), max_size=1 << 20, where="t")


def test_content_that_is_not_wasm_is_refused_at_its_head() -> None:
    out = io.BytesIO()
    with pytest.raises(NotAWasmImage, match="not a WebAssembly module"):
        extract_plugin(layer([("plugin.wasm", b"MZ" + b"\0" * 100_000)]), out, max_size=1 << 20, where="t")
    assert out.getvalue() == b""  # nothing of it was written


def test_extraction_stops_at_the_deadline() -> None:
    many = [(f"f{i}", b"") for i in range(MAX_MEMBERS - 1)]
    data = layer(many)
    with deadline_scope(0.01, "extracting"):
        time.sleep(0.02)
        with pytest.raises(DeadlineExceeded):
            extract_plugin(data, io.BytesIO(), max_size=1 << 20, where="t")


def test_a_failing_disk_is_not_reported_as_a_bad_layer() -> None:
    class FullDisk(io.BytesIO):
        def write(self, _data: object) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        extract_plugin(layer([("plugin.wasm", MODULE)]), FullDisk(), max_size=1 << 20, where="t")
