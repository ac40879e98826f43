"""The wasmfetcher's signature hook without a network: what it refuses before asking any source."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshwasm.errors import UsageError
from meshwasm.fetcher.config import load_config
from meshwasm.fetcher.errors import Forbidden
from meshwasm.fetcher.service import ModuleFetcher


def _key(tmp_path: Path) -> Path:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    path = tmp_path / "k.pub"
    path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def _fetcher(tmp_path: Path, rules: list[dict[str, object]]) -> ModuleFetcher:
    config = load_config(
        None,
        {
            "cache.dir": str(tmp_path / "cache"),
            "allow": ["files.example.com", "reg.example.com"],
            "require_signature": rules,
        },
    )
    return ModuleFetcher(config)


def test_under_a_star_rule_http_modules_are_refused_before_any_request(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path, [{"scope": "*", "public_keys": [str(_key(tmp_path))]}])

    async def fetch() -> None:
        await fetcher.fetch("https://files.example.com/m.wasm")

    with pytest.raises(Forbidden) as refused:
        anyio.run(fetch)
    assert refused.value.status == 403
    assert refused.value.code == "signature_missing"
    assert "carries no signature" in refused.value.message


def test_without_a_star_rule_http_modules_are_not_covered(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path, [{"scope": "reg.example.com", "public_keys": [str(_key(tmp_path))]}])
    source_check = fetcher.signatures.check_source
    from meshwasm.fetcher.urls import classify

    source_check(classify("https://files.example.com/m.wasm"))  # no refusal


def test_policy_file_rules_resolve_key_paths_next_to_the_file(tmp_path: Path) -> None:
    key = _key(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"require_signature:\n  - scope: reg.example.com\n    public_keys: [{key.name}]\n")
    config = load_config(None, {"cache.dir": str(tmp_path / "cache"), "require_signature_file": str(policy)})
    assert ModuleFetcher(config).signatures.gate.policy.rules[0].scope == "reg.example.com"
    policy.write_text("require_signature:\n  - scope: reg.example.com:v1\n    public_keys: [k.pub]\n")
    with pytest.raises(
        UsageError,
        match=r"invalid signature policy in .*policy.yaml: require_signature\[0\]\.scope: .*without tag",
    ):
        ModuleFetcher(config)
