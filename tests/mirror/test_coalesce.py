"""A burst of revisions is swapped in together, patched from the changed routes alone.

In-process: a real `Mirror` and `RouterState` on an asyncio loop, following a real SQLite
store. The writes are made from the loop's own thread, so the whole burst is in the store
before the mirror reads any more of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minirouter import fastpath
from minirouter.config import CoreSettings
from minirouter.core.mirror import READ_GAP, Mirror
from minirouter.core.state import RouterState
from minirouter.model import Config, Route, from_dict
from minirouter.store import Change, Store, open_store

from .conftest import RedisFactory


def _route(i: int, **extra: object) -> Route:
    return from_dict("routes", {"id": f"r{i:03d}", "path": f"/p{i}/", "upstream": "keep"} | extra)


def _upstream(uid: str, *addresses: str) -> Change:
    return Change.put(from_dict("upstreams", {"id": uid, "targets": list(addresses)}))


async def _until(what: str, check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _burst(store: Store) -> int:
    """60 revisions: routes added, edited, disabled, deleted; one upstream edited."""
    rev = 0
    for k in range(60):
        i = 100 + k // 3
        match k % 3:
            case 0:
                change = [Change.put(_route(i))]
            case 1:
                change = [Change.put(_route(i, priority=k % 4, enabled=k % 9 != 1))]
            case _:
                change = [Change.delete("routes", f"r{(k * 7) % 40:03d}")]
        if k == 30:
            change.append(_upstream("edit", "127.0.0.1:9002", "127.0.0.1:9003"))
        rev = store.apply(change, actor="burst")
    return rev


@dataclass
class Following:
    """A started Mirror and its RouterState following `writer`'s store; `swapped` lists the
    configs the state's observers were given."""

    state: RouterState
    writer: Store
    mirror: Mirror
    swapped: list[Config]


@contextlib.asynccontextmanager
async def _following(url: str, first: list[Change]) -> AsyncIterator[Following]:
    """`first` written to the store at `url`, then a mirror started on it (stopped at the end)."""
    state = RouterState(CoreSettings(store_url=url, access_log="off"), asyncio.get_running_loop())
    swapped: list[Config] = []
    state.observers.append(swapped.append)
    writer = open_store(url)
    writer.apply(first)
    mirror = Mirror(state, url, None)
    try:
        await mirror.start()
        yield Following(state, writer, mirror, swapped)
    finally:
        await mirror.stop()
        mirror.close()
        writer.close()
        state.stop_health()


async def _scenario(url: str) -> None:
    first = [
        _upstream("keep", "127.0.0.1:9001"),
        _upstream("edit", "127.0.0.1:9002"),
        *(Change.put(_route(i)) for i in range(40)),
    ]
    async with _following(url, first) as f:
        state, writer, swapped = f.state, f.writer, f.swapped
        assert len(swapped) == 1 and len(state.table) == 40
        keep, edit = state.balancers["keep"], state.balancers["edit"]
        kept_target = edit.targets[0]

        final = _burst(writer)  # the loop is blocked meanwhile: the mirror reads it after
        await _until("the burst applied", lambda: state.revision == final)

        # Coalesced: 60 revisions read in at most two batches, each swapped in once.
        assert 2 <= len(swapped) <= 3, len(swapped)
        snap = writer.snapshot()
        assert {r.id: r for r in state.config.routes} == {r.id: r for r in snap.config.routes}
        # Patched from the changed ids only, the table answers as one built from scratch.
        fresh = fastpath.RouteTable(state.config.routes)
        assert sorted(r.id for r in state.table.routes) == sorted(r.id for r in fresh.routes)
        for i in range(130):
            for method in ("GET", "POST"):
                args = ("any.test", f"/p{i}/x", method)
                got, want = state.table.explain(*args), fresh.explain(*args)
                assert [(c.route_id, c.reason) for c in got.candidates] == [
                    (c.route_id, c.reason) for c in want.candidates
                ], args
        # An upstream nothing changed keeps its balancer; an edited one keeps the state of
        # the target it still has.
        assert state.balancers["keep"] is keep
        assert state.balancers["edit"] is not edit
        assert state.balancers["edit"].targets[0] is kept_target

        # One more change after the burst: swapped in on its own.
        rev = writer.apply([Change.put(_route(7, path="/moved/"))])
        await _until("the last change", lambda: state.revision == rev)
        found = state.table.match("any.test", "/moved/x", "GET")
        assert found is not None and found.route.id == "r007"
        assert state.table.match("any.test", "/p7/x", "GET") is None


