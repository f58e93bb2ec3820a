"""The store contract, run against every backend (`backend` is parametrized: redis, sqlite)."""

from __future__ import annotations

import threading

import pytest

from minirouter.model import Config, Route, config_from_dict, from_dict
from minirouter.store import (
    Change,
    ConflictError,
    NotFoundError,
    Store,
    TrimmedError,
    ValidationError,
)

from .conftest import Backend
from .helpers import certificate, put, route, strip_time, upstream

CERT, KEY = certificate("example.com")

FULL = {
    "upstreams": [
        {
            "id": "api",
            "targets": ["127.0.0.1:9001", {"address": "127.0.0.1:9002", "weight": 3}],
            "timeouts": {"connect": 1.5, "read": 10, "idle": 30},
            "health": {"path": "/healthz", "interval": 2},
        },
        {"id": "pg-pool", "targets": ["10.0.0.5:5432"], "balance": "least_conn"},
    ],
    "routes": [
        {
            "id": "api-v1",
            "hosts": ["api.example.com", "*.api.example.com"],
            "path": "/v1/",
            "methods": ["GET", "POST"],
            "headers": {"X-Canary": "1"},
            "priority": 5,
            "upstream": "api",
            "strip_prefix": True,
            "request_headers": {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]},
        },
        {"id": "old", "path": "/old", "redirect": {"to": "https://x$path", "code": 301}},
    ],
    "listeners": [{"id": "pg", "listen": "0.0.0.0:15432", "upstream": "pg-pool"}],
    "certificates": [
        {
            "id": "example",
            "names": ["example.com", "*.example.com"],
            "cert": CERT,
            "key": KEY,
        }
    ],
}


def all_puts(config: Config) -> list[Change]:
    return [
        Change.put(item)
        for kind in ("upstreams", "routes", "listeners", "certificates")
        for item in getattr(config, kind)
    ]


def test_empty_store(store: Store) -> None:
    snap = store.snapshot()
    assert (snap.rev, snap.config, dict(snap.invalid)) == (0, Config(), {})
    assert store.current_rev() == 0
    assert store.changes_since(0) == []
    assert store.history() == []


def test_round_trip_of_every_kind(backend: Backend, store: Store) -> None:
    config = config_from_dict(FULL)
    assert store.apply(all_puts(config), actor="alice") == 1
    snap = store.snapshot()
    assert snap.rev == 1
    assert snap.config == config
    # Another instance (another process's view) reads the same.
    assert backend.open().snapshot() == snap


def test_one_apply_is_one_revision(store: Store) -> None:
    rev = store.apply(put(upstream("api"), route("a"), route("b")), actor="bob")
    assert rev == store.current_rev() == 1
    records = store.changes_since(0)
    assert [(r.rev, r.seq, r.kind, r.id, r.op) for r in records] == [
        (1, 1, "upstreams", "api", "put"),
        (1, 2, "routes", "a", "put"),
        (1, 3, "routes", "b", "put"),
    ]
    assert store.apply(put(route("c"))) == 2


def test_noops_make_no_revision(store: Store) -> None:
    store.apply(put(upstream("api"), route("a")))
    assert store.apply([]) == 1
    assert store.apply(put(upstream("api"), route("a"))) == 1  # same values
    assert store.apply(put(upstream("api"), route("a", priority=3))) == 2
    assert [(r.rev, r.id) for r in store.changes_since(1)] == [(2, "a")]  # the no-op is skipped


def test_changes_since_in_order_with_before_after_actor(store: Store) -> None:
    store.apply(put(upstream("api")), actor="alice")
    store.apply(put(upstream("api", port=9002), route("a")), actor="bob")
    store.apply([Change.delete("routes", "a")], actor="carol")
    records = store.changes_since(1)
    assert strip_time(records) == [
        (
            2,
            1,
            "upstreams",
            "api",
            "put",
            {"id": "api", "targets": ["127.0.0.1:9001"]},
            {"id": "api", "targets": ["127.0.0.1:9002"]},
            "bob",
        ),
        (2, 2, "routes", "a", "put", None, {"id": "a", "path": "/a/", "upstream": "api"}, "bob"),
        (
            3,
            1,
            "routes",
            "a",
            "delete",
            {"id": "a", "path": "/a/", "upstream": "api"},
            None,
            "carol",
        ),
    ]
    assert records[0].at == records[1].at > 0
    assert store.changes_since(3) == []
    assert len(store.changes_since(0)) == 4


def test_invalid_item_writes_nothing_and_names_the_field(store: Store) -> None:
    store.apply(put(upstream("api")))
    before = store.snapshot()
    # Built without from_dict: the store validates again.
    bad = Route(id="bad", path="no-slash", upstream="api")
    with pytest.raises(ValidationError) as err:
        store.apply(put(upstream("other"), route("fine"), bad))
    assert "routes/bad.path" in err.value.fields
    assert store.snapshot() == before
    assert store.current_rev() == 1
    assert len(store.history()) == 1


