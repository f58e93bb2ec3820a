"""Real upstream servers for the integration tests, run in the test process.

Every server listens on 127.0.0.1 and lives on one asyncio loop that runs in a background thread
(`UpstreamLoop`). Tests talk to them from the main thread through thread-safe helpers.

`HttpUpstream` is a small hand-written HTTP/1.1 server (no framework, so that it sees exactly the
bytes the router sends). By default it answers every request with a JSON echo describing what it
received; its `mode` and per-request control headers change that:

    mode "echo"              JSON echo (default)
    mode "hang"              read the request, never answer (until the peer closes)
    mode "close"             read the request, close without answering
    mode "close_mid"         send a head promising 100000 bytes, send 1000, close
    mode "close_mid_chunked" send a chunked head and one chunk, close without the last chunk
    mode "garbage"           answer with bytes that are not HTTP
    mode "close_delimited"   answer without Content-Length or chunked; the close ends the body
                             (X-Download bytes of the pattern, default 100000)

    X-Delay: <seconds>       wait before answering
    X-Pause-Body: <seconds>  wait before reading the request body
    X-Status: <code>         answer with this status
    X-Download: <n>          answer with n bytes of `pattern_bytes` (streamed)
    X-Chunked-Response: 1    use chunked framing for the answer
    X-Drip: <n>              send the head at once, then n pieces of 1000 bytes,
                             one every X-Drip-Interval seconds (default 0.3)
    X-Set-Response-Header: <name>: <value>   (repeatable) add a header to the answer

`Expect: 100-continue` is answered with a 100 before the body is read.
`GET <health_path>` is counted in `health_checks` (not in `requests`) and answered with
`health_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import websockets.asyncio.server as ws_server
from websockets.exceptions import ConnectionClosed

T = TypeVar("T")

PATTERN_BLOCK_SIZE = 1 << 20


def _make_pattern_block() -> bytes:
    # Deterministic, not compressible, no repeats inside one block.
    out = bytearray()
    counter = 0
    while len(out) < PATTERN_BLOCK_SIZE:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:PATTERN_BLOCK_SIZE])


PATTERN_BLOCK = _make_pattern_block()


def pattern_chunks(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """Yield `total` bytes of the deterministic pattern in pieces of at most `chunk` bytes."""
    offset = 0
    while offset < total:
        start = offset % PATTERN_BLOCK_SIZE
        n = min(chunk, total - offset, PATTERN_BLOCK_SIZE - start)
        yield PATTERN_BLOCK[start : start + n]
        offset += n


def pattern_sha256(total: int) -> str:
    h = hashlib.sha256()
    for piece in pattern_chunks(total, 1 << 20):
        h.update(piece)
    return h.hexdigest()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UpstreamLoop:
    """An asyncio loop in a daemon thread, hosting every upstream server of the session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="upstream-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 15.0) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class RecordedRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body_len: int
    body_sha256: str
    chunked: bool
    conn_id: int
    conn_seq: int

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class _BadRequest(Exception):
    pass


