"""Real processes for the mirror tests: redis-server, `minirouter core --store`, client loops.

Everything here is black-box: the core runs as a subprocess (`StoreCore`, a `CoreProcess`
started with `--store` instead of `--config`), the store is a real redis-server on a port of
its own or a real SQLite file, and every request goes over a real socket to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from websockets.sync.client import ClientConnection, connect

from integration.coreproc import CoreProcess, metric_sum, poll
from integration.httpclient import RawConnection, raw_request_bytes
from minirouter.model import from_dict
from minirouter.store import Change, Store, open_store

PREFIX = "{minirouter}"


# -- ports -----------------------------------------------------------------------------------------


def low_free_port() -> int:
    """A free port below the ephemeral range.

    A server that is stopped and started again on the same port (redis-server here) must not
    have its port taken meanwhile by the ephemeral end of some client connection, and a client
    reconnecting to a closed port in the ephemeral range can, rarely, connect to itself.
    """
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


# -- redis-server ----------------------------------------------------------------------------------


class RedisProcess:
    """One redis-server on 127.0.0.1:`port`, data in `workdir`; can be killed and restarted.

    `persist`: append-only file on (the data survives a kill and a restart), else no
    persistence at all (a restart comes back empty).
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persist: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or low_free_port()
        self.persist = persist
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, port: int | None = None) -> list[str]:
        exe = shutil.which("redis-server")
        if exe is None:
            raise AssertionError("redis-server is not installed (apt-get install redis-server)")
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
        if not self.persist:
            persistence = ["--appendonly", "no"]
        return [
            exe,
            *("--port", str(port or self.port), "--bind", "127.0.0.1"),
            *("--dir", str(self.workdir), "--save", ""),
            *persistence,
            *self.extra,
        ]

    def start(self, port: int | None = None) -> RedisProcess:
        """Start (again), on `port` if given (the data dir is the same), and wait for PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = self.workdir / f"redis-{self.starts}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                self.command(port),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        proc = self.proc
        try:
            poll(
                lambda: self._pong(port or self.port, proc),
                10,
                interval=0.01,
                message=lambda: f"redis-server to answer PING; log:\n{log.read_text()}",
            )
        except BaseException:
            self.kill()
            raise
        return self

    @staticmethod
    def _pong(port: int, proc: subprocess.Popen[bytes]) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {proc.returncode}")
        with socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, no final save (the AOF is already written)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)

    def shutdown(self) -> None:
        """SIGTERM: redis-server flushes the append-only file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def client(self, port: int | None = None) -> redis.Redis:
        return redis.Redis(port=port or self.port, decode_responses=True)


# -- the core --------------------------------------------------------------------------------------


