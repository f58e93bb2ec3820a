"""The store on Redis, Valkey or Dragonfly (key layout: DESIGN.md, "Store").

Reads that must be consistent (snapshot, changes with the revision) are one MULTI/EXEC; every
write is one Lua script (`lua.py`) that checks the revision it was validated against. Validation
runs here, against a `ConfigState` kept up to date from the change stream, so a write costs in
proportion to its changes, not to the config: optimistic concurrency, retried when another
writer got in first and the caller gave no `expect_rev`.

redis-py uses hiredis to parse replies when it is installed (the `redis` extra installs it);
`info()["parser"]` says which parser is in use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import NoBackoff
from redis.connection import DefaultParser
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from minirouter.model import KINDS, Config

from . import lua
from .base import (
    CONFLICT_ATTEMPTS,
    Change,
    ChangeRecord,
    InfoValue,
    Snapshot,
    Store,
    account_json,
    account_record,
    check_node,
    check_rev,
    conflict_backoff,
    int_param,
    new_epoch,
    redact_url,
    replacement_changes,
    split_params,
)
from .errors import ConflictError, NotFoundError, StoreError, StoreUnavailable, TrimmedError
from .records import RawRecord, Sequencer, check_history, complete_history
from .state import ConfigState, Planned

__all__ = ["RedisStore"]

_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_SEQ = 2**64 - 1  # "<rev>-<max>": the position after every entry of revision <rev>
# Socket timeouts unless the URL sets its own: without them a call to a server that stops
# answering (CLIENT PAUSE, a frozen host, a dropped network) waits forever, and with it the
# thread that made it. A watch's XREAD blocks for less than half the read timeout.
DEFAULT_SOCKET_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 3.0
_SENTINEL_OPTIONS = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "sentinel_username": str,
    "sentinel_password": str,
}

# The tokens hash holds two fields per token: "d:<digest>" -> the JSON record (the lookup a
# request makes) and "n:<name>" -> the digest (unique names, revocation by name). Both are
# written and deleted together by these scripts, so the hash never holds half a token.
_TOKEN_DIGEST = "d:"
_ADD_TOKEN = """
if redis.call('HEXISTS', KEYS[1], 'n:' .. ARGV[1]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'd:' .. ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'n:' .. ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'd:' .. ARGV[2], ARGV[3])
return 1
"""
_REVOKE_TOKEN = """
local digest = redis.call('HGET', KEYS[1], 'n:' .. ARGV[1])
if not digest then return 0 end
redis.call('HDEL', KEYS[1], 'n:' .. ARGV[1], 'd:' .. digest)
return 1
"""
_ADD_TOKEN_SHA = hashlib.sha1(_ADD_TOKEN.encode()).hexdigest()
_REVOKE_TOKEN_SHA = hashlib.sha1(_REVOKE_TOKEN.encode()).hexdigest()

_AsyncFactory = Callable[[], tuple["redis.asyncio.Redis", Callable[[], Any]]]


class RedisStore(Store):
    """A store on a Redis-protocol server.

    `url`: ``redis://``, ``rediss://``, ``unix://`` (any redis-py URL option, e.g.
    ``socket_timeout``) or ``redis+sentinel://host:port[,host:port]/service[/db]``; plus
    minirouter's own ``prefix`` (keys ``{prefix}:...``) and ``history`` (stream cap).
    Keyword arguments override the URL. `exact_trim` caps the stream exactly instead of
    ``MAXLEN ~`` (which trims whole stream nodes: cheaper, but only in steps of ~100).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        history: int | None = None,
        exact_trim: bool = False,
        watch_block: float = 1.0,
    ) -> None:
        self.url = redact_url(url)
        clean, params = split_params(url, ("prefix", "history"))
        self.prefix = prefix if prefix is not None else params.get("prefix", "minirouter")
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise StoreError(f"invalid key prefix {self.prefix!r}: use [A-Za-z0-9_.-]{{1,64}}")
        self.history_cap = history if history is not None else int_param(params, "history", 10_000)
        self._exact_trim = exact_trim
        self._watch_block = watch_block
        p = "{" + self.prefix + "}"
        self._rev_key = f"{p}:rev"
        self._epoch_key = f"{p}:epoch"
        self._stream = f"{p}:changes"
        self._hashes = {kind: f"{p}:{kind}" for kind in KINDS}
        self._node_prefix = f"{p}:nodes:"
        self._nodes_index = f"{p}:nodes"  # ZSET of node ids: cheaper than SCAN over all keys
        self._stats_prefix = f"{p}:stats:"
        self._stats_index = f"{p}:stats"  # ZSET of stats keys, scored by second
        # Control-plane accounts (DESIGN.md's users and tokens; secrets: the session key).
        self._users_key = f"{p}:users"
        self._tokens_key = f"{p}:tokens"
        self._secrets_key = f"{p}:secrets"
        self._lock = threading.Lock()
        self._state: ConfigState | None = None
        self._closers: list[Callable[[], Any]] = []
        try:
            self._client, self._make_async = self._connect(clean)
        except ValueError as exc:
            raise StoreError(f"invalid store URL {self.url}: {exc}") from None

    # -- connections ----------------------------------------------------------------------------

    def _connect(self, url: str) -> tuple[redis.Redis, _AsyncFactory]:
        # RESP2 whatever the URL says: the reply shapes parsed here are RESP2's. No retries
        # inside redis-py: a dead pooled connection is replaced at checkout anyway, and a
        # retried EVALSHA could apply twice; callers get StoreUnavailable at once instead.
        common: dict[str, Any] = {"decode_responses": True, "protocol": 2}
        if not url.startswith("redis+sentinel:"):
            # Defaults: options given in the URL win over keyword arguments in from_url.
            common |= {
                "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
                "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT,
            }
            client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)

            def make_async() -> tuple[redis.asyncio.Redis, Callable[[], Any]]:
                retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
                aclient = redis.asyncio.Redis.from_url(url, retry=retry, **common)
                return aclient, aclient.aclose

            return client, make_async

        hosts, service, kwargs, sentinel_kwargs = _parse_sentinel_url(url)
        # redis-py's Sentinel classes are not annotated.
        sentinel_cls: Any = redis.sentinel.Sentinel
        sentinel = sentinel_cls(
            hosts, sentinel_kwargs={**sentinel_kwargs, "retry": Retry(NoBackoff(), 0)}
        )
        self._closers.append(sentinel.close)
        master: redis.Redis = sentinel.master_for(
            service, retry=Retry(NoBackoff(), 0), **common, **kwargs
        )

        def make_async_sentinel() -> tuple[redis.asyncio.Redis, Callable[[], Any]]:
            retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
            asentinel_cls: Any = redis.asyncio.sentinel.Sentinel
            asentinel = asentinel_cls(hosts, sentinel_kwargs={**sentinel_kwargs, "retry": retry})
            aclient: redis.asyncio.Redis = asentinel.master_for(
                service, retry=retry, **common, **kwargs
            )

            async def aclose() -> None:
                await aclient.aclose()
                await asentinel.aclose()

            return aclient, aclose

        return master, make_async_sentinel

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn redis-py's exceptions into the store's."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise StoreUnavailable(self._unavailable(exc)) from exc
        except RedisError as exc:
            raise StoreError(f"store {self.url}: {_one_line(exc)}") from exc

    def _unavailable(self, exc: BaseException) -> str:
        return f"cannot reach the store at {self.url}: {_one_line(exc) or type(exc).__name__}"

    # -- config ---------------------------------------------------------------------------------

    def _load(self) -> ConfigState:
        """Read every hash and the revision in one MULTI/EXEC."""
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self._rev_key)
        pipe.get(self._epoch_key)
        for kind in KINDS:
            pipe.hgetall(self._hashes[kind])
        rev, epoch, *hashes = pipe.execute()
        # HGETALL answers in hash order; the snapshot lists items by id. Sorting the ids alone
        # (plain strings) is several times cheaper than the snapshot's sort of (id, item)
        # pairs in random order, which then finds them in order already (as from SQLite).
        raw = {
            kind: {item_id: h[item_id] for item_id in sorted(cast(dict[str, str], h))}
            for kind, h in zip(KINDS, hashes, strict=True)
        }
        self._state = ConfigState(_int(rev), raw, self._state, epoch or "")
        return self._state

    def _read_changes(self, rev: int) -> tuple[int, str, list[RawRecord]]:
        """The current revision, the epoch and every stream entry after revision `rev`,
        atomically."""
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self._rev_key)
        pipe.get(self._epoch_key)
        pipe.xrange(self._stream, f"{rev + 1}-0", "+")
        current, epoch, entries = pipe.execute()
        return _int(current), epoch or "", [_raw_record(e) for e in entries]

    def _refresh(self) -> tuple[ConfigState, bool]:
        """The state at the current revision, and whether it was loaded whole just now."""
        state = self._state
        if state is None:
            return self._load(), True
        current, epoch, raws = self._read_changes(state.rev)
        try:
            check_history(state.rev, current, raws, epoch, state.epoch or None)
            if epoch != state.epoch:
                raise TrimmedError("another history")  # e.g. the first write of a new one
        except TrimmedError:
            return self._load(), True  # too far behind, or the store was reset
        state.advance_records(raws)
        return state, False

    def snapshot(self) -> Snapshot:
        with self._errors(), self._lock:
            return self._load().snapshot()

    def current_rev(self) -> int:
        with self._errors():
            return _int(self._client.get(self._rev_key))

    def head(self) -> tuple[str, int]:
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self._epoch_key)
            pipe.get(self._rev_key)
            epoch, rev = pipe.execute()
        return epoch or "", _int(rev)

    def apply(
        self, changes: Sequence[Change], expect_rev: int | None = None, actor: str = ""
    ) -> int:
        with self._errors(), self._lock:
            for attempt in range(CONFLICT_ATTEMPTS):
                state, fresh = self._refresh()
                if expect_rev is not None and expect_rev != state.rev:
                    raise ConflictError(state.rev, expect_rev)
                try:
                    planned = state.plan(changes)
                except (NotFoundError, ValueError):
                    if fresh:
                        raise
                    # Maybe written behind our back since the last full read: check once more
                    # against the hashes themselves before refusing.
                    state = self._load()
                    if expect_rev is not None and expect_rev != state.rev:
                        raise ConflictError(state.rev, expect_rev) from None
                    planned = state.plan(changes)
                if not planned:
                    return state.rev
                status, value, epoch = self._run_apply(state.rev, planned, actor)
                if status == "ok":
                    state.advance(value, planned, epoch)
                    return value
                if status == "conflict":
                    if expect_rev is not None:
                        raise ConflictError(value, expect_rev)
                    conflict_backoff(attempt)
                elif status == "stale":
                    self._state = None  # an item changed behind our back: read everything
                else:
                    raise StoreError(
                        f"store {self.url}: {self._stream} holds revision {value} but "
                        f"{self._rev_key} is {state.rev}; was {self._rev_key} reset or deleted?"
                    )
            raise ConflictError(self.current_rev())

    def _republish(self, config: Config, min_rev: int, actor: str) -> int:
        with self._errors(), self._lock:
            for attempt in range(CONFLICT_ATTEMPTS):
                # Read whole: a republish follows a reset, when no cached state can be trusted.
                state = self._load()
                planned = state.plan(replacement_changes(config, state.stored_ids()))
                status, value, epoch = self._run_apply(
                    state.rev, planned, actor, new_history=True, min_rev=min_rev
                )
                if status == "ok":
                    state.advance(value, planned, epoch)
                    return value
                if status == "ahead":
                    raise StoreError(
                        f"store {self.url}: {self._stream} holds revision {value} but "
                        f"{self._rev_key} is {state.rev}; was {self._rev_key} reset or deleted?"
                    )
                conflict_backoff(attempt)  # written meanwhile: plan again from what is stored
            raise ConflictError(self.current_rev())

    def _run_apply(
        self,
        rev: int,
        planned: Sequence[Planned],
        actor: str,
        *,
        new_history: bool = False,
        min_rev: int = 0,
    ) -> tuple[str, int, str]:
        checks: list[str] = []
        seen: set[tuple[str, str]] = set()
        for change in planned:
            if (change.kind, change.id) not in seen:
                seen.add((change.kind, change.id))
                expected = "0" if change.before is None else "1" + change.before
                checks += [change.kind, change.id, expected]
        args: list[str | int] = [
            rev,
            self.history_cap,
            "0" if self._exact_trim else "1",
            actor,
            repr(time.time()),
            len(seen),
            len(planned),
            new_epoch(),
            "1" if new_history else "0",
            min_rev,
            *checks,
        ]
        for change in planned:
            args += [change.kind, change.id, change.op, change.before or "", change.after or ""]
        keys = [
            self._rev_key,
            self._stream,
            *(self._hashes[kind] for kind in KINDS),
            self._epoch_key,
        ]
        try:
            result = self._client.evalsha(lua.APPLY_SHA, len(keys), *keys, *args)
        except NoScriptError:
            result = self._client.eval(lua.APPLY, len(keys), *keys, *args)
        status = str(result[0])
        if status == "ok":
            return status, int(result[1]), str(result[2])
        return status, (int(result[1]) if status != "stale" else 0), ""

    def changes_since(self, rev: int, epoch: str | None = None) -> list[ChangeRecord]:
        check_rev(rev)
        with self._errors():
            current, stored_epoch, raws = self._read_changes(rev)
        return complete_history(rev, current, raws, stored_epoch, epoch)

    def history(self, limit: int = 50, before_rev: int | None = None) -> list[ChangeRecord]:
        if before_rev is not None and before_rev <= 1:
            return []
        end = "+" if before_rev is None else f"{before_rev - 1}-{_MAX_SEQ}"
        with self._errors():
            entries: Any = self._client.xrevrange(self._stream, end, "-", count=max(limit, 1))
            raws = [_raw_record(e) for e in entries]
            if raws and raws[-1].seq > 1:  # finish the oldest revision: pages hold whole ones
                last = raws[-1]
                rest: Any = self._client.xrevrange(
                    self._stream, f"{last.rev}-{last.seq - 1}", f"{last.rev}-0"
                )
                raws += map(_raw_record, rest)
        return [raw.record() for raw in raws]

    async def watch(
        self, rev: int, epoch: str | None = None
    ) -> AsyncGenerator[list[ChangeRecord], None]:
        check_rev(rev)
        client, aclose = self._make_async()
        try:
            timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
            # XREAD must return (empty) before the socket read would time out.
            block = self._watch_block if not timeout else min(self._watch_block, timeout / 2)
            try:
                pipe = client.pipeline(transaction=True)
                pipe.get(self._rev_key)
                pipe.get(self._epoch_key)
                pipe.xrange(self._stream, f"{rev + 1}-0", "+")
                current, stored_epoch, entries = await pipe.execute()
                current, stored_epoch = _int(current), stored_epoch or ""
                records = complete_history(
                    rev, current, map(_raw_record, entries), stored_epoch, epoch
                )
                if records:
                    yield records
                sequencer = Sequencer(current, stored_epoch)
                position = f"{current}-{_MAX_SEQ}"
                while True:
                    reply: Any = await client.xread(
                        {self._stream: position}, count=1000, block=max(1, int(block * 1000))
                    )
                    if not reply:
                        # Idle: a revision below ours or another epoch means the store was
                        # reset (or republished without a change) under us.
                        pipe = client.pipeline(transaction=True)
                        pipe.get(self._rev_key)
                        pipe.get(self._epoch_key)
                        now, now_epoch = await pipe.execute()
                        now, now_epoch = _int(now), now_epoch or ""
                        if now < sequencer.rev:
                            raise TrimmedError(
                                f"the store is at revision {now}, below {sequencer.rev} "
                                "(was it reset?)"
                            )
                        if sequencer.epoch and now_epoch != sequencer.epoch:
                            raise TrimmedError(
                                f"the store holds another history (epoch {now_epoch or 'none'}, "
                                f"not {sequencer.epoch}): it was reset or republished"
                            )
                        continue
                    entries = reply[0][1]
                    position = entries[-1][0]
                    # A gap here means the stream was trimmed past our position.
                    batch = sequencer.feed(map(_raw_record, entries))
                    if batch:
                        yield batch
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                raise StoreUnavailable(self._unavailable(exc)) from exc
            except RedisError as exc:
                raise StoreError(f"store {self.url}: {_one_line(exc)}") from exc
        finally:
            await aclose()

    # -- fleet ----------------------------------------------------------------------------------

    def heartbeat(self, node_id: str, info: Mapping[str, InfoValue], ttl: float) -> None:
        check_node(node_id)
        key = self._node_prefix + node_id
        # Values as JSON: a pid stays an int and a version "1.0" stays a string.
        fields = {name: json.dumps(value) for name, value in info.items()}
        fields["node"] = json.dumps(node_id)
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping=cast(Mapping[Any, Any], fields))
            pipe.pexpire(key, _ms(ttl))
            pipe.zadd(self._nodes_index, {node_id: time.time() + ttl})
            pipe.execute()

    def nodes(self) -> list[dict[str, InfoValue]]:
        with self._errors():
            ids = cast(list[str], self._client.zrange(self._nodes_index, 0, -1))
            pipe = self._client.pipeline(transaction=False)
            for node_id in ids:
                pipe.hgetall(self._node_prefix + node_id)
            found = pipe.execute()
            gone = [node_id for node_id, fields in zip(ids, found, strict=True) if not fields]
            if gone:
                # The index is pruned by readers, against the server's own expiry: no clocks.
                self._client.zrem(self._nodes_index, *gone)
        result: list[dict[str, InfoValue]] = []
        for node_id, fields in zip(ids, found, strict=True):
            if fields:
                node = {name: _json_value(value) for name, value in fields.items()}
                node["node"] = node_id
                result.append(node)
        return sorted(result, key=lambda n: str(n["node"]))

    def publish_stats(
        self,
        node_id: str,
        second: int,
        counters: Mapping[str, Mapping[str, float]],
        ttl: float,
    ) -> None:
        check_node(node_id)
        fields = {
            f"{route}|{name}": repr(float(value))
            for route, values in counters.items()
            for name, value in values.items()
        }
        if not fields:
            return
        key = f"{self._stats_prefix}{node_id}:{second}"
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(key, mapping=cast(Mapping[Any, Any], fields))
            pipe.pexpire(key, _ms(ttl))
            pipe.zadd(self._stats_index, {key: second})
            pipe.zremrangebyscore(self._stats_index, "-inf", f"({second - ttl}")
            pipe.execute()

    def stats(self, since_second: int) -> list[dict[str, Any]]:
        with self._errors():
            keys = cast(
                list[str], self._client.zrangebyscore(self._stats_index, since_second, "+inf")
            )
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            found = pipe.execute()
        rows: dict[tuple[int, str, str], dict[str, float]] = {}
        for key, fields in zip(keys, found, strict=True):
            node, _, second_text = key.removeprefix(self._stats_prefix).rpartition(":")
            if not second_text.lstrip("-").isdigit():
                continue
            for field_name, value in fields.items():
                route, _, counter = field_name.partition("|")
                with contextlib.suppress(ValueError):
                    rows.setdefault((int(second_text), node, route), {})[counter] = float(value)
        return [
            {"node": node, "second": second, "route": route, "counters": counters}
            for (second, node, route), counters in sorted(rows.items())
        ]

    # -- control-plane accounts -----------------------------------------------------------------

    def user(self, name: str) -> dict[str, Any] | None:
        with self._errors():
            return account_record(cast(str | None, self._client.hget(self._users_key, name)))

    def users(self) -> list[dict[str, Any]]:
        with self._errors():
            found = cast(dict[str, str], self._client.hgetall(self._users_key))
        records = (account_record(found[name]) for name in sorted(found))
        return [r for r in records if r is not None]

    def add_user(self, record: Mapping[str, Any], replace: bool = False) -> bool:
        name, text = account_json(record)
        with self._errors():
            if replace:
                self._client.hset(self._users_key, name, text)
                return True
            return bool(self._client.hsetnx(self._users_key, name, text))

    def delete_user(self, name: str) -> bool:
        with self._errors():
            return bool(self._client.hdel(self._users_key, name))

    def token(self, digest: str) -> dict[str, Any] | None:
        with self._errors():
            text = self._client.hget(self._tokens_key, _TOKEN_DIGEST + digest)
        return account_record(cast(str | None, text))

    def tokens(self) -> list[dict[str, Any]]:
        with self._errors():
            found = cast(dict[str, str], self._client.hgetall(self._tokens_key))
        records = [
            account_record(text) for field, text in found.items() if field.startswith(_TOKEN_DIGEST)
        ]
        return sorted((r for r in records if r is not None), key=lambda r: str(r.get("name")))

    def add_token(self, digest: str, record: Mapping[str, Any]) -> bool:
        name, text = account_json(record)
        with self._errors():
            return bool(
                self._script(_ADD_TOKEN, _ADD_TOKEN_SHA, [self._tokens_key], [name, digest, text])
            )

    def revoke_token(self, name: str) -> bool:
        with self._errors():
            return bool(self._script(_REVOKE_TOKEN, _REVOKE_TOKEN_SHA, [self._tokens_key], [name]))

    def shared_secret(self, name: str, candidate: str) -> str:
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.hsetnx(self._secrets_key, name, candidate)
            pipe.hget(self._secrets_key, name)
            _, value = pipe.execute()
        return str(value)

    def _script(self, script: str, sha: str, keys: list[str], args: list[str]) -> Any:
        try:
            return self._client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            return self._client.eval(script, len(keys), *keys, *args)

    # -- housekeeping ---------------------------------------------------------------------------

    def info(self) -> dict[str, InfoValue]:
        kwargs = self._client.connection_pool.connection_kwargs
        parser = kwargs.get("parser_class", DefaultParser)
        with self._errors():
            server: dict[str, Any] = self._client.info("server")
            epoch, rev = self.head()
        if "dragonfly_version" in server:
            name, version = "dragonfly", server["dragonfly_version"]
        else:
            name = str(server.get("server_name", "redis"))
            version = server.get(f"{name}_version", server.get("redis_version", "?"))
        return {
            "backend": "redis",
            "url": self.url,
            "prefix": self.prefix,
            "parser": "hiredis" if "hiredis" in parser.__name__.lower() else "python",
            "server": f"{name} {version}",
            "rev": rev,
            "epoch": epoch,
            "history": self.history_cap,
        }

    def close(self) -> None:
        self._client.close()
        for close in self._closers:
            close()
        self._closers.clear()


