"""The embedded store: one SQLite file that several processes on one host share.

WAL mode (readers never wait for the writer), every write one ``BEGIN IMMEDIATE`` transaction
(writers queue on the file lock, up to the busy timeout), every consistent read one read
transaction. Watching polls every 10 ms: SQLite has no way to wake a reader in another process.
A poll runs on the event loop itself, as a cheap ``PRAGMA data_version`` that reads the changes
only after another connection committed (see `SqliteStore.watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

from minirouter.model import KINDS, Config

from .base import (
    Change,
    ChangeRecord,
    InfoValue,
    Snapshot,
    Store,
    account_json,
    account_record,
    check_node,
    check_rev,
    int_param,
    new_epoch,
    replacement_changes,
    split_params,
)
from .errors import ConflictError, NotFoundError, StoreError, StoreUnavailable, TrimmedError
from .records import RawRecord, complete_history
from .state import ConfigState, Planned

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    rev INTEGER NOT NULL,
    epoch TEXT NOT NULL DEFAULT ''  -- the history's id (see Store), added to older files
);
INSERT OR IGNORE INTO meta (id, rev) VALUES (0, 0);
CREATE TABLE IF NOT EXISTS items (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    pos INTEGER PRIMARY KEY,  -- insertion order: the cap keeps the newest rows
    rev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    n INTEGER NOT NULL,       -- how many changes revision `rev` has
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    op TEXT NOT NULL,
    before TEXT,
    after TEXT,
    actor TEXT NOT NULL,
    at REAL NOT NULL,
    UNIQUE (rev, seq)
);
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stats (
    second INTEGER NOT NULL,
    node TEXT NOT NULL,
    route TEXT NOT NULL,
    counter TEXT NOT NULL,
    value REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (second, node, route, counter)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stats_expiry ON stats (expires_at);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    json TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,  -- of the token: the token itself is never stored
    name TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""
_RECORD_COLUMNS = "rev, seq, n, kind, id, op, before, after, actor, at"
_IDLE_CONNECTIONS = 8


class SqliteStore(Store):
    """A store in the SQLite file at `path` (created with its directory if missing).

    `history`: how many change records to keep at least (whole revisions are trimmed);
    `timeout`: how long a write waits for another process's write (busy timeout);
    `poll_interval`: how often `watch` looks for new changes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        history: int = 10_000,
        timeout: float = 5.0,
        poll_interval: float = 0.01,
    ) -> None:
        self.path = os.path.abspath(path)
        self.url = f"sqlite://{self.path}" if self.path.startswith("/") else f"sqlite:{self.path}"
        self.history_cap = history
        self._timeout = timeout
        self._poll = poll_interval
        self._lock = threading.Lock()  # guards _state
        self._state: ConfigState | None = None
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        with self._errors():
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with self._connection() as conn:
                # Persistent in the file; needs no transaction open.
                conn.execute("PRAGMA journal_mode = WAL")
            with self._write() as conn:
                _create_schema(conn)

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        """``sqlite:///absolute/path`` or ``sqlite:relative/path``, options ``history`` and
        ``timeout`` (seconds) as query parameters."""
        clean, params = split_params(url, ("history", "timeout"))
        path = clean.partition(":")[2]
        if path.startswith("//"):  # sqlite:///abs (sqlite:////abs too); sqlite://host is not
            path = path[2:] if path[2:].startswith("/") else ""
        path = unquote(path)
        if not path or "?" in clean or "#" in path:
            raise StoreError(
                f"invalid store URL {url!r}: expected sqlite:///absolute/path or "
                "sqlite:relative/path (options: history, timeout)"
            )
        if path.lstrip("/") == ":memory:" or path.startswith("file:"):
            raise StoreError("an in-memory SQLite store cannot be shared: give a file path")
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        try:
            timeout = float(params.get("timeout", 5.0))
        except ValueError:
            raise StoreError(f"invalid store URL {url!r}: timeout must be a number") from None
        return cls(path, history=int_param(params, "history", 10_000), timeout=timeout)

    # -- connections ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and ended explicitly below.
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        # NORMAL is durable in WAL mode except for the last commits on power loss.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection from the pool (one thread at a time uses it)."""
        with self._pool_lock:
            if self._closed:
                raise StoreError(f"store {self.url} is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._pool_lock:
                keep = not self._closed and len(self._idle) < _IDLE_CONNECTIONS
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same committed state."""
        with self._connection() as conn, _reading(conn):
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the file's write lock from the start."""
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn sqlite3's (and the file system's) exceptions into the store's."""
        try:
            yield
        except (sqlite3.OperationalError, OSError) as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreUnavailable(f"cannot use the store at {self.url}: {message}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.url}: {exc}") from exc

    # -- config ---------------------------------------------------------------------------------

    def _load(self, conn: sqlite3.Connection) -> ConfigState:
        epoch, rev = _meta(conn)
        raw: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        for kind, item_id, text in conn.execute("SELECT kind, id, json FROM items"):
            if kind in raw:
                raw[kind][item_id] = str(text)
        self._state = ConfigState(rev, raw, self._state, epoch)
        return self._state

    def _refresh(self, conn: sqlite3.Connection) -> tuple[ConfigState, bool]:
        state = self._state
        if state is None:
            return self._load(conn), True
        epoch, current = _meta(conn)
        if epoch != state.epoch:
            return self._load(conn), True  # reset, republished, or the first write of a history
        raws = _records_after(conn, state.rev) if current != state.rev else []
        try:
            complete_history(state.rev, current, raws)
        except TrimmedError:
            return self._load(conn), True
        state.advance_records(raws)
        return state, False

    def snapshot(self) -> Snapshot:
        with self._errors(), self._lock, self._read() as conn:
            return self._load(conn).snapshot()

    def current_rev(self) -> int:
        with self._errors(), self._connection() as conn:
            return _meta(conn)[1]

    def head(self) -> tuple[str, int]:
        with self._errors(), self._connection() as conn:
            return _meta(conn)

    def apply(
        self, changes: Sequence[Change], expect_rev: int | None = None, actor: str = ""
    ) -> int:
        with self._errors(), self._lock:
            with self._write() as conn:
                # The write lock is held: nobody can move the revision until COMMIT.
                state, fresh = self._refresh(conn)
                if expect_rev is not None and expect_rev != state.rev:
                    raise ConflictError(state.rev, expect_rev)
                try:
                    planned = state.plan(changes)
                except (NotFoundError, ValueError):
                    if fresh:
                        raise
                    state = self._load(conn)  # maybe changed behind our back: look again
                    planned = state.plan(changes)
                if not planned:
                    return state.rev
                if not fresh and not _befores_match(conn, planned):
                    state = self._load(conn)  # changed behind our back
                    planned = state.plan(changes)
                    if not planned:
                        return state.rev
                new_rev = state.rev + 1
                # A history starts with the first revision after 0 (the store was made, or
                # wiped); files written before epochs existed get one at their next write.
                epoch = state.epoch if state.rev > 0 and state.epoch else new_epoch()
                self._write_changes(conn, new_rev, planned, actor, epoch)
            state.advance(new_rev, planned, epoch)
            return new_rev

    def _republish(self, config: Config, min_rev: int, actor: str) -> int:
        with self._errors(), self._lock:
            with self._write() as conn:
                state = self._load(conn)  # whole: after a reset no cached state is trusted
                planned = state.plan(replacement_changes(config, state.stored_ids()))
                new_rev, epoch = max(state.rev + 1, min_rev), new_epoch()
                self._write_changes(conn, new_rev, planned, actor, epoch)
            state.advance(new_rev, planned, epoch)
            return new_rev

    def _write_changes(
        self,
        conn: sqlite3.Connection,
        rev: int,
        planned: Sequence[Planned],
        actor: str,
        epoch: str,
    ) -> None:
        now = time.time()
        for change in planned:
            if change.after is None:
                conn.execute(
                    "DELETE FROM items WHERE kind = ? AND id = ?", (change.kind, change.id)
                )
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO items (kind, id, json) VALUES (?, ?, ?)",
                    (change.kind, change.id, change.after),
                )
        conn.executemany(
            f"INSERT INTO changes ({_RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (rev, seq, len(planned), c.kind, c.id, c.op, c.before, c.after, actor, now)
                for seq, c in enumerate(planned, 1)
            ],
        )
        conn.execute("UPDATE meta SET rev = ?, epoch = ? WHERE id = 0", (rev, epoch))
        # Keep at least `history_cap` rows, dropping whole revisions only: every revision
        # older than the one holding the cap-th newest row.
        conn.execute(
            "DELETE FROM changes WHERE rev < ("
            "SELECT rev FROM changes WHERE pos = (SELECT max(pos) FROM changes) - ? + 1)",
            (self.history_cap,),
        )

    def changes_since(self, rev: int, epoch: str | None = None) -> list[ChangeRecord]:
        check_rev(rev)
        with self._errors(), self._read() as conn:
            stored_epoch, current, raws = _history_after(conn, rev)
        return complete_history(rev, current, raws, stored_epoch, epoch)

    def history(self, limit: int = 50, before_rev: int | None = None) -> list[ChangeRecord]:
        bound = before_rev if before_rev is not None else 2**63 - 1
        with self._errors(), self._read() as conn:
            raws = [
                _raw(row)
                for row in conn.execute(
                    f"SELECT {_RECORD_COLUMNS} FROM changes WHERE rev < ? "
                    "ORDER BY rev DESC, seq DESC LIMIT ?",
                    (bound, max(limit, 1)),
                )
            ]
            if raws and raws[-1].seq > 1:  # finish the oldest revision: pages hold whole ones
                last = raws[-1]
                raws += map(
                    _raw,
                    conn.execute(
                        f"SELECT {_RECORD_COLUMNS} FROM changes WHERE rev = ? AND seq < ? "
                        "ORDER BY seq DESC",
                        (last.rev, last.seq),
                    ),
                )
        return [raw.record() for raw in raws]

    async def watch(
        self, rev: int, epoch: str | None = None
    ) -> AsyncGenerator[list[ChangeRecord], None]:
        check_rev(rev)
        # The polls run on the event loop, not in a thread: a thread per poll cost the loop a
        # GIL handover each time (and, on a busy machine, the wait for the thread to be
        # scheduled), which under HTTP load showed in the p99 latency; a poll that finds
        # nothing new costs a few microseconds. They never wait for a lock: the connection has
        # no busy timeout (a WAL reader waits on nobody but a rare recovery), and a read that
        # finds the file busy is made again in a thread, with the busy timeout.
        conn = await asyncio.to_thread(self._watch_connection)
        try:
            last, version = rev, None
            # The first read may be long (a core catching up): off the loop too.
            records: list[ChangeRecord] | None = await asyncio.to_thread(
                self.changes_since, last, epoch
            )
            while True:
                if records:
                    last = records[-1].rev
                    epoch = epoch or records[-1].epoch  # from the first records on, that history
                    yield records
                else:
                    await asyncio.sleep(self._poll)
                version, records = self._poll_changes(conn, version, last, epoch)
                if records is None:
                    records = await asyncio.to_thread(self.changes_since, last, epoch)
        finally:
            conn.close()

    def _watch_connection(self) -> sqlite3.Connection:
        with self._errors():
            if self._closed:
                raise StoreError(f"store {self.url} is closed")
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA query_only = ON")
            return conn

    def _poll_changes(
        self, conn: sqlite3.Connection, version: int | None, rev: int, epoch: str | None
    ) -> tuple[int | None, list[ChangeRecord] | None]:
        """The changes after `rev` if another connection committed since `version` (the
        connection's data version at the last read): (the new version, the changes), or
        (None, None) if the file was busy."""
        if self._closed:
            raise StoreError(f"store {self.url} is closed")
        with self._errors():
            try:
                # Read first: a commit landing after it moves it again, and is seen next time.
                (now,) = conn.execute("PRAGMA data_version").fetchone()
                if now == version:
                    return version, []
                with _reading(conn):
                    stored_epoch, current, raws = _history_after(conn, rev)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                return None, None
        return int(now), complete_history(rev, current, raws, stored_epoch, epoch)

    # -- fleet ----------------------------------------------------------------------------------

    def heartbeat(self, node_id: str, info: Mapping[str, InfoValue], ttl: float) -> None:
        check_node(node_id)
        now = time.time()
        with self._errors(), self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO nodes (node, info, expires_at) VALUES (?, ?, ?)",
                (node_id, json.dumps(dict(info)), now + ttl),
            )
            conn.execute("DELETE FROM nodes WHERE expires_at <= ?", (now,))

    def nodes(self) -> list[dict[str, InfoValue]]:
        with self._errors(), self._connection() as conn:
            rows = conn.execute(
                "SELECT node, info FROM nodes WHERE expires_at > ? ORDER BY node", (time.time(),)
            ).fetchall()
        result: list[dict[str, InfoValue]] = []
        for node_id, text in rows:
            try:
                info = json.loads(text)
            except ValueError:
                info = {}
            node = cast(dict[str, InfoValue], info if isinstance(info, dict) else {})
            node["node"] = node_id
            result.append(node)
        return result

    def publish_stats(
        self,
        node_id: str,
        second: int,
        counters: Mapping[str, Mapping[str, float]],
        ttl: float,
    ) -> None:
        check_node(node_id)
        now = time.time()
        rows = [
            (second, node_id, route, name, float(value), now + ttl)
            for route, values in counters.items()
            for name, value in values.items()
        ]
        if not rows:
            return
        with self._errors(), self._write() as conn:
            conn.executemany("INSERT OR REPLACE INTO stats VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.execute("DELETE FROM stats WHERE expires_at <= ?", (now,))

    def stats(self, since_second: int) -> list[dict[str, Any]]:
        with self._errors(), self._connection() as conn:
            rows = conn.execute(
                "SELECT second, node, route, counter, value FROM stats "
                "WHERE second >= ? AND expires_at > ? ORDER BY second, node, route, counter",
                (since_second, time.time()),
            ).fetchall()
        grouped: dict[tuple[int, str, str], dict[str, float]] = {}
        for second, node, route, counter, value in rows:
            grouped.setdefault((second, node, route), {})[counter] = value
        return [
            {"node": node, "second": second, "route": route, "counters": counters}
            for (second, node, route), counters in grouped.items()
        ]

    # -- control-plane accounts -----------------------------------------------------------------

    def user(self, name: str) -> dict[str, Any] | None:
        with self._errors(), self._connection() as conn:
            row = conn.execute("SELECT json FROM users WHERE name = ?", (name,)).fetchone()
        return account_record(row[0] if row is not None else None)

    def users(self) -> list[dict[str, Any]]:
        with self._errors(), self._connection() as conn:
            rows = conn.execute("SELECT json FROM users ORDER BY name").fetchall()
        records = (account_record(text) for (text,) in rows)
        return [r for r in records if r is not None]

    def add_user(self, record: Mapping[str, Any], replace: bool = False) -> bool:
        name, text = account_json(record)
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._errors(), self._write() as conn:
            cursor = conn.execute(f"{verb} INTO users (name, json) VALUES (?, ?)", (name, text))
            return cursor.rowcount > 0

    def delete_user(self, name: str) -> bool:
        with self._errors(), self._write() as conn:
            return conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    def token(self, digest: str) -> dict[str, Any] | None:
        with self._errors(), self._connection() as conn:
            row = conn.execute("SELECT json FROM tokens WHERE digest = ?", (digest,)).fetchone()
        return account_record(row[0] if row is not None else None)

    def tokens(self) -> list[dict[str, Any]]:
        with self._errors(), self._connection() as conn:
            rows = conn.execute("SELECT json FROM tokens ORDER BY name").fetchall()
        records = (account_record(text) for (text,) in rows)
        return [r for r in records if r is not None]

    def add_token(self, digest: str, record: Mapping[str, Any]) -> bool:
        name, text = account_json(record)
        with self._errors(), self._write() as conn:
            # Both the digest and the name are unique: a clash with either stores nothing.
            cursor = conn.execute(
                "INSERT OR IGNORE INTO tokens (digest, name, json) VALUES (?, ?, ?)",
                (digest, name, text),
            )
            return cursor.rowcount > 0

    def revoke_token(self, name: str) -> bool:
        with self._errors(), self._write() as conn:
            return conn.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount > 0

    def shared_secret(self, name: str, candidate: str) -> str:
        with self._errors(), self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)", (name, candidate)
            )
            (value,) = conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return str(value)

    # -- housekeeping ---------------------------------------------------------------------------

    def info(self) -> dict[str, InfoValue]:
        with self._errors(), self._connection() as conn:
            (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
            epoch, rev = _meta(conn)
        return {
            "backend": "sqlite",
            "url": self.url,
            "path": self.path,
            "server": f"sqlite {sqlite3.sqlite_version}",
            "journal_mode": str(journal),
            "rev": rev,
            "epoch": epoch,
            "history": self.history_cap,
        }

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# -- helpers --------------------------------------------------------------------------------------


def _create_schema(conn: sqlite3.Connection) -> None:
    # executescript() would COMMIT the open transaction first; run statement by statement.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(meta)")}
    if "epoch" not in columns:  # a file made before epochs existed
        conn.execute("ALTER TABLE meta ADD COLUMN epoch TEXT NOT NULL DEFAULT ''")


@contextlib.contextmanager
def _reading(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction on `conn`: every query inside sees the same committed state."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:  # an error may have ended it already
            conn.execute("ROLLBACK")


def _meta(conn: sqlite3.Connection) -> tuple[str, int]:
    """(epoch, revision) of the store."""
    row = conn.execute("SELECT epoch, rev FROM meta WHERE id = 0").fetchone()
    return (str(row[0]), int(row[1])) if row is not None else ("", 0)


def _history_after(conn: sqlite3.Connection, rev: int) -> tuple[str, int, list[RawRecord]]:
    """(epoch, current revision, stored records after `rev`), in a read transaction."""
    epoch, current = _meta(conn)
    return epoch, current, _records_after(conn, rev) if current != rev else []


def _records_after(conn: sqlite3.Connection, rev: int) -> list[RawRecord]:
    return [
        _raw(row)
        for row in conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM changes WHERE rev > ? ORDER BY rev, seq", (rev,)
        )
    ]


def _raw(row: Any) -> RawRecord:
    rev, seq, n, kind, item_id, op, before, after, actor, at = row
    return RawRecord(
        int(rev),
        int(seq),
        int(n),
        str(kind),
        str(item_id),
        "delete" if op == "delete" else "put",
        before,
        after,
        str(actor),
        float(at),
    )


def _befores_match(conn: sqlite3.Connection, planned: Sequence[Planned]) -> bool:
    """Whether every item touched still holds the text `planned` was computed from."""
    seen: set[tuple[str, str]] = set()
    for change in planned:
        key = (change.kind, change.id)
        if key in seen:
            continue
        seen.add(key)
        row = conn.execute("SELECT json FROM items WHERE kind = ? AND id = ?", key).fetchone()
        if (row[0] if row is not None else None) != change.before:
            return False
    return True
