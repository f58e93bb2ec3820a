"""Certificates made at test time: a throwaway CA that issues leaf certificates (EC P-256)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID


def _pem_key(key: CertificateIssuerPrivateKeyTypes) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Pair:
    """A leaf certificate (PEM) and its key (PEM)."""

    cert: str
    key: str

    def item(self, cid: str, names: list[str], **fields: object) -> dict[str, object]:
        """The store's certificate item for this pair."""
        return {"id": cid, "names": names, "cert": self.cert, "key": self.key, **fields}


class CA:
    """A self-signed root that issues leaf certificates for names or IP addresses."""

    def __init__(self, name: str = "minirouter test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(days=1))
            .not_valid_after(_now() + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self,
        *names: str,
        expired: bool = False,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> Pair:
        """A leaf for `names` (DNS names, "*.x" wildcards or IP addresses), signed by this CA,
        for `key` (a new one if not given)."""
        leaf_key = key or ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        start = _now() - datetime.timedelta(days=10 if expired else 1)
        end = (
            _now() - datetime.timedelta(days=1) if expired else _now() + datetime.timedelta(days=7)
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(leaf_key))


@cache
def shared_ca() -> CA:
    """One CA for a whole test session (making keys is cheap, but not free)."""
    return CA()


def other_key() -> ec.EllipticCurvePrivateKey:
    """A key that matches no certificate."""
    return ec.generate_private_key(ec.SECP256R1())


def self_signed(key: CertificateIssuerPrivateKeyTypes, common_name: str, *names: str) -> Pair:
    """A certificate signed by its own `key`, valid for a day, with `names` in its
    subjectAltName (none given: no subjectAltName at all): for certificates a check must
    refuse (a weak key, no names)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=1))
    )
    if names:
        sans = x509.SubjectAlternativeName([x509.DNSName(n) for n in names])
        builder = builder.add_extension(sans, critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))
