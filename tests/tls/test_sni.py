"""TLS termination on `--listen-tls`: the certificate chosen by SNI (exact, longest wildcard,
default, none), protocol versions and ALPN, X-Forwarded-Proto and the 421 on Host != SNI."""

from __future__ import annotations

import http.client
import ssl
import time
import warnings
from typing import Any

import pytest

from integration.conftest import StartCore
from integration.coreproc import metric_sum
from integration.upstreams import UpstreamSet, free_port

from .certs import CA, shared_ca
from .client import TlsConnection, client_context, handshake, https_get, names_of


def tls_config(address: str, certificates: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "upstreams": [{"id": "app", "targets": [address]}],
        "routes": [
            {
                "id": "a",
                "hosts": ["a.test"],
                "upstream": "app",
                "response_headers": {"set": {"X-Route": "a"}},
            },
            {"id": "any", "upstream": "app", "response_headers": {"set": {"X-Route": "any"}}},
        ],
        "certificates": certificates,
    }


def test_sni_exact_wildcard_longest_and_none(upstreams: UpstreamSet, start_core: StartCore) -> None:
    ca = shared_ca()
    app = upstreams.http("app")
    certs = [
        ca.issue("a.test").item("a", ["a.test"]),
        ca.issue("*.b.test").item("wild", ["*.b.test"]),
        ca.issue("*.x.b.test").item("wild-x", ["*.x.b.test"]),
        ca.issue("exact.b.test").item("exact-b", ["exact.b.test"]),
    ]
    port = free_port()
    core = start_core(tls_config(app.address, certs), "--listen-tls", f"127.0.0.1:{port}")

    r = https_get(port, "a.test", ca.cert_pem)
    assert (r.status, r.cert_names, r.alpn) == (200, ["a.test"], "http/1.1")
    assert r.headers["X-Route"] == "a"  # routed by the SNI-validated name
    assert app.snapshot()[-1].header("X-Forwarded-Proto") == "https"

    assert https_get(port, "y.b.test", ca.cert_pem).cert_names == ["*.b.test"]
    # the longest matching wildcard wins; an exact name beats every wildcard
    assert https_get(port, "y.x.b.test", ca.cert_pem).cert_names == ["*.x.b.test"]
    assert https_get(port, "exact.b.test", ca.cert_pem).cert_names == ["exact.b.test"]
    # a wildcard covers one label only, and nothing is the default: the handshake fails
    for name in ("b.test", "unknown.test"):
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            https_get(port, name, ca.cert_pem)
    with pytest.raises(ssl.SSLError):
        https_get(port, None, ca.cert_pem)  # no SNI at all
    # the core is fine after refused handshakes, counted them, and logged none of them
    assert https_get(port, "a.test", ca.cert_pem).status == 200
    assert "minirouter_tls_unknown_name_total 3" in core.metrics_text()
    logged = core.stdout_text() + core.stderr_text()
    assert "Traceback" not in logged and "SSL" not in logged, logged


def test_default_certificate_serves_unknown_names_and_no_sni(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    ca = shared_ca()
    app = upstreams.http("app")
    certs = [
        ca.issue("a.test").item("a", ["a.test"]),
        ca.issue("fallback.test").item("fallback", ["fallback.test"], default=True),
    ]
    port = free_port()
    start_core(tls_config(app.address, certs), "--listen-tls", f"127.0.0.1:{port}")
    ctx = client_context(ca.cert_pem)
    ctx.check_hostname = False  # the default certificate does not carry the asked-for name
    for sni in ("other.test", None):
        with handshake(ctx, port, sni) as sock:
            der = sock.getpeercert(binary_form=True)
            assert der is not None
            assert names_of(der) == ["fallback.test"]
    assert https_get(port, "a.test", ca.cert_pem).cert_names == ["a.test"]


def test_host_disagreeing_with_sni_is_421_and_old_protocols_are_refused(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    ca = shared_ca()
    app = upstreams.http("app")
    certs = [ca.issue("a.test", "c.test").item("ac", ["a.test", "c.test"])]
    port = free_port()
    start_core(tls_config(app.address, certs), "--listen-tls", f"127.0.0.1:{port}")
    with TlsConnection(port, "a.test", ca.cert_pem) as conn:
        assert conn.get("/", host="a.test").status == 200
        assert conn.get("/", host="a.test:443").status == 200
        r = conn.get("/", host="c.test")  # covered by the same certificate, still not the SNI
        assert r.status == 421
    assert all(req.header("Host") != "c.test" for req in app.snapshot())
    # TLS 1.1, and TLS 1.2 with a CBC/SHA-1 suite: both refused
    old = client_context(ca.cert_pem)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    weak = client_context(ca.cert_pem)
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("ECDHE-ECDSA-AES128-SHA")
    for ctx in (old, weak):
        with pytest.raises(ssl.SSLError), handshake(ctx, port, "a.test"):
            pass
    tls12 = client_context(ca.cert_pem)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with handshake(tls12, port, "a.test") as sock:
        assert sock.version() == "TLSv1.2"


def test_plain_http_listener_keeps_working_next_to_tls(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    ca: CA = shared_ca()
    app = upstreams.http("app")
    port = free_port()
    core = start_core(
        tls_config(app.address, [ca.issue("a.test").item("a", ["a.test"])]),
        "--listen-tls",
        f"127.0.0.1:{port}",
    )
    conn = http.client.HTTPConnection("127.0.0.1", core.port, timeout=5)
    conn.request("GET", "/", headers={"Host": "whatever.test"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200
    assert app.snapshot()[-1].header("X-Forwarded-Proto") == "http"
    metrics = core.metrics()
    assert metric_sum(metrics, "minirouter_tls_certificates") == 1
    expires = metric_sum(
        metrics, "minirouter_tls_certificate_expiry_timestamp_seconds", certificate="a"
    )
    assert time.time() < expires < time.time() + 8 * 86400  # the test CA issues for 7 days
