"""The control plane as a process (waitress), and when the store is down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from flask import Flask

from minirouter.control import ControlSettings, create_app
from minirouter.control.accounts import Accounts
from minirouter.control.app import close_app
from minirouter.control.settings import DEFAULT_MAX_BODY
from minirouter.store import open_store

from .conftest import PREFIX, UPSTREAM, assert_error, free_port


def http(method: str, url: str, token: str, body: object = None) -> tuple[int, Message, bytes]:
    """One request with urllib: status, headers, body (errors too)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def test_serve_on_waitress_until_sigterm(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'store.db'}"
    with open_store(url) as store:
        token, _ = Accounts(store).create_token("ops", "admin")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "minirouter.control.server", url, "127.0.0.1", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        while line and not line.startswith("listening "):
            line = proc.stdout.readline().decode()
        assert line.startswith("listening "), "the server did not start"
        base = f"http://{line.split()[1]}{PREFIX}"
        status, headers, body = http("POST", f"{base}/upstreams", token, UPSTREAM)
        assert status == 201, body
        assert headers["Server"] == "minirouter"
        status, headers, body = http("GET", f"{base}/upstreams/api", token)
        assert status == 200 and json.loads(body) == UPSTREAM and headers["ETag"] == '"1"'
        status, _, body = http("GET", f"{base}/routes", "wrong")
        assert status == 401 and json.loads(body)["error"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    with open_store(url) as store:
        assert store.history()[0].actor == "token:ops"


@pytest.fixture
def down_app() -> Iterator[Flask]:
    """An app on a Redis store nobody listens on."""
    url = f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=0.5&socket_timeout=0.5"
    app = create_app(ControlSettings(url))
    yield app
    close_app(app)


def test_store_down_is_503(down_app: Flask) -> None:
    client = down_app.test_client()
    auth = {"Authorization": "Bearer some-token"}
    for method, path in (
        ("GET", "/routes"),
        ("POST", "/apply"),
        ("GET", "/users"),
        ("GET", "/nodes"),
        ("GET", "/health"),
        ("GET", "/upstreams/api/health"),
    ):
        response = client.open(PREFIX + path, method=method, headers=auth, json={})
        assert_error(response, 503)
        assert response.headers["Retry-After"] == "1"
    login = client.post(f"{PREFIX}/session", json={"name": "a", "password": "b"})
    assert "cannot reach the store" in assert_error(login, 503)["error"]
    # Needs no store: the document.
    assert client.get(f"{PREFIX}/openapi.json").status_code == 200
    # A session cookie while the key cannot be read: 503 rather than a misleading 401.
    client.set_cookie("minirouter_session", "x.y.z")
    assert_error(client.get(f"{PREFIX}/routes"), 503)


def test_configured_secret_key_and_defaults(tmp_path: Path) -> None:
    settings = ControlSettings(f"sqlite://{tmp_path / 's.db'}", secret_key="k" * 32)
    assert settings.max_body_size == DEFAULT_MAX_BODY and not settings.cookie_secure
    app = create_app(settings)
    try:
        assert app.secret_key == "k" * 32
        assert app.config["MAX_CONTENT_LENGTH"] == DEFAULT_MAX_BODY
        assert (
            app.config["SESSION_COOKIE_HTTPONLY"]
            and app.config["SESSION_COOKIE_SAMESITE"] == "Strict"
        )
        with open_store(settings.store_url) as store:
            assert store.shared_secret("control-session-key", "unused") == "unused"  # not stored
    finally:
        close_app(app)
        close_app(app)  # idempotent


def test_a_store_passed_in_stays_open(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 's.db'}"
    with open_store(url) as store:
        app = create_app(ControlSettings(url), store=store)
        close_app(app)
        assert store.current_rev() == 0  # still usable


def test_layering() -> None:
    """accounts and diff need no Flask (the CLI uses them); nothing imports the core."""
    code = (
        "import sys\n"
        "import minirouter.control.accounts, minirouter.control.diff\n"
        "assert 'flask' not in sys.modules, 'flask imported'\n"
        "import minirouter.control.app, minirouter.control.server\n"
        "core = [m for m in sys.modules if m.startswith('minirouter.core')]\n"
        "assert not core, core\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
