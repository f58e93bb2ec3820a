"""Small builders shared by the store tests."""

from __future__ import annotations

from functools import cache
from typing import Any

from minirouter.model import Route, Upstream, from_dict
from minirouter.store import Change, ChangeRecord
from tls.certs import shared_ca


def upstream(uid: str, port: int = 9001, **extra: Any) -> Upstream:
    return from_dict("upstreams", {"id": uid, "targets": [f"127.0.0.1:{port}"], **extra})


def route(rid: str, upstream_id: str = "api", path: str | None = None, **extra: Any) -> Route:
    return from_dict(
        "routes", {"id": rid, "path": path or f"/{rid}/", "upstream": upstream_id, **extra}
    )


def put(*items: Upstream | Route) -> list[Change]:
    return [Change.put(item) for item in items]


def strip_time(records: list[ChangeRecord]) -> list[tuple[Any, ...]]:
    """Records without their timestamps, for comparing two histories."""
    return [(r.rev, r.seq, r.kind, r.id, r.op, r.before, r.after, r.actor) for r in records]


@cache
def certificate(name: str = "example.com") -> tuple[str, str]:
    """(certificate, private key) in PEM for `name` and ``*.name``, from the tests' CA (the
    model checks that a certificate item holds a real one)."""
    pair = shared_ca().issue(name, f"*.{name}")
    return pair.cert, pair.key
