"""Fixtures for the L4 tests: the integration suite's loop and core processes, TCP servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from integration.conftest import start_core, upstream_loop, upstreams
from integration.upstreams import UpstreamLoop

from .servers import TcpServer

__all__ = ["start_core", "upstream_loop", "upstreams"]

TcpFactory = Callable[..., TcpServer]


@pytest.fixture
def tcp(upstream_loop: UpstreamLoop) -> Iterator[TcpFactory]:
    servers: list[TcpServer] = []

    def make(mode: str = "echo", size: int = 0) -> TcpServer:
        server = TcpServer(upstream_loop, mode, size).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
