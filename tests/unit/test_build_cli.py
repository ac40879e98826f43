"""`meshwasm build`: the real Go toolchain, and the errors users hit."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def meshwasm(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "meshwasm.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_build_go_plugin_prints_path_size_and_sha256(tmp_path):
    out = tmp_path / "out" / "add-header.wasm"
    result = meshwasm("build", str(ROOT / "plugins" / "add-header"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data.startswith(b"\0asm")
    assert f"size:    {len(data)} bytes" in result.stdout
    assert hashlib.sha256(data).hexdigest() in result.stdout
    assert "0_2_0" in result.stdout
    # Only the module is left: no temporary files beside it.
    assert [p.name for p in out.parent.iterdir()] == ["add-header.wasm"]


def test_missing_go_is_a_clear_toolchain_error(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty PATH: no go anywhere
    result = meshwasm("build", str(ROOT / "plugins" / "add-header"), "-o", str(tmp_path / "x.wasm"), env=env)
    assert result.returncode == 7
    assert "Go is not installed" in result.stderr
    assert "hint: install Go 1.24 or newer" in result.stderr


def test_old_go_is_refused(tmp_path):
    # A stand-in `go` that reports 1.21: installing a real old Go is not possible here.
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho go1.21.5\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    result = meshwasm("build", str(ROOT / "plugins" / "add-header"), "-o", str(tmp_path / "x.wasm"), env=env)
    assert result.returncode == 7
    assert "Go 1.21 is too old" in result.stderr
    assert not (tmp_path / "x.wasm").exists()


@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go")
def test_compile_error_is_reported_and_leaves_nothing(tmp_path):
    plugin = tmp_path / "broken"
    shutil.copytree(
        ROOT / "plugins" / "add-header", plugin, ignore=shutil.ignore_patterns("*_test.go", "testdata")
    )
    (plugin / "main.go").write_text(
        (plugin / "main.go").read_text().replace("func main() {}", "func main() {")
    )
    out = tmp_path / "out.wasm"
    result = meshwasm("build", str(plugin), "-o", str(out))
    assert result.returncode == 7
    assert "go build failed" in result.stderr
    assert "main.go" in result.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".out.wasm.*"))


def test_unknown_plugin_layout(tmp_path):
    result = meshwasm("build", str(tmp_path))
    assert result.returncode == 2
    assert "cannot tell how to build this plugin" in result.stderr
    missing = meshwasm("build", str(tmp_path / "nope"))
    assert missing.returncode == 3
    assert "no such plugin directory" in missing.stderr


def test_unknown_verb_is_a_usage_error_not_a_traceback():
    result = meshwasm("bogus")
    assert result.returncode == 2
    assert "No such command 'bogus'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_verb_imports_only_its_own_area():
    probe = (
        "import sys\n"
        "from meshwasm import cli\n"
        "sys.argv = ['meshwasm', *sys.argv[1:]]\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('meshwasm.manifests', 'meshwasm.host', 'meshwasm.oci.client')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    version = subprocess.run(
        [sys.executable, "-c", probe, "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.stdout.strip().endswith("[]"), version.stdout
    image = subprocess.run(
        [sys.executable, "-c", probe, "image", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "'meshwasm.manifests'" not in image.stdout.splitlines()[-1]
