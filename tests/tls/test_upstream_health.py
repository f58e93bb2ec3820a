"""Active health checks of a `tls: true` upstream verify the way proxied requests do: with the
upstream's own `ca` (a probe that ignored it would mark every privately signed target down)."""

from __future__ import annotations

import http.client
import time

from integration.conftest import StartCore

from .certs import CA
from .tls_upstream import TlsUpstream


def test_health_probes_use_the_upstream_ca(
    tls_upstream: tuple[CA, TlsUpstream, str], start_core: StartCore
) -> None:
    ca, up, _leaf = tls_upstream
    config = {
        "upstreams": [
            {
                "id": "secure",
                "targets": [up.address],
                "tls": True,
                "ca": ca.cert_pem,
                "sni": "upstream.test",
                "health": {"path": "/", "interval": 0.05, "unhealthy": 1, "healthy": 1},
            }
        ],
        "routes": [{"id": "r", "path": "/", "upstream": "secure", "retries": 0}],
    }
    core = start_core(config)
    # Probes reach the upstream only through a handshake verified against `ca`.
    deadline = time.monotonic() + 10
    while up.requests < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert up.requests >= 3
    conn = http.client.HTTPConnection("127.0.0.1", core.port, timeout=10)
    try:
        conn.request("GET", "/x")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"secure")
    finally:
        conn.close()
