"""Signing keys in the forms cosign reads and writes (pure: bytes in, keys out).

Private keys:

- ``ENCRYPTED SIGSTORE PRIVATE KEY`` (what ``cosign generate-key-pair`` writes; older cosign wrote
  ``ENCRYPTED COSIGN PRIVATE KEY``): a PEM block whose body is JSON ``{"kdf": scrypt, "cipher":
  nacl/secretbox, "ciphertext"}`` around a PKCS#8 key; the password is cosign's ``COSIGN_PASSWORD``;
- an unencrypted PKCS#8 ``PRIVATE KEY`` or SEC1 ``EC PRIVATE KEY`` (``openssl genpkey``), for
  keys kept in a secret store that already protects them.

Public keys: PEM ``PUBLIC KEY`` blocks (``cosign.pub``); one file may hold several.

Signatures are ECDSA over SHA-256, ASN.1 DER encoded, as cosign makes them with its default key
type (P-256); P-384 and P-521 keys verify with SHA-256 too, as cosign verifies them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshwasm.oci.signing.errors import SigningKeyError

ENCRYPTED_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
PLAIN_PEM_TYPES = ("PRIVATE KEY", "EC PRIVATE KEY")
PUBLIC_PEM_TYPE = "PUBLIC KEY"

# The scrypt parameter sets go-securesystemslib accepts (legacy, standard, OWASP); anything else
# is refused before spending memory on it, as cosign does.
_SCRYPT_PARAMS = {(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)}
_SECRETBOX_KEY_SIZE = 32
_SECRETBOX_NONCE_SIZE = 24
_SALT_SIZE = 32

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class PemBlock:
    type: str
    body: bytes


def pem_blocks(data: bytes) -> list[PemBlock]:
    """Every PEM block in ``data``, decoded (headers such as ``Proc-Type`` are not supported)."""
    blocks = []
    for match in _PEM_RE.finditer(data):
        text = b"".join(line.strip() for line in match.group(2).splitlines())
        try:
            body = base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise SigningKeyError(f"a {match.group(1).decode()} PEM block is not valid base64") from exc
        blocks.append(PemBlock(match.group(1).decode(), body))
    return blocks


@dataclass(frozen=True)
class PublicKey:
    """An ECDSA public key that verifies cosign signatures."""

    key: ec.EllipticCurvePublicKey
    source: str  # where it came from, for messages

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the key's DER SubjectPublicKeyInfo (stable across PEM formatting)."""
        return "sha256:" + hashlib.sha256(self.der()).hexdigest()

    def der(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verifies(self, signature: bytes, payload: bytes) -> bool:
        """True when ``signature`` (ASN.1 DER) is this key's ECDSA/SHA-256 signature of ``payload``."""
        try:
            self.key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class PrivateKey:
    """An ECDSA private key that signs as cosign does."""

    key: ec.EllipticCurvePrivateKey
    source: str

    def sign(self, payload: bytes) -> bytes:
        """ECDSA/SHA-256 signature of ``payload``, ASN.1 DER encoded."""
        return self.key.sign(payload, ec.ECDSA(hashes.SHA256()))

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), self.source)


def load_public_keys(data: bytes, *, source: str) -> list[PublicKey]:
    """Every ``PUBLIC KEY`` in ``data`` (a cosign.pub, or several concatenated)."""
    blocks = pem_blocks(data)
    if not blocks:
        raise SigningKeyError(
            f"{source}: no PEM block found",
            hint="a public key starts with -----BEGIN PUBLIC KEY----- (e.g. cosign.pub)",
        )
    keys = []
    for block in blocks:
        if block.type != PUBLIC_PEM_TYPE:
            raise SigningKeyError(
                f"{source}: holds a {block.type} block where a PUBLIC KEY was expected",
                hint="pass the public half (cosign.pub) to verify; the private key signs",
            )
        try:
            key = serialization.load_der_public_key(block.body)
        except ValueError as exc:
            raise SigningKeyError(f"{source}: the PUBLIC KEY block is not a valid key ({exc})") from exc
        keys.append(PublicKey(_ecdsa(key, source), source))
    return keys


