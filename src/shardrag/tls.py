"""TLS for shardrag's connections: client contexts, and a private CA for a cluster.

``tls_context`` is what a client of the api (``ShardragClient``) or of NATS presents: the CA
it trusts and, for mutual TLS, its own certificate. ``CertificateAuthority`` makes the
certificates ``shardrag cluster up --tls`` runs the topology with: one CA, one key pair per
process, every certificate valid for 127.0.0.1 and localhost (or the names given).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shardrag.config import Settings

#: Validity of certificates made here.
_VALID_DAYS = 365


def tls_context(
    ca_file: str | None = None, cert: str | tuple[str, str | None] | None = None
) -> ssl.SSLContext:
    """A client context verifying servers against ``ca_file`` (default: the system's CAs),
    presenting ``cert`` (a PEM holding certificate and key, or (certificate, key) files)."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert is not None:
        certfile, keyfile = cert if isinstance(cert, tuple) else (cert, None)
        context.load_cert_chain(certfile, keyfile)
    return context


def nats_tls(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the settings' NATS connections, or None for plain ones."""
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    cert = (settings.nats_tls_cert, settings.nats_tls_key) if settings.nats_tls_cert else None
    return tls_context(settings.nats_tls_ca, cert)


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


class CertificateAuthority:
    """A private CA kept in a directory (``ca.pem``, ``ca-key.pem``), issuing leaf
    certificates good for both server and client authentication."""

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        self.directory = directory
        self.cert_path = directory / "ca.pem"
        key_path = directory / "ca-key.pem"
        if not self.cert_path.exists():
            self._create(key_path)
        self._cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        self._key = key

    def _create(self, key_path: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shardrag cluster CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_key(key_path, key)
        self.cert_path.write_bytes(_pem(cert))

    def issue(
        self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    ) -> IssuedCertificate:
        """A certificate for ``name`` (its common name and file names), valid as a server for
        ``hosts`` and as a client."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alt_names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())  # type: ignore[arg-type]
        )
        issued = IssuedCertificate(
            self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        )
        _write_key(issued.key, key)
        issued.cert.write_bytes(_pem(cert))
        return issued


def _pem(cert: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined, no-any-return]


def _write_key(path: Path, key: object) -> None:
    """A private key as PEM, readable by its owner only."""
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)
