"""Config propagation through the store: how fast and how smoothly a running core follows it.

    MINIROUTER_BENCH_FULL=1 .venv/bin/pytest benchmarks/bench_propagation.py --benchmark-only -s

Four measurements, each on SQLite and on Redis (a redis-server started here on a free port):

* **propagation latency**: from the moment `Store.apply` returns to the first response routed
  by the new rule through a running `minirouter core --store`, over 200 changes (half new
  routes, half edits of existing ones) with 10k routes loaded. The new rule is recognised by a
  response header only it sets, so the old rule answering is never mistaken for the new one.
  p50 / p99 go to `extra_info` and are printed (target: p99 <= 50 ms).
* **changes under load**: `wrk` against the core for 30 s without changes, then 30 s while a
  writer applies 200 changes/s (adds, deletes, and edits of the very route under load): zero
  failed requests, and the p99 of both runs (target: within 1.2x).
* **core CPU per change**: the core's CPU time while 200 changes/s are applied with no
  requests, less its idle rate, per change (10k routes).
* **snapshot load of 100k routes**: `store.snapshot()` on a fresh store client (target <= 2 s),
  and `minirouter core --store` start-up from exec to /healthz reporting all 100k routes.

Without `MINIROUTER_BENCH_FULL=1`, and always under `--benchmark-disable` (what `make test` and
CI run), the counts are scaled down so that the whole file takes seconds; the code path is the
same. Needs `redis-server`, `nginx` (the upstream) and `wrk`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from e2e_load import Server, nginx_cmd, parse_wrk, start_server, upstream_conf
from minirouter.model import Route, from_dict
from minirouter.store import Change, Store, open_store


@dataclass(frozen=True)
class Scale:
    routes: int  # routes loaded while propagation is measured
    changes: int  # changes whose propagation is timed
    load_seconds: int  # each wrk run
    rate: int  # changes per second under load
    big: int  # routes of the snapshot-load measurement


FULL = Scale(routes=10_000, changes=200, load_seconds=30, rate=200, big=100_000)
QUICK = Scale(routes=1_000, changes=20, load_seconds=1, rate=200, big=5_000)
CHUNK = 5_000  # changes per apply while loading a store
WRK_CONNECTIONS = 50
SMALL_ROUTES = 100


# Full mode only: the wrk runs of the under-load test are repeated (no changes, control,
# followed, in turn) and the medians compared: on a shared machine one run of each is noise.
REPEAT_ENV = "MINIROUTER_BENCH_REPEAT"
LOAD_SECONDS_ENV = "MINIROUTER_BENCH_LOAD_SECONDS"


@pytest.fixture(scope="module")
def scale(request: pytest.FixtureRequest) -> Scale:
    full = os.environ.get("MINIROUTER_BENCH_FULL") == "1"
    if full and not request.config.getoption("benchmark_disable"):
        seconds = os.environ.get(LOAD_SECONDS_ENV)
        return dataclasses.replace(FULL, load_seconds=int(seconds)) if seconds else FULL
    return QUICK


def repeats(scale: Scale) -> int:
    return max(1, int(os.environ.get(REPEAT_ENV, "1"))) if scale is not QUICK else 1


def _find(binary: str) -> str:
    path = shutil.which(binary) or next(
        (str(p) for d in ("/usr/sbin", "/usr/local/sbin") if (p := Path(d, binary)).exists()),
        None,
    )
    if path is None:
        pytest.fail(f"bench_propagation needs `{binary}` (apt-get install it)", pytrace=False)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _poll(what: str, fn: Any, timeout: float, server: Server | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            value = fn()
            if value:
                return value
        if server is not None and server.proc.poll() is not None:
            raise AssertionError(f"{server.name} exited: {server.log_tail()}")
        if time.monotonic() > deadline:
            tail = server.log_tail() if server is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")
        time.sleep(0.01)


def _connects(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), 1):
        return True


def _healthz(admin: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    try:
        conn.request("GET", "/healthz")
        data = json.loads(conn.getresponse().read())
        assert isinstance(data, dict)
        return data
    finally:
        conn.close()


# -- processes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[contextlib.ExitStack]:
    """Every server this module starts is stopped when it ends (also on a failure)."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture(scope="module")
def upstream_port(procs: contextlib.ExitStack, tmp_path_factory: pytest.TempPathFactory) -> int:
    """nginx answering 200 to everything: an upstream that costs next to nothing."""
    workdir = tmp_path_factory.mktemp("upstream")
    port = _free_port()
    server = start_server(
        "upstream", nginx_cmd(_find("nginx"), workdir, upstream_conf(workdir, port)), workdir, procs
    )
    _poll("the nginx upstream", lambda: _connects(port), 10, server)
    return port


