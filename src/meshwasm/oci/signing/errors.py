"""Errors of signing and verification, each with a stable ``reason`` the fetcher and agent report.

:class:`SignatureRefused` is the one a policy turns into a refusal (HTTP 403 in the fetcher): the
image has no signature that the trusted keys verify for its digest. The reason says which case:

- ``unsigned``: no ``sha256-<digest>.sig`` manifest, or one without simple-signing layers;
- ``untrusted_signature``: signatures exist, but none verifies with the trusted key(s);
- ``digest_mismatch``: a signature verifies, but its payload names another image digest;
- ``malformed_signature``: a signature verifies, but its payload is not a cosign simple-signing claim;
  or none verifies and a payload could not be read (missing, oversized, not matching its digest).
"""

from __future__ import annotations

from typing import Literal

from meshwasm.errors import ExitCode, UsageError
from meshwasm.oci.errors import RegistryError

RefusalReason = Literal["unsigned", "untrusted_signature", "digest_mismatch", "malformed_signature"]


class SigningKeyError(UsageError):
    """A key file that cannot be used: not PEM, not ECDSA, encrypted without a password, wrong password."""


class SignatureRefused(RegistryError):
    """The image has no valid signature by a trusted key (see the module docstring for ``reason``)."""

    exit_code = ExitCode.INTEGRITY

    def __init__(self, message: str, *, reason: RefusalReason, digest: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.reason: RefusalReason = reason
        self.digest = digest
