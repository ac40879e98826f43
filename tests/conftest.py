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

# Shared fixtures in tests/fixtures/ (real registries: tests/fixtures/registry.py).
pytest_plugins = [
    "fixtures.registry",
    "fixtures.oci_modules",
    "fixtures.host_modules",
    "fixtures.oracle",
    "fixtures.istio_agent",
    "fixtures.file_server",
    "fixtures.signing",
    "fixtures.differential",
    "fixtures.corpus_modules",
]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


# Every implementation of the add-header contract: source dir and the env var
# through which the Makefile hands over the module it already built.
ADD_HEADER_IMPLS: dict[str, tuple[Path, str]] = {
    "go": (PLUGIN_DIR, "MESHWASM_ADD_HEADER_GO_WASM"),
    "zig": (ROOT / "plugins" / "add-header-zig", "MESHWASM_ADD_HEADER_ZIG_WASM"),
}


@pytest.fixture(scope="session", params=sorted(ADD_HEADER_IMPLS), ids=lambda impl: f"add-header-{impl}")
def add_header_wasm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each add-header module in turn (tests using it run once per implementation):
    the one `make build` made when its env var names it, else built once now."""
    impl: str = request.param
    plugin_dir, env_var = ADD_HEADER_IMPLS[impl]
    given = os.environ.get(env_var)
    if given and Path(given).is_file():
        return Path(given)
    out = tmp_path_factory.mktemp("wasm") / f"add-header-{impl}.wasm"
    return build_plugin(plugin_dir, out).path


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
