"""An HTTPS upstream for the tests: answers every request with its name, on the shared loop."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from pathlib import Path

from integration.upstreams import UpstreamLoop

from .certs import Pair


def server_context(pair: Pair) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # A test upstream, not the router: a temp dir is fine for its key.
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        cert.write_text(pair.cert)
        key.write_text(pair.key)
        ctx.load_cert_chain(cert, key)
    return ctx


class TlsUpstream:
    """`HTTP/1.1 200` with body `name` for every request, keep-alive, over TLS."""

    def __init__(self, loop: UpstreamLoop, name: str, pair: Pair) -> None:
        self.loop = loop
        self.name = name
        self.ctx = server_context(pair)
        self.port = 0
        self.requests = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TlsUpstream:
        async def go() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx)
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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        body = self.name.encode()
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