@pytest.fixture(scope="module")
def redis_port(procs: contextlib.ExitStack, tmp_path_factory: pytest.TempPathFactory) -> int:
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    cmd = [
        _find("redis-server"),
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)),
        *("--save", "", "--appendonly", "no"),
    ]
    server = start_server("redis", cmd, workdir, procs)

    def pong() -> bool:
        with socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    _poll("redis-server", pong, 10, server)
    return port


def store_url(backend: str, redis_port: int, workdir: Path, name: str, db: int) -> str:
    if backend == "sqlite":
        return f"sqlite://{workdir / f'{name}.db'}"
    return f"redis://127.0.0.1:{redis_port}/{db}"


def start_core(
    procs: contextlib.ExitStack, url: str, workdir: Path, name: str
) -> tuple[Server, int, int]:
    """`minirouter core --store url`; returns the server, its port and its admin port."""
    port, admin = _free_port(), _free_port()
    cmd = [
        *(sys.executable, "-m", "minirouter", "core", "--store", url),
        *("--snapshot", str(workdir / f"{name}-snapshot.json")),
        *("--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"),
        *("--access-log", "off", "--log-level", "warning"),
    ]
    env = dict(os.environ, XDG_STATE_HOME=str(workdir / "state"))
    return start_server(name, cmd, workdir, procs, env=env), port, admin


# -- config ----------------------------------------------------------------------------------------


def bench_route(i: int, **extra: Any) -> Route:
    return from_dict("routes", {"id": f"r{i:06d}", "path": f"/p{i}/", "upstream": "app"} | extra)


def load_routes(store: Store, upstream_port: int, n: int) -> int:
    """Upstream `app` and routes r000000.. (chunked applies); returns the revision."""
    rev = store.apply(
        [
            Change.put(
                from_dict("upstreams", {"id": "app", "targets": [f"127.0.0.1:{upstream_port}"]})
            )
        ]
    )
    for start in range(0, n, CHUNK):
        rev = store.apply(
            [Change.put(bench_route(i)) for i in range(start, min(n, start + CHUNK))],
            actor="bench",
        )
    return rev


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Loaded:
    backend: str
    store: Store
    port: int
    admin: int
    server: Server
    routes: int
    control_url: str  # a store of the same backend that no core follows


def _loaded(
    request: pytest.FixtureRequest,
    routes: int,
    procs: contextlib.ExitStack,
    upstream_port: int,
    redis_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Loaded]:
    """A store with `routes` routes and a core following it."""
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"loaded-{backend}-{routes}")
    url = store_url(backend, redis_port, workdir, "store", db=2 if routes < 1000 else 0)
    store = open_store(url)
    try:
        rev = load_routes(store, upstream_port, routes)
        server, port, admin = start_core(procs, url, workdir, f"core-{backend}-{routes}")
        _poll(
            f"the core at revision {rev}",
            lambda: _healthz(admin).get("revision") == rev,
            60,
            server,
        )
        control = store_url(backend, redis_port, workdir, "control", db=3 if routes < 1000 else 4)
        yield Loaded(backend, store, port, admin, server, routes, control)
    finally:
        store.close()


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def loaded(
    request: pytest.FixtureRequest,
    scale: Scale,
    procs: contextlib.ExitStack,
    upstream_port: int,
    redis_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Loaded]:
    """`scale.routes` routes (10k in full mode) and a core following them."""
    yield from _loaded(request, scale.routes, procs, upstream_port, redis_port, tmp_path_factory)


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def small(
    request: pytest.FixtureRequest,
    procs: contextlib.ExitStack,
    upstream_port: int,
    redis_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Loaded]:
    """A small config (100 routes) and a core following it: the cost of the change rate alone."""
    yield from _loaded(request, SMALL_ROUTES, procs, upstream_port, redis_port, tmp_path_factory)


# -- propagation latency ---------------------------------------------------------------------------


