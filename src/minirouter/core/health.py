"""Active health checks: one probe task per target of an upstream that has `health` set.

A probe opens a fresh connection (never a pooled one: a check must see what a new request would
see), sends a minimal `GET`, and reads only the status line within `health.timeout`. 2xx and 3xx
count as success. `healthy` consecutive successes bring an unhealthy target back, `unhealthy`
consecutive failures take a healthy one out; a single odd answer changes nothing. The verdict is
written to `TargetState.healthy`, which the balancer reads on every pick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Generator
from typing import Any

from minirouter.core import tls
from minirouter.core.balancer import Balancer, TargetState
from minirouter.model import HealthCheck, Upstream

__all__ = ["HealthChecker", "probe"]

log = logging.getLogger("minirouter.health")

# Called on every transition: (upstream id, target address, healthy now).
TransitionCallback = Callable[[str, str, bool], None]

# Hard cap on the status line: anything longer is not an HTTP server worth trusting.
_STATUS_LINE_LIMIT = 8192


def _request(path: str, address: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {address}\r\n"
        "User-Agent: minirouter-health\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1", "replace")


def _ssl_context(upstream: Upstream) -> ssl.SSLContext | None:
    # The same context as proxied requests: a probe that verified differently (ignoring `ca`,
    # say) would mark every target of a privately signed upstream down.
    return tls.upstream_context(upstream) if upstream.tls else None


async def probe(
    host: str,
    port: int,
    request: bytes,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[bool, str]:
    """One check: (success, what happened). Connect, write and status line share `timeout`."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl_context,
                server_hostname=server_hostname if ssl_context is not None else None,
                limit=_STATUS_LINE_LIMIT,
            )
            writer.write(request)
            line = await reader.readline()
    except TimeoutError:
        return False, f"no answer within {timeout:g}s"
    except Exception as exc:  # any failure to talk to the target is a failed check
        return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        if writer is not None:
            # Closed on every path, cancellation included; the socket is released by the loop.
            writer.close()
    # Let the transport finish closing so no socket outlives the check (bounded, best effort).
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    if not line:
        return False, "connection closed before a status line"
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, f"not an HTTP status line: {line[:60]!r}"
    status = int(parts[1])
    if 200 <= status < 400:
        return True, f"status {status}"
    return False, f"status {status}"


class _Probe:
    """The checking task of one target, and its consecutive-result counters."""

    __slots__ = ("failures", "state", "successes", "task")

    def __init__(self, state: TargetState) -> None:
        self.state = state
        self.successes = 0
        self.failures = 0
        self.task: asyncio.Task[None] | None = None


class _Stopping:
    """What stop() returns: awaiting it waits until every probe task has finished.

    A plain object rather than a coroutine, so a caller that only wants the cancellation (a sync
    signal handler, say) may drop it without a "never awaited" warning.
    """

    def __init__(self, tasks: list[asyncio.Task[None]]) -> None:
        self._tasks = tasks

    def __await__(self) -> Generator[Any, None, None]:
        if self._tasks:
            yield from asyncio.gather(*self._tasks, return_exceptions=True).__await__()


class HealthChecker:
    """Runs the active checks of one upstream's targets; follow reloads with `update()`."""

    def __init__(self, balancer: Balancer, *, on_change: TransitionCallback | None = None) -> None:
        self._balancer = balancer
        self._on_change = on_change
        self._running = False
        self._probes: dict[TargetState, _Probe] = {}
        # Every task not yet finished, including cancelled ones still unwinding: stop() waits
        # for these, so that no connection is left open behind it.
        self._tasks: set[asyncio.Task[None]] = set()
        # The settings the current probes were started with; a change restarts them all.
        self._settings: tuple[HealthCheck, bool, str | None, bool, str | None] | None = None
        self._ssl: ssl.SSLContext | None = None

    @property
    def balancer(self) -> Balancer:
        return self._balancer

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Start checking (needs a running event loop). Idempotent."""
        if self._running:
            return
        self._running = True
        self._sync()

    def stop(self) -> _Stopping:
        """Cancel every probe. Await the result to wait until they have all finished."""
        self._running = False
        self._settings = None
        self._probes.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return _Stopping(tasks)

    def update(self, balancer: Balancer) -> None:
        """Follow a reload: probes of carried-over targets keep running (and their counters)."""
        self._balancer = balancer
        if self._running:
            self._sync()

    def snapshot(self) -> dict[str, bool]:
        """Target address -> healthy, for the admin /healthz answer."""
        return {st.address: st.healthy for st in self._balancer.targets}

    # -- internals ---------------------------------------------------------

    def _sync(self) -> None:
        upstream = self._balancer.upstream
        check = upstream.health
        settings = (
            None
            if check is None
            else (check, upstream.tls, upstream.sni, upstream.verify, upstream.ca)
        )
        if settings != self._settings:
            self._cancel_all()
            self._settings = settings
            self._ssl = _ssl_context(upstream) if settings is not None else None
        if check is None:
            return
        wanted = set(self._balancer.targets)
        for state in [s for s in self._probes if s not in wanted]:
            self._cancel(self._probes.pop(state))
        for state in self._balancer.targets:
            if state not in self._probes:
                p = self._probes[state] = _Probe(state)
                task = asyncio.get_running_loop().create_task(
                    self._run(p, upstream.id, check, self._ssl, upstream.sni or state.host),
                    name=f"health {upstream.id} {state.address}",
                )
                p.task = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _cancel(self, p: _Probe) -> None:
        if p.task is not None:
            p.task.cancel()

    def _cancel_all(self) -> None:
        for p in self._probes.values():
            self._cancel(p)
        self._probes.clear()

    async def _run(
        self,
        p: _Probe,
        upstream_id: str,
        check: HealthCheck,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        st = p.state
        request = _request(check.path, st.address)
        while True:
            started = loop.time()
            ok, detail = await probe(
                st.host, st.port, request, check.timeout, ssl_context, server_hostname
            )
            self._record(p, upstream_id, check, ok, detail)
            # The interval runs from the start of one check to the start of the next, so a slow
            # target is not checked less often than a fast one.
            await asyncio.sleep(max(0.0, started + check.interval - loop.time()))

    def _record(
        self, p: _Probe, upstream_id: str, check: HealthCheck, ok: bool, detail: str
    ) -> None:
        st = p.state
        if ok:
            p.failures = 0
            if st.healthy:
                return
            p.successes += 1
            if p.successes < max(1, check.healthy):
                return
        else:
            p.successes = 0
            if not st.healthy:
                return
            p.failures += 1
            if p.failures < max(1, check.unhealthy):
                return
        p.successes = p.failures = 0
        st.healthy = ok
        if ok:
            log.info("upstream %s target %s is healthy again (%s)", upstream_id, st.address, detail)
        else:
            log.warning("upstream %s target %s is unhealthy (%s)", upstream_id, st.address, detail)
        if self._on_change is not None:
            try:
                self._on_change(upstream_id, st.address, ok)
            except Exception:
                # A broken observer must not stop the checks themselves.
                log.exception("health transition callback failed")
