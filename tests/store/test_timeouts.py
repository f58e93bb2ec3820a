"""A Redis that stops answering (CLIENT PAUSE, a frozen host) makes store calls fail within the
socket timeout instead of hanging the thread that made them."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import redis

from minirouter.store import StoreUnavailable
from minirouter.store.redis import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT, RedisStore

from .conftest import Server


def test_timeouts_by_default_and_from_the_url(redis_url: str) -> None:
    with RedisStore(redis_url) as store:
        kwargs = store._client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT
        assert kwargs["socket_connect_timeout"] == DEFAULT_CONNECT_TIMEOUT
    with RedisStore(f"{redis_url}?socket_timeout=0.25") as store:
        assert store._client.connection_pool.connection_kwargs["socket_timeout"] == 0.25


def test_a_paused_server_is_unavailable_not_a_hang(redis_server: Server, redis_url: str) -> None:
    pause = 1.5  # seconds; CLIENT UNPAUSE would itself wait for the end of a pause ALL
    with RedisStore(f"{redis_url}?socket_timeout=0.2") as store:
        store.current_rev()  # connected before the pause
        with redis.Redis(port=redis_server.port) as admin:
            admin.execute_command("CLIENT", "PAUSE", int(pause * 1000), "ALL")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.head()

        async def watch() -> None:
            async with contextlib.aclosing(store.watch(0)) as changes:
                await anext(changes)

        with pytest.raises(StoreUnavailable):
            asyncio.run(asyncio.wait_for(watch(), 10))
        # Both gave up after their timeout (without one they would have waited for the end of
        # the pause and succeeded).
        time.sleep(max(0.0, started + pause - time.monotonic()))
        assert store.head() == ("", 0)
