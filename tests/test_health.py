"""core.health against real TCP servers on 127.0.0.1 (under asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from minirouter.core.balancer import Balancer
from minirouter.core.health import HealthChecker, probe
from minirouter.model import HealthCheck, Target, Upstream

DEADLINE = 10.0  # generous: conditions are polled, so a fast machine never waits this long

Runner = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def _run(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(coro)

    return _run


class FakeTarget:
    """An HTTP server whose answer the test changes: a status, "close" or "hang"."""

    def __init__(self) -> None:
        self.mode: int | str = 200
        self.pattern: list[int] | None = None  # statuses answered in turn, overriding mode
        self._pattern_start = 0
        self.requests: list[bytes] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeTarget:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set_pattern(self, pattern: list[int] | None, mode: int | str = 200) -> None:
        self.pattern = pattern
        self.mode = mode
        self._pattern_start = len(self.requests)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            mode = self.mode
            if mode == "close":
                return
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            if self.pattern is not None:
                n = len(self.requests) - 1 - self._pattern_start
                mode = self.pattern[n % len(self.pattern)]
            if mode == "hang":
                await asyncio.sleep(3600)
            if mode == "garbage":
                writer.write(b"SSH-2.0-OpenSSH\r\n")
            else:
                writer.write(
                    f"HTTP/1.1 {mode} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
                )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def close(self) -> None:
        assert self._server is not None
        if not self._server.is_serving():
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let the transports finish closing


async def until(cond: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


def upstream(*addresses: str, check: HealthCheck | None = None, uid: str = "pool") -> Upstream:
    return Upstream(id=uid, targets=tuple(Target(a) for a in addresses), health=check)


FAST = HealthCheck(path="/hc", interval=0.05, timeout=0.5, healthy=2, unhealthy=2)


class Transitions:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, bool]] = []

    def __call__(self, upstream_id: str, address: str, healthy: bool) -> None:
        self.events.append((upstream_id, address, healthy))


async def with_checker(
    targets: list[FakeTarget],
    check: HealthCheck,
    body: Callable[[Balancer, HealthChecker, Transitions], Awaitable[None]],
) -> None:
    balancer = Balancer(upstream(*(t.address for t in targets), check=check))
    events = Transitions()
    checker = HealthChecker(balancer, on_change=events)
    checker.start()
    try:
        await body(balancer, checker, events)
    finally:
        await checker.stop()
        for t in targets:
            await t.close()


def test_request_format_and_success(run: Runner) -> None:
    async def main() -> None:
        t = await FakeTarget().start()

        async def body(b: Balancer, c: HealthChecker, ev: Transitions) -> None:
            await until(lambda: len(t.requests) >= 3, "three checks")
            assert b.targets[0].healthy
            assert ev.events == []
            assert c.snapshot() == {t.address: True}

        await with_checker([t], FAST, body)
        assert (
            t.requests[0]
            == (
                f"GET /hc HTTP/1.1\r\nHost: 127.0.0.1:{t.port}\r\n"
                "User-Agent: minirouter-health\r\nConnection: close\r\n\r\n"
            ).encode()
        )

    run(main())


def test_500_marks_unhealthy_then_200_healthy_again(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="minirouter.health")

    async def main() -> None:
        t = await FakeTarget().start()

        async def body(b: Balancer, c: HealthChecker, ev: Transitions) -> None:
            st = b.targets[0]
            await until(lambda: len(t.requests) >= 1, "first check")
            t.mode = 500
            await until(lambda: not st.healthy, "unhealthy after 500s")
            assert ev.events == [("pool", t.address, False)]
            assert b.pick("1.2.3.4") is None  # the balancer sees it at once
            t.mode = 302  # 3xx counts as success
            await until(lambda: st.healthy, "healthy after 302s")
            assert ev.events == [("pool", t.address, False), ("pool", t.address, True)]

        await with_checker([t], FAST, body)

    run(main())
    messages = [r.getMessage() for r in caplog.records if r.name == "minirouter.health"]
    assert any("is unhealthy" in m and "status 500" in m for m in messages)
    assert any("healthy again" in m for m in messages)


def test_thresholds_need_consecutive_results(run: Runner) -> None:
    check = HealthCheck(path="/", interval=0.02, timeout=0.5, healthy=3, unhealthy=3)

    async def main() -> None:
        t = await FakeTarget().start()
        # Decided by the server per request, so no race with the checker's timing.
        t.set_pattern([200, 500, 500])  # never three failures in a row

        async def body(b: Balancer, c: HealthChecker, ev: Transitions) -> None:
            st = b.targets[0]
            await until(lambda: len(t.requests) >= 15, "fifteen checks")
            assert ev.events == []
            assert st.healthy
            t.set_pattern(None, mode=500)
            await until(lambda: not st.healthy, "unhealthy")
            t.set_pattern([200, 200, 500])  # never three successes in a row
            seen = len(t.requests)
            await until(lambda: len(t.requests) >= seen + 15, "fifteen more checks")
            assert not st.healthy
            t.set_pattern(None, mode=200)
            await until(lambda: st.healthy, "healthy")
            assert ev.events == [("pool", t.address, False), ("pool", t.address, True)]

        await with_checker([t], check, body)

    run(main())


@pytest.mark.parametrize("mode", ["close", "hang", "garbage", "refused"])
def test_failure_modes_mark_unhealthy(run: Runner, mode: str) -> None:
    check = HealthCheck(path="/", interval=0.05, timeout=0.2, healthy=1, unhealthy=2)

    async def main() -> None:
        t = await FakeTarget().start()
        if mode == "refused":
            await t.close()  # nothing listens on the port any more
        else:
            t.mode = mode

        async def body(b: Balancer, c: HealthChecker, ev: Transitions) -> None:
            await until(lambda: not b.targets[0].healthy, f"unhealthy on {mode}")
            assert ev.events == [("pool", t.address, False)]

        await with_checker([t], check, body)

    run(main())


def test_update_follows_reload(run: Runner) -> None:
    async def main() -> None:
        t1, t2, t3 = [await FakeTarget().start() for _ in range(3)]

        async def body(b: Balancer, c: HealthChecker, ev: Transitions) -> None:
            s1 = next(s for s in b.targets if s.address == t1.address)
            t1.mode = 500
            await until(lambda: not s1.healthy, "t1 unhealthy")
            new, removed = b.updated(upstream(t1.address, t3.address, check=FAST))
            assert [s.address for s in removed] == [t2.address]
            c.update(new)
            assert c.balancer is new
            await until(lambda: len(t3.requests) >= 2, "new target checked")
            # The removed target is not checked any more.
            seen = len(t2.requests)
            await until(lambda: len(t3.requests) >= 6, "more checks of t3")
            assert len(t2.requests) <= seen + 1  # at most one check already in flight
            # The carried-over target kept its state and keeps being checked.
            assert not s1.healthy
            t1.mode = 200
            await until(lambda: s1.healthy, "t1 healthy again")
            assert c.snapshot() == {t1.address: True, t3.address: True}
            # A reload that drops the health check stops every probe.
            plain, _ = new.updated(upstream(t1.address, t3.address))
            c.update(plain)
            await asyncio.sleep(0.1)  # a check cancelled mid-way may still land
            before = (len(t1.requests), len(t3.requests))
            await asyncio.sleep(0.3)
            assert (len(t1.requests), len(t3.requests)) == before

        await with_checker([t1, t2, t3], FAST, body)

    run(main())


def test_stop_cancels_everything_and_no_check_without_config(run: Runner) -> None:
    async def main() -> None:
        t = await FakeTarget().start()
        t.mode = "hang"  # a probe is in flight when stop() comes
        balancer = Balancer(upstream(t.address, check=FAST))
        checker = HealthChecker(balancer)
        checker.start()
        checker.start()  # idempotent
        await until(lambda: len(t.requests) >= 1, "first check")
        await checker.stop()
        assert not checker.running
        assert [task for task in asyncio.all_tasks() if task.get_name().startswith("health")] == []
        count = len(t.requests)
        await asyncio.sleep(0.3)
        assert len(t.requests) == count

        idle = HealthChecker(Balancer(upstream(t.address)))
        idle.start()
        await asyncio.sleep(0.2)
        assert len(t.requests) == count
        idle.stop()  # dropping the result is allowed: nothing to wait for
        await t.close()

    run(main())


def test_callback_errors_do_not_stop_checks(run: Runner) -> None:
    async def main() -> None:
        t = await FakeTarget().start()
        t.mode = 500
        balancer = Balancer(upstream(t.address, check=FAST))

        def broken(upstream_id: str, address: str, healthy: bool) -> None:
            raise RuntimeError("observer bug")

        checker = HealthChecker(balancer, on_change=broken)
        checker.start()
        try:
            await until(lambda: not balancer.targets[0].healthy, "unhealthy")
            t.mode = 200
            await until(lambda: balancer.targets[0].healthy, "healthy despite callback errors")
        finally:
            await checker.stop()
            await t.close()

    run(main())


def test_probe_function_directly(run: Runner) -> None:
    async def main() -> None:
        t = await FakeTarget().start()
        req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert await probe("127.0.0.1", t.port, req, 1.0) == (True, "status 200")
        t.mode = 404
        assert await probe("127.0.0.1", t.port, req, 1.0) == (False, "status 404")
        t.mode = "hang"
        ok, detail = await probe("127.0.0.1", t.port, req, 0.1)
        assert not ok and "0.1s" in detail
        await t.close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound but not listening: refused
            ok, detail = await probe("127.0.0.1", port, req, 1.0)
        assert not ok and detail

    run(main())
