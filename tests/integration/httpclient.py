"""HTTP clients for the integration tests: `http.client` for simple requests, raw sockets for the rest."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(
                f"expected a JSON body, got status {self.status} body {self.body[:500]!r}"
            ) from e

    def describe(self) -> str:
        return f"{self.status} {self.reason} headers={self.headers} body={self.body[:300]!r}"


def request(
    port: int,
    method: str = "GET",
    path: str = "/",
    *,
    host: str | None = None,
    headers: Iterable[tuple[str, str]] | dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
    source: str | None = None,
) -> Response:
    """One request on a fresh connection (closed afterwards); `source` picks the client address."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        return send(conn, method, path, host=host, headers=headers, body=body)
    finally:
        conn.close()


def send(
    conn: http.client.HTTPConnection,
    method: str = "GET",
    path: str = "/",
    *,
    host: str | None = None,
    headers: Iterable[tuple[str, str]] | dict[str, str] | None = None,
    body: bytes | None = None,
) -> Response:
    """One request on an existing (keep-alive) http.client connection."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host if host is not None else f"127.0.0.1:{conn.port}")
    for k, v in pairs:
        conn.putheader(k, v)
    if body is not None and not any(k.lower() == "content-length" for k, _ in pairs):
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    return Response(resp.status, resp.reason, list(resp.getheaders()), data)


class RawConnection:
    """A raw TCP connection to the router, with an incremental HTTP/1.1 response reader."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()
        self.eof = False

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def settimeout(self, timeout: float) -> None:
        self.sock.settimeout(timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.sock.recv(256 * 1024)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, sep: bytes) -> bytes:
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[: i + len(sep)])
                del self.buf[: i + len(sep)]
                return out
            if not self._fill():
                raise ConnectionError(
                    f"connection closed before {sep!r}; had {bytes(self.buf[:300])!r}"
                )

    def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError(
                    f"connection closed after {len(self.buf)} of {n} bytes: {bytes(self.buf[:200])!r}"
                )
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_some(self, max_bytes: int) -> bytes:
        """Up to max_bytes (at least one byte unless EOF → b"")."""
        if not self.buf:
            self._fill()
        out = bytes(self.buf[:max_bytes])
        del self.buf[:max_bytes]
        return out

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_head(self) -> tuple[int, str, list[tuple[str, str]], bytes]:
        head = self.read_until(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise AssertionError(f"bad status line {lines[0]!r} in {head[:300]!r}")
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        return status, reason, headers, head

    def read_response(self, *, head_request: bool = False, sink: Any = None) -> Response:
        """Read one full response. With `sink` (a hashlib object) the body is hashed, not kept."""
        status, reason, headers, raw_head = self.read_head()
        while 100 <= status < 200 and status != 101:
            status, reason, headers, raw_head = self.read_head()
        resp = Response(status, reason, headers, b"", raw_head)
        if head_request or status in (101, 204, 304):
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        body = bytearray()
        length = 0

        def take(data: bytes) -> None:
            nonlocal length
            length += len(data)
            if sink is not None:
                sink.update(data)
            else:
                body.extend(data)

        if "chunked" in te:
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                remaining = size
                while remaining:
                    piece = self.read_some(min(remaining, 1 << 20))
                    if not piece:
                        raise ConnectionError("connection closed inside a chunk")
                    take(piece)
                    remaining -= len(piece)
                if self.read_exactly(2) != b"\r\n":
                    raise AssertionError("bad chunk terminator")
        elif cl is not None:
            remaining = int(cl)
            while remaining:
                piece = self.read_some(min(remaining, 1 << 20))
                if not piece:
                    raise ConnectionError(
                        f"connection closed after {length} of {cl} body bytes (status {status})"
                    )
                take(piece)
                remaining -= len(piece)
        else:
            while True:
                piece = self.read_some(1 << 20)
                if not piece:
                    break
                take(piece)
        resp.body = bytes(body)
        resp.extra["length"] = length
        return resp

    def wait_closed(self, timeout: float) -> bool:
        """True if the peer closes the connection within `timeout` (pending data is discarded)."""
        deadline = time.monotonic() + timeout
        old = self.sock.gettimeout()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    return False
                except ConnectionResetError:
                    return True
                if not data:
                    self.eof = True
                    return True
        finally:
            self.sock.settimeout(old)


def raw_request_bytes(
    method: str,
    path: str,
    *,
    host: str = "example.test",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> Response:
    """Send raw bytes on a new connection, read one response, close."""
    with RawConnection(port, timeout) as c:
        c.send(data)
        return c.read_response()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
