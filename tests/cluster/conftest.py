"""One real engine per test session (etcd, kube-apiserver, istiod, pilot-agent and Envoy, the
wasmfetcher and httpbin), reconfigured between tests with `meshwasm apply` rather than restarted.

The engine's binaries come from `make get-cluster`; `make test-cluster` sets
MESHWASM_REQUIRE_ENGINE=1 so a missing build fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from meshwasm.engine.binaries import EngineFiles, engine_files
from meshwasm.engine.cluster import ClusterOptions, ClusterState, LocalCluster
from meshwasm.errors import MeshwasmError
from meshwasm.net import wait_until
from meshwasm.oci.local_registry import LocalRegistry

ROOT = Path(__file__).resolve().parents[2]
HOST = "httpbin.tetrate.io"

pytestmark = [pytest.mark.envoy, pytest.mark.registry, pytest.mark.slow]


def copy_tree(dest: Path, registry: str) -> Path:
    """The repo's tsb/ tree with its image on this session's registry."""
    tree = dest / "tsb"
    shutil.copytree(ROOT / "tsb", tree)
    ext = tree / "wasm-extension.yaml"
    text = ext.read_text().replace("127.0.0.1:5000", registry)
    text = text.replace(
        "../plugins/add-header/config.schema.json", str(ROOT / "plugins/add-header/config.schema.json")
    )
    ext.write_text(text)
    return tree


@pytest.fixture(scope="session")
def engine() -> EngineFiles:
    try:
        return engine_files()
    except MeshwasmError as exc:
        if os.environ.get("MESHWASM_REQUIRE_ENGINE"):
            pytest.fail(str(exc))
        pytest.skip(f"the real engine is not built: {exc.message} (make get-cluster)")


@pytest.fixture(scope="session")
def cluster_wasm() -> Path:
    """The module the cluster tests push: the runtime-free build (fast to compile in V8)."""
    given = os.environ.get("MESHWASM_ADD_HEADER_ZIG_WASM") or os.environ.get("MESHWASM_ADD_HEADER_WASM")
    if given and Path(given).is_file():
        return Path(given)
    built = ROOT / "build" / "add-header-zig.wasm"
    if built.is_file():
        return built
    pytest.skip("no add-header module built (make build)")


@dataclass
class Engine:
    cluster: LocalCluster
    state: ClusterState
    tree: Path
    registry: LocalRegistry
    wasm: Path

    @property
    def port(self) -> int:
        return int(self.state.ports["gateway"]["80"])

    @property
    def kubeconfig(self) -> str:
        return self.state.kubeconfig

    def log(self, name: str) -> str:
        return (Path(self.state.state_dir) / "logs" / f"{name}.log").read_text(errors="replace")

    def get(self, path: str = "/get") -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.port}{path}",
            headers={"host": HOST, "x-request-header": "some value"},
            timeout=10,
        )

    def apply(self, tree: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """`meshwasm apply` as a user runs it, against this cluster."""
        return subprocess.run(
            [
                sys.executable, "-m", "meshwasm.cli", "apply", str(tree),
                "--kubeconfig", self.kubeconfig, "--fetcher-base", self.state.fetcher_base,
                "--apply-set", "cluster-tests", *extra,
            ],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def wait_header(self, value: str | None, timeout: float = 60) -> bool:
        def served() -> bool:
            try:
                return self.get().headers.get("x-ingress-header") == value
            except httpx.TransportError:
                return False

        return wait_until(served, timeout=timeout, interval=0.2)

    def wait_status(self, status: int, timeout: float = 60) -> bool:
        def served() -> bool:
            try:
                return self.get().status_code == status
            except httpx.TransportError:
                return False

        return wait_until(served, timeout=timeout, interval=0.2)


@pytest.fixture(scope="session")
def real_engine(
    engine: EngineFiles,
    registry: LocalRegistry,
    cluster_wasm: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Engine]:
    from meshwasm.oci.client import RegistryClient
    from meshwasm.oci.image import build_image, read_wasm_file
    from meshwasm.oci.reference import parse_reference

    base = tmp_path_factory.mktemp("engine")
    tree = copy_tree(base, registry.address)
    image = build_image(read_wasm_file(cluster_wasm), variant="compat", source=str(cluster_wasm))
    with RegistryClient() as client:
        client.push_image(image, parse_reference(f"oci://{registry.address}/meshwasm/add-header:latest"))
    messages: list[str] = []
    cluster = LocalCluster(
        ClusterOptions(tree=tree, state_dir=base / "cluster", engine=engine), messages.append
    )
    state = cluster.start()
    try:
        yield Engine(cluster, state, tree, registry, cluster_wasm)
    finally:
        cluster.stop()
