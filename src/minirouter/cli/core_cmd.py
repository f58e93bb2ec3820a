"""`minirouter core`: run the data plane."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from minirouter.cli import main
from minirouter.config import CoreSettings, Limits, parse_address, parse_size


def _address(_ctx: click.Context, _param: click.Parameter, value: object) -> object:
    if value is None:
        return None
    try:
        if isinstance(value, tuple):
            return [parse_address(v) for v in value]
        return parse_address(str(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _size(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _default_snapshot(listen: list[tuple[str, int]]) -> Path:
    """One file per core on a host: cores listening on different ports keep their own."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    host, port = listen[0]
    return base / "minirouter" / f"core-{host.replace(':', '_')}-{port}.json"


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML/JSON file of upstreams and routes; reloaded on SIGHUP or when it changes.",
)
@click.option(
    "--store",
    "store_url",
    help="Follow this config store (redis://..., sqlite:///...) instead of a file.",
)
@click.option(
    "--snapshot",
    "snapshot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to keep the last config applied from the store "
    "(default: next to the embedded store, per listen address).",
)
@click.option(
    "--listen",
    multiple=True,
    default=("127.0.0.1:8080",),
    show_default=True,
    callback=_address,
    help="HOST:PORT to serve HTTP on (repeatable).",
)
@click.option(
    "--listen-tls",
    multiple=True,
    callback=_address,
    help="HOST:PORT to serve HTTPS on (repeatable); certificates come from the config by SNI.",
)
@click.option("--admin", callback=_address, help="HOST:PORT for /healthz and /metrics.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option(
    "--access-log", type=click.Choice(["text", "json", "off"]), default="text", show_default=True
)
@click.option("--access-log-file", type=click.Path(dir_okay=False), help="Default: stdout.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--max-body-size", default="1m", show_default=True, callback=_size, help="0 = unlimited."
)
@click.option("--max-request-line", type=click.IntRange(64), default=8192, show_default=True)
@click.option("--max-header-size", type=click.IntRange(256), default=32768, show_default=True)
@click.option("--max-headers", type=click.IntRange(1), default=100, show_default=True)
@click.option("--header-timeout", type=click.FloatRange(0.001), default=60.0, show_default=True)
@click.option("--keepalive-timeout", type=click.FloatRange(0.001), default=75.0, show_default=True)
@click.option("--body-timeout", type=click.FloatRange(0.001), default=60.0, show_default=True)
@click.option("--send-timeout", type=click.FloatRange(0.001), default=60.0, show_default=True)
@click.option(
    "--max-connections",
    type=click.IntRange(0),
    default=1024,
    show_default=True,
    help="Client connections per worker; beyond it idle keep-alive connections are closed, "
    "else new ones get 503. 0 = unlimited.",
)
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=30.0, show_default=True)
def core(
    config_path: Path | None,
    store_url: str | None,
    snapshot_path: Path | None,
    listen: list[tuple[str, int]],
    listen_tls: list[tuple[str, int]],
    admin: tuple[str, int] | None,
    workers: int,
    access_log: str,
    access_log_file: str | None,
    log_level: str,
    max_body_size: int,
    max_request_line: int,
    max_header_size: int,
    max_headers: int,
    header_timeout: float,
    keepalive_timeout: float,
    body_timeout: float,
    send_timeout: float,
    max_connections: int,
    shutdown_timeout: float,
) -> None:
    """Run the data plane: proxy HTTP traffic by the routes in --config."""
    from minirouter.core.server import run

    if (config_path is None) == (store_url is None):
        raise click.UsageError("give exactly one of --config FILE and --store URL")
    if store_url is not None and snapshot_path is None:
        snapshot_path = _default_snapshot(listen)
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    settings = CoreSettings(
        config_path=config_path,
        store_url=store_url,
        snapshot_path=snapshot_path,
        listen=list(listen),
        listen_tls=list(listen_tls),
        admin=admin,
        workers=workers,
        access_log=access_log,
        access_log_file=access_log_file,
        log_level=log_level,
        shutdown_timeout=shutdown_timeout,
        limits=Limits(
            max_body_size=max_body_size,
            max_request_line=max_request_line,
            max_header_size=max_header_size,
            max_headers=max_headers,
            header_timeout=header_timeout,
            keepalive_timeout=keepalive_timeout,
            body_timeout=body_timeout,
            send_timeout=send_timeout,
            max_connections=max_connections,
        ),
    )
    sys.exit(run(settings))
