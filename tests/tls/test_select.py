"""Which certificate a handshake gets, straight from `CertificateStore.select` (no sockets):
a wildcard stands for exactly one label, as the client will check it."""

from __future__ import annotations

import ssl

from minirouter.core.metrics import Metrics
from minirouter.core.tls import CertificateStore
from minirouter.model import from_dict

from .certs import shared_ca


def store_with(*items: dict[str, object]) -> tuple[CertificateStore, dict[str, ssl.SSLContext]]:
    """A store loaded with `items`, and the context each certificate id got."""
    store = CertificateStore(Metrics())
    certs = tuple(from_dict("certificates", item) for item in items)
    store.update(certs)
    contexts = {}
    for cert in certs:
        ctx = store.select(cert.names[0].replace("*", "x"))
        assert ctx is not None
        contexts[cert.id] = ctx
    return store, contexts


def test_wildcard_covers_one_label_only_then_the_default() -> None:
    ca = shared_ca()
    store, ctx = store_with(
        ca.issue("*.example.com").item("wild", ["*.example.com"]),
        ca.issue("*.b.example.com").item("wild-b", ["*.b.example.com"]),
        ca.issue("fallback.test").item("dflt", ["fallback.test"], default=True),
    )
    assert store.select("a.example.com") is ctx["wild"]
    assert store.select("A.Example.COM.") is ctx["wild"]
    assert store.select("a.b.example.com") is ctx["wild-b"]
    # "*.example.com" does not cover these (a client would refuse it): the default serves
    assert store.select("a.c.example.com") is ctx["dflt"]
    assert store.select("x.a.b.example.com") is ctx["dflt"]
    assert store.select("example.com") is ctx["dflt"]
    assert store.select(None) is ctx["dflt"]


def test_no_default_means_no_certificate() -> None:
    ca = shared_ca()
    store, ctx = store_with(ca.issue("*.example.com").item("wild", ["*.example.com"]))
    assert store.select("a.example.com") is ctx["wild"]
    assert store.select("a.b.example.com") is None
    assert store.select(".example.com") is None


def test_metrics_follow_whether_tls_is_served() -> None:
    ca = shared_ca()
    metrics = Metrics()
    store = CertificateStore(metrics)
    certs = (from_dict("certificates", ca.issue("a.test").item("a", ["a.test"])),)
    store.update(certs, report=False)
    assert len(store) == 1 and metrics.certificates_loaded is None
    store.update(certs, report=True)
    assert metrics.certificates_loaded == 1 and set(metrics.certificate_expiry) == {"a"}
