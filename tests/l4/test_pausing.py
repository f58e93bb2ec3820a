"""Flow control between the two sides of an L4 connection, driven with fake transports.

Unit tests (as uvicorn's protocol tests do): the order of events here is one that real sockets
produce only now and then (an upstream that sends before the core has finished connecting to
it), so it is set up by hand. The end-to-end behaviour is in test_flow.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from minirouter.core.l4 import _ClientSide, _UpstreamSide
from minirouter.core.metrics import ListenerCounters


class FakeTransport(asyncio.Transport):
    """Records what the protocol asks of it; reading is on until paused."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


@pytest.fixture
def client() -> Iterator[_ClientSide]:
    loop = asyncio.new_event_loop()
    owner: Any = SimpleNamespace(state=SimpleNamespace(loop=loop))
    running: Any = SimpleNamespace(spec=SimpleNamespace(tls=False), connections=set())
    side = _ClientSide(owner, running, ListenerCounters())
    side.transport = FakeTransport()  # as connection_made does, without starting to connect
    try:
        yield side
    finally:
        loop.close()


def _upstream(client: _ClientSide) -> tuple[_UpstreamSide, FakeTransport]:
    up = _UpstreamSide(client)
    transport = FakeTransport()
    up.connection_made(transport)
    return up, transport


def test_an_upstream_that_filled_the_client_before_connecting_is_paused(
    client: _ClientSide,
) -> None:
    up, up_transport = _upstream(client)
    # Data from the upstream before `_connected`: written to the client, whose buffer goes
    # over its high mark (the transport says so once).
    up.data_received(b"x" * 1000)
    client.pause_writing()
    assert up_transport.reading  # nothing to pause yet: the client side has no upstream
    client._connected(up)
    assert not up_transport.reading
    client.resume_writing()
    assert up_transport.reading


def test_the_client_stays_paused_while_the_upstream_takes_its_early_data(
    client: _ClientSide,
) -> None:
    client.data_received(b"early")
    assert isinstance(client.transport, FakeTransport)
    client.transport.pause_reading()  # as over EARLY_DATA_LIMIT
    up, up_transport = _upstream(client)
    real_write = up_transport.write

    def write(data: bytes | bytearray | memoryview) -> None:
        real_write(data)
        up.pause_writing()  # the early data took the upstream over its high mark

    up_transport.write = write  # type: ignore[method-assign]
    client._connected(up)
    assert up_transport.written == [b"early"]
    assert not client.transport.reading
    up.resume_writing()
    assert client.transport.reading


def test_connected_resumes_the_client_when_nothing_is_paused(client: _ClientSide) -> None:
    assert isinstance(client.transport, FakeTransport)
    client.transport.pause_reading()
    up, up_transport = _upstream(client)
    client._connected(up)
    assert client.transport.reading and up_transport.reading
