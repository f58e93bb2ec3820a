"""Fixtures for the hardening tests: one core (small limits, short timeouts) in front of a strict
recording upstream and a bad upstream, shared by the module that asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from integration.cfg import config, route, upstream
from integration.conftest import module_start_core, start_core, upstream_loop
from integration.coreproc import CoreProcess
from integration.upstreams import UpstreamLoop

from .servers import BadUpstream, StrictUpstream

__all__ = ["module_start_core", "start_core", "upstream_loop"]

# Small enough that a test can cross each limit cheaply; short enough that timeouts are quick.
LIMIT_ARGS = (
    "--access-log",
    "off",
    "--max-body-size",
    "1k",
    "--max-request-line",
    "1024",
    "--max-header-size",
    "4096",
    "--max-headers",
    "20",
    "--header-timeout",
    "1",
    "--body-timeout",
    "1",
    "--keepalive-timeout",
    "5",
)


@dataclass
class Rig:
    core: CoreProcess
    strict: StrictUpstream
    bad: BadUpstream

    @property
    def port(self) -> int:
        return self.core.port


@pytest.fixture(scope="module")
def rig(upstream_loop: UpstreamLoop, module_start_core: object) -> Iterator[Rig]:
    strict = StrictUpstream(upstream_loop).start()
    bad = BadUpstream(upstream_loop).start()
    cfg = config(
        [
            upstream("strict", strict.address, keepalive=4),
            upstream("bad", bad.address, timeouts={"connect": 2, "read": 1, "idle": 30}),
        ],
        [
            route("main", "strict", hosts=["example.test"], path="/"),
            route(
                "routed",
                "strict",
                hosts=["routed.test"],
                path="/",
                request_headers={"set": {"X-Route": "routed"}},
            ),
            route("bad", "bad", hosts=["bad.test"], path="/", retries=0),
            # Per-route body limits around the core's 1k, and a route without WebSocket.
            route("upload", "strict", hosts=["upload.test"], path="/", max_body_size="4k"),
            route("tiny", "strict", hosts=["tiny.test"], path="/", max_body_size=8),
            route("unlimited", "strict", hosts=["unlimited.test"], path="/", max_body_size=0),
            route("no-ws", "strict", hosts=["no-ws.test"], path="/", websocket=False),
        ],
    )
    core = module_start_core(cfg, *LIMIT_ARGS)  # type: ignore[operator]
    yield Rig(core, strict, bad)
    strict.stop()
    bad.stop()
