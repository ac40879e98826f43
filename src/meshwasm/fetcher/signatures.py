"""The wasmfetcher's ``require_signature`` hook: no unsigned module enters the cache or leaves it.

Three calls from the service, each one line there:

- :meth:`FetcherSignatures.check_source` on every request: under a ``*`` rule an http(s) module
  (which can carry no signature) is refused;
- :meth:`FetcherSignatures.usable` on the cached entry a request would be served: an entry this
  process has not verified (cached before a restart, or before the policy) is treated as absent,
  so the request pulls it again through the verifying path;
- :meth:`FetcherSignatures.admit` after a pull and before the module is installed in the cache.

A refusal is a :class:`~meshwasm.fetcher.errors.Forbidden` (HTTP 403) whose code names the reason
(``signature_missing``, ``signature_untrusted``, ``signature_digest_mismatch``,
``signature_malformed``) and whose message says which digest and why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import ValidationError

from meshwasm.errors import UsageError
from meshwasm.fetcher.errors import Forbidden
from meshwasm.oci.signing.errors import SignatureRefused
from meshwasm.oci.signing.policy import SignatureGate, SignaturePolicy, SignatureRuleConfig, load_policy

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshwasm.fetcher.cache import CacheEntry
    from meshwasm.fetcher.urls import ModuleSource
    from meshwasm.oci.client import RegistryClient
    from meshwasm.oci.reference import Reference

log = logging.getLogger("meshwasm.fetcher")

REFUSAL_CODES = {
    "unsigned": "signature_missing",
    "untrusted_signature": "signature_untrusted",
    "digest_mismatch": "signature_digest_mismatch",
    "malformed_signature": "signature_malformed",
}


def refusal(exc: SignatureRefused) -> Forbidden:
    """The fetcher's 403 for a signature refusal."""
    return Forbidden(exc.message, code=REFUSAL_CODES[exc.reason])


class FetcherSignatures:
    def __init__(self, policy: SignaturePolicy):
        self.gate = SignatureGate(policy)
        if policy:
            log.info("event=signature_policy rules=%d %s", len(policy.rules), policy.describe())

    @classmethod
    def from_config(
        cls, rules: Sequence[SignatureRuleConfig], policy_file: Path | None = None
    ) -> FetcherSignatures:
        """The config's ``require_signature`` rules plus those of ``require_signature_file``, keys
        read now: a missing file or key, or a bad one, stops the fetcher from starting."""
        all_rules = list(rules)
        base: Path | None = None
        if policy_file is not None:
            all_rules.extend(read_policy_file(policy_file))
            base = policy_file.parent
        return cls(load_policy(all_rules, base=base))

    def check_source(self, source: ModuleSource) -> None:
        if source.kind == "http" and self.gate:
            try:
                self.gate.check_unsignable(source.module_name)
            except SignatureRefused as exc:
                raise refusal(exc) from exc

    def usable(self, entry: CacheEntry | None) -> CacheEntry | None:
        """``entry`` if it may be served, None if it must be pulled (and verified) again."""
        if entry is None or not self.gate or not entry.module_name.startswith("oci://"):
            return entry
        ref = _module_reference(entry.module_name)
        if self.gate.policy.rule_for(ref) is None or self.gate.is_admitted(ref, f"sha256:{entry.checksum}"):
            return entry
        return None

    def admit(self, client: RegistryClient, url: str, manifest_digest: str, index_digest: str | None) -> None:
        """Verify a pulled module's signature (of its manifest, or of the index the tag named)."""
        if not self.gate:
            return
        from meshwasm.oci.reference import parse_reference

        ref = parse_reference(url)
        try:
            verified = self.gate.admit(
                client, ref, _digest(manifest_digest), index_digest and _digest(index_digest)
            )
        except SignatureRefused as exc:
            log.warning(
                "event=signature_refused image=%s digest=%s reason=%s", ref.name, exc.digest, exc.reason
            )
            raise refusal(exc) from exc
        if verified is not None:
            log.info(
                "event=signature_verified image=%s digest=%s key=%s",
                ref.name,
                verified.digest,
                verified.signatures[0].key.fingerprint,
            )


def read_policy_file(path: Path) -> list[SignatureRuleConfig]:
    """The ``require_signature`` rules of a policy file (what ``meshwasm render
    --require-signature`` puts in the wasmfetcher-signatures ConfigMap)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(
            f"cannot read the signature policy {path}: {exc.strerror or exc}",
            hint="apply the wasmfetcher-signatures ConfigMap (meshwasm render --require-signature), "
            "or remove require_signature_file from the fetcher's config",
        ) from exc
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("require_signature", []), list):
        raise UsageError(f"{path}: expected a mapping with a require_signature list")
    rules = []
    for index, rule in enumerate(doc.get("require_signature") or []):
        try:
            rules.append(SignatureRuleConfig.model_validate(rule))
        except ValidationError as exc:
            problems = "; ".join(
                f"require_signature[{index}].{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors()
            )
            raise UsageError(f"invalid signature policy in {path}: {problems}") from exc
    return rules


def _digest(value: str) -> str:
    return value if value.startswith("sha256:") else f"sha256:{value}"


def _module_reference(module_name: str) -> Reference:
    from meshwasm.oci.reference import parse_reference

    return parse_reference(module_name)
