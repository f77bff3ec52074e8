"""A private certificate authority made on the spot: its CA, a server certificate for 127.0.0.1, a client one.

As a company's internal CA issues them: the CA is self-signed and trusted by nobody else, the server certificate
names ``127.0.0.1`` and ``localhost`` and is signed by the CA, and the client certificate (for mutual TLS) is
signed by the same CA.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclasses.dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM text and as files."""

    cert_pem: str
    key_pem: str
    cert_file: Path
    key_file: Path

    @property
    def sha256_fingerprint(self) -> str:
        """The certificate's SHA-256 fingerprint, hex with colons (as ``openssl x509 -fingerprint`` prints it)."""
        der = x509.load_pem_x509_certificate(self.cert_pem.encode()).public_bytes(serialization.Encoding.DER)
        digest = hashlib.sha256(der).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@dataclasses.dataclass(frozen=True)
class PrivateCA:
    ca: Issued
    server: Issued
    client: Issued
    stranger: Issued  # a server certificate from another CA, for "wrong CA" checks


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_file.write_text(cert_pem)
    key_file.write_text(key_pem)
    key_file.chmod(0o600)
    return Issued(cert_pem, key_pem, cert_file, key_file)


def _authority(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital signature, key cert sign, CRL sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def private_ca(directory: Path) -> PrivateCA:
    """A CA, a server and a client certificate it signed, and a server certificate another CA signed."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _authority("Flywheel Test Private CA")
    other_cert, other_key = _authority("Some Other CA")
    return PrivateCA(
        ca=_write(directory, "ca", ca_cert, ca_key),
        server=_write(directory, "server", *_issue(ca_cert, ca_key, "logs.internal", server=True)),
        client=_write(directory, "client", *_issue(ca_cert, ca_key, "flywheel-worker", server=False)),
        stranger=_write(directory, "stranger", *_issue(other_cert, other_key, "logs.internal", server=True)),
    )
