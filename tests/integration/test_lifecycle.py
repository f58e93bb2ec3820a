"""Process lifecycle: --help, bad config at start, SIGTERM graceful shutdown (in-flight requests
finish, no new connections, exit 0), --shutdown-timeout, --workers 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import core_command, dump_config, metric_sum, poll
from .httpclient import RawConnection, Response, raw_request_bytes, request
from .upstreams import UpstreamSet, free_port

FLAGS = [
    "--config",
    "--listen",
    "--admin",
    "--workers",
    "--access-log",
    "--access-log-file",
    "--log-level",
    "--max-body-size",
    "--max-request-line",
    "--max-header-size",
    "--max-headers",
    "--header-timeout",
    "--keepalive-timeout",
    "--shutdown-timeout",
]


def test_help_lists_the_flags() -> None:
    for cmd in (core_command(), [sys.executable, "-m", "minirouter"]):
        out = subprocess.run(
            [*cmd, "core", "--help"], capture_output=True, text=True, timeout=30, check=False
        )
        assert out.returncode == 0, f"{cmd} core --help → {out.returncode}\n{out.stderr}"
        missing = [f for f in FLAGS if f not in out.stdout]
        assert not missing, f"{cmd} core --help does not mention {missing}"


def test_invalid_config_at_start_exits_nonzero(start_core: StartCore) -> None:
    core = start_core("routes:\n  - id: r\n    upstream: nowhere\n", wait=False)
    code = core.wait(10)
    assert code is not None, "core kept running with an invalid config"
    assert code != 0
    assert core.stderr_text().strip(), "no message on stderr"


@pytest.mark.parametrize(("flag", "named"), [("--listen", ""), ("--listen-tls", " (tls)")])
def test_a_busy_address_stops_the_start_and_is_named(tmp_path: Path, flag: str, named: str) -> None:
    cfg = tmp_path / "routes.yaml"
    cfg.write_text(dump_config(config([upstream("u", "127.0.0.1:9")], [route("r", "u")])))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        listen = ["--listen", f"127.0.0.1:{port}"]
        if flag == "--listen-tls":
            listen = ["--listen", f"127.0.0.1:{free_port()}", "--listen-tls", f"127.0.0.1:{port}"]
        done = subprocess.run(
            [*core_command(), "core", "--config", str(cfg), *listen],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "XDG_STATE_HOME": str(tmp_path), "HOME": str(tmp_path)},
        )
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}{named}: " in done.stderr, done.stderr


def connect_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            # accepted by a listener that is still open: it must at least not serve it
            s.sendall(raw_request_bytes("GET", "/", host="x"))
            s.settimeout(2)
            try:
                return s.recv(1) == b""
            except (TimeoutError, ConnectionResetError):
                return False
    except ConnectionRefusedError:
        return True


def test_sigterm_graceful(upstreams: UpstreamSet, start_core: StartCore) -> None:
    slow = upstreams.http("slow")
    core = start_core(config([upstream("u", slow.address)], [route("r", "u")]))
    assert request(core.port).status == 200
    results: list[Response] = []
    errors: list[BaseException] = []

    def in_flight() -> None:
        try:
            results.append(
                request(core.port, "POST", "/slow", headers={"X-Delay": "3"}, body=b"s", timeout=20)
            )
        except BaseException as e:
            errors.append(e)

    idle = RawConnection(core.port)  # an idle keep-alive connection must not hold up the exit
    t = threading.Thread(target=in_flight)
    try:
        idle.send(raw_request_bytes("GET", "/idle", host="x"))
        assert idle.read_response().status == 200
        t.start()
        poll(lambda: slow.in_flight == 1, 5, message="the slow request to reach the upstream")
        sent_at = time.monotonic()
        core.terminate()
        # stops accepting, while the slow request is still in flight
        poll(lambda: connect_refused(core.port), 5, message="the listener to stop accepting")
        code = core.wait(15)
        exited_after = time.monotonic() - sent_at
    finally:
        t.join(20)
        idle.close()
    assert not errors, f"in-flight request failed during shutdown: {errors!r}"
    assert len(results) == 1 and results[0].status == 200, [r.describe() for r in results]
    assert results[0].json()["body_len"] == 1
    assert code == 0, f"exit code after SIGTERM: {code}\n{core.diagnostics()}"
    assert exited_after < 10, f"took {exited_after:.1f}s to exit (idle connection held it up?)"


def test_shutdown_timeout_bounds_the_wait(upstreams: UpstreamSet, start_core: StartCore) -> None:
    slow = upstreams.http("slow")
    core = start_core(
        config([upstream("u", slow.address)], [route("r", "u")]), "--shutdown-timeout", "1"
    )
    outcome: list[object] = []

    def stuck() -> None:
        try:
            outcome.append(request(core.port, headers={"X-Delay": "30"}, timeout=40).status)
        except Exception as e:
            outcome.append(e)

    t = threading.Thread(target=stuck)
    t.start()
    try:
        poll(lambda: slow.in_flight == 1, 5, message="the stuck request to reach the upstream")
        start = time.monotonic()
        core.terminate()
        code = core.wait(15)
        elapsed = time.monotonic() - start
    finally:
        t.join(45)
    assert code is not None, "core still running 15 s after SIGTERM with --shutdown-timeout 1"
    assert elapsed < 6, f"exit took {elapsed:.1f}s with --shutdown-timeout 1"
    assert outcome and outcome[0] != 200, "the stuck request cannot have completed"


def test_workers_two_both_serve(upstreams: UpstreamSet, start_core: StartCore) -> None:
    echo = upstreams.http("echo")
    core = start_core(config([upstream("u", echo.address)], [route("r", "u")]), workers=2)
    assert len(core.processes()) >= 2, "--workers 2 runs at least two processes"
    for w in range(2):
        h = core.healthz(w)
        assert h["status"] == "ok" and h["revision"] == 1, h
    for i in range(200):
        r = request(core.port, "GET", f"/w/{i}")
        assert r.status == 200, r.describe()
    served = [
        metric_sum(core.metrics(w), "minirouter_requests_total", route="r", status="200")
        for w in range(2)
    ]
    assert sum(served) == 200, f"per-worker request counters {served} do not add up to 200"
    assert all(n > 0 for n in served), f"one worker served nothing over 200 connections: {served}"

    # a file change reaches every worker
    core.write_config(
        config([upstream("u", echo.address)], [route("r", "u"), route("r2", "u", path="/two/")])
    )
    for w in range(2):
        core.wait_for_revision(2, worker=w)
        assert core.healthz(w)["routes"] == 2

    procs = core.processes()
    code = core.stop()
    assert code == 0, f"exit code {code}"
    alive = [p.pid for p in procs if p.is_running() and p.status() != "zombie"]
    assert not alive, f"worker processes left after SIGTERM: {alive}"


def answers_200(port: int) -> bool:
    return request(port).status == 200


def test_several_listen_addresses(upstreams: UpstreamSet, start_core: StartCore) -> None:
    echo = upstreams.http("echo")
    second = free_port()
    core = start_core(
        config([upstream("u", echo.address)], [route("r", "u")]), "--listen", f"127.0.0.1:{second}"
    )
    for port in (core.port, second):
        poll(partial(answers_200, port), 10, message=f"a 200 on listener {port}")


def test_idle_core_exits_promptly_on_sigterm(upstreams: UpstreamSet, start_core: StartCore) -> None:
    echo = upstreams.http("echo")
    core = start_core(config([upstream("u", echo.address)], [route("r", "u")]))
    assert request(core.port).status == 200
    start = time.monotonic()
    core.terminate()
    code = core.wait(10)
    elapsed = time.monotonic() - start
    assert code == 0, f"exit code {code}"
    assert elapsed < 3, f"an idle core took {elapsed:.1f}s to exit on SIGTERM"
