"""SQLite `watch` polls on the event loop: an idle poll hands nothing to a thread, and a file
that refuses readers (busy) is read in a thread, never waited for on the loop.

No pytest-asyncio: each test runs its own event loop with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minirouter.store.sqlite import SqliteStore

from .helpers import put, route, upstream


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_an_idle_watch_runs_nothing_in_threads(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, poll_interval=0.005)
    writer = SqliteStore(path)
    store.apply(put(upstream("api")))
    executor = CountingExecutor()

    async def main() -> tuple[int, int, list[int]]:
        asyncio.get_running_loop().set_default_executor(executor)
        async with contextlib.aclosing(store.watch(1)) as changes:
            pending = asyncio.ensure_future(anext(changes))
            await asyncio.sleep(0.1)  # started: the connection opened, the history read
            started = executor.submitted
            await asyncio.sleep(0.5)  # about 100 polls, nothing changed
            idle = executor.submitted - started
            await asyncio.to_thread(writer.apply, put(route("a")))
            batch = await asyncio.wait_for(pending, 2)
            return started, idle, [r.rev for r in batch]

    try:
        started, idle, revs = asyncio.run(main())
    finally:
        executor.shutdown()
        store.close()
        writer.close()
    assert started <= 2
    assert idle == 0
    assert revs == [2]


class BusyConnection:
    """A connection that answers SQLITE_BUSY `busy` times before it reads: SQLite's answer to
    a reader while another connection holds the file exclusively or recovers it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.busy = 0
        self.refused = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self.busy:
            self.busy -= 1
            self.refused += 1
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise exc
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


class BusyStore(SqliteStore):
    watched: BusyConnection | None = None

    def _watch_connection(self) -> Any:
        self.watched = BusyConnection(super()._watch_connection())
        return self.watched


def test_a_busy_file_is_read_in_a_thread_and_the_loop_never_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = BusyStore(path, poll_interval=0.005)
    writer = SqliteStore(path)
    store.apply(put(upstream("api")))

    async def main() -> tuple[int, list[tuple[int, str]], list[tuple[int, str]]]:
        async with contextlib.aclosing(store.watch(1)) as changes:
            pending = asyncio.ensure_future(anext(changes))
            await asyncio.sleep(0.05)
            watched = store.watched
            assert watched is not None
            # A poll never waits on the loop for a lock: it is refused at once instead.
            (timeout,) = watched.conn.execute("PRAGMA busy_timeout").fetchone()
            watched.busy = 1_000_000
            await asyncio.to_thread(writer.apply, put(route("a")))
            first = [(r.rev, r.id) for r in await asyncio.wait_for(pending, 2)]
            # The file readable again: the next changes come from the loop's own polls.
            watched.busy = 0
            await asyncio.to_thread(writer.apply, put(route("b")))
            second = [(r.rev, r.id) for r in await asyncio.wait_for(anext(changes), 2)]
            return int(timeout), first, second

    try:
        timeout, first, second = asyncio.run(main())
    finally:
        store.close()
        writer.close()
    assert timeout == 0
    assert first == [(2, "a")]  # read in a thread, with the store's busy timeout
    assert store.watched is not None and store.watched.refused > 0
    assert second == [(3, "b")]
