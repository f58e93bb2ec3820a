"""Fixtures for the mirror tests: a real store (SQLite file or redis-server of the test's own)
and real `minirouter core --store` processes, all stopped at teardown."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

# The integration suite's upstream servers, reused as they are.
from integration.conftest import upstream_loop, upstreams

from .support import RedisProcess, StoreBackend, StoreCore

__all__ = ["upstream_loop", "upstreams"]

_ACTIVE: list[StoreCore] = []


class StartCore(Protocol):
    def __call__(
        self,
        store_url: str,
        *args: str,
        snapshot: Path | None = None,
        workers: int | None = None,
        wait: bool = True,
    ) -> StoreCore: ...


class RedisFactory(Protocol):
    def __call__(self, *, persist: bool = True, extra: tuple[str, ...] = ()) -> RedisProcess: ...


@pytest.fixture
def start_core(tmp_path: Path) -> Iterator[StartCore]:
    cores: list[StoreCore] = []

    def start(
        store_url: str,
        *args: str,
        snapshot: Path | None = None,
        workers: int | None = None,
        wait: bool = True,
    ) -> StoreCore:
        core = StoreCore(
            tmp_path / f"core{len(cores)}", store_url, args, snapshot=snapshot, workers=workers
        )
        cores.append(core)
        _ACTIVE.append(core)
        if wait:
            core.wait_ready()
        return core

    yield start
    leftovers: list[str] = []
    for core in cores:
        core.stop(timeout=5)
        if core in _ACTIVE:
            _ACTIVE.remove(core)
        if left := core.leftover_processes():
            leftovers.append(f"pids {left} of {core.cmd}")
    if leftovers:
        pytest.fail(f"processes left behind after SIGTERM+SIGKILL: {leftovers}")


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    servers: list[RedisProcess] = []

    def make(*, persist: bool = True, extra: tuple[str, ...] = ()) -> RedisProcess:
        server = RedisProcess(tmp_path / f"redis{len(servers)}", persist=persist, extra=extra)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


def make_backend(request: pytest.FixtureRequest, name: str, tmp_path: Path) -> StoreBackend:
    if name == "redis":
        factory: RedisFactory = request.getfixturevalue("redis_factory")
        server = factory()
        return StoreBackend("redis", server.url, redis=server)
    path = tmp_path / "store.db"
    return StoreBackend("sqlite", f"sqlite://{path}", path=path)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    """Each test that takes it runs on a SQLite file and on a redis-server of its own."""
    b = make_backend(request, request.param, tmp_path)
    yield b
    b.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, attach the output of every running core to the report."""
    report = yield
    if report.failed and _ACTIVE:
        for core in _ACTIVE:
            with contextlib.suppress(OSError):
                report.sections.append((f"minirouter core {core.proc.pid}", core.diagnostics()))
    return report
