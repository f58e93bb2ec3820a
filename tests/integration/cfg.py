"""Builders for the YAML config (the DESIGN.md shape), as plain dicts."""

from __future__ import annotations

from typing import Any


def upstream(uid: str, *targets: str | dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": uid, "targets": list(targets), **fields}


def route(rid: str, upstream_id: str | None = None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rid}
    if upstream_id is not None:
        out["upstream"] = upstream_id
    out.update(fields)
    return out


def config(upstreams: list[dict[str, Any]], routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"upstreams": upstreams, "routes": routes}
