"""Fixtures for the black-box integration tests of `minirouter core`.

The core runs as a real subprocess; upstreams are real servers on 127.0.0.1 in this process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from .coreproc import CoreProcess
from .upstreams import UpstreamLoop, UpstreamSet

# Every core that is running right now, so that a failure report can show its output.
_ACTIVE: list[CoreProcess] = []


class StartCore(Protocol):
    def __call__(
        self,
        config: dict[str, Any] | str,
        *args: str,
        admin: bool = True,
        workers: int | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> CoreProcess: ...


@pytest.fixture(scope="session")
def upstream_loop() -> Iterator[UpstreamLoop]:
    loop = UpstreamLoop()
    yield loop
    loop.close()


@pytest.fixture
def upstreams(upstream_loop: UpstreamLoop) -> Iterator[UpstreamSet]:
    s = UpstreamSet(upstream_loop)
    yield s
    s.close()


@pytest.fixture(scope="module")
def module_upstreams(upstream_loop: UpstreamLoop) -> Iterator[UpstreamSet]:
    s = UpstreamSet(upstream_loop)
    yield s
    s.close()


def _factory(base: Path) -> tuple[StartCore, Callable[[], None]]:
    cores: list[CoreProcess] = []

    def start(
        config: dict[str, Any] | str,
        *args: str,
        admin: bool = True,
        workers: int | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> CoreProcess:
        core = CoreProcess(
            base / f"core{len(cores)}", config, args, admin=admin, workers=workers, env=env
        )
        cores.append(core)
        _ACTIVE.append(core)
        if wait:
            core.wait_ready()
        return core

    def cleanup() -> None:
        leftovers: list[str] = []
        for core in cores:
            core.stop(timeout=5)
            if core in _ACTIVE:
                _ACTIVE.remove(core)
            left = core.leftover_processes()
            if left:
                leftovers.append(f"pids {left} of {core.cmd}")
        if leftovers:
            pytest.fail(f"processes left behind after SIGTERM+SIGKILL: {leftovers}")

    return start, cleanup


@pytest.fixture
def start_core(tmp_path: Path) -> Iterator[StartCore]:
    start, cleanup = _factory(tmp_path)
    yield start
    cleanup()


@pytest.fixture(scope="module")
def module_start_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartCore]:
    start, cleanup = _factory(tmp_path_factory.mktemp("core"))
    yield start
    cleanup()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, attach the output of every running core to the report."""
    report = yield
    if report.failed and _ACTIVE:
        for core in _ACTIVE:
            with contextlib.suppress(OSError):
                report.sections.append((f"minirouter core {core.proc.pid}", core.diagnostics()))
    return report
