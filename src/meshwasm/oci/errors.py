"""Errors of the OCI area: every registry failure a user can fix, with an exit code scripts can rely on.

All are :class:`RegistryError` (a :class:`~meshwasm.errors.MeshwasmError`), so the CLI prints the
message and the hint and exits with ``exit_code``. Messages name the registry or the reference,
never a password or a token.
"""

from __future__ import annotations

from meshwasm.errors import ExitCode, MeshwasmError


class RegistryError(MeshwasmError):
    """A registry operation failed (base of every error in this module)."""

    exit_code = ExitCode.ERROR


class InvalidReference(RegistryError):
    """An image reference that cannot be parsed (e.g. ``oci://Registry/UPPER:tag!``)."""

    exit_code = ExitCode.USAGE


class ImageNotFound(RegistryError):
    """The repository, tag, digest or blob does not exist in the registry (404 / MANIFEST_UNKNOWN)."""

    exit_code = ExitCode.NOT_FOUND


class AuthenticationError(RegistryError):
    """The registry answered 401/403: credentials were missing or rejected (never shows the password)."""

    exit_code = ExitCode.AUTH


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or failed: refused, reset, DNS, timeout, 5xx."""

    exit_code = ExitCode.NETWORK


class NotAWasmImage(RegistryError):
    """The image has no wasm layer, or its content does not start with ``\\0asm``."""

    exit_code = ExitCode.INTEGRITY


class PluginNotInLayer(NotAWasmImage):
    """A tar+gzip layer that is unreadable or holds no ``plugin.wasm`` (Istio then tries the oci variant)."""


class DigestMismatch(RegistryError):
    """Bytes received do not hash to the digest that was asked for or announced."""

    exit_code = ExitCode.INTEGRITY


class ModuleTooLarge(RegistryError):
    """A manifest, blob or module exceeds the configured size cap (default 256 MiB, as Istio)."""

    exit_code = ExitCode.INTEGRITY


class InsecureRegistryError(RegistryError):
    """Plain HTTP to a registry the user did not mark insecure (and that is not loopback)."""

    exit_code = ExitCode.USAGE


class PullTimeout(RegistryUnavailable):
    """A pull did not finish within its whole-pull deadline (slow or stalled registry)."""


class BadRegistryData(RegistryError):
    """The registry sent something no valid image has: a malformed manifest or descriptor
    (a negative size, a missing digest), or a layer that is not what it claims to be."""

    exit_code = ExitCode.INTEGRITY


class TooManyLayerMembers(BadRegistryData):
    """A tar layer holds more entries than any wasm image needs (refused before reading them all)."""
