"""Session-wide real parts shared by the tests: the add-header module, httpbin, one Envoy.

Envoy and httpbin start once per session and are reconfigured (file-based
xDS) rather than restarted; every process is stopped by pid at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshwasm.envoy.runtime import FileXdsEnvoy
from meshwasm.gateway.upstreams import HttpbinProcess
from meshwasm.toolchain import build_plugin

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "plugins" / "add-header"
CONTRACT = PLUGIN_DIR / "testdata" / "contract.json"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def add_header_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go add-header module: the one `make build` made, else built now."""
    given = os.environ.get("MESHWASM_ADD_HEADER_WASM")
    if given and Path(given).is_file():
        return Path(given)
    out = tmp_path_factory.mktemp("wasm") / "add-header.wasm"
    return build_plugin(PLUGIN_DIR, out).path


@pytest.fixture(scope="session")
def httpbin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpbinProcess]:
    proc = HttpbinProcess(workdir=tmp_path_factory.mktemp("httpbin"))
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileXdsEnvoy]:
    """One real Envoy for the session; tests add their own listeners, clusters and filters."""
    gateway = FileXdsEnvoy(tmp_path_factory.mktemp("envoy"))
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.stop()
