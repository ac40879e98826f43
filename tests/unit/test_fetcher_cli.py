"""`meshwasm fetcher sign`: the signed path the service accepts."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from meshwasm.cli import app
from meshwasm.fetcher.security import verify_signature
from meshwasm.fetcher.urls import decode_fetch_path


def test_sign_prints_a_path_the_service_verifies(tmp_path: Path) -> None:
    key = b"k" * 32
    (tmp_path / "key").write_bytes(key)
    url = "oci://registry.example.com/team/add-header:v1"
    result = CliRunner().invoke(app, ["fetcher", "sign", url, "--key-file", str(tmp_path / "key")])
    assert result.exit_code == 0, result.output
    path, _, query = result.stdout.strip().partition("?sig=")
    assert path.startswith("/fetch/")
    assert decode_fetch_path(path.removeprefix("/fetch/")) == url
    assert verify_signature(key, url, query)
