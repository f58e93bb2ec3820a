"""Checks of PEM certificates and keys for the data model's validation.

`model.py` calls these on every write of a certificate (API, GUI, CLI, store) and again when a
core mirrors one, so a broken certificate never reaches a TLS listener. Results are cached:
the same certificate text is checked by the store, the control plane and every core.

`cryptography` is imported on first use only: the CLI's start-up should not pay for it.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["check_ca_bundle", "check_certificate", "covers", "not_after"]


def covers(cert_names: Sequence[str], name: str) -> bool:
    """Whether a certificate for `cert_names` (SAN entries, lower case) is valid for `name`.

    `name` may itself be a "*.suffix" pattern: then the certificate must hold that wildcard.
    A certificate wildcard covers exactly one label, as clients check it (RFC 6125).
    """
    if name in cert_names:
        return True
    if name.startswith("*."):
        return False
    _, dot, parent = name.partition(".")
    return bool(dot) and f"*.{parent}" in cert_names


def check_certificate(cert: str, key: str, names: Sequence[str]) -> list[tuple[str, str]]:
    """Problems of a certificate item as (field, message) pairs; empty when it is usable.

    Checks that `cert` is a PEM chain whose first certificate is the leaf, that `key` is an
    unencrypted PEM private key matching it, that the leaf has not expired, and that it covers
    every one of `names`.
    """
    problems, expires = _check_certificate(cert, key, tuple(names))
    # Not cached: a certificate that was fine at its first check expires later.
    if expires is not None and expires <= datetime.datetime.now(datetime.UTC):
        return [*problems, ("cert", f"expired on {expires:%Y-%m-%d %H:%M:%S} UTC")]
    return list(problems)


@lru_cache(maxsize=256)
def _check_certificate(
    cert: str, key: str, names: tuple[str, ...]
) -> tuple[tuple[tuple[str, str], ...], datetime.datetime | None]:
    """Everything but the expiry, and the leaf's expiry (None: no certificate to check)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    problems: list[tuple[str, str]] = []
    try:
        chain = x509.load_pem_x509_certificates(cert.encode())
    except ValueError as exc:
        return (("cert", f"not a valid PEM certificate: {_reason(exc)}"),), None
    leaf = chain[0]
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except TypeError:
        problems.append(("key", "the key is encrypted; give it unencrypted"))
    except (ValueError, x509.UnsupportedGeneralNameType) as exc:
        problems.append(("key", f"not a valid PEM private key: {_reason(exc)}"))
    else:
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if private.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(
            der, spki
        ):
            problems.append(("key", "does not match the certificate (the first one in cert)"))
    cert_names = _names_of(leaf)
    for i, name in enumerate(names):
        if not covers(cert_names, name):
            shown = ", ".join(cert_names) or "none"
            problems.append(
                (f"names[{i}]", f"{name!r} is not covered by the certificate (it has: {shown})")
            )
    return tuple(problems), leaf.not_valid_after_utc


def not_after(cert: str) -> float | None:
    """When the first certificate of a PEM chain expires (Unix time), None if it cannot say."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(cert.encode())[0].not_valid_after_utc.timestamp()
    except ValueError:
        return None


def check_ca_bundle(pem: str) -> str | None:
    """Why `pem` cannot serve as trusted CA certificates, or None if it can."""
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        return f"not valid PEM certificates: {_reason(exc)}"
    return None


def _names_of(leaf: object) -> tuple[str, ...]:
    """The DNS names and IP addresses a leaf certificate is valid for, lower case."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    assert isinstance(leaf, x509.Certificate)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        # No SAN at all: clients fall back to the common name (browsers no longer do).
        cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(a.value).lower().removesuffix(".") for a in cns)
    dns = [n.lower().removesuffix(".") for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
