"""The gateway agent (ModuleAgent, what `meshwasm up` resolves modules with) pulling oci:// modules
itself under a ``require_signature`` policy, against a real registry: every case of issue 14
refused with its reason and never cached, the signed module resolved to a file as before."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fixtures.signing import KeyPair, SigningCases, make_key_pair
from meshwasm.gateway.agent import ModuleAgent
from meshwasm.manifests import istio
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.signing.policy import SignatureRuleConfig, load_policy

pytestmark = pytest.mark.registry

MESSAGES = {
    "unsigned": "is not signed",
    "untrusted_signature": "verifies with the trusted key",
    "digest_mismatch": "a signature copied from another image",
}


def plugin(url: str) -> istio.WasmPlugin:
    return istio.WasmPlugin.model_validate(
        {
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"url": url},
        }
    )


def agent_for(tmp_path: Path, registry: LocalRegistry, key: KeyPair) -> ModuleAgent:
    policy = load_policy(
        [SignatureRuleConfig(scope=f"{registry.address}/signing", public_keys=(str(key.public_path),))]
    )
    return ModuleAgent(tmp_path / "agent", allowed_hosts=[registry.address], signature_policy=policy)


def cached(agent_dir: Path, module_name: str) -> list[Path]:
    return sorted((agent_dir / hashlib.sha256(module_name.encode()).hexdigest()).glob("*.wasm"))


@pytest.mark.parametrize("case", ["signed", "unsigned", "other_key", "other_digest", "tag_moved"])
def test_each_case(
    case: str, tmp_path: Path, registry: LocalRegistry, signing_cases: SigningCases, trusted_key: KeyPair
) -> None:
    expected = signing_cases[case]
    agent = agent_for(tmp_path, registry, trusted_key)
    result = agent.resolve(plugin(f"oci://{expected.ref}"))
    if expected.expected_reason is None:
        assert result.error is None
        assert result.path is not None
        assert Path(result.path).name == f"{expected.digest.removeprefix('sha256:')}.wasm"
        return
    assert result.path is None
    assert MESSAGES[expected.expected_reason] in (result.error or "")
    assert expected.digest in (result.error or "")
    assert cached(tmp_path / "agent", expected.ref.module_name) == []


def test_a_module_cached_without_the_policy_is_verified_before_use(
    tmp_path: Path, registry: LocalRegistry, signing_cases: SigningCases, trusted_key: KeyPair
) -> None:
    unsigned = signing_cases["unsigned"]
    open_agent = ModuleAgent(tmp_path / "agent", allowed_hosts=[registry.address])
    assert open_agent.resolve(plugin(f"oci://{unsigned.ref}")).path is not None
    assert len(cached(tmp_path / "agent", unsigned.ref.module_name)) == 1
    strict = agent_for(tmp_path, registry, trusted_key)  # the same cache, now with the policy
    result = strict.resolve(plugin(f"oci://{unsigned.ref}"))
    assert result.path is None
    assert "is not signed" in (result.error or "")


def test_another_trusted_key_in_the_rule_is_enough(
    tmp_path: Path,
    registry: LocalRegistry,
    signing_cases: SigningCases,
    trusted_key: KeyPair,
    other_key: KeyPair,
) -> None:
    extra = make_key_pair(tmp_path / "keys", "extra")
    policy = load_policy(
        [
            SignatureRuleConfig(
                scope=f"{registry.address}/signing",
                public_keys=(str(extra.public_path), str(other_key.public_path)),
            )
        ]
    )
    agent = ModuleAgent(tmp_path / "agent", allowed_hosts=[registry.address], signature_policy=policy)
    assert agent.resolve(plugin(f"oci://{signing_cases['other_key'].ref}")).path is not None
    assert "verifies with the trusted key" in (
        agent.resolve(plugin(f"oci://{signing_cases['signed'].ref}")).error or ""
    )
