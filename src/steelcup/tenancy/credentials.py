"""The daemon's own certificate authority for the tenant listener (docker's TLS layout).

`Authority(directory)` keeps `ca.pem`/`ca-key.pem` (made on first use, EC P-256, 10 years) and a
server certificate for the listener's names. `issue_client` signs a client certificate for one
tenant key (CN = the tenant, the key id in the serial's place as OU); what the daemon keeps of
it is only the SHA-256 of its DER form (steelcup.tenancy.store).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS_DEFAULT = 365
_ORG = "steelcup"


@dataclass(frozen=True)
class ClientCredential:
    cert_pem: bytes
    key_pem: bytes
    cert_der: bytes
    not_after: datetime.datetime


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class Authority:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_pem_path = directory / "ca.pem"
        self._ca_key_path = directory / "ca-key.pem"
        self._cert: x509.Certificate | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if self._cert is None or self._key is None:
            if not self.ca_pem_path.exists():
                self._create()
            cert = x509.load_pem_x509_certificate(self.ca_pem_path.read_bytes())
            key = serialization.load_pem_private_key(self._ca_key_path.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self._ca_key_path}: not an EC key")
            self._cert, self._key = cert, key
        return self._cert, self._key

    def _create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
                          x509.NameAttribute(NameOID.COMMON_NAME, "steelcup tenant CA")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        _write_private(self._ca_key_path, _key_pem(key))
        tmp = self.ca_pem_path.with_suffix(".tmp")
        tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tmp.replace(self.ca_pem_path)

    def ca_pem(self) -> bytes:
        cert, _ = self._load()
        return cert.public_bytes(serialization.Encoding.PEM)

    def _sign(self, subject: x509.Name, public: ec.EllipticCurvePublicKey, days: int,
              usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None = None
              ) -> x509.Certificate:
        ca_cert, ca_key = self._load()
        now = _now()
        not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(ca_cert.subject).public_key(public)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    def server_files(self, names: list[str]) -> tuple[Path, Path]:
        """The listener's certificate and key for `names` (host names or IP addresses), made
        (or made again, when the names change) under the directory."""
        cert_path, key_path = self.directory / "server.pem", self.directory / "server-key.pem"
        wanted = sorted(set(names))
        stamp = self.directory / "server.names"
        if cert_path.exists() and key_path.exists() and stamp.exists() and \
                stamp.read_text().split() == wanted:
            return cert_path, key_path
        san: list[x509.GeneralName] = []
        for n in wanted:
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                san.append(x509.DNSName(n))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
                                     x509.NameAttribute(NameOID.COMMON_NAME, wanted[0])]),
                          key.public_key(), SERVER_DAYS, ExtendedKeyUsageOID.SERVER_AUTH, san)
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        stamp.write_text(" ".join(wanted) + "\n")
        return cert_path, key_path

    def issue_client(self, tenant: str, key_id: str,
                     days: int = CLIENT_DAYS_DEFAULT) -> ClientCredential:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, key_id),
                             x509.NameAttribute(NameOID.COMMON_NAME, tenant)])
        cert = self._sign(subject, key.public_key(), days, ExtendedKeyUsageOID.CLIENT_AUTH)
        return ClientCredential(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key),
                                cert.public_bytes(serialization.Encoding.DER),
                                cert.not_valid_after_utc)
