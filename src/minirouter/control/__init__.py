"""The control plane: the REST API (and later the GUI) over the config store.

    app = create_app(ControlSettings("sqlite:///var/lib/minirouter/store.db"))
    serve("redis://localhost:6379/0", "127.0.0.1", 5000)      # on waitress, until SIGTERM

`accounts` (users, tokens, password hashing) needs no Flask, so the CLI can import it without
the `control` extra: Flask and waitress are imported only when `create_app` or `serve` is
called. This package never imports `minirouter.core`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .settings import ControlSettings

if TYPE_CHECKING:
    from flask import Flask

    from minirouter.store import Store

__all__ = ["ControlSettings", "create_app", "serve"]


def create_app(settings: ControlSettings, store: Store | None = None) -> Flask:
    """The control-plane Flask app; see `minirouter.control.app.create_app`."""
    from .app import create_app as _create_app

    return _create_app(settings, store)


def serve(
    store_url: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    threads: int = 8,
    settings: ControlSettings | None = None,
    ready: Callable[[str, int], Any] | None = None,
) -> None:
    """Serve the control plane on waitress until SIGTERM / SIGINT; see `server.serve`."""
    from .server import serve as _serve

    _serve(store_url, host, port, threads=threads, settings=settings, ready=ready)
