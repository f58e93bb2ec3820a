"""Fixtures for the control-plane tests: the app on a real store (both backends), tokens of
every role, and a small client that calls the API as one of them.

Every store is closed at teardown (the app's by `close_app`, the raw ones by their fixture).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from minirouter.control import ControlSettings, accounts, create_app
from minirouter.control.app import ControlState, close_app
from minirouter.store import Store

# The store suite's redis-server fixture (one server for the session, FLUSHALL per test).
from store.conftest import Server, free_port, redis_server

from .pem_material import CERT, KEY

PREFIX = "/api/v1"
ROLES = ("viewer", "editor", "admin")

UPSTREAM = {"id": "api", "targets": ["127.0.0.1:9001"]}
ROUTE = {"id": "r1", "path": "/v1/", "upstream": "api"}
# A real pair: the model checks the certificate, that the key matches it and covers the names.
CERTIFICATE = {"id": "example", "names": ["example.com"], "cert": CERT, "key": KEY}
LISTENER = {"id": "pg", "listen": "127.0.0.1:15432", "upstream": "api"}


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt at a test-suite cost (every stored hash carries its own parameters, so the code
    path is the same); test_passwords.py checks the production parameters."""
    monkeypatch.setattr(accounts, "KDF", accounts.ScryptParams(n=16, r=1, p=1))


@dataclass
class StoreTarget:
    """One backend: its URL, and raw access to what it stores (no minirouter code)."""

    name: str
    url: str
    path: Path | None = None

    def raw_dump(self) -> bytes:
        """Every byte the store holds, for "is this secret stored in clear?" checks."""
        if self.path is not None:
            with contextlib.closing(sqlite3.connect(self.path)) as conn:
                return "\n".join(conn.iterdump()).encode()
        chunks: list[bytes] = []
        with redis.Redis.from_url(self.url) as client:
            for key in sorted(client.keys("*")):
                kind = client.type(key)
                chunks.append(key)
                if kind == b"hash":
                    for name, value in client.hgetall(key).items():
                        chunks += [name, value]
                elif kind == b"string":
                    chunks.append(client.get(key) or b"")
                elif kind == b"stream":
                    for _, fields in client.xrange(key):
                        for name, value in fields.items():
                            chunks += [name, value]
        return b"\n".join(chunks)


@pytest.fixture(params=["sqlite", "redis"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        return StoreTarget("sqlite", f"sqlite://{path}", path)
    server: Server = request.getfixturevalue("redis_server")
    with redis.Redis(port=server.port) as client:
        client.flushall()
    return StoreTarget("redis", f"redis://127.0.0.1:{server.port}/0")


@pytest.fixture
def app(target: StoreTarget) -> Iterator[Flask]:
    application = create_app(ControlSettings(target.url))
    application.testing = True  # errors propagate: a 500 fails the test with its traceback
    yield application
    close_app(application)


@dataclass
class Api:
    """Calls the API through Flask's test client as one identity."""

    app: Flask
    client: FlaskClient
    tokens: dict[str, str] = field(default_factory=dict)  # identity name -> token

    @property
    def state(self) -> ControlState:
        state: ControlState = self.app.extensions["minirouter"]
        return state

    @property
    def store(self) -> Store:
        return self.state.store

    def call(
        self,
        method: str,
        path: str,
        *,
        as_: str | None = "admin",
        json: Any = None,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> TestResponse:
        """`method` `PREFIX + path` as identity `as_` (a role's token; None: no credentials)."""
        sent = dict(headers or {})
        if as_ is not None:
            sent.setdefault("Authorization", f"Bearer {self.tokens[as_]}")
        kwargs: dict[str, Any] = {"headers": sent}
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        if content_type is not None:
            kwargs["content_type"] = content_type
        return self.client.open(PREFIX + path, method=method, **kwargs)

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.call("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> TestResponse:
        return self.call("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> TestResponse:
        return self.call("PUT", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> TestResponse:
        return self.call("DELETE", path, **kw)

    def seed(self) -> int:
        """The baseline config: upstream api, route r1. Returns the revision."""
        assert self.post("/upstreams", UPSTREAM).status_code == 201
        response = self.post("/routes", ROUTE)
        assert response.status_code == 201, response.json
        return self.store.current_rev()


@pytest.fixture
def api(app: Flask) -> Api:
    """The API with one token per role, plus a revoked one ("revoked", was admin)."""
    state: ControlState = app.extensions["minirouter"]
    client = Api(app, app.test_client())
    for role in ROLES:
        client.tokens[role], _ = state.accounts.create_token(f"{role}-token", role)
    client.tokens["revoked"], _ = state.accounts.create_token("old", "admin")
    assert state.accounts.revoke_token("old")
    client.tokens["bad"] = "not-a-token"
    return client


def assert_error(response: TestResponse, status: int, *fields: str) -> dict[str, Any]:
    """`response` is the JSON error `status` naming (at least) `fields`."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    body = response.json
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]
    assert isinstance(body["fields"], dict)
    for name in fields:
        assert name in body["fields"], body
    return body


__all__ = [
    "CERTIFICATE",
    "LISTENER",
    "ROUTE",
    "UPSTREAM",
    "Api",
    "StoreTarget",
    "assert_error",
    "free_port",
    "redis_server",
]
