"""The Istio CRDs carried in the package are the pinned Istio module's, byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from meshwasm.manifests import istio_crds


def test_vendored_crds_match_the_pinned_istio_module(repo_root: Path) -> None:
    # The script asks Go for the module oracle/istio/go.mod pins (in the module cache after `make get`).
    done = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "refresh_istio_crds.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"run `make crds`:\n{done.stdout}{done.stderr}"


def test_source_and_licence_are_recorded() -> None:
    source = (istio_crds.CRD_DIR / "SOURCE.md").read_text()
    assert "istio.io/istio@" in source
    assert "manifests/charts/base/files/crd-all.gen.yaml" in source
    assert "Apache-2.0" in source
    assert "Apache License" in (istio_crds.CRD_DIR / "LICENSE").read_text()


def test_the_kinds_meshwasm_validates_are_there() -> None:
    kinds = set(istio_crds.kinds())
    for wanted in [
        ("extensions.istio.io", "WasmPlugin"),
        ("networking.istio.io", "Gateway"),
        ("networking.istio.io", "VirtualService"),
        ("networking.istio.io", "ServiceEntry"),
    ]:
        assert wanted in kinds
    schema = istio_crds.version_schema("extensions.istio.io", "WasmPlugin", "v1alpha1")
    assert "url" in schema["properties"]["spec"]["properties"]
