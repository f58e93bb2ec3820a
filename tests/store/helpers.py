"""Small builders shared by the store tests."""

from __future__ import annotations

import datetime
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from minirouter.model import Route, Upstream, from_dict
from minirouter.store import Change, ChangeRecord


def upstream(uid: str, port: int = 9001, **extra: Any) -> Upstream:
    return from_dict("upstreams", {"id": uid, "targets": [f"127.0.0.1:{port}"], **extra})


def route(rid: str, upstream_id: str = "api", path: str | None = None, **extra: Any) -> Route:
    return from_dict(
        "routes", {"id": rid, "path": path or f"/{rid}/", "upstream": upstream_id, **extra}
    )


def put(*items: Upstream | Route) -> list[Change]:
    return [Change.put(item) for item in items]


def strip_time(records: list[ChangeRecord]) -> list[tuple[Any, ...]]:
    """Records without their timestamps, for comparing two histories."""
    return [(r.rev, r.seq, r.kind, r.id, r.op, r.before, r.after, r.actor) for r in records]


@cache
def self_signed(name: str = "example.com") -> tuple[str, str]:
    """(certificate, private key) in PEM: a self-signed EC certificate for `name` and
    ``*.name`` (the model checks that a certificate item holds a real one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.DNSName(f"*.{name}")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