class Prober:
    """GET on one keep-alive connection; returns the X-Prop response header."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def prop(self, path: str) -> str | None:
        self.conn.request("GET", path, headers={"Host": "bench.test"})
        resp = self.conn.getresponse()
        resp.read()
        return resp.getheader("X-Prop")

    def close(self) -> None:
        self.conn.close()


def measure_propagation(loaded: Loaded, scale: Scale, first: int) -> list[float]:
    """Apply `scale.changes` changes one by one; the seconds from each apply's return to the
    first response that carries the new rule's X-Prop header."""
    prober = Prober(loaded.port)
    latencies: list[float] = []
    try:
        for k in range(scale.changes):
            tag = str(first + k)
            # Even: a new route; odd: an edit of one of the loaded routes.
            i = scale.routes + first + k if k % 2 == 0 else (k * 7919) % scale.routes
            route = bench_route(i, response_headers={"set": {"X-Prop": tag}})
            path = f"/p{i}/x"
            loaded.store.apply([Change.put(route)], actor="bench")
            applied = time.perf_counter()
            deadline = applied + 5.0
            while prober.prop(path) != tag:
                if time.perf_counter() > deadline:
                    raise AssertionError(f"change {k} ({path}) not served within 5 s")
            latencies.append(time.perf_counter() - applied)
    finally:
        prober.close()
    return latencies


_FIRST_TAG = {"sqlite": 0, "redis": 0}


