"""SIGTERM with L4 connections open: the connections of live listeners and of removed
listeners still draining keep working until --shutdown-timeout, then are closed, and the core
exits."""

from __future__ import annotations

import socket
import time

import pytest

from integration.conftest import StartCore
from integration.upstreams import free_port

from .conftest import TcpFactory
from .test_listeners import connect, l4_config, read_exactly, reload, wait_open


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(20)
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("live_session", [False, True])
def test_sigterm_drains_live_and_removed_listeners_connections(
    tcp: TcpFactory, start_core: StartCore, live_session: bool
) -> None:
    echo = tcp("echo")
    live, gone = free_port(), free_port()
    listeners = [
        {"id": "live", "listen": f"127.0.0.1:{live}", "upstream": "db"},
        {"id": "gone", "listen": f"127.0.0.1:{gone}", "upstream": "db"},
    ]
    core = start_core(l4_config(listeners, db=[echo.address]), "--shutdown-timeout", "2")
    wait_open(core, "live")
    wait_open(core, "gone")
    sessions = [connect(gone)] + ([connect(live)] if live_session else [])
    try:
        for s in sessions:
            assert read_exactly(s, 6) == b"READY\n"
        reload(core, l4_config(listeners[:1], db=[echo.address]))  # "gone" drains now
        t0 = time.monotonic()
        core.terminate()
        time.sleep(0.5)
        for s in sessions:  # still served while the core drains
            s.sendall(b"after")
            assert read_exactly(s, 5) == b"after"
        # the echo upstream never ends a session: the shutdown bound (2 s) does
        assert all(closed_by_peer(s) for s in sessions)
        assert core.wait(20) == 0
        assert time.monotonic() - t0 >= 1.5  # they were drained, not dropped at once
    finally:
        for s in sessions:
            s.close()
