"""`meshwasm build` on a Zig plugin: detection, the module it makes, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshwasm.errors import ToolchainError
from meshwasm.toolchain import build_plugin, detect_toolchain

ROOT = Path(__file__).resolve().parents[2]
ZIG_PLUGIN = ROOT / "plugins" / "add-header-zig"


def test_build_zig_marks_a_zig_plugin() -> None:
    name, _ = detect_toolchain(ZIG_PLUGIN)
    assert name == "zig"


def test_zig_add_header_is_a_small_self_contained_proxy_wasm_module(tmp_path: Path) -> None:
    result = build_plugin(ZIG_PLUGIN, tmp_path / "add-header.wasm")
    info = result.info
    assert result.toolchain == "zig"
    assert info.abi_versions == ["0_2_1"]
    # No runtime: only the host calls it uses, no WASI, nothing to start.
    assert {name for module, name, _ in info.imports} == {
        "proxy_log",
        "proxy_get_buffer_bytes",
        "proxy_add_header_map_value",
        "proxy_replace_header_map_value",
    }
    assert info.wasi_imports == []
    assert info.start_style == "none"
    for export in ["memory", "proxy_on_memory_allocate", "proxy_on_configure", "proxy_on_response_headers"]:
        assert export in info.exports
    assert info.size < 100 * 1024


def test_zig_plugin_without_main_zig_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "build.zig").write_text("// empty\n")
    out = tmp_path / "out.wasm"
    with pytest.raises(ToolchainError, match=r"no src/main\.zig"):
        build_plugin(plugin, out)
    assert not out.exists()
    assert list(tmp_path.glob(".out.wasm.*")) == []


def test_zig_compile_error_is_reported_with_the_compiler_output(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    (plugin / "src").mkdir(parents=True)
    (plugin / "build.zig").write_text("// empty\n")
    (plugin / "src" / "main.zig").write_text("export fn broken() u32 { return missing; }\n")
    with pytest.raises(ToolchainError, match="use of undeclared identifier 'missing'"):
        build_plugin(plugin, tmp_path / "out.wasm")
