"""`minirouter control`: the control plane alone, as an operator runs it (a subprocess on a free
port), and its one-line errors."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from minirouter.cli import main
from minirouter.control.accounts import Accounts
from minirouter.store import open_store
from store.conftest import free_port


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def control(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`minirouter control ARGS` as a subprocess; killed at the end if still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "minirouter", "control", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)  # reads and closes the pipes


def wait_for_openapi(proc: subprocess.Popen[bytes], port: int) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "minirouter control exited"
        with contextlib.suppress(OSError):
            status, body = get(port, "/api/v1/openapi.json")
            if status == 200:
                document: dict[str, object] = json.loads(body)
                return document
        time.sleep(0.05)
    pytest.fail("minirouter control did not answer within 20 s")


def test_serves_the_api_until_sigterm(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'store.db'}"
    with open_store(url) as store:
        token, _ = Accounts(store).create_token("ops", "viewer")
    port = free_port()
    with control("--store", url, "--listen", f"127.0.0.1:{port}", "--threads", "2") as proc:
        document = wait_for_openapi(proc, port)
        assert str(document["openapi"]).startswith("3.")
        status, body = get(port, "/api/v1/routes", {"Authorization": f"Bearer {token}"})
        assert status == 200 and json.loads(body)["items"] == []
        assert get(port, "/api/v1/routes")[0] == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        _, err = proc.communicate(timeout=5)
    assert f"listening on http://127.0.0.1:{port}/api/v1" in err.decode()
    assert "Traceback" not in err.decode()


def test_store_from_the_environment_and_sigint(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'store.db'}"
    port = free_port()
    with control("--listen", f"127.0.0.1:{port}", env={"MINIROUTER_STORE": url}) as proc:
        wait_for_openapi(proc, port)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    assert (tmp_path / "store.db").exists()


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        url = f"sqlite://{tmp_path / 'store.db'}"
        with control("--store", url, "--listen", f"127.0.0.1:{port}") as proc:
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 1
    assert err.decode().splitlines()[-1] == (
        f"minirouter: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in err.decode()


def test_unreachable_store_is_one_line(closed_url: str) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(main, ["control", "--store", closed_url], prog_name="minirouter")
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"minirouter: cannot reach the config store at {closed_url}: Connection refused\n"
    )
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--listen", "nowhere"), "Invalid value for '--listen'"),
        (("--threads", "0"), "Invalid value for '--threads'"),
    ],
)
def test_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(main, ["control", *args], prog_name="minirouter")
    assert result.exit_code == 2
    assert message in result.stderr


def test_unsupported_store_url_is_one_line() -> None:
    result = CliRunner().invoke(
        main, ["control", "--store", "mysql://db/x"], prog_name="minirouter"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("minirouter: unsupported store URL 'mysql://db/x'")
    assert len(result.stderr.splitlines()) == 1
