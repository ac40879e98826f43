"""The local control plane's credentials: a CA, the API server's serving certificate, the
service-account signing key pair, an admin token and a kubeconfig (all written with mode 0600)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ADMIN_USER = "meshwasm-admin"
# The names the API server answers to, inside and outside the cluster.
SERVING_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")


@dataclass(frozen=True)
class Credentials:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_public_key: Path
    sa_private_key: Path
    token_file: Path  # --token-auth-file: the admin's bearer token
    kubeconfig: Path
    token: str


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_credentials(directory: Path, *, api_url: str, service_ip: str) -> Credentials:
    """Fresh credentials for one local cluster in ``directory``; ``api_url`` goes in the kubeconfig."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("meshwasm-local-ca", ca_key, None, ca_key, ca=True)
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = _cert(
        "kube-apiserver",
        serving_key,
        ca,
        ca_key,
        ca=False,
        names=SERVING_NAMES,
        ips=("127.0.0.1", service_ip),
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())
    token = secrets.token_hex(24)
    creds = Credentials(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_public_key=directory / "sa.pub",
        sa_private_key=directory / "sa.key",
        token_file=directory / "tokens.csv",
        kubeconfig=directory / "kubeconfig",
        token=token,
    )
    _write_private(creds.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    _write_private(creds.serving_cert, serving.public_bytes(serialization.Encoding.PEM))
    _write_private(creds.serving_key, _key_pem(serving_key))
    _write_private(creds.sa_private_key, _key_pem(sa_key))
    _write_private(
        creds.sa_public_key,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    # token,user,uid,"group": the admin is in system:masters (RBAC allows everything).
    _write_private(creds.token_file, f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'.encode())
    _write_private(creds.kubeconfig, kubeconfig_yaml(api_url, creds.ca_cert, token).encode())
    return creds


def kubeconfig_yaml(api_url: str, ca_cert: Path, token: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "meshwasm", "cluster": {"server": api_url, "certificate-authority": str(ca_cert)}}
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": "meshwasm", "context": {"cluster": "meshwasm", "user": ADMIN_USER}}],
        "current-context": "meshwasm",
    }
    return yaml.safe_dump(config, sort_keys=False)
