"""core.admin over real sockets on 127.0.0.1 (under asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from minirouter.core.admin import MAX_HEAD, start_admin
from minirouter.core.metrics import Metrics

Runner = Callable[[Coroutine[Any, Any, None]], None]
Response = tuple[int, dict[str, str], bytes]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def _run(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(coro)

    return _run


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, head_only: bool = False) -> Response:
        async with asyncio.timeout(5):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            version, status, _ = lines[0].split(" ", 2)
            assert version == "HTTP/1.1"
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    assert name.lower() not in headers
                    headers[name.lower()] = value.strip()
            length = int(headers["content-length"])
            body = b"" if head_only else await self.reader.readexactly(length)
        return int(status), headers, body

    async def closed_by_server(self) -> bool:
        """True if the server closes the connection (EOF) within a few seconds."""
        async with asyncio.timeout(5):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def get(path: str, extra: str = "", method: str = "GET", version: str = "1.1") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: admin\r\n{extra}\r\n".encode()


Body = Callable[[int, Metrics], Awaitable[None]]


async def serve(
    body: Body,
    health: Callable[[], dict[str, object]] | None = None,
    **kw: Any,
) -> None:
    metrics = Metrics()
    metrics.request_done("r", 200, 0.01, 10, 20)
    metrics.set_revision(7)
    server = await start_admin(
        "127.0.0.1", 0, metrics, health or (lambda: {"revision": 7, "workers": 2}), **kw
    )
    try:
        port = server.sockets[0].getsockname()[1]
        await body(port, metrics)
    finally:
        server.close()
        await server.wait_closed()
        # Open connections outlive server.close(); the clients have closed theirs, so give the
        # server side the few loop iterations it needs to see that and close too.
        await asyncio.sleep(0.05)


def test_healthz_and_metrics(run: Runner) -> None:
    async def body(port: int, metrics: Metrics) -> None:
        c = await Client.connect(port)
        try:
            await c.send(get("/healthz"))
            status, headers, data = await c.response()
            assert status == 200
            assert headers["content-type"] == "application/json"
            assert json.loads(data) == {"status": "ok", "revision": 7, "workers": 2}

            await c.send(get("/metrics?format=text"))
            status, headers, data = await c.response()
            assert status == 200
            assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert data == metrics.render()
            assert b'minirouter_requests_total{route="r",status="200"} 1\n' in data
            assert b"minirouter_config_revision 7\n" in data
        finally:
            await c.close()

    run(serve(body))


def test_keep_alive_sequential_and_pipelined(run: Runner) -> None:
    async def body(port: int, metrics: Metrics) -> None:
        c = await Client.connect(port)
        try:
            await c.send(get("/healthz"))
            first = await c.response()
            assert "connection" not in first[1]
            await c.send(get("/healthz"))
            assert (await c.response())[0] == 200
            # Three pipelined in one write, answered in order; the last one closes.
            await c.send(get("/metrics") + get("/nope") + get("/healthz", "Connection: close\r\n"))
            assert (await c.response())[0] == 200
            assert (await c.response())[0] == 404
            status, headers, _ = await c.response()
            assert status == 200 and headers["connection"] == "close"
            assert await c.closed_by_server()
        finally:
            await c.close()

    run(serve(body))


def test_head_has_length_but_no_body(run: Runner) -> None:
    async def body(port: int, metrics: Metrics) -> None:
        c = await Client.connect(port)
        try:
            await c.send(get("/metrics", method="HEAD"))
            status, headers, _ = await c.response(head_only=True)
            assert status == 200
            assert int(headers["content-length"]) == len(metrics.render())
            # If a body had been sent, it would now be read as the next status line.
            await c.send(get("/healthz"))
            status, _, data = await c.response()
            assert status == 200 and json.loads(data)["status"] == "ok"
        finally:
            await c.close()

    run(serve(body))


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (get("/"), 404),
        (get("/healthz/extra"), 404),
        (get("/metrics", method="POST", extra="Content-Length: 0\r\n"), 405),
        (get("/healthz", method="DELETE"), 405),
        (get("/nope", method="POST", extra="Content-Length: 0\r\n"), 404),
    ],
)
def test_not_found_and_method_not_allowed_keep_the_connection(
    run: Runner, request_bytes: bytes, status: int
) -> None:
    async def body(port: int, metrics: Metrics) -> None:
        c = await Client.connect(port)
        try:
            await c.send(request_bytes)
            got, headers, _ = await c.response()
            assert got == status
            if status == 405:
                assert headers["allow"] == "GET, HEAD"
            await c.send(get("/healthz"))
            assert (await c.response())[0] == 200
        finally:
            await c.close()

    run(serve(body))


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"THIS IS NOT HTTP\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (get("/healthz", "Content-Length: 5\r\n") + b"hello", 413),
        (get("/healthz", "Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n", 413),
        (get("/healthz", "X-Big: " + "a" * MAX_HEAD + "\r\n"), 431),
        (get("/healthz", "X-Big: " + "a" * MAX_HEAD), 431),  # never finished
    ],
)
def test_bad_requests_are_answered_and_closed(
    run: Runner, request_bytes: bytes, status: int
) -> None:
    async def body(port: int, metrics: Metrics) -> None:
        c = await Client.connect(port)
        try:
            await c.send(request_bytes)
            got, headers, _ = await c.response()
            assert got == status
            assert headers["connection"] == "close"
            assert await c.closed_by_server()
        finally:
            await c.close()

    run(serve(body))


def test_head_limit_applies_to_a_head_sent_in_pieces(run: Runner) -> None:
    async def body(port: int, metrics: Metrics) -> None:
        c = await Client.connect(port)
        try:
            await c.send(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            for _ in range(MAX_HEAD // 1024):  # one header line that never ends
                await c.send(b"b" * 1024)
                await asyncio.sleep(0.002)  # separate reads on the server side
            status, _, _ = await c.response()
            assert status == 431
            assert await c.closed_by_server()
        finally:
            await c.close()

    run(serve(body))


def test_http10(run: Runner) -> None:
    async def body(port: int, metrics: Metrics) -> None:
        c = await Client.connect(port)
        try:
            await c.send(get("/healthz", "Connection: keep-alive\r\n", version="1.0"))
            status, headers, _ = await c.response()
            assert status == 200 and headers["connection"] == "keep-alive"
            await c.send(get("/healthz", version="1.0"))
            status, headers, _ = await c.response()
            assert status == 200 and headers["connection"] == "close"
            assert await c.closed_by_server()
        finally:
            await c.close()

    run(serve(body))


def test_header_timeout(run: Runner) -> None:
    async def body(port: int, metrics: Metrics) -> None:
        partial = await Client.connect(port)
        idle = await Client.connect(port)
        try:
            await idle.send(get("/healthz"))
            assert (await idle.response())[0] == 200
            await partial.send(b"GET /healthz HTTP/1.1\r\nHost: a")
            status, headers, _ = await partial.response()
            assert status == 408 and headers["connection"] == "close"
            assert await partial.closed_by_server()
            # A keep-alive connection left idle is closed without an answer.
            assert await idle.closed_by_server()
        finally:
            await partial.close()
            await idle.close()

    run(serve(body, header_timeout=0.2))


def test_health_failures_show_in_the_status_code(run: Runner) -> None:
    state: dict[str, object] = {"status": "degraded", "reason": "store unreachable"}

    def health() -> dict[str, object]:
        if state.get("raise"):
            raise RuntimeError("boom")
        return dict(state)

    async def body(port: int, metrics: Metrics) -> None:
        c = await Client.connect(port)
        try:
            await c.send(get("/healthz"))
            status, _, data = await c.response()
            assert status == 503
            assert json.loads(data) == {"status": "degraded", "reason": "store unreachable"}
            state["raise"] = True
            await c.send(get("/healthz"))
            assert (await c.response())[0] == 500
            await c.send(get("/metrics"))  # the connection survives the failure
            assert (await c.response())[0] == 200
        finally:
            await c.close()

    run(serve(body, health=health))


def test_reuse_port_allows_two_listeners(run: Runner) -> None:
    async def main() -> None:
        metrics = Metrics()
        first = await start_admin("127.0.0.1", 0, metrics, dict, reuse_port=True)
        port = first.sockets[0].getsockname()[1]
        second = await start_admin("127.0.0.1", port, metrics, dict, reuse_port=True)
        try:
            first.close()
            await first.wait_closed()
            c = await Client.connect(port)  # now served by the second listener
            try:
                await c.send(get("/healthz"))
                assert (await c.response())[0] == 200
            finally:
                await c.close()
        finally:
            second.close()
            await second.wait_closed()
            await asyncio.sleep(0.05)

    run(main())
