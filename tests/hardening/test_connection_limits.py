"""Connection caps (issue 6): the data plane's --max-connections, the admin listener's and the
control plane's limits. A connection over a cap is refused without disturbing the others."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.cfg import config, route, upstream
from integration.conftest import StartCore
from integration.coreproc import poll
from integration.httpclient import RawConnection
from integration.upstreams import UpstreamLoop, free_port
from minirouter.control import server as control_server
from minirouter.core import admin

from .servers import StrictUpstream

H = b"Host: example.test\r\n"
GET = b"GET / HTTP/1.1\r\n" + H + b"\r\n"
CAP = 3


@pytest.fixture
def capped(upstream_loop: UpstreamLoop, start_core: StartCore) -> Iterator[tuple[int, int]]:
    strict = StrictUpstream(upstream_loop).start()
    core = start_core(
        config([upstream("u", strict.address)], [route("r", "u", path="/")]),
        "--access-log",
        "off",
        "--max-connections",
        str(CAP),
    )
    assert core.admin_port is not None
    yield core.port, core.admin_port
    strict.stop()


def test_over_the_cap_busy_connections_are_kept_and_the_new_one_gets_503(
    capped: tuple[int, int],
) -> None:
    port, _ = capped
    with contextlib.ExitStack() as stack:
        busy = [stack.enter_context(RawConnection(port, timeout=5)) for _ in range(CAP)]
        for conn in busy:
            conn.send(b"GET / HTTP/1.1\r\n")  # a request under way: not to be dropped

        # Accepting is asynchronous: retry until the core has seen all three.
        def refused() -> bool:
            with RawConnection(port, timeout=5) as extra:
                extra.send(GET)
                resp = extra.read_response()
                assert resp.status == 503, resp.describe()
                assert resp.header("Connection") == "close"
                return extra.wait_closed(5)

        assert poll(refused, 5, message="a 503 over the cap")
        for conn in busy:
            conn.send(H + b"\r\n")
            resp = conn.read_response()
            assert (resp.status, resp.body) == (200, b"ok"), resp.describe()


def test_at_the_cap_an_idle_keepalive_connection_makes_room(capped: tuple[int, int]) -> None:
    port, _ = capped
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(RawConnection(port, timeout=5)) for _ in range(CAP)]
        for conn in idle:
            conn.send(GET)
            assert conn.read_response().status == 200
        with RawConnection(port, timeout=5) as extra:
            extra.send(GET)
            assert extra.read_response().status == 200
        closed = [conn for conn in idle if conn.wait_closed(0.2)]
        assert len(closed) == 1, "exactly one idle connection is closed to make room"


def test_admin_listener_caps_its_connections(capped: tuple[int, int]) -> None:
    _, admin_port = capped
    with contextlib.ExitStack() as stack:
        held = [
            stack.enter_context(socket.create_connection(("127.0.0.1", admin_port), timeout=5))
            for _ in range(admin.MAX_CONNECTIONS)
        ]
        # Once every held connection is accepted, the next one is refused.
        held[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert held[-1].recv(12) == b"HTTP/1.1 200"
        with RawConnection(admin_port, timeout=5) as extra:
            extra.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            resp = extra.read_response()
            assert resp.status == 503, resp.describe()
            assert extra.wait_closed(5)
        held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert held[0].recv(12) == b"HTTP/1.1 200"


@pytest.fixture
def control_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = (tmp_path / "control.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minirouter.control.server",
            f"sqlite:///{tmp_path / 'store.db'}",
            "127.0.0.1",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(b"listening"), line
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()


def test_control_plane_refuses_an_oversized_head(control_port: int) -> None:
    big = b"X-Big: " + b"a" * (control_server.MAX_HEADER_SIZE + 100) + b"\r\n"
    with RawConnection(control_port, timeout=10) as conn:
        conn.send(b"GET /api/v1/routes HTTP/1.1\r\nHost: a\r\n" + big + b"\r\n")
        resp = conn.read_response()
        assert resp.status == 431, resp.describe()
    with RawConnection(control_port, timeout=10) as conn:
        conn.send(b"GET /api/v1/routes HTTP/1.1\r\nHost: a\r\n\r\n")
        assert conn.read_response().status == 401  # normal size: served (and asks for a token)
