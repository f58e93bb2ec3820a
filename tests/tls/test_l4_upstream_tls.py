"""An L4 listener in front of a `tls: true` upstream connects to it with TLS, verified like the
HTTP side (CA, SNI name): never in cleartext, never to a certificate that does not verify."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from integration.conftest import StartCore
from integration.coreproc import metric_sum, poll
from integration.upstreams import UpstreamLoop, free_port

from .certs import CA
from .tls_upstream import TlsUpstream


@pytest.fixture
def tls_upstream(upstream_loop: UpstreamLoop) -> Iterator[tuple[CA, TlsUpstream]]:
    ca = CA()
    up = TlsUpstream(upstream_loop, "secure", ca.issue("upstream.test")).start()
    yield ca, up
    up.stop()


def exchange(port: int) -> bytes:
    """One HTTP request in cleartext to the L4 listener; everything it answers until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        out = b""
        while not out.endswith(b"secure"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            out += chunk
        return out


def test_l4_listener_speaks_verified_tls_to_a_tls_upstream(
    tls_upstream: tuple[CA, TlsUpstream], start_core: StartCore
) -> None:
    ca, up = tls_upstream
    good, wrong = free_port(), free_port()
    config = {
        "upstreams": [
            {
                "id": "ok",
                "targets": [up.address],
                "tls": True,
                "ca": ca.cert_pem,
                "sni": "upstream.test",
            },
            {
                "id": "wrong-name",
                "targets": [up.address],
                "tls": True,
                "ca": ca.cert_pem,
                "sni": "other.test",
            },
        ],
        "listeners": [
            {"id": "good", "listen": f"127.0.0.1:{good}", "upstream": "ok"},
            {"id": "wrong", "listen": f"127.0.0.1:{wrong}", "upstream": "wrong-name"},
        ],
    }
    core = start_core(config)
    for lid in ("good", "wrong"):
        poll(
            lambda lid=lid: core.healthz().get("listeners", {}).get(lid, {}).get("open"),
            5,
            message=f"listener {lid} open",
        )
    answer = exchange(good)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"secure"), answer
    assert up.requests == 1
    # a certificate that does not verify for the name: the client is closed, nothing is sent
    assert exchange(wrong) == b""
    assert up.requests == 1
    poll(
        lambda: (
            metric_sum(core.metrics(), "minirouter_l4_connect_failures_total", listener="wrong")
            >= 1
        ),
        5,
        message="the failed verification counted",
    )
