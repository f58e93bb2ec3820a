"""Match (the fast path's explain), nodes (heartbeats) and stats, through the API."""

from __future__ import annotations

import json
import time

from minirouter.fastpath import RouteTable
from minirouter.model import from_dict

from .conftest import ROUTE, UPSTREAM, Api, assert_error

ROUTES = [
    ROUTE,
    {"id": "v1-host", "hosts": ["api.example.com"], "path": "/v1/", "upstream": "api"},
    {"id": "v1-post", "path": "/v1/", "methods": ["POST"], "upstream": "api", "priority": 5},
    {"id": "strip", "path": "/s/", "strip_prefix": True, "upstream": "api"},
    {"id": "moved", "path": "/old", "path_type": "exact", "redirect": {"to": "/new", "code": 301}},
]


def setup_routes(api: Api) -> None:
    response = api.post("/apply", {"upstreams": [UPSTREAM], "routes": ROUTES})
    assert response.status_code == 200, response.json


def test_match_winner_and_losers(api: Api) -> None:
    setup_routes(api)
    response = api.post(
        "/match",
        {"host": "API.example.com:8080", "path": "/v1/users?x=1", "method": "get"},
        as_="viewer",
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body["route"] == "v1-host" and body["path"] == "/v1/users" and body["upstream"] == "api"
    assert body["redirect"] is None and body["rev"] == api.store.current_rev()
    reasons = {c["route"]: (c["matched"], c["reason"]) for c in body["candidates"]}
    assert reasons["v1-host"] == (True, "winner")
    assert reasons["r1"][0] is True and "host" in reasons["r1"][1]
    assert reasons["v1-post"][0] is False and "method" in reasons["v1-post"][1]
    assert reasons["strip"] == (False, "path does not match")
    # The same answer as the table the core builds.
    table = RouteTable([from_dict("routes", r) for r in ROUTES])
    expected = table.explain("API.example.com:8080", "/v1/users", "GET", {})
    assert [c["route"] for c in body["candidates"]] == [c.route_id for c in expected.candidates]


def test_match_rewrites_redirects_and_misses(api: Api) -> None:
    setup_routes(api)
    stripped = api.post("/match", {"host": "x", "path": "/s/a/b"}).json
    assert stripped["route"] == "strip" and stripped["path"] == "/a/b"
    moved = api.post("/match", {"host": "x", "path": "/old"}).json
    assert moved["route"] == "moved" and moved["redirect"] == {"to": "/new", "code": 301}
    assert moved["upstream"] is None
    missed = api.post("/match", {"host": "x", "path": "/nothing"}).json
    assert missed["route"] is None and missed["path"] is None
    assert all(not c["matched"] for c in missed["candidates"])
    headers = api.post(
        "/match", {"host": "x", "path": "/v1/", "method": "POST", "headers": {"X-A": "1"}}
    )
    assert headers.json["route"] == "v1-post"


def test_match_follows_the_config(api: Api) -> None:
    setup_routes(api)
    assert api.post("/match", {"host": "x", "path": "/s/"}).json["route"] == "strip"
    api.delete("/routes/strip")
    assert api.post("/match", {"host": "x", "path": "/s/"}).json["route"] is None


def test_match_validation(api: Api) -> None:
    assert_error(api.post("/match", {"path": "/"}), 422, "host")
    assert_error(api.post("/match", {"host": "x", "path": "no-slash"}), 422, "path")
    assert_error(api.post("/match", {"host": "x", "path": "/", "method": "G E T"}), 422, "method")
    assert_error(
        api.post("/match", {"host": "x", "path": "/", "headers": {"a": 1}}), 422, "headers"
    )
    assert_error(api.post("/match", {"host": "x", "path": "/", "extra": 1}), 422, "extra")


def test_nodes(api: Api) -> None:
    rev = api.seed()
    store = api.store
    epoch = store.head()[0]
    assert epoch
    store.heartbeat(
        "core-a",
        {"rev": rev, "epoch": epoch, "version": "0.1.0", "pid": 10, "seen": 1234.5},
        ttl=30,
    )
    store.heartbeat("core-b", {"rev": rev - 1, "epoch": epoch, "pid": 11}, ttl=30)
    # The store's revision, but of an earlier history (reset or republished since).
    store.heartbeat("core-c", {"rev": rev, "epoch": "an-earlier-history", "pid": 12}, ttl=30)
    response = api.get("/nodes", as_="viewer")
    assert response.status_code == 200
    assert response.json == {
        "rev": rev,
        "nodes": [
            {
                "node": "core-a",
                "rev": rev,
                "epoch": epoch,
                "version": "0.1.0",
                "pid": 10,
                "seen": 1234.5,
                "current": True,
                "last_seen": 1234.5,
                "health": None,
            },
            {
                "node": "core-b",
                "rev": rev - 1,
                "epoch": epoch,
                "pid": 11,
                "current": False,
                "last_seen": None,
                "health": None,
            },
            {
                "node": "core-c",
                "rev": rev,
                "epoch": "an-earlier-history",
                "pid": 12,
                "current": False,
                "last_seen": None,
                "health": None,
            },
        ],
    }


def test_target_health_over_the_cores(api: Api) -> None:
    """Heartbeats with per-target health, written through the real store, read back parsed
    (GET /nodes) and aggregated per target (GET /health, GET /upstreams/{id}/health)."""
    rev = api.seed()  # upstream api: 127.0.0.1:9001
    both = {**UPSTREAM, "targets": ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]}
    assert api.put("/upstreams/api", both).status_code == 200
    assert api.post("/upstreams", {"id": "quiet", "targets": ["127.0.0.1:9100"]}).status_code == 201
    store = api.store
    for node, second in (("core-a", True), ("core-b", False)):
        health = {"api": {"127.0.0.1:9001": True, "127.0.0.1:9002": second}, "gone": {"x:1": False}}
        store.heartbeat(node, {"rev": rev, "health": json.dumps(health)}, ttl=30)
    store.heartbeat("core-c", {"rev": rev, "health": "not json"}, ttl=30)

    nodes = {n["node"]: n for n in api.get("/nodes", as_="viewer").json["nodes"]}
    assert nodes["core-b"]["health"] == {
        "api": {"127.0.0.1:9001": True, "127.0.0.1:9002": False},
        "gone": {"x:1": False},
    }
    assert nodes["core-c"]["health"] is None

    one = api.get("/upstreams/api/health", as_="viewer")
    assert one.status_code == 200, one.json
    body = one.json
    assert body["upstream"] == "api" and body["cores"] == 3
    assert body["rev"] == store.current_rev()
    by_address = {t["address"]: t for t in body["targets"]}
    assert list(by_address) == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
    assert by_address["127.0.0.1:9001"] == {
        "address": "127.0.0.1:9001",
        "state": "up",
        "up": 2,
        "down": 0,
        "cores": 3,
        "down_on": [],
        "text": "up on 2/3 cores",
    }
    partial = by_address["127.0.0.1:9002"]
    assert (partial["state"], partial["down_on"]) == ("partial", ["core-b"])
    assert partial["text"] == "down on 1/3 cores (core-b)"
    assert by_address["127.0.0.1:9003"]["state"] == "unknown"
    assert by_address["127.0.0.1:9003"]["text"] == "no data"

    fleet = api.get("/health", as_="viewer").json
    assert fleet["cores"] == 3 and set(fleet["upstreams"]) == {"api", "quiet"}
    assert fleet["upstreams"]["api"] == body["targets"]
    assert fleet["upstreams"]["quiet"][0]["state"] == "unknown"

    # Down on every core that reports it.
    store.heartbeat(
        "core-a", {"rev": rev, "health": json.dumps({"quiet": {"127.0.0.1:9100": False}})}, ttl=30
    )
    quiet = api.get("/upstreams/quiet/health").json["targets"][0]
    assert (quiet["state"], quiet["text"]) == ("down", "down on 1/3 cores (core-a)")

    assert_error(api.get("/upstreams/nope/health"), 404)
    assert_error(api.get("/health", as_=None), 401)


