"""Image references (``[oci://]registry/repository[:tag][@digest]``), parsed as Docker and Istio do.

The grammar follows distribution/reference: the first path component is a registry
when it contains ``.`` or ``:`` or is ``localhost``; otherwise the image is on Docker Hub
(``docker.io``, single names under ``library/``). A reference with neither tag nor
digest means ``latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from meshwasm.oci.errors import InvalidReference

OCI_SCHEME = "oci://"
DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """One image in one registry: ``registry/repository`` plus a tag, a digest, or both."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def module_name(self) -> str:
        """``oci://registry/repository`` without tag or digest: the key Istio's agent caches modules by."""
        return f"{OCI_SCHEME}{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def name(self) -> str:
        """``registry/repository``."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> Reference:
        """The same image pinned to ``digest`` (the tag is kept for display)."""
        return replace(self, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag`` (no digest)."""
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Parse ``[oci://]name[:tag][@digest]``; raises :class:`InvalidReference` saying what is wrong."""
    original = text
    text = text.strip()
    if text.startswith(OCI_SCHEME):
        text = text[len(OCI_SCHEME) :]
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise InvalidReference(
            f"invalid image reference {original!r}: scheme {scheme}:// is not an OCI reference",
            hint="write it as registry/repository:tag, optionally prefixed with oci://",
        )
    if not text:
        raise InvalidReference(
            "invalid image reference: it is empty", hint="example: localhost:5000/add-header:v1"
        )

    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise InvalidReference(
                f"invalid image reference {original!r}: digest {digest!r} is not sha256:<64 hex> "
                "(or sha512:<128 hex>)"
            )

    tag: str | None = None
    last_slash = text.rfind("/")
    last_colon = text.rfind(":")
    if last_colon > last_slash:
        text, tag = text[:last_colon], text[last_colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReference(
                f"invalid image reference {original!r}: tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], "
                "not starting with '.' or '-'"
            )

    registry, repository = _split_name(text, original)
    if len(f"{registry}/{repository}") > _MAX_NAME:
        raise InvalidReference(f"invalid image reference {original!r}: name longer than {_MAX_NAME}")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest)


def _split_name(name: str, original: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
        if not _DOMAIN_RE.match(registry):
            raise InvalidReference(
                f"invalid image reference {original!r}: {registry!r} is not a registry host"
            )
        if registry.lower() in _DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not repository or not _PATH_RE.match(repository):
        raise InvalidReference(
            f"invalid image reference {original!r}: repository {repository!r} must be lowercase "
            "components of [a-z0-9] separated by '.', '_', '__', '-' or '/'",
            hint="example: localhost:5000/team/add-header:v1",
        )
    return registry, repository
