"""WebSocket (HTTP Upgrade) tunnelled through the router after the 101."""

from __future__ import annotations

from websockets.sync.client import ClientConnection, connect

from .cfg import config, route, upstream
from .conftest import StartCore
from .httpclient import RawConnection, raw_request_bytes, request
from .upstreams import UpstreamSet, free_port


def test_websocket_echo_both_ways(upstreams: UpstreamSet, start_core: StartCore) -> None:
    ws_up = upstreams.websocket("ws")
    echo = upstreams.http("echo")
    core = start_core(
        config(
            [upstream("ws", ws_up.address), upstream("echo", echo.address)],
            [route("ws", "ws", path="/ws/"), route("plain", "echo", path="/")],
        )
    )
    messages: list[str | bytes] = [
        "short text",
        "ü nicode ✓",
        b"\x00\x01\x02 binary",
        "x" * 70_000,
        bytes(range(256)) * 800,
        "last",
    ]
    with connect(
        f"ws://127.0.0.1:{core.port}/ws/chat?room=1",
        proxy=None,
        open_timeout=10,
        close_timeout=5,
        compression=None,
        max_size=2**22,
    ) as ws:
        # server → client without a prompt
        assert ws.recv(timeout=10) == "hello from ws"
        for m in messages:
            ws.send(m)
            assert ws.recv(timeout=10) == m
        # several in flight at once
        for i in range(20):
            ws.send(f"burst {i}")
        assert [ws.recv(timeout=10) for _ in range(20)] == [f"burst {i}" for i in range(20)]
    assert ws_up.paths == ["/ws/chat?room=1"]
    handshake = {k.lower(): v for k, v in ws_up.handshakes[0]}
    assert handshake.get("upgrade", "").lower() == "websocket"
    assert "upgrade" in handshake.get("connection", "").lower()
    assert "sec-websocket-key" in handshake
    assert handshake.get("x-forwarded-for") == "127.0.0.1"
    # the router still serves plain HTTP afterwards
    r = request(core.port, "GET", "/plain")
    assert r.status == 200 and r.json()["name"] == "echo", r.describe()


def test_websocket_101_head_and_close(upstreams: UpstreamSet, start_core: StartCore) -> None:
    """Raw handshake: 101 with Upgrade/Connection headers back to the client, then a close frame
    from the client is echoed and the tunnel ends."""
    ws_up = upstreams.websocket("ws")
    core = start_core(config([upstream("ws", ws_up.address)], [route("ws", "ws")]))
    with RawConnection(core.port, 10) as c:
        c.send(
            raw_request_bytes(
                "GET",
                "/raw",
                host="ws.test",
                headers=[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"),
                ],
            )
        )
        status, _, headers, head = c.read_head()
        assert status == 101, head
        h = {k.lower(): v for k, v in headers}
        assert h.get("upgrade", "").lower() == "websocket", head
        assert "upgrade" in h.get("connection", "").lower(), head
        assert h.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", head
        # greeting: unmasked text frame "hello from ws"
        frame = c.read_exactly(2)
        assert frame[0] == 0x81, frame
        assert c.read_exactly(frame[1] & 0x7F) == b"hello from ws"
        # masked close frame, code 1000
        mask = b"\x01\x02\x03\x04"
        payload = (1000).to_bytes(2, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        c.send(bytes([0x88, 0x80 | len(payload)]) + mask + masked)
        reply = c.read_exactly(2)
        assert reply[0] == 0x88, reply
        assert c.wait_closed(10), "tunnel not closed after the WebSocket closing handshake"


def ws_connect(port: int, path: str = "/ws/x") -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        proxy=None,
        open_timeout=10,
        close_timeout=5,
        compression=None,
    )


def test_websocket_tunnel_survives_a_reload(upstreams: UpstreamSet, start_core: StartCore) -> None:
    ws_up = upstreams.websocket("ws")
    echo = upstreams.http("echo")
    cfg = config(
        [upstream("ws", ws_up.address), upstream("echo", echo.address)],
        [route("ws", "ws", path="/ws/")],
    )
    core = start_core(cfg)
    with ws_connect(core.port) as ws:
        assert ws.recv(timeout=10) == "hello from ws"
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        cfg["routes"].append(route("extra", "echo", path="/extra/"))
        core.write_config(cfg)
        core.sighup()
        core.wait_for_revision(2)
        ws.send("after")
        assert ws.recv(timeout=10) == "after"


def test_websocket_to_a_dead_upstream_is_502(start_core: StartCore) -> None:
    core = start_core(config([upstream("ws", f"127.0.0.1:{free_port()}")], [route("ws", "ws")]))
    with RawConnection(core.port, 10) as c:
        c.send(
            raw_request_bytes(
                "GET",
                "/ws",
                host="ws.test",
                headers=[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"),
                ],
            )
        )
        r = c.read_response()
    assert r.status == 502, r.describe()


def test_upgrade_declined_by_upstream_stays_http(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    """An Upgrade request answered with a plain 200 is a normal response, not a tunnel: the
    connection goes on as HTTP (or is closed after a `Connection: close`)."""
    echo = upstreams.http("echo")
    core = start_core(config([upstream("echo", echo.address)], [route("r", "echo")]))
    with RawConnection(core.port, 10) as c:
        c.send(
            raw_request_bytes(
                "GET",
                "/declined",
                host="ws.test",
                headers=[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "x"),
                ],
            )
        )
        first = c.read_response()
        assert first.status == 200 and first.json()["target"] == "/declined", first.describe()
        if "close" in (first.header("Connection") or "").lower():
            assert c.wait_closed(5), "Connection: close announced but the connection stays open"
            return
        c.send(raw_request_bytes("GET", "/next", host="ws.test"))
        nxt = c.read_response()
    assert nxt.status == 200 and nxt.json()["target"] == "/next", nxt.describe()


def test_websocket_only_on_routes_that_allow_it(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    """`websocket: false` on a route: the same handshake that is tunnelled on another route is
    answered there as a plain request, and no Upgrade reaches that route's upstream."""
    ws_up = upstreams.websocket("ws")
    echo = upstreams.http("echo")
    core = start_core(
        config(
            [upstream("ws", ws_up.address), upstream("echo", echo.address)],
            [
                route("ws", "ws", path="/ws/"),
                route("plain", "echo", path="/plain/", websocket=False),
            ],
        )
    )
    handshake = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    with RawConnection(core.port, 10) as c:
        c.send(raw_request_bytes("GET", "/plain/x", host="a.test", headers=handshake))
        resp = c.read_response()
        assert resp.status == 200, resp.describe()
        assert resp.header("Upgrade") is None, resp.describe()
        # A plain exchange: the connection stays usable for the next request.
        c.send(raw_request_bytes("GET", "/plain/y", host="a.test"))
        assert c.read_response().status == 200
    seen = echo.snapshot()
    assert [r.target for r in seen] == ["/plain/x", "/plain/y"]
    assert seen[0].header("Upgrade") is None and seen[0].header("Connection") is None
    with connect(f"ws://127.0.0.1:{core.port}/ws/x", proxy=None, open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "hello from ws"
        ws.send("still tunnelled")
        assert ws.recv(timeout=10) == "still tunnelled"
