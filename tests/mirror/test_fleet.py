"""What a core reports back to the store: heartbeats (`store.nodes()`), per-second stats
(`store.stats()`), and `--workers 2` on one port converging on one revision."""

from __future__ import annotations

import time
from typing import Any

import psutil

from integration.coreproc import poll
from integration.upstreams import UpstreamSet
from minirouter.store import Change

from .conftest import StartCore
from .support import StoreBackend, get, put, route_item, upstream_item


def test_two_workers_converge_on_one_revision(
    backend: StoreBackend, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    store = backend.open()
    store.apply(put(upstream_item("a", a.address), upstream_item("b", b.address)))
    store.apply(put(route_item("r1", "a")))
    core = start_core(backend.url, workers=2)
    worker_pids = {core.healthz(i)["pid"] for i in range(2)}
    assert len(worker_pids) == 2
    children = {p.pid for p in psutil.Process(core.proc.pid).children()}
    assert worker_pids <= children

    for i in range(10):
        store.apply(put(route_item(f"w{i}", "b")))
    store.apply([Change.delete("routes", "r1")])
    rev = store.apply(put(route_item("w0", "a")))
    for worker in range(2):
        poll(
            lambda w=worker: core.revision(w) == rev,
            5,
            message=f"worker {worker} at revision {rev}",
        )
        assert core.healthz(worker)["routes"] == 10
    # Whichever worker takes a new connection, it routes by the same table.
    for _ in range(20):
        assert get(core.port, "/w0/x") == (200, "a")
        assert get(core.port, "/w5/x") == (200, "b")
        assert get(core.port, "/r1/x")[0] == 404

    def both_current() -> list[dict[str, Any]] | None:
        nodes = [n for n in store.nodes() if n.get("pid") in worker_pids]
        if len(nodes) == 2 and all(n.get("rev") == rev for n in nodes):
            return nodes
        return None

    nodes = poll(both_current, 6, message=lambda: f"both workers at {rev} in {store.nodes()}")
    assert sorted(n["worker"] for n in nodes) == [0, 1]
    assert len({n["node"] for n in nodes}) == 2


def test_heartbeat_and_per_route_stats(
    backend: StoreBackend, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    a = upstreams.http("a")
    store = backend.open()
    store.apply(put(upstream_item("a", a.address), route_item("r1", "a"), route_item("r2", "a")))
    core = start_core(backend.url)

    def me() -> dict[str, Any] | None:
        return next((n for n in store.nodes() if n.get("pid") == core.proc.pid), None)

    node = poll(me, 5, message=lambda: f"the core in store.nodes(): {store.nodes()}")
    assert node["rev"] == store.current_rev()
    assert node["listen"] == f"127.0.0.1:{core.port}"
    assert node["worker"] == 0
    assert isinstance(node["version"], str) and node["version"]
    assert abs(float(node["started"]) - time.time()) < 60
    # The heartbeat follows the revision.
    rev = store.apply(put(route_item("r3", "a")))
    poll(lambda: (me() or {}).get("rev") == rev, 6, message=f"heartbeat at revision {rev}")

    since = int(time.time()) - 1
    for _ in range(40):
        assert get(core.port, "/r1/x") == (200, "a")
    for _ in range(7):
        assert get(core.port, "/r2/x", timeout=5) == (200, "a")
    for _ in range(3):
        assert get(core.port, "/nowhere")[0] == 404

    def totals() -> dict[str, dict[str, float]] | None:
        out: dict[str, dict[str, float]] = {}
        for row in store.stats(since):
            assert row["node"] == node["node"], row
            sums = out.setdefault(row["route"], {})
            for name, value in row["counters"].items():
                sums[name] = sums.get(name, 0.0) + value
        done = (
            out.get("r1", {}).get("requests") == 40
            and out.get("r2", {}).get("requests") == 7
            and out.get("-", {}).get("requests") == 3  # matched no route
        )
        return out if done else None

    stats = poll(
        totals, 10, interval=0.2, message=lambda: f"stats for r1, r2: {store.stats(since)}"
    )
    assert stats["r1"]["2xx"] == 40
    assert stats["r2"]["2xx"] == 7
    assert stats["r1"].get("5xx", 0) == 0
    assert stats["r1"]["bytes"] > 0
    rows = [r for r in store.stats(since) if r["route"] == "r1"]
    for row in rows:
        counters = row["counters"]
        assert 0 < counters["p50"] <= counters["p99"], counters
        assert counters["p99"] < 5, counters  # seconds
    # Requests that matched no route are counted apart from every route.
    assert stats["-"]["4xx"] == 3
