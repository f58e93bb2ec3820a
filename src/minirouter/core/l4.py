"""L4 listeners: raw TCP (optionally TLS-terminated) piped both ways to an upstream's targets.

`L4Listeners.update(config)` runs after every config swap (a `RouterState` observer): a new
listener opens its port, a removed one closes it and lets its open connections finish for up to
`shutdown_timeout` seconds before aborting them, a changed address or `tls` reopens it, and a
changed `upstream` applies to new connections only. A port that cannot be opened is logged,
shown as `minirouter_l4_listener_up 0` and in `/healthz`, and retried every few seconds; the
rest of the core keeps serving. A listener whose address overlaps one of the core's own
listeners (HTTP, HTTPS, admin) or another listener's (the smaller id keeps it) is not opened
and reported the same way: with `--workers N` the ports are opened with SO_REUSEPORT, which
would otherwise let the two silently share the connections.

One `_ClientSide` and one `_UpstreamSide` Protocol per connection. The target comes from the
upstream's `Balancer` (its policy, health and passive ejection), connects within
`timeouts.connect` (a failed target is reported and the next one tried), and the connection is
aborted after `timeouts.idle` seconds without bytes either way; a connection counts until
both of its sockets are closed. A `tls: true` upstream is connected to with TLS, verified as
for HTTP. Backpressure: when one side's write buffer passes its high-water mark the other
side stops reading until it drains, so memory per connection stays bounded whatever the
speeds of the two peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from minirouter.config import format_address
from minirouter.core.metrics import ListenerCounters
from minirouter.core.tls import HANDSHAKE_TIMEOUT, upstream_context, upstream_server_name

if TYPE_CHECKING:
    from minirouter.core.balancer import TargetState
    from minirouter.core.state import RouterState
    from minirouter.core.tls import CertificateStore
    from minirouter.model import Config, Listener

__all__ = ["L4Listeners"]

log = logging.getLogger("minirouter.l4")

# Per direction: beyond this much unsent data the other side stops reading.
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024
# Bytes a client may send before its upstream connection is ready (then reading pauses).
EARLY_DATA_LIMIT = 64 * 1024
# A port that could not be opened is tried again this often.
RETRY_INTERVAL = 5.0
# Targets tried for one connection before giving up on it.
MAX_CONNECT_ATTEMPTS = 3


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _host_kind(host: str) -> tuple[int, bool] | None:
    """(IP version, whether it is the any-address) of a listening host; None for a name."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return ip.version, ip.is_unspecified