class StoreCore(CoreProcess):
    """`minirouter core --store URL --snapshot PATH`, with CoreProcess's admin and stop helpers."""

    def __init__(
        self,
        workdir: Path,
        store_url: str,
        args: Sequence[str] = (),
        *,
        snapshot: Path | None = None,
        admin: bool = True,
        workers: int | None = None,
        listen_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "not-used.yaml"
        self.store_url = store_url
        self.snapshot_path = snapshot or workdir / "snapshot.json"
        self._spawn(
            ["--store", store_url, "--snapshot", str(self.snapshot_path)],
            ["--access-log", "off", *args],
            admin=admin,
            workers=workers,
            listen_port=listen_port,
            # Never the user's own state dir.
            env={"XDG_STATE_HOME": str(workdir / "state"), **(env or {})},
        )

    def store_health(self, worker: int = 0) -> dict[str, Any]:
        store = self.healthz(worker)["store"]
        assert isinstance(store, dict)
        return store

    def metric(self, name: str, worker: int = 0, **labels: str) -> float:
        return metric_sum(self.metrics(worker), name, **labels)

    def pause(self) -> None:
        """SIGSTOP every process of the core (it neither serves nor reads the store)."""
        self._remember_children()
        for pid in self._known_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._known_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def stop(self, timeout: float = 15.0) -> int | None:
        self.resume()  # a stopped process would not act on SIGTERM
        return super().stop(timeout)


# -- stores ----------------------------------------------------------------------------------------


@dataclass
class StoreBackend:
    """One store under test: its URL, and ways to write behind minirouter's back."""

    name: str  # "redis" or "sqlite"
    url: str
    redis: RedisProcess | None = None
    path: Path | None = None
    opened: list[Store] = field(default_factory=list)

    def open(self, history: int | None = None) -> Store:
        """A store client on this backend (closed at teardown); `history`: the change cap."""
        url = self.url if history is None else f"{self.url}?history={history}"
        store = open_store(url)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()
        self.opened.clear()

    # -- behind minirouter's back ------------------------------------------------------------

    def raw_change(self, kind: str, item_id: str, text: str | None) -> int:
        """Store `text` under (kind, id) (None: delete) and append a matching change record,
        as a foreign writer would (no validation). Returns the new revision."""
        if self.path is not None:
            with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as conn, conn:
                (rev,) = conn.execute("SELECT rev FROM meta WHERE id = 0").fetchone()
                row = conn.execute(
                    "SELECT json FROM items WHERE kind = ? AND id = ?", (kind, item_id)
                ).fetchone()
                before = row[0] if row else None
                if text is None:
                    conn.execute("DELETE FROM items WHERE kind = ? AND id = ?", (kind, item_id))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO items (kind, id, json) VALUES (?, ?, ?)",
                        (kind, item_id, text),
                    )
                new_rev = int(rev) + 1
                conn.execute(
                    "INSERT INTO changes (rev, seq, n, kind, id, op, before, after, actor, at) "
                    "VALUES (?, 1, 1, ?, ?, ?, ?, ?, 'raw', ?)",
                    (
                        new_rev,
                        kind,
                        item_id,
                        "put" if text else "delete",
                        before,
                        text,
                        time.time(),
                    ),
                )
                conn.execute("UPDATE meta SET rev = ? WHERE id = 0", (new_rev,))
            return new_rev
        assert self.redis is not None
        with self.redis.client() as client:
            before = client.hget(f"{PREFIX}:{kind}", item_id)
            new_rev = int(client.get(f"{PREFIX}:rev") or 0) + 1
            pipe = client.pipeline(transaction=True)
            if text is None:
                pipe.hdel(f"{PREFIX}:{kind}", item_id)
            else:
                pipe.hset(f"{PREFIX}:{kind}", item_id, text)
            pipe.set(f"{PREFIX}:rev", new_rev)
            fields = {
                "rev": new_rev,
                "n": 1,
                "kind": kind,
                "id": item_id,
                "op": "put" if text else "delete",
                "before": before or "",
                "after": text or "",
                "actor": "raw",
                "at": repr(time.time()),
            }
            pipe.xadd(f"{PREFIX}:changes", fields, id=f"{new_rev}-1")
            pipe.execute()
        return new_rev

    def raw_reset(self) -> None:
        """Empty the store and its history, revision 0 (SQLite: what a wiped file would hold)."""
        assert self.path is not None
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as conn, conn:
            conn.execute("DELETE FROM items")
            conn.execute("DELETE FROM changes")
            conn.execute("UPDATE meta SET rev = 0 WHERE id = 0")


# -- config ----------------------------------------------------------------------------------------


def upstream_item(uid: str, address: str, **extra: Any) -> Any:
    return from_dict("upstreams", {"id": uid, "targets": [address], **extra})


def route_item(rid: str, upstream_id: str, path: str | None = None, **extra: Any) -> Any:
    data: dict[str, Any] = {"id": rid, "path": path or f"/{rid}/", "upstream": upstream_id}
    return from_dict("routes", data | extra)


def put(*items: Any) -> list[Change]:
    return [Change.put(item) for item in items]


def route_ids(store: Store) -> set[str]:
    return {r.id for r in store.snapshot().config.routes}


