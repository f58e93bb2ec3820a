"""Upstream servers for the hardening tests, run on the integration suite's `UpstreamLoop`.

* `StrictUpstream` records every byte each connection received and parses it with llhttp's strict
  defaults, answering each complete request `200 ok`: a test can then say exactly which messages
  reached the upstream, and whether anything was left over that it could read as a second request.
* `BadUpstream` answers each request by the mode named in its path (`/mode/<name>`): bad framing,
  short body, extra bytes, hang, reset; it records which connection each request came on.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from dataclasses import dataclass, field
from typing import cast

import httptools

from integration.upstreams import UpstreamLoop

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Message:
    """One request as an upstream parsed it."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw_head: bytes

    def header_all(self, name: str) -> list[bytes]:
        lname = name.lower().encode()
        return [v for k, v in self.headers if k.lower() == lname]


@dataclass
class Parsed:
    """What a stream of request bytes holds: complete messages, and what follows the last."""

    messages: list[Message]
    leftover: bytes  # bytes after the last complete message (a partial or broken request)
    error: str | None


class _Collector:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        head = b"\r\n".join(b"%s: %s" % h for h in self.headers)
        self.messages.append(
            Message(
                self.parser.get_method().decode(),
                self.url.decode("latin-1"),
                list(self.headers),
                bytes(self.body),
                head,
            )
        )


def parse_requests(data: bytes) -> Parsed:
    """Split `data` into the requests a strict HTTP/1.1 server would read from it."""
    collector = _Collector()
    error: str | None = None
    consumed = 0
    # Fed byte-range by byte-range: the offset after each complete message is where the
    # leftover starts.
    for i in range(len(data)):
        before = len(collector.messages)
        try:
            collector.parser.feed_data(data[i : i + 1])
        except httptools.HttpParserUpgrade:
            consumed = i + 1
            break
        except httptools.HttpParserError as exc:
            error = str(exc)
            break
        if len(collector.messages) > before:
            consumed = i + 1
    return Parsed(collector.messages, data[consumed:], error)


class _StrictConn(asyncio.Protocol):
    def __init__(self, owner: StrictUpstream) -> None:
        self.owner = owner
        self.raw = bytearray()
        self.collector = _Collector()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.owner.conns.append(self.raw)

    def data_received(self, data: bytes) -> None:
        self.raw += data
        before = len(self.collector.messages)
        upgraded = False
        try:
            self.collector.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            upgraded = True
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()
            return
        assert self.transport is not None
        for msg in self.collector.messages[before:]:
            if msg.method == "HEAD":
                self.transport.write(OK_RESPONSE[: OK_RESPONSE.index(b"\r\n\r\n") + 4])
            else:
                self.transport.write(OK_RESPONSE)
        if upgraded:
            # The parser stops at an upgrade request: answered 200 like the rest, then closed
            # (a plain server that does not switch protocols).
            self.transport.close()


@dataclass
class StrictUpstream:
    """Records each connection's bytes exactly; answers every complete request `200 ok`."""

    loop: UpstreamLoop
    port: int = 0
    conns: list[bytearray] = field(default_factory=list)
    _server: asyncio.base_events.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> StrictUpstream:
        async def go() -> None:
            lp = asyncio.get_running_loop()
            self._server = await lp.create_server(lambda: _StrictConn(self), "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        self.loop.run(go())
        return self

    def stop(self) -> None:
        async def go() -> None:
            if self._server is not None:
                self._server.close()

        self.loop.run(go())

    def received(self) -> list[bytes]:
        """The bytes each connection received since `clear`, in the order they were accepted."""
        return self.loop.call(lambda: [bytes(c) for c in self.conns if c])

    def clear(self) -> None:
        """Forget what was received (pooled connections stay, between two requests)."""

        def go() -> None:
            for raw in self.conns:
                del raw[:]

        self.loop.call(go)


# -- the bad upstream --------------------------------------------------------------------------

# mode -> the whole answer, written at once (so it arrives in one read: nothing of it can have
# been sent on to the client before the router sees what is wrong).
ONE_WRITE: dict[str, bytes] = {
    "good": OK_RESPONSE,
    "cl_and_te": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    "two_lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "length_list": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
    "bad_chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
    "chunk_bare_lf": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n",
    "te_gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "obs_fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "extra": OK_RESPONSE + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nextra!",
    "no_content_extra": b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok",
    "garbage": b"NOT HTTP AT ALL\r\n\r\n",
}

# mode -> a good answer after interim responses (written at once): relayed, or not, correctly.
INTERIM: dict[str, bytes] = {
    "early_hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK_RESPONSE,
    "continue": b"HTTP/1.1 100 Continue\r\n\r\n" + OK_RESPONSE,
}

# mode -> (first write, second write): the test reads the first part at the client, then lets
# the second go (`BadUpstream.release`), so the router has already sent something on.
TWO_WRITES: dict[str, tuple[bytes, bytes]] = {
    "short_body": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcde", b""),
    "bad_chunk_later": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
        b"zz\r\n",
    ),
    "extra_later": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcde", b"fghijEXTRA"),
    "reset_mid_body": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcde", b""),
}


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class BadUpstream:
    """Answers by the mode in the request path; records (mode, connection id) per request."""

    loop: UpstreamLoop
    port: int = 0
    seen: list[tuple[str, int]] = field(default_factory=list)
    _server: asyncio.base_events.Server | None = None
    _release: asyncio.Event | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> BadUpstream:
        async def go() -> None:
            self._release = asyncio.Event()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        self.loop.run(go())
        return self

    def stop(self) -> None:
        async def go() -> None:
            if self._server is not None:
                self._server.close()

        self.loop.run(go())

    def requests(self) -> list[tuple[str, int]]:
        return self.loop.call(lambda: list(self.seen))

    def release(self) -> None:
        """Let a two-write mode send its second part."""
        assert self._release is not None
        self.loop.call(self._release.set)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._ids)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                target = head.split(b" ", 2)[1].decode()
                mode = target.rsplit("/", 1)[-1]
                self.seen.append((mode, conn_id))
                if not await self._answer(mode, reader, writer):
                    return
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _answer(
        self, mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection is done."""
        if mode in ONE_WRITE:
            writer.write(ONE_WRITE[mode])
            await writer.drain()
            return mode == "good"
        if mode in INTERIM:
            writer.write(INTERIM[mode])
            await writer.drain()
            return True
        if mode == "hang":
            await reader.read()  # until the router gives up and closes
            return False
        if mode == "reset":
            _reset(writer)
            return False
        if mode == "close":
            return False
        first, second = TWO_WRITES[mode]
        assert self._release is not None
        self._release.clear()
        writer.write(first)
        await writer.drain()
        await self._release.wait()
        if mode == "reset_mid_body":
            _reset(writer)
            return False
        writer.write(second)
        await writer.drain()
        return False
