"""Routes change under traffic: no request and no WebSocket is dropped, and requests in flight
finish on the route they matched."""

from __future__ import annotations

import threading

from integration.coreproc import poll
from integration.httpclient import Response, request
from integration.upstreams import UpstreamSet
from minirouter.store import Change

from .conftest import StartCore
from .support import (
    StoreBackend,
    TrafficLoop,
    WebSocketLoop,
    put,
    route_item,
    upstream_item,
    wait_served,
)

CHANGES = 50


def test_fifty_changes_under_traffic_drop_nothing(
    backend: StoreBackend, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    ws = upstreams.websocket("ws")
    store = backend.open()
    store.apply(
        put(
            upstream_item("a", a.address),
            upstream_item("b", b.address),
            upstream_item("ws", ws.address),
            route_item("main", "a", path="/main/"),
            route_item("ws", "ws", path="/ws/"),
        )
    )
    core = start_core(backend.url)

    # A slow request in flight across the changes keeps the route (and upstream) it matched.
    slow: list[Response | BaseException] = []

    def slow_request() -> None:
        try:
            slow.append(request(core.port, "GET", "/main/slow", headers={"X-Delay": "1.5"}))
        except BaseException as exc:
            slow.append(exc)

    slow_thread = threading.Thread(target=slow_request, daemon=True)

    def ok(status: int, name: str | None) -> bool:
        return status == 200 and name in ("a", "b")

    with (
        TrafficLoop(core.port, "/main/x", ok, max_seconds=60) as traffic,
        WebSocketLoop(core.port, "/ws/chat", max_seconds=60) as wsloop,
    ):
        traffic.wait_requests(20)
        slow_thread.start()
        poll(
            lambda: any(r.target == "/main/slow" for r in a.snapshot()),
            5,
            interval=0.01,
            message="the slow request at upstream a",
        )
        for i in range(CHANGES):
            match i % 5:
                case 0:  # the route under traffic moves to the other upstream
                    change = put(route_item("main", "b" if i % 10 == 0 else "a", path="/main/"))
                case 1:  # a route is added
                    change = put(route_item(f"extra{i}", "b"))
                case 2:  # the WebSocket's route is replaced while the tunnel is open
                    change = put(route_item("ws", "ws", path="/ws/", priority=i))
                case 3:  # an upstream in use changes
                    change = put(upstream_item("a", a.address, keepalive=8 + i))
                case _:  # a route is deleted
                    change = [Change.delete("routes", f"extra{i - 3}")]
            rev = store.apply(change)
            poll(lambda r=rev: core.revision() >= r, 5, interval=0.005, message=f"rev {rev}")
            traffic.wait_requests(5)
        slow_thread.join(10)
        traffic.wait_requests(20)
    assert traffic.failures == [], traffic.failures[:10]
    assert wsloop.failures == [], wsloop.failures
    assert wsloop.messages > CHANGES
    assert traffic.served_by.get("a", 0) > 0 and traffic.served_by.get("b", 0) > 0
    assert len(slow) == 1 and isinstance(slow[0], Response), slow
    assert slow[0].status == 200 and slow[0].json()["name"] == "a", slow[0].describe()
    # And the last config is what is served now.
    assert core.revision() == store.current_rev()
    wait_served(core.port, "/main/x", "a", 1)
    print(
        f"[{backend.name}] {traffic.requests} requests, {wsloop.messages} WebSocket messages "
        f"during {CHANGES} changes; served by {traffic.served_by}"
    )
