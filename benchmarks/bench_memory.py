"""`minirouter core` with 100k routes loaded: start-up time and resident memory.

    .venv/bin/pytest benchmarks/bench_memory.py --benchmark-only -s

Target (issue 2): RSS at most 150 MB with 100k routes loaded. The timed part is the start-up:
from exec to the admin /healthz answering with the whole table built. The RSS is recorded in
the benchmark's extra_info and printed; the assertion below is a regression guard set well
above the target so that it does not flake, not the target itself.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROUTES = 100_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(path: Path, n: int) -> None:
    routes: list[dict[str, Any]] = []
    for i in range(n):
        host = f"*.w{i % 500}.example.com" if i % 5 == 4 else f"h{i % 2000}.example.com"
        route: dict[str, Any] = {"id": f"r{i:06d}", "hosts": [host], "upstream": "app"}
        if i % 1000 == 0:
            route.update(path=f"^/re{i}/(\\d+)$", path_type="regex", rewrite="/x/$1")
        elif i % 3 == 0:
            route.update(path=f"/exact/{i}", path_type="exact")
        else:
            route.update(path=f"/p{i}/", strip_prefix=True)
        routes.append(route)
    config = {"upstreams": [{"id": "app", "targets": ["127.0.0.1:9"]}], "routes": routes}
    path.write_text(json.dumps(config))


def _start_and_measure(config: Path) -> dict[str, float]:
    port, admin = _free_port(), _free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "minirouter", "core", "--config", str(config)),
            *("--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"),
            *("--access-log", "off", "--log-level", "warning"),
        ],
    )
    try:
        deadline = started + 60
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=1) as r:
                    health = json.load(r)
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"core exited with {proc.returncode}") from None
                time.sleep(0.05)
        ready = time.monotonic() - started
        assert health.get("routes") == ROUTES, health
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        return {"startup_s": ready, "rss_mb": rss}
    finally:
        proc.terminate()
        proc.wait(30)


def test_core_with_100k_routes(benchmark: Any, tmp_path: Path) -> None:
    config = tmp_path / "routes.json"
    _write_config(config, ROUTES)
    result: dict[str, float] = {}

    def run() -> None:
        result.update(_start_and_measure(config))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(f"\n100k routes: start-up {result['startup_s']:.2f} s, RSS {result['rss_mb']:.1f} MB")
    assert result["rss_mb"] < 300, f"RSS {result['rss_mb']:.0f} MB with {ROUTES} routes"
