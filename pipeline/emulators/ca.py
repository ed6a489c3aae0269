"""A throwaway certificate authority, so emulators speak real, verified TLS.

The CA exists only for the life of one test session or dev stack: its key never
leaves memory, its certificate is written as ``ca.pem`` for clients to trust
(``ApnsSender(ca_file=...)``), and it issues server certificates for loopback
names that an emulator serves with ``server_ssl_context``.
"""

from __future__ import annotations

import ipaddress
import itertools
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Long enough for a dev stack left running for weeks, short enough to be inert.
_VALIDITY = timedelta(days=30)
#: Back-date certificates a little so a client clock slightly behind accepts them.
_BACKDATE = timedelta(hours=1)
#: RFC 7540 section 9.2.2: HTTP/2 over TLS wants ephemeral keys and AEAD ciphers.
_H2_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass
class TestCA:
    """A certificate authority made on the spot; ``ca_path`` is what clients trust."""

    __test__ = False  # not a pytest test class, whatever its name says

    directory: Path
    ca_path: Path
    _key: ec.EllipticCurvePrivateKey = field(repr=False)
    _cert: x509.Certificate = field(repr=False)
    _serials: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def create(cls, directory: Path) -> TestCA:
        """Make a new CA and write its certificate to ``directory/ca.pem``."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "notify-pipeline test CA")]
        )
        now = datetime.now(UTC)
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        ca_path = directory / "ca.pem"
        ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory=directory, ca_path=ca_path, _key=key, _cert=cert)

    def issue_server_cert(
        self, hosts: Sequence[str] = ("127.0.0.1", "localhost")
    ) -> tuple[Path, Path]:
        """Issue a server certificate for ``hosts``; returns (cert_path, key_path).

        Each host becomes a subjectAltName: an IP address entry when it parses
        as one (clients match IPs only against IP entries), a DNS name otherwise.
        """
        if not hosts:
            raise ValueError("a server certificate needs at least one host")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
            )
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(
                x509.SubjectAlternativeName(list(_alt_names(hosts))), critical=False
            )
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._key.public_key()
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        serial = next(self._serials)
        cert_path = self.directory / f"server-{serial}.pem"
        key_path = self.directory / f"server-{serial}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def _alt_names(hosts: Iterable[str]) -> Iterable[x509.GeneralName]:
    """subjectAltName entries for host names and IP literals."""
    for host in hosts:
        try:
            yield x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            yield x509.DNSName(host)


def server_ssl_context(
    cert_path: Path, key_path: Path, alpn: Sequence[str] = ("h2",)
) -> ssl.SSLContext:
    """A server-side TLS context offering ``alpn`` (HTTP/2 only by default)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_ciphers(_H2_CIPHERS)
    context.set_alpn_protocols(list(alpn))
    context.load_cert_chain(certfile=cert_path, keyfile=key_path)
    return context
