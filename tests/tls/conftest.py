"""Fixtures for the TLS tests: the integration suite's upstreams and core processes, and the
mirror suite's store cores (`start_store_core`) and redis-servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration.conftest import start_core, upstream_loop, upstreams
from integration.upstreams import UpstreamLoop
from mirror.conftest import StartCore as StartStoreCore
from mirror.conftest import redis_factory
from mirror.conftest import start_core as start_store_core

from .certs import CA
from .tls_upstream import TlsUpstream

__all__ = [
    "StartStoreCore",
    "redis_factory",
    "start_core",
    "start_store_core",
    "upstream_loop",
    "upstreams",
]


@pytest.fixture
def tls_upstream(upstream_loop: UpstreamLoop) -> Iterator[tuple[CA, TlsUpstream, str]]:
    """An HTTPS upstream whose certificate (for upstream.test and 127.0.0.1) a private CA signed:
    (the CA, the upstream, the leaf certificate's PEM)."""
    ca = CA()
    leaf = ca.issue("upstream.test", "127.0.0.1")
    up = TlsUpstream(upstream_loop, "secure", leaf).start()
    yield ca, up, leaf.cert
    up.stop()
