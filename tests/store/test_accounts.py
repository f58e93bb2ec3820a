"""Control-plane accounts in the store (users, tokens, shared secrets), on both backends."""

from __future__ import annotations

import contextlib
import sqlite3
import threading

import pytest
import redis

from minirouter.store import Store
from minirouter.store.redis import RedisStore

from .conftest import Backend


def test_users_round_trip(backend: Backend, store: Store) -> None:
    alice = {"name": "alice", "role": "admin", "password": {"alg": "scrypt", "hash": "x"}}
    assert store.add_user(alice)
    assert store.add_user({"name": "bob", "role": "viewer"})
    other = backend.open()  # another process's view
    assert other.user("alice") == alice
    assert other.user("nobody") is None
    assert [u["name"] for u in other.users()] == ["alice", "bob"]


def test_add_user_keeps_the_first_unless_replace(store: Store) -> None:
    assert store.add_user({"name": "alice", "role": "admin"})
    assert not store.add_user({"name": "alice", "role": "viewer"})
    assert store.user("alice") == {"name": "alice", "role": "admin"}
    assert store.add_user({"name": "alice", "role": "viewer"}, replace=True)
    assert store.user("alice") == {"name": "alice", "role": "viewer"}


def test_delete_user(store: Store) -> None:
    store.add_user({"name": "alice"})
    assert store.delete_user("alice")
    assert not store.delete_user("alice")
    assert store.user("alice") is None
    assert store.users() == []


@pytest.mark.parametrize("record", [{}, {"name": ""}, {"name": 3}, {"name": "a\nb"}])
def test_a_record_needs_a_name(store: Store, record: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="name"):
        store.add_user(record)
    with pytest.raises(ValueError, match="name"):
        store.add_token("d1", record)


def test_a_record_must_be_json(store: Store) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        store.add_user({"name": "a", "x": object()})
    with pytest.raises(ValueError, match="not JSON"):
        store.add_token("d", {"name": "a", "x": float("nan")})
    assert store.users() == [] and store.tokens() == []


def test_tokens_are_found_by_digest(backend: Backend, store: Store) -> None:
    assert store.add_token("d1", {"name": "ci", "role": "editor"})
    assert store.add_token("d2", {"name": "alice", "role": "viewer"})
    other = backend.open()
    assert other.token("d1") == {"name": "ci", "role": "editor"}
    assert other.token("d3") is None
    assert other.tokens() == [
        {"name": "alice", "role": "viewer"},
        {"name": "ci", "role": "editor"},
    ]


def test_token_names_and_digests_are_unique(store: Store) -> None:
    assert store.add_token("d1", {"name": "ci"})
    assert not store.add_token("d2", {"name": "ci", "role": "admin"})  # same name
    assert not store.add_token("d1", {"name": "other"})  # same digest
    assert store.token("d2") is None
    assert store.tokens() == [{"name": "ci"}]


def test_revoke_token(backend: Backend, store: Store) -> None:
    store.add_token("d1", {"name": "ci"})
    store.add_token("d2", {"name": "keep"})
    assert store.revoke_token("ci")
    assert not store.revoke_token("ci")
    assert backend.open().token("d1") is None
    assert store.tokens() == [{"name": "keep"}]
    assert store.add_token("d3", {"name": "ci"})  # the name is free again


def test_racing_token_creations_store_one(backend: Backend) -> None:
    stores = [backend.open() for _ in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def create(i: int) -> None:
        barrier.wait()
        results.append(stores[i].add_token(f"digest-{i}", {"name": "same"}))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert len(stores[0].tokens()) == 1


def test_shared_secret_is_stored_once(backend: Backend, store: Store) -> None:
    assert store.shared_secret("session", "first") == "first"
    assert backend.open().shared_secret("session", "second") == "first"
    assert store.shared_secret("other", "x") == "x"


def test_accounts_do_not_touch_the_config(store: Store) -> None:
    store.add_user({"name": "alice"})
    store.add_token("d", {"name": "t"})
    store.shared_secret("s", "v")
    assert store.current_rev() == 0
    assert store.history() == []


def test_redis_layout(redis_url: str) -> None:
    """The keys of DESIGN.md's table: {p}:users and {p}:tokens are hashes."""
    with RedisStore(redis_url) as store:
        store.add_user({"name": "alice"})
        store.add_token("abc", {"name": "ci"})
        store.shared_secret("session", "k")
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.type("{minirouter}:users") == "hash"
        assert client.hgetall("{minirouter}:users") == {"alice": '{"name":"alice"}'}
        assert client.hgetall("{minirouter}:tokens") == {"n:ci": "abc", "d:abc": '{"name":"ci"}'}
        assert client.hgetall("{minirouter}:secrets") == {"session": "k"}


def test_unreadable_records_are_skipped(backend: Backend, store: Store) -> None:
    """A value written behind minirouter's back reads as absent instead of failing."""
    store.add_user({"name": "ok"})
    if backend.path is None:  # redis or valkey
        with redis.Redis.from_url(backend.url) as client:
            client.hset("{minirouter}:users", "bad", "not json")
    else:
        assert backend.path is not None
        with contextlib.closing(sqlite3.connect(backend.path)) as conn, conn:
            conn.execute("INSERT INTO users (name, json) VALUES ('bad', '[1]')")
    assert store.user("bad") is None
    assert [u["name"] for u in store.users()] == ["ok"]