def load_private_key(data: bytes, *, source: str, password: bytes | None) -> PrivateKey:
    """The first private key in ``data``; ``password`` decrypts cosign's encrypted form."""
    blocks = [b for b in pem_blocks(data) if b.type in ENCRYPTED_PEM_TYPES + PLAIN_PEM_TYPES]
    if not blocks:
        raise SigningKeyError(
            f"{source}: no private key found",
            hint="use cosign.key from `cosign generate-key-pair` or an unencrypted PKCS#8 EC key "
            "(openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)",
        )
    block = blocks[0]
    if block.type in ENCRYPTED_PEM_TYPES:
        if password is None:
            raise SigningKeyError(
                f"{source} is encrypted and no password was given",
                hint="set COSIGN_PASSWORD (cosign's variable) to the key's password",
            )
        der = decrypt_cosign_key(block.body, password, source=source)
        loader: Any = serialization.load_der_private_key
    else:
        der = block.body
        loader = serialization.load_der_private_key
    try:
        key = loader(der, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{source}: the {block.type} is not a valid private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningKeyError(
            f"{source}: a {type(key).__name__.lstrip('_')} key; meshwasm signs with ECDSA keys only",
            hint="cosign's default key type is ECDSA P-256 (cosign generate-key-pair)",
        )
    return PrivateKey(key, source)


def decrypt_cosign_key(body: bytes, password: bytes, *, source: str) -> bytes:
    """The PKCS#8 DER inside an ``ENCRYPTED SIGSTORE PRIVATE KEY`` block (scrypt + secretbox)."""
    import nacl.exceptions
    import nacl.secret

    try:
        doc = json.loads(body)
        kdf, cipher = doc["kdf"], doc["cipher"]
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        ciphertext = base64.b64decode(doc["ciphertext"], validate=True)
        kdf_name, cipher_name = kdf["name"], cipher["name"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SigningKeyError(f"{source}: the encrypted key is not cosign's JSON envelope ({exc})") from exc
    if kdf_name != "scrypt" or cipher_name != "nacl/secretbox":
        raise SigningKeyError(
            f"{source}: unsupported key encryption {kdf_name}/{cipher_name} (scrypt/nacl/secretbox)"
        )
    if (n, r, p) not in _SCRYPT_PARAMS:
        raise SigningKeyError(f"{source}: unsupported scrypt parameters N={n} r={r} p={p}")
    if len(nonce) != _SECRETBOX_NONCE_SIZE:
        raise SigningKeyError(
            f"{source}: the secretbox nonce is {len(nonce)} bytes, not {_SECRETBOX_NONCE_SIZE}"
        )
    key = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(ciphertext, nonce))
    except nacl.exceptions.CryptoError as exc:
        raise SigningKeyError(
            f"{source}: wrong password (the key could not be decrypted)",
            hint="COSIGN_PASSWORD must be the password given to cosign generate-key-pair",
        ) from exc


def encrypt_cosign_key(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """``key`` as cosign writes it: an ``ENCRYPTED SIGSTORE PRIVATE KEY`` PEM (scrypt N=65536)."""
    import nacl.secret

    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt = os.urandom(_SALT_SIZE)
    nonce = os.urandom(_SECRETBOX_NONCE_SIZE)
    box_key = hashlib.scrypt(password, salt=salt, n=65536, r=8, p=1, maxmem=256 * 1024 * 1024, dklen=32)
    sealed = nacl.secret.SecretBox(box_key).encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }
    return _pem(ENCRYPTED_PEM_TYPES[0], json.dumps(doc).encode())


def _ecdsa(key: object, source: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigningKeyError(
            f"{source}: a {type(key).__name__.lstrip('_')}; meshwasm verifies ECDSA keys only",
            hint="cosign's default key type is ECDSA P-256 (cosign generate-key-pair)",
        )
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(kind: str, body: bytes) -> bytes:
    text = base64.b64encode(body).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n").encode()
