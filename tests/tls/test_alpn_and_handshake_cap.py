"""ALPN on HTTPS vs L4 TLS listeners, and TLS handshakes counting against --max-connections.

An L4 listener carries the client's own protocol (PostgreSQL direct TLS offers `postgresql`):
it must not select `http/1.1`. A TLS handshake in progress holds a file descriptor for up to the
handshake timeout, so it takes a place under --max-connections from accept on.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import pytest

from integration.conftest import StartCore
from integration.coreproc import CoreProcess, metric_sum, poll
from integration.upstreams import UpstreamSet, free_port
from l4.conftest import TcpFactory, tcp
from l4.test_listeners import read_exactly, wait_open
from minirouter.core.metrics import Metrics
from minirouter.core.tls import CertificateStore
from minirouter.model import from_dict

from .certs import shared_ca
from .client import TlsConnection, client_context, handshake
from .test_sni import tls_config

__all__ = ["tcp"]


def test_l4_tls_listener_offers_no_alpn_while_https_selects_http11(
    tcp: TcpFactory, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    ca = shared_ca()
    echo = tcp("echo")
    app = upstreams.http("app")
    l4_port, https_port = free_port(), free_port()
    config = tls_config(
        app.address, [ca.issue("db.test", "a.test").item("db", ["db.test", "a.test"])]
    )
    config["upstreams"].append({"id": "db", "targets": [echo.address]})
    config["listeners"] = [
        {"id": "pgs", "listen": f"127.0.0.1:{l4_port}", "upstream": "db", "tls": True}
    ]
    core = start_core(config, "--listen-tls", f"127.0.0.1:{https_port}")
    wait_open(core, "pgs")

    ctx = client_context(ca.cert_pem)
    ctx.set_alpn_protocols(["postgresql", "http/1.1"])
    with handshake(ctx, l4_port, "db.test") as sock:
        assert sock.selected_alpn_protocol() is None
        assert read_exactly(sock, 6) == b"READY\n"
        sock.sendall(b"SELECT 1")
        assert read_exactly(sock, 8) == b"SELECT 1"
    # The same certificate, the same offer: the HTTPS listener still selects http/1.1.
    with handshake(ctx, https_port, "a.test") as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
    # A client offering only its own protocol is served by the L4 listener.
    only_pg = client_context(ca.cert_pem)
    only_pg.set_alpn_protocols(["postgresql"])
    with handshake(only_pg, l4_port, "db.test") as sock:
        assert sock.selected_alpn_protocol() is None
        assert read_exactly(sock, 6) == b"READY\n"


def _connections(core: CoreProcess) -> int:
    return int(core.healthz()["connections"])


def test_tls_handshakes_count_against_max_connections(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    ca = shared_ca()
    app = upstreams.http("app")
    port = free_port()
    config = tls_config(app.address, [ca.issue("a.test").item("a", ["a.test"])])
    core = start_core(config, "--listen-tls", f"127.0.0.1:{port}", "--max-connections", "2")

    # Two clients that connect and never start their handshake fill the cap.
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        poll(lambda: _connections(core) == 2, 10, message="2 handshakes counted")
        # The third is closed at once, before any handshake work.
        with pytest.raises(OSError), handshake(client_context(ca.cert_pem), port, "a.test"):
            pass
        metrics = core.metrics()
        assert metric_sum(metrics, "minirouter_connections_refused_total") == 1
        assert metric_sum(metrics, "minirouter_open_connections") == 0
        assert _connections(core) == 2

        # A handshake that is abandoned gives its place back.
        silent.pop().close()
        poll(lambda: _connections(core) == 1, 10, message="the closed handshake released")
        # A failing handshake (no certificate for the name) gives it back too.
        with pytest.raises(ssl.SSLError), handshake(client_context(ca.cert_pem), port, "x.test"):
            pass
        poll(lambda: _connections(core) == 1, 10, message="the failed handshake released")
        # A completed handshake keeps its place as a client connection.
        with TlsConnection(port, "a.test", ca.cert_pem) as conn:
            assert conn.get("/").status == 200
            assert _connections(core) == 2
            assert metric_sum(core.metrics(), "minirouter_open_connections") == 1
        assert metric_sum(core.metrics(), "minirouter_connections_refused_total") == 1
    finally:
        for sock in silent:
            sock.close()


def test_l4_contexts_exist_only_while_an_l4_listener_terminates_tls() -> None:
    ca = shared_ca()
    certs = (from_dict("certificates", ca.issue("a.test").item("a", ["a.test"], default=True)),)
    store = CertificateStore(Metrics())
    store.update(certs)
    assert store.select("a.test") is not None
    assert store.select("a.test", l4=True) is None  # no L4 TLS listener: not loaded twice
    store.update(certs, l4=True)
    https_ctx, l4_ctx = store.select("a.test"), store.select("other.test", l4=True)
    assert https_ctx is not None and l4_ctx is not None and l4_ctx is not https_ctx
    store.update(certs, l4=True)  # unchanged: nothing reloaded
    assert store.select("a.test", l4=True) is l4_ctx and store.select("a.test") is https_ctx
    store.update(certs, l4=False)
    assert store.select("a.test", l4=True) is None
    assert store.select("a.test") is https_ctx


def test_shutdown_closes_a_pending_handshake_and_exits_cleanly(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    ca = shared_ca()
    app = upstreams.http("app")
    port = free_port()
    config = tls_config(app.address, [ca.issue("a.test").item("a", ["a.test"])])
    core = start_core(config, "--listen-tls", f"127.0.0.1:{port}", "--shutdown-timeout", "30")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as silent:
        poll(lambda: _connections(core) == 1, 10, message="the handshake counted")
        core.terminate()
        # Closed by the drain (a handshake has no request in flight), not left to its timeout.
        with contextlib.suppress(ConnectionResetError):
            assert silent.recv(1) == b""
        assert core.wait(20) == 0
    errors = core.stderr_text()
    assert "Traceback" not in errors and "destroyed but it is pending" not in errors, errors
