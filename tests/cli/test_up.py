"""`minirouter up` end to end: a subprocess on free ports and a fresh embedded store (its own
XDG_STATE_HOME), driven over HTTP on 127.0.0.1 only, and stopped the way an operator does.

Every wait is bounded; every process this file starts is gone when a test ends, even one that
fails (`UpProcess.close` kills what is left, children first).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from minirouter.cli import main
from minirouter.control.accounts import Accounts
from minirouter.store import open_store
from store.conftest import free_port

BANNER_END = "Ctrl-C stops everything."
PASSWORD_LINE = re.compile(r"^\s+password: (\S+)$", re.MULTILINE)


def request(
    port: int,
    method: str = "GET",
    path: str = "/",
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to 127.0.0.1:port (no redirect following): status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@dataclass
class Ports:
    listen: int = field(default_factory=free_port)
    control: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)
    demo: int = field(default_factory=free_port)

    def args(self) -> list[str]:
        return [
            "--listen", f"127.0.0.1:{self.listen}",
            "--control", f"127.0.0.1:{self.control}",
            "--admin", f"127.0.0.1:{self.admin}",
            "--demo-upstream", f"127.0.0.1:{self.demo}",
        ]  # fmt: skip


class UpProcess:
    """`minirouter up` as a subprocess; its output (stdout and stderr) collected by a thread."""

    def __init__(self, state: Path, ports: Ports, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINIROUTER_")}
        env |= {"XDG_STATE_HOME": str(state), "PYTHONUNBUFFERED": "1"}
        self.ports = ports
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "minirouter", "up", *ports.args(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.children: list[psutil.Process] = []

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            with self._lock:
                self._lines.append(raw.decode("utf-8", "replace"))

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def wait_for_banner(self, timeout: float = 40) -> str:
        """The output up to the end of the banner (`up` is then serving)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.output
            if BANNER_END in output:
                self.children = psutil.Process(self.proc.pid).children(recursive=True)
                return output
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"minirouter up exited with {self.proc.returncode}:\n{self.output}")
            time.sleep(0.05)
        pytest.fail(f"minirouter up did not start within {timeout} s:\n{self.output}")

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 15) -> int:
        """Send `sig` to `up` alone (as a terminal's Ctrl-C reaches it); its exit status."""
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 15) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"minirouter up did not exit within {timeout} s:\n{self.output}")
        self._reader.join(5)
        return code

    def close(self) -> None:
        """Kill whatever is left (only after a failure), and close the pipe."""
        with contextlib.suppress(psutil.Error):
            if self.proc.poll() is None:
                self.children = psutil.Process(self.proc.pid).children(recursive=True)
        for proc in self.children:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        psutil.wait_procs(self.children, timeout=5)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A fresh XDG_STATE_HOME: the embedded store of `up` is new."""
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def start(state: Path) -> Iterator[type[UpProcess]]:
    """Starts `minirouter up` processes (on `state`) that are cleaned up at the end."""
    started: list[UpProcess] = []

    class Up(UpProcess):
        def __init__(self, ports: Ports, *args: str) -> None:
            super().__init__(state, ports, *args)
            started.append(self)

    yield Up
    for up in started:
        up.close()


def store_url(state: Path) -> str:
    return f"sqlite://{state / 'minirouter' / 'store.db'}"


def poll(check: object, what: str, timeout: float = 10) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    pytest.fail(f"{what}: not within {timeout} s")


def assert_all_gone(up: UpProcess) -> None:
    assert len(up.children) == 2, up.children  # the core and the control plane
    _, alive = psutil.wait_procs(up.children, timeout=5)
    assert not alive, alive
    for port in (up.ports.listen, up.ports.control, up.ports.admin, up.ports.demo):
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), 2),
        ):
            pass


def test_up_end_to_end(start: type[UpProcess], state: Path) -> None:
    ports = Ports()
    up = start(ports)
    banner = up.wait_for_banner()
    assert f"proxy:    http://127.0.0.1:{ports.listen}/" in banner
    assert f"http://127.0.0.1:{ports.control}/api/v1" in banner
    assert f"metrics:  http://127.0.0.1:{ports.admin}/metrics" in banner
    assert "DEMO" in banner and f"127.0.0.1:{ports.demo}" in banner
    passwords = PASSWORD_LINE.findall(banner)
    assert len(passwords) == 1, banner
    password = passwords[0]
    assert "user:     admin" in banner
    assert {p.cmdline()[3] for p in up.children} == {"core", "control"}

    # The demo route answers through the core, from the demo upstream.
    status, _, body = request(ports.listen, path="/hello?x=1")
    assert status == 200, body
    assert b"DEMO upstream" in body and b"GET /hello?x=1 HTTP/1.1" in body
    assert b"X-Forwarded-For: 127.0.0.1" in body
    status, _, body = request(ports.listen, "POST", "/form", body={"a": 1})
    assert status == 200 and b"POST /form" in body

    # The control plane: its OpenAPI document, and a login with the printed password.
    status, _, body = request(ports.control, path="/api/v1/openapi.json")
    assert status == 200 and json.loads(body)["openapi"].startswith("3.")
    status, _, body = request(
        ports.control, "POST", "/api/v1/session", body={"name": "admin", "password": password}
    )
    assert status == 200, body
    assert json.loads(body)["role"] == "admin"
    status, _, _ = request(
        ports.control, "POST", "/api/v1/session", body={"name": "admin", "password": "x" * 20}
    )
    assert status == 401

    if importlib.util.find_spec("minirouter.control.gui") is not None:
        status, _, body = request(ports.control, path="/login")  # the GUI's login page
        assert status == 200 and b"<form" in body

    # The core's admin listener.
    status, _, body = request(ports.admin, path="/healthz")
    assert status == 200 and json.loads(body)["routes"] == 1

    # A change made with the CLI on the same store reaches the running core.
    result = CliRunner().invoke(
        main,
        ["route", "add", "moved", "--path", "/old/", "--redirect", "https://example.com$path"],
        env={"MINIROUTER_STORE": store_url(state)},
    )
    assert result.exit_code == 0, result.output
    poll(lambda: request(ports.listen, path="/old/x")[0] == 308, "the new route in the core")
    assert request(ports.listen, path="/old/x")[1]["Location"] == "https://example.com/old/x"

    # Ctrl-C: everything stops, nothing is left behind, the password was printed once.
    assert up.stop(signal.SIGINT) == 0
    assert_all_gone(up)
    output = up.output
    assert output.count(password) == 1
    assert "Traceback" not in output
    assert output.rstrip().endswith("minirouter: stopped.")
    with open_store(store_url(state)) as store:
        record = store.user("admin")
        assert record is not None and record["role"] == "admin"
        assert password not in json.dumps(record)
        assert Accounts(store).authenticate("admin", password) is not None


def test_second_run_keeps_the_admin_and_the_demo(start: type[UpProcess], state: Path) -> None:
    ports = Ports()
    first = start(ports)
    first.wait_for_banner()
    assert first.stop(signal.SIGTERM) == 0
    assert_all_gone(first)

    second = start(ports)
    banner = second.wait_for_banner()
    assert "password:" not in banner and "Created the first admin" not in banner
    status, _, body = request(ports.listen, path="/")
    assert status == 200 and b"DEMO upstream" in body
    assert second.stop(signal.SIGINT) == 0
    assert_all_gone(second)
    with open_store(store_url(state)) as store:
        assert [u["name"] for u in store.users()] == ["admin"]
        assert store.current_rev() == 1  # the demo was written once


def test_no_demo(start: type[UpProcess], state: Path) -> None:
    ports = Ports()
    up = start(ports, "--no-demo")
    banner = up.wait_for_banner()
    assert "demo:" not in banner
    assert request(ports.listen, path="/")[0] == 404  # no route
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", ports.demo), 2),
    ):
        pass
    assert up.stop() == 0
    assert_all_gone(up)
    with open_store(store_url(state)) as store:
        assert store.current_rev() == 0


def test_a_child_that_dies_stops_everything(start: type[UpProcess]) -> None:
    up = start(Ports())
    up.wait_for_banner()
    core = next(p for p in up.children if p.cmdline()[3] == "core")
    core.kill()
    assert up.wait() == 1
    assert_all_gone(up)
    output = up.output
    assert "the core stopped unexpectedly (killed by SIGKILL); its last lines:" in output
    assert "  core | " in output  # its last lines, shown again
    assert output.rstrip().splitlines()[-1] == (
        "minirouter: the core stopped (killed by SIGKILL), so `up` stopped the control plane"
    )


# -- errors before anything starts (in-process: nothing is spawned) -------------------------------


def run_up(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["up", *args], env=env, prog_name="minirouter")
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


def test_port_in_use_is_one_line_and_writes_nothing(state: Path) -> None:
    ports = Ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.admin))
        taken.listen()
        code, err = run_up(*ports.args(), env={"XDG_STATE_HOME": str(state)})
    assert code == 1
    assert err == (
        f"minirouter: cannot listen on 127.0.0.1:{ports.admin} (metrics, --admin): "
        "Address already in use\n"
    )
    with open_store(store_url(state)) as store:
        assert store.current_rev() == 0 and store.users() == []


def test_demo_port_in_use_is_one_line(state: Path) -> None:
    ports = Ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.demo))
        taken.listen()
        code, err = run_up(*ports.args(), env={"XDG_STATE_HOME": str(state)})
    assert code == 1
    assert err.startswith(
        f"minirouter: cannot serve the demo upstream on 127.0.0.1:{ports.demo}: "
        "Address already in use"
    )
    assert len(err.splitlines()) == 1
    with open_store(store_url(state)) as store:
        assert store.current_rev() == 0


def test_unreachable_store_is_one_line(closed_url: str) -> None:
    code, err = run_up(*Ports().args(), "--store", closed_url)
    assert code == 1
    assert err == f"minirouter: cannot reach the config store at {closed_url}: Connection refused\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--listen", "127.0.0.1:7000", "--admin", "127.0.0.1:7000"), "same address"),
        (("--control", "127.0.0.1:0"), "give a port"),
        (("--listen", "nope"), "Invalid value for '--listen'"),
    ],
)
def test_usage_errors(args: tuple[str, ...], message: str, state: Path) -> None:
    code, err = run_up(*args, env={"XDG_STATE_HOME": str(state)})
    assert code == 2
    assert message in err
