"""The request rules of issue 6, as an attacker would test them: raw bytes on a raw socket.

Each case gives the bytes a client sends, the status it must get, whether the router must close
the connection, and what may reach the strict upstream behind it: nothing, at most an unfinished
request on a connection the router then breaks, or exactly one clean request (one framing, no
bytes left over that an upstream could read as a second request).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from integration.httpclient import RawConnection

from .conftest import Rig
from .servers import Message, parse_requests

H = b"Host: example.test\r\n"
SYNC = b"GET /__sync HTTP/1.1\r\nHost: example.test\r\n\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"


@dataclass(frozen=True)
class Forwarded:
    """Exactly one request reached the upstream, and it looks like this."""

    method: str = "GET"
    target: str = "/"
    body: bytes = b""
    framing: str = "none"  # "length", "chunked" or "none"
    present: dict[str, bytes] = field(default_factory=dict)  # header -> exact value
    absent: tuple[str, ...] = ()  # headers that must not be there
    not_in_raw: tuple[bytes, ...] = ()  # byte strings that must not reach the upstream at all


NOTHING = "nothing"  # no byte of the request reached the upstream
UNFINISHED = "unfinished"  # at most part of one request, never a complete one


@dataclass(frozen=True)
class Case:
    id: str
    data: bytes
    status: int
    closed: bool
    upstream: Forwarded | str


def post(head: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST / HTTP/" + version + b"\r\n" + H + head + b"\r\n" + body


def get_with(header_lines: bytes, target: bytes = b"/") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\n" + header_lines + b"\r\n"


CHUNKED = b"Transfer-Encoding: chunked\r\n"


def chunked(body: bytes) -> bytes:
    return post(CHUNKED, body)


CASES = [
    # -- framing ------------------------------------------------------------------------------
    Case("cl-and-te", post(b"Content-Length: 5\r\n" + CHUNKED, b"0\r\n\r\n"), 400, True, NOTHING),
    Case("te-and-cl", post(CHUNKED + b"Content-Length: 5\r\n", b"0\r\n\r\n"), 400, True, NOTHING),
    Case(
        "cl-te-smuggle",
        post(b"Content-Length: 50\r\n" + CHUNKED, b"0\r\n\r\n" + SMUGGLED),
        400,
        True,
        NOTHING,
    ),
    Case(
        "cl-twice-same",
        post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
        400,
        True,
        NOTHING,
    ),
    Case(
        "cl-twice-differ",
        post(b"Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"),
        400,
        True,
        NOTHING,
    ),
    Case("cl-list", post(b"Content-Length: 3, 3\r\n", b"abc"), 400, True, NOTHING),
    Case("cl-plus", post(b"Content-Length: +3\r\n", b"abc"), 400, True, NOTHING),
    Case("cl-minus", post(b"Content-Length: -3\r\n", b"abc"), 400, True, NOTHING),
    Case("cl-hex", post(b"Content-Length: 0x3\r\n", b"abc"), 400, True, NOTHING),
    Case("cl-empty", post(b"Content-Length: \r\n"), 400, True, NOTHING),
    Case("cl-inner-space", post(b"Content-Length: 1 2\r\n", b"abc"), 400, True, NOTHING),
    Case("cl-overflow", post(b"Content-Length: 99999999999999999999999\r\n"), 400, True, NOTHING),
    Case("te-gzip", post(b"Transfer-Encoding: gzip\r\n", b"abc"), 501, True, NOTHING),
    Case("te-identity", post(b"Transfer-Encoding: identity\r\n", b"abc"), 501, True, NOTHING),
    Case("te-unknown", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 501, True, NOTHING),
    Case(
        "te-gzip-chunked",
        post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        501,
        True,
        NOTHING,
    ),
    Case(
        "te-two-headers",
        post(b"Transfer-Encoding: gzip\r\n" + CHUNKED, b"3\r\nabc\r\n0\r\n\r\n"),
        501,
        True,
        NOTHING,
    ),
    Case(
        "te-chunked-not-last",
        post(b"Transfer-Encoding: chunked, gzip\r\n", b"abc"),
        400,
        True,
        NOTHING,
    ),
    Case("te-chunked-twice", post(CHUNKED + CHUNKED, b"0\r\n\r\n"), 400, True, NOTHING),
    Case("te-on-http10", post(CHUNKED, b"3\r\nabc\r\n0\r\n\r\n", b"1.0"), 400, True, NOTHING),
    Case(
        "te-upper-case",
        post(b"Transfer-Encoding: CHUNKED\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
        200,
        False,
        Forwarded("POST", body=b"abc", framing="chunked", not_in_raw=(b"CHUNKED",)),
    ),
    Case(
        "te-empty-list-element",
        post(b"Transfer-Encoding: , chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
        200,
        False,
        Forwarded("POST", body=b"abc", framing="chunked"),
    ),
    Case(
        "length-body",
        post(b"Content-Length: 3\r\n", b"abc"),
        200,
        False,
        Forwarded("POST", body=b"abc", framing="length"),
    ),
    Case(
        "get-with-body",
        get_with(H + b"Content-Length: 3\r\n") + b"abc",
        200,
        False,
        Forwarded("GET", body=b"abc", framing="length"),
    ),
    # -- chunks -------------------------------------------------------------------------------
    Case("chunk-size-invalid", chunked(b"zz\r\nabc\r\n0\r\n\r\n"), 400, True, UNFINISHED),
    Case("chunk-size-space", chunked(b"3 \r\nabc\r\n0\r\n\r\n"), 400, True, UNFINISHED),
    Case("chunk-size-0x", chunked(b"0x3\r\nabc\r\n0\r\n\r\n"), 400, True, UNFINISHED),
    Case("chunk-size-negative", chunked(b"-3\r\nabc\r\n0\r\n\r\n"), 400, True, UNFINISHED),
    Case(
        "chunk-size-overflow",
        chunked(b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
        400,
        True,
        UNFINISHED,
    ),
    Case(
        "chunk-extension-dropped",
        chunked(b"3;name=value\r\nabc\r\n0;last\r\n\r\n"),
        200,
        False,
        Forwarded("POST", body=b"abc", framing="chunked", not_in_raw=(b"name=value", b"last")),
    ),
    Case("chunk-extension-empty", chunked(b"3;\r\nabc\r\n0\r\n\r\n"), 400, True, UNFINISHED),
    Case("chunk-extension-space", chunked(b"3 ;a=b\r\nabc\r\n0\r\n\r\n"), 400, True, UNFINISHED),
    Case(
        "chunk-extension-open-quote", chunked(b'3;a="b\r\nabc\r\n0\r\n\r\n'), 400, True, UNFINISHED
    ),
    Case("chunk-extension-nul", chunked(b"3;a\x00\r\nabc\r\n0\r\n\r\n"), 400, True, UNFINISHED),
    Case("chunk-size-bare-lf", chunked(b"3\nabc\r\n0\r\n\r\n"), 400, True, UNFINISHED),
    Case("chunk-data-bare-lf", chunked(b"3\r\nabc\n0\r\n\r\n"), 400, True, UNFINISHED),
    Case("chunk-data-overrun", chunked(b"3\r\nabcdef\r\n0\r\n\r\n"), 400, True, UNFINISHED),
    Case("last-chunk-bare-lf", chunked(b"0\n\n"), 400, True, UNFINISHED),
    Case(
        "trailer-content-length", chunked(b"0\r\nContent-Length: 5\r\n\r\n"), 400, True, UNFINISHED
    ),
    Case("trailer-transfer-encoding", chunked(b"0\r\n" + CHUNKED + b"\r\n"), 400, True, UNFINISHED),
    Case("trailer-obs-fold", chunked(b"0\r\nX-T: a\r\n b\r\n\r\n"), 400, True, UNFINISHED),
    Case(
        "trailer-too-large",
        chunked(
            b"0\r\n" + b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 500) for i in range(12)) + b"\r\n"
        ),
        431,
        True,
        UNFINISHED,
    ),
    Case(
        "trailers-dropped",
        chunked(b"3\r\nabc\r\n0\r\nHost: evil.test\r\nX-Trailer: t\r\n\r\n"),
        200,
        False,
        Forwarded("POST", body=b"abc", framing="chunked", not_in_raw=(b"evil.test", b"X-Trailer")),
    ),
    # -- header syntax ------------------------------------------------------------------------
    Case("obs-fold", get_with(H + b"X-A: a\r\n b\r\n"), 400, True, NOTHING),
    Case("space-before-colon", get_with(H + b"X-A : b\r\n"), 400, True, NOTHING),
    Case("tab-before-colon", get_with(H + b"X-A\t: b\r\n"), 400, True, NOTHING),
    Case("space-before-name", get_with(b" X-A: b\r\n" + H), 400, True, NOTHING),
    Case("tab-before-name", get_with(H + b"\tX-A: b\r\n"), 400, True, NOTHING),
    Case("cr-in-value", get_with(H + b"X-A: a\rb\r\n"), 400, True, NOTHING),
    Case("lf-in-value", get_with(H + b"X-A: a\nb\r\n"), 400, True, NOTHING),
    Case("nul-in-value", get_with(H + b"X-A: a\x00b\r\n"), 400, True, NOTHING),
    Case("del-in-value", get_with(H + b"X-A: a\x7fb\r\n"), 400, True, NOTHING),
    Case("ctl-in-value", get_with(H + b"X-A: a\x01b\r\n"), 400, True, NOTHING),
    Case("paren-in-name", get_with(H + b"X(A): b\r\n"), 400, True, NOTHING),
    Case("slash-in-name", get_with(H + b"X/A: b\r\n"), 400, True, NOTHING),
    Case("empty-name", get_with(H + b": b\r\n"), 400, True, NOTHING),
    Case("no-colon", get_with(H + b"X-A b\r\n"), 400, True, NOTHING),
    Case("bare-lf-lines", b"GET / HTTP/1.1\nHost: example.test\n\n", 400, True, NOTHING),
    Case(
        "bare-lf-in-head",
        b"GET / HTTP/1.1\r\nHost: example.test\nX-A: b\r\n\r\n",
        400,
        True,
        NOTHING,
    ),
    Case(
        "bare-cr-in-head",
        b"GET / HTTP/1.1\r\nHost: example.test\rX-A: b\r\n\r\n",
        400,
        True,
        NOTHING,
    ),
    Case("no-host", get_with(b"X-A: b\r\n"), 400, True, NOTHING),
    Case("no-host-then-smuggled", get_with(b"") + SMUGGLED, 400, True, NOTHING),
    Case("two-hosts", get_with(H + b"Host: other.test\r\n"), 400, True, NOTHING),
    Case("same-host-twice", get_with(H + H), 400, True, NOTHING),
    Case("host-with-space", get_with(b"Host: example.test evil\r\n"), 400, True, NOTHING),
    Case("host-with-at", get_with(b"Host: evil.test@example.test\r\n"), 400, True, NOTHING),
    Case("host-with-slash", get_with(b"Host: example.test/x\r\n"), 400, True, NOTHING),
    Case("no-host-http10", b"GET / HTTP/1.0\r\n\r\n", 404, True, NOTHING),
    Case(
        "host-trailing-space",
        get_with(b"Host: example.test  \r\n"),
        200,
        False,
        Forwarded(present={"X-Forwarded-Host": b"example.test"}),
    ),
    Case(
        "absolute-form-own-authority",
        get_with(H, b"http://routed.test/x?q=1"),
        200,
        False,
        Forwarded(
            target="/x?q=1", present={"X-Route": b"routed", "X-Forwarded-Host": b"routed.test"}
        ),
    ),
    Case(
        "absolute-form-unrouted-authority",
        get_with(H, b"http://nowhere.test/x"),
        404,
        False,
        NOTHING,
    ),
    Case("asterisk-form-get", get_with(H, b"*"), 400, True, NOTHING),
    Case("absolute-form-userinfo", get_with(H, b"http://evil@routed.test/x"), 400, True, NOTHING),
    Case("absolute-form-not-http", get_with(H, b"ftp://routed.test/x"), 400, True, NOTHING),
    Case("connect", b"CONNECT example.test:443 HTTP/1.1\r\n" + H + b"\r\n", 405, True, NOTHING),
    Case(
        "upgrade-h2c-not-passed",
        get_with(
            H
            + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
        ),
        200,
        False,
        Forwarded(absent=("Upgrade", "HTTP2-Settings"), not_in_raw=(b"h2c", b"AAMAAABkAAQAAP__")),
    ),
    Case(
        "upgrade-other-not-passed",
        get_with(H + b"Connection: Upgrade\r\nUpgrade: foo/2\r\n"),
        200,
        False,
        Forwarded(absent=("Upgrade",), not_in_raw=(b"foo/2",)),
    ),
    Case(
        "connection-cannot-remove-router-headers",
        get_with(
            H
            + b"Connection: Host, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Via, X-Drop\r\n"
            b"X-Drop: 1\r\n"
        ),
        200,
        False,
        Forwarded(
            present={
                "X-Forwarded-For": b"127.0.0.1",
                "X-Forwarded-Proto": b"http",
                "X-Forwarded-Host": b"example.test",
            },
            absent=("X-Drop", "Connection"),
        ),
    ),
    Case("expect-unknown", get_with(H + b"Expect: 200-ok\r\n"), 417, True, NOTHING),
    Case("version-2", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505, True, NOTHING),
    Case("version-0.9", b"GET /\r\n\r\n", 505, True, NOTHING),
    Case("version-1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 400, True, NOTHING),
    Case("method-lower-case", b"get / HTTP/1.1\r\n" + H + b"\r\n", 400, True, NOTHING),
    Case("method-unknown", b"FOO / HTTP/1.1\r\n" + H + b"\r\n", 400, True, NOTHING),
    Case("head-has-no-body", b"HEAD / HTTP/1.1\r\n" + H + b"\r\n", 200, False, Forwarded("HEAD")),
    # -- limits -------------------------------------------------------------------------------
    Case("request-line-too-long", get_with(H, b"/" + b"a" * 2000), 414, True, NOTHING),
    Case("header-too-large", get_with(H + b"X-A: " + b"a" * 5000 + b"\r\n"), 431, True, NOTHING),
    Case(
        "too-many-headers",
        get_with(H + b"".join(b"X-%d: a\r\n" % i for i in range(25))),
        431,
        True,
        NOTHING,
    ),
    Case(
        "body-length-too-large", post(b"Content-Length: 2000\r\n", b"a" * 2000), 413, True, NOTHING
    ),
    Case(
        "body-chunked-too-large",
        chunked(b"800\r\n" + b"a" * 2048 + b"\r\n0\r\n\r\n"),
        413,
        True,
        UNFINISHED,
    ),
]


def post_to(host: bytes, head: bytes, body: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\nHost: " + host + b"\r\n" + head + b"\r\n" + body


WEBSOCKET = (
    b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)

# Per-route rules (routes in conftest): upload.test allows 4k (the core 1k), tiny.test 8 bytes,
# unlimited.test any size; no-ws.test does not tunnel WebSocket.
ROUTE_CASES = [
    Case(
        "route-limit-above-core-length",
        post_to(b"upload.test", b"Content-Length: 2000\r\n", b"a" * 2000),
        200,
        False,
        Forwarded("POST", body=b"a" * 2000, framing="length"),
    ),
    Case(
        "route-limit-above-core-chunked",
        post_to(b"upload.test", CHUNKED, b"800\r\n" + b"a" * 2048 + b"\r\n0\r\n\r\n"),
        200,
        False,
        Forwarded("POST", body=b"a" * 2048, framing="chunked"),
    ),
    Case(
        "route-limit-length-over",
        post_to(b"upload.test", b"Content-Length: 5000\r\n", b"a" * 5000),
        413,
        True,
        NOTHING,
    ),
    Case(
        "route-limit-chunked-over",
        post_to(b"upload.test", CHUNKED, b"1388\r\n" + b"a" * 5000 + b"\r\n0\r\n\r\n"),
        413,
        True,
        UNFINISHED,
    ),
    Case(
        "route-limit-small-exact",
        post_to(b"tiny.test", b"Content-Length: 8\r\n", b"12345678"),
        200,
        False,
        Forwarded("POST", body=b"12345678", framing="length"),
    ),
    Case(
        "route-limit-small-length-over",
        post_to(b"tiny.test", b"Content-Length: 9\r\n", b"123456789"),
        413,
        True,
        NOTHING,
    ),
    Case(
        "route-limit-small-chunked-over",
        post_to(b"tiny.test", CHUNKED, b"5\r\n12345\r\n4\r\n6789\r\n0\r\n\r\n"),
        413,
        True,
        UNFINISHED,
    ),
    Case(
        "route-limit-zero-is-unlimited",
        post_to(b"unlimited.test", b"Content-Length: 3000\r\n", b"b" * 3000),
        200,
        False,
        Forwarded("POST", body=b"b" * 3000, framing="length"),
    ),
    Case(
        "websocket-allowed-on-route",
        get_with(H + b"Connection: Upgrade\r\n" + WEBSOCKET),
        200,  # the strict upstream answers 200 and does not switch: the router then closes
        True,
        Forwarded(present={"Upgrade": b"websocket", "Sec-WebSocket-Version": b"13"}),
    ),
    Case(
        "websocket-refused-on-route",
        get_with(b"Host: no-ws.test\r\nConnection: Upgrade, Sec-WebSocket-Key\r\n" + WEBSOCKET),
        200,
        False,
        Forwarded(
            absent=("Upgrade", "Sec-WebSocket-Key", "Connection"),
            present={"Sec-WebSocket-Version": b"13"},
        ),
    ),
]
CASES += ROUTE_CASES


def _framing(msg: Message) -> str:
    lengths = msg.header_all("Content-Length")
    codings = msg.header_all("Transfer-Encoding")
    assert not (lengths and codings), f"both framings reached the upstream: {msg.raw_head!r}"
    assert len(lengths) <= 1 and len(codings) <= 1, msg.raw_head
    return "length" if lengths else "chunked" if codings else "none"


def _check_upstream(case: Case, received: list[bytes]) -> None:
    complete: list[Message] = []
    unfinished = 0
    for raw in received:
        parsed = parse_requests(raw)
        mine = [m for m in parsed.messages if m.target != "/__sync"]
        complete += mine
        if parsed.leftover or parsed.error:
            # Only a request the router broke off may be unfinished, and nothing after it.
            assert case.upstream == UNFINISHED, (
                f"bytes an upstream could misread: {parsed.leftover[:200]!r} ({parsed.error})"
            )
            assert not any(m.target == "/__sync" for m in parsed.messages[len(mine) :]), raw
            unfinished += 1
        if case.upstream == NOTHING:
            assert all(m.target == "/__sync" for m in parsed.messages) and not parsed.leftover, raw
    if isinstance(case.upstream, Forwarded):
        want = case.upstream
        assert len(complete) == 1, [m.raw_head for m in complete]
        msg = complete[0]
        assert (msg.method, msg.target, msg.body) == (want.method, want.target, want.body)
        assert _framing(msg) == want.framing, msg.raw_head
        for name, value in want.present.items():
            assert msg.header_all(name) == [value], (name, msg.raw_head)
        assert msg.header_all("Host"), msg.raw_head
        for name in want.absent:
            assert not msg.header_all(name), (name, msg.raw_head)
        everything = b"".join(received)
        for needle in want.not_in_raw:
            assert needle not in everything, (needle, everything[:500])
    else:
        assert not complete, [m.raw_head for m in complete]
        assert unfinished <= 1


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_request_rule(rig: Rig, case: Case) -> None:
    rig.strict.clear()
    with RawConnection(rig.port, timeout=5) as conn:
        conn.send(case.data)
        resp = conn.read_response(head_request=case.data.startswith(b"HEAD"))
        assert resp.status == case.status, resp.describe()
        if case.closed:
            if b" HTTP/1.1\r\n" in case.data:
                assert resp.header("Connection") == "close", resp.describe()
            assert conn.wait_closed(5), "the router kept the connection open"
        else:
            # Still in step: the next request on the same connection is read as one.
            conn.send(SYNC)
            again = conn.read_response()
            assert (again.status, again.body) == (200, b"ok"), again.describe()
    if case.closed:
        with RawConnection(rig.port, timeout=5) as conn:
            conn.send(SYNC)
            assert conn.read_response().status == 200
    _check_upstream(case, rig.strict.received())


def test_expect_100_continue(rig: Rig) -> None:
    """The router says 100 Continue before the body comes, and forwards the request once."""
    rig.strict.clear()
    with RawConnection(rig.port, timeout=5) as conn:
        conn.send(post(b"Content-Length: 3\r\nExpect: 100-continue\r\n"))
        status, _, _, _ = conn.read_head()
        assert status == 100
        conn.send(b"abc")
        resp = conn.read_response()
        assert (resp.status, resp.body) == (200, b"ok")
    _check_upstream(
        Case(
            "x",
            b"",
            200,
            False,
            Forwarded("POST", body=b"abc", framing="length", absent=("Expect",)),
        ),
        rig.strict.received(),
    )


def test_pipeline_stops_at_the_refused_request(rig: Rig) -> None:
    """Requests pipelined after a refused one are never parsed, let alone forwarded."""
    rig.strict.clear()
    first = b"GET /first HTTP/1.1\r\n" + H + b"\r\n"
    with RawConnection(rig.port, timeout=5) as conn:
        conn.send(first + get_with(b"") + SMUGGLED)
        assert conn.read_response().status == 200
        refused = conn.read_response()
        assert refused.status == 400
        assert conn.wait_closed(5)
    with RawConnection(rig.port, timeout=5) as conn:
        conn.send(SYNC)
        assert conn.read_response().status == 200
    targets = [m.target for raw in rig.strict.received() for m in parse_requests(raw).messages]
    assert [t for t in targets if t != "/__sync"] == ["/first"]


def test_websocket_refused_on_route_when_pipelined(rig: Rig) -> None:
    """A WebSocket request queued behind another, on a route without WebSocket: answered as a
    plain request, without Upgrade; the parser is past the upgrade, so the connection closes and
    the bytes after it never reach an upstream."""
    rig.strict.clear()
    first = b"GET /first HTTP/1.1\r\n" + H + b"\r\n"
    ws = b"GET /ws HTTP/1.1\r\nHost: no-ws.test\r\nConnection: Upgrade\r\n" + WEBSOCKET + b"\r\n"
    with RawConnection(rig.port, timeout=5) as conn:
        conn.send(first + ws + SMUGGLED)
        assert conn.read_response().status == 200
        second = conn.read_response()
        assert second.status == 200, second.describe()
        assert second.header("Connection") == "close", second.describe()
        assert conn.wait_closed(5)
    messages = [m for raw in rig.strict.received() for m in parse_requests(raw).messages]
    assert [m.target for m in messages] == ["/first", "/ws"]
    assert not messages[1].header_all("Upgrade"), messages[1].raw_head
    assert b"/smuggled" not in b"".join(rig.strict.received())


def test_route_body_limit_is_the_matched_routes(rig: Rig) -> None:
    """The limit is the matched route's: the same request is refused on one route and passed on
    another that shares the upstream."""
    body = b"x" * 100
    for host, status in ((b"tiny.test", 413), (b"upload.test", 200), (b"example.test", 200)):
        with RawConnection(rig.port, timeout=5) as conn:
            conn.send(post_to(host, b"Content-Length: 100\r\n", body))
            assert conn.read_response().status == status, host
