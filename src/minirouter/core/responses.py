"""The router's own small responses: errors, redirects and interim answers.

They never reach an upstream and are built from constants, so a hostile
request cannot make the router echo anything back.
"""

from __future__ import annotations

from http import HTTPStatus

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def reason(status: int) -> str:
    """The standard reason phrase for a status code ("" if it has none)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _build(status: int, close: bool) -> bytes:
    text = f"{status} {reason(status)}\n".encode("ascii")
    head = (
        f"HTTP/1.1 {status} {reason(status)}\r\n"
        "Server: minirouter\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(text)}\r\n"
    )
    if close:
        head += "Connection: close\r\n"
    return head.encode("ascii") + b"\r\n" + text


# Pre-built once: an error on the hot path (404 under a scan, 503 in an
# outage) costs one dict lookup, not string formatting.
_CACHE: dict[tuple[int, bool], bytes] = {}


def error(status: int, *, close: bool) -> bytes:
    """A complete error response with a short text body."""
    key = (status, close)
    try:
        return _CACHE[key]
    except KeyError:
        resp = _CACHE[key] = _build(status, close)
        return resp


def head_only(response: bytes) -> bytes:
    """The same response without its body (answers to HEAD)."""
    return response[: response.index(b"\r\n\r\n") + 4]


def redirect(code: int, location: str, *, close: bool) -> bytes:
    """A redirect to `location` (already validated: no CR/LF)."""
    loc = location.encode("latin-1", "replace")
    head = (
        f"HTTP/1.1 {code} {reason(code)}\r\nServer: minirouter\r\n".encode("ascii")
        + b"Location: "
        + loc
        + b"\r\nContent-Length: 0\r\n"
    )
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n"
