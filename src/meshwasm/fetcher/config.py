"""The wasmfetcher's configuration: a YAML/JSON file, then command-line flags on top.

Everything that opens a door is off by default: no host is allowed until the
configuration names it (every hop of a pull, redirects and token realms
included), loopback is refused unless ``security.allow_loopback`` says
otherwise (tests and the local demo set it), private address ranges are refused
unless ``security.allowed_cidrs`` opens them, plain HTTP only to the registries
listed in ``insecure_registries``.

Example::

    listen: 0.0.0.0:8080
    allow: [registry.example.com, "127.0.0.1:5000"]
    insecure_registries: ["127.0.0.1:5000"]
    cache: {dir: /var/cache/wasmfetcher, max_bytes: 2147483648, expiry_seconds: 604800}
    pull: {policy: IfNotPresent, always: ["oci://registry.example.com/team/"], resolve_interval_seconds: 30}
    security: {allow_loopback: false, allowed_cidrs: [10.96.0.0/12], signing_key_file: /etc/wasmfetcher/key}
    resolver: {servers: ["10.96.0.10"]}
    credentials: {docker_config: /var/run/secrets/wasmfetcher/registry/.dockerconfigjson}
"""

from __future__ import annotations

import ipaddress
import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from meshwasm.errors import UsageError
from meshwasm.fetcher.security import PRIVATE_RANGES
from meshwasm.oci.signing.policy import SignatureRuleConfig

DEFAULT_MAX_MODULE = 256 * 1024 * 1024  # Istio's cap (docs/architecture.md, "Istio agent and images")


class PullPolicy(StrEnum):
    IF_NOT_PRESENT = "IfNotPresent"
    ALWAYS = "Always"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CacheConfig(_Model):
    dir: Path = Path("/var/cache/wasmfetcher")
    max_bytes: int | None = Field(default=2 * 1024**3, ge=1)
    expiry_seconds: float | None = Field(default=7 * 24 * 3600.0, gt=0)
    # Modules kept in memory for serving (the hot set); 0 serves every request from disk.
    memory_bytes: int = Field(default=64 * 1024**2, ge=0)
    # Modules kept, and reference records (URL -> module) kept: bounds the directory whatever
    # the URLs requested.
    max_entries: int = Field(default=4096, ge=1)
    # Disk that pulls in progress may take together (they stream to disk, not memory): the
    # cache volume needs max_bytes plus this much.
    max_staging_bytes: int | None = Field(default=1024**3, ge=1)


class PullConfig(_Model):
    policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    # Module URLs (or prefixes of them) that are always re-resolved, besides ":latest".
    always: tuple[str, ...] = ()
    resolve_interval_seconds: float = Field(default=30.0, ge=0)
    # The deadline of one whole pull: DNS, connect, TLS, headers, body, every redirect and token
    # fetch, the layer's extraction (and an http source's retries).
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_module_bytes: int = Field(default=DEFAULT_MAX_MODULE, ge=1)
    http_retries: int = Field(default=3, ge=0, le=10)
    http_backoff_seconds: float = Field(default=0.5, ge=0)
    # Concurrent pulls (each a worker thread streaming to disk, so memory does not grow with
    # them); cached modules are served regardless.
    max_concurrent: int = Field(default=64, ge=1, le=256)
    # Pulls from one host at a time: a slow registry holds at most this many of the slots.
    max_concurrent_per_host: int = Field(default=16, ge=1, le=256)
    # How long a request for a cached module waits for its revalidation (Always, ":latest")
    # before the cached copy is served; the revalidation goes on in the background.
    revalidate_wait_seconds: float = Field(default=2.0, ge=0)
    # After a failed pull of an uncached URL, answer the same error for this long without asking
    # the source again (gateways retrying in a loop must not hammer a registry); 0 disables.
    failure_backoff_seconds: float = Field(default=5.0, ge=0)


class SecurityConfig(_Model):
    allow_loopback: bool = False
    # Never connected to (link-local and cloud metadata addresses are refused regardless).
    blocked_cidrs: tuple[str, ...] = PRIVATE_RANGES
    # Exceptions to blocked_cidrs: an in-cluster registry's range, say.
    allowed_cidrs: tuple[str, ...] = ()
    signing_key_file: Path | None = None
    # With a signing key: also serve the unsigned /fetch/<b64> form (TSB writes that one).
    allow_unsigned: bool = False

    @field_validator("blocked_cidrs", "allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR range ({exc})") from exc
        return value


class CredentialsConfig(_Model):
    # A Docker config.json or a mounted kubernetes.io/dockerconfigjson secret file.
    docker_config: Path | None = None
    # True when the file is an optional Secret mount: missing means anonymous pulls (logged).
    optional: bool = False


class ResolverConfig(_Model):
    # DNS servers asked directly (``host`` or ``host:port``) instead of the system resolver.
    servers: tuple[str, ...] = ()
    timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from meshwasm.safehttp import split_server

        for server in value:
            try:
                host, port = split_server(server)
                ipaddress.ip_address(host)
            except ValueError as exc:
                raise ValueError(f"{server!r} is not an IP address with an optional :port") from exc
            if not 0 < port < 65536:
                raise ValueError(f"{server!r}: port out of range")
        return value


class FetcherConfig(_Model):
    listen: str = "0.0.0.0:8080"
    allow: tuple[str, ...] = ()
    insecure_registries: tuple[str, ...] = ()
    cache: CacheConfig = CacheConfig()
    pull: PullConfig = PullConfig()
    security: SecurityConfig = SecurityConfig()
    resolver: ResolverConfig = ResolverConfig()
    credentials: CredentialsConfig = CredentialsConfig()
    # Signed modules (docs/signing.md): rules here and/or in a policy file (a mounted ConfigMap).
    require_signature: tuple[SignatureRuleConfig, ...] = ()
    require_signature_file: Path | None = None
    log_level: str = "info"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    def signing_key(self) -> bytes | None:
        path = self.security.signing_key_file
        if path is None:
            return None
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the signing key {path}: {exc}") from exc
        if len(key) < 16:
            raise UsageError(
                f"the signing key in {path} is shorter than 16 bytes", hint="use 32 random bytes"
            )
        return key


def split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"listen address {value!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> FetcherConfig:
    """The file's settings (if any) with ``overrides`` (dotted keys from flags) on top."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read fetcher config {path}: {exc}") from exc
        try:
            loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise UsageError(f"{path} is not valid YAML/JSON: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise UsageError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    try:
        return FetcherConfig.model_validate(data)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise UsageError(f"invalid fetcher configuration{where}: {problems}") from exc


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    if isinstance(value, list | tuple) and isinstance(node.get(leaf), list | tuple):
        node[leaf] = [*node[leaf], *value]  # repeatable flags add to the file's list
    else:
        node[leaf] = value
