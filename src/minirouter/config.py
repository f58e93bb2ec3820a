"""Settings for each process: CLI flags > env MINIROUTER_* > defaults.

The defaults follow nginx where nginx has an equivalent (client_max_body_size 1m,
large_client_header_buffers 4 8k, client_header_timeout 60s, keepalive_timeout 75s).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str | int) -> int:
    """'1m' -> 1048576; plain integers are bytes; 0 means unlimited where allowed."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError("size must not be negative")
        return text
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"invalid size {text!r}: use a number of bytes with an optional k, m or g")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'host:port', ':port', '[::1]:port' or 'port' -> (host, port)."""
    text = text.strip()
    if text.isdigit():
        host, port_s = default_host, text
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep or not port_s.isdigit():
            raise ValueError(f"invalid address {text!r}: expected host:port")
        host = host.strip("[]") or default_host
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid port in {text!r}")
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Limits:
    """Per-connection limits of the HTTP listener."""

    max_body_size: int = 1024 * 1024  # 0 = unlimited
    max_request_line: int = 8192
    max_header_size: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    body_timeout: float = 60.0  # between two reads of a request body (client_body_timeout)
    send_timeout: float = 60.0  # a client that reads nothing of our response (send_timeout)
    # Client connections per worker (nginx: worker_connections 512, which also counts the
    # upstream side); beyond it an idle keep-alive connection is closed to make room, else
    # the new one is answered 503 and closed. 0 = unlimited.
    max_connections: int = 1024


@dataclass
class CoreSettings:
    """Everything `minirouter core` needs to run."""

    config_path: Path | None = None
    store_url: str | None = None  # follow a config store instead of a file
    snapshot_path: Path | None = None  # the local copy of the last applied store config
    listen: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", 8080)])
    listen_tls: list[tuple[str, int]] = field(default_factory=list)  # HTTPS, certificates by SNI
    admin: tuple[str, int] | None = None
    workers: int = 1
    access_log: str = "text"  # text | json | off
    access_log_file: str | None = None  # None = stdout
    log_level: str = "info"
    shutdown_timeout: float = 30.0
    reload_poll: float = 1.0
    limits: Limits = field(default_factory=Limits)
    worker_index: int = 0
