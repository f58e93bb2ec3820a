"""A core started while the store is down serves the disk snapshot of an earlier run, says so,
and catches up when the store comes back."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.coreproc import poll
from integration.upstreams import UpstreamSet
from minirouter.core.mirror import private_directory
from minirouter.store import Change

from .conftest import StartCore, make_backend
from .support import StoreBackend, get, put, route_item, upstream_item, wait_served


class Outage:
    """Make the store unusable, and usable again.

    Redis: the server is shut down (its append-only file keeps the data for the restart).
    SQLite: another process holds the database's write lock (a long write, a stuck writer).
    """

    def __init__(self, backend: StoreBackend) -> None:
        self.backend = backend
        self._lock: sqlite3.Connection | None = None

    def down(self) -> None:
        if self.backend.redis is not None:
            self.backend.redis.shutdown()
            return
        assert self.backend.path is not None
        self._lock = sqlite3.connect(self.backend.path, isolation_level=None)
        self._lock.execute("BEGIN IMMEDIATE")

    def up(self) -> None:
        if self.backend.redis is not None:
            if not self.backend.redis.running:
                self.backend.redis.start()
            return
        if self._lock is not None:
            with contextlib.suppress(sqlite3.Error):
                self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None


@pytest.fixture(
    params=[
        "redis",
        "sqlite",
    ]
)
def down_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    b = make_backend(request, request.param, tmp_path)
    yield b
    b.close()


def read_snapshot(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def test_core_started_with_the_store_down_serves_its_disk_snapshot(
    down_backend: StoreBackend, upstreams: UpstreamSet, start_core: StartCore, tmp_path: Path
) -> None:
    backend = down_backend
    a, b = upstreams.http("a"), upstreams.http("b")
    store = backend.open()
    store.apply(
        put(
            upstream_item("a", a.address),
            upstream_item("b", b.address),
            route_item("r1", "a"),
            route_item("r2", "a"),
        )
    )
    old_rev = store.apply(put(route_item("r1", "a", priority=1)))
    snapshot = tmp_path / "state" / "core-snapshot.json"
    # A short busy timeout: a locked SQLite store counts as down after 0.5 s, not 5.
    url = f"{backend.url}?timeout=0.5" if backend.name == "sqlite" else backend.url

    # An earlier run leaves its snapshot on disk.
    first = start_core(url, snapshot=snapshot)
    poll(
        lambda: (read_snapshot(snapshot) or {}).get("rev") == old_rev,
        5,
        message=f"the disk snapshot at revision {old_rev}",
    )
    first.stop()

    # Changes while no core runs, then the store goes down.
    store.apply(put(route_item("r3", "b")))
    new_rev = store.apply([Change.delete("routes", "r2")])
    outage = Outage(backend)
    outage.down()
    try:
        core = start_core(url, snapshot=snapshot)
        health = core.store_health()
        assert health["from_local_snapshot"] is True, health
        assert health["connected"] is False, health
        assert core.revision() == old_rev
        assert core.metric("minirouter_store_up") == 0
        assert get(core.port, "/r1/x") == (200, "a")
        assert get(core.port, "/r2/x") == (200, "a")
        assert get(core.port, "/r3/x")[0] == 404
    finally:
        outage.up()

    poll(
        lambda: core.store_health()["connected"] is True,
        10,
        message="the core to reconnect to the store",
    )
    wait_served(core.port, "/r3/x", "b", 5)
    assert get(core.port, "/r2/x")[0] == 404
    assert get(core.port, "/r1/x") == (200, "a")
    health = core.store_health()
    assert health["from_local_snapshot"] is False, health
    assert health["store_behind"] is None, health
    assert core.revision() == new_rev
    assert core.metric("minirouter_store_up") == 1
    # The disk snapshot follows, with the store's epoch, readable by its owner only.
    poll(
        lambda: (read_snapshot(snapshot) or {}).get("rev") == new_rev,
        5,
        message=f"the disk snapshot at revision {new_rev}",
    )
    assert (read_snapshot(snapshot) or {}).get("epoch") == store.head()[0]
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600
    assert stat.S_IMODE(snapshot.parent.stat().st_mode) & 0o077 == 0


def test_the_snapshot_directory_is_kept_private(tmp_path: Path) -> None:
    """The disk snapshot holds TLS private keys: 0600, in a directory others cannot read."""
    new = tmp_path / "new" / "dir"
    private_directory(new)
    assert stat.S_IMODE(new.stat().st_mode) & 0o077 == 0
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    private_directory(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o750


def test_no_store_and_no_snapshot_is_a_clear_startup_error(
    start_core: StartCore, tmp_path: Path
) -> None:
    from .support import low_free_port

    url = f"redis://127.0.0.1:{low_free_port()}/0"  # nobody listens there
    core = start_core(url, snapshot=tmp_path / "missing.json", wait=False)
    code = core.wait(15)
    assert code == 1, core.diagnostics()
    err = core.stderr_text()
    assert "no local snapshot" in err, err
    assert "Traceback" not in err, err
