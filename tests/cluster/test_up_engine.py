"""`meshwasm up --engine istio` against the embedded default: the same ready lines, the same curl
outcome, the same `inspect` view of the plugin (configuration and module sha256)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

from cluster.conftest import Engine
from cluster.helpers import meshwasm_up, outcome, tree_copy


def _inspect(admin: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "meshwasm.cli", "inspect", "--admin", admin],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _plugin_view(text: str) -> list[tuple[str, str, str]]:
    """(kind, sha256, configuration) of each ECDS filter `inspect` shows."""
    kinds = re.findall(r"^  \S+  \[(\S+)\]", text, re.M)
    shas = re.findall(r"^    sha256:\s+(\S+)", text, re.M)
    configs = re.findall(r"^    configuration: (.*)$", text, re.M)
    return list(zip(kinds, shas, configs, strict=False))


def test_up_on_the_istio_engine_matches_the_embedded_one(real_engine: Engine, tmp_path: Path) -> None:
    tree = tree_copy(real_engine.tree, tmp_path)
    (tmp_path / "istio").mkdir()
    (tmp_path / "embedded").mkdir()
    with meshwasm_up(tmp_path / "istio", tree, "--engine", "istio", timeout=420) as on_istio:
        istio_seen = outcome(on_istio.port)
        istio_text = _inspect(on_istio.admin)
        istio_view = _plugin_view(istio_text)
        istio_lines = [
            line
            for line in on_istio.out.read_text().splitlines()
            if line.startswith(("gateway port", "try:"))
        ]
    with meshwasm_up(tmp_path / "embedded", tree) as embedded:
        embedded_seen = outcome(embedded.port)
        embedded_text = _inspect(embedded.admin)
        embedded_view = _plugin_view(embedded_text)
        embedded_lines = [
            line
            for line in embedded.out.read_text().splitlines()
            if line.startswith(("gateway port", "try:"))
        ]
    assert istio_seen == embedded_seen
    assert istio_seen.ingress_header == "from tsb ingress gateway"
    sha = hashlib.sha256(real_engine.wasm.read_bytes()).hexdigest()
    assert istio_view == embedded_view
    # Both show the ECDS update counters of the plugin's filter.
    assert "config_reload: " in istio_text
    assert "config_reload: " in embedded_text
    assert istio_view
    assert istio_view[0][:2] == ("wasm", sha)

    def shape(lines: list[str]) -> list[str]:
        return [re.sub(r":\d+", ":PORT", line) for line in lines]

    assert shape(istio_lines) == shape(embedded_lines)
