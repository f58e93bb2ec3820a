"""Serving the control plane on waitress, a production WSGI server (pure Python, threaded)."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from waitress.server import create_server

from .app import close_app, create_app
from .settings import ControlSettings

log = logging.getLogger("minirouter.control")

# The data plane's limits, applied to waitress (whose own defaults are looser: 256 KiB of
# headers, 120 s of inactivity, 1 GiB bodies). Beyond CONNECTION_LIMIT waitress stops
# accepting until a connection closes: new clients wait in the listen backlog.
CONNECTION_LIMIT = 100
MAX_HEADER_SIZE = 32 * 1024  # bytes of request line and headers (431 beyond)
CHANNEL_TIMEOUT = 60  # seconds a connection may stay silent, mid-request or idle


def _stop(signum: int, frame: FrameType | None) -> None:
    # waitress's loop ends cleanly on SystemExit: it finishes the requests in progress.
    raise SystemExit(0)


def serve(
    store_url: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    threads: int = 8,
    settings: ControlSettings | None = None,
    ready: Callable[[str, int], Any] | None = None,
) -> None:
    """Serve the control plane for the store at `store_url` on host:port until SIGTERM or
    SIGINT; returns after the store is closed.

    `settings` gives the other options (its `store_url` is replaced by this one); `ready` is
    called with the address actually bound (port 0 picks a free one) once it listens.
    """
    if settings is None:
        settings = ControlSettings(store_url)
    elif settings.store_url != store_url:
        settings = dataclasses.replace(settings, store_url=store_url)
    app = create_app(settings)
    try:
        server: Any = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="minirouter",
            expose_tracebacks=False,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=CHANNEL_TIMEOUT,
            cleanup_interval=min(30, CHANNEL_TIMEOUT),
            max_request_header_size=MAX_HEADER_SIZE,
            # Flask refuses a larger body with its JSON 413; waitress stops reading past it.
            max_request_body_size=(settings.max_body_size or 1 << 30) + 1,
        )
        bound_host, bound_port = server.socket.getsockname()[:2]
        log.info("minirouter control listening on http://%s:%d/api/v1", bound_host, bound_port)
        if ready is not None:
            ready(bound_host, bound_port)
        # Signal handlers can only be set from the main thread (an embedding may run us in
        # another one, and stop us its own way).
        main = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGTERM, signal.SIGINT) if main else ()
        previous = {sig: signal.signal(sig, _stop) for sig in signals}
        try:
            server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.close()
    finally:
        close_app(app)


def main(argv: list[str] | None = None) -> None:
    """``python -m minirouter.control.server STORE_URL [HOST] [PORT]``: for tests and debugging;
    operators use ``minirouter control``."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 3:
        sys.exit("usage: python -m minirouter.control.server STORE_URL [HOST] [PORT]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host = args[1] if len(args) > 1 else "127.0.0.1"
    port = int(args[2]) if len(args) > 2 else 5000
    serve(args[0], host, port, ready=lambda h, p: print(f"listening {h}:{p}", flush=True))


if __name__ == "__main__":
    main()
