"""`meshwasm image` argument errors: clear messages and usage exit codes, before any network I/O."""

from __future__ import annotations

import json
from pathlib import Path

from fixtures.oci_modules import run_meshwasm, synthetic_module
from meshwasm.errors import ExitCode


def test_build_is_reproducible_and_annotations_are_applied(tmp_path: Path) -> None:
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(synthetic_module(2000))
    args = [
        "image",
        "build",
        str(wasm),
        "-t",
        "localhost:5000/m:v1",
        "-a",
        "team=edge",
        "--source",
        "https://x/y",
    ]
    first = run_meshwasm(*args, "-o", str(tmp_path / "a"))
    second = run_meshwasm(*args, "-o", str(tmp_path / "b"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.split("digest:")[1] == second.stdout.split("digest:")[1]
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((tmp_path / "a" / "blobs" / "sha256" / digest).read_text())
    assert manifest["annotations"] == {
        "module.wasm.image/variant": "compat",
        "org.opencontainers.image.source": "https://x/y",
        "team": "edge",
    }
    created = run_meshwasm(*args, "--created", "-o", str(tmp_path / "c"))
    assert created.stdout.split("digest:")[1] != first.stdout.split("digest:")[1]


def test_bad_annotation(tmp_path: Path) -> None:
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(synthetic_module(100))
    result = run_meshwasm(
        "image", "build", str(wasm), "-t", "x/y:z", "-a", "novalue", "-o", str(tmp_path / "o")
    )
    assert result.returncode == ExitCode.USAGE
    assert "not KEY=VALUE" in result.stderr


def test_bad_variant(tmp_path: Path) -> None:
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(synthetic_module(100))
    result = run_meshwasm(
        "image", "build", str(wasm), "-t", "x/y:z", "--variant", "docker", "-o", str(tmp_path)
    )
    assert result.returncode == ExitCode.USAGE
    assert "variant" in result.stderr


def test_username_needs_password_stdin_and_passwords_are_not_arguments(tmp_path: Path) -> None:
    result = run_meshwasm("image", "inspect", "127.0.0.1:1/x:v1", "--username", "u")
    assert result.returncode == ExitCode.USAGE
    assert "--password-stdin" in result.stderr
    empty = run_meshwasm(
        "image", "inspect", "127.0.0.1:1/x:v1", "--username", "u", "--password-stdin", stdin=""
    )
    assert empty.returncode == ExitCode.USAGE
    assert "nothing was read from stdin" in empty.stderr


def test_push_of_a_directory_that_is_not_a_layout(tmp_path: Path) -> None:
    result = run_meshwasm("image", "push", str(tmp_path), "127.0.0.1:1/x:v1")
    assert result.returncode == ExitCode.USAGE
    assert "not an OCI image layout" in result.stderr
