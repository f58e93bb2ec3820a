"""Fixtures for the TLS tests: the integration suite's upstreams and core processes, and the
mirror suite's store cores (`start_store_core`) and redis-servers."""

from __future__ import annotations

from integration.conftest import start_core, upstream_loop, upstreams
from mirror.conftest import StartCore as StartStoreCore
from mirror.conftest import redis_factory
from mirror.conftest import start_core as start_store_core

__all__ = [
    "StartStoreCore",
    "redis_factory",
    "start_core",
    "start_store_core",
    "upstream_loop",
    "upstreams",
]
