"""Fetcher configuration: file, flags on top, closed defaults, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshwasm.errors import UsageError
from meshwasm.fetcher.config import PullPolicy, load_config


def test_defaults_are_closed() -> None:
    config = load_config(None)
    assert config.allow == ()
    assert config.insecure_registries == ()
    assert config.security.allow_loopback is False
    assert config.pull.policy is PullPolicy.IF_NOT_PRESENT
    assert config.pull.max_module_bytes == 256 * 1024 * 1024
    assert (config.host, config.port) == ("0.0.0.0", 8080)


def test_flags_override_the_file_and_repeatable_flags_add(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("listen: 127.0.0.1:1\nallow: [a.example]\ncache: {dir: /x, max_bytes: 10}\n")
    config = load_config(
        path, {"listen": "[::1]:9000", "allow": ["b.example:5000"], "cache.dir": str(tmp_path)}
    )
    assert (config.host, config.port) == ("::1", 9000)
    assert config.allow == ("a.example", "b.example:5000")
    assert config.cache.dir == tmp_path
    assert config.cache.max_bytes == 10


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("alow: [x]\n", "alow"),
        ("listen: nowhere\n", "listen"),
        ("security: {blocked_cidrs: [10.0.0.0/33]}\n", "security.blocked_cidrs"),
        ("pull: {policy: Sometimes}\n", "pull.policy"),
        ("- a\n- b\n", "top level"),
        ("listen: [\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=where.replace(".", r"\.")) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_short_signing_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("short")
    config = load_config(None, {"security.signing_key_file": str(tmp_path / "key")})
    with pytest.raises(UsageError, match="shorter than 16 bytes"):
        config.signing_key()
