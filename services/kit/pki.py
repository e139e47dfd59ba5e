"""Certificates for the mesh: a CA, and one certificate per service with a SPIFFE ID.

Each certificate carries a URI SAN ``spiffe://<trust domain>/service/<name>`` (tools get
``.../tool/<name>``) and is valid both as server and client certificate, so one key pair
identifies a service on every hop. ``innominatus up`` creates a development CA with these
helpers on first start; production issues the same shape from its own CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "innominatus.local"
SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()


def spiffe_id(name: str, kind: str = "service") -> str:
    return f"{SPIFFE_PREFIX}{kind}/{name}"


def identity_from_spiffe(uri: str) -> str | None:
    """The peer name of a SPIFFE ID in our trust domain, else None: ``specs`` for
    ``.../service/specs`` and ``tool/cli`` for ``.../tool/cli``, so a tool's certificate can
    never pass for a service of the same name."""
    if not uri.startswith(SPIFFE_PREFIX):
        return None
    parts = uri[len(SPIFFE_PREFIX) :].split("/")
    if len(parts) != 2 or parts[0] not in ("service", "tool") or not parts[1]:
        return None
    return parts[1] if parts[0] == "service" else f"tool/{parts[1]}"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(directory: Path, common_name: str = "innominatus development CA") -> TlsFiles:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "ca.pem", directory / "ca-key.pem")
    directory.mkdir(parents=True, exist_ok=True)
    files.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.key, _key_pem(key))
    return files


def issue(
    ca: TlsFiles,
    directory: Path,
    name: str,
    kind: str = "service",
    hostnames: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1", "::1"),
    days: int = 365,
) -> TlsFiles:
    """Issue a certificate for ``name`` signed by ``ca`` into ``directory/<name>.pem``."""
    ca_cert = x509.load_pem_x509_certificate(ca.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id(name, kind))]
    sans += [x509.DNSName(h) for h in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{kind}/{name}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca.ca, directory / f"{name}.pem", directory / f"{name}-key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.key, _key_pem(key))
    return files


def ensure_dev_pki(directory: Path, names: list[str], tools: tuple[str, ...] = ("cli",)) -> dict[str, TlsFiles]:
    """Create (once) a development CA and a certificate per service and tool."""
    ca_path = directory / "ca.pem"
    if ca_path.exists():
        ca = TlsFiles(ca_path, ca_path, directory / "ca-key.pem")
    else:
        ca = create_ca(directory)
    result: dict[str, TlsFiles] = {}
    for kind, group in (("service", names), ("tool", tools)):
        for name in group:
            files = TlsFiles(ca.ca, directory / f"{name}.pem", directory / f"{name}-key.pem")
            if not (files.cert.exists() and files.key.exists()):
                files = issue(ca, directory, name, kind=kind)
            result[name] = files
    return result