def test_a_burst_is_swapped_in_together(tmp_path: Path) -> None:
    asyncio.run(_scenario(f"sqlite://{tmp_path / 'store.db'}"))


async def _config_follows(url: str) -> None:
    steps: list[list[Change]] = [
        [Change.put(_route(1, enabled=False))],  # disabled
        [Change.put(_route(1, enabled=False, priority=3))],  # edited while disabled
        [Change.put(_route(1))],  # enabled again
        [Change.put(_route(2, enabled=False))],
        [Change.delete("routes", "r002")],  # a disabled route deleted
        [Change.put(_route(9))],  # added
        [Change.delete("routes", "r000")],  # deleted
        [_upstream("other", "127.0.0.1:9004")],  # another kind only
        [Change.put(_route(3, enabled=False)), Change.put(_route(10, enabled=False))],
    ]
    first = [_upstream("keep", "127.0.0.1:9001"), *(Change.put(_route(i)) for i in range(5))]
    async with _following(url, first) as f:
        state, writer = f.state, f.writer
        for change in steps:
            rev = writer.apply(change)
            await _until(f"revision {rev}", lambda rev=rev: state.revision == rev)
            # /healthz reads these: they do not make the routes (10k of them, sorted).
            assert state.listeners == () and state.certificates == ()
            assert state._routes_of is not None
            snap = writer.snapshot().config
            assert sorted(state.config.routes, key=lambda r: r.id) == sorted(
                snap.routes, key=lambda r: r.id
            ), change
            assert {u.id for u in state.config.upstreams} == {u.id for u in snap.upstreams}
            assert sorted(r.id for r in state.table.routes) == sorted(
                r.id for r in snap.routes if r.enabled
            )
        # The observers get every kind they read.
        assert {u.id for u in f.swapped[-1].upstreams} == {"keep", "other"}


def test_the_config_routes_follow_every_change(tmp_path: Path) -> None:
    """The routes of `state.config` are made only when asked for after a change (the table
    is patched from the changed ids): they are still exactly the store's, disabled ones too."""
    asyncio.run(_config_follows(f"sqlite://{tmp_path / 'store.db'}"))


async def _stream(url: str) -> tuple[int, float, int]:
    """60 changes written ~2 ms apart from a thread; returns (changes, seconds, batches read)."""
    loop = asyncio.get_running_loop()
    batches = 0
    async with _following(url, [_upstream("keep", "127.0.0.1:9001")]) as f:
        apply_batch = f.mirror.apply_batch

        def counted(batch: list[Any]) -> None:
            nonlocal batches
            batches += 1
            apply_batch(batch)

        f.mirror.apply_batch = counted  # type: ignore[method-assign]

        def write() -> int:
            rev = 0
            for i in range(60):
                rev = f.writer.apply([Change.put(_route(i))])
                time.sleep(0.002)  # pacing the writer, not waiting for a condition
            return rev

        started = loop.time()
        rev = await asyncio.to_thread(write)
        await _until(f"revision {rev}", lambda: f.state.revision == rev)
        return 60, loop.time() - started, batches


def test_a_stream_of_changes_is_read_at_most_every_read_gap(
    redis_factory: RedisFactory,
) -> None:
    """Redis answers a watch as soon as there is a change: while changes stream in, the mirror
    waits READ_GAP between reads so that they come several per read."""
    changes, seconds, batches = asyncio.run(_stream(redis_factory(persist=False).url))
    # One read per READ_GAP, one more for the first change and one for the wait's edges.
    assert batches <= seconds / READ_GAP + 2, (batches, seconds)
    assert batches < changes / 2, (batches, seconds)
