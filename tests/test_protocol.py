"""ClientProtocol driven with a fake transport (as uvicorn's tests do): the router's own answers.

Nothing here reaches an upstream; the integration tests cover proxying with real sockets.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from minirouter.config import CoreSettings, Limits
from minirouter.core.protocol import PAUSE_DEAD, ClientProtocol, TLSAccept
from minirouter.core.state import RouterState
from minirouter.model import config_from_dict


class FakeTransport:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False
        self.read_paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 40000)}.get(name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.buffer += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def statuses(self) -> list[int]:
        out = []
        for part in bytes(self.buffer).split(b"HTTP/1.1 ")[1:]:
            out.append(int(part[:3]))
        return out


CONFIG = {
    "upstreams": [{"id": "app", "targets": ["127.0.0.1:9"]}],
    "routes": [
        {"id": "app", "hosts": ["app.test"], "path": "/", "upstream": "app"},
        {
            "id": "old",
            "hosts": ["old.test"],
            "path": "^/item/(\\d+)$",
            "path_type": "regex",
            "redirect": {"to": "https://new.test/items/$1?from=$host", "code": 301},
        },
    ],
}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def make(
    loop: asyncio.AbstractEventLoop, **limits: Any
) -> tuple[ClientProtocol, FakeTransport, RouterState]:
    settings = CoreSettings(access_log="off", limits=Limits(**limits))
    state = RouterState(settings, loop)
    assert state.apply(config_from_dict(CONFIG))
    proto = ClientProtocol(state)
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, state


def finish(proto: ClientProtocol, transport: FakeTransport) -> None:
    if not transport.closed:
        transport.close()
    proto.connection_lost(None)


def test_no_route_is_404_and_keeps_the_connection(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop)
    proto.data_received(b"GET /x HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
    assert tr.statuses() == [404]
    assert not tr.closed
    finish(proto, tr)


def test_pipelined_requests_are_answered_in_order(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop)
    proto.data_received(
        b"GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n"
        b"GET /item/42 HTTP/1.1\r\nHost: old.test\r\n\r\n"
        b"HEAD /b HTTP/1.1\r\nHost: b.test\r\n\r\n"
    )
    assert tr.statuses() == [404, 301, 404]
    assert b"Location: https://new.test/items/42?from=old.test\r\n" in tr.buffer
    # The answer to HEAD carries no body: the buffer ends with the blank line.
    assert bytes(tr.buffer).endswith(b"\r\n\r\n")
    finish(proto, tr)


def test_simple_requests_skip_llhttp_and_mix_with_the_others(
    loop: asyncio.AbstractEventLoop,
) -> None:
    proto, tr, _ = make(loop)
    real = proto.parser
    fed: list[bytes] = []

    class Spy:
        def feed_data(self, data: bytes) -> None:
            fed.append(bytes(data))
            real.feed_data(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    proto.parser = Spy()
    simple = b"GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n"
    other = b"DELETE /b HTTP/1.1\r\nHost: b.test\r\n\r\n"  # not GET/HEAD: llhttp's
    proto.data_received(simple + simple + other + simple + simple[:9])
    assert tr.statuses() == [404, 404, 404, 404]
    # llhttp saw the bytes from the first request it had to parse on, and the partial one.
    assert fed == [other + simple + simple[:9]]
    proto.data_received(simple[9:])  # inside a request: llhttp's
    proto.data_received(simple)  # between requests again: not llhttp's
    assert fed == [other + simple + simple[:9], simple[9:]]
    assert tr.statuses() == [404] * 6
    assert not tr.closed
    finish(proto, tr)


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    ],
    ids=["garbage", "space-in-name", "two-lengths", "nul"],
)
def test_malformed_request_is_400_and_close(loop: asyncio.AbstractEventLoop, raw: bytes) -> None:
    proto, tr, _ = make(loop)
    proto.data_received(raw)
    assert tr.statuses() == [400]
    assert b"Connection: close" in tr.buffer
    assert tr.closed
    finish(proto, tr)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", 405),
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", 417),
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2000\r\n\r\n", 413),
    ],
    ids=["no-host", "two-hosts", "connect", "expect", "too-large"],
)
def test_refused_requests(loop: asyncio.AbstractEventLoop, raw: bytes, status: int) -> None:
    proto, tr, _ = make(loop, max_body_size=1000)
    proto.data_received(raw)
    assert tr.statuses() == [status]
    assert tr.closed
    finish(proto, tr)


def test_chunked_body_over_the_limit_is_413(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, max_body_size=10)
    proto.data_received(
        b"POST / HTTP/1.1\r\nHost: nowhere.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n8\r\n12345678\r\n0\r\n\r\n"
    )
    # The 404 was sent as soon as the head was routed; the oversized body then cuts the connection.
    assert tr.statuses()[0] == 404
    assert tr.closed
    finish(proto, tr)


def test_request_line_too_long_is_414(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, max_request_line=100)
    proto.data_received(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert tr.statuses() == [414]
    assert tr.closed
    finish(proto, tr)


def test_request_line_too_long_in_small_pieces_is_414(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, max_request_line=100)
    proto.data_received(b"GET /")
    for _ in range(30):
        if tr.closed:
            break
        proto.data_received(b"a" * 10)
    assert tr.statuses() == [414]
    finish(proto, tr)


def test_header_block_too_large_is_431(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, max_header_size=1024)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 2000 + b"\r\n\r\n")
    assert tr.statuses() == [431]
    finish(proto, tr)


def test_one_endless_header_line_is_cut_off(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, max_header_size=1024, max_request_line=256)
    proto.data_received(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(100):
        if tr.closed:
            break
        proto.data_received(b"v" * 100)
    assert tr.statuses() == [431]
    assert tr.closed
    finish(proto, tr)


def test_too_many_headers_is_431(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, max_headers=10)
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(20))
    proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
    assert tr.statuses() == [431]
    finish(proto, tr)


def test_slow_headers_get_408(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, header_timeout=0.05)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: a")
    loop.run_until_complete(asyncio.sleep(0.2))
    assert tr.statuses() == [408]
    assert tr.closed
    finish(proto, tr)


def test_idle_connection_is_closed_without_an_answer(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, header_timeout=0.05)
    loop.run_until_complete(asyncio.sleep(0.2))
    assert tr.closed
    assert tr.buffer == b""
    finish(proto, tr)


def test_keepalive_timeout_closes_after_a_request(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, keepalive_timeout=0.05)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: none.test\r\n\r\n")
    assert not tr.closed
    loop.run_until_complete(asyncio.sleep(0.2))
    assert tr.closed
    assert tr.statuses() == [404]
    finish(proto, tr)


def test_pipelining_pauses_reading_until_its_turn(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop)
    # The first request is routed to an upstream that is being connected: the second waits.
    proto.data_received(
        b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\nGET /x HTTP/1.1\r\nHost: none.test\r\n\r\n"
    )
    assert tr.read_paused
    assert len(proto.queue) == 2
    assert tr.statuses() == []
    finish(proto, tr)
    loop.run_until_complete(asyncio.sleep(0))


class SilentUpstream:
    """Accepts connections and never answers: the request stays in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.server = loop.run_until_complete(loop.create_server(asyncio.Protocol, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())


def make_proxying(
    loop: asyncio.AbstractEventLoop, upstream: SilentUpstream, **limits: Any
) -> tuple[ClientProtocol, FakeTransport, RouterState]:
    settings = CoreSettings(access_log="off", limits=Limits(**limits))
    state = RouterState(settings, loop)
    config = {
        "upstreams": [{"id": "app", "targets": [f"127.0.0.1:{upstream.port}"]}],
        "routes": [{"id": "app", "path": "/", "upstream": "app"}],
    }
    assert state.apply(config_from_dict(config))
    proto = ClientProtocol(state)
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, state


def run_until(loop: asyncio.AbstractEventLoop, cond: Any, timeout: float = 5.0) -> None:
    async def wait() -> None:
        deadline = loop.time() + timeout
        while not cond() and loop.time() < deadline:
            await asyncio.sleep(0.01)

    loop.run_until_complete(wait())


def test_a_stalled_body_gets_408(loop: asyncio.AbstractEventLoop) -> None:
    up = SilentUpstream(loop)
    proto, tr, _ = make_proxying(loop, up, body_timeout=0.1)
    proto.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    run_until(loop, lambda: tr.closed)
    assert tr.statuses() == [408]
    finish(proto, tr)
    up.close()


def test_endless_trailer_is_cut_off(loop: asyncio.AbstractEventLoop) -> None:
    up = SilentUpstream(loop)
    proto, tr, _ = make_proxying(loop, up, max_header_size=1024)
    proto.data_received(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: "
    )
    for _ in range(100):
        if tr.closed:
            break
        proto.data_received(b"a" * 100)
    assert tr.closed
    assert tr.statuses() == [431]
    finish(proto, tr)
    up.close()


def test_a_client_that_stops_reading_is_cut_off(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, send_timeout=0.05)
    proto.pause_writing()
    run_until(loop, lambda: tr.closed, timeout=2)
    assert tr.closed
    finish(proto, tr)


def test_resumed_writing_cancels_the_send_timeout(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop, send_timeout=0.05)
    proto.pause_writing()
    proto.resume_writing()
    loop.run_until_complete(asyncio.sleep(0.15))
    assert not tr.closed
    finish(proto, tr)


def test_a_long_pipeline_of_own_answers_does_not_recurse(loop: asyncio.AbstractEventLoop) -> None:
    proto, tr, _ = make(loop)
    n = 2000  # far past the recursion limit if each answer started the next one directly
    proto.data_received(b"GET /x HTTP/1.1\r\nHost: none.test\r\n\r\n" * n)
    run_until(loop, lambda: len(tr.statuses()) >= n)
    assert tr.statuses() == [404] * n
    finish(proto, tr)


def _connect(state: RouterState) -> tuple[ClientProtocol, FakeTransport]:
    proto = ClientProtocol(state)
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport


def test_connection_cap_evicts_an_idle_connection_then_refuses(
    loop: asyncio.AbstractEventLoop,
) -> None:
    idle, idle_t, state = make(loop, max_connections=2)
    busy, busy_t = _connect(state)
    busy.data_received(b"GET / HTTP/1.1\r\n")  # a request under way
    # At the cap: the idle connection makes room for the new one.
    third, third_t = _connect(state)
    assert idle_t.closed and not busy_t.closed and not third_t.closed
    assert len(state.connections) == 2
    third.data_received(b"GET /x HTTP/1.1\r\n")
    # Now every connection is busy: the next one is refused once it speaks, not counted.
    fourth, fourth_t = _connect(state)
    assert fourth not in state.connections and not fourth_t.closed
    fourth.data_received(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert fourth_t.statuses() == [503] and fourth_t.closed
    fourth.connection_lost(None)
    idle.connection_lost(None)
    assert state.metrics.open_connections == 2
    assert not busy_t.closed and not busy_t.buffer
    assert state.metrics.connections_evicted == 1
    assert state.metrics.connections_refused == 1
    text = state.metrics.render()
    assert b"\nminirouter_connections_evicted_total 1\n" in text
    assert b"\nminirouter_connections_refused_total 1\n" in text


def test_tls_handshakes_take_a_place_under_the_cap(loop: asyncio.AbstractEventLoop) -> None:
    """A TLS connection counts from accept: it evicts an idle connection, and with every
    place busy it is closed at once (nothing can be answered before a handshake)."""
    idle, idle_t, state = make(loop, max_connections=2)
    busy, busy_t = _connect(state)
    busy.data_received(b"GET / HTTP/1.1\r\n")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    first = TLSAccept(state, context, 10.0)
    first_t = FakeTransport()
    first.connection_made(first_t)  # type: ignore[arg-type]
    assert idle_t.closed and not first_t.closed and not busy_t.closed
    assert first in state.connections and first.task is not None
    assert state.metrics.connections_evicted == 1
    second = TLSAccept(state, context, 10.0)
    second_t = FakeTransport()
    second.connection_made(second_t)  # type: ignore[arg-type]
    assert second_t.closed and second not in state.connections and second.task is None
    assert state.metrics.connections_refused == 1
    # A handshake abandoned before it started gives its place back.
    task = first.task
    first.connection_lost(None)
    assert first not in state.connections and first.task is None
    loop.run_until_complete(asyncio.sleep(0))
    assert task.cancelled()
    assert len(state.connections) == 1
    idle.connection_lost(None)
    finish(busy, busy_t)


def test_refused_request_stops_the_parser(loop: asyncio.AbstractEventLoop) -> None:
    """Bytes after a refused request in the same read are never parsed as a request."""
    proto, transport, _ = make(loop)
    proto.data_received(
        b"GET / HTTP/1.1\r\n\r\n"  # no Host: 400
        b"GET /old HTTP/1.1\r\nHost: old.test\r\n\r\n"
    )
    assert transport.statuses() == [400]
    assert transport.closed
    assert proto.newest is None, "the request after the refused one was parsed"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: app.test\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: app.test evil\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: app.test\r\n\r\n", 400),
    ],
)
def test_framing_and_syntax_refusals(
    loop: asyncio.AbstractEventLoop, head: bytes, status: int
) -> None:
    proto, transport, _ = make(loop)
    proto.data_received(head + b"0\r\n\r\n")
    assert transport.statuses() == [status]
    assert transport.closed


