"""Certificates follow the store with no restart: added, replaced and removed for new
handshakes while an old connection keeps working; invalid ones are refused at write time
(nothing stored) and skipped when mirrored (the last good version keeps serving)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.coreproc import poll
from integration.upstreams import UpstreamSet, free_port
from minirouter.model import Certificate, ValidationError
from minirouter.store import Change
from mirror.conftest import make_backend
from mirror.support import StoreBackend, put, route_item, upstream_item

from .certs import CA, Pair, other_key
from .client import TlsConnection
from .conftest import StartStoreCore

DEADLINE = 5.0
MALFORMED_KEY = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def redis_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    b = make_backend(request, "redis", tmp_path)
    yield b
    b.close()


def served_der(port: int, ca: CA, sni: str = "a.test") -> bytes | None:
    """The certificate served for `sni` right now (DER), or None if the handshake fails."""
    try:
        with TlsConnection(port, sni, ca.cert_pem, timeout=2) as conn:
            return conn.der
    except (ssl.SSLError, ConnectionError):
        return None


def der(pair: Pair) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pair.cert)


def test_add_replace_remove_while_an_old_connection_stays_open(
    redis_backend: StoreBackend, upstreams: UpstreamSet, start_store_core: StartStoreCore
) -> None:
    ca = CA()
    app = upstreams.http("app")
    store = redis_backend.open()
    store.apply(put(upstream_item("app", app.address), route_item("r", "app", path="/")))
    port = free_port()
    core = start_store_core(redis_backend.url, "--listen-tls", f"127.0.0.1:{port}")
    assert served_der(port, ca) is None  # no certificate yet

    first, second = ca.issue("a.test"), ca.issue("a.test")
    store.apply(put(Certificate.from_dict(first.item("a", ["a.test"]))))
    poll(lambda: served_der(port, ca) == der(first), DEADLINE, message="certificate added")

    with TlsConnection(port, "a.test", ca.cert_pem) as old:
        assert old.get("/").status == 200
        store.apply(put(Certificate.from_dict(second.item("a", ["a.test"]))))
        poll(lambda: served_der(port, ca) == der(second), DEADLINE, message="replaced")
        assert old.get("/").status == 200  # the open connection is untouched
        assert old.der == der(first)

        store.apply([Change.delete("certificates", "a")])
        poll(lambda: served_der(port, ca) is None, DEADLINE, message="certificate removed")
        assert old.get("/").status == 200
    assert core.healthz()["tls"]["certificates"] == 0


def test_invalid_certificates_are_refused_and_nothing_is_stored(
    redis_backend: StoreBackend,
) -> None:
    ca = CA()
    good = ca.issue("a.test")
    store = redis_backend.open()
    rev = store.current_rev()
    bad = {
        "key": Certificate("k", ("a.test",), good.cert, MALFORMED_KEY),
        "mismatch": Certificate(
            "m", ("a.test",), good.cert, ca.issue("a.test", key=other_key()).key
        ),
        "expired": Certificate("e", ("a.test",), ca.issue("a.test", expired=True).cert, good.key),
        "names": Certificate("n", ("b.test",), good.cert, good.key),
        "cert": Certificate("c", ("a.test",), good.key, good.key),
    }
    messages: dict[str, str] = {}
    for what, item in bad.items():
        with pytest.raises(ValidationError) as info:
            store.apply(put(item))
        messages[what] = str(info.value)
    assert "certificates/k.key" in messages["key"]
    assert "does not match" in messages["mismatch"]
    assert "expired on" in messages["expired"]
    assert "'b.test' is not covered" in messages["names"]
    assert "certificates/c.cert" in messages["cert"]
    assert store.current_rev() == rev
    assert store.snapshot().config.certificates == ()


def test_mirror_skips_an_invalid_certificate_and_keeps_the_last_good(
    redis_backend: StoreBackend, upstreams: UpstreamSet, start_store_core: StartStoreCore
) -> None:
    ca = CA()
    app = upstreams.http("app")
    store = redis_backend.open()
    good = ca.issue("a.test")
    store.apply(
        put(
            upstream_item("app", app.address),
            route_item("r", "app", path="/"),
            Certificate.from_dict(good.item("a", ["a.test"])),
        )
    )
    port = free_port()
    core = start_store_core(redis_backend.url, "--listen-tls", f"127.0.0.1:{port}")
    assert served_der(port, ca) == der(good)
    # Written behind minirouter's back (no validation): a key of another certificate.
    broken = good.item("a", ["a.test"]) | {"key": ca.issue("a.test").key}
    rev = redis_backend.raw_change("certificates", "a", json.dumps(broken))
    core.wait_for_revision(rev)
    assert "certificates/a" in core.store_health()["invalid_items"]
    assert served_der(port, ca) == der(good)
