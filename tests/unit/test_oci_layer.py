"""Reading plugin.wasm out of a registry's tar+gzip layer, within bounds (members, bytes, time)."""

from __future__ import annotations

import gzip
import io
import tarfile
import time

import pytest

from meshwasm.deadline import DeadlineExceeded, deadline_scope
from meshwasm.oci.errors import ModuleTooLarge, NotAWasmImage, PluginNotInLayer, TooManyLayerMembers
from meshwasm.oci.layer import MAX_MEMBERS, MAX_SPECIAL_ENTRY
from meshwasm.oci.manifest import extract_plugin, go_base

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


def typed_layer(entries: list[tarfile.TarInfo | tuple[str, bytes]], *, pax: bool = False) -> io.BytesIO:
    """A layer of hand-made entries: a TarInfo is written as a header alone (links, directories,
    and any size field it claims); (name, data) as a regular file."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    return io.BytesIO(gzip.compress(raw.getvalue()))


def header(name: str, kind: bytes, *, size: int = 0, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "kind", [tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE]
)
def test_the_first_entry_named_plugin_wasm_is_taken_whatever_its_type(kind: bytes) -> None:
    """Istio reads 0 bytes from it and refuses them (no oci fallback): the regular file after it
    is never reached (tests/fidelity/test_images_shapes.py compares with Istio)."""
    data = typed_layer(
        [("real.wasm", MODULE), header("plugin.wasm", kind, target="real.wasm"), ("plugin.wasm", MODULE)]
    )
    with pytest.raises(NotAWasmImage, match="holds no data") as refused:
        extract_plugin(data, io.BytesIO(), max_size=1 << 20, where="t")
    assert not isinstance(refused.value, PluginNotInLayer)


def test_a_link_announcing_bytes_it_cannot_hold_is_an_unreadable_plugin() -> None:
    """Go's tar reader gives it no data, so Istio's read fails: the compat variant failed, and Istio
    goes on to the oci variant (PluginNotInLayer)."""
    data = typed_layer([header("plugin.wasm", tarfile.SYMTYPE, size=100, target="x")])
    with pytest.raises(PluginNotInLayer, match="announcing 100 bytes"):
        extract_plugin(data, io.BytesIO(), max_size=1 << 20, where="t")


def test_an_entry_of_an_unknown_type_is_read_as_a_file() -> None:
    """Go's tar reader (and Python's) read unknown types' data as a regular file's."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.type = b"Z"
        info.size = len(MODULE)
        tar.addfile(info, io.BytesIO(MODULE))
    out = io.BytesIO()
    extract_plugin(io.BytesIO(gzip.compress(raw.getvalue())), out, max_size=1 << 20, where="t")
    assert out.getvalue() == MODULE


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("plugin.wasm", "plugin.wasm"),
        ("./a/plugin.wasm", "plugin.wasm"),
        ("plugin.wasm/", "plugin.wasm"),
        ("plugin.wasm//", "plugin.wasm"),
        ("plugin.wasm/.", "."),  # pathlib would say plugin.wasm
        ("a/..", ".."),
        ("", "."),
        ("/", "/"),
    ],
)
def test_base_names_as_go_filepath_base(name: str, base: str) -> None:
    assert go_base(name) == base


def test_a_pax_header_over_a_mebibyte_is_refused_before_it_is_read() -> None:
    """Go's tar reader refuses PAX records and GNU long names over 1 MiB (ErrFieldTooLong); Python's
    would read any size into memory."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(MODULE)
        info.pax_headers = {"comment": "x" * (MAX_SPECIAL_ENTRY + 1)}
        tar.addfile(info, io.BytesIO(MODULE))
    with pytest.raises(PluginNotInLayer, match="PAX header or long name"):
        extract_plugin(io.BytesIO(gzip.compress(raw.getvalue())), io.BytesIO(), max_size=1 << 20, where="t")
    long_name = "d/" * (MAX_SPECIAL_ENTRY // 2) + "plugin.wasm"
    with pytest.raises(PluginNotInLayer, match="PAX header or long name"):
        extract_plugin(typed_layer([(long_name, MODULE)]), io.BytesIO(), max_size=1 << 20, where="t")
