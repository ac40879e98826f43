"""meshwasm.bench.plan: what `meshwasm bench` measures, from its arguments; bad input refused
before any Envoy starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshwasm.bench.plan import parse_workers, plan, read_config
from meshwasm.errors import IntegrityError, UsageError


def test_workers() -> None:
    assert parse_workers("1,2") == [1, 2]
    assert parse_workers("4") == [4]
    for bad in ("", "0", "1,1", "one", "1,-2"):
        with pytest.raises(UsageError, match="--workers"):
            parse_workers(bad)


def test_config_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"a": 1}')
    assert read_config(f"@{tmp_path / 'c.json'}") == '{"a": 1}'
    assert read_config('{"b": 2}') == '{"b": 2}'
    assert read_config(None) is None
    with pytest.raises(UsageError, match="cannot read"):
        read_config(f"@{tmp_path / 'nope.json'}")


def test_variants_for_each_baseline(host_wat_modules: dict[str, Path]) -> None:
    module = host_wat_modules["bench_trap"]
    native = plan(module, config="{}", against="native")
    assert [v.key for v in native.variants] == ["none", "plugin", "native"]
    assert (native.plugin, native.against) == ("plugin", "native")
    alone = plan(module, config=None, against="none")
    assert [v.key for v in alone.variants] == ["none", "plugin"]
    assert alone.against is None
    other = plan(module, config="{}", against=str(host_wat_modules["bench_memory"]))
    assert [v.label for v in other.variants] == ["no filter", "bench_trap.wasm", "bench_memory.wasm"]
    # The baseline module runs with the plugin's configuration.
    assert other.variants[2].http_filters[0]["typed_config"]["config"]["configuration"]["value"] == "{}"


def test_modules_are_checked_first(tmp_path: Path, host_wat_modules: dict[str, Path]) -> None:
    text = tmp_path / "plugin.wasm"
    text.write_text("not wasm")
    with pytest.raises(IntegrityError, match="is not a WebAssembly module"):
        plan(text, config=None)
    with pytest.raises(IntegrityError, match="is not a WebAssembly module"):
        plan(host_wat_modules["bench_trap"], config=None, against=str(text))
