"""Real certificates and their keys (throwaway, for the tests only): the model checks that a
certificate parses, that its key matches, that it has not expired and that it covers its names.

Two self-signed pairs, valid ten years, for example.com, *.example.com, example.org, gui.test and
www.gui.test; made with
``openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650
-subj /CN=example.com -addext subjectAltName=DNS:example.com,...``.
"""

from __future__ import annotations

from datetime import UTC, datetime

CERT = """\
-----BEGIN CERTIFICATE-----
MIIBzzCCAXWgAwIBAgIUO44GtklnAvzHOWf1zxPrCy0aW5cwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLZXhhbXBsZS5jb20wHhcNMjYxMTI5MTExNTI1WhcNMzYxMTI2
MTExNTI1WjAWMRQwEgYDVQQDDAtleGFtcGxlLmNvbTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABP/DkkeVMJU8z/zgdIEVOEbk3HNXNzgCVgu2iTxvCO4707UCE1np
5uIFmMayzB6675wrxUCXWp5bUesuis1V1VCjgaAwgZ0wHQYDVR0OBBYEFByHnLeF
+/XZyCwY6scwLIpKtt5XMB8GA1UdIwQYMBaAFByHnLeF+/XZyCwY6scwLIpKtt5X
MA8GA1UdEwEB/wQFMAMBAf8wSgYDVR0RBEMwQYILZXhhbXBsZS5jb22CDSouZXhh
bXBsZS5jb22CC2V4YW1wbGUub3JngghndWkudGVzdIIMd3d3Lmd1aS50ZXN0MAoG
CCqGSM49BAMCA0gAMEUCIQC3t30e0145WTUnwVdvwPeT4HnCt0RRTTYiazbGj/RC
uwIgMKmN++ixu3xMEINuBM6271pxwaJOzUpWN6T8C0EOqhM=
-----END CERTIFICATE-----
"""
KEY = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgcmyk6FMpYN1S4bJv
seFj/FwiiNVoZKNzQhErg8fXrJihRANCAAT/w5JHlTCVPM/84HSBFThG5NxzVzc4
AlYLtok8bwjuO9O1AhNZ6ebiBZjGssweuu+cK8VAl1qeW1HrLorNVdVQ
-----END PRIVATE KEY-----
"""
NOT_AFTER = datetime(2036, 11, 26, 11, 15, 25, tzinfo=UTC)  # CERT's notAfter

# A second pair (another key) for the same names: for "the key was replaced".
OTHER_CERT = """\
-----BEGIN CERTIFICATE-----
MIIBzzCCAXWgAwIBAgIUfZ69J3gxL/0R2zJ2hRNZmhCy9PAwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLZXhhbXBsZS5jb20wHhcNMjYxMTI5MTExNTI1WhcNMzYxMTI2
MTExNTI1WjAWMRQwEgYDVQQDDAtleGFtcGxlLmNvbTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABM3/RKYrDQ06d1GZ6Z5DCp9lTS3JttqZl0w5MaOm2r4qikZH5B5a
L2z/1kARUN7VcmLWok2aiEeYHxri+sf8hHijgaAwgZ0wHQYDVR0OBBYEFLGhjZpO
lcOdc5zoGW2RyyhLNbwfMB8GA1UdIwQYMBaAFLGhjZpOlcOdc5zoGW2RyyhLNbwf
MA8GA1UdEwEB/wQFMAMBAf8wSgYDVR0RBEMwQYILZXhhbXBsZS5jb22CDSouZXhh
bXBsZS5jb22CC2V4YW1wbGUub3JngghndWkudGVzdIIMd3d3Lmd1aS50ZXN0MAoG
CCqGSM49BAMCA0gAMEUCIQCovIg2LJjX0fRktjyWYnZ4gTxn6ru9O2uTP2+/bHf0
awIgWKkqkip05NpHPJeOUigonY7YrNHItJurNDJWgF+tbq4=
-----END CERTIFICATE-----
"""
OTHER_KEY = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8JGHjGyHoUuSdgay
rlJMAsAP/6rEZS6sVXjs1QVCGdOhRANCAATN/0SmKw0NOndRmemeQwqfZU0tybba
mZdMOTGjptq+KopGR+QeWi9s/9ZAEVDe1XJi1qJNmohHmB8a4vrH/IR4
-----END PRIVATE KEY-----
"""
