"""A running core follows the store: routes added, changed and deleted through `Store.apply`
are served within a bounded time, and /healthz reports the store's revision."""

from __future__ import annotations

import pytest

from integration.coreproc import poll
from integration.upstreams import UpstreamSet
from minirouter.store import Change

from .conftest import StartCore
from .support import StoreBackend, get, put, route_item, upstream_item, wait_served

DEADLINE = 5.0


def test_route_added_changed_deleted_is_served(
    backend: StoreBackend,
    upstreams: UpstreamSet,
    start_core: StartCore,
    record_property: pytest.RecordProperty,
) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    store = backend.open()
    store.apply(
        put(upstream_item("a", a.address), upstream_item("b", b.address), route_item("r1", "a"))
    )
    core = start_core(backend.url)
    assert get(core.port, "/r1/x") == (200, "a")
    assert core.revision() == store.current_rev()
    health = core.store_health()
    assert health["connected"] is True
    assert health["from_local_snapshot"] is False
    assert health["store_behind"] is None
    assert core.metric("minirouter_store_up") == 1

    timings: dict[str, float] = {}
    # added
    assert get(core.port, "/r2/x")[0] == 404
    store.apply(put(route_item("r2", "b")))
    timings["add"] = wait_served(core.port, "/r2/x", "b", DEADLINE)
    # changed: another upstream
    store.apply(put(route_item("r2", "a")))
    timings["change"] = wait_served(core.port, "/r2/x", "a", DEADLINE)
    # changed: another path (the old one is gone in the same revision)
    store.apply(put(route_item("r2", "a", path="/moved/")))
    timings["move"] = wait_served(core.port, "/moved/x", "a", DEADLINE)
    assert get(core.port, "/r2/x")[0] == 404
    # deleted
    store.apply([Change.delete("routes", "r2")])
    timings["delete"] = wait_served(core.port, "/moved/x", 404, DEADLINE)
    # several changes in one revision, including an upstream the route needs
    c = upstreams.http("c")
    store.apply(put(upstream_item("c", c.address), route_item("r3", "c")))
    timings["with upstream"] = wait_served(core.port, "/r3/x", "c", DEADLINE)

    rev = store.current_rev()
    poll(lambda: core.revision() == rev, DEADLINE, message=f"revision {rev} in /healthz")
    assert core.healthz()["routes"] == 2
    assert get(core.port, "/r1/x") == (200, "a")  # untouched all along
    for name, seconds in timings.items():
        record_property(f"propagation_{name}_ms", round(seconds * 1000, 1))
    print(f"[{backend.name}] propagation (s, incl. polling):", timings)


def test_revision_only_changes_advance_the_revision(
    backend: StoreBackend, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    """A change to an upstream (no route touched) still moves the revision the core reports."""
    a = upstreams.http("a")
    store = backend.open()
    store.apply(put(upstream_item("a", a.address), route_item("r1", "a")))
    core = start_core(backend.url)
    rev = store.apply(put(upstream_item("a", a.address, keepalive=8)))
    poll(lambda: core.revision() == rev, DEADLINE, message=f"revision {rev}")
    assert get(core.port, "/r1/") == (200, "a")
