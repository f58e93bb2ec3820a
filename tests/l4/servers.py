"""TCP upstreams for the L4 tests, on the integration suite's shared upstream loop."""

from __future__ import annotations

import asyncio

from integration.upstreams import StreamServer, UpstreamLoop


class TcpServer(StreamServer):
    """A TCP server: `echo` sends back what it reads (with a greeting first, as a database
    does), `source` sends `size` bytes as fast as the peer takes them, then closes."""

    def __init__(self, loop: UpstreamLoop, mode: str = "echo", size: int = 0) -> None:
        super().__init__(loop)
        self.mode = mode
        self.size = size
        self.connections = 0
        self.sent = 0  # source: bytes handed to the kernel so far

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "echo":
            writer.write(b"READY\n")
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        else:
            block = bytes(range(256)) * 256  # 64 KiB
            left = self.size
            while left > 0:
                chunk = block[: min(left, len(block))]
                writer.write(chunk)
                await writer.drain()  # blocks while the router's side does not read
                left -= len(chunk)
                self.sent += len(chunk)
