"""Listeners, workers and signals of `minirouter core`.

With `--workers N > 1` the first process becomes a small supervisor: it forks N
workers that each bind the same port with SO_REUSEPORT, load the config
themselves, and are restarted if they die. Signals sent to the supervisor are
passed on (SIGTERM/SIGINT: graceful stop, SIGHUP: reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from minirouter.config import CoreSettings, format_address
from minirouter.core.admin import start_admin
from minirouter.core.l4 import L4Listeners
from minirouter.core.protocol import ClientProtocol, TLSAccept
from minirouter.core.state import RouterState
from minirouter.core.tls import HANDSHAKE_TIMEOUT, CertificateStore

if TYPE_CHECKING:
    from minirouter.core.mirror import Mirror

log = logging.getLogger("minirouter.core")


class StartupError(Exception):
    """The core cannot start (bad config, port in use): one line for the operator."""


async def serve(settings: CoreSettings) -> None:
    """Run one worker until SIGTERM/SIGINT, then drain and return."""
    loop = asyncio.get_running_loop()
    state = RouterState(settings, loop)
    # Both follow every config swapped in, the first one included.
    certificates = CertificateStore(state.metrics)
    state.observers.append(
        lambda config: certificates.update(
            config.certificates,
            report=bool(settings.listen_tls) or any(spec.tls for spec in config.listeners),
            l4=any(spec.tls for spec in config.listeners),
        )
    )
    l4 = L4Listeners(state, certificates)
    state.observers.append(l4.update)
    mirror = None
    if settings.store_url is not None:
        mirror = await _start_mirror(state, settings)
    elif not state.load_file():
        raise StartupError(f"cannot start: {state.last_error}")
    servers: list[asyncio.base_events.Server] = []
    stop = asyncio.Event()

    async def listen(
        factory: Callable[[], asyncio.BaseProtocol], addresses: list[tuple[str, int]], kind: str
    ) -> None:
        for host, port in addresses:
            try:
                servers.append(
                    await loop.create_server(
                        factory, host, port, reuse_port=settings.workers > 1, backlog=2048
                    )
                )
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on {format_address(host, port)}{kind}: {exc.strerror or exc}"
                ) from exc

    try:
        await listen(lambda: cast(asyncio.Protocol, ClientProtocol(state)), settings.listen, "")
        # The handshake runs in TLSAccept, so that it counts against --max-connections from
        # accept on.
        await listen(
            lambda: TLSAccept(state, certificates.context, HANDSHAKE_TIMEOUT),
            settings.listen_tls,
            " (tls)",
        )
        if settings.admin is not None:
            host, port = settings.admin
            try:
                servers.append(
                    await start_admin(
                        host,
                        port + settings.worker_index,
                        state.metrics,
                        lambda: _health_info(state, certificates, l4),
                    )
                )
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on admin {format_address(host, port)}: {exc.strerror or exc}"
                ) from exc
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if settings.config_path is not None:
            loop.add_signal_handler(signal.SIGHUP, state.load_file)
        watcher = loop.create_task(_watch_file(state)) if settings.config_path else None
        where = ", ".join(
            [f"http://{format_address(h, p)}" for h, p in settings.listen]
            + [f"https://{format_address(h, p)}" for h, p in settings.listen_tls]
        )
        log.info(
            "minirouter core listening on %s (pid %d, revision %d)",
            where,
            os.getpid(),
            state.revision,
        )
        await stop.wait()
        log.info("stopping: draining %d connections", len(state.connections))
        if watcher is not None:
            watcher.cancel()
        await asyncio.gather(
            _drain(state, servers, settings.shutdown_timeout),
            l4.close(settings.shutdown_timeout),
        )
    finally:
        for srv in servers:
            srv.close()
        if mirror is not None:
            await mirror.stop()
            mirror.close()
        state.stop_health()
        if state.access_log is not None:
            state.access_log.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _health_info(
    state: RouterState, certificates: CertificateStore, l4: L4Listeners
) -> dict[str, object]:
    info = state.health_info()
    if state.settings.listen_tls or state.certificates:
        info["tls"] = {"certificates": len(certificates), "not_loaded": dict(certificates.failed)}
    if state.listeners:
        info["listeners"] = l4.info()
    return info


async def _start_mirror(state: RouterState, settings: CoreSettings) -> Mirror:
    from minirouter.core.mirror import Mirror
    from minirouter.core.mirror import StartupError as MirrorStartupError
    from minirouter.core.stats import StatsWindow

    assert settings.store_url is not None
    mirror = Mirror(state, settings.store_url, settings.snapshot_path)
    state.mirror = mirror
    state.stats = StatsWindow()
    try:
        await mirror.start()
    except MirrorStartupError as exc:
        mirror.close()
        raise StartupError(f"cannot start: {exc}") from exc
    return mirror


async def _watch_file(state: RouterState) -> None:
    while True:
        await asyncio.sleep(state.settings.reload_poll)
        if state.file_changed():
            state.load_file()


async def _drain(
    state: RouterState, servers: list[asyncio.base_events.Server], timeout: float
) -> None:
    """Stop accepting; let requests in flight finish (bounded); close the rest."""
    for srv in servers:
        srv.close()
    state.shutting_down = True
    deadline = time.monotonic() + timeout
    while state.connections and time.monotonic() < deadline:
        for conn in list(state.connections):
            if isinstance(conn, ClientProtocol | TLSAccept) and conn.idle():
                conn.close()
        await asyncio.sleep(0.02)
    for conn in list(state.connections):
        if isinstance(conn, ClientProtocol | TLSAccept):
            conn.abort()


def run_worker(settings: CoreSettings) -> int:
    import uvloop

    profile_path = os.environ.get("MINIROUTER_PROFILE")
    try:
        if profile_path:
            # A developer switch: cProfile the worker and write pstats at exit.
            import cProfile

            with cProfile.Profile() as prof:
                uvloop.run(serve(settings))
            prof.dump_stats(f"{profile_path}.{os.getpid()}")
        else:
            uvloop.run(serve(settings))
    except StartupError as exc:
        print(f"minirouter: {exc}", file=sys.stderr)
        return 1
    return 0


def run(settings: CoreSettings) -> int:
    """Entry point of `minirouter core`."""
    if settings.workers <= 1:
        return run_worker(settings)
    return _supervise(settings)


def _supervise(settings: CoreSettings) -> int:
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    started: dict[int, float] = {}

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = 1
            try:
                code = run_worker(replace(settings, worker_index=index))
            finally:
                os._exit(code)
        children[pid] = index
        started[pid] = time.monotonic()

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for i in range(settings.workers):
        spawn(i)
    status = 0
    while children:
        try:
            pid, wstatus = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(wstatus)
        if stopping:
            continue
        if code == 1 and time.monotonic() - started.pop(pid, 0) < 2:
            # A worker that cannot even start (bad config, port taken) will not do better
            # if restarted: stop the others and report.
            status = 1
            forward(signal.SIGTERM, None)
            continue
        log.warning("worker %d (pid %d) exited with %s; restarting", index, pid, code)
        time.sleep(0.5)
        spawn(index)
    return status
