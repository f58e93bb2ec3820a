"""L4 edge cases: a peer that stops reading cannot keep a connection (or its fd) past the idle
timeout, a listener never shares a port with the core's own listeners or another listener
(with --workers N the ports use SO_REUSEPORT, where the kernel would let them), and a TLS
listener's clients may half-close without the core complaining."""

from __future__ import annotations

import contextlib
import socket

from integration.conftest import StartCore
from integration.coreproc import metric_sum, poll
from integration.upstreams import free_port
from tls.certs import shared_ca
from tls.client import client_context, handshake

from .conftest import TcpFactory
from .test_listeners import DEADLINE, connect, l4_config, read_exactly, reload, wait_open


def test_idle_timeout_cuts_a_connection_whose_client_does_not_read(
    tcp: TcpFactory, start_core: StartCore
) -> None:
    source = tcp("source", size=64 * 1024 * 1024)  # far more than every buffer on the way
    port = free_port()
    config = l4_config(
        [{"id": "l", "listen": f"127.0.0.1:{port}", "upstream": "db"}], db=[source.address]
    )
    config["upstreams"][0]["timeouts"]["idle"] = 0.5
    core = start_core(config)
    wait_open(core, "l")
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.connect(("127.0.0.1", port))
        # The client reads nothing: the router's write buffer to it fills up, the upstream
        # is paused, no byte moves either way: the idle timeout must end the connection even
        # though data is still waiting to be written to the client.
        poll(
            lambda: (
                metric_sum(core.metrics(), "minirouter_l4_connections_total", listener="l") == 1
                and metric_sum(core.metrics(), "minirouter_l4_open_connections", listener="l") == 0
            ),
            DEADLINE,
            message="the stalled connection closed by the idle timeout",
        )
        client.settimeout(5)
        received = 0
        try:
            while chunk := client.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < source.size  # it was cut, not completed


def test_listener_overlapping_the_core_or_another_listener_is_refused(
    tcp: TcpFactory, start_core: StartCore
) -> None:
    echo = tcp("echo")
    free = free_port()
    core = start_core(l4_config([], db=[echo.address]), workers=2)
    http = f"127.0.0.1:{core.port}"
    listeners = [
        {"id": "on-http", "listen": http, "upstream": "db"},
        {"id": "a", "listen": f"127.0.0.1:{free}", "upstream": "db"},
        {"id": "b-any", "listen": f"0.0.0.0:{free}", "upstream": "db"},
    ]
    reload(core, l4_config(listeners, db=[echo.address]))
    for worker in (0, 1):
        core.wait_for_revision(core.revision(0), worker=worker)
        poll(
            lambda w=worker: core.healthz(w).get("listeners", {}).get("a", {}).get("open"),
            DEADLINE,
            message=f"listener a open in worker {worker}",
        )
        info = poll(
            lambda w=worker: core.healthz(w).get("listeners", {}).get("b-any"),
            DEADLINE,
            message="listener info",
        )
        listeners_info = core.healthz(worker)["listeners"]
        assert listeners_info["a"]["open"] is True
        assert info["open"] is False and "listener 'a'" in info["error"]
        assert listeners_info["on-http"]["open"] is False
        assert "HTTP listener" in listeners_info["on-http"]["error"]
        up = metric_sum(core.metrics(worker), "minirouter_l4_listener_up", listener="on-http")
        assert up == 0
    # every connection to the HTTP port is still answered by the HTTP listener (with
    # SO_REUSEPORT the kernel would have handed some to the L4 listener: "READY")
    for _ in range(12):
        with connect(core.port) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_exactly(s, 12) == b"HTTP/1.1 404"
    # and every connection to the shared port reaches listener "a" only
    for _ in range(6):
        with connect(free) as s:
            assert read_exactly(s, 6) == b"READY\n"
    accepted = sum(
        metric_sum(core.metrics(w), "minirouter_l4_connections_total", listener="b-any")
        for w in (0, 1)
    )
    assert accepted == 0

    # the winner leaves: the other one takes its port
    reload(core, l4_config(listeners[2:], db=[echo.address]))
    for worker in (0, 1):
        poll(
            lambda w=worker: core.healthz(w)["listeners"]["b-any"]["open"],
            DEADLINE,
            message=f"b-any open in worker {worker}",
        )


def test_tls_listener_client_half_close_is_quiet_and_tls_metrics_shown(
    tcp: TcpFactory, start_core: StartCore
) -> None:
    ca = shared_ca()
    echo = tcp("echo")
    port = free_port()
    config = l4_config(
        [{"id": "s", "listen": f"127.0.0.1:{port}", "upstream": "db", "tls": True}],
        db=[echo.address],
    )
    config["certificates"] = [ca.issue("db.test").item("db", ["db.test"])]
    core = start_core(config)  # no --listen-tls: the L4 listener is the only TLS user
    wait_open(core, "s")
    # A client that starts a handshake and never finishes it is dropped after 10 s (the
    # HTTPS listeners' bound; asyncio's default would hold it for 60 s).
    stalled = connect(port)
    stalled.sendall(b"\x16\x03\x01\x02\x00")  # a ClientHello record header, then nothing
    with handshake(client_context(ca.cert_pem), port, "db.test") as sock:
        assert read_exactly(sock, 6) == b"READY\n"
        sock.sendall(b"bye")
        assert read_exactly(sock, 3) == b"bye"
        sock.unwrap()  # close_notify: the TLS EOF, with the TCP connection still open
        sock.settimeout(5)
    poll(
        lambda: metric_sum(core.metrics(), "minirouter_l4_open_connections", listener="s") == 0,
        DEADLINE,
        message="connection closed",
    )
    text = core.metrics_text()
    assert "minirouter_tls_certificates 1" in text
    assert 'minirouter_tls_certificate_expiry_timestamp_seconds{certificate="db"}' in text
    logged = core.stdout_text() + core.stderr_text()
    assert "eof_received" not in logged, logged
    with stalled:
        stalled.settimeout(20)  # the 10 s bound plus slack; the old 60 s would not make it
        with contextlib.suppress(ConnectionResetError):
            assert stalled.recv(10) == b""
    assert echo.connections == 1  # the stalled client never reached the upstream