def test_id_must_match_the_change(store: Store) -> None:
    with pytest.raises(ValidationError) as err:
        store.apply([Change("upstreams", "x", "put", upstream("y"))])
    assert list(err.value.fields) == ["upstreams/x.id"]
    with pytest.raises(ValidationError) as err:
        store.apply([Change("routes", "x", "put", upstream("x"))])
    assert list(err.value.fields) == ["routes/x"]
    with pytest.raises(ValidationError) as err:
        store.apply([Change("widgets", "x", "delete")])
    assert list(err.value.fields) == ["widgets/x"]
    assert store.current_rev() == 0


def test_route_to_missing_upstream_refused(store: Store) -> None:
    with pytest.raises(ValidationError) as err:
        store.apply(put(route("a", "nope")))
    assert err.value.fields == {"routes/a.upstream": "unknown upstream 'nope'"}
    listener = from_dict("listeners", {"id": "l", "listen": "0.0.0.0:1", "upstream": "nope"})
    with pytest.raises(ValidationError) as err:
        store.apply([Change.put(listener)])
    assert list(err.value.fields) == ["listeners/l.upstream"]
    # In the same apply as its upstream it is fine.
    assert store.apply(put(route("a", "nope"), upstream("nope"))) == 1


def test_delete_of_a_used_upstream_refused(store: Store) -> None:
    listener = from_dict("listeners", {"id": "l", "listen": "0.0.0.0:1", "upstream": "api"})
    store.apply([*put(upstream("api"), route("a"), route("b")), Change.put(listener)])
    with pytest.raises(ValidationError) as err:
        store.apply([Change.delete("upstreams", "api")])
    assert err.value.fields == {"upstreams/api": "still used by listeners/l, routes/a, routes/b"}
    # Moving a user elsewhere in the same apply is not enough while others remain...
    with pytest.raises(ValidationError):
        store.apply([*put(upstream("new"), route("a", "new")), Change.delete("upstreams", "api")])
    assert store.current_rev() == 1
    # ...deleting every user with it is.
    rev = store.apply(
        [
            Change.delete("upstreams", "api"),
            Change.delete("routes", "a"),
            Change.delete("routes", "b"),
            Change.delete("listeners", "l"),
        ]
    )
    assert rev == 2
    assert store.snapshot().config == Config()


def test_delete_of_a_missing_item(store: Store) -> None:
    store.apply(put(upstream("api")))
    with pytest.raises(NotFoundError):
        store.apply([Change.delete("upstreams", "api"), Change.delete("routes", "ghost")])
    assert store.current_rev() == 1
    with pytest.raises(NotFoundError):  # deleted earlier in the same apply
        store.apply([Change.delete("upstreams", "api"), Change.delete("upstreams", "api")])
    assert store.snapshot().config.upstreams == (upstream("api"),)


def test_stale_expect_rev_is_a_conflict(backend: Backend, store: Store) -> None:
    other = backend.open()
    store.apply(put(upstream("api")))
    assert store.snapshot().rev == 1
    assert other.apply(put(route("a")), expect_rev=1) == 2
    with pytest.raises(ConflictError) as err:
        store.apply(put(route("b")), expect_rev=1)
    assert err.value.current_rev == 2
    assert [r.id for r in store.snapshot().config.routes] == ["a"]
    assert store.apply(put(route("b")), expect_rev=2) == 3


