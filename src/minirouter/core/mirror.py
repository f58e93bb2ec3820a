"""Mirror the config store into this worker's route table, and report back to it.

Load a snapshot, then follow the change stream from that revision. Every batch of
changes is applied to the last good items, validated item by item (an invalid one
is skipped and reported; the previous version of it keeps serving), and swapped in
as a whole new table. The store is never read on the request path; when it goes
away the core keeps serving what it has, reconnects with backoff and jitter, and
resumes from the last revision it applied. The last applied snapshot is kept on
disk so that a core started while the store is down can serve.

A revision number names a config only within one history of the store: the mirror
also follows the store's epoch (see `minirouter.store.Store`) and, to catch a store
restored from an older copy of the same history, the time stamp of the last revision
it applied. Another history is never spliced onto the config served: it is reloaded
whole, or, if it is behind, not applied at all until an operator republishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minirouter import __version__
from minirouter.model import (
    KINDS,
    Config,
    Route,
    ValidationError,
    config_from_dict,
    from_dict,
    to_dict,
)

if TYPE_CHECKING:
    from minirouter.core.state import RouterState
    from minirouter.store import Store
    from minirouter.store.base import ChangeRecord

log = logging.getLogger("minirouter.mirror")

HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TTL = 10.0
STATS_TTL = 600.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
# Swaps may take SWAP_SHARE of the event loop's time (their CPU time, counted against a
# credit that refills at that rate up to SWAP_BURST): a change is swapped in at once while
# there is credit, so isolated changes are never delayed; when changes stream in faster, a
# swap waits until the credit is back (at most SWAP_GAP_MAX) and takes every change that
# arrived meanwhile.
SWAP_SHARE = 0.1
SWAP_BURST = 0.005
SWAP_GAP_MAX = 0.025
# While changes stream in, the store is read at most every READ_GAP, so that the changes of
# that time come in one read: a read costs the core more than the change it brings (a Redis
# XREAD is ~100-200 us of CPU through redis-py). A read that waited for its change (an
# isolated change) is not delayed. The SQLite watch polls at this interval anyway.
READ_GAP = 0.01


def node_id(worker_index: int) -> str:
    """Stable for the life of the process, unique in the fleet: host, pid and worker."""
    return f"{socket.gethostname()}-{os.getpid()}-w{worker_index}"


def _config_items(config: Config) -> dict[str, dict[str, Any]]:
    return {kind: {item.id: item for item in getattr(config, kind)} for kind in KINDS}


# The references the store enforces on write, checked again on what the mirror receives.
_REFERENCING = ("routes", "listeners")


class Mirror:
    """Keeps `state` equal to the store's config; one per worker."""

    def __init__(self, state: RouterState, store_url: str, snapshot_path: Path | None) -> None:
        self.state = state
        self.store_url = store_url
        self.store: Store | None = None  # opened lazily: a core may start while it is down
        self.snapshot_path = snapshot_path
        self.node = node_id(state.settings.worker_index)
        self.items: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self.rev = 0
        self.epoch = ""  # the store history `rev` belongs to ("" unknown, or none yet)
        # (rev, at) of the last revision applied from a change record: to tell, on reconnect,
        # whether the store's revision `rev` is still the one applied (a restored older copy
        # of the same history may have been written past it).
        self._stamp: tuple[int, float] | None = None
        self.connected = False
        self.outage_since: float | None = None
        self.invalid: dict[str, str] = {}
        self.from_disk = False
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshot_dirty = False
        self._last_change = 0.0
        self._last_write = 0.0
        # JSON text of each item, kept so that writing the local snapshot is a join of
        # strings: serialising 10k items in the writer thread held the GIL long enough to
        # delay the requests (and the next change) on the event loop.
        self._raw: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        # The tuple of each kind's items in the last config built, until that kind changes:
        # a change of one route does not rebuild (or make look new) the other kinds' tuples.
        # Routes only after a full load: otherwise the table is patched from the changed ids.
        self._tuples: dict[str, tuple[Any, ...]] = {}
        # The disabled routes, which the table does not hold (see RouterState.apply).
        self._disabled: dict[str, Route] = {}
        self._disabled_tuple: tuple[Route, ...] | None = ()
        # Changes applied to `items` but not yet swapped in (see SWAP_DUTY): the kinds, and
        # each route id with its new Route (None: deleted), so that the table is patched from
        # them alone; `_full`: the routes must be compared whole (after a load).
        self._pending_kinds: set[str] = set()
        self._pending_routes: dict[str, Any] = {}
        self._full = True
        self._swap_handle: asyncio.TimerHandle | None = None
        self._swapped = asyncio.Event()  # set while no swap is waiting
        self._swapped.set()
        self._credit = SWAP_BURST  # seconds of swap CPU time available now (see SWAP_SHARE)
        self._credit_at = time.monotonic()

    def _open(self) -> Store:
        if self.store is None:
            from minirouter.store import open_store

            self.store = open_store(self.store_url)
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- start-up ----------------------------------------------------------------

    async def start(self) -> None:
        """Load the store's snapshot, or the disk snapshot if the store is down."""
        from minirouter.store.errors import StoreError, StoreUnavailable

        try:
            await self._load_snapshot()
        except StoreUnavailable as exc:
            self._outage(exc)
            if not self._load_disk():
                raise StartupError(
                    f"the config store is unreachable ({exc}) and there is no local snapshot"
                    + (f" at {self.snapshot_path}" if self.snapshot_path else "")
                ) from exc
        except (StoreError, ValueError) as exc:
            # A bad URL or a store that is not one: nothing a retry would fix.
            raise StartupError(str(exc)) from exc
        except Exception as exc:  # anything else from the client library: treat as an outage
            log.exception("reading the config store failed")
            self._outage(exc)
            if not self._load_disk():
                raise StartupError(
                    f"the config store failed ({exc}) and there is no local snapshot"
                ) from exc
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow()),
            loop.create_task(self._heartbeat()),
            loop.create_task(self._publish_stats()),
            loop.create_task(self._save_snapshots()),
        ]

    async def stop(self) -> None:
        if self._swap_handle is not None:
            self._swap_now()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._snapshot_dirty:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._write_disk)

    async def _load_snapshot(self) -> None:
        snap = await asyncio.to_thread(lambda: self._open().snapshot())
        items = _config_items(snap.config)
        for key in snap.invalid:
            # Invalid in the store now: the version we serve (if any) stays.
            kind, _, item_id = key.partition("/")
            good = self.items.get(kind, {}).get(item_id)
            if good is not None and kind in items:
                items[kind][item_id] = good
        self.items = items
        # The store's own texts: the first disk write after a load costs a join, not the
        # serialisation of every item.
        self._raw = {kind: dict(snap.texts.get(kind, {})) for kind in KINDS}
        for key in snap.invalid:
            kind, _, item_id = key.partition("/")
            self._raw.get(kind, {}).pop(item_id, None)  # we may keep serving our own version
        self._report_invalid(snap.invalid)
        self.rev = snap.rev
        self.epoch = snap.epoch
        self._stamp = None
        self._reloaded()
        self.from_disk = False
        self.state.store_behind = None
        self._back()

    def _load_disk(self) -> bool:
        path = self.snapshot_path
        if path is None or not path.exists():
            return False
        try:
            data = json.loads(path.read_text())
            config = config_from_dict(data["config"])
            rev = int(data["rev"])
            epoch = str(data.get("epoch") or "")  # written before epochs existed: unknown
            at = data.get("at")
            stamp = (rev, float(at)) if isinstance(at, int | float) else None
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            log.error("local snapshot %s is unusable: %s", path, exc)
            return False
        self.items = _config_items(config)
        self.rev = rev
        self.epoch = epoch
        self._stamp = stamp
        self.from_disk = True
        self._reloaded()
        self._snapshot_dirty = False  # it is what is on disk already
        log.warning(
            "config store unreachable: serving revision %d from the local snapshot %s", rev, path
        )
        return True

    # -- following ---------------------------------------------------------------

    async def _follow(self) -> None:
        from minirouter.store.errors import TrimmedError

        delay = BACKOFF_MIN
        while True:
            try:
                if self.from_disk or not self.connected or self.state.store_behind is not None:
                    # Back after an outage, started from disk, or the store was behind us.
                    await self._catch_up()
                store = self._open()
                # aclosing: a cancelled or failed watch releases its connection at once.
                watch = store.watch(self.rev, self.epoch or None)
                loop = asyncio.get_running_loop()
                async with contextlib.aclosing(watch) as changes:
                    read_at = loop.time()  # the watch reads when asked for the next batch
                    async for batch in changes:
                        self.apply_batch(batch)
                        delay = BACKOFF_MIN
                        # While a swap waits, the changes arriving meanwhile pile up in the
                        # store and are then read (and swapped in) together.
                        await self._swapped.wait()
                        wait = read_at + READ_GAP - loop.time()
                        if wait > 0:
                            await asyncio.sleep(wait)  # pacing the reads, see READ_GAP
                        read_at = loop.time()
            except asyncio.CancelledError:
                raise
            except TrimmedError:
                # Trimmed past us, or the store was reset: _catch_up tells which.
                log.warning(
                    "change history trimmed (or reset) past revision %d: resyncing", self.rev
                )
                self.connected = False
                continue
            except _StoreBehind:
                pass  # reported; keep serving, look again after the backoff
            except Exception as exc:
                self._outage(exc)
            # Full jitter: a fleet that lost its store does not come back in lock-step.
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(BACKOFF_MAX, delay * 2)

    async def _catch_up(self) -> None:
        from minirouter.store.errors import TrimmedError

        epoch, current = await asyncio.to_thread(lambda: self._open().head())
        if current < self.rev:
            # The store came back empty or older than what we serve: never apply it blindly.
            # Keep serving and say so; an operator republishes.
            if self.state.store_behind is None:
                log.error(
                    "the config store is at revision %d, behind the %d this core serves "
                    "(restarted empty? restored from an old copy?): keeping the config served "
                    "and not following the store until it is republished: minirouter "
                    "republish --from-snapshot %s",
                    current,
                    self.rev,
                    self.snapshot_path or "<this core's --snapshot file>",
                )
            self.state.store_behind = (current, self.rev)
            self._reachable()
            raise _StoreBehind(current)
        if self.rev > 0 and epoch != self.epoch:
            # Reset (or republished) and written up to or past our revision meanwhile: its
            # revisions are not ours, only a whole snapshot of it is trustworthy.
            log.warning(
                "the config store holds another history (epoch %s, this core followed %s) "
                "at revision %d: loading it whole",
                epoch or "none",
                self.epoch or "unknown",
                current,
            )
            await self._load_snapshot()
            return
        if self.state.store_behind is not None:
            # It was behind us and has moved past: its history is not the one we applied
            # (reset, then republished), so only a whole snapshot is trustworthy.
            await self._load_snapshot()
            return
        stamp = self._stamp if self._stamp is not None and self._stamp[0] == self.rev else None
        since = self.rev - 1 if stamp is not None else self.rev
        try:
            batch = await asyncio.to_thread(
                lambda: self._open().changes_since(since, self.epoch or None)
            )
        except TrimmedError:
            await self._load_snapshot()
            return
        if stamp is not None:
            ours = [rec.at for rec in batch if rec.rev == self.rev]
            if ours[-1:] != [stamp[1]]:
                # Same history, but its revision `rev` is not the one applied: a copy older
                # than our revision was restored and written past it.
                log.warning(
                    "the config store's revision %d is not the one this core applied "
                    "(restored from an older copy?): loading it whole",
                    self.rev,
                )
                await self._load_snapshot()
                return
        if batch:
            self.apply_batch(batch)
        self.from_disk = False
        self._back()

    def apply_batch(self, batch: list[ChangeRecord]) -> None:
        """Apply complete revisions of changes; skip (and report) items that fail validation."""
        changed = False
        last = self.rev
        previous: dict[tuple[str, str], Any] = {}  # (kind, id) -> item before this batch
        for rec in batch:
            if rec.rev <= self.rev:
                continue  # already applied (a resumed watch may repeat the edge)
            # Counted as applied even if every item in it is skipped below.
            last = max(last, rec.rev)
            self._stamp = (rec.rev, rec.at)
            if rec.epoch:
                self.epoch = rec.epoch
            key = f"{rec.kind}/{rec.id}"
            if rec.kind not in self.items:
                continue
            slot = (rec.kind, rec.id)
            if rec.op == "delete":
                previous.setdefault(slot, self.items[rec.kind].get(rec.id))
                changed |= self.items[rec.kind].pop(rec.id, None) is not None
                self._raw[rec.kind].pop(rec.id, None)
                self.invalid.pop(key, None)
                continue
            try:
                item = from_dict(rec.kind, rec.after)
            except ValidationError as exc:
                self._report_invalid({key: str(exc)})
                continue
            if item.id != rec.id:
                self._report_invalid({key: f"the stored item has id {item.id!r}"})
                continue
            previous.setdefault(slot, self.items[rec.kind].get(rec.id))
            self.items[rec.kind][rec.id] = item
            self._raw[rec.kind][rec.id] = _json_text(rec.after)
            self.invalid.pop(key, None)
            changed = True
        changed |= self._check_references(previous)
        if last > self.rev:
            self.rev = last
            if changed:
                routes = self.items["routes"]
                for kind, item_id in previous:
                    self._pending_kinds.add(kind)
                    if kind == "routes":
                        self._pending_routes[item_id] = routes.get(item_id)
                self._request_swap()
            elif self._swap_handle is None:
                self.state.revision = last
                self.state.metrics.set_revision(last)
        self._back()

    def _check_references(self, previous: dict[tuple[str, str], Any]) -> bool:
        """Undo puts of routes/listeners naming a missing upstream (written behind our back)."""
        upstreams = self.items["upstreams"]
        undone = False
        for (kind, item_id), before in previous.items():
            if kind not in _REFERENCING:
                continue
            item = self.items[kind].get(item_id)
            target = getattr(item, "upstream", None)
            if item is None or target is None or target in upstreams:
                continue
            self._report_invalid({f"{kind}/{item_id}": f"upstream {target!r} does not exist"})
            self._raw[kind].pop(item_id, None)
            if before is None:
                del self.items[kind][item_id]
            else:
                self.items[kind][item_id] = before
            undone = True
        return undone

    def _reloaded(self) -> None:
        """`items` were replaced whole: swap them in now, every route compared."""
        self._tuples.clear()
        self._full = True
        self._swap_now()

    def _request_swap(self) -> None:
        """Swap the pending changes in now, or, right after another swap, a little later."""
        if self._swap_handle is not None:
            return  # already due; it takes these changes too
        wait = -self._refill(time.monotonic()) / SWAP_SHARE
        if wait <= 0:
            self._swap_now()
        else:
            self._swapped.clear()
            self._swap_handle = self.state.loop.call_later(wait, self._swap_now)

    def _swap_now(self) -> None:
        if self._swap_handle is not None:
            self._swap_handle.cancel()
            self._swap_handle = None
        cpu = time.thread_time()  # not wall time: a busy machine must not stretch the gap
        for kind in self._pending_kinds:
            self._tuples.pop(kind, None)
        self._track_disabled()
        parts = {}
        for kind in KINDS:
            if kind == "routes" and not self._full:
                continue  # the state is told which changed, and needs no tuple of them all
            items = self._tuples.get(kind)
            if items is None:
                # Insertion order, not sorted: the table's precedence is a total order of its
                # own, and an unchanged route keeps its place.
                items = self._tuples[kind] = tuple(self.items[kind].values())
            parts[kind] = items
        config = Config(**parts)
        if self._full:
            ok = self.state.apply(config, revision=self.rev)
        else:
            routes = "routes" in self._pending_kinds
            if self._disabled_tuple is None:
                self._disabled_tuple = tuple(self._disabled.values())
            ok = self.state.apply(
                config,
                revision=self.rev,
                routes_changed=routes,
                route_changes=self._pending_routes if routes else None,
                disabled=self._disabled_tuple,
            )
        now = time.monotonic()
        if ok:
            self._snapshot_dirty = True
            self._last_change = now
            self._full = False
        else:
            self._full = True  # the table kept is not the one the pending changes start from
        self._pending_kinds = set()
        self._pending_routes = {}
        cost = time.thread_time() - cpu
        # Never more in debt than SWAP_GAP_MAX of refill: a swap waits at most that long.
        self._credit = max(-SWAP_GAP_MAX * SWAP_SHARE, self._refill(now) - cost)
        self._swapped.set()

    def _track_disabled(self) -> None:
        """Keep `_disabled` equal to the disabled routes of `items`; cheap unless they change."""
        routes = self.items["routes"]
        if self._full:
            self._disabled = {rid: r for rid, r in routes.items() if not r.enabled}
            self._disabled_tuple = None
            return
        for rid in self._pending_routes:
            route = routes.get(rid)
            if route is not None and not route.enabled:
                self._disabled[rid] = route
            elif self._disabled.pop(rid, None) is None:
                continue
            self._disabled_tuple = None

    def _refill(self, now: float) -> float:
        self._credit = min(SWAP_BURST, self._credit + (now - self._credit_at) * SWAP_SHARE)
        self._credit_at = now
        return self._credit

    def _report_invalid(self, invalid: Mapping[str, str]) -> None:
        for key, message in invalid.items():
            if self.invalid.get(key) != message:
                log.error(
                    "invalid item in the store, keeping the last good one: %s: %s", key, message
                )
            self.invalid[key] = message
            self.state.metrics.mirror_invalid(key)

    def _outage(self, exc: BaseException) -> None:
        if self.connected or self.outage_since is None:
            self.outage_since = time.time()
            log.error("config store unavailable (%s); serving revision %d, retrying", exc, self.rev)
        self.connected = False
        self.state.metrics.store_up(False)

    def _reachable(self) -> None:
        if not self.connected:
            if self.outage_since is not None:
                log.info("config store reachable again; at revision %d", self.rev)
            self.connected = True
            self.outage_since = None
            self.state.metrics.store_up(True)

    def _back(self) -> None:
        self._reachable()
        self.state.store_behind = None

    # -- reporting back ------------------------------------------------------------

    async def _heartbeat(self) -> None:
        settings = self.state.settings
        started = self.state.started
        listen = ",".join(f"{h}:{p}" for h, p in settings.listen)
        while True:
            now = time.monotonic()
            info: dict[str, str | int | float] = {
                "rev": self.rev,
                "epoch": self.epoch,
                "version": __version__,
                "started": started,
                "pid": os.getpid(),
                "listen": listen,
                "worker": settings.worker_index,
                "host": socket.gethostname(),
                "seen": time.time(),
                # Per-target health as this worker sees it (passive ejection + active checks),
                # for the GUI: JSON {upstream id: {"host:port": true|false}}.
                "health": json.dumps(
                    {
                        uid: {t.address: t.available(now) for t in bal.targets}
                        for uid, bal in self.state.balancers.items()
                    },
                    separators=(",", ":"),
                ),
            }
            store = self.store
            if store is not None:
                try:
                    await asyncio.to_thread(store.heartbeat, self.node, info, HEARTBEAT_TTL)
                except Exception as exc:
                    log.debug("heartbeat not written: %s", exc)  # the follower reports outages
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _publish_stats(self) -> None:
        window = self.state.stats
        if window is None:
            return
        while True:
            await asyncio.sleep(1.0 - (time.time() % 1.0))
            for second, counters in window.take_finished():
                # Best effort and off the loop: a slow or absent store never blocks requests,
                # and a second that cannot be published is dropped.
                store = self.store
                if store is None or not counters:
                    continue
                try:
                    await asyncio.to_thread(
                        store.publish_stats, self.node, second, counters, STATS_TTL
                    )
                except Exception as exc:
                    log.debug("stats for %d not published: %s", second, exc)

    async def _save_snapshots(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            # Once changes pause for a second, or every 10 s during a burst of them.
            settled = now - self._last_change >= 1.0 or now - self._last_write >= 10.0
            if self._snapshot_dirty and settled and self.snapshot_path is not None:
                self._snapshot_dirty = False
                self._last_write = now
                try:
                    await asyncio.to_thread(self._write_disk)
                except OSError as exc:
                    log.error("cannot write the local snapshot %s: %s", self.snapshot_path, exc)

    def _write_disk(self) -> None:
        path = self.snapshot_path
        if path is None:
            return
        sections: list[str] = []
        for kind in KINDS:
            raw = self._raw[kind]
            texts: list[str] = []
            for item_id, item in list(self.items[kind].items()):
                text = raw.get(item_id)
                if text is None:
                    text = raw[item_id] = _json_text(to_dict(item))
                texts.append(text)
            sections.append(f'"{kind}":[{",".join(texts)}]')
        stamp = self._stamp if self._stamp is not None and self._stamp[0] == self.rev else None
        head = {"rev": self.rev, "epoch": self.epoch, "at": stamp[1] if stamp else None}
        text = f'{_json_text(head)[:-1]},"config":{{{",".join(sections)}}}}}'
        private_directory(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        # 0600 from the first byte: the snapshot holds the certificates' private keys.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # also if a stale temp file of ours was there with other bits
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a reader sees the old or the new file, never half


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def private_directory(directory: Path) -> None:
    """Make `directory` (mode 0700 if it is new) and keep other users out of it.

    An existing directory of ours that others may read or enter loses those bits; one that
    is not ours (or a shared sticky one like /tmp) is left alone, with a warning.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.stat()
    if not st.st_mode & 0o007:
        return
    if st.st_uid == os.getuid() and not st.st_mode & stat.S_ISVTX:
        os.chmod(directory, stat.S_IMODE(st.st_mode) & ~0o007)
        return
    if directory not in _WARNED_DIRECTORIES:
        _WARNED_DIRECTORIES.add(directory)
        log.warning(
            "the local snapshot's directory %s is open to other users; the snapshot itself is "
            "0600, but prefer a directory of its own (mode 0700)",
            directory,
        )


_WARNED_DIRECTORIES: set[Path] = set()


class StartupError(Exception):
    """The mirror cannot serve anything (no store and no local snapshot)."""


class _StoreBehind(Exception):
    def __init__(self, rev: int) -> None:
        super().__init__(f"store at revision {rev}, behind this core")
