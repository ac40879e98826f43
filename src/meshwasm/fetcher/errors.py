"""Fetch failures as HTTP answers: each one a status, a stable code and a message.

The service turns every :class:`FetchError` into ``{"error": {"code", "message"}}``
with its status; registry errors from :mod:`meshwasm.oci.errors` are mapped in
:func:`from_registry_error` so the mapping lives in one place.
"""

from __future__ import annotations

from meshwasm.errors import ExitCode, MeshwasmError


class FetchError(MeshwasmError):
    """A request the fetcher answers with an error status."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(FetchError):
    status = 400
    code = "bad_request"
    exit_code = ExitCode.USAGE


class Forbidden(FetchError):
    status = 403
    code = "forbidden"


class NotFound(FetchError):
    status = 404
    code = "not_found"
    exit_code = ExitCode.NOT_FOUND


class NotWasm(FetchError):
    status = 422
    code = "not_wasm"
    exit_code = ExitCode.INTEGRITY


class TooLarge(FetchError):
    status = 413
    code = "module_too_large"


class UpstreamFailed(FetchError):
    """The registry or http host failed, timed out, or sent bytes that did not verify."""

    status = 502
    code = "upstream_failed"
    exit_code = ExitCode.NETWORK


class ChecksumMismatch(UpstreamFailed):
    code = "checksum_mismatch"
    exit_code = ExitCode.INTEGRITY


class BadUpstreamData(UpstreamFailed):
    """The registry or host answered, but with something no valid module source sends."""

    code = "bad_registry_data"
    exit_code = ExitCode.INTEGRITY


class UpstreamTimeout(UpstreamFailed):
    """The pull did not finish within its whole-pull deadline (``pull.timeout_seconds``)."""

    status = 504
    code = "pull_timeout"


class PullSlotsBusy(FetchError):
    """Every pull slot for this host stayed taken for a whole pull deadline: try again later."""

    status = 503
    code = "pull_slots_busy"
    exit_code = ExitCode.NETWORK


class CacheFull(FetchError):
    """The cache's file system is full (ENOSPC, EDQUOT): nothing new can be stored."""

    status = 507
    code = "cache_full"


class CacheUnwritable(FetchError):
    """The cache directory cannot be written (read-only, permissions, I/O errors)."""

    status = 503
    code = "cache_unwritable"


def from_cache_error(exc: Exception) -> FetchError:
    """The HTTP answer for a cache that could not store a module."""
    from meshwasm.fetcher.cache import CacheFullError

    if isinstance(exc, CacheFullError):
        return CacheFull(str(exc))
    return CacheUnwritable(str(exc))


def from_registry_error(exc: Exception) -> FetchError:
    """The HTTP answer for an error raised by the OCI registry client."""
    from meshwasm.deadline import DeadlineExceeded
    from meshwasm.oci import errors as oci

    message = str(exc)
    table: list[tuple[type[Exception], type[FetchError], str]] = [
        (oci.PullTimeout, UpstreamTimeout, "pull_timeout"),
        (DeadlineExceeded, UpstreamTimeout, "pull_timeout"),
        (oci.TooManyLayerMembers, BadUpstreamData, "layer_too_many_members"),
        (oci.BadRegistryData, BadUpstreamData, "bad_registry_data"),
        (oci.InvalidReference, BadRequest, "invalid_reference"),
        (oci.ImageNotFound, NotFound, "image_not_found"),
        (oci.NotAWasmImage, NotWasm, "not_wasm"),
        (oci.ModuleTooLarge, TooLarge, "module_too_large"),
        (oci.DigestMismatch, ChecksumMismatch, "checksum_mismatch"),
        (oci.InsecureRegistryError, Forbidden, "insecure_registry"),
        (oci.AuthenticationError, UpstreamFailed, "registry_auth_failed"),
        (oci.RegistryUnavailable, UpstreamFailed, "registry_unavailable"),
    ]
    for oci_type, fetch_type, code in table:
        if isinstance(exc, oci_type):
            return fetch_type(message, code=code)
    return UpstreamFailed(message, code="registry_error")
