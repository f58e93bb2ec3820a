"""The store goes away under load: the core keeps serving without a failed request, says so,
and catches up with the changes made while it could not see the store once it is back."""

from __future__ import annotations

import time

from integration.coreproc import poll
from integration.upstreams import UpstreamSet
from minirouter.store import Change

from .conftest import RedisFactory, StartCore
from .support import (
    StoreBackend,
    TrafficLoop,
    get,
    low_free_port,
    put,
    route_item,
    upstream_item,
    wait_served,
)


def test_redis_killed_under_load_then_back_with_changes(
    redis_factory: RedisFactory, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    server = redis_factory(persist=True)  # append-only file: the data survives kill and restart
    backend = StoreBackend("redis", server.url, redis=server)
    try:
        a, b = upstreams.http("a"), upstreams.http("b")
        store = backend.open()
        store.apply(
            put(
                upstream_item("a", a.address),
                upstream_item("b", b.address),
                route_item("load", "a", path="/load/"),
                route_item("old", "a"),
            )
        )
        core = start_core(backend.url)
        assert core.store_health()["connected"] is True
        allowed = {"a"}  # who may answer /load/: "b" too once the changes are caught up

        def ok(status: int, name: str | None) -> bool:
            return status == 200 and name in allowed

        with TrafficLoop(core.port, "/load/x", ok, max_seconds=30) as traffic:
            traffic.wait_requests(50)
            started = time.monotonic()
            server.kill()
            poll(
                lambda: core.store_health()["connected"] is False,
                5,
                message="/healthz store.connected false",
            )
            health = core.store_health()
            assert isinstance(health["outage_since"], float), health
            assert core.metric("minirouter_store_up") == 0
            assert core.healthz()["revision"] == 1

            # Changes made while the core cannot see the store: the same data directory, served
            # on another port for a moment, written to, and flushed to disk on shutdown.
            other_port = low_free_port()
            server.start(port=other_port)
            writer = backend.open()  # on the original URL: used once the server is back
            with server.client(other_port) as direct:
                assert direct.get("{minirouter}:rev") == "1"
            aside = StoreBackend("redis", f"redis://127.0.0.1:{other_port}/0")
            try:
                aside_store = aside.open()
                aside_store.apply(put(route_item("new", "b")))
                aside_store.apply([Change.delete("routes", "old")])
                changed_rev = aside_store.apply(put(route_item("load", "b", path="/load/")))
            finally:
                aside.close()
            server.shutdown()
            # The whole outage lasts at least 3 s of traffic.
            poll(lambda: time.monotonic() - started >= 3, 5, message="3 s of outage")
            assert core.store_health()["connected"] is False
            before_restart = traffic.requests

            allowed.add("b")
            server.start()  # the original port, the same data
            poll(
                lambda: core.store_health()["connected"] is True,
                10,
                message="/healthz store.connected true again",
            )
            served_by_b = wait_served(core.port, "/load/x", "b", 5)
            traffic.wait_requests(50)
        assert traffic.failures == [], traffic.failures[:10]
        assert before_restart > 100, "too little traffic during the outage"
        assert core.revision() == changed_rev == writer.current_rev()
        health = core.store_health()
        assert health["outage_since"] is None
        assert health["store_behind"] is None
        assert core.metric("minirouter_store_up") == 1
        assert get(core.port, "/new/x") == (200, "b")
        assert get(core.port, "/old/x")[0] == 404
        print(
            f"requests {traffic.requests} ({before_restart} before the store came back), "
            f"caught up {served_by_b:.3f} s after the store answered again"
        )

        # And it follows the stream again.
        rev = writer.apply([Change.delete("routes", "new")])
        wait_served(core.port, "/new/x", 404, 5)
        assert core.revision() == rev
    finally:
        backend.close()


def test_redis_paused_under_load(
    redis_factory: RedisFactory, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    """CLIENT PAUSE: the server holds every command. The mirror's calls time out (socket
    timeout) instead of hanging, the core reports the outage, requests never notice, and it
    resumes following the store when the pause ends."""
    server = redis_factory(persist=False)
    backend = StoreBackend("redis", server.url, redis=server)
    try:
        a, b = upstreams.http("a"), upstreams.http("b")
        store = backend.open()
        store.apply(
            put(
                upstream_item("a", a.address),
                upstream_item("b", b.address),
                route_item("load", "a", path="/load/"),
            )
        )
        core = start_core(f"{backend.url}?socket_timeout=0.5")
        pause = 4.0
        with TrafficLoop(core.port, "/load/x", lambda s, n: s == 200, max_seconds=30) as traffic:
            traffic.wait_requests(20)
            with server.client() as admin:
                admin.execute_command("CLIENT", "PAUSE", int(pause * 1000), "ALL")
            poll(
                lambda: core.store_health()["connected"] is False,
                pause,
                message="/healthz store.connected false during the pause",
            )
            assert core.metric("minirouter_store_up") == 0
            traffic.wait_requests(20)  # served while the store is paused
            poll(
                lambda: core.store_health()["connected"] is True,
                10,
                message="/healthz store.connected true after the pause",
            )
            rev = store.apply(put(route_item("load", "b", path="/load/")))
            wait_served(core.port, "/load/x", "b", 5)
            traffic.wait_requests(20)
        assert traffic.failures == [], traffic.failures[:10]
        assert core.revision() == rev
        assert core.metric("minirouter_store_up") == 1
    finally:
        backend.close()