# -- timers: one lazily re-armed timer per connection (driven by a fake clock) -------------------


class FakeClock:
    """Replaces the loop's clock: timers fire when the test moves time, never by themselves.
    Counts the timers scheduled, so a test can see that requests do not schedule their own."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = 1000.0
        self.loop = loop
        self.scheduled = 0
        call_at = loop.call_at

        def counting_call_at(when: float, callback: Any, *args: Any, **kw: Any) -> Any:
            self.scheduled += 1
            return call_at(when, callback, *args, **kw)

        loop.time = lambda: self.now  # type: ignore[method-assign]
        loop.call_at = counting_call_at  # type: ignore[method-assign]

    def advance_to(self, offset: float) -> None:
        """Move to 1000 + offset seconds and run every timer that is due."""
        self.now = 1000.0 + offset
        self.loop.run_until_complete(asyncio.sleep(0))


NOT_ROUTED = b"GET /x HTTP/1.1\r\nHost: none.test\r\n\r\n"  # answered 404 by the router itself


def test_keepalive_deadline_moves_with_each_request_without_new_timers(
    loop: asyncio.AbstractEventLoop,
) -> None:
    clock = FakeClock(loop)
    proto, tr, _ = make(loop, keepalive_timeout=10, header_timeout=5)
    clock.advance_to(0)
    proto.data_received(NOT_ROUTED)
    before = clock.scheduled
    for i in range(1, 101):
        clock.advance_to(i * 0.01)
        proto.data_received(NOT_ROUTED)
    # 100 requests, no timer of their own (the one timer is re-armed at most twice per
    # header timeout, whatever the request rate).
    assert clock.scheduled == before
    clock.advance_to(8)  # the timer (due at 1005) fires and re-arms for the deadline (1011)
    assert not tr.closed
    clock.advance_to(10.9)
    assert not tr.closed
    clock.advance_to(11.1)
    assert tr.closed
    assert tr.statuses() == [404] * 101
    finish(proto, tr)


def test_header_timeout_earlier_than_the_pending_timer(loop: asyncio.AbstractEventLoop) -> None:
    """The timer waits for the keep-alive deadline; a new head must not get that long."""
    clock = FakeClock(loop)
    proto, tr, _ = make(loop, keepalive_timeout=10, header_timeout=2)
    proto.data_received(NOT_ROUTED)  # keep-alive until 1010; the timer is re-armed for it
    clock.advance_to(2.5)
    assert not tr.closed
    proto.data_received(b"GET / HTTP/1.1\r\nHo")  # the head must be complete by 1004.5
    clock.advance_to(4.4)
    assert not tr.closed
    clock.advance_to(4.6)
    assert tr.closed
    assert tr.statuses() == [404, 408]
    finish(proto, tr)


class RecordingHandler:
    """A request cycle stand-in for an upstream connection: records what it is told."""

    def __init__(self) -> None:
        self.errors: list[tuple[int, str]] = []

    def on_upstream_error(self, status: int, message: str) -> None:
        self.errors.append((status, message))

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def pooled_connection(
    loop: asyncio.AbstractEventLoop,
) -> tuple[Any, FakeTransport, Any, Any]:
    from minirouter.core import upstream as pool
    from minirouter.core.balancer import Balancer
    from minirouter.model import Upstream

    spec = Upstream.from_dict(
        {"id": "app", "targets": ["127.0.0.1:9"], "timeouts": {"read": 5, "idle": 60}}
    )
    target = Balancer(spec).targets[0]
    conn = pool.UpstreamConnection(target, loop)
    conn.spec = spec  # as open_connection records it
    tr = FakeTransport()
    conn.connection_made(tr)
    return conn, tr, target, spec


def test_pooled_connection_not_reused_after_its_transport_settings_changed(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A connection opened before `tls` (or sni/verify/ca) changed is closed, not reused: it
    would carry requests in plaintext where the config now asks for verified TLS. Any other
    change of the upstream keeps its pooled connections."""
    from minirouter.core import upstream as pool
    from minirouter.model import Upstream

    conn, tr, target, spec = pooled_connection(loop)
    pool.release(conn, spec)
    resized = Upstream.from_dict({**spec.to_dict(), "keepalive": 8})
    assert pool.take_idle(target, resized) is conn
    pool.release(conn, resized)
    secured = Upstream.from_dict({**spec.to_dict(), "tls": True})
    assert pool.take_idle(target, secured) is None
    assert tr.closed and not target.idle


