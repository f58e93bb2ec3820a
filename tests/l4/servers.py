"""TCP upstreams for the L4 tests, on the integration suite's shared upstream loop."""

from __future__ import annotations

import asyncio
import contextlib

from integration.upstreams import UpstreamLoop


class TcpServer:
    """A TCP server: `echo` sends back what it reads (with a greeting first, as a database
    does), `source` sends `size` bytes as fast as the peer takes them, then closes."""

    def __init__(self, loop: UpstreamLoop, mode: str = "echo", size: int = 0) -> None:
        self.loop = loop
        self.mode = mode
        self.size = size
        self.port = 0
        self.connections = 0
        self.sent = 0  # source: bytes handed to the kernel so far
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpServer:
        async def go() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
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
        self.connections += 1
        try:
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
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
