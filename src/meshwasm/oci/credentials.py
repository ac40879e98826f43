"""Registry credentials: Docker ``config.json``, Kubernetes ``.dockerconfigjson`` secrets, or explicit.

Read: ``auth`` (base64 ``user:password``), ``username``/``password``, ``identitytoken`` (an OAuth2
refresh token), and the ``credHelpers`` / ``credsStore`` credential helpers (``docker-credential-<name>
get``, Docker's protocol), asked only when a registry actually challenges for credentials. Explicit
entries win over helpers. Secrets never appear in ``repr`` or messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from meshwasm.errors import UsageError
from meshwasm.oci.reference import DOCKER_HUB

# Docker writes Docker Hub credentials under its v1 index URL.
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io")


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry: a username/password pair and/or an identity (refresh) token."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    @property
    def has_basic(self) -> bool:
        """True when a username and password are known (usable for Basic auth and token requests)."""
        return bool(self.username) and self.password is not None


class Credentials:
    """Credentials per registry host, looked up by :meth:`for_registry`."""

    def __init__(
        self,
        entries: Mapping[str, RegistryAuth] | None = None,
        *,
        default: RegistryAuth | None = None,
        helpers: Mapping[str, str] | None = None,
        store: str | None = None,
    ):
        """``entries`` maps registry hosts (as in a reference, e.g. ``localhost:5000``) to credentials;
        ``default`` applies to any other registry (explicit ``--username`` for a single command)."""
        self._entries = {_normalize_host(k): v for k, v in (entries or {}).items()}
        self._default = default
        self._helpers = {_normalize_host(k): v for k, v in (helpers or {}).items()}
        self._store = store
        self._from_helpers: dict[str, RegistryAuth | None] = {}

    @classmethod
    def explicit(cls, username: str, password: str, registry: str | None = None) -> Credentials:
        """A username/password for ``registry`` (or for whatever registry the command talks to)."""
        auth = RegistryAuth(username=username, password=password)
        if registry is None:
            return cls(default=auth)
        return cls({registry: auth})

    @classmethod
    def from_docker_config(cls, path: Path | str | None = None) -> Credentials:
        """Read a Docker ``config.json``; ``None`` means ``$DOCKER_CONFIG/config.json`` or
        ``~/.docker/config.json``. A missing default file gives empty credentials."""
        if path is None:
            base = os.environ.get("DOCKER_CONFIG")
            path = Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"
            if not path.is_file():
                return cls()
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read Docker config {path}: {exc.strerror}") from exc
        return cls._parse(data, source=str(path))

    @classmethod
    def from_dockerconfigjson(cls, data: bytes | str) -> Credentials:
        """Read a Kubernetes ``kubernetes.io/dockerconfigjson`` secret's ``.dockerconfigjson`` value
        (already base64-decoded: the JSON itself). The older ``.dockercfg`` shape (no ``auths``
        wrapper) is accepted too."""
        return cls._parse(data.encode() if isinstance(data, str) else data, source=".dockerconfigjson")

    def merged(self, other: Credentials) -> Credentials:
        """These credentials with ``other``'s entries (and default) taking precedence."""
        entries = dict(self._entries)
        entries.update(other._entries)
        helpers = dict(self._helpers)
        helpers.update(other._helpers)
        return Credentials(
            entries,
            default=other._default or self._default,
            helpers=helpers,
            store=other._store or self._store,
        )

    def for_registry(self, host: str) -> RegistryAuth | None:
        """Credentials for ``host`` (``registry[:port]`` as in a reference); ``None`` when unknown."""
        key = _normalize_host(host)
        if key in self._entries:
            return self._entries[key]
        if ":" in key and not key.startswith("["):
            bare = key.rsplit(":", 1)[0]
            if bare in self._entries:
                return self._entries[bare]
        helper = self._helpers.get(key) or self._store
        if helper:
            if key not in self._from_helpers:
                self._from_helpers[key] = _ask_helper(helper, key)
            found = self._from_helpers[key]
            if found is not None:
                return found
        return self._default

    @property
    def registries(self) -> list[str]:
        """The registry hosts that have credentials (never the secrets)."""
        return sorted(self._entries)

    def __repr__(self) -> str:
        helpers = sorted({*self._helpers.values(), *([self._store] if self._store else [])})
        return (
            f"Credentials(registries={self.registries}, helpers={helpers}, "
            f"default={'set' if self._default else 'none'})"
        )

    @classmethod
    def _parse(cls, data: bytes, *, source: str) -> Credentials:
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{source} is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise UsageError(f"{source}: expected a JSON object with an 'auths' map")
        auths = doc.get("auths", doc if "auths" not in doc and _looks_like_dockercfg(doc) else {})
        if not isinstance(auths, dict):
            raise UsageError(f"{source}: 'auths' must be an object mapping registries to credentials")
        entries: dict[str, RegistryAuth] = {}
        for key, entry in auths.items():
            if not isinstance(entry, dict):
                raise UsageError(f"{source}: auths[{key!r}] must be an object")
            auth = _entry_auth(entry, f"{source}: auths[{key!r}]")
            if auth is not None:
                entries[key] = auth
        helpers = doc.get("credHelpers") or {}
        store = doc.get("credsStore")
        if not isinstance(helpers, dict) or not all(isinstance(v, str) for v in helpers.values()):
            raise UsageError(f"{source}: 'credHelpers' must map registries to helper names")
        return cls(entries, helpers=helpers, store=store if isinstance(store, str) and store else None)


