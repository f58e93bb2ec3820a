"""L4 listeners: bytes piped both ways to an upstream's targets, listeners added and removed
live (open connections finish), connect failures reported and failed over, a port that cannot
be opened reported without stopping the core, per-listener metrics."""

from __future__ import annotations

import socket
import time
from typing import Any

from integration.conftest import StartCore
from integration.coreproc import CoreProcess, metric_sum, poll
from integration.upstreams import free_port

from .conftest import TcpFactory

DEADLINE = 5.0


def l4_config(listeners: list[dict[str, Any]], **targets: list[str]) -> dict[str, Any]:
    return {
        "upstreams": [
            {"id": uid, "targets": addrs, "timeouts": {"connect": 1}}
            for uid, addrs in targets.items()
        ],
        "listeners": listeners,
    }


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def read_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def wait_open(core: CoreProcess, listener_id: str) -> None:
    """Until /healthz says the listener's port is open (no probe connection)."""
    poll(
        lambda: core.healthz().get("listeners", {}).get(listener_id, {}).get("open"),
        DEADLINE,
        message=f"listener {listener_id} open",
    )


def reload(core: CoreProcess, config: dict[str, Any]) -> None:
    rev = core.revision()
    core.write_config(config)
    core.sighup()
    core.wait_for_revision(rev + 1)


def test_echo_long_lived_connection_and_live_add_remove(
    tcp: TcpFactory, start_core: StartCore
) -> None:
    echo = tcp("echo")
    pg, other = free_port(), free_port()
    listener = {"id": "pg", "listen": f"127.0.0.1:{pg}", "upstream": "db"}
    core = start_core(l4_config([listener], db=[echo.address]))
    poll(lambda: not refused(pg), DEADLINE, message="listener pg open")

    with connect(pg) as session:  # a database-like session that outlives config changes
        assert read_exactly(session, 6) == b"READY\n"
        session.sendall(b"SELECT 1;\n")
        assert read_exactly(session, 10) == b"SELECT 1;\n"

        # add a second listener live
        second = {"id": "other", "listen": f"127.0.0.1:{other}", "upstream": "db"}
        reload(core, l4_config([listener, second], db=[echo.address]))
        wait_open(core, "other")
        with connect(other) as s2:
            assert read_exactly(s2, 6) == b"READY\n"

        # remove pg: its port closes, the open session keeps working
        reload(core, l4_config([second], db=[echo.address]))
        poll(lambda: refused(pg), DEADLINE, message="listener pg closed")
        session.sendall(b"SELECT 2;\n")
        assert read_exactly(session, 10) == b"SELECT 2;\n"
        # the client ends its session: the upstream sees EOF and closes too
        session.shutdown(socket.SHUT_WR)
        assert session.recv(10) == b""

    metrics = core.metrics()
    assert metric_sum(metrics, "minirouter_l4_connections_total", listener="other") == 1
    assert metric_sum(metrics, "minirouter_l4_listener_up", listener="other") == 1
    # pg left the config: its series are gone
    assert metric_sum(metrics, "minirouter_l4_connections_total", listener="pg") == 0


def test_connect_failure_fails_over_and_is_counted(tcp: TcpFactory, start_core: StartCore) -> None:
    echo = tcp("echo")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    port = free_port()
    core = start_core(
        l4_config(
            [{"id": "l", "listen": f"127.0.0.1:{port}", "upstream": "db"}],
            db=[dead, echo.address],
            gone=[dead],
        )
    )
    poll(lambda: not refused(port), DEADLINE, message="listener open")
    for _ in range(4):  # round robin puts the dead target first half of the time
        with connect(port) as s:
            assert read_exactly(s, 6) == b"READY\n"
            s.sendall(b"ping")
            assert read_exactly(s, 4) == b"ping"
    failures = metric_sum(core.metrics(), "minirouter_l4_connect_failures_total", listener="l")
    assert failures >= 1

    # a listener whose only target is down: the client is closed, and that is counted
    reload(
        core,
        l4_config(
            [{"id": "l", "listen": f"127.0.0.1:{port}", "upstream": "gone"}],
            db=[dead, echo.address],
            gone=[dead],
        ),
    )
    with connect(port) as s:
        assert s.recv(10) == b""
    poll(
        lambda: (
            metric_sum(core.metrics(), "minirouter_l4_connect_failures_total", listener="l")
            > failures
        ),
        DEADLINE,
        message="connect failure counted",
    )


