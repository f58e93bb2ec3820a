"""The config store: one contract (`Store`), two backends.

    open_store("redis://host:6379/0")              Redis, Valkey or Dragonfly (needs redis-py)
    open_store("redis+sentinel://h1:26379,h2:26379/mymaster")
    open_store("sqlite:///var/lib/minirouter/store.db")   embedded, shared by the host's processes
    open_store(default_store_url())                 the single-host default

The Redis backend is imported only when a Redis URL is opened: a router host that uses the
SQLite store needs no redis package.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Change, ChangeRecord, InfoValue, Snapshot, Store, redact_url
from .errors import (
    ConflictError,
    NotFoundError,
    StoreError,
    StoreUnavailable,
    TrimmedError,
    ValidationError,
)

__all__ = [
    "Change",
    "ChangeRecord",
    "ConflictError",
    "InfoValue",
    "NotFoundError",
    "Snapshot",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TrimmedError",
    "ValidationError",
    "default_store_url",
    "open_store",
]

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")


def open_store(url: str) -> Store:
    """Open the store at `url` (see the module docstring); StoreError for a URL it cannot use.

    Redis URLs connect lazily: a store that is down shows as StoreUnavailable on first use.
    """
    scheme = url.partition(":")[0].lower()
    if scheme in _REDIS_SCHEMES:
        try:
            from .redis import RedisStore
        except ImportError as exc:
            raise StoreError(
                f"{redact_url(url)}: the Redis store needs redis-py "
                f"(pip install 'minirouter[redis]'): {exc}"
            ) from None
        return RedisStore(url)
    if scheme == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore.from_url(url)
    raise StoreError(
        f"unsupported store URL {redact_url(url)!r}: expected redis://, rediss://, unix://, "
        "redis+sentinel:// or sqlite:///path"
    )


def default_store_url() -> str:
    """``sqlite:///<state dir>/minirouter/store.db``; state dir: $XDG_STATE_HOME or
    ~/.local/state."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return f"sqlite://{Path(state).absolute() / 'minirouter' / 'store.db'}"
