"""Every command the Redis store sends is one Dragonfly implements, and its scripts touch only
the keys they declare (Dragonfly refuses undeclared keys by default).

Valkey runs the whole contract suite (conftest). Dragonfly cannot: it is not packaged for Debian
12, PyPI or npm, the registries this project installs from. So this records, with MONITOR on a
real redis-server, what the store actually sends while it does everything it can do (writes,
snapshot, history, rollback, watch, heartbeats, stats, accounts) and checks that against
Dragonfly's command reference (https://www.dragonflydb.io/docs/command-reference).
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading

import redis

from minirouter.store import Change, open_store

from .conftest import Server
from .helpers import put, route, upstream

# Commands of Dragonfly's command reference that a client of this kind could send.
DRAGONFLY = frozenset(
    [
        "CLIENT",
        "DEL",
        "EVAL",
        "EVALSHA",
        "EXEC",
        "EXISTS",
        "EXPIRE",
        "GET",
        "HDEL",
        "HELLO",
        "HEXISTS",
        "HGET",
        "HGETALL",
        "HKEYS",
        "HLEN",
        "HMGET",
        "HSET",
        "HSETNX",
        "INFO",
        "MGET",
        "MULTI",
        "PEXPIRE",
        "PING",
        "SCAN",
        "SCRIPT",
        "SELECT",
        "SET",
        "TIME",
        "TTL",
        "XADD",
        "XLEN",
        "XRANGE",
        "XREAD",
        "XREVRANGE",
        "XTRIM",
        "ZADD",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZREM",
        "ZREMRANGEBYSCORE",
    ]
)

_LINE = re.compile(r"^\d+\.\d+ \[\d+ (?P<source>[^\]]+)\] (?P<args>.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Monitor(threading.Thread):
    """MONITOR on its own connection: every command the server runs, as lists of strings."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(b"MONITOR\r\n")
        self.buffer = b""
        while not self.buffer.startswith(b"+OK\r\n"):
            self.buffer += self.sock.recv(4096)
        self.buffer = self.buffer[5:]
        self.lines: list[tuple[str, list[str]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            self.buffer += data
        self.sock.close()

    def stop(self) -> list[tuple[str, list[str]]]:
        self.stopping.set()
        self.join(10)
        for raw in self.buffer.decode("utf-8", "replace").split("\r\n"):
            match = _LINE.match(raw.removeprefix("+"))
            if match:
                args = [a.group(1) for a in _ARG.finditer(match.group("args"))]
                self.lines.append((match.group("source"), args))
        return self.lines


def _exercise(url: str) -> None:
    """Everything the store does, once or twice."""
    with open_store(url) as store, open_store(url) as other:
        rev = store.apply(put(upstream("api"), route("r1")), expect_rev=0, actor="t")
        store.apply([Change.put(route("r2"))], actor="t")
        store.apply([Change.delete("routes", "r2")], actor="t")
        store.snapshot()
        other.snapshot()
        other.changes_since(rev)
        store.head()
        store.current_rev()
        store.history()
        store.rollback(rev, actor="t")
        store.republish(store.snapshot().config, actor="t")
        store.heartbeat("n1", {"rev": rev}, ttl=30)
        store.nodes()
        store.publish_stats("n1", 100, {"r1": {"2xx": 1}}, ttl=60)
        store.stats(0)
        store.add_user({"name": "ann", "role": "admin"})
        store.users()
        store.add_token("d" * 64, {"name": "tok", "user": "ann"})
        store.tokens()
        store.revoke_token("tok")
        store.delete_user("ann")
        store.info()

        async def follow() -> None:
            watch = other.watch(other.current_rev())
            waiting = asyncio.ensure_future(anext(watch))
            await asyncio.sleep(0.1)
            await asyncio.to_thread(store.apply, [Change.put(route("r3"))], None, "t")
            await asyncio.wait_for(waiting, 10)
            await watch.aclose()

        asyncio.run(follow())


def test_every_command_sent_is_one_dragonfly_has(redis_server: Server) -> None:
    with redis.Redis(port=redis_server.port, db=5) as client:
        client.flushdb()
    monitor = Monitor(redis_server.port)
    monitor.start()
    try:
        _exercise(f"redis://127.0.0.1:{redis_server.port}/5")
    finally:
        lines = monitor.stop()
    sent = {args[0].upper() for _, args in lines if args}
    assert {"XADD", "HGETALL", "XREAD"} <= sent, sent  # it saw the work
    assert sent <= DRAGONFLY, sorted(sent - DRAGONFLY)


def test_scripts_touch_only_their_declared_keys(redis_server: Server) -> None:
    monitor = Monitor(redis_server.port)
    monitor.start()
    with redis.Redis(port=redis_server.port, db=6) as client:
        client.flushdb()
    try:
        _exercise(f"redis://127.0.0.1:{redis_server.port}/6")
    finally:
        lines = monitor.stop()
    declared: set[str] = set()
    checked = 0
    for source, args in lines:
        if source != "lua" and args and args[0].upper() in ("EVAL", "EVALSHA"):
            declared = set(args[3 : 3 + int(args[2])])
        elif source == "lua" and len(args) > 1:
            # Every command the scripts run takes its key first.
            assert args[1] in declared, (args, sorted(declared))
            checked += 1
    assert checked > 10  # the scripts ran, and were seen
