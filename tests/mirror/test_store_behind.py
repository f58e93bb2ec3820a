"""A store that comes back empty, or at a lower revision than the core serves (restarted without
persistence, restored from an old backup, wiped) is not applied: the core keeps serving what it
has and reports `store.store_behind` in /healthz."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from integration.coreproc import poll
from integration.upstreams import UpstreamSet

from .conftest import RedisFactory, StartCore, make_backend
from .support import (
    StoreBackend,
    StoreCore,
    get,
    low_free_port,
    put,
    route_item,
    upstream_item,
    wait_served,
)


def seed(backend: StoreBackend, upstreams: UpstreamSet) -> int:
    a = upstreams.http("a")
    store = backend.open()
    store.apply(put(upstream_item("a", a.address), route_item("r1", "a")))
    store.apply(put(route_item("r2", "a")))
    return store.apply(put(route_item("r3", "a")))


def check_keeps_serving(core_rev: int, core: StoreCore) -> None:
    # Whichever comes first: the core reports the store behind, or it moves off its revision.
    poll(
        lambda: core.store_health()["store_behind"] is not None or core.revision() != core_rev,
        10,
        message=lambda: f"store.store_behind in /healthz (now {core.healthz()})",
    )
    health = core.healthz()
    assert health["revision"] == core_rev, health
    assert health["store"]["store_behind"][1] == core_rev, health
    assert core.metric("minirouter_store_behind") == 1
    for rid in ("r1", "r2", "r3"):
        assert get(core.port, f"/{rid}/x") == (200, "a"), rid


def test_redis_restarted_empty(
    redis_factory: RedisFactory, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    server = redis_factory(persist=False)
    backend = StoreBackend("redis", server.url, redis=server)
    try:
        rev = seed(backend, upstreams)
        core = start_core(backend.url)
        assert core.revision() == rev
        server.kill()
        poll(lambda: core.store_health()["connected"] is False, 5, message="the outage seen")
        server.start()  # no persistence: empty, revision 0
        check_keeps_serving(rev, core)
        assert core.store_health()["store_behind"][0] == 0
    finally:
        backend.close()


def test_redis_back_at_a_lower_revision(
    redis_factory: RedisFactory, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    server = redis_factory(persist=True)
    backend = StoreBackend("redis", server.url, redis=server)
    try:
        rev = seed(backend, upstreams)
        core = start_core(backend.url)
        server.kill()
        poll(lambda: core.store_health()["connected"] is False, 5, message="the outage seen")
        # An older data set: wiped, then one revision written aside, on another port.
        shutil.rmtree(server.workdir / "appendonlydir")
        other = low_free_port()
        server.start(port=other)
        older = StoreBackend("redis", f"redis://127.0.0.1:{other}/0")
        try:
            assert older.open().apply(put(upstream_item("a", "127.0.0.1:9"))) == 1
        finally:
            older.close()
        server.shutdown()
        server.start()
        check_keeps_serving(rev, core)
        assert core.store_health()["store_behind"][0] == 1
    finally:
        backend.close()


def test_sqlite_wiped_under_a_running_core(
    request: pytest.FixtureRequest, tmp_path: Path, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    backend = make_backend(request, "sqlite", tmp_path)
    try:
        rev = seed(backend, upstreams)
        core = start_core(backend.url)
        assert core.revision() == rev
        backend.raw_reset()
        check_keeps_serving(rev, core)
        assert core.store_health()["store_behind"][0] == 0
    finally:
        backend.close()


def test_core_from_disk_snapshot_meets_an_empty_store(
    redis_factory: RedisFactory, upstreams: UpstreamSet, start_core: StartCore, tmp_path: Path
) -> None:
    """The case the mirror does handle: started from its disk snapshot, the store empty."""
    server = redis_factory(persist=False)
    backend = StoreBackend("redis", server.url, redis=server)
    try:
        rev = seed(backend, upstreams)
        snapshot = tmp_path / "snap.json"
        first = start_core(backend.url, snapshot=snapshot)
        poll(snapshot.exists, 5, message="the disk snapshot")
        first.stop()
        server.kill()
        core = start_core(backend.url, snapshot=snapshot)
        assert core.store_health()["from_local_snapshot"] is True
        server.start()  # empty
        check_keeps_serving(rev, core)
        health = core.store_health()
        assert health["store_behind"] == [0, rev], health
        assert health["from_local_snapshot"] is True, health
    finally:
        backend.close()


class Reset:
    """Wipe the store behind a core: Redis restarted without persistence, SQLite rows deleted
    (the file's epoch row stays: only the first write after revision 0 starts a history)."""

    def __init__(self, backend: StoreBackend) -> None:
        self.backend = backend

    def __call__(self) -> None:
        if self.backend.redis is not None:
            self.backend.redis.kill()
            self.backend.redis.start()
        else:
            self.backend.raw_reset()


@pytest.mark.parametrize("name", ["redis", "sqlite"])
def test_store_reset_and_republished_while_the_core_was_away(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    name: str,
    upstreams: UpstreamSet,
    start_core: StartCore,
) -> None:
    """The store's epoch tells the histories apart: the core reloads the new one whole, even
    though its revision is past the core's."""
    if name == "redis":
        factory: RedisFactory = request.getfixturevalue("redis_factory")
        server = factory(persist=False)
        backend = StoreBackend("redis", server.url, redis=server)
    else:
        backend = make_backend(request, "sqlite", tmp_path)
    try:
        rev = seed(backend, upstreams)  # r1, r2, r3 at revision 3
        old_epoch = backend.open().head()[0]
        core = start_core(backend.url)
        assert core.revision() == rev
        assert core.store_health()["epoch"] == old_epoch
        core.pause()  # away: neither serving nor reading the store
        try:
            Reset(backend)()
            a = upstreams.http("a2")
            store = backend.open()
            store.apply(put(upstream_item("a", a.address)))
            for rid in ("n2", "n3", "n4", "n5"):
                store.apply(put(route_item(rid, "a")))
            new_epoch, new_rev = store.head()
            assert new_rev == 5 and new_epoch != old_epoch
        finally:
            core.resume()
        poll(lambda: core.revision() == 5, 10, message="the core at revision 5")
        # Exactly the store's config: nothing of the old history mixed in.
        routes = {rid: get(core.port, f"/{rid}/x") for rid in ("r1", "r3", "n2", "n5")}
        assert routes == {
            "r1": (404, None),
            "r3": (404, None),
            "n2": (200, "a2"),
            "n5": (200, "a2"),
        }, routes
        health = core.store_health()
        assert (health["epoch"], health["store_behind"]) == (new_epoch, None), health
        # And it follows the new history.
        rev6 = store.apply(put(route_item("n6", "a")))
        wait_served(core.port, "/n6/x", "a2", 5)
        assert core.revision() == rev6
    finally:
        backend.close()


def test_an_older_copy_of_the_same_history_written_past_the_core(
    redis_factory: RedisFactory, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    """A Redis restored from a copy older than the core's revision, then written past it while
    the core was away: same epoch, same revision numbers, other changes. The core notices that
    its last revision is not the store's and reloads."""
    server = redis_factory(persist=True)
    backend = StoreBackend("redis", server.url, redis=server)
    try:
        a = upstreams.http("a")
        store = backend.open()
        store.apply(put(upstream_item("a", a.address), route_item("r1", "a")))
        assert store.apply(put(route_item("r2", "a"))) == 2
        server.shutdown()  # the append-only file is flushed: copy it at revision 2
        copy = server.workdir / "copy"
        shutil.copytree(server.workdir / "appendonlydir", copy)
        server.start()
        core = start_core(backend.url)
        assert store.apply(put(route_item("r3", "a"))) == 3  # applied from the stream
        wait_served(core.port, "/r3/x", "a", 5)
        core.pause()
        try:
            server.kill()
            shutil.rmtree(server.workdir / "appendonlydir")
            shutil.copytree(copy, server.workdir / "appendonlydir")
            server.start()
            writer = backend.open()
            assert writer.current_rev() == 2
            writer.apply(put(route_item("f3", "a")))
            assert writer.apply(put(route_item("f4", "a"))) == 4
        finally:
            core.resume()
        poll(lambda: core.revision() == 4, 10, message="the core at revision 4")
        routes = {rid: get(core.port, f"/{rid}/x")[0] for rid in ("r2", "r3", "f3", "f4")}
        assert routes == {"r2": 200, "r3": 404, "f3": 200, "f4": 200}, routes
    finally:
        backend.close()
