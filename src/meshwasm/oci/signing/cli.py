"""``meshwasm image sign`` and ``meshwasm image verify`` (cosign's key-based format)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshwasm import ui
from meshwasm.errors import UsageError
from meshwasm.oci.cli import (
    AnnotationOption,
    DockerConfigOption,
    InsecureOption,
    PasswordStdinOption,
    UsernameOption,
    _annotations,
    _client,
)

if TYPE_CHECKING:  # cryptography is imported by the verbs that use keys, not by every CLI start
    from meshwasm.oci.signing.keys import PrivateKey, PublicKey

PASSWORD_ENV = "COSIGN_PASSWORD"  # noqa: S105 (the variable's name, as cosign reads it)


def read_key_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def load_signing_key(path: Path) -> PrivateKey:
    """The private key in ``path``; an encrypted one is opened with ``$COSIGN_PASSWORD`` (as cosign),
    or a prompt when stdin is a terminal."""
    from meshwasm.oci.signing.keys import load_private_key

    data = read_key_file(path, "private key")
    password: bytes | None = None
    if b"ENCRYPTED" in data:
        env = os.environ.get(PASSWORD_ENV)
        if env is not None:
            password = env.encode()
        elif sys.stdin.isatty():
            import getpass

            password = getpass.getpass(f"Enter password for private key {path}: ").encode()
    return load_private_key(data, source=str(path), password=password)


def load_verification_keys(paths: list[Path]) -> list[PublicKey]:
    from meshwasm.oci.signing.keys import load_public_keys

    keys: list[PublicKey] = []
    for path in paths:
        keys.extend(load_public_keys(read_key_file(path, "public key"), source=str(path)))
    return keys


def register(image_app: typer.Typer) -> None:
    """Add ``sign`` and ``verify`` to ``meshwasm image``."""

    @image_app.command("sign")
    def sign_cmd(
        reference: Annotated[
            str, typer.Argument(help="The image to sign, e.g. localhost:5000/add-header:v1.")
        ],
        key: Annotated[
            Path,
            typer.Option(
                "--key",
                help="Private key: cosign.key (encrypted, password in $COSIGN_PASSWORD) or a PKCS#8 EC key.",
            ),
        ],
        annotation: AnnotationOption = None,
        insecure: InsecureOption = False,
        username: UsernameOption = None,
        password_stdin: PasswordStdinOption = False,
        docker_config: DockerConfigOption = None,
    ) -> None:
        """Sign the image's digest as cosign does (stored under the sha256-<digest>.sig tag)."""
        from meshwasm.oci.reference import parse_reference
        from meshwasm.oci.signing.remote import sign_image

        ref = parse_reference(reference)
        private = load_signing_key(key)  # before any network: a bad key or password fails fast
        annotations = _annotations(annotation, source=None, created=False)
        client = _client(
            ref, insecure=insecure, username=username, password_stdin=password_stdin,
            docker_config=docker_config,
        )  # fmt: skip
        with client:
            result = sign_image(client, ref, private, annotations=annotations or None)
        ui.stdout.print(f"image:     {ref.name}@{result.digest}", markup=False)
        ui.stdout.print(f"signature: {result.signature_ref}", markup=False)
        ui.stdout.print(f"key:       {private.public.fingerprint}")
        if result.added:
            ui.stdout.print(f"pushed:    {result.signature_ref.name}@{result.signature_manifest_digest}")
        else:
            ui.stdout.print("unchanged: the same signature by this key is already there")

    @image_app.command("verify")
    def verify_cmd(
        reference: Annotated[
            str, typer.Argument(help="The image to verify, e.g. localhost:5000/add-header:v1.")
        ],
        key: Annotated[
            list[Path],
            typer.Option(
                "--key", help="Trusted public key (cosign.pub); repeatable, any one may have signed."
            ),
        ],
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        insecure: InsecureOption = False,
        username: UsernameOption = None,
        password_stdin: PasswordStdinOption = False,
        docker_config: DockerConfigOption = None,
    ) -> None:
        """Verify the image's signature with the public key(s), as `cosign verify --key` does.

        Exits 0 when a signature by a trusted key claims the image's digest; otherwise exits 6 and
        says why (unsigned, another key, a signature for another digest)."""
        from meshwasm.oci.reference import parse_reference
        from meshwasm.oci.signing.errors import SignatureRefused
        from meshwasm.oci.signing.remote import verify_image

        ref = parse_reference(reference)
        keys = load_verification_keys(key)
        client = _client(
            ref, insecure=insecure, username=username, password_stdin=password_stdin,
            docker_config=docker_config,
        )  # fmt: skip
        with client:
            try:
                result = verify_image(client, ref, keys)
            except SignatureRefused as exc:
                if not as_json:
                    raise
                refusal = {
                    "reference": str(ref),
                    "digest": exc.digest,
                    "verified": False,
                    "reason": exc.reason,
                    "message": exc.message,
                }
                ui.stdout.print(json.dumps(refusal, indent=2), markup=False)
                raise  # the message on stderr too, and exit 6
        if as_json:
            ui.stdout.print(json.dumps(result.to_json(), indent=2), markup=False)
            return
        ui.stdout.print(f"verified:  {ref.name}@{result.digest}", markup=False)
        for signature in result.signatures:
            ui.stdout.print(
                f"signature: key {signature.key.fingerprint} ({signature.key.source}), "
                f"docker-reference {signature.identity}",
                markup=False,
            )