# -- requests --------------------------------------------------------------------------------------


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str | None]:
    """GET `path` on a new connection: (status, the upstream's name or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "mirror.test"})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, _name_of(resp.status, body)
    finally:
        conn.close()


def _name_of(status: int, body: bytes) -> str | None:
    if status != 200:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return str(data.get("name")) if isinstance(data, dict) else None


def wait_served(
    port: int, path: str, want: str | int, timeout: float = 5.0, interval: float = 0.005
) -> float:
    """Poll until GET `path` is answered by upstream `want` (or with status `want`).

    Returns how long it took (seconds); fails after `timeout`.
    """
    started = time.monotonic()
    last: list[tuple[int, str | None]] = []

    def check() -> bool:
        status, name = get(port, path)
        last[:] = [(status, name)]
        return (name == want) if isinstance(want, str) else (status == want)

    poll(check, timeout, interval=interval, message=lambda: f"GET {path} -> {want} (last {last})")
    return time.monotonic() - started


class KeepAliveClient:
    """GET requests on one raw keep-alive connection, reconnecting when the router closes it."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn: RawConnection | None = None

    def get(self, path: str) -> tuple[int, str | None]:
        if self.conn is None:
            self.conn = RawConnection(self.port, self.timeout)
        self.conn.send(raw_request_bytes("GET", path, host="mirror.test"))
        resp = self.conn.read_response()
        if (resp.header("Connection") or "").lower() == "close":
            self.close()
        return resp.status, _name_of(resp.status, resp.body)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class TrafficLoop:
    """Requests in a background thread, bounded in count and time, alternating a keep-alive
    connection and a new connection per request; every answer is checked by `ok`.

    Use as a context manager: the loop stops (and is joined) on exit. `failures` lists every
    request that failed, with why.
    """

    def __init__(
        self,
        port: int,
        path: str,
        ok: Callable[[int, str | None], bool],
        *,
        max_seconds: float = 30.0,
        max_requests: int = 200_000,
    ) -> None:
        self.port = port
        self.path = path
        self.ok = ok
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.requests = 0
        self.failures: list[str] = []
        self.served_by: dict[str | None, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> TrafficLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.max_seconds + 30)
        assert not self._thread.is_alive(), "traffic loop did not stop"

    def wait_requests(self, n: int, timeout: float = 10.0) -> None:
        """Wait until at least `n` more requests than now were made."""
        target = self.requests + n
        poll(lambda: self.requests >= target, timeout, interval=0.01, message="traffic")

    def _run(self) -> None:
        keepalive = KeepAliveClient(self.port)
        deadline = time.monotonic() + self.max_seconds
        try:
            while (
                not self._stop.is_set()
                and self.requests < self.max_requests
                and time.monotonic() < deadline
            ):
                fresh = self.requests % 2 == 1
                try:
                    status, name = get(self.port, self.path) if fresh else keepalive.get(self.path)
                except (OSError, http.client.HTTPException, AssertionError) as exc:
                    keepalive.close()
                    result = f"{'new' if fresh else 'keep-alive'} connection: {exc!r}"
                else:
                    self.served_by[name] = self.served_by.get(name, 0) + 1
                    result = "" if self.ok(status, name) else f"status {status} from {name}"
                self.requests += 1
                if result:
                    self.failures.append(f"request {self.requests}: {result}")
        finally:
            keepalive.close()


class WebSocketLoop:
    """One WebSocket through the router, echoing a numbered message at a time in a thread."""

    def __init__(self, port: int, path: str, *, max_seconds: float = 30.0) -> None:
        self.port = port
        self.path = path
        self.max_seconds = max_seconds
        self.messages = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._exit = contextlib.ExitStack()
        self._ws: ClientConnection | None = None
        self._thread = threading.Thread(target=self._run, name="websocket", daemon=True)

    def __enter__(self) -> WebSocketLoop:
        with contextlib.ExitStack() as stack:
            self._ws = stack.enter_context(
                connect(
                    f"ws://127.0.0.1:{self.port}{self.path}",
                    proxy=None,
                    open_timeout=10,
                    close_timeout=5,
                    compression=None,
                )
            )
            greeting = self._ws.recv(timeout=10)
            assert isinstance(greeting, str) and greeting.startswith("hello from"), greeting
            self._exit = stack.pop_all()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.max_seconds + 30)
        self._exit.close()

    def _run(self) -> None:
        assert self._ws is not None
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            text = f"message {self.messages}"
            try:
                self._ws.send(text)
                echo = self._ws.recv(timeout=5)
            except Exception as exc:
                self.failures.append(f"{text}: {exc!r}")
                return
            if echo != text:
                self.failures.append(f"{text}: echoed {echo!r}")
                return
            self.messages += 1


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """`with timed() as t:` ... `t[0]` is the elapsed seconds afterwards."""
    out: list[float] = []
    started = time.monotonic()
    try:
        yield out
    finally:
        out.append(time.monotonic() - started)