def test_upstream_read_timeout_after_the_connection_was_pooled(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Parked, the timer waits for the idle deadline (60 s); a request taken from the pool must
    still time out after timeouts.read (5 s), and repeated exchanges add no timers."""
    from minirouter.core import upstream as pool

    clock = FakeClock(loop)
    conn, tr, target, spec = pooled_connection(loop)
    pool.release(conn, spec)
    assert pool.take_idle(target, spec) is conn
    handler = RecordingHandler()
    conn.start(handler, 5.0, head_only=False)
    conn.arm_read_timeout()
    clock.advance_to(1)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pool.release(conn, spec)
    before = clock.scheduled
    for i in range(2, 50):
        clock.advance_to(i * 0.1)
        assert pool.take_idle(target, spec) is conn
        conn.start(handler, 5.0, head_only=False)
        conn.arm_read_timeout()
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        pool.release(conn, spec)
    assert clock.scheduled == before
    assert handler.errors == []
    # Now a request that gets no answer.
    assert pool.take_idle(target, spec) is conn
    conn.start(handler, 5.0, head_only=False)
    conn.arm_read_timeout()  # at 1004.9: due at 1009.9
    clock.advance_to(9.8)
    assert handler.errors == [] and not tr.closed
    clock.advance_to(10.0)
    assert handler.errors == [(504, "upstream read timeout")]
    assert tr.closed


def test_upstream_idle_timeout_closes_a_pooled_connection(
    loop: asyncio.AbstractEventLoop,
) -> None:
    from minirouter.core import upstream as pool

    clock = FakeClock(loop)
    conn, tr, target, spec = pooled_connection(loop)
    conn.start(RecordingHandler(), 5.0, head_only=False)
    conn.arm_read_timeout()  # the timer is set for 1005
    pool.release(conn, spec)  # idle until 1060
    clock.advance_to(5.5)
    assert not tr.closed and list(target.idle) == [conn]
    clock.advance_to(59.9)
    assert not tr.closed
    clock.advance_to(60.1)
    assert tr.closed and not target.idle


class Exchange(RecordingHandler):
    """Records the heads and completions an upstream connection reports."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Any] = []

    def on_upstream_head(self, status: int, *_: Any) -> None:
        self.events.append(status)

    def on_upstream_complete(self) -> None:
        self.events.append("complete")


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.0 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nConnection: close\r\nLink: </a>\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
)
def test_final_answer_after_an_interim_one_is_llhttps(
    loop: asyncio.AbstractEventLoop, interim: bytes
) -> None:
    """An interim answer llhttp holds to be the last leaves it refusing what follows: the final
    answer must meet that refusal in its own exchange (as before the simple-response shortcut),
    never leave a pooled connection whose next answer fails for no fault of its own."""
    from minirouter.core import upstream as pool

    conn, _, target, spec = pooled_connection(loop)
    first = Exchange()
    conn.start(first, 5.0, head_only=False)
    conn.data_received(interim)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    if first.errors:  # llhttp refused it: the connection is not reused
        assert conn.closed and first.events == [int(interim[9:12]), "complete"]
        return
    assert first.events == [int(interim[9:12]), "complete", 200, "complete"]
    pool.release(conn, spec)
    assert pool.take_idle(target, spec) is conn
    second = Exchange()
    conn.start(second, 5.0, head_only=False)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")  # in two reads
    conn.data_received(b"cd")
    assert (second.events, second.errors) == ([200, "complete"], [])


def test_bytes_after_the_last_request_are_refused_as_llhttp_does(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A request that ends the connection is left to llhttp, so that what a client pipelines
    after it (while it is still in flight) is refused, not parsed and queued as requests."""
    upstream = SilentUpstream(loop)
    proto, tr, _ = make_proxying(loop, upstream)
    proto.data_received(
        b"GET /a HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: app.test\r\n\r\n"
    )
    loop.run_until_complete(asyncio.sleep(0.05))
    assert [c.url for c in proto.queue if not c.placeholder] == [b"/a"]
    assert proto.gate is not None and proto.gate.reasons & PAUSE_DEAD
    finish(proto, tr)
    loop.run_until_complete(asyncio.sleep(0.01))  # the upstream connection's close completes
    upstream.close()
