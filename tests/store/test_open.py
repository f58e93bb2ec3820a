"""open_store URLs, the default URL, errors when the store cannot be reached, info()."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
import redis

from minirouter.store import (
    Change,
    StoreError,
    StoreUnavailable,
    TrimmedError,
    default_store_url,
    open_store,
)
from minirouter.store.redis import RedisStore
from minirouter.store.sqlite import SqliteStore

from .conftest import Server, free_port
from .helpers import put, route, upstream


def test_default_store_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    url = default_store_url()
    assert url == f"sqlite://{tmp_path}/state/minirouter/store.db"
    with open_store(url) as store:
        assert isinstance(store, SqliteStore)
        assert store.apply(put(upstream("api"))) == 1
    assert (tmp_path / "state" / "minirouter" / "store.db").is_file()
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_url() == f"sqlite://{tmp_path}/home/.local/state/minirouter/store.db"


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:rel/store.db?history=5&timeout=1") as store:
        assert isinstance(store, SqliteStore)
        assert store.path == str(tmp_path / "rel" / "store.db")
        assert store.history_cap == 5
        info = store.info()
        assert (info["backend"], info["journal_mode"]) == ("sqlite", "wal")
    for bad in ("sqlite://host/x.db", "sqlite:", "sqlite:///:memory:", "sqlite:x?history=0"):
        with pytest.raises(StoreError):
            open_store(bad)
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store("postgres://x")


def test_redis_url_prefix_and_info(redis_url: str) -> None:
    with open_store(redis_url + "?prefix=blue&history=500") as blue, open_store(redis_url) as std:
        assert isinstance(blue, RedisStore)
        assert (blue.prefix, blue.history_cap) == ("blue", 500)
        blue.apply(put(upstream("api")))
        assert std.current_rev() == 0  # separate key space
        info = blue.info()
        assert info["parser"] == "hiredis"  # redis[hiredis] is installed
        assert str(info["server"]).startswith("redis ")
        assert (info["backend"], info["rev"]) == ("redis", 1)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert sorted(client.keys()) == [
            "{blue}:changes",
            "{blue}:epoch",
            "{blue}:rev",
            "{blue}:upstreams",
        ]
        assert client.xrange("{blue}:changes")[0][0] == "1-1"
    with pytest.raises(StoreError, match="invalid key prefix"):
        open_store(redis_url + "?prefix=a*b")


def test_script_is_loaded_again_after_script_flush(redis_url: str) -> None:
    with open_store(redis_url) as store, redis.Redis.from_url(redis_url) as client:
        store.apply(put(upstream("api")))
        client.script_flush()
        assert store.apply(put(route("a"))) == 2


def test_redis_unreachable_is_a_clean_error() -> None:
    port = free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0?socket_connect_timeout=0.5&socket_timeout=0.5"
    started = time.monotonic()
    with open_store(url) as store:  # connects lazily: a core can start while the store is down
        with pytest.raises(StoreUnavailable) as err:
            store.snapshot()
        message = str(err.value)
        assert f"127.0.0.1:{port}" in message
        assert "s3cret" not in message and "\n" not in message
        with pytest.raises(StoreUnavailable):
            store.apply(put(upstream("api")))
        with pytest.raises(StoreUnavailable):
            store.heartbeat("n", {}, 1)

        async def watch() -> None:
            async with contextlib.aclosing(store.watch(0)) as changes:
                await anext(changes)

        with pytest.raises(StoreUnavailable):
            asyncio.run(watch())
    assert time.monotonic() - started < 3


def test_redis_going_away_while_watching(tmp_path: Path) -> None:
    """A watcher whose server dies gets StoreUnavailable (its caller reconnects)."""
    from .conftest import _start

    port = free_port()
    server = _start(["--port", str(port), "--save", "", "--dir", str(tmp_path)], port, tmp_path)
    try:
        with open_store(f"redis://127.0.0.1:{port}/0") as store:

            async def main() -> None:
                async with contextlib.aclosing(store.watch(0)) as changes:
                    pending = asyncio.ensure_future(anext(changes))
                    await asyncio.sleep(0.1)
                    server.stop()
                    await asyncio.wait_for(pending, 5)

            with pytest.raises(StoreUnavailable):
                asyncio.run(main())
    finally:
        server.stop()


def test_sqlite_unusable_path_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")  # a directory cannot be made under it, even by root
    with pytest.raises(StoreUnavailable, match="cannot use the store"):
        open_store(f"sqlite://{tmp_path}/a-file/sub/store.db")


def test_sqlite_unusable_file_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreUnavailable, match=r"cannot use the store at sqlite://.*dir\.db"):
        open_store(f"sqlite://{tmp_path}/dir.db")


def test_sentinel_url(sentinel_server: Server, redis_url: str) -> None:
    url = f"redis+sentinel://127.0.0.1:{sentinel_server.port}/mm/0?socket_timeout=2"
    with open_store(url + "&prefix=s") as store, open_store(redis_url + "?prefix=s") as direct:
        assert store.apply(put(upstream("api"))) == 1
        assert direct.snapshot().rev == 1

        async def main() -> int:
            async with contextlib.aclosing(store.watch(0)) as changes:
                return (await anext(changes))[0].rev

        assert asyncio.run(main()) == 1
        with pytest.raises(TrimmedError):
            store.changes_since(9)
    with pytest.raises(StoreError, match="invalid store URL"):
        open_store(f"redis+sentinel://127.0.0.1:{sentinel_server.port}/")


def test_sentinel_without_the_service(sentinel_server: Server) -> None:
    url = f"redis+sentinel://:pw@127.0.0.1:{sentinel_server.port}/nope?socket_timeout=1"
    with open_store(url) as store, pytest.raises(StoreUnavailable) as err:
        store.apply([Change.put(upstream("api"))])
    assert "pw" not in str(err.value).replace(":***@", "")