def _overlaps(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Whether listening on `a` and on `b` would take the same connections."""
    if a[1] != b[1]:
        return False
    if not a[0] or not b[0]:
        return True  # no host: every address
    ka, kb = _host_kind(a[0]), _host_kind(b[0])
    if ka is None or kb is None:
        return True  # a name may resolve to anything: assume the worst
    if ka[0] != kb[0]:
        return False  # asyncio sets IPV6_V6ONLY: "::" does not take IPv4 connections
    return ka[1] or kb[1] or ipaddress.ip_address(a[0]) == ipaddress.ip_address(b[0])


@dataclass(eq=False)
class _Running:
    """One open (or failed) listening port and its connections."""

    spec: Listener
    server: asyncio.base_events.Server | None = None
    error: str | None = None
    blocked: bool = False  # not opened: its address overlaps another listener of this core
    connections: set[_ClientSide] = field(default_factory=set)


class L4Listeners:
    """The live set of L4 listeners of one worker."""

    def __init__(self, state: RouterState, certificates: CertificateStore) -> None:
        self.state = state
        self.certificates = certificates
        self._running: dict[str, _Running] = {}
        # Listeners removed (or reopened) whose connections are still finishing.
        self._retired: set[_Running] = set()
        self._wanted: dict[str, Listener] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False

    # -- config --------------------------------------------------------------------------

    def update(self, config: Config) -> None:
        """Observe a new config: reconcile the open ports with its listeners (in a task)."""
        self._wanted = {spec.id: spec for spec in config.listeners}
        if self._wanted or self._running:  # most configs have no listeners at all
            self._schedule()

    def _schedule(self) -> None:
        if self._closed:
            return
        task = self.state.loop.create_task(self._reconcile())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _reconcile(self) -> None:
        async with self._lock:
            if self._closed:
                return
            wanted = self._wanted
            blocked = self._conflicts(wanted)
            # Reopened in place: the entry stays listed (/healthz) until its successor is ready.
            reopen: set[str] = set()
            for lid, running in list(self._running.items()):
                spec = wanted.get(lid)
                reason = blocked.get(lid)
                if (
                    spec is not None
                    and running.blocked
                    and reason == running.error
                    and spec == running.spec
                ):
                    continue  # still blocked for the same reason: already reported
                # A port that could not be opened is tried again (the retry timer lands here).
                if (
                    spec is None
                    or running.server is None
                    or reason is not None
                    or _must_reopen(running, spec)
                ):
                    self._stop(running)
                    if spec is None:
                        del self._running[lid]
                        self.state.metrics.forget_listener(lid)
                    else:
                        reopen.add(lid)
                elif spec != running.spec:
                    running.spec = spec  # a new upstream: for new connections only
            for lid, spec in wanted.items():
                if lid not in self._running or lid in reopen:
                    reason = blocked.get(lid)
                    if reason is not None:
                        self._running[lid] = self._blocked(spec, reason)
                    else:
                        self._running[lid] = await self._open(spec)
            self._arm_retry()

    def _conflicts(self, wanted: dict[str, Listener]) -> dict[str, str]:
        """Listener id -> why it must not open: its address overlaps one taken before it.

        The core's own listeners come first, then listeners by id: the same answer in every
        worker and every core, whatever order the config changes came in.
        """
        settings = self.state.settings
        taken: list[tuple[str, tuple[str, int]]] = [
            (f"the HTTP listener {format_address(h, p)}", (h, p)) for h, p in settings.listen
        ]
        taken += [
            (f"the HTTPS listener {format_address(h, p)}", (h, p)) for h, p in settings.listen_tls
        ]
        if settings.admin is not None:
            host, port = settings.admin
            taken += [
                (f"the admin listener {format_address(host, port + i)}", (host, port + i))
                for i in range(max(settings.workers, 1))
            ]
        out: dict[str, str] = {}
        for lid in sorted(wanted):
            address = _split(wanted[lid].listen)
            clash = next((what for what, other in taken if _overlaps(address, other)), None)
            if clash is not None:
                out[lid] = f"cannot listen on {wanted[lid].listen}: it overlaps {clash}"
            else:
                taken.append((f"listener {lid!r}", address))
        return out

    def _blocked(self, spec: Listener, reason: str) -> _Running:
        counters = self.state.metrics.listener(spec.id)
        counters.up = 0
        log.error("L4 listener %s: %s", spec.id, reason)
        return _Running(spec, error=reason, blocked=True)

    def _arm_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if any(r.server is None and not r.blocked for r in self._running.values()):
            self._retry = self.state.loop.call_later(RETRY_INTERVAL, self._schedule)

    async def _open(self, spec: Listener) -> _Running:
        running = _Running(spec)
        counters = self.state.metrics.listener(spec.id)
        host, port = _split(spec.listen)
        try:
            running.server = await self.state.loop.create_server(
                lambda: _ClientSide(self, running, counters),
                host,
                port,
                ssl=self.certificates.l4_context if spec.tls else None,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT if spec.tls else None,
                reuse_port=self.state.settings.workers > 1,
                backlog=1024,
            )
        except OSError as exc:
            running.error = f"cannot listen on {spec.listen}: {exc.strerror or exc}"
            counters.up = 0
            log.error(
                "L4 listener %s: %s (retrying every %gs)", spec.id, running.error, RETRY_INTERVAL
            )
            return running
        counters.up = 1
        log.info(
            "L4 listener %s on %s%s -> upstream %s",
            spec.id,
            spec.listen,
            " (tls)" if spec.tls else "",
            spec.upstream,
        )
        return running

    def _stop(self, running: _Running) -> None:
        """Close the port now; let its connections finish, bounded, in the background."""
        if running.server is not None:
            running.server.close()
            running.server = None
            log.info("L4 listener %s on %s closed", running.spec.id, running.spec.listen)
        if running.connections:
            self._retired.add(running)
            task = self.state.loop.create_task(
                self._retire(running, self.state.settings.shutdown_timeout)
            )
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)

    async def _retire(self, running: _Running, timeout: float) -> None:
        try:
            await _drain([running], time.monotonic() + timeout)
        finally:
            self._retired.discard(running)

    async def close(self, timeout: float) -> None:
        """Stop every listener (for shutdown): close the ports, then let the connections of
        live and of removed listeners finish until `timeout` from now, and abort the rest."""
        deadline = time.monotonic() + timeout
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for task in list(self._draining):  # pending reconciles and background drains
            task.cancel()
        running = list(self._running.values())
        self._running.clear()
        for r in running:
            if r.server is not None:
                r.server.close()
        await _drain([*running, *self._retired], deadline)
        self._retired.clear()

    def info(self) -> dict[str, object]:
        """For /healthz: each listener's address and whether its port is open."""
        return {
            lid: {
                "listen": r.spec.listen,
                "upstream": r.spec.upstream,
                "tls": r.spec.tls,
                "open": r.server is not None,
                "error": r.error,
                "connections": len(r.connections),
            }
            for lid, r in sorted(self._running.items())
        }


def _must_reopen(running: _Running, spec: Listener) -> bool:
    return running.spec.listen != spec.listen or running.spec.tls != spec.tls


async def _drain(runnings: list[_Running], deadline: float) -> None:
    """Wait until the listeners' connections have ended, at most until `deadline`; then abort
    what is left (a connection that is still flushing to a peer that does not read too)."""
    while any(r.connections for r in runnings) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for r in runnings:
        for conn in list(r.connections):
            conn.abort()
    if any(r.connections for r in runnings):
        await asyncio.sleep(0)  # connection_lost runs soon after abort(): let it count


class _ClientSide(asyncio.Protocol):
    """The accepted connection: connects upstream, then pipes bytes both ways.

    It counts (in its listener's `connections` and the open gauge) until both of its sockets
    are closed: one side ending closes the other after it has flushed what it was given, and a
    peer that never reads that is cut by the idle timeout (or a drain's deadline).
    """

    def __init__(self, owner: L4Listeners, running: _Running, counters: ListenerCounters) -> None:
        self.owner = owner
        self.running = running
        self.counters = counters
        self.loop = owner.state.loop
        # uvloop's TLS transport cannot stay half-open: an EOF from either side ends it.
        self.tls = running.spec.tls
        self.transport: asyncio.Transport | None = None
        self.upstream: _UpstreamSide | None = None
        self.target: TargetState | None = None
        self.early: list[bytes] = []
        self.early_size = 0
        self.closed = False  # both sides are gone: counted out
        self.client_lost = False
        self.client_eof = False
        # The client's write buffer is over its high mark. Kept so that an upstream that
        # sends before `_connected` (its data is written meanwhile) is paused there too.
        self.writing_paused = False
        self.last_activity = 0.0
        self.idle_timeout = 60.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._connecting: asyncio.Task[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.running.connections.add(self)
        self.counters.connections += 1
        self.counters.open += 1
        _nodelay(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self.last_activity = self.loop.time()
        self._connecting = self.loop.create_task(self._connect())

    def data_received(self, data: bytes) -> None:
        self.counters.bytes_in += len(data)
        self.last_activity = self.loop.time()
        up = self.upstream
        if up is not None and up.transport is not None:
            if not up.transport.is_closing():  # the upstream left: the client is closed next
                up.transport.write(data)
            return
        self.early.append(data)
        self.early_size += len(data)
        if self.early_size >= EARLY_DATA_LIMIT and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.client_eof = True
        up = self.upstream
        if up is not None and up.transport is not None:
            if not self.tls and not up.tls and up.transport.can_write_eof():
                up.transport.write_eof()
                if up.eof:
                    return None  # both directions are done
                return True  # half-closed: the upstream may still answer
            up.transport.close()
            return None
        if self.tls:
            return None  # closed; what it sent is not passed on (see the class comment)
        # No upstream yet: keep what was sent and pass the EOF on once connected.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client_lost = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        up = self.upstream
        if up is not None and up.transport is not None and not up.lost:
            up.transport.close()  # flushes what the client sent, then closes
        self._maybe_finish()

    def pause_writing(self) -> None:
        self.writing_paused = True
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        up = self.upstream
        if up is not None and up.transport is not None and not up.lost:
            up.transport.resume_reading()

    # -- connecting ----------------------------------------------------------------------

    async def _connect(self) -> None:
        try:
            await self._connect_upstream()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not leave the client waiting with no upstream
            log.exception("L4 %s: cannot connect upstream", self.running.spec.id)
            self.counters.connect_failures += 1
            self.abort()

    async def _connect_upstream(self) -> None:
        spec = self.running.spec
        balancer = self.owner.state.balancers.get(spec.upstream)
        if balancer is None:
            self.counters.connect_failures += 1
            self.close()
            return
        upstream = balancer.upstream
        timeouts = upstream.timeouts
        self.idle_timeout = timeouts.idle
        # A `tls: true` upstream gets TLS here too (verified as for HTTP): never cleartext.
        ssl_context = upstream_context(upstream) if upstream.tls else None
        peer = self.transport.get_extra_info("peername") if self.transport else None
        client_ip = str(peer[0]) if peer else ""
        tried: list[TargetState] = []
        for _ in range(min(MAX_CONNECT_ATTEMPTS, len(balancer.targets))):
            target = balancer.pick(client_ip, None, tried)
            if target is None:
                break
            tried.append(target)
            target.begin()
            try:
                _, up = await asyncio.wait_for(
                    self.loop.create_connection(
                        lambda: _UpstreamSide(self, tls=ssl_context is not None),
                        target.host,
                        target.port,
                        ssl=ssl_context,
                        server_hostname=(
                            upstream_server_name(upstream, target.host) if ssl_context else None
                        ),
                    ),
                    timeout=timeouts.connect,
                )
            except (OSError, TimeoutError) as exc:
                target.end()
                target.record_failure(time.monotonic())
                self.counters.connect_failures += 1
                self.owner.state.metrics.upstream_failure(spec.upstream, target.address)
                log.warning(
                    "L4 %s: cannot connect to %s: %s", spec.id, target.address, exc or "timeout"
                )
                if self.client_lost:
                    return
                continue
            except BaseException:  # cancelled: the client left while we were connecting
                target.end()
                raise
            target.record_success()
            if self.client_lost:  # the client left while we were connecting
                target.end()
                if up.transport is not None:
                    up.transport.close()
                return
            self.target = target
            self._connected(up)
            return
        if not tried:  # no usable target at all (failed attempts were counted one by one)
            self.counters.connect_failures += 1
        self.close()

    def _connected(self, up: _UpstreamSide) -> None:
        self.upstream = up
        assert up.transport is not None and self.transport is not None
        if self.writing_paused:
            # The upstream sent more than the client took before we got here: without this
            # it would never be paused (the transport does not say "paused" a second time).
            up.transport.pause_reading()
        if self.early:
            up.transport.write(b"".join(self.early))
            self.early.clear()
            self.early_size = 0
        if self.client_eof:
            if up.transport.can_write_eof():
                up.transport.write_eof()
            else:
                up.transport.close()
        elif not up.writing_paused:  # else resumed when the upstream has taken the early data
            self.transport.resume_reading()
        self._arm_idle()

    # -- idle timeout --------------------------------------------------------------------

    def _arm_idle(self) -> None:
        # One timer per connection, re-armed for the time left rather than on every read.
        self._idle_timer = self.loop.call_at(
            self.last_activity + self.idle_timeout, self._check_idle
        )

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.closed:
            return
        if self.loop.time() >= self.last_activity + self.idle_timeout:
            # Not close(): a transport that still holds data for a peer that does not read
            # would wait for it forever.
            self.abort()
        else:
            self._arm_idle()

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.client_lost:
            self.transport.abort()
        up = self.upstream
        if up is not None and up.transport is not None and not up.lost:
            up.transport.abort()

    def _maybe_finish(self) -> None:
        up = self.upstream
        if self.client_lost and (up is None or up.lost):
            self._finish()

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.running.connections.discard(self)
        self.counters.open -= 1
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self.target is not None:
            self.target.end()
            self.target = None


class _UpstreamSide(asyncio.Protocol):
    """The connection to the chosen target; reports to its client side."""

    def __init__(self, client: _ClientSide, *, tls: bool = False) -> None:
        self.client = client
        self.tls = tls  # a TLS transport ends on EOF (it cannot stay half-open)
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.lost = False
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        _nodelay(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.counters.bytes_out += len(data)
        client.last_activity = client.loop.time()
        if client.transport is not None and not client.transport.is_closing():
            client.transport.write(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        client = self.client
        ct = client.transport
        if ct is not None and not client.tls and ct.can_write_eof() and not client.client_eof:
            ct.write_eof()
            return None if self.tls else True  # True: the client may still send
        if ct is not None:
            ct.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        client = self.client
        ct = client.transport
        if ct is not None and not client.client_lost:
            ct.close()  # flushes what the upstream sent, then closes
        if client.upstream is self:
            client._maybe_finish()

    def pause_writing(self) -> None:
        self.writing_paused = True
        ct = self.client.transport
        if ct is not None:
            ct.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        ct = self.client.transport
        if ct is not None and not self.client.client_lost:
            ct.resume_reading()


def _nodelay(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
