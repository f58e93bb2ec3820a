"""What every connection of one worker shares: the route table, balancers, metrics.

A config change builds the new table and balancers off to the side and then
swaps the references: a request that already matched keeps its own `Match`
and `Balancer`, so nothing in flight notices.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import operator
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from minirouter import fastpath
from minirouter.config import CoreSettings
from minirouter.core import upstream as pool
from minirouter.core.access_log import AccessLog
from minirouter.core.balancer import Balancer, TargetState
from minirouter.core.health import HealthChecker
from minirouter.core.metrics import Metrics
from minirouter.core.stats import StatsWindow
from minirouter.model import (
    Certificate,
    Config,
    Listener,
    Route,
    ValidationError,
    load_config,
)

if TYPE_CHECKING:
    from minirouter.core.mirror import Mirror

log = logging.getLogger("minirouter.core")


class RouterState:
    def __init__(self, settings: CoreSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.loop = loop
        self.metrics = Metrics()
        self.access_log: AccessLog | None = (
            AccessLog(settings.access_log, settings.access_log_file, loop)
            if settings.access_log != "off"
            else None
        )
        self._config = Config()
        # When set, the routes of `config` are this call's result (see `apply`).
        self._routes_of: Callable[[], tuple[Route, ...]] | None = None
        self.table = fastpath.RouteTable(())
        self.balancers: dict[str, Balancer] = {}
        self.health: dict[str, HealthChecker] = {}
        self.revision = 0
        self.last_error: str | None = None
        self.loaded_at = 0.0
        self.started = time.time()
        self.connections: set[object] = set()
        self.shutting_down = False
        self._file_stamp: tuple[float, int] | None = None
        # Store mode only: per-second counters for the GUI, the mirror, and whether the
        # store came back behind what this core serves (store rev, our rev).
        self.stats: StatsWindow | None = None
        self.mirror: Mirror | None = None
        self._store_behind: tuple[int, int] | None = None
        # Called with each config that was swapped in (TLS certificates, L4 listeners).
        self.observers: list[Callable[[Config], None]] = []

    @property
    def store_behind(self) -> tuple[int, int] | None:
        """(store rev, our rev) while the store came back behind what this core serves."""
        return self._store_behind

    @store_behind.setter
    def store_behind(self, value: tuple[int, int] | None) -> None:
        # One place sets both, so /healthz and the metric never disagree.
        self._store_behind = value
        self.metrics.set_store_behind(value is not None)

    # -- config ------------------------------------------------------------

    def load_file(self) -> bool:
        """(Re)load `--config`; on any error keep the current config and say why."""
        path = self.settings.config_path
        if path is None:
            return False
        self._file_stamp = _stamp(path)
        # Loading builds ~10 objects per route and frees none of them: the cyclic GC would
        # only rescan them over and over (it doubles the load time of 100k routes).
        gc.disable()
        try:
            config = load_config(path)
            return self.apply(config)
        except ValidationError as exc:
            return self._reject(f"{path}: {exc}")
        except OSError as exc:
            return self._reject(f"{path}: {exc.strerror or exc}")
        finally:
            gc.enable()

    @property
    def config(self) -> Config:
        """The config swapped in last. (Its routes may have to be put together first: see
        `apply`. Read `listeners` and `certificates` alone through the properties below.)"""
        if self._routes_of is not None:
            self._config = dataclasses.replace(self._config, routes=self._routes_of())
            self._routes_of = None
        return self._config

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The L4 listeners of the config swapped in last."""
        return self._config.listeners

    @property
    def certificates(self) -> tuple[Certificate, ...]:
        """The certificates of the config swapped in last."""
        return self._config.certificates

    def apply(
        self,
        config: Config,
        revision: int | None = None,
        routes_changed: bool | None = None,
        route_changes: Mapping[str, Route | None] | None = None,
        disabled: tuple[Route, ...] = (),
    ) -> bool:
        """Swap in a validated config: new table and balancers, then one assignment each.

        `revision` is the store's revision in store mode; a file's loads are counted from 1.

        The mirror tells what changed, so that a change of one route of 10k costs what one
        route costs. `config.routes` is then not read, and the routes of `self.config` are
        put in one tuple only when first asked for (copying 10k routes for every change cost
        the event loop more than the rest of the swap):
        * `routes_changed=False`: only other kinds changed; the table and routes are kept.
        * `route_changes` (id -> new Route, None if deleted): the only routes that differ
          from the current table's; the table is patched from them alone (see `RouteTable`),
          and the routes become the table's and `disabled` (the disabled routes).
        """
        current = self.table
        try:
            if route_changes is not None:
                table = fastpath.RouteTable(None, previous=current, changes=route_changes)
            elif routes_changed is False or (
                routes_changed is None
                and len(current.routes) == len(config.routes)
                and all(map(operator.is_, current.routes, config.routes))
            ):
                table = current  # only upstreams changed: the routes are the very same objects
            else:
                table = fastpath.RouteTable(config.routes, previous=current)
        except (ValueError, TypeError) as exc:
            return self._reject(f"route table: {exc}")
        balancers: dict[str, Balancer] = {}
        removed: list[tuple[str, TargetState]] = []
        touched: list[Balancer] = []  # new or rebuilt: their targets' gauges are set below
        for spec in config.upstreams:
            old = self.balancers.get(spec.id)
            if old is None:
                balancers[spec.id] = bal = Balancer(spec)
                touched.append(bal)
            elif old.upstream is spec:
                balancers[spec.id] = old  # the very same upstream object: nothing to rebuild
            else:
                balancers[spec.id], gone = old.updated(spec)
                touched.append(balancers[spec.id])
                removed.extend((spec.id, t) for t in gone)
        if len(balancers) != len(self.balancers) or touched:
            for uid, old in self.balancers.items():
                if uid not in balancers:
                    removed.extend((uid, t) for t in old.targets)
        if route_changes is not None:
            self._routes_of = functools.partial(_all_routes, table, disabled)
        elif routes_changed is False:
            if self._routes_of is None:
                self._routes_of = functools.partial(tuple, self._config.routes)
        else:
            self._routes_of = None
        self.table = table
        self.balancers = balancers
        self._config = config
        self.revision = self.revision + 1 if revision is None else revision
        self.last_error = None
        self.loaded_at = time.time()
        self.metrics.set_revision(self.revision)
        self.metrics.reload(True)
        for uid, target in removed:
            pool.close_idle(target)
            self.metrics.forget_target(uid, target.address)
        for bal in touched:
            for target in bal.targets:
                self.metrics.set_target_up(bal.upstream.id, target.address, target.healthy)
        if touched or removed:
            self._restart_health()
        for observer in self.observers:
            observer(config)  # they read the other kinds: its routes may be left out (above)
        log.info(
            "config revision %d: %d routes, %d upstreams", self.revision, len(table), len(balancers)
        )
        return True

    def _reject(self, message: str) -> bool:
        self.last_error = message
        self.metrics.reload(False)
        log.error("config rejected, still serving revision %d: %s", self.revision, message)
        return False

    def _restart_health(self) -> None:
        for uid, checker in list(self.health.items()):
            bal = self.balancers.get(uid)
            if bal is None or bal.upstream.health is None:
                checker.stop()
                del self.health[uid]
            else:
                checker.update(bal)
        for uid, bal in self.balancers.items():
            if bal.upstream.health is not None and uid not in self.health:
                checker = HealthChecker(bal, on_change=self._health_changed)
                self.health[uid] = checker
                checker.start()

    def _health_changed(self, upstream_id: str, address: str, healthy: bool) -> None:
        self.metrics.set_target_up(upstream_id, address, healthy)

    def file_changed(self) -> bool:
        path = self.settings.config_path
        return path is not None and _stamp(path) != self._file_stamp

    def stop_health(self) -> None:
        for checker in self.health.values():
            checker.stop()
        self.health.clear()

    def health_info(self) -> dict[str, object]:
        info: dict[str, object] = {}
        mirror = self.mirror
        if mirror is not None:
            info["store"] = {
                "connected": mirror.connected,
                "outage_since": mirror.outage_since,
                "from_local_snapshot": mirror.from_disk,
                "invalid_items": dict(mirror.invalid),
                "store_behind": list(self.store_behind) if self.store_behind else None,
                "epoch": mirror.epoch,
            }
        return info | {
            "revision": self.revision,
            "routes": len(self.table),
            "upstreams": len(self.balancers),
            "pid": os.getpid(),
            "worker": self.settings.worker_index,
            "connections": len(self.connections),
            "config_error": self.last_error,
            "loaded_at": self.loaded_at,
            "fastpath": fastpath.IMPLEMENTATION,
        }


def _all_routes(table: fastpath.RouteTable, disabled: tuple[Route, ...]) -> tuple[Route, ...]:
    return tuple(sorted((*table.routes, *disabled), key=operator.attrgetter("id")))


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)
