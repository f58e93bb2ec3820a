"""A blocking HTTPS client that chooses the SNI name and the Host header separately."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography import x509


@dataclass
class TlsResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    cert_names: list[str]  # the SAN DNS names of the certificate the server presented
    alpn: str | None


def client_context(ca_pem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def names_of(der: bytes) -> list[str]:
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.DNSName))


class TlsConnection:
    """One TLS connection to 127.0.0.1:port with SNI `sni`; several requests may use it."""

    def __init__(self, port: int, sni: str | None, ca_pem: str, timeout: float = 10.0) -> None:
        ctx = client_context(ca_pem)
        if sni is None:
            ctx.check_hostname = False
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=sni)
        except BaseException:
            raw.close()
            raise
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        self.der = der
        self.cert_names = names_of(der)
        self.alpn = self.sock.selected_alpn_protocol()
        self.sni = sni

    def get(self, path: str = "/", host: str | None = None) -> TlsResponse:
        host = host or self.sni or "localhost"
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        resp = http.client.HTTPResponse(self.sock)  # type: ignore[arg-type]
        try:
            resp.begin()
            body = resp.read()
        finally:
            resp.close()  # its file object holds a reference that would keep the socket open
        return TlsResponse(resp.status, dict(resp.getheaders()), body, self.cert_names, self.alpn)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TlsConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def handshake(ctx: ssl.SSLContext, port: int, sni: str | None) -> Iterator[ssl.SSLSocket]:
    """A TLS connection made with `ctx`; the socket is closed whatever happens."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as sock,
    ):
        yield sock


def https_get(
    port: int, sni: str | None, ca_pem: str, path: str = "/", host: str | None = None
) -> TlsResponse:
    with TlsConnection(port, sni, ca_pem) as conn:
        return conn.get(path, host)
