"""The change history is trimmed behind a stopped core: when it runs again it cannot follow the
stream without a gap, reloads the snapshot, and ends with exactly the store's routes."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.coreproc import poll
from integration.upstreams import UpstreamSet
from minirouter.store import Change, TrimmedError

from .conftest import RedisFactory, StartCore
from .support import StoreBackend, get, put, route_ids, route_item, upstream_item

CAP = 5  # the writer's history cap (URL parameter `history`)


@pytest.mark.parametrize("name", ["sqlite", "redis"])
def test_stream_trimmed_behind_a_stopped_core(
    name: str,
    tmp_path: Path,
    redis_factory: RedisFactory,
    upstreams: UpstreamSet,
    start_core: StartCore,
) -> None:
    if name == "redis":
        # The store trims with XADD MAXLEN ~, which drops whole stream nodes only: small nodes
        # make a small cap bite.
        server = redis_factory(extra=("--stream-node-max-entries", "2"))
        backend = StoreBackend("redis", server.url, redis=server)
    else:
        path = tmp_path / "store.db"
        backend = StoreBackend("sqlite", f"sqlite://{path}", path=path)
    try:
        a, b = upstreams.http("a"), upstreams.http("b")
        writer = backend.open(history=CAP)
        first = writer.apply(
            put(
                upstream_item("a", a.address),
                upstream_item("b", b.address),
                *(route_item(f"keep{i}", "a") for i in range(5)),
            )
        )
        core = start_core(backend.url)
        assert core.revision() == first
        core.pause()
        try:
            for i in range(20):
                writer.apply(put(route_item(f"new{i}", "a" if i % 2 else "b")))
            for i in range(3):
                writer.apply([Change.delete("routes", f"keep{i}")])
            writer.apply(put(route_item("keep3", "b")))
            last = writer.apply(put(route_item("new0", "a", path="/renamed/")))
            with pytest.raises(TrimmedError):
                writer.changes_since(first)  # really trimmed past the core
            assert len(writer.history(limit=1000)) < last - first
        finally:
            core.resume()

        poll(lambda: core.revision() == last, 10, message=f"revision {last} after resuming")
        snap = writer.snapshot()
        assert core.healthz()["routes"] == len(snap.config.routes) == 22
        assert route_ids(writer) == {r.id for r in snap.config.routes}
        upstream_of = {r.id: r.upstream for r in snap.config.routes}
        for route in snap.config.routes:
            assert get(core.port, f"{route.path}x") == (200, upstream_of[route.id]), route.id
        for i in range(3):
            assert get(core.port, f"/keep{i}/x")[0] == 404
        assert get(core.port, "/new0/x")[0] == 404
        assert core.store_health()["connected"] is True
        assert "trimmed" in core.stderr_text(), core.stderr_text()[-2000:]
    finally:
        backend.close()