class _Conn:
    """Reads from a StreamReader while recording the raw bytes (capped)."""

    RAW_CAP = 1 << 20

    def __init__(self, reader: asyncio.StreamReader, raw: bytearray) -> None:
        self.reader = reader
        self.raw = raw

    def _record(self, data: bytes) -> None:
        room = self.RAW_CAP - len(self.raw)
        if room > 0:
            self.raw += data[:room]

    async def readuntil(self, sep: bytes) -> bytes:
        data = await self.reader.readuntil(sep)
        self._record(data)
        return data

    async def readexactly(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self._record(data)
        return data

    async def read(self, n: int) -> bytes:
        data = await self.reader.read(n)
        self._record(data)
        return data


@dataclass
class HttpUpstream:
    loop: UpstreamLoop
    name: str
    port: int = 0
    mode: str = "echo"
    delay: float = 0.0
    health_path: str = "/healthz"
    health_status: int = 200
    keepalive: bool = True  # False: answer with "Connection: close" and close
    idle_close: float = 0.0  # > 0: close a keep-alive connection idle for this long
    # observations (written on the loop thread, read from the test thread)
    connections: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    health_checks: int = 0
    raw: dict[int, bytearray] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    closed_conns: set[int] = field(default_factory=set)
    _server: asyncio.base_events.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> HttpUpstream:
        async def go() -> None:
            self._server = await asyncio.start_server(
                self._handle,
                "127.0.0.1",
                self.port,
                reuse_address=True,
                limit=1 << 20,
                backlog=512,
            )
            self.port = self._server.sockets[0].getsockname()[1]

        self.loop.run(go())
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection (the port then refuses connections)."""

        async def go() -> None:
            server, self._server = self._server, None
            if server is not None:
                server.close()
                await server.wait_closed()
            for w in list(self._writers):
                w.close()
            for w in list(self._writers):
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            self._writers.clear()

        self.loop.run(go())

    # -- observations ----------------------------------------------------------------------
    def snapshot(self) -> list[RecordedRequest]:
        return self.loop.call(lambda: list(self.requests))

    def conn_ids_with(self, marker: bytes) -> list[int]:
        """Ids of the connections whose received bytes contain `marker`."""
        return self.loop.call(lambda: [i for i, raw in self.raw.items() if marker in raw])

    def is_closed(self, conn_id: int) -> bool:
        return self.loop.call(lambda: conn_id in self.closed_conns)

    def open_connections(self) -> int:
        return self.loop.call(lambda: len(self._writers))

    def request_count(self) -> int:
        return self.loop.call(lambda: len(self.requests))

    def raw_bytes(self) -> bytes:
        return self.loop.call(lambda: b"".join(bytes(v) for _, v in sorted(self.raw.items())))

    def reset(self) -> None:
        def go() -> None:
            self.requests.clear()
            self.raw.clear()
            self.connections = 0
            self.health_checks = 0
            self.max_in_flight = 0

        self.loop.call(go)

    # -- serving ---------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn_id = next(self._ids)
        self.connections += 1
        raw = self.raw.setdefault(conn_id, bytearray())
        conn = _Conn(reader, raw)
        seq = 0
        try:
            while True:
                try:
                    req = await self._read_request(conn, conn_id, seq, writer)
                except (asyncio.IncompleteReadError, ConnectionError, _BadRequest):
                    return
                except asyncio.LimitOverrunError:
                    return
                if req is None:
                    return
                seq += 1
                keep = await self._respond(req, conn, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            self.closed_conns.add(conn_id)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(
        self, conn: _Conn, conn_id: int, seq: int, writer: asyncio.StreamWriter
    ) -> RecordedRequest | None:
        try:
            if self.idle_close:
                try:
                    head = await asyncio.wait_for(conn.readuntil(b"\r\n\r\n"), self.idle_close)
                except TimeoutError:
                    return None
            else:
                head = await conn.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None
            raise
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _BadRequest(lines[0])
        method, target, version = parts
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(line)
            headers.append((name, value.strip()))
        lower = {k.lower(): v for k, v in headers}
        if lower.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        pause = float(lower.get("x-pause-body", 0) or 0)
        if pause:
            await asyncio.sleep(pause)  # let the sender run into flow control
        h = hashlib.sha256()
        body_len = 0
        chunked = "chunked" in lower.get("transfer-encoding", "").lower()
        if chunked:
            while True:
                size_line = await conn.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers
                    while (await conn.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                remaining = size
                while remaining:
                    piece = await conn.readexactly(min(remaining, 256 * 1024))
                    h.update(piece)
                    remaining -= len(piece)
                body_len += size
                if await conn.readexactly(2) != b"\r\n":
                    raise _BadRequest("chunk")
        elif "content-length" in lower:
            remaining = int(lower["content-length"])
            while remaining:
                piece = await conn.readexactly(min(remaining, 256 * 1024))
                h.update(piece)
                remaining -= len(piece)
                body_len += len(piece)
        return RecordedRequest(
            method=method,
            target=target,
            version=version,
            headers=headers,
            body_len=body_len,
            body_sha256=h.hexdigest(),
            chunked=chunked,
            conn_id=conn_id,
            conn_seq=seq,
        )

    async def _respond(
        self, req: RecordedRequest, conn: _Conn, writer: asyncio.StreamWriter
    ) -> bool:
        if req.method == "GET" and req.path == self.health_path:
            self.health_checks += 1
            body = b"healthy" if self.health_status < 400 else b"unhealthy"
            writer.write(
                f"HTTP/1.1 {self.health_status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return True

        self.requests.append(req)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._respond_inner(req, conn, writer)
        finally:
            self.in_flight -= 1

    async def _respond_inner(
        self, req: RecordedRequest, conn: _Conn, writer: asyncio.StreamWriter
    ) -> bool:
        mode = self.mode
        if mode == "hang":
            while await conn.read(65536):
                pass
            return False
        if mode == "close":
            return False
        delay = self.delay + float(req.header("X-Delay") or 0)
        if delay:
            await asyncio.sleep(delay)
        if mode == "garbage":
            writer.write(b"THIS IS NOT HTTP\r\n\r\n")
            await writer.drain()
            return False
        if mode == "close_delimited":
            # no Content-Length, no chunked: the body ends when the connection closes
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            for piece in pattern_chunks(int(req.header("X-Download") or 100_000)):
                writer.write(piece)
                await writer.drain()
            return False
        drip = int(req.header("X-Drip") or 0)
        if drip:
            interval = float(req.header("X-Drip-Interval") or 0.3)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (drip * 1000))
            for i in range(drip):
                await writer.drain()
                await asyncio.sleep(interval)
                writer.write(bytes([97 + i % 26]) * 1000)
            await writer.drain()
            return True
        if mode == "close_mid":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            return False
        if mode == "close_mid_chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"x" * 1000
            )
            writer.write(b"\r\n")
            await writer.drain()
            return False

        status = int(req.header("X-Status") or 200)
        extra = [
            tuple(p.strip() for p in v.split(":", 1))
            for v in req.header_all("X-Set-Response-Header")
        ]
        conn_close = "close" in (req.header("Connection") or "").lower()
        keep = self.keepalive and not conn_close and req.version == "HTTP/1.1"
        head_lines = [
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Status'}",
            f"Server: upstream-{self.name}",
            f"X-Upstream: {self.name}",
        ]
        head_lines += [f"{k}: {v}" for k, v in extra]
        if not keep:
            head_lines.append("Connection: close")
        download = req.header("X-Download")
        chunked_resp = req.header("X-Chunked-Response") == "1"
        if download is not None:
            total = int(download)
            head_lines.append("Content-Type: application/octet-stream")
            if chunked_resp:
                head_lines.append("Transfer-Encoding: chunked")
            else:
                head_lines.append(f"Content-Length: {total}")
            writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1"))
            if req.method != "HEAD":
                for piece in pattern_chunks(total):
                    if chunked_resp:
                        writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    else:
                        writer.write(piece)
                    await writer.drain()
                if chunked_resp:
                    writer.write(b"0\r\n\r\n")
            await writer.drain()
            return keep

        body = json.dumps(
            {
                "name": self.name,
                "method": req.method,
                "target": req.target,
                "path": req.path,
                "version": req.version,
                "headers": req.headers,
                "body_len": req.body_len,
                "body_sha256": req.body_sha256,
                "chunked": req.chunked,
                "conn_id": req.conn_id,
                "conn_seq": req.conn_seq,
            }
        ).encode()
        no_body = req.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        head_lines.append("Content-Type: application/json")
        if status != 204 and not (100 <= status < 200):
            if chunked_resp and not no_body:
                head_lines.append("Transfer-Encoding: chunked")
            else:
                head_lines.append(f"Content-Length: {len(body)}")
        out = ("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1")
        if not no_body:
            if chunked_resp:
                half = len(body) // 2
                for piece in (body[:half], body[half:]):
                    out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                out += b"0\r\n\r\n"
            else:
                out += body
        writer.write(out)
        await writer.drain()
        return keep


@dataclass
class WebSocketUpstream:
    """A WebSocket echo: greets with "hello from <name>", then echoes every message as it came."""

    loop: UpstreamLoop
    name: str
    port: int = 0
    handshakes: list[list[tuple[str, str]]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    _server: ws_server.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> WebSocketUpstream:
        async def handler(ws: ws_server.ServerConnection) -> None:
            req = ws.request
            assert req is not None
            self.handshakes.append([(k, v) for k, v in req.headers.raw_items()])
            self.paths.append(req.path)
            try:
                await ws.send(f"hello from {self.name}")
                async for message in ws:
                    await ws.send(message)
            except ConnectionClosed:
                pass

        async def go() -> None:
            self._server = await ws_server.serve(
                handler, "127.0.0.1", self.port, compression=None, ping_interval=None
            )
            self.port = next(iter(self._server.sockets)).getsockname()[1]

        self.loop.run(go())
        return self

    def stop(self) -> None:
        async def go() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None

        self.loop.run(go())


class UpstreamSet:
    """Upstreams created for one test (or module); `close()` stops them all."""

    def __init__(self, loop: UpstreamLoop) -> None:
        self.loop = loop
        self._http: list[HttpUpstream] = []
        self._ws: list[WebSocketUpstream] = []

    def http(self, name: str, **kwargs: Any) -> HttpUpstream:
        up = HttpUpstream(self.loop, name, **kwargs).start()
        self._http.append(up)
        return up

    def websocket(self, name: str) -> WebSocketUpstream:
        up = WebSocketUpstream(self.loop, name).start()
        self._ws.append(up)
        return up

    def close(self) -> None:
        for up in self._http:
            if up.running:
                up.stop()
        for ws in self._ws:
            ws.stop()


class BlackholeListener:
    """A listening socket whose accept queue is full: connecting to it hangs (connect timeout)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port: int = self.sock.getsockname()[1]
        self._fillers: list[socket.socket] = []
        for _ in range(8):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(0.3)
            try:
                c.connect(("127.0.0.1", self.port))
            except (TimeoutError, OSError):
                c.close()
                break
            self._fillers.append(c)
        else:  # pragma: no cover - kernel behaviour changed
            raise RuntimeError("could not fill the accept queue")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        for c in self._fillers:
            c.close()
        self.sock.close()


class StreamServer:
    """A server on the shared upstream loop, one `serve` task per connection (asyncio streams,
    optionally TLS); `stop` closes the listener and every connection still open. Subclasses
    write `serve`; the exceptions in `ENDS` are how a peer ends a connection, not failures."""

    ENDS: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(self, loop: UpstreamLoop, ssl_context: ssl.SSLContext | None = None) -> None:
        self.loop = loop
        self.port = 0
        self._ssl = ssl_context
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self: _S) -> _S:
        async def go() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
            self.port = self._server.sockets[0].getsockname()[1]

        self.loop.run(go())
        return self

    def stop(self) -> None:
        async def go() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

        self.loop.run(go())

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self.serve(reader, writer)
        except self.ENDS:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


_S = TypeVar("_S", bound=StreamServer)