def test_propagation_latency(benchmark: Any, loaded: Loaded, scale: Scale) -> None:
    def run() -> list[float]:
        first = _FIRST_TAG[loaded.backend]
        _FIRST_TAG[loaded.backend] += scale.changes
        return measure_propagation(loaded, scale, first)

    latencies = benchmark.pedantic(run, rounds=1, iterations=1)
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    benchmark.extra_info.update(
        backend=loaded.backend,
        routes=scale.routes,
        changes=len(latencies),
        p50_ms=round(p50 * 1000, 2),
        p99_ms=round(p99 * 1000, 2),
        max_ms=round(max(latencies) * 1000, 2),
        p99_target_ms=50,
    )
    print(
        f"\npropagation [{loaded.backend}, {scale.routes} routes, {len(latencies)} changes]: "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert len(latencies) == scale.changes


# -- changes under load ----------------------------------------------------------------------------


def run_wrk(port: int, seconds: int) -> Any:
    cmd = [
        _find("wrk"),
        *("-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency"),
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(out.stdout)


class Writer(threading.Thread):
    """Applies `rate` changes a second for `seconds` (bounded count), paced by the clock.

    Every 4 changes: a route added, edited, deleted, and the catch-all route under load edited;
    the number of routes stays the same.
    """

    def __init__(self, store: Store, rate: int, seconds: int, base: int) -> None:
        super().__init__(name="writer", daemon=True)
        self.store = store
        self.rate = rate
        self.total = rate * seconds
        self.base = base
        self.done = 0
        self.behind = 0.0  # the worst lag behind the schedule, seconds
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        try:
            for k in range(self.total):
                if self.stop.is_set():
                    return
                due = started + k / self.rate
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)  # pacing, not waiting for a condition
                self.behind = max(self.behind, time.monotonic() - due)
                i = self.base + k - k % 4  # one route per 4 changes: added, edited, deleted
                match k % 4:
                    case 0:
                        change = [Change.put(bench_route(i))]
                    case 1:
                        change = [Change.put(bench_route(i, priority=1))]
                    case 2:
                        change = [Change.delete("routes", f"r{i:06d}")]
                    case _:  # edit the catch-all route that wrk is hitting
                        change = [Change.put(catch_all(k))]
                self.store.apply(change, actor="bench-load")
                self.done += 1
        except BaseException as exc:
            self.error = exc


def catch_all(version: int) -> Route:
    return from_dict(
        "routes",
        {
            "id": "zz-catch-all",
            "path": "/",
            "upstream": "app",
            "priority": -1,
            "request_headers": {"set": {"X-Version": str(version)}},
        },
    )


def test_changes_under_load(benchmark: Any, loaded: Loaded, scale: Scale) -> None:
    """With `scale.routes` routes loaded (10k in full mode)."""
    changes_under_load(benchmark, loaded, scale)


# The longest a cost-per-change run lasts (seconds of changes at `scale.rate`).
COST_SECONDS = 10
IDLE_SECONDS = 3


def test_core_cpu_per_change(benchmark: Any, loaded: Loaded, scale: Scale) -> None:
    """What following the store costs a core: its CPU time (every thread, user + system) while
    a Writer applies `scale.rate` changes/s with no requests, less its idle rate (heartbeats,
    stats, the SQLite poll), per change. Unlike the under-load ratio, this does not depend on
    how wrk, nginx and the writer share the machine with the core."""
    proc = psutil.Process(loaded.server.proc.pid)

    def cpu() -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    seconds = min(scale.load_seconds, COST_SECONDS)
    idle_seconds = IDLE_SECONDS if seconds == COST_SECONDS else 1

    def run() -> dict[str, float]:
        before = cpu()
        time.sleep(idle_seconds)  # measuring the idle rate, not waiting for a condition
        idle = (cpu() - before) / idle_seconds
        writer = Writer(loaded.store, scale.rate, seconds, base=20 * loaded.routes)
        started, before = time.monotonic(), cpu()
        writer.run()
        final = loaded.store.current_rev()
        _poll(
            f"the core at {final}",
            lambda: _healthz(loaded.admin)["revision"] == final,
            10,
        )
        elapsed, used = time.monotonic() - started, cpu() - before
        if writer.error is not None:
            raise writer.error
        assert writer.done == scale.rate * seconds
        return {
            "changes": writer.done,
            "idle_ms_per_s": round(idle * 1000, 1),
            "cpu_ms": round(used * 1000, 1),
            "cpu_us_per_change": round((used - idle * elapsed) / writer.done * 1e6, 1),
        }

    info = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(info | {"backend": loaded.backend, "routes": loaded.routes})
    print(
        f"\ncore CPU per change [{loaded.backend}, {loaded.routes} routes, {scale.rate} changes/s, "
        f"no requests]: {info['cpu_us_per_change']:.0f} us (idle {info['idle_ms_per_s']:.0f} "
        f"ms/s, {info['cpu_ms']:.0f} ms for {info['changes']:.0f} changes)"
    )


def test_changes_under_load_small_config(benchmark: Any, small: Loaded, scale: Scale) -> None:
    """With 100 routes: what the change rate costs when a table rebuild is cheap."""
    changes_under_load(benchmark, small, scale)


def writer_run(store: Store, scale: Scale, base: int, port: int) -> tuple[Any, Writer]:
    """wrk against the core while a Writer applies `scale.rate` changes/s to `store`."""
    writer = Writer(store, scale.rate, scale.load_seconds, base=base)
    writer.start()
    try:
        result = run_wrk(port, scale.load_seconds)
    finally:
        writer.stop.set()
        writer.join(scale.load_seconds + 60)
    if writer.error is not None:
        raise writer.error
    assert writer.done == scale.rate * scale.load_seconds
    return result, writer


def _errors(result: Any) -> int:
    return int(sum(result.socket_errors.values()) + result.non_2xx_3xx)


def changes_under_load(benchmark: Any, loaded: Loaded, scale: Scale) -> None:
    """Three wrk runs of `scale.load_seconds` each: no changes; the same writer applying its
    changes to a store that no core follows (control: the writer's own CPU on this machine,
    since wrk, nginx, the core, the store and the writer share the cores); the writer applying
    them to the store the core follows."""
    rev = loaded.store.apply([Change.put(catch_all(0))])
    _poll("the catch-all route", lambda: _healthz(loaded.admin)["revision"] >= rev, 10)
    # The control store: the same backend, the `app` upstream only, nobody following it.
    control = open_store(loaded.control_url)
    control.apply([Change.put(loaded.store.snapshot().config.upstreams[0])])
    base = 10 * loaded.routes
    routes_before = _healthz(loaded.admin)["routes"]
    names = ("quiet", "control", "busy")

    def run() -> dict[str, Any]:
        runs: dict[str, list[Any]] = {name: [] for name in names}
        writers: list[Writer] = []
        # With MINIROUTER_BENCH_REPEAT=N the three runs are made N times in turn, so that a
        # burst of other work on the machine does not land on one kind of run only.
        for _ in range(repeats(scale)):
            runs["quiet"].append(run_wrk(loaded.port, scale.load_seconds))
            runs["control"].append(writer_run(control, scale, base, loaded.port)[0])
            busy, writer = writer_run(loaded.store, scale, base, loaded.port)
            runs["busy"].append(busy)
            writers.append(writer)
            final = loaded.store.current_rev()
            _poll(
                f"the core at {final}",
                lambda final=final: _healthz(loaded.admin)["revision"] == final,
                10,
            )
            assert _healthz(loaded.admin)["routes"] == routes_before  # the writer adds none
        return {"runs": runs, "writers": writers}

    try:
        result = benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        control.close()
    runs, writers = result["runs"], result["writers"]
    n = len(writers)
    done = sum(w.done for w in writers)
    lag = max(w.behind for w in writers)
    median = {
        name: {
            "rps": statistics.median(r.rps for r in runs[name]),
            "p50_ms": statistics.median(r.p50_ms for r in runs[name]),
            "p99_ms": statistics.median(r.p99_ms for r in runs[name]),
            "errors": sum(_errors(r) for r in runs[name]),
        }
        for name in names
    }
    quiet_p99, control_p99 = median["quiet"]["p99_ms"], median["control"]["p99_ms"]
    ratio = median["busy"]["p99_ms"] / quiet_p99 if quiet_p99 else float("nan")
    control_ratio = median["busy"]["p99_ms"] / control_p99 if control_p99 else float("nan")
    info: dict[str, Any] = {
        "backend": loaded.backend,
        "routes": loaded.routes,
        "seconds": scale.load_seconds,
        "repeat": n,
        "changes": done,
        "changes_per_s": round(done / (scale.load_seconds * n), 1),
        "writer_max_lag_ms": round(lag * 1000, 1),
        "p99_ratio": round(ratio, 2),
        "p99_ratio_vs_control": round(control_ratio, 2),
        "p99_ratio_target": 1.2,
        "p99_ratio_per_round": [
            round(b.p99_ms / q.p99_ms, 2) if q.p99_ms else None
            for q, b in zip(runs["quiet"], runs["busy"], strict=True)
        ],
    }
    for name in names:
        for key, value in median[name].items():
            info[f"{name}_{key}"] = value
    benchmark.extra_info.update(info)
    print(
        f"\nunder load [{loaded.backend}, {loaded.routes} routes, wrk -c{WRK_CONNECTIONS}, "
        f"{scale.load_seconds} s each, {n} round(s), {done / (scale.load_seconds * n):.0f} "
        f"changes/s, writer lag max {lag * 1000:.0f} ms]"
    )
    labels = {"quiet": "no changes", "control": "control", "busy": "followed"}
    for name in names:
        for i, r in enumerate(runs[name]):
            label = labels[name] + (f" #{i + 1}" if n > 1 else "")
            print(
                f"  {label:<14} {r.rps:8.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
                f"p99 {r.p99_ms:7.2f} ms  errors {_errors(r)}"
            )
    print(
        f"  p99 followed / no changes {ratio:.2f}, / control {control_ratio:.2f} (target 1.2)"
        + (f"; medians of {n}, per round {info['p99_ratio_per_round']}" if n > 1 else "")
    )
    failed = [r.output for name in names for r in runs[name] if _errors(r)]
    assert not failed, failed


# -- snapshot load ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def big_store(
    request: pytest.FixtureRequest,
    scale: Scale,
    upstream_port: int,
    redis_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str, Path]]:
    """(backend, URL, workdir) of a store holding `scale.big` routes."""
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"big-{backend}")
    url = store_url(backend, redis_port, workdir, "big", db=1)
    with open_store(url) as store:
        started = time.monotonic()
        load_routes(store, upstream_port, scale.big)
        print(f"\n[{backend}] {scale.big} routes written in {time.monotonic() - started:.1f} s")
    yield backend, url, workdir


