"""The `--admin` listener: `GET /healthz` and `GET /metrics` over a deliberately tiny HTTP/1.1 server.

It shares nothing with the proxy's client protocol on purpose: a scrape must keep working when the
data plane is the thing misbehaving, and this server only needs GET/HEAD without bodies. Every
answer is computed synchronously while the request is parsed, so pipelined requests are answered
in order without any queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import cast

import httptools

from minirouter.core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from minirouter.core.metrics import Metrics
from minirouter.core.responses import reason

__all__ = ["HEADER_TIMEOUT", "MAX_CONNECTIONS", "MAX_HEAD", "start_admin"]

log = logging.getLogger("minirouter.admin")

MAX_HEAD = 16 * 1024  # bytes of request line + headers
HEADER_TIMEOUT = 10.0  # seconds to deliver a whole request; also the keep-alive idle limit
LINGER = 2.0  # seconds a closing connection waits for the client to close its side
# Open admin connections; beyond it a new one is answered 503 and closed, so a flood of them
# cannot take memory or file descriptors from the data plane (scrapers need one or two).
MAX_CONNECTIONS = 64

HealthFn = Callable[[], dict[str, object]]


def _path_of(url: bytes) -> bytes:
    """The path of a request target: origin form, absolute form, or (CONNECT) authority form."""
    if url.startswith(b"/"):
        return url.split(b"?", 1)[0].split(b"#", 1)[0]
    try:
        return httptools.parse_url(url).path or b"/"
    except httptools.HttpParserInvalidURLError:
        return url  # "host:port" or "*": matches no endpoint, so the answer is 404


class _AdminProtocol(asyncio.Protocol):
    """One admin client connection."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics,
        health: HealthFn,
        header_timeout: float,
        live: set[_AdminProtocol] | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.loop = loop
        self.live: set[_AdminProtocol] = set() if live is None else live
        self.max_connections = max_connections
        self.metrics = metrics
        self.health = health
        self.header_timeout = header_timeout
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closing = False
        self._timer: asyncio.TimerHandle | None = None
        # Per request:
        self._url = b""
        self._head_size = 0  # exact: URL and header bytes as parsed
        self._raw_pending = 0  # bytes received since the current head started, not yet complete
        self._in_request = False  # between on_message_begin and on_message_complete
        self._headers_done = False
        self._content_length = 0
        self._force_close = False

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop: not a subclass
        self.transport = transport
        if len(self.live) >= self.max_connections:
            self._fail(503)
            return
        self.live.add(self)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if not self._headers_done:
            # Counted before parsing because httptools keeps an unfinished header line in its own
            # buffer: without this a client could grow that buffer without limit.
            self._raw_pending += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade/CONNECT: the request was answered (with Connection: close); nothing after it
            # is HTTP we could parse.
            self._close()
            return
        except httptools.HttpParserError:
            self._fail(400)
            return
        if not self.closing and not self._headers_done and self._raw_pending > MAX_HEAD:
            self._fail(431)

    def eof_received(self) -> bool | None:
        return None  # close our side too; every complete request has been answered already

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_timer()
        self.live.discard(self)
        self.transport = None

    def pause_writing(self) -> None:
        # A client that pipelines requests but does not read the answers: stop reading its
        # requests rather than buffering answers without bound.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # -- httptools callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_request = True
        self._url = b""
        self._head_size = 0
        self._content_length = 0
        self._force_close = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if name.lower() == b"content-length":
            # llhttp has already rejected a malformed or conflicting value.
            self._content_length = int(value)

    def on_headers_complete(self) -> None:
        if self.closing:
            return
        self._headers_done = True
        if self._head_size > MAX_HEAD:
            self._fail(431)
        elif self._content_length > 0:
            # No endpoint takes a body; refuse before the client sends it.
            self._fail(413)
        elif self.parser.should_upgrade():
            self._force_close = True

    def on_body(self, body: bytes) -> None:
        if body and not self.closing:
            self._fail(413)  # a chunked body that is not empty

    def on_message_complete(self) -> None:
        if self.closing:
            return
        self._in_request = False
        self._headers_done = False
        self._raw_pending = 0
        keep_alive = bool(self.parser.should_keep_alive()) and not self._force_close
        http10 = self.parser.get_http_version() == "1.0"
        method = self.parser.get_method()
        self._respond(method, _path_of(self._url), keep_alive, http10)
        if keep_alive:
            self._arm_timer()
        else:
            self._close()

    # -- answers ---------------------------------------------------------------

    def _respond(self, method: bytes, path: bytes, keep_alive: bool, http10: bool) -> None:
        if path == b"/healthz":
            handler: Callable[[], tuple[int, str, bytes]] = self._healthz
        elif path == b"/metrics":
            handler = self._metrics
        else:
            self._write(
                404, "text/plain; charset=utf-8", b"not found\n", method, keep_alive, http10
            )
            return
        if method not in (b"GET", b"HEAD"):
            self._write(
                405,
                "text/plain; charset=utf-8",
                b"method not allowed\n",
                method,
                keep_alive,
                http10,
                extra=b"Allow: GET, HEAD\r\n",
            )
            return
        try:
            status, content_type, body = handler()
        except Exception:
            log.exception("admin endpoint %s failed", path.decode("latin-1"))
            status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        self._write(status, content_type, body, method, keep_alive, http10)

    def _healthz(self) -> tuple[int, str, bytes]:
        doc: dict[str, object] = {"status": "ok", **self.health()}
        # A health() that reports trouble makes the endpoint fail too, so that a load balancer or
        # orchestrator probing it (they look at the status code) takes this router out.
        status = 200 if doc.get("status") == "ok" else 503
        body = json.dumps(doc, default=str, separators=(",", ":")).encode("utf-8") + b"\n"
        return status, "application/json", body

    def _metrics(self) -> tuple[int, str, bytes]:
        return 200, METRICS_CONTENT_TYPE, self.metrics.render()

    def _write(
        self,
        status: int,
        content_type: str,
        body: bytes,
        method: bytes,
        keep_alive: bool,
        http10: bool,
        extra: bytes = b"",
    ) -> None:
        if self.transport is None:
            return
        head = (
            f"HTTP/1.1 {status} {reason(status)}\r\n"
            "Server: minirouter\r\n"
            "Cache-Control: no-store\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode("ascii") + extra
        if not keep_alive:
            head += b"Connection: close\r\n"
        elif http10:
            head += b"Connection: keep-alive\r\n"  # HTTP/1.0 closes unless told otherwise
        head += b"\r\n"
        self.transport.write(head if method == b"HEAD" else head + body)

    def _fail(self, status: int) -> None:
        """Answer a request we cannot serve with `status` and close the connection."""
        if self.closing:
            return
        text = f"{status} {reason(status)}\n".encode("ascii")
        self._write(status, "text/plain; charset=utf-8", text, b"GET", False, False)
        self._close()

    def _close(self) -> None:
        """Close after what was written, without letting a reset destroy our last answer.

        Closing a socket that still receives data (the rest of a rejected request, pipelined
        requests after `Connection: close`) makes the kernel send RST, and the client may then
        lose the response it had not read yet. So, as nginx's lingering close does: send FIN,
        discard whatever still arrives, and close when the client does or after LINGER seconds.
        """
        if self.closing:
            return
        self.closing = True
        self._cancel_timer()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()  # sent after the buffered response
            transport.resume_reading()  # to see the client's EOF even if writing had paused us
            self._timer = self.loop.call_later(LINGER, transport.close)
        else:
            transport.close()

    # -- timer -----------------------------------------------------------------

    def _arm_timer(self) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(self.header_timeout, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self.closing:
            return
        if self._in_request or self._raw_pending:
            self._fail(408)  # a request was started but not finished in time
        else:
            self._close()  # an idle keep-alive connection: just let it go


async def start_admin(
    host: str,
    port: int,
    metrics: Metrics,
    health: HealthFn,
    *,
    reuse_port: bool = False,
    header_timeout: float = HEADER_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> asyncio.base_events.Server:
    """Listen on host:port and serve /healthz and /metrics until the returned server is closed."""
    loop = asyncio.get_running_loop()
    live: set[_AdminProtocol] = set()
    return await loop.create_server(
        lambda: _AdminProtocol(loop, metrics, health, header_timeout, live, max_connections),
        host,
        port,
        reuse_port=reuse_port or None,
    )
