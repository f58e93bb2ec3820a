"""The control-plane Flask app: `create_app(settings)`.

One store per app, opened here and closed by `close_app` (also at interpreter exit); every
view reaches it through `control_state()`. The API is the `api` blueprint under ``/api/v1``;
the browser GUI (the `gui` blueprint, at ``/``) goes beside it and uses the same `ControlState`.
"""

from __future__ import annotations

import atexit
import secrets
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import Flask, Request, current_app
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from minirouter.fastpath import RouteTable
from minirouter.model import Route
from minirouter.store import Snapshot, Store, StoreUnavailable, open_store

from . import errors
from .accounts import Accounts
from .settings import ControlSettings

EXTENSION = "minirouter"
SESSION_SECRET = "control-session-key"  # its name in Store.shared_secret


@dataclass
class ControlState:
    """What the views share: the store, the accounts in it, and the route table for match."""

    settings: ControlSettings
    store: Store
    accounts: Accounts
    owns_store: bool = True  # opened by create_app, so closed by close_app
    _table: tuple[int, tuple[Route, ...], RouteTable] | None = field(default=None, repr=False)

    def snapshot(self) -> Snapshot:
        """The config at the current revision, read from the store.

        Not cached across requests on the revision alone: a store restarted empty and written
        again can reach the same revision with other content.
        """
        return self.store.snapshot()

    def route_table(self) -> tuple[int, RouteTable]:
        """The fast path's route table of the current config, and its revision.

        Built again only when the routes changed: the store hands back the same Route objects
        for items it did not see change, so the comparison is mostly identity checks.
        """
        snapshot = self.snapshot()
        routes = snapshot.config.routes
        cached = self._table
        if cached is not None and cached[1] == routes:
            return snapshot.rev, cached[2]
        table = RouteTable(routes)
        self._table = (snapshot.rev, routes, table)
        return snapshot.rev, table


def control_state() -> ControlState:
    """The `ControlState` of the app handling the current request."""
    state: ControlState = current_app.extensions[EXTENSION]
    return state


class _StoreKeyedSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the key fetched from the store on first use.

    The key is generated once per store (`Store.shared_secret`), so every control process on
    one store signs and accepts the same cookies. While the store cannot be reached and no key
    is known yet, cookies are ignored (a null session); logging in then answers 503.
    """

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.secret_key:
            try:
                load_secret_key(app)
            except StoreUnavailable:
                return None
        return super().get_signing_serializer(app)

    def open_session(self, app: Flask, request: Request) -> Any:
        # Flask would look up the key for every request; only cookie-carrying ones need it.
        if request.cookies.get(self.get_cookie_name(app)) is None:
            return self.session_class()
        return super().open_session(app, request)


_key_lock = threading.Lock()


def load_secret_key(app: Flask) -> None:
    """Set `app.secret_key` from the store (generating it there if it has none).

    Raises StoreUnavailable if the store cannot be reached.
    """
    with _key_lock:
        if not app.secret_key:
            state: ControlState = app.extensions[EXTENSION]
            app.secret_key = state.store.shared_secret(SESSION_SECRET, secrets.token_hex(32))


def create_app(settings: ControlSettings, store: Store | None = None) -> Flask:
    """The control-plane app for `settings`: the API under ``/api/v1``.

    Opens the store at `settings.store_url` unless `store` is given (then the caller keeps
    ownership of it: `close_app` leaves it open).
    """
    from .api import api  # the blueprint imports control_state from here
    from .gui import gui  # the browser GUI (same reason)

    app = Flask("minirouter.control")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_size or None,
        SESSION_COOKIE_NAME="minirouter_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.session_lifetime),
        # Sessions are saved when changed only: a request must not extend a login forever.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.session_interface = _StoreKeyedSessions()
    if settings.secret_key:
        app.secret_key = settings.secret_key
    owned = store is None
    if store is None:
        store = open_store(settings.store_url)
    app.extensions[EXTENSION] = ControlState(settings, store, Accounts(store), owns_store=owned)
    if owned:
        # A process that never calls close_app still releases its connections at exit.
        atexit.register(store.close)
    errors.register(app)
    app.register_blueprint(api)
    app.register_blueprint(gui)
    return app


def close_app(app: Flask) -> None:
    """Close the store `create_app` opened for `app` (idempotent)."""
    state: ControlState | None = app.extensions.get(EXTENSION)
    if state is None or not state.owns_store:
        return
    atexit.unregister(state.store.close)
    state.store.close()
    state.owns_store = False
