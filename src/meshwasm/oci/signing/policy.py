"""``require_signature``: which modules need a cosign signature by which public keys.

A policy is a list of rules; each names a scope and the keys trusted in it::

    require_signature:
      - scope: registry.example.com                 # every repository of a registry
        public_keys: [/etc/wasmfetcher/keys/platform.pub]
      - scope: registry.example.com/team-a          # a repository, and every repository below it
        public_keys: [/etc/wasmfetcher/keys/team-a.pub, "-----BEGIN PUBLIC KEY-----\\n..."]
      - scope: "*"                                  # every module (http(s) sources can carry no
        public_keys: [...]                          # signature, so they are refused under it)

The most specific scope that covers a module decides (the longest match), so a repository rule
can trust other keys than its registry's rule. A module covered by no rule needs no signature.
Public keys are PEM files (or inline PEM); a file may hold several keys, any of which may sign.

:class:`SignatureGate` is what the wasmfetcher and the gateway agent call: before a pulled module
is admitted to their cache (:meth:`SignatureGate.admit`) and before a cached one is served
(:meth:`SignatureGate.check_cached`), both raising :class:`SignatureRefused`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from meshwasm.errors import UsageError
from meshwasm.oci.reference import DOCKER_HUB, Reference
from meshwasm.oci.signing.errors import SignatureRefused

if TYPE_CHECKING:
    from meshwasm.oci.client import RegistryClient
    from meshwasm.oci.signing.keys import PublicKey
    from meshwasm.oci.signing.remote import Verification

ANY_SCOPE = "*"
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::[0-9]{{1,5}})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_SCOPE_RE = re.compile(rf"^{_HOST}(?:/{_COMPONENT})*$")
_DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io")


class SignatureRuleConfig(BaseModel):
    """One rule as written in a config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: str
    public_keys: tuple[str, ...] = Field(min_length=1)

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        return normalize_scope(value)


def normalize_scope(value: str) -> str:
    """``*``, ``registry[:port]`` or ``registry[:port]/repository/path``, lower-cased, without
    ``oci://`` or a trailing slash; Docker Hub's aliases become ``docker.io``."""
    scope = value.strip().removeprefix("oci://").rstrip("/").lower()
    if scope == ANY_SCOPE:
        return scope
    if not _SCOPE_RE.match(scope):
        raise ValueError(
            f"signature scope {value!r} must be '*', a registry (registry.example.com[:port]) or a "
            "repository (registry.example.com/team/module), without tag or digest"
        )
    registry, sep, rest = scope.partition("/")
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    return f"{registry}{sep}{rest}"


@dataclass(frozen=True)
class SignatureRule:
    scope: str
    keys: tuple[PublicKey, ...]

    def covers(self, name: str) -> bool:
        """Whether the rule applies to the module ``registry/repository`` (lower-cased)."""
        return self.scope == ANY_SCOPE or name == self.scope or name.startswith(self.scope + "/")