def test_snapshot_load(benchmark: Any, big_store: tuple[str, str, Path], scale: Scale) -> None:
    backend, url, _ = big_store

    def fresh() -> tuple[tuple[Store], dict[str, Any]]:
        return (open_store(url),), {}

    def load(store: Store) -> int:
        try:
            return len(store.snapshot().config.routes)
        finally:
            store.close()

    rounds = 3
    assert benchmark.pedantic(load, setup=fresh, rounds=rounds, iterations=1) == scale.big
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        best, median = stats.stats.min, stats.stats.median
        benchmark.extra_info.update(
            backend=backend, routes=scale.big, min_s=round(best, 3), median_s=round(median, 3)
        )
        print(
            f"\nsnapshot() of {scale.big} routes [{backend}], fresh client: min {best:.3f} s, "
            f"median {median:.3f} s (target 2 s)"
        )


def test_core_startup_from_store(
    benchmark: Any,
    big_store: tuple[str, str, Path],
    scale: Scale,
    tmp_path: Path,
) -> None:
    backend, url, _ = big_store

    with contextlib.ExitStack() as stack:  # the core is stopped after the timing

        def start() -> float:
            started = time.monotonic()
            server, _port, admin = start_core(stack, url, tmp_path, f"startup-{backend}")
            _poll(
                f"the core with {scale.big} routes",
                lambda: _healthz(admin).get("routes") == scale.big,
                120,
                server,
            )
            return time.monotonic() - started

        seconds = benchmark.pedantic(start, rounds=1, iterations=1)
    benchmark.extra_info.update(backend=backend, routes=scale.big, startup_s=round(seconds, 3))
    print(f"\ncore start-up from a {scale.big}-route store [{backend}]: {seconds:.2f} s")
