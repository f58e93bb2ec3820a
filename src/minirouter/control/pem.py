"""The expiry date of a PEM certificate, for the GUI's certificate list.

A few lines of DER reading instead of a dependency: the control plane only needs
``tbsCertificate.validity.notAfter`` of the first certificate in the text. Anything it cannot
read gives None (the page then shows no date); validating certificates is the model's job.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*(?P<body>[A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----"
)
_SEQUENCE = 0x30
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18


class _Malformed(Exception):
    """The DER does not have the shape of an X.509 certificate."""


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """The DER element at `at`: (tag, start of its content, end of its content)."""
    if at + 2 > len(der):
        raise _Malformed
    tag, length = der[at], der[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or at + count > len(der):
            raise _Malformed
        length = int.from_bytes(der[at : at + count], "big")
        at += count
    if at + length > len(der):
        raise _Malformed
    return tag, at, at + length


def _time(tag: int, raw: bytes) -> datetime:
    text = raw.decode("ascii")
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ; years 50-99 are 19xx (RFC 5280)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    if not text.endswith("Z") or len(text) != 15:
        raise _Malformed
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def certificate_expiry(pem: str) -> datetime | None:
    """When the first certificate in `pem` expires (its notAfter, UTC), or None if unreadable."""
    found = _PEM.search(pem)
    if found is None:
        return None
    try:
        der = base64.b64decode("".join(found["body"].split()), validate=True)
        tag, start, _ = _element(der, 0)  # Certificate
        if tag != _SEQUENCE:
            raise _Malformed
        tag, at, tbs_end = _element(der, start)  # tbsCertificate
        if tag != _SEQUENCE:
            raise _Malformed
        fields: list[tuple[int, int, int]] = []
        while at < tbs_end and len(fields) < 5:
            element = _element(der, at)
            fields.append(element)
            at = element[2]
        if fields and fields[0][0] == 0xA0:  # [0] version: optional
            fields.pop(0)
        if len(fields) < 4 or fields[3][0] != _SEQUENCE:  # serial, signature, issuer, validity
            raise _Malformed
        _, at, validity_end = fields[3]
        _, _, at = _element(der, at)  # notBefore
        tag, start, end = _element(der, at)  # notAfter
        if end > validity_end or tag not in (_UTC_TIME, _GENERALIZED_TIME):
            raise _Malformed
        return _time(tag, der[start:end])
    except (_Malformed, binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
