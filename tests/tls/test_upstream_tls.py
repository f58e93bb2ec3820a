"""`tls: true` upstreams: verified against the system store or a configured `ca` (which may
pin the upstream's own certificate), with SNI; a wrong name or an unknown CA is a 502;
`verify: false` skips the check."""

from __future__ import annotations

import http.client
from typing import Any

from integration.conftest import StartCore

from .certs import CA
from .tls_upstream import TlsUpstream


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_upstream_tls_verification(
    tls_upstream: tuple[CA, TlsUpstream, str], start_core: StartCore
) -> None:
    ca, up, leaf_pem = tls_upstream
    cases: dict[str, dict[str, Any]] = {
        "ca-sni": {"ca": ca.cert_pem, "sni": "upstream.test"},
        "ca-ip": {"ca": ca.cert_pem},  # verified against the IP address in the certificate
        "pinned": {"ca": leaf_pem, "sni": "upstream.test"},  # the leaf alone as trust anchor
        "wrong-name": {"ca": ca.cert_pem, "sni": "other.test"},
        "system-store": {"sni": "upstream.test"},  # the test CA is not a system CA
        "no-verify": {"verify": False, "sni": "other.test"},
    }
    config = {
        "upstreams": [
            {"id": uid, "targets": [up.address], "tls": True, **fields}
            for uid, fields in cases.items()
        ],
        "routes": [{"id": uid, "path": f"/{uid}/", "upstream": uid, "retries": 0} for uid in cases],
    }
    core = start_core(config)
    results = {uid: get(core.port, f"/{uid}/x")[0] for uid in cases}
    assert results == {
        "ca-sni": 200,
        "ca-ip": 200,
        "pinned": 200,
        "wrong-name": 502,
        "system-store": 502,
        "no-verify": 200,
    }
    assert get(core.port, "/ca-sni/x") == (200, b"secure")