@dataclass(frozen=True)
class SignaturePolicy:
    rules: tuple[SignatureRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    def rule_for(self, ref: Reference) -> SignatureRule | None:
        """The most specific rule covering ``ref``'s repository, or None (no signature needed)."""
        name = f"{ref.registry}/{ref.repository}".lower()
        covering = [rule for rule in self.rules if rule.covers(name)]
        if not covering:
            return None
        return max(covering, key=lambda rule: -1 if rule.scope == ANY_SCOPE else len(rule.scope))

    def covers_everything(self) -> SignatureRule | None:
        """The ``*`` rule, which also covers sources that cannot be signed (http(s) URLs)."""
        return next((rule for rule in self.rules if rule.scope == ANY_SCOPE), None)

    def describe(self) -> str:
        """One line for logs: each scope and the fingerprints of its keys."""
        return "; ".join(
            f"{rule.scope}: {', '.join(key.fingerprint[:19] for key in rule.keys)}" for rule in self.rules
        )


def load_policy(rules: Sequence[SignatureRuleConfig], *, base: Path | None = None) -> SignaturePolicy:
    """Read every rule's keys (files relative to ``base``, or inline PEM); a missing or bad key
    file fails the whole policy with a message naming it, so nothing runs half-configured."""
    from meshwasm.oci.signing.keys import load_public_keys

    built = []
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.scope in seen:
            raise UsageError(
                f"require_signature[{index}]: scope {rule.scope!r} appears twice",
                hint="list every key of a scope in one rule's public_keys",
            )
        seen.add(rule.scope)
        keys: list[PublicKey] = []
        for entry in rule.public_keys:
            if entry.lstrip().startswith("-----BEGIN"):
                keys.extend(load_public_keys(entry.encode(), source=f"require_signature[{index}] inline key"))
                continue
            path = Path(entry).expanduser()
            if base is not None and not path.is_absolute():
                path = base / path
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UsageError(
                    f"require_signature[{index}] ({rule.scope}): cannot read public key {path}: "
                    f"{exc.strerror or exc}"
                ) from exc
            keys.extend(load_public_keys(data, source=str(path)))
        built.append(SignatureRule(rule.scope, tuple(keys)))
    return SignaturePolicy(tuple(built))


def parse_rule_flag(value: str) -> SignatureRuleConfig:
    """``SCOPE=KEYFILE[,KEYFILE...]`` (a command-line flag) as a rule."""
    scope, sep, files = value.partition("=")
    if not sep or not scope or not files:
        raise UsageError(
            f"--require-signature {value!r} is not SCOPE=PUBLIC_KEY_FILE",
            hint="e.g. --require-signature 127.0.0.1:5000/team=cosign.pub",
        )
    try:
        return SignatureRuleConfig(scope=scope, public_keys=tuple(f for f in files.split(",") if f))
    except ValueError as exc:
        raise UsageError(f"--require-signature {value!r}: {exc}") from exc


class SignatureGate:
    """Applies a policy to pulled and cached modules, remembering what it verified.

    A verification is remembered per (repository, digest) for the life of the process, so a cached
    module is verified again only after a restart (its first request then costs a signature
    lookup: a manifest and a small blob). Thread-safe: pulls run in worker threads.
    """

    def __init__(self, policy: SignaturePolicy):
        self.policy = policy
        self._admitted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.policy)

    def admit(
        self, client: RegistryClient, ref: Reference, manifest_digest: str, index_digest: str | None = None
    ) -> Verification | None:
        """Verify a module pulled from ``ref`` before it is cached. A signature of the index the
        tag named or of the image manifest itself counts (the index pins the manifest's digest).
        Returns None when no rule covers ``ref``; raises :class:`SignatureRefused`."""
        from meshwasm.oci.signing.remote import verify_digest

        rule = self.policy.rule_for(ref)
        if rule is None:
            return None
        candidates = [d for d in (index_digest, manifest_digest) if d]
        first: SignatureRefused | None = None
        for digest in dict.fromkeys(candidates):
            try:
                verification = verify_digest(client, ref, digest, rule.keys)
            except SignatureRefused as exc:
                # Report the most telling refusal: "unsigned" only when nothing else was found.
                if first is None or (first.reason == "unsigned" and exc.reason != "unsigned"):
                    first = exc
                continue
            with self._lock:
                self._admitted.update((ref.name, d) for d in candidates)
            return verification
        assert first is not None
        raise first

    def is_admitted(self, ref: Reference, digest: str) -> bool:
        with self._lock:
            return (ref.name, digest) in self._admitted

    def check_unsignable(self, what: str) -> None:
        """Refuse a module from a source that cannot carry a signature (an http(s) URL) when the
        policy covers every module."""
        rule = self.policy.covers_everything()
        if rule is not None:
            raise SignatureRefused(
                f"{what}: require_signature covers every module ('*'), and a module fetched over "
                "http(s) carries no signature",
                reason="unsigned",
                digest="",
                hint="serve it from an OCI registry and sign it, or narrow the '*' rule to registries",
            )


POLICY_CONFIGMAP = "wasmfetcher-signatures"
POLICY_FILE_KEY = "policy.yaml"


def policy_configmap(policy: SignaturePolicy, *, namespace: str = "istio-system") -> dict[str, object]:
    """The ConfigMap the wasmfetcher's deployment mounts for ``require_signature_file``: the
    policy with every public key inline (PEM), so it stands alone."""
    import yaml

    rules = [
        {"scope": rule.scope, "public_keys": [key.pem().decode() for key in rule.keys]}
        for rule in policy.rules
    ]
    text = "# Written by `meshwasm render --require-signature`; read by the wasmfetcher at start.\n"
    text += yaml.safe_dump({"require_signature": rules}, sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": POLICY_CONFIGMAP,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "wasmfetcher", "app.kubernetes.io/part-of": "meshwasm"},
        },
        "data": {POLICY_FILE_KEY: text},
    }
