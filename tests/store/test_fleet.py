"""Node heartbeats and per-second stats, on both backends."""

from __future__ import annotations

import time

from minirouter.store import Store

from .conftest import Backend


def test_heartbeats_are_listed_until_they_expire(backend: Backend, store: Store) -> None:
    store.heartbeat("core-1", {"rev": 7, "version": "1.0", "pid": 4242, "started": 1.5}, ttl=0.3)
    store.heartbeat("core-2", {"rev": 6}, ttl=30)
    nodes = backend.open().nodes()
    assert nodes == [
        {"node": "core-1", "rev": 7, "version": "1.0", "pid": 4242, "started": 1.5},
        {"node": "core-2", "rev": 6},
    ]
    store.heartbeat("core-2", {"rev": 8, "listen": "0.0.0.0:80"}, ttl=30)  # replaces
    time.sleep(0.4)
    assert store.nodes() == [{"node": "core-2", "rev": 8, "listen": "0.0.0.0:80"}]


def test_stats_round_trip(backend: Backend, store: Store) -> None:
    store.publish_stats("n1", 100, {"api": {"2xx": 10, "5xx": 1.0}, "web": {"2xx": 3}}, ttl=60)
    store.publish_stats("n2", 100, {"api": {"2xx": 4}}, ttl=60)
    store.publish_stats("n1", 101, {"api": {"2xx": 12, "p99": 0.25}}, ttl=60)
    store.publish_stats("n1", 99, {"api": {"2xx": 1}}, ttl=60)
    store.publish_stats("n1", 102, {}, ttl=60)  # nothing to say: nothing stored
    assert backend.open().stats(100) == [
        {"node": "n1", "second": 100, "route": "api", "counters": {"2xx": 10.0, "5xx": 1.0}},
        {"node": "n1", "second": 100, "route": "web", "counters": {"2xx": 3.0}},
        {"node": "n2", "second": 100, "route": "api", "counters": {"2xx": 4.0}},
        {"node": "n1", "second": 101, "route": "api", "counters": {"2xx": 12.0, "p99": 0.25}},
    ]
    assert len(store.stats(0)) == 5
    assert store.stats(102) == []


def test_stats_expire(store: Store) -> None:
    store.publish_stats("n1", 100, {"api": {"2xx": 1}}, ttl=0.2)
    assert len(store.stats(0)) == 1
    time.sleep(0.3)
    assert store.stats(0) == []
