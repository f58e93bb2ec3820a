"""Epochs: a store's history has an id, so a store that was reset and written again is never
taken for the history a reader knows, whatever its revision (both backends)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from minirouter.model import Config
from minirouter.store import ChangeRecord, Store, TrimmedError, ValidationError
from minirouter.store.sqlite import SqliteStore

from .conftest import Backend
from .helpers import put, route, upstream


def seed(store: Store) -> int:
    store.apply(put(upstream("api")))
    store.apply(put(route("r1")))
    return store.apply(put(route("r2")))


def test_the_first_write_starts_a_history_that_later_writes_keep(store: Store) -> None:
    assert store.head() == ("", 0)
    assert store.snapshot().epoch == ""
    seed(store)
    epoch, rev = store.head()
    assert rev == 3 and len(epoch) == 16
    assert store.snapshot().epoch == epoch
    assert {r.epoch for r in store.changes_since(0)} == {epoch}
    assert store.changes_since(1, epoch)[0].rev == 2


def test_a_reset_store_written_past_a_readers_revision_is_another_history(
    backend: Backend, store: Store
) -> None:
    rev = seed(store)
    old_epoch = store.head()[0]
    backend.reset()
    writer = backend.open()
    assert writer.current_rev() == 0
    writer.apply(put(upstream("api", 9009)))
    for rid in ("n2", "n3", "n4"):
        writer.apply(put(route(rid)))
    new_epoch, new_rev = writer.head()
    assert new_rev > rev and new_epoch != old_epoch
    # Without the epoch the reader would splice revisions 4.. of the new history onto its own.
    with pytest.raises(TrimmedError, match="another history"):
        writer.changes_since(rev, old_epoch)
    assert [r.id for r in writer.changes_since(rev, new_epoch)] == ["n4"]

    async def watch_from(epoch: str) -> list[ChangeRecord]:
        async with contextlib.aclosing(writer.watch(rev, epoch)) as changes:
            return await asyncio.wait_for(anext(changes), 5)

    with pytest.raises(TrimmedError, match="another history"):
        asyncio.run(watch_from(old_epoch))
    assert [r.id for r in asyncio.run(watch_from(new_epoch))] == ["n4"]


def test_a_writer_does_not_validate_against_another_history(backend: Backend, store: Store) -> None:
    """A store instance that cached revision 3 of one history validates against the store's
    own config after a reset, not against a mix of both."""
    seed(store)  # upstream api, routes r1 r2 at revision 3
    backend.reset()
    other = backend.open()
    other.apply(put(upstream("web")))
    for rid in ("n2", "n3", "n4"):
        other.apply(put(route(rid, "web")))
    with pytest.raises(ValidationError, match="unknown upstream 'api'"):
        store.apply(put(route("r9", "api")))
    assert store.snapshot().config == other.snapshot().config


def test_watch_sees_a_reset_and_rewrite_while_it_follows(backend: Backend, store: Store) -> None:
    rev = seed(store)

    async def main() -> None:
        async with contextlib.aclosing(store.watch(rev, store.head()[0])) as changes:
            pending = asyncio.ensure_future(anext(changes))
            await asyncio.sleep(0.05)

            def reset_and_write() -> None:
                backend.reset()
                writer = backend.open()
                writer.apply(put(upstream("api")))
                for rid in ("a", "b", "c", "d"):
                    writer.apply(put(route(rid)))

            await asyncio.to_thread(reset_and_write)
            await asyncio.wait_for(pending, 5)

    with pytest.raises(TrimmedError):
        asyncio.run(main())


def test_republish_is_a_new_history_above_the_revision_asked_for(
    backend: Backend, store: Store
) -> None:
    seed(store)
    epoch, rev = store.head()
    reader = backend.open()
    config = Config(upstreams=(upstream("api", 9002),), routes=(route("r1"), route("r7")))
    new_rev = store.republish(config, min_rev=40, actor="ops")
    new_epoch = store.head()[0]
    assert new_rev == 40 and new_epoch not in ("", epoch)
    snap = reader.snapshot()
    assert (snap.rev, snap.epoch, snap.config) == (40, new_epoch, config)
    # A reader of the old history cannot resume across it; from the new revision on it can.
    with pytest.raises(TrimmedError):
        reader.changes_since(rev, epoch)
    with pytest.raises(TrimmedError):
        reader.changes_since(rev)  # revisions 4..39 do not exist
    assert reader.changes_since(40, new_epoch) == []
    assert reader.apply(put(route("r8"))) == 41
    assert reader.head() == (new_epoch, 41)
    assert [(r.rev, r.id, r.epoch) for r in store.changes_since(40, new_epoch)] == [
        (41, "r8", new_epoch)
    ]
    # Below the current revision, the next one; the same config again is still a new history.
    assert store.republish(config) == 42
    assert store.head()[0] not in (new_epoch, epoch)
    assert store.snapshot().config == config


def test_republish_validates_and_writes_nothing_on_error(store: Store) -> None:
    seed(store)
    before = store.head()
    with pytest.raises(ValidationError, match="unknown upstream"):
        store.republish(Config(routes=(route("r1", "gone"),)), min_rev=10)
    assert store.head() == before
    with pytest.raises(ValueError):
        store.republish(Config(), min_rev=-1)


def test_an_older_sqlite_file_gains_an_epoch(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), rev INTEGER)")
        conn.execute("INSERT INTO meta (id, rev) VALUES (0, 0)")
    with SqliteStore(path) as store:
        assert store.head() == ("", 0)
        seed(store)
        epoch, rev = store.head()
        assert rev == 3 and epoch
