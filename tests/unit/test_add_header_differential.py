"""The Zig add-header's hand-written JSON parser against the Go reference, input for input.

A bounded run of plugins/add-header-zig/fuzz/differential.py (fixed seed, a few
thousand inputs: the contract's cases, mutations of them, generated JSON full of
escapes, bad UTF-8 and Unicode white space). Longer runs: see that script.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from meshwasm.toolchain import build_plugin

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "plugins" / "add-header-zig" / "fuzz" / "differential.py"


def _harness() -> ModuleType:
    name = "add_header_differential"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HARNESS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _module(impl: str, source: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get(f"MESHWASM_ADD_HEADER_{impl.upper()}_WASM")
    if given and Path(given).is_file():
        return Path(given)
    return build_plugin(ROOT / "plugins" / source, tmp_path_factory.mktemp(impl) / f"{impl}.wasm").path


def test_zig_parser_agrees_with_go_on_generated_inputs(tmp_path_factory: pytest.TempPathFactory) -> None:
    harness = _harness()
    go = _module("go", "add-header", tmp_path_factory)
    zig = _module("zig", "add-header-zig", tmp_path_factory)
    count, failing, report = harness.run(go, zig, seconds=60, max_cases=3000, seed=8)
    assert failing is None, report
    assert count == 3000


def test_harness_sees_a_different_message() -> None:
    """The comparison is on exact CRITICAL lines, not just accept/reject."""
    harness = _harness()
    assert harness.Outcome(False, ["a"]) != harness.Outcome(False, ["b"])
    assert harness.Outcome(True, []) != harness.Outcome(False, [])
