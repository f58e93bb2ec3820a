"""L4 flow control and TLS: a large transfer to a slow reader keeps the core's memory and
the upstream's progress bounded (the upstream is paused, not buffered), and a `tls: true`
listener terminates TLS with the certificates chosen by SNI."""

from __future__ import annotations

import hashlib
import socket
import time

from integration.conftest import StartCore
from integration.upstreams import free_port
from tls.certs import shared_ca
from tls.client import client_context, handshake

from .conftest import TcpFactory
from .test_listeners import l4_config, read_exactly, wait_open

MB = 1024 * 1024


def expected_sha256(size: int) -> str:
    block = bytes(range(256)) * 256
    h = hashlib.sha256()
    for start in range(0, size, len(block)):
        h.update(block[: min(len(block), size - start)])
    return h.hexdigest()


def test_slow_reader_large_transfer_stays_bounded(tcp: TcpFactory, start_core: StartCore) -> None:
    size = 64 * MB
    source = tcp("source", size)
    port = free_port()
    core = start_core(
        l4_config(
            [{"id": "big", "listen": f"127.0.0.1:{port}", "upstream": "src"}], src=[source.address]
        )
    )
    wait_open(core, "big")
    baseline = core.rss()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(10)
    with sock:
        sock.connect(("127.0.0.1", port))
        h = hashlib.sha256()
        first = read_exactly(sock, MB)
        h.update(first)
        time.sleep(1.0)  # the slow reader: nothing read for a while
        # The upstream wrote only what the buffers along the way hold, not the whole body,
        # and the core did not buffer it either.
        assert source.sent < 24 * MB, f"upstream not paused: {source.sent / MB:.1f} MB sent"
        grown = core.rss() - baseline
        assert grown < 24 * MB, f"core grew by {grown / MB:.1f} MB"
        total = len(first)
        while chunk := sock.recv(256 * 1024):
            h.update(chunk)
            total += len(chunk)
    assert total == size
    assert h.hexdigest() == expected_sha256(size)


def test_tls_listener_terminates_with_sni_certificates(
    tcp: TcpFactory, start_core: StartCore
) -> None:
    ca = shared_ca()
    echo = tcp("echo")
    port = free_port()
    config = l4_config(
        [{"id": "pgs", "listen": f"127.0.0.1:{port}", "upstream": "db", "tls": True}],
        db=[echo.address],
    )
    config["certificates"] = [ca.issue("db.test").item("db", ["db.test"])]
    core = start_core(config)
    wait_open(core, "pgs")
    with handshake(client_context(ca.cert_pem), port, "db.test") as sock:
        assert read_exactly(sock, 6) == b"READY\n"
        sock.sendall(b"over tls")
        assert read_exactly(sock, 8) == b"over tls"
    assert echo.connections == 1
