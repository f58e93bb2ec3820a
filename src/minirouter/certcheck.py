"""Checks of PEM certificates and keys for the data model's validation.

`model.py` calls these on every write of a certificate (API, GUI, CLI, store) and again when a
core mirrors one, so a broken certificate never reaches a TLS listener. Results are cached:
the same certificate text is checked by the store, the control plane and every core.

`cryptography` is imported on first use only: the CLI's start-up should not pay for it.
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["check_ca_bundle", "check_certificate", "covers", "load_key_pair", "not_after"]


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
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    problems: list[tuple[str, str]] = []
    try:
        chain = x509.load_pem_x509_certificates(cert.encode())
    except ValueError as exc:
        return (("cert", f"not a valid PEM certificate: {_reason(exc)}"),), None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        leaf_public = leaf.public_key().public_bytes(der, spki)
        cert_names = _names_of(leaf)
        has_san = _has_san(leaf)
    except (ValueError, UnsupportedAlgorithm) as exc:
        # An unsupported key type or curve, malformed extensions: the text is still PEM.
        return (("cert", f"unusable certificate: {_reason(exc)}"),), leaf.not_valid_after_utc
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except TypeError:
        problems.append(("key", "the key is encrypted; give it unencrypted"))
    except (ValueError, UnsupportedAlgorithm, x509.UnsupportedGeneralNameType) as exc:
        problems.append(("key", f"not a valid PEM private key: {_reason(exc)}"))
    else:
        if private.public_key().public_bytes(der, spki) != leaf_public:
            problems.append(("key", "does not match the certificate (the first one in cert)"))
    for i, name in enumerate(names):
        if not has_san:
            # Clients check the subjectAltName only (RFC 6125); the common name is ignored.
            problems.append(
                (
                    f"names[{i}]",
                    f"{name!r} is not covered: the certificate has no subjectAltName, and "
                    "clients do not accept its common name",
                )
            )
        elif not covers(cert_names, name):
            shown = ", ".join(cert_names) or "none"
            problems.append(
                (f"names[{i}]", f"{name!r} is not covered by the certificate (it has: {shown})")
            )
    if not problems and hasattr(os, "memfd_create"):
        # What cryptography accepts OpenSSL may still refuse (a key too small for its security
        # level, a weak signature): the core loads it exactly this way.
        try:
            load_key_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key)
        except (ssl.SSLError, OSError) as exc:
            problems.append(("cert", f"refused by OpenSSL: {_reason(exc)}"))
    return tuple(problems), leaf.not_valid_after_utc


def load_key_pair(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """`ctx.load_cert_chain` from PEM text without writing the key to any file system.

    OpenSSL's loader takes a path only; a memfd is an anonymous in-memory file that is gone as
    soon as it is closed, right after loading.
    """
    fd = os.memfd_create("minirouter-cert", os.MFD_CLOEXEC)
    try:
        data = (cert_pem.rstrip("\n") + "\n" + key_pem.rstrip("\n") + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        # One file with both: with no keyfile OpenSSL reads the key from the certfile.
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def not_after(cert: str) -> float | None:
    """When the first certificate of a PEM chain expires (Unix time), None if it cannot say."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(cert.encode())[0].not_valid_after_utc.timestamp()
    except (ValueError, IndexError):
        return None


def check_ca_bundle(pem: str) -> str | None:
    """Why `pem` cannot serve as trusted CA certificates, or None if it can."""
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        return f"not valid PEM certificates: {_reason(exc)}"
    return None


def _has_san(leaf: object) -> bool:
    from cryptography import x509

    assert isinstance(leaf, x509.Certificate)
    try:
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    return True


def _names_of(leaf: object) -> tuple[str, ...]:
    """The DNS names and IP addresses a leaf certificate is valid for, lower case."""
    from cryptography import x509

    assert isinstance(leaf, x509.Certificate)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()  # the common name does not count (see _has_san)
    dns = [n.lower().removesuffix(".") for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
