"""The client side of the data plane: one `ClientProtocol` per client connection.

The protocol owns its request parser and the per-connection state (transport,
flow control, timers, the queue of pipelined requests). Each request gets a
`RequestCycle` that holds the per-request state and talks to one upstream
connection. Responses are written strictly in request order: only the cycle at
the head of the queue writes; later ones wait with their (bounded) body bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from minirouter import fastpath
from minirouter.core import responses
from minirouter.core import upstream as pool

if TYPE_CHECKING:
    from minirouter.core.balancer import Balancer, TargetState
    from minirouter.core.state import RouterState

log = logging.getLogger("minirouter.protocol")

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})

# Reasons for not reading from the client; reading resumes when none is left.
PAUSE_PIPELINE = 1  # a later request is queued behind the one in flight
PAUSE_UPSTREAM = 2  # the upstream's write buffer is full
PAUSE_BUFFER = 4  # body bytes wait for an upstream connection
PAUSE_DEAD = 8  # the parser failed; nothing more will be read

# Body bytes held for a request whose upstream is not connected yet.
BUFFER_LIMIT = 64 * 1024

# $name or ${name} in a redirect template.
_TEMPLATE_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")

# What a Host value may hold (RFC 3986 reg-name / IP literal, an optional port): anything else
# (spaces, "@", "/", ...) could make the router and an upstream see different authorities.
_VALID_HOST = re.compile(rb"[A-Za-z0-9.\-_~!$&'()*+,;=%\[\]:]*").fullmatch

# How long a connection refused for being over --max-connections may take to send its first
# bytes: the 503 is written after reading them, so that the close is a FIN and not a reset.
REFUSE_LINGER = 1.0

# What the connection's deadline is for.
_HEADER_TIMEOUT = 1  # 408 (or a silent close if nothing was sent)
_KEEPALIVE_TIMEOUT = 2  # close
_REFUSE = 3  # over --max-connections: answer 503 and close


class _Refused(Exception):
    """Raised from a parser callback: answer `status` (when its turn comes) and close."""

    def __init__(self, status: int) -> None:
        self.status = status


class _Stop(Exception):
    """Raised from a parser callback: the connection is closing; parse nothing more."""


class ReadGate:
    """Pauses reading a transport while any reason holds, resumes when none does."""

    __slots__ = ("reasons", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.reasons = 0

    def pause(self, reason: int) -> None:
        if not self.reasons:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()
        self.reasons |= reason

    def resume(self, reason: int) -> None:
        if self.reasons & reason:
            self.reasons &= ~reason
            if not self.reasons and not self.transport.is_closing():
                with contextlib.suppress(RuntimeError):
                    self.transport.resume_reading()


def make_room(state: RouterState) -> bool:
    """At the connection cap: close one connection that waits for a request (as nginx reuses
    idle keep-alive connections); False if every connection is busy."""
    connections = state.connections
    for conn in connections:
        if isinstance(conn, ClientProtocol) and conn.evictable():
            conn.close()
            # connection_lost comes later; the set must shrink now for the next accept.
            connections.discard(conn)
            state.metrics.connection_closed()
            state.metrics.connection_evicted()
            return True
    return False


class TLSAccept(asyncio.Protocol):
    """An HTTPS listener's connection from accept until its TLS handshake is done.

    A handshake holds a file descriptor (and OpenSSL state) for up to the handshake timeout, so
    the connection takes its place in `state.connections` at accept, before any TLS work: at
    the cap an idle connection makes room, else the new one is closed at once (a 503 cannot
    be sent before a handshake; `minirouter_connections_refused_total` counts it). Once the
    handshake is done the place passes to the connection's `ClientProtocol`; a handshake that
    fails, times out or is abandoned gives it back.

    uvloop's `create_server(ssl=...)` tells the application nothing about a handshake that
    fails (its protocol is only called once the handshake succeeded), so this protocol runs the
    handshake itself with `loop.start_tls`.
    """

    def __init__(self, state: RouterState, context: ssl.SSLContext, timeout: float) -> None:
        self.state = state
        self.context = context
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        # Bytes read before start_tls took the connection over (then reading is paused).
        self.early = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        state = self.state
        cap = state.limits.max_connections
        if cap and len(state.connections) >= cap and not make_room(state):
            state.metrics.connection_refused()
            transport.abort()
            return
        state.connections.add(self)
        self.task = state.loop.create_task(self._handshake(transport))

    def data_received(self, data: bytes) -> None:
        # Only until the handshake task has started: the transport reads as soon as
        # connection_made returns, one loop turn before start_tls takes the connection over.
        self.early += data
        if self.transport is not None:
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        # Only before start_tls took over (afterwards the TLS protocol gets this).
        self.state.connections.discard(self)
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def _replay(self, transport: asyncio.Transport, data: bytes) -> None:
        # Runs first in the loop turn after start_tls put its protocol in place (before that
        # protocol starts the handshake): it gets the bytes that came early, in order.
        proto = cast(asyncio.BufferedProtocol, transport.get_protocol())
        view = memoryview(data)
        while view:
            buf = memoryview(proto.get_buffer(len(view)))
            n = min(len(buf), len(view))
            if not n:
                break
            buf[:n] = view[:n]
            proto.buffer_updated(n)
            view = view[n:]

    async def _handshake(self, transport: asyncio.Transport) -> None:
        state = self.state
        client = ClientProtocol(state, b"https")
        tls: asyncio.Transport | None = None
        try:
            if self.early:
                state.loop.call_soon(self._replay, transport, self.early)
                self.early = b""
            tls = cast(
                asyncio.Transport,
                await state.loop.start_tls(
                    transport,
                    cast(asyncio.BaseProtocol, client),
                    self.context,
                    server_side=True,
                    ssl_handshake_timeout=self.timeout,
                ),
            )
        except (OSError, EOFError, ValueError):
            # A failed handshake (an SSLError), its timeout, the client gone: start_tls has
            # closed the connection; nothing to report (as with any TLS server).
            pass
        finally:
            state.connections.discard(self)
            self.task = None
            if tls is None and not transport.is_closing():
                transport.abort()
        if tls is None or tls.is_closing():
            return
        # Runs before the TLS protocol passes on the first application data (uvloop schedules
        # that after waking start_tls up). The cap check finds the place just given back.
        client.connection_made(tls)

    def idle(self) -> bool:
        """No request yet (graceful shutdown closes it)."""
        return True

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def abort(self) -> None:
        self.close()


class ClientProtocol:
    """One client connection: parsing, pipelining, timers, flow control.

    An asyncio.Protocol by its methods, not by subclassing: the compiled build makes this an
    extension type (protocol.pxd), which cannot derive from a Python class.
    """

    def __init__(self, state: RouterState, scheme: bytes = b"http") -> None:
        self.state = state
        self.loop = state.loop
        self.limits = state.limits
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.gate: ReadGate | None = None
        self.client_ip = ""
        self.client_ip_b = b""
        # On a TLS listener: the SNI name the handshake validated (normalised); a request
        # whose Host names another site is refused with 421 (RFC 9110 section 15.5.20).
        self.sni: str | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[RequestCycle] = deque()  # [0] is the one responding
        self.parsing: RequestCycle | None = None  # the request whose bytes are being parsed
        self.closed = False
        self.eof = False  # the client will send nothing more
        self.write_paused = False
        self.upgraded: RequestCycle | None = None  # every byte now belongs to this tunnel
        self.newest: RequestCycle | None = None  # the last request whose head was parsed
        self.refused = False  # over --max-connections: answered 503, never counted
        self._in_head = False
        self._head_bytes = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_size = 0
        # The header / keep-alive timeout: a deadline (loop time; 0: none) and what happens
        # when it passes (_HEADER_TIMEOUT, ...). One timer per connection serves every request:
        # it is scheduled only when none is, or when the deadline moves earlier than it; when
        # it fires before the deadline (which moved later) it re-arms itself for the time left.
        self._deadline = 0.0
        self._deadline_kind = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # While a request body is being read: the client must keep sending (body timeout).
        self._body_timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        # Bytes read since the parser last produced body: chunk-size lines, extensions and
        # trailers, which httptools buffers whole; bounded like a header block.
        self._meta_bytes = 0
        # While our writes are paused: the client must keep reading (send timeout).
        self._send_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.gate = ReadGate(transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        self.client_ip_b = self.client_ip.encode("ascii", "replace")
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.server_hostname:
            self.sni = fastpath.normalize_host(ssl_object.server_hostname)
        transport.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
        connections = self.state.connections
        cap = self.limits.max_connections
        if cap and len(connections) >= cap and not make_room(self.state):
            self._refuse()
            return
        connections.add(self)
        self.state.metrics.connection_opened()
        self._arm(self.limits.header_timeout, _HEADER_TIMEOUT)

    def evictable(self) -> bool:
        """Waiting for a request (keep-alive, or nothing sent yet): may be closed to make
        room at the connection cap."""
        return (
            not self.closed
            and not self.queue
            and not self._in_head
            and self.parsing is None
            and self.upgraded is None
        )

    def _refuse(self) -> None:
        # Not counted and never parsed: 503 once the client's first bytes are in (or after a
        # short wait), then close. The busy connections are not disturbed.
        self.refused = True
        self.closed = True
        self.state.metrics.connection_refused()
        self._arm(REFUSE_LINGER, _REFUSE)

    def _refuse_now(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(responses.error(503, close=True))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused or self.transport is None:
            # Refused; or a TLS handshake that failed before connection_made (TLSAccept).
            self._disarm()
            return
        self.closed = True
        self._disarm()
        self._cancel_io_timers()
        connections = self.state.connections
        if self in connections:  # not if evicted by make_room, which did this already
            connections.discard(self)
            self.state.metrics.connection_closed()
        for cycle in self.queue:
            cycle.client_gone()
        self.queue.clear()
        self.parsing = None

    def data_received(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded.client_tunnel_data(data)
            return
        if self.closed:
            if self.refused:
                self._disarm()
                self._refuse_now()
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_request_line + self.limits.max_header_size + 4:
                # httptools buffers a header line until it is complete: cut it off here.
                self._parse_failed(431 if self._url else 414)
                return
        if self._body_timer is not None:
            self._last_read = self.loop.time()
        if not self._in_head and self.parsing is None:
            # llhttp is between requests: take the simple whole ones here, without it.
            data = self._take_simple(data)
            if not data or self.closed or self.upgraded is not None:
                return
        self._meta_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if self.parsing is not None and self._meta_bytes > self.limits.max_header_size:
                self._parse_failed(431)
        except httptools.HttpParserUpgrade as exc:
            # on_message_complete has already run: the upgrade is the newest request.
            cycle = self.newest
            offset = exc.args[0] if exc.args else len(data)
            if cycle is not None and cycle.upgrade is None and cycle.method != "CONNECT":
                # An upgrade the router does not pass on (h2c, ...): the request is answered
                # as a plain one, and what follows is parsed as the next request.
                self.parser = httptools.HttpRequestParser(self)
                if offset < len(data):
                    self.data_received(data[offset:])
            elif cycle is None or cycle.upgrade is None:
                self._parse_failed(400)
            elif cycle.finished:
                # Already answered (and told to close): nothing after it can be parsed.
                self.close()
            else:
                self.upgraded = cycle
                cycle.client_tunnel_data(data[offset:])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Stop):
                return
            self._parse_failed(cause.status if isinstance(cause, _Refused) else 400)
        except httptools.HttpParserError:
            self._parse_failed(400)

    def eof_received(self) -> bool | None:
        if self.upgraded is not None:
            return self.upgraded.client_tunnel_eof()
        if self.parsing is not None or self._in_head:
            # The request being sent can never be completed now: give up on it.
            return None
        # A client that half-closes after its request still gets its answers.
        self.eof = True
        return bool(self.queue)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._on_send_timeout)
        if self.queue:
            self.queue[0].client_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self.queue:
            self.queue[0].client_resume_writing()

    # -- httptools callbacks -----------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._meta_bytes = 0
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._header_size = 0
        if not self.queue:
            self._arm(self.limits.header_timeout, _HEADER_TIMEOUT)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            raise _Refused(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._header_size += len(name) + len(value) + 4
        if (
            self._header_size > self.limits.max_header_size
            or len(self._headers) > self.limits.max_headers
        ):
            raise _Refused(431)

    def on_headers_complete(self) -> None:
        if self.closed:
            # An earlier request on this connection was refused: bytes after it are never
            # requests, whatever they look like.
            raise _Stop
        self._in_head = False
        parser = self.parser
        cycle = RequestCycle(
            self,
            parser.get_method(),
            self._url,
            self._headers,
            parser.get_http_version(),
            parser.should_keep_alive(),  # bool already (a Cython bint)
            parser.should_upgrade(),
        )
        if cycle.error_status:
            raise _Refused(cycle.error_status)
        # Trailers come through on_header too: they must not land in this request's headers.
        self._headers = []
        self._header_size = 0
        self._start(cycle)

    def _take_simple(self, data: bytes) -> bytes:
        """Handle the simple requests that are whole at the start of `data` (see
        `fastpath.parse_simple_request`) as llhttp's callbacks would, in their order, without
        running them; return the bytes left for llhttp."""
        limits = self.limits
        while data:
            simple = fastpath.parse_simple_request(
                data, limits.max_request_line, limits.max_header_size, limits.max_headers
            )
            if simple is None:
                return data
            end, method, url, headers, version, keep_alive = simple
            if not keep_alive:
                # llhttp's from here: it refuses bytes after the last request of a
                # connection, which it can only do if it parsed that request itself.
                return data
            data = data[end:]
            if self.closed:
                return b""  # what on_headers_complete's _Stop does
            try:
                cycle = RequestCycle(self, method, url, headers, version, keep_alive, False)
                if cycle.error_status:
                    self._parse_failed(cycle.error_status)
                    return b""
                self._start(cycle)
                self.on_message_complete()
            except Exception as exc:  # as llhttp's path treats a failing callback: 400
                log.error("error handling a request", exc_info=exc)
                self._parse_failed(400)
                return b""
            if self.closed or self.upgraded is not None:
                return b""
        return data

    def _start(self, cycle: RequestCycle) -> None:
        """A request's head is in: queue it, and run it if it is the only one."""
        self.parsing = cycle
        self.newest = cycle
        self.queue.append(cycle)
        if cycle.chunked or cycle.content_length:
            self._last_read = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.limits.body_timeout, self._check_body)
        if len(self.queue) == 1:
            self._deadline = 0.0  # a request runs: no header or keep-alive timeout
            cycle.run()
        else:
            # Pipelined: answer in order; read no further until it is this one's turn.
            assert self.gate is not None
            self.gate.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        self._meta_bytes = 0
        if self.parsing is not None:
            self.parsing.client_body(body)

    def on_message_complete(self) -> None:
        # A body timer is left to run out: the next body re-uses it (see _check_body).
        self._meta_bytes = 0
        cycle = self.parsing
        if cycle is not None:
            self.parsing = None
            cycle.client_complete()

    # -- used by cycles ----------------------------------------------------

    def cycle_done(self, cycle: RequestCycle, keep_alive: bool) -> None:
        """The head of the queue finished its response (and its request was read)."""
        if self.queue and self.queue[0] is cycle:
            self.queue.popleft()
        if self.closed:
            return
        if not keep_alive or self.state.shutting_down or (self.eof and len(self.queue) == 0):
            self.close()
            return
        if self.queue:
            nxt = self.queue[0]
            if len(self.queue) == 1 and self.gate is not None:
                self.gate.resume(PAUSE_PIPELINE)
            # From the loop, not from here: a long pipeline of answers the router gives itself
            # would otherwise recurse cycle_done -> run -> cycle_done ... to the recursion limit.
            self.loop.call_soon(self._run_next, nxt)
        elif self._in_head:
            self._arm(self.limits.header_timeout, _HEADER_TIMEOUT)
        else:
            self._arm(self.limits.keepalive_timeout, _KEEPALIVE_TIMEOUT)

    def _run_next(self, cycle: RequestCycle) -> None:
        if not self.closed and self.queue and self.queue[0] is cycle:
            cycle.run()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._disarm()
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.abort()

    def idle(self) -> bool:
        """No request in progress (used by graceful shutdown)."""
        return not self.queue and not self._in_head

    # -- errors and timers -------------------------------------------------

    def _parse_failed(self, status: int) -> None:
        # The stream cannot be trusted past this point: answer once (in order), then close.
        assert self.gate is not None
        self.gate.pause(PAUSE_DEAD)
        self._in_head = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        cycle = self.parsing
        if cycle is not None and not cycle.request_complete:
            # The broken bytes were inside a request being forwarded.
            self.parsing = None
            cycle.client_broke(status)
            return
        if not self.queue:
            self._send_error_and_close(status)
        else:
            self.queue.append(RequestCycle.failed(self, status))

    def _send_error_and_close(self, status: int) -> None:
        self.state.metrics.request_done("", status, 0.0, 0, 0)
        self.write(responses.error(status, close=True))
        self.close()

    def _on_header_timeout(self) -> None:
        if self.queue:
            return
        if self._in_head or self._head_bytes:
            self._send_error_and_close(408)
        else:
            self.close()

    def _check_body(self) -> None:
        # One timer per body, not one per read: it re-arms itself for the time left. Left
        # running after a body ends, it is taken over by the next body, if any.
        self._body_timer = None
        cycle = self.parsing
        if self.closed or cycle is None or not (cycle.chunked or cycle.content_length):
            return
        now = self.loop.time()
        if self.gate is not None and self.gate.reasons:
            self._last_read = now  # we stopped reading, not the client
        left = self._last_read + self.limits.body_timeout - now
        if left > 0:
            self._body_timer = self.loop.call_later(left, self._check_body)
            return
        self._parse_failed(408)

    def _on_send_timeout(self) -> None:
        # The client stopped reading what we send it: the connection is dead weight.
        self._send_timer = None
        self.abort()

    def _cancel_io_timers(self) -> None:
        for timer in (self._body_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._body_timer = self._send_timer = None

    def _arm(self, delay: float, kind: int) -> None:
        deadline = self.loop.time() + delay
        self._deadline = deadline
        self._deadline_kind = kind
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if not deadline:
            return
        if deadline - self.loop.time() > 0.001:
            # The deadline moved later since the timer was set: wait for the time left.
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)
            return
        self._deadline = 0.0
        kind = self._deadline_kind
        if kind == _HEADER_TIMEOUT:
            self._on_header_timeout()
        elif kind == _KEEPALIVE_TIMEOUT:
            self.close()
        else:
            self._refuse_now()

    def _disarm(self) -> None:
        self._deadline = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class RequestCycle:
    """One request: routing, the upstream exchange, and its response to the client."""

    __slots__ = (
        "balancer",
        "body_limit",
        "body_received",
        "bytes_sent",
        "chunked",
        "conn",
        "connecting",
        "content_length",
        "discard_body",
        "error_status",
        "expect",
        "finished",
        "flushed",
        "head_sent",
        "headers",
        "host_b",
        "host_count",
        "interim",
        "keep_alive",
        "last_error",
        "match",
        "method",
        "method_b",
        "out",
        "pending",
        "pending_size",
        "placeholder",
        "proto",
        "query",
        "request_complete",
        "response_chunked",
        "response_done",
        "response_started",
        "route_id",
        "stale_retry",
        "started",
        "state",
        "status",
        "target",
        "target_b",
        "tried",
        "tunnel_buffer",
        "tunnel_client_eof",
        "tunnelling",
        "upgrade",
        "upstream_addr",
        "upstream_eof_ends",
        "upstream_keep_alive",
        "upstream_started",
        "url",
        "version",
    )

    def __init__(
        self,
        proto: ClientProtocol,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        version: str,
        keep_alive: bool,
        wants_upgrade: bool,
    ) -> None:
        self.proto = proto
        self.state = proto.state
        self.method_b = method
        self.method = method.decode("ascii", "replace")
        self.url = url
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        self.started = time.monotonic()
        self.error_status = 0  # answer this error when the cycle's turn comes
        self.placeholder = False  # not a request: a parse error answered in order
        # Request framing, from the headers httptools has already validated (one length,
        # digits only; never both a length and a coding; chunked last). What llhttp lets
        # through and the router refuses is checked here, in the one pass over the headers.
        self.host_b = b""
        self.content_length: int | None = None
        self.chunked = False
        self.expect: bytes | None = None
        self.upgrade: bytes | None = None
        codings: list[bytes] = []
        host_count = 0
        for name, value in headers:
            n = len(name)
            if n == 4 and name.lower() == b"host":
                self.host_b = value = value.rstrip(b" \t")
                host_count += 1
            elif n == 14 and name.lower() == b"content-length":
                self.content_length = int(value)
            elif n == 17 and name.lower() == b"transfer-encoding":
                self.chunked = True
                codings += value.split(b",")
            elif n == 6 and name.lower() == b"expect":
                self.expect = value
            elif n == 7 and name.lower() == b"upgrade":
                self.upgrade = value.strip()
        if not wants_upgrade or (self.upgrade is not None and self.upgrade.lower() != b"websocket"):
            # Only WebSocket is tunnelled; h2c and the rest are answered as plain requests.
            self.upgrade = None
        self.host_count = host_count
        if version != "1.1" and version != "1.0":
            self.error_status = 505  # "HTTP/2.0" or 0.9 on an HTTP/1.1 listener
        elif (
            host_count > 1
            or (host_count == 0 and version == "1.1")
            or (host_count and not _VALID_HOST(self.host_b))
        ):
            self.error_status = 400  # RFC 9112 3.2: missing, repeated or invalid Host
        elif self.chunked:
            if version == "1.0":
                self.error_status = 400  # RFC 9112 6.1: HTTP/1.0 has no transfer codings
            else:
                # llhttp accepts "gzip, chunked": the router cannot forward a coding it
                # does not implement without changing the body (RFC 9112 6.1: 501).
                listed = [c for c in (c.strip(b" \t").lower() for c in codings) if c]
                if listed != [b"chunked"]:
                    self.error_status = 501
        # Progress.
        self.request_complete = False
        self.body_received = 0
        self.body_limit = 0  # set when routed: the route's max_body_size or --max-body-size
        self.pending: list[bytes] = []  # framed body bytes waiting for an upstream
        self.pending_size = 0
        self.discard_body = False
        self.match: fastpath.Match | None = None
        self.balancer: Balancer | None = None
        self.target: TargetState | None = None
        self.tried: list[TargetState] = []
        self.conn: pool.UpstreamConnection | None = None
        self.connecting: asyncio.Task[pool.UpstreamConnection] | None = None
        self.head_sent = False  # request head written upstream
        self.stale_retry = False
        self.last_error = 502
        self.response_started = False
        self.response_done = False
        self.response_chunked = False
        self.upstream_eof_ends = False
        self.interim = False
        self.status = 0
        self.bytes_sent = 0
        self.upstream_started = 0.0
        self.out: list[bytes] = []  # response bytes of the current upstream read
        self.flushed = False  # some of the upstream's response has been written to the client
        self.tunnel_buffer: list[bytes] = []
        self.tunnel_client_eof = False
        self.tunnelling = False
        self.finished = False
        self.route_id = ""
        self.upstream_addr = ""
        self.query: bytes | None = None
        self.target_b = b""
        self.upstream_keep_alive = False

    @classmethod
    def failed(cls, proto: ClientProtocol, status: int) -> RequestCycle:
        cycle = cls(proto, b"-", b"-", [], "1.1", False, False)
        cycle.placeholder = True
        cycle.error_status = status
        cycle.request_complete = True
        return cycle

    # -- routing -------------------------------------------------------------

    def run(self) -> None:
        """Called when this request reaches the head of the queue."""
        if self.error_status:
            self.respond_own(
                responses.error(self.error_status, close=True), self.error_status, True
            )
            return
        proto = self.proto
        if self.method == "CONNECT":
            self.respond_own(responses.error(405, close=True), 405, True)
            return
        if self.expect is not None and self.expect.lower() != b"100-continue":
            self.respond_own(responses.error(417, close=True), 417, True)
            return
        url = self.url
        absolute = url[:1] != b"/"
        if not absolute:
            # Origin form, nearly every request: split it without building a URL object.
            raw_path, sep, query = url.partition(b"?")
            if sep:
                self.query = query.partition(b"#")[0]
            else:
                raw_path = raw_path.partition(b"#")[0]
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self.respond_own(responses.error(400, close=True), 400, True)
                return
            if (
                parsed.host is None
                or parsed.userinfo is not None
                or parsed.schema.lower() not in (b"http", b"https")
            ):
                # Not an origin or an http(s) absolute form ("*", "a:b", "ftp://", a userinfo
                # that RFC 9110 4.2.4 says to treat as an error): nothing the router forwards.
                self.respond_own(responses.error(400, close=True), 400, True)
                return
            raw_path = parsed.path or b"/"
            self.query = parsed.query
            # Absolute form: the target's own authority decides, never a different Host.
            host_b = parsed.host
            if b":" in host_b:
                host_b = b"[%s]" % host_b  # an IPv6 literal keeps its brackets
            self.host_b = host_b if parsed.port is None else b"%s:%d" % (host_b, parsed.port)
        path = raw_path.decode("latin-1")
        host = self.host_b.decode("latin-1")
        if proto.sni is not None and fastpath.normalize_host(host) != proto.sni:
            self.respond_own(
                responses.error(421, close=self.body_pending()), 421, self.body_pending()
            )
            return
        table = self.state.table
        headers_map = self._headers_map() if table.uses_headers else None
        match = table.match(host, path, self.method, headers_map)
        if self.content_length or self.chunked:
            # The body limit is the route's, once routed (the core's when no route matches).
            limit = self.state.limits.max_body_size
            if match is not None and match.route.max_body_size is not None:
                limit = match.route.max_body_size
            if limit and ((self.content_length or 0) > limit or self.body_received > limit):
                self.respond_own(responses.error(413, close=True), 413, True)
                return
            self.body_limit = limit
        if match is None:
            self.respond_own(
                responses.error(404, close=self.body_pending()), 404, self.body_pending()
            )
            return
        self.match = match
        route = match.route
        self.route_id = route.id
        if self.upgrade is not None and not route.websocket:
            # Not tunnelled on this route: answered as a plain request, like h2c.
            self.upgrade = None
            if proto.upgraded is self:
                # Pipelined: the parser already went past the upgrade; nothing after it can
                # be read as a request.
                self.keep_alive = False
        if route.redirect is not None:
            location = self._redirect_location(route.redirect.to, path, match.captures)
            self.respond_own(
                responses.redirect(route.redirect.code, location, close=self.body_pending()),
                route.redirect.code,
                self.body_pending(),
            )
            return
        balancer = self.state.balancers.get(route.upstream or "")
        if balancer is None:
            self.respond_own(
                responses.error(502, close=self.body_pending()), 502, self.body_pending()
            )
            return
        self.balancer = balancer
        if match.path is not path and match.path != path:
            target = match.path.encode("latin-1")
            self.target_b = target + b"?" + self.query if self.query is not None else target
        elif absolute:
            self.target_b = path.encode("latin-1") + (
                b"?" + self.query if self.query is not None else b""
            )
        else:
            self.target_b = self.url.partition(b"#")[0]
        if self.expect is not None and not self.request_complete:
            # Routed and within limits: let the client send its body (nginx does the same).
            proto.write(responses.CONTINUE)
        self._connect()

    def body_pending(self) -> bool:
        """Body bytes (or tunnel bytes) may still arrive: an answer now must close."""
        if self.upgrade is not None or self.proto.upgraded is self:
            return True  # past an upgrade request the parser cannot read another request
        return not self.request_complete and (self.chunked or bool(self.content_length))

    def _headers_map(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for name, value in self.headers:
            result.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        return result

    def _redirect_location(self, template: str, path: str, captures: tuple[str, ...]) -> str:
        query = self.query.decode("latin-1") if self.query is not None else ""
        values = {
            "scheme": self.proto.scheme.decode(),
            "host": self.host_b.decode("latin-1"),
            "path": path,
            "query": query,
            "request_uri": path + ("?" + query if query else ""),
        }
        for i, cap in enumerate(captures, 1):
            values[str(i)] = cap
        out = _TEMPLATE_VAR.sub(
            lambda m: values.get(m.group(1) or m.group(2), m.group(0)), template
        )
        # A client-controlled part must never split the header.
        return out.replace("\r", "%0D").replace("\n", "%0A")

    # -- connecting ------------------------------------------------------------

    def _connect(self) -> None:
        assert self.balancer is not None
        headers_map = self._headers_map() if self.balancer.policy == "hash" else None
        target = self.balancer.pick(self.proto.client_ip, headers_map, self.tried)
        if target is None:
            status = 503 if not self.tried else self.last_error
            self.respond_own(
                responses.error(status, close=self.body_pending()), status, self.body_pending()
            )
            return
        self.target = target
        self.tried.append(target)
        self.upstream_addr = target.address
        conn = pool.take_idle(target, self.balancer.upstream)
        if conn is not None:
            self._attach(conn)
            return
        self._open(target)

    def _open(self, target: TargetState) -> None:
        assert self.balancer is not None
        self.connecting = self.proto.loop.create_task(
            pool.open_connection(self.proto.loop, target, self.balancer.upstream)
        )
        self.connecting.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[pool.UpstreamConnection]) -> None:
        self.connecting = None
        if task.cancelled():
            return
        exc = task.exception()
        if self.finished:
            if exc is None:
                task.result().close()
            return
        if exc is not None:
            self._connect_failed(504 if isinstance(exc, TimeoutError) else 502)
            return
        self._attach(task.result())

    def _connect_failed(self, status: int) -> None:
        """No usable connection to the chosen target: another target, or an error."""
        assert self.target is not None and self.balancer is not None
        self.target.record_failure(time.monotonic())
        self.state.metrics.upstream_failure(self.balancer.upstream.id, self.target.address)
        self.last_error = status
        route = self.match.route if self.match is not None else None
        if (
            route is not None
            and len(self.tried) <= route.retries
            and self.method in IDEMPOTENT
            and self.body_received == self.pending_size
        ):
            self._connect()
            return
        self.respond_own(
            responses.error(status, close=self.body_pending()), status, self.body_pending()
        )

    def _attach(self, conn: pool.UpstreamConnection) -> None:
        assert self.balancer is not None and self.match is not None and self.target is not None
        if conn.closed or conn.transport is None or conn.transport.is_closing():
            # The upstream closed it between the connect and this callback: its
            # connection_lost has already come and gone, so nobody else would notice.
            self._connect_failed(502)
            return
        spec = self.balancer.upstream
        self.conn = conn
        self.target.begin()
        conn.start(self, spec.timeouts.read, head_only=self.method == "HEAD")
        route = self.match.route
        host = self.host_b if route.preserve_host else self.target.address_b
        headers = self.headers
        if self.expect is not None:
            # The router answered the expectation itself (like nginx, which drops it too).
            headers = [h for h in headers if h[0].lower() != b"expect"]
        head = fastpath.build_request_head(
            self.method_b,
            self.target_b,
            headers,
            host=host,
            client_ip=self.proto.client_ip_b,
            proto=self.proto.scheme,
            forwarded_host=self.host_b,
            edits=self.match.request_edits,
            upgrade=self.upgrade,
            content_length=self.content_length,
            chunked=self.chunked,
        )
        self.upstream_started = time.monotonic()
        conn.write(head)
        self.head_sent = True
        if self.pending:
            conn.write(b"".join(self.pending))
            self.pending.clear()
            self.pending_size = 0
            assert self.proto.gate is not None
            self.proto.gate.resume(PAUSE_BUFFER)
        if self.request_complete:
            if self.chunked:
                conn.write(b"0\r\n\r\n")
            conn.arm_read_timeout()
        if self.proto.write_paused:
            conn.pause_reading()
        else:
            conn.resume_reading()

    # -- request body from the client ----------------------------------------

    def client_body(self, data: bytes) -> None:
        self.body_received += len(data)
        limit = self.body_limit  # 0 until routed: the bytes wait in `pending`, bounded
        if limit and self.body_received > limit:
            if not self.response_started and self.proto.queue and self.proto.queue[0] is self:
                self._drop_upstream()
                self.respond_own(responses.error(413, close=True), 413, True)
            else:
                self.proto.abort()
            return
        if self.discard_body or self.finished:
            return
        framed = b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data
        conn = self.conn
        if conn is not None and self.head_sent:
            conn.write(framed)
        else:
            self.pending.append(framed)
            self.pending_size += len(data)
            if self.pending_size > BUFFER_LIMIT and self.proto.gate is not None:
                self.proto.gate.pause(PAUSE_BUFFER)

    def client_complete(self) -> None:
        self.request_complete = True
        conn = self.conn
        if conn is not None and self.head_sent and not self.finished:
            if self.chunked:
                conn.write(b"0\r\n\r\n")
            conn.arm_read_timeout()
        if self.response_done:
            self._finish()

    def client_broke(self, status: int = 400) -> None:
        """The request's body was malformed, too large or too slow: nothing more will come."""
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self._drop_upstream()
        self.request_complete = True
        if not (self.proto.queue and self.proto.queue[0] is self):
            self.error_status = status  # answered when its turn comes
        elif self.response_started:
            self._finish_broken()
        else:
            self.respond_own(responses.error(status, close=True), status, True)

    def client_gone(self) -> None:
        if not self.finished and not self.placeholder:
            self.status = self.status if self.response_done else 499
            self._log()
        self.finished = True
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self._drop_upstream()

    def client_pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def client_resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    # -- the router's own answer ---------------------------------------------

    def respond_own(self, data: bytes, status: int, close: bool) -> None:
        self.status = status
        self.response_started = True
        self.response_done = True
        if self.method == "HEAD":
            data = responses.head_only(data)
        self.bytes_sent = len(data)
        self.discard_body = True
        self.pending.clear()
        self.pending_size = 0
        if self.proto.gate is not None:
            self.proto.gate.resume(PAUSE_BUFFER)
        self.proto.write(data)
        if close:
            self.keep_alive = False
        self._finish()

    # -- the upstream's answer ------------------------------------------------

    def on_upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        if self.finished:
            return
        if status < 200 and status != 101:
            self.interim = True
            if status != 100 and self.version == "1.1":
                # 103 Early Hints and the like are relayed; 100 was ours to send.
                self.proto.write(
                    b"HTTP/1.1 %d %b\r\n%b\r\n"
                    % (status, reason, b"".join(b"%b: %b\r\n" % h for h in headers))
                )
            return
        assert self.match is not None and self.balancer is not None
        self.state.metrics.upstream_response(
            self.balancer.upstream.id, time.monotonic() - self.upstream_started
        )
        self.status = status
        self.upstream_keep_alive = keep_alive
        length: int | None = None
        upgrade: bytes | None = None
        upstream_chunked = False
        for name, value in headers:
            n = len(name)
            if n == 14 and name.lower() == b"content-length":
                try:
                    value_i = int(value)
                except ValueError:
                    value_i = -1
                if value_i < 0 or (length is not None and length != value_i):
                    self.on_upstream_error(502, "invalid Content-Length from upstream")
                    return
                length = value_i
            elif n == 17 and name.lower() == b"transfer-encoding":
                if upstream_chunked or value.strip(b" \t").lower() != b"chunked":
                    # A coding the router would drop (gzip, ...) or a list: like nginx,
                    # "upstream sent unknown Transfer-Encoding".
                    self.on_upstream_error(502, "unsupported Transfer-Encoding from upstream")
                    return
                upstream_chunked = True
            elif n == 7 and status == 101 and name.lower() == b"upgrade":
                upgrade = value
        no_body = self.method == "HEAD" or status in (204, 304) or status == 101
        # Neither length nor chunking: the upstream's close ends the body.
        self.upstream_eof_ends = not no_body and length is None and not upstream_chunked
        chunked = False
        # HTTP/1.0 keep-alive would need an explicit header on every answer: not worth it.
        client_keep_alive = self.keep_alive and self.request_complete and self.version == "1.1"
        if no_body or length is not None:
            pass
        elif self.version == "1.1":
            chunked = True  # re-chunk a close-delimited body so the connection survives
        else:
            client_keep_alive = False
        if status == 101:
            if self.upgrade is None or upgrade is None:
                self.on_upstream_error(502, "unexpected 101 from upstream")
                return
            client_keep_alive = True
        elif self.upgrade is not None:
            # The client's parser is past the upgrade point: no further request can be read.
            client_keep_alive = False
        if status in (204, 304) or (status < 200):
            length = None
        if self.state.shutting_down:
            client_keep_alive = False
        self.keep_alive = client_keep_alive
        self.response_chunked = chunked
        head = fastpath.build_response_head(
            status,
            reason,
            headers,
            edits=self.match.response_edits,
            keep_alive=client_keep_alive,
            upgrade=upgrade if status == 101 else None,
            content_length=length if status not in (204, 304) else None,
            chunked=chunked,
        )
        self.response_started = True
        self.bytes_sent += len(head)
        self.out.append(head)

    def on_upstream_body(self, data: bytes) -> None:
        if self.finished:
            return
        self.bytes_sent += len(data)
        if self.response_chunked:
            self.out.append(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.out.append(data)

    def on_upstream_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.finished or self.status == 101:
            return  # after a 101 the connection becomes the tunnel
        self._response_complete(self.upstream_keep_alive)

    def flush(self) -> None:
        """Write what one read from the upstream produced, in one system call."""
        out = self.out
        if out:
            self.flushed = True
            self.proto.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _response_complete(self, reusable: bool) -> None:
        if self.response_chunked:
            self.out.append(b"0\r\n\r\n")
        self.flush()
        self.response_done = True
        conn = self.conn
        self.conn = None
        gate = self.proto.gate
        if gate is not None and gate.reasons & PAUSE_UPSTREAM:
            # A full upstream write buffer paused the client; that upstream is done with us.
            gate.resume(PAUSE_UPSTREAM)
        target = self.target
        if target is not None:
            target.end()
            target.record_success()
        if conn is not None:
            assert self.balancer is not None
            if self.request_complete and reusable and not conn.closed:
                pool.release(conn, self.balancer.upstream)
            else:
                conn.handler = None
                conn.close()
        if self.request_complete:
            self._finish()
        else:
            # The upstream answered before reading the whole body; the head said close.
            self.keep_alive = False
            self._finish()

    def on_upstream_upgrade(self, rest: bytes) -> None:
        self.flush()
        if self.finished or self.status != 101:
            self.on_upstream_error(502, "upstream switched protocols unexpectedly")
            return
        self.tunnelling = True
        if rest:
            self.proto.write(rest)
        conn = self.conn
        assert conn is not None
        if self.tunnel_buffer:
            conn.write(b"".join(self.tunnel_buffer))
            self.tunnel_buffer.clear()
        if self.proto.gate is not None:
            self.proto.gate.resume(PAUSE_BUFFER)
        if self.tunnel_client_eof:
            self._tunnel_eof_to_upstream()

    def on_upstream_tunnel_data(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        self.proto.write(data)

    def on_upstream_error(self, status: int, message: str) -> None:
        if self.finished:
            return
        if self.flushed:
            self.flush()
        else:
            # Nothing of this response has reached the client: it gets a clean 502 instead.
            self.out.clear()
            self.response_started = False
            self.response_chunked = False
            self.bytes_sent = 0
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.handler = None
            conn.abort()
        if self.target is not None:
            self.target.end()
            self.target.record_failure(time.monotonic())
            if self.balancer is not None:
                self.state.metrics.upstream_failure(self.balancer.upstream.id, self.target.address)
        if self.response_started:
            self.status = self.status or status
            self._finish_broken()
        else:
            self.respond_own(responses.error(status, close=True), status, True)

    def on_upstream_lost(self, exc: Exception | None) -> None:
        if self.finished:
            return
        self.flush()
        conn, self.conn = self.conn, None
        target = self.target
        if self.tunnelling:
            if target is not None:
                target.end()
            self.response_done = True
            self._finish()
            return
        if self.response_started:
            if self.upstream_eof_ends and not self.response_done:
                # The close is how this body ends.
                self._response_complete(False)
            else:
                if target is not None:
                    target.end()
                self._finish_broken()
            return
        if target is not None:
            target.end()
        if (
            conn is not None
            and conn.reused
            and not conn.response_started
            and not self.stale_retry
            and self.method in IDEMPOTENT
            and self.content_length in (None, 0)
            and not self.chunked
            and target is not None
        ):
            # A pooled connection the upstream closed while it was idle: one fresh try.
            self.stale_retry = True
            self.head_sent = False
            self._open(target)
            return
        if target is not None:
            target.record_failure(time.monotonic())
            if self.balancer is not None:
                self.state.metrics.upstream_failure(self.balancer.upstream.id, target.address)
        self.respond_own(responses.error(502, close=True), 502, True)

    def on_upstream_pause_writing(self) -> None:
        if self.proto.gate is not None:
            self.proto.gate.pause(PAUSE_UPSTREAM)

    def on_upstream_resume_writing(self) -> None:
        if self.proto.gate is not None:
            self.proto.gate.resume(PAUSE_UPSTREAM)

    # -- tunnel (after a 101) ----------------------------------------------------

    def client_tunnel_data(self, data: bytes) -> None:
        if self.finished:
            self.proto.close()  # the upgrade was refused: these bytes have nowhere to go
            return
        if not data:
            return
        if self.tunnelling and self.conn is not None:
            self.conn.write(data)
        elif not self.finished:
            self.tunnel_buffer.append(data)
            if sum(map(len, self.tunnel_buffer)) > BUFFER_LIMIT and self.proto.gate is not None:
                self.proto.gate.pause(PAUSE_BUFFER)

    def client_tunnel_eof(self) -> bool:
        self.tunnel_client_eof = True
        if self.tunnelling:
            self._tunnel_eof_to_upstream()
        # Half-close: before the 101, the client still waits for the answer; after it, the
        # upstream still may send. Either way the connection stays open for reading our side.
        return True

    def _tunnel_eof_to_upstream(self) -> None:
        conn = self.conn
        if conn is not None and conn.transport is not None and conn.transport.can_write_eof():
            conn.transport.write_eof()

    # -- endings -----------------------------------------------------------------

    def _drop_upstream(self) -> None:
        if self.proto.gate is not None:
            self.proto.gate.resume(PAUSE_UPSTREAM)
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.handler = None
            conn.abort()
            if self.target is not None:
                self.target.end()

    def _finish_broken(self) -> None:
        """The response was cut short: the client can only learn that from a close."""
        self.keep_alive = False
        self._log()
        self.finished = True
        self.proto.abort()

    def _finish(self) -> None:
        if self.finished:
            return
        if not self.request_complete and self.keep_alive and not self.tunnelling:
            # Read (and drop) the rest of the body, then the connection can be reused.
            self.discard_body = True
            return
        self.finished = True
        self._log()
        keep_alive = self.keep_alive and self.request_complete and not self.tunnelling
        if self.tunnelling:
            self.proto.close()
        self.proto.cycle_done(self, keep_alive)

    def _log(self) -> None:
        duration = time.monotonic() - self.started
        state = self.state
        state.metrics.request_done(
            self.route_id, self.status, duration, self.body_received, self.bytes_sent
        )
        stats = state.stats
        if stats is not None:
            stats.record(self.route_id, self.status, duration, self.bytes_sent)
        access = state.access_log
        if access is None or self.placeholder:
            return
        referer = user_agent = ""
        for name, value in self.headers:
            if len(name) == 7 and name.lower() == b"referer":
                referer = value.decode("latin-1")
            elif len(name) == 10 and name.lower() == b"user-agent":
                user_agent = value.decode("latin-1")
        access.log(
            client=self.proto.client_ip,
            method=self.method,
            target=self.url.decode("latin-1"),
            version=self.version,
            status=self.status,
            bytes_sent=self.bytes_sent,
            bytes_received=self.body_received,
            referer=referer,
            user_agent=user_agent,
            route=self.route_id,
            upstream=self.upstream_addr,
            duration=duration,
        )