def test_concurrent_writers_without_expect_rev(backend: Backend, store: Store) -> None:
    store.apply(put(upstream("api")))
    writers = [backend.open() for _ in range(3)]
    errors: list[BaseException] = []

    def write(n: int, s: Store) -> None:
        try:
            for i in range(15):
                s.apply(put(route(f"w{n}-{i}")), actor=f"w{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n, s)) for n, s in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.current_rev() == 46
    assert [r.rev for r in store.changes_since(0)] == list(range(1, 47))
    assert len(store.snapshot().config.routes) == 45


def test_trimmed_history(backend: Backend) -> None:
    store = backend.open(history=3)
    store.apply(put(upstream("api")))
    for i in range(5):
        store.apply(put(route(f"r{i}")))
    assert store.current_rev() == 6
    with pytest.raises(TrimmedError):
        store.changes_since(0)
    with pytest.raises(TrimmedError):
        store.changes_since(2)
    assert [r.rev for r in store.changes_since(3)] == [4, 5, 6]
    with pytest.raises(TrimmedError):
        store.changes_since(7)  # newer than the store: it was reset


def test_trim_never_returns_part_of_a_revision(backend: Backend) -> None:
    store = backend.open(history=3)
    store.apply(put(upstream("api"), route("a")))
    store.apply(put(route("b")))
    store.apply(put(route("c")))
    # Redis may cut revision 1 in half; SQLite keeps whole revisions. Never half of one.
    try:
        records = store.changes_since(0)
    except TrimmedError:
        pass
    else:
        assert [(r.rev, r.seq) for r in records] == [(1, 1), (1, 2), (2, 1), (3, 1)]
    assert [r.id for r in store.changes_since(1)] == ["b", "c"]


def test_history_newest_first_with_whole_revisions_per_page(store: Store) -> None:
    store.apply(put(upstream("api")))
    store.apply(put(route("a"), route("b"), route("c")))
    store.apply(put(route("d")))
    store.apply(put(route("e")))
    assert [(r.rev, r.seq) for r in store.history()] == [
        (4, 1),
        (3, 1),
        (2, 3),
        (2, 2),
        (2, 1),
        (1, 1),
    ]
    assert [(r.rev, r.seq) for r in store.history(limit=3)] == [
        (4, 1),
        (3, 1),
        (2, 3),
        (2, 2),
        (2, 1),
    ]
    pages, before = [], None
    while page := store.history(limit=2, before_rev=before):
        pages.append([(r.rev, r.seq) for r in page])
        before = page[-1].rev
    assert pages == [[(4, 1), (3, 1)], [(2, 3), (2, 2), (2, 1)], [(1, 1)]]
    assert store.history(before_rev=1) == []


def test_rollback_restores_the_exact_config(store: Store) -> None:
    store.apply(put(upstream("api"), route("a")))
    store.apply(put(upstream("web"), route("b", "web")))
    at_2 = store.snapshot()
    store.apply(put(route("a", "web", priority=7), upstream("api", port=9100)))
    store.apply([Change.delete("routes", "b")])
    store.apply([Change.delete("upstreams", "api"), *put(route("c", "web"))])
    assert store.current_rev() == 5

    assert store.rollback(2, actor="ops") == 6
    snap = store.snapshot()
    assert snap.config == at_2.config
    assert {r.actor for r in store.changes_since(5)} == {"ops"}
    assert store.rollback(6) == 6  # already there: no new revision
    assert store.rollback(0) == 7
    assert store.snapshot().config == Config()
    with pytest.raises(NotFoundError):
        store.rollback(99)


def test_rollback_needs_the_history(backend: Backend) -> None:
    store = backend.open(history=2)
    store.apply(put(upstream("api")))
    for i in range(4):
        store.apply(put(route(f"r{i}")))
    with pytest.raises(TrimmedError):
        store.rollback(1)
    assert store.current_rev() == 5
    assert store.rollback(3) == 6
    assert [r.id for r in store.snapshot().config.routes] == ["r0", "r1"]


def test_values_written_behind_our_back(backend: Backend, store: Store) -> None:
    store.apply(put(upstream("api"), route("good")))
    backend.raw_put("routes", "broken-json", "{not json")
    backend.raw_put("routes", "bad-field", '{"id": "bad-field", "path": "x", "upstream": "api"}')
    backend.raw_put("routes", "other-id", '{"id": "elsewhere", "upstream": "api"}')
    backend.raw_put("routes", "dangling", '{"id": "dangling", "upstream": "gone"}')
    backend.raw_put("upstreams", "junk", "[1, 2]")
    snap = backend.open().snapshot()
    assert [r.id for r in snap.config.routes] == ["good"]
    assert [u.id for u in snap.config.upstreams] == ["api"]
    assert set(snap.invalid) == {
        "routes/broken-json",
        "routes/bad-field",
        "routes/other-id",
        "routes/dangling",
        "upstreams/junk",
    }
    assert snap.invalid["routes/broken-json"].startswith("invalid JSON")
    assert snap.invalid["routes/bad-field"].startswith("path:")
    assert snap.invalid["routes/dangling"] == "upstream: unknown upstream 'gone'"
    # The store keeps working: the broken values can be replaced or deleted.
    rev = store.apply([Change.delete("routes", "broken-json"), *put(route("bad-field"))])
    assert rev == 2
    record = store.changes_since(1)[1]
    assert record.before == {"id": "bad-field", "path": "x", "upstream": "api"}
    assert "routes/bad-field" not in store.snapshot().invalid


def test_a_value_changed_behind_our_back_is_not_lost_track_of(
    backend: Backend, store: Store
) -> None:
    store.apply(put(upstream("api")))
    store.snapshot()
    backend.raw_put("upstreams", "api", '{"id":"api","targets":["127.0.0.1:7777"]}')
    assert store.apply(put(upstream("api", port=8888))) == 2
    (record,) = store.changes_since(1)
    assert record.before == {"id": "api", "targets": ["127.0.0.1:7777"]}
    assert store.snapshot().config.upstreams == (upstream("api", port=8888),)