# -- helpers --------------------------------------------------------------------------------------


def _parse_sentinel_url(
    url: str,
) -> tuple[list[tuple[str, int]], str, dict[str, Any], dict[str, Any]]:
    """``redis+sentinel://[user:password@]host:port[,...]/service[/db][?options]``.

    Returns (sentinel addresses, service name, master client options, sentinel options).
    """
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    kwargs: dict[str, Any] = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            kwargs["username"] = unquote(user)
        if password:
            kwargs["password"] = unquote(password)
    hosts: list[tuple[str, int]] = []
    for address in filter(None, hostlist.split(",")):
        match = re.fullmatch(r"\[([^]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", address)
        if match is None:
            raise ValueError(f"invalid sentinel address {address!r}")
        host = match.group(1) or match.group(3)
        hosts.append((unquote(host), int(match.group(2) or match.group(4) or 26379)))
    if not hosts:
        raise ValueError("no sentinel address")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError("expected /service_name or /service_name/db after the sentinels")
    if len(segments) == 2:
        kwargs["db"] = int(segments[1])
    sentinel_kwargs: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query):
        if name not in _SENTINEL_OPTIONS:
            raise ValueError(f"unknown option {name!r}")
        parsed = _SENTINEL_OPTIONS[name](value)
        if name.startswith("sentinel_"):
            sentinel_kwargs[name.removeprefix("sentinel_")] = parsed
        else:
            kwargs[name] = parsed
            sentinel_kwargs[name] = parsed
    return hosts, segments[0], kwargs, sentinel_kwargs


def _raw_record(entry: Any) -> RawRecord:
    """A stream entry (id, fields) as a RawRecord; its revision and seq come from the id."""
    entry_id, fields = entry
    rev_text, _, seq_text = str(entry_id).partition("-")
    try:
        return RawRecord(
            rev=int(rev_text),
            seq=int(seq_text),
            n=int(fields.get("n", 1)),
            kind=fields.get("kind", ""),
            id=fields.get("id", ""),
            op="delete" if fields.get("op") == "delete" else "put",
            before=fields.get("before") or None,
            after=fields.get("after") or None,
            actor=fields.get("actor", ""),
            at=float(fields.get("at", 0.0)),
            epoch=fields.get("epoch", ""),
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"malformed change stream entry {entry_id}: {exc}") from None


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _json_value(text: str) -> InfoValue:
    try:
        value = json.loads(text)
    except ValueError:
        return text  # written by something else
    return value if isinstance(value, str | int | float) else text


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