def _looks_like_dockercfg(doc: dict[str, object]) -> bool:
    return bool(doc) and all(isinstance(v, dict) and ("auth" in v or "username" in v) for v in doc.values())


def _entry_auth(entry: dict[str, object], where: str) -> RegistryAuth | None:
    username = _str_or_none(entry.get("username"))
    password = _str_or_none(entry.get("password"))
    identity_token = _str_or_none(entry.get("identitytoken"))
    encoded = _str_or_none(entry.get("auth"))
    if encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{where}.auth is not base64 of 'user:password'") from exc
        user, sep, secret = decoded.partition(":")
        if not sep:
            raise UsageError(f"{where}.auth does not decode to 'user:password'")
        username, password = username or user, password if password is not None else secret
    if not (username or identity_token):
        return None
    return RegistryAuth(username=username, password=password, identity_token=identity_token)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _normalize_host(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://host:5000/x`` -> ``host:5000``."""
    key = key.strip()
    if "://" in key:
        key = urlsplit(key).netloc or key
    key = key.split("/", 1)[0].lower()
    if key in _DOCKER_HUB_KEYS or key in ("index.docker.io", "registry-1.docker.io"):
        return DOCKER_HUB
    return key


def _ask_helper(helper: str, host: str) -> RegistryAuth | None:
    """``docker-credential-<helper> get`` for ``host`` (Docker's credential-helper protocol)."""
    program = f"docker-credential-{helper}"
    path = shutil.which(program)
    if path is None:
        raise UsageError(
            f"Docker config names credential helper {helper!r} for {host}, but {program} is not installed",
            hint="install the helper, or put the credentials in config.json 'auths' / pass --username",
        )
    server = "https://index.docker.io/v1/" if host == DOCKER_HUB else host
    try:
        result = subprocess.run(
            [path, "get"], input=server, capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise UsageError(f"credential helper {program} did not answer within 30 s") from exc
    if result.returncode != 0:
        if "credentials not found" in (result.stdout + result.stderr).lower():
            return None
        raise UsageError(f"credential helper {program} failed for {host} (exit {result.returncode})")
    try:
        doc = json.loads(result.stdout)
        username, secret = str(doc["Username"]), str(doc["Secret"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"credential helper {program} answered something that is not its JSON") from exc
    if username == "<token>":  # Docker's marker for an identity token
        return RegistryAuth(identity_token=secret)
    return RegistryAuth(username=username, password=secret)