def test_stats(api: Api) -> None:
    now = int(time.time())
    store = api.store
    store.publish_stats(
        "n1", now - 2, {"api": {"requests": 10, "2xx": 9, "5xx": 1, "p99": 0.5}}, ttl=60
    )
    store.publish_stats(
        "n2",
        now - 2,
        {"api": {"requests": 5, "2xx": 5, "p99": 0.25}, "web": {"requests": 1}},
        ttl=60,
    )
    store.publish_stats("n1", now - 1, {"api": {"requests": 3, "2xx": 3, "p99": 0.1}}, ttl=60)
    store.publish_stats("n1", now - 500, {"api": {"requests": 99}}, ttl=600)  # before the window
    body = api.get("/stats", as_="viewer").json
    assert body["now"] >= now and body["since"] == body["now"] - 60
    assert body["routes"]["api"] == [
        {"second": now - 2, "requests": 15, "2xx": 14, "5xx": 1, "p99": 0.5},
        {"second": now - 1, "requests": 3, "2xx": 3, "p99": 0.1},
    ]
    assert body["routes"]["web"] == [{"second": now - 2, "requests": 1}]
    assert body["total"][0] == {"second": now - 2, "requests": 16, "2xx": 14, "5xx": 1, "p99": 0.5}
    since = api.get(f"/stats?since={now - 1}").json
    assert list(since["routes"]) == ["api"] and len(since["total"]) == 1
    older = api.get(f"/stats?since={now - 600}").json
    assert older["routes"]["api"][0] == {"second": now - 500, "requests": 99}
    assert_error(api.get("/stats?since=yesterday"), 400, "since")
    assert_error(api.get("/stats?since=-5"), 400, "since")
    # Beyond what the stores hold (SQLite's 64-bit INTEGER): refused, not a server error.
    assert_error(api.get(f"/stats?since={2**63}"), 400, "since")
    assert api.get(f"/stats?since={2**63 - 1}").json["routes"] == {}
