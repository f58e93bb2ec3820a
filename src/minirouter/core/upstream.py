"""The upstream side: one Protocol per upstream connection, and the per-target pools.

An `UpstreamConnection` owns its response parser and reports what it parses to
the request cycle that currently uses it (`handler`). Between requests it sits in
its target's idle deque (`TargetState.idle`), most recently used last, with an
idle timer; a connection the upstream closes while idle removes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from minirouter import fastpath
from minirouter.core import tls

if TYPE_CHECKING:
    from minirouter.core.balancer import TargetState
    from minirouter.model import Upstream

log = logging.getLogger("minirouter.upstream")

# Like nginx's "upstream sent too big header", with room: a response head (or a trailer
# block) larger than this is refused with 502.
MAX_RESPONSE_HEAD = 64 * 1024


class _ExtraResponse(Exception):
    """A second response began in the read that ended the first: the upstream is out of step."""


class ResponseHandler(Protocol):
    """What an upstream connection reports to the request cycle using it."""

    def on_upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None: ...
    def on_upstream_body(self, data: bytes) -> None: ...
    def on_upstream_complete(self) -> None: ...
    def on_upstream_upgrade(self, rest: bytes) -> None: ...
    def on_upstream_error(self, status: int, message: str) -> None: ...
    def on_upstream_lost(self, exc: Exception | None) -> None: ...
    def on_upstream_pause_writing(self) -> None: ...
    def on_upstream_resume_writing(self) -> None: ...
    def on_upstream_tunnel_data(self, data: bytes) -> None: ...
    def flush(self) -> None: ...


class UpstreamConnection:
    """One keep-alive connection to one target (an asyncio.Protocol by its methods: see
    `ClientProtocol`)."""

    def __init__(self, target: TargetState, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.loop = loop
        # The upstream settings this connection was opened under (see `take_idle`).
        self.spec: Upstream | None = None
        self.transport: asyncio.Transport | None = None
        self.handler: ResponseHandler | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        # True once this connection has carried a complete exchange: a request
        # sent on it may meet a close the upstream decided on while it was idle.
        self.reused = False
        # Set for a request whose response has no body whatever its headers say
        # (HEAD): llhttp's response parser cannot know that by itself.
        self.head_only = False
        self.response_started = False
        self.tunnel = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._done_head_only = False
        # llhttp is inside an exchange (a response whose bytes came in more than one read, or
        # the final answer after an interim one): every read goes to it until it is complete.
        self._in_message = False
        # The response ended during this read; reported once the whole read is parsed, so
        # that bytes after the end (an upstream out of step) are seen before anything of
        # the response is sent on.
        self._complete = False
        self._extra = False  # bytes after a complete HEAD answer
        # One timer per connection for both timeouts, scheduled only when none is or when a
        # deadline moves earlier than it; when it fires early (the deadline moved later, as it
        # does with every request) it re-arms itself for the time left. So a busy keep-alive
        # connection schedules a timer about once per timeout, not twice per request.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._read_armed = False  # waiting for the response: timeouts.read applies
        self._idle_deadline = 0.0  # parked in the pool until then (loop time; 0: not parked)
        self._read_timeout = 0.0
        self._last_read = 0.0
        self._paused = False  # reading paused for a slow client: not the upstream's fault
        # Bytes read since the parser last made progress (head, body): bounds what httptools
        # buffers of a header or trailer line from a broken upstream.
        self._unparsed = 0

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Bounded buffering towards the upstream: beyond this the client pauses.
        transport.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)

    def data_received(self, data: bytes) -> None:
        handler = self.handler
        if self.tunnel:
            if handler is not None:
                handler.on_upstream_tunnel_data(data)
            return
        if handler is None:
            # Bytes from an idle connection: the upstream is confused; never reuse it.
            self.close()
            return
        if self._read_armed:
            self._last_read = self.loop.time()
        self.response_started = True
        if not self._in_message and not self.head_only:
            simple = fastpath.parse_simple_response(data)
            if simple is not None:
                # One whole response in this read (the usual case): report what llhttp's
                # callbacks would, in their order, without running them.
                status, reason, headers, keep_alive, body = simple
                self._unparsed = 0
                try:
                    handler.on_upstream_head(status, reason, headers, keep_alive)
                    if body and self.handler is not None:
                        handler.on_upstream_body(body)
                    if self.handler is not None:
                        handler.on_upstream_complete()
                except Exception as exc:  # as llhttp's path treats a failing callback
                    log.error("error handling an upstream response", exc_info=exc)
                    self.close()
                    handler.on_upstream_error(502, "internal error")
                handler.flush()
                return
        self._unparsed += len(data)
        try:
            self.parser.feed_data(data)
            if self._extra:
                raise httptools.HttpParserError("body bytes after the answer to HEAD")
            if self._unparsed > MAX_RESPONSE_HEAD and self.handler is not None:
                self.close()
                handler.on_upstream_error(502, "upstream response head or trailers too large")
            elif self._complete:
                self._complete = False
                if self.handler is not None:
                    handler.on_upstream_complete()
        except httptools.HttpParserUpgrade as exc:
            self._complete = False
            offset = exc.args[0] if exc.args else len(data)
            self._cancel_read_timer()
            self.tunnel = True
            handler.on_upstream_upgrade(data[offset:])
        except httptools.HttpParserCallbackError as exc:
            self._complete = self._extra = False
            if isinstance(exc.__context__, _ExtraResponse):
                self.abort()
                handler.on_upstream_error(502, "upstream sent more than one response")
            else:
                # Our own callback failed: a bug, not the upstream's fault; say so loudly.
                log.error("error handling an upstream response", exc_info=exc.__context__ or exc)
                self.close()
                handler.on_upstream_error(502, "internal error")
        except httptools.HttpParserError as exc:
            # Bad framing, or bytes after the end of the response (then the cycle still
            # holds the whole answer unsent, and answers 502 instead).
            self._complete = self._extra = False
            self.abort()
            handler.on_upstream_error(502, f"invalid response from upstream: {exc}")
        handler.flush()
        if self._done_head_only:
            # The old parser would read whatever follows as this response's body.
            self._done_head_only = False
            self._in_message = False
            self.parser = httptools.HttpResponseParser(self)

    def eof_received(self) -> bool | None:
        # Also in a tunnel: an upstream that stops sending ends the tunnel (WebSocket
        # servers close after the closing handshake); connection_lost tells the cycle.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        handler = self.handler
        if handler is not None:
            self.handler = None
            handler.on_upstream_lost(exc)
        else:
            with contextlib.suppress(ValueError):
                self.target.idle.remove(self)

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.on_upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.on_upstream_resume_writing()

    # -- httptools callbacks -----------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            raise _ExtraResponse
        self._in_message = True
        self._unparsed = 0
        self._reason = b""
        self._headers = []

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        handler = self.handler
        if handler is None:
            return
        self._unparsed = 0
        status = self.parser.get_status_code()
        handler.on_upstream_head(
            status, self._reason, self._headers, self.parser.should_keep_alive()
        )
        if self.head_only and status >= 200 and self.handler is not None:
            self._done_head_only = True
            self._complete = True

    def on_body(self, body: bytes) -> None:
        self._unparsed = 0
        if self._done_head_only:
            # Body bytes after a HEAD answer: the framing cannot be trusted.
            self._extra = True
            return
        if self.handler is not None:
            self.handler.on_upstream_body(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        # After an interim answer the final one is llhttp's too: an interim answer llhttp
        # holds to be the last (HTTP/1.0, "Connection: close") leaves it refusing what
        # follows, and that must fail this exchange, not a later one on a pooled connection.
        self._in_message = status < 200 and status != 101
        if self._done_head_only:
            return
        handler = self.handler
        if handler is not None:
            if status < 200 and status != 101:
                handler.on_upstream_complete()  # interim: the exchange goes on
            else:
                self._complete = True

    # -- used by the request cycle -----------------------------------------

    def start(self, handler: ResponseHandler, read_timeout: float, head_only: bool) -> None:
        """Bind this connection to a request cycle (before its head is written)."""
        self._cancel_timers()
        self.handler = handler
        self.head_only = head_only
        self.response_started = False
        self._read_timeout = read_timeout

    def arm_read_timeout(self) -> None:
        """Start waiting for the response: called once the request is fully sent.

        From then on `timeouts.read` bounds every wait for the upstream (for the head, and
        between two reads of the body), as nginx's proxy_read_timeout does.
        """
        if not self.closed:
            now = self._last_read = self.loop.time()
            self._read_armed = True
            self._schedule(now + self._read_timeout)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        self._paused = True
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._paused:
            return  # only pause_reading pauses the transport (park resumes it by itself)
        self._paused = False
        self._last_read = self.loop.time()
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    def park(self, idle_timeout: float) -> None:
        """Become idle in the pool; closed by the timer if nobody takes it in time."""
        self.handler = None
        self.reused = True
        self._read_armed = False
        if self._paused and self.transport is not None:
            # A slow client paused us; idle, we must read to notice a close.
            self._paused = False
            self.transport.resume_reading()
        self._idle_deadline = deadline = self.loop.time() + idle_timeout
        self._schedule(deadline)

    # -- timers ------------------------------------------------------------

    def _schedule(self, deadline: float) -> None:
        """Make sure the timer fires no later than `deadline` (loop time)."""
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.loop.time()
        reading = self._read_armed and self.handler is not None
        if reading:
            # Not one timer per read: the time left since the last read decides.
            if self._paused:
                self._last_read = now  # we stopped reading for a slow client
            deadline = self._last_read + self._read_timeout
        elif self._idle_deadline:
            deadline = self._idle_deadline
        else:
            return  # nothing to wait for any more (a tunnel, or a request in progress)
        if deadline - now > 0.001:
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)
        elif reading:
            self._on_read_timeout()
        else:
            self._on_idle_timeout()

    def _on_read_timeout(self) -> None:
        self._read_armed = False
        handler = self.handler
        self.handler = None
        self.abort()
        if handler is not None:
            handler.on_upstream_error(504, "upstream read timeout")

    def _on_idle_timeout(self) -> None:
        self._idle_deadline = 0.0
        with contextlib.suppress(ValueError):
            self.target.idle.remove(self)
        self.close()

    def _cancel_read_timer(self) -> None:
        self._read_armed = False  # the timer, if any, finds nothing to do and stops

    def _cancel_timers(self) -> None:
        self._read_armed = False
        self._idle_deadline = 0.0

    def _stop_timer(self) -> None:
        self._read_armed = False
        self._idle_deadline = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def take_idle(target: TargetState, spec: Upstream) -> UpstreamConnection | None:
    """The most recently parked live connection to `target`, or None.

    A connection opened under other transport settings (`tls`, `sni`, `verify`, `ca` changed
    since) is closed instead: it could be plaintext or unverified where the config now asks for
    verified TLS.
    """
    idle = target.idle
    while idle:
        conn: UpstreamConnection = idle.pop()
        if conn.closed or conn.transport is None or conn.transport.is_closing():
            continue
        if conn.spec is not spec and not same_transport(conn.spec, spec):
            conn.close()
            continue
        conn._cancel_timers()
        return conn
    return None


def same_transport(old: Upstream | None, new: Upstream) -> bool:
    """Whether a connection opened for `old` may carry requests for `new`."""
    return old is not None and (old.tls, old.sni, old.verify, old.ca) == (
        new.tls,
        new.sni,
        new.verify,
        new.ca,
    )


def release(conn: UpstreamConnection, spec: Upstream) -> None:
    """Return a connection that finished a clean exchange to its pool, or close it."""
    idle = conn.target.idle
    if conn.closed or len(idle) >= spec.keepalive:
        conn.handler = None
        conn.close()
        return
    conn.park(spec.timeouts.idle)
    idle.append(conn)


def close_idle(target: TargetState) -> None:
    """Close every pooled connection of a target that left the config."""
    while target.idle:
        target.idle.pop().close()


async def open_connection(
    loop: asyncio.AbstractEventLoop, target: TargetState, spec: Upstream
) -> UpstreamConnection:
    """A new connection to `target`; raises OSError or TimeoutError."""
    if spec.tls:
        connecting = loop.create_connection(
            lambda: cast(asyncio.Protocol, UpstreamConnection(target, loop)),
            target.host,
            target.port,
            ssl=tls.upstream_context(spec),
            server_hostname=tls.upstream_server_name(spec, target.host),
        )
    else:
        connecting = loop.create_connection(
            lambda: cast(asyncio.Protocol, UpstreamConnection(target, loop)),
            target.host,
            target.port,
        )
    _, proto = await asyncio.wait_for(connecting, timeout=spec.timeouts.connect)
    conn = cast(UpstreamConnection, proto)
    conn.spec = spec
    return conn
