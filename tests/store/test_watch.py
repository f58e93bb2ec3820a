"""`watch`: changes arrive as they happen, in whole revisions, and gaps are detected.

No pytest-asyncio: each test runs its own event loop with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncGenerator

import pytest

from minirouter.store import Change, ChangeRecord, Store, TrimmedError

from .conftest import Backend
from .helpers import put, route, upstream


async def next_batch(
    changes: AsyncGenerator[list[ChangeRecord], None], timeout: float = 2.0
) -> list[ChangeRecord]:
    return await asyncio.wait_for(anext(changes), timeout)


def test_watch_yields_a_change_made_by_another_instance(backend: Backend, store: Store) -> None:
    writer = backend.open()
    store.apply(put(upstream("api")))

    async def main() -> float:
        async with contextlib.aclosing(store.watch(1)) as changes:
            pending = asyncio.ensure_future(next_batch(changes))
            await asyncio.sleep(0.1)  # the watcher is waiting now
            await asyncio.to_thread(writer.apply, put(route("a"), route("b")), None, "w")
            applied = time.monotonic()
            batch = await pending
            latency = time.monotonic() - applied
            assert [(r.rev, r.seq, r.id, r.actor) for r in batch] == [
                (2, 1, "a", "w"),
                (2, 2, "b", "w"),
            ]
            # And the next one too.
            await asyncio.to_thread(writer.apply, [Change.delete("routes", "a")])
            assert [(r.rev, r.op) for r in await next_batch(changes)] == [(3, "delete")]
            return latency

    assert asyncio.run(main()) < 0.5


def test_watch_from_an_older_revision_catches_up_first(store: Store) -> None:
    store.apply(put(upstream("api")))
    store.apply(put(route("a")))
    store.apply(put(route("b")))

    async def main() -> list[int]:
        async with contextlib.aclosing(store.watch(1)) as changes:
            return [r.rev for r in await next_batch(changes)]

    assert asyncio.run(main()) == [2, 3]


def test_watch_detects_a_trimmed_history_at_the_start(backend: Backend) -> None:
    store = backend.open(history=2)
    store.apply(put(upstream("api")))
    for i in range(4):
        store.apply(put(route(f"r{i}")))

    async def main() -> None:
        async with contextlib.aclosing(store.watch(1)) as changes:
            await next_batch(changes)

    with pytest.raises(TrimmedError):
        asyncio.run(main())


def test_watch_detects_being_trimmed_past_while_behind(backend: Backend) -> None:
    store = backend.open(history=3)
    writer = backend.open(history=3)
    store.apply(put(upstream("api")))

    async def main() -> None:
        async with contextlib.aclosing(store.watch(0)) as changes:
            assert [r.rev for r in await next_batch(changes)] == [1]
            # The watcher does not read while these are written: it falls behind the cap.
            for i in range(5):
                writer.apply(put(route(f"r{i}")))
            await next_batch(changes)

    with pytest.raises(TrimmedError):
        asyncio.run(main())


def test_watch_of_a_reset_store(backend: Backend, store: Store) -> None:
    async def main() -> None:
        async with contextlib.aclosing(store.watch(5)) as changes:
            await next_batch(changes)

    with pytest.raises(TrimmedError, match="reset"):
        asyncio.run(main())


def test_watch_sees_a_write_from_another_process(backend: Backend, store: Store) -> None:
    script = textwrap.dedent(
        """
        import sys
        from minirouter.model import from_dict
        from minirouter.store import Change, open_store

        with open_store(sys.argv[1]) as store:
            item = from_dict("upstreams", {"id": "from-child", "targets": ["127.0.0.1:1"]})
            print(store.apply([Change.put(item)], actor="child"))
        """
    )

    async def main() -> list[ChangeRecord]:
        async with contextlib.aclosing(store.watch(0)) as changes:
            pending = asyncio.ensure_future(next_batch(changes, timeout=30))
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", script, backend.url],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "1"
            return await pending

    batch = asyncio.run(main())
    assert [(r.rev, r.id, r.actor) for r in batch] == [(1, "from-child", "child")]