def test_port_in_use_is_reported_not_fatal(tcp: TcpFactory, start_core: StartCore) -> None:
    echo = tcp("echo")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        good = free_port()
        core = start_core(
            l4_config(
                [
                    {"id": "busy", "listen": f"127.0.0.1:{busy}", "upstream": "db"},
                    {"id": "good", "listen": f"127.0.0.1:{good}", "upstream": "db"},
                ],
                db=[echo.address],
            )
        )
        poll(lambda: not refused(good), DEADLINE, message="the good listener open")
        info = poll(lambda: core.healthz().get("listeners"), DEADLINE, message="healthz")
        assert info["busy"]["open"] is False
        assert "cannot listen" in info["busy"]["error"]
        assert info["good"]["open"] is True
        metrics = core.metrics()
        assert metric_sum(metrics, "minirouter_l4_listener_up", listener="busy") == 0
        assert metric_sum(metrics, "minirouter_l4_listener_up", listener="good") == 1
    # the port is free now: the listener opens by itself (retried every 5 s)
    poll(
        lambda: core.healthz()["listeners"]["busy"]["open"],
        10,
        message="the busy listener opened once its port was free",
    )
    with connect(busy) as s:
        assert read_exactly(s, 6) == b"READY\n"


def test_bytes_are_counted_each_way(tcp: TcpFactory, start_core: StartCore) -> None:
    echo = tcp("echo")
    port = free_port()
    core = start_core(
        l4_config([{"id": "l", "listen": f"127.0.0.1:{port}", "upstream": "db"}], db=[echo.address])
    )
    wait_open(core, "l")
    with connect(port) as s:
        read_exactly(s, 6)
        s.sendall(b"x" * 1000)
        assert read_exactly(s, 1000) == b"x" * 1000

    def counted() -> bool:
        m = core.metrics()
        return (
            metric_sum(m, "minirouter_l4_received_bytes_total", listener="l") == 1000
            and metric_sum(m, "minirouter_l4_sent_bytes_total", listener="l") == 1006
            and metric_sum(m, "minirouter_l4_open_connections", listener="l") == 0
        )

    poll(counted, DEADLINE, message="byte counters")


def test_idle_timeout_and_bounded_drain_of_a_removed_listener(
    tcp: TcpFactory, start_core: StartCore
) -> None:
    echo = tcp("echo")
    port = free_port()
    listener = {"id": "l", "listen": f"127.0.0.1:{port}", "upstream": "db"}
    config = l4_config([listener], db=[echo.address])
    config["upstreams"][0]["timeouts"]["idle"] = 0.5
    core = start_core(config, "--shutdown-timeout", "1")
    wait_open(core, "l")

    with connect(port) as idle, connect(port) as busy:
        assert read_exactly(idle, 6) == b"READY\n" and read_exactly(busy, 6) == b"READY\n"
        for _ in range(5):  # 1 s of traffic, twice the idle timeout
            busy.sendall(b"x")
            assert read_exactly(busy, 1) == b"x"
            time.sleep(0.2)
        assert idle.recv(10) == b""  # closed by the idle timeout meanwhile

    config["upstreams"][0]["timeouts"]["idle"] = 60
    reload(core, config)
    with connect(port) as session:
        assert read_exactly(session, 6) == b"READY\n"
        reload(core, l4_config([], db=[echo.address]))
        session.sendall(b"still here")
        assert read_exactly(session, 10) == b"still here"
        # the echo upstream never ends the session: the drain bound (1 s) does
        session.settimeout(5)
        assert session.recv(10) == b""


def test_every_worker_opens_the_listener(tcp: TcpFactory, start_core: StartCore) -> None:
    echo = tcp("echo")
    port = free_port()
    core = start_core(
        l4_config(
            [{"id": "l", "listen": f"127.0.0.1:{port}", "upstream": "db"}], db=[echo.address]
        ),
        workers=2,
    )
    for worker in (0, 1):
        poll(
            lambda w=worker: core.healthz(w).get("listeners", {}).get("l", {}).get("open"),
            DEADLINE,
            message=f"listener open in worker {worker}",
        )
    for _ in range(6):
        with connect(port) as s:
            assert read_exactly(s, 6) == b"READY\n"
    accepted = [
        metric_sum(core.metrics(w), "minirouter_l4_connections_total", listener="l") for w in (0, 1)
    ]
    assert sum(accepted) == 6
