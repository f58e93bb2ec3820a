"""An HTTPS upstream for the tests: answers every request with its name, on the shared loop."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from pathlib import Path

from integration.upstreams import StreamServer, UpstreamLoop

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


class TlsUpstream(StreamServer):
    """`HTTP/1.1 200` with body `name` for every request, keep-alive, over TLS."""

    ENDS = (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError)

    def __init__(self, loop: UpstreamLoop, name: str, pair: Pair) -> None:
        super().__init__(loop, server_context(pair))
        self.name = name
        self.requests = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = self.name.encode()
        while True:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
