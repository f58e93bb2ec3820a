"""Looking at the routers: which route a request would hit, the cores, their live stats."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Response, jsonify

from minirouter.fastpath import Candidate
from minirouter.store import Store

from .app import control_state
from .auth import require
from .bodies import int_arg, read_object, type_name
from .errors import ApiError
from .health import fleet_health, parse_health, target_health

bp = Blueprint("fleet", __name__)

# Latency quantiles cannot be added up across cores: the series shows the worst core's.
_MAX_COUNTERS = frozenset({"p50", "p99"})
STATS_WINDOW = 60  # seconds shown when no ?since= is given
MAX_HEADER_LENGTH = 8192


def _check_match_body(body: dict[str, Any]) -> tuple[str, str, str, dict[str, str]]:
    fields: dict[str, str] = {}
    host, path = body.get("host"), body.get("path")
    method, headers = body.get("method", "GET"), body.get("headers", {})
    if not isinstance(host, str):
        fields["host"] = f"expected a string, got {type_name(host)}"
    if not isinstance(path, str) or not path.startswith("/"):
        fields["path"] = "expected a path starting with /"
    if not isinstance(method, str) or not method.isascii() or not method.isalpha():
        fields["method"] = "expected an HTTP method such as GET"
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= MAX_HEADER_LENGTH
        for k, v in headers.items()
    ):
        fields["headers"] = "expected an object of header names to string values"
    for name in sorted(set(body) - {"host", "path", "method", "headers"}):
        fields[name] = "unknown field; expected host, path, method, headers"
    if fields:
        raise ApiError(422, "validation failed", fields)
    assert isinstance(host, str) and isinstance(path, str) and isinstance(method, str)
    assert isinstance(headers, dict)
    return host, path.partition("?")[0], method.upper(), {k.lower(): v for k, v in headers.items()}


def _candidates(candidates: Iterable[Candidate]) -> list[dict[str, Any]]:
    return [{"route": c.route_id, "matched": c.matched, "reason": c.reason} for c in candidates]


@bp.post("/match")
@require("viewer")
def match() -> Response:
    """Which route a request would hit, and why each other route did not (the core's code)."""
    host, path, method, headers = _check_match_body(read_object())
    rev, table = control_state().route_table()
    explanation = table.explain(host, path, method, headers)
    winner = explanation.winner
    route = winner.route if winner is not None else None
    redirect = route.redirect if route is not None else None
    return jsonify(
        {
            "rev": rev,
            "route": route.id if route is not None else None,
            "path": winner.path if winner is not None else None,
            "upstream": route.upstream if route is not None else None,
            "redirect": {"to": redirect.to, "code": redirect.code} if redirect else None,
            "candidates": _candidates(explanation.candidates),
        }
    )


def describe_nodes(store: Store) -> tuple[int, list[dict[str, Any]]]:
    """The store's revision, and every core with a live heartbeat: its applied revision and
    whether that is current (the store's revision of the store's history: its epoch too)."""
    infos = store.nodes()  # first: a revision made in between shows as behind, never ahead
    epoch, current = store.head()
    fleet: list[dict[str, Any]] = []
    for info in infos:
        node: dict[str, Any] = dict(info)
        rev = node.get("rev")
        node["rev"] = rev if isinstance(rev, int) else None
        node_epoch = node.get("epoch")
        node["current"] = (
            rev == current and (node_epoch if isinstance(node_epoch, str) else "") == epoch
        )
        seen = node.get("seen")  # the heartbeat's own time, when the core sends it
        node["last_seen"] = seen if isinstance(seen, int | float) else None
        # The core sends it as JSON text (heartbeat values are flat); parsed here.
        node["health"] = parse_health(node.get("health"))
        fleet.append(node)
    return current, fleet


@bp.get("/nodes")
@require("viewer")
def nodes() -> Response:
    """Every core with a live heartbeat: its applied revision and whether that is current
    (the store's revision of the store's history: its epoch too)."""
    current, fleet = describe_nodes(control_state().store)
    return jsonify({"rev": current, "nodes": fleet})


@bp.get("/health")
@require("viewer")
def health() -> Response:
    """Every upstream's targets with their health, aggregated over the live cores."""
    state = control_state()
    snapshot = state.snapshot()
    nodes = state.store.nodes()
    return jsonify(
        {
            "rev": snapshot.rev,
            "cores": len(nodes),
            "upstreams": fleet_health(snapshot.config.upstreams, nodes),
        }
    )


@bp.get("/upstreams/<item_id>/health")
@require("viewer")
def upstream_health(item_id: str) -> Response:
    """One upstream's targets with their health, aggregated over the live cores."""
    state = control_state()
    snapshot = state.snapshot()
    found = next((u for u in snapshot.config.upstreams if u.id == item_id), None)
    if found is None:
        raise ApiError(404, f"upstreams/{item_id} does not exist")
    nodes = state.store.nodes()
    return jsonify(
        {
            "rev": snapshot.rev,
            "upstream": item_id,
            "cores": len(nodes),
            "targets": target_health(found, nodes),
        }
    )


def _add(into: dict[str, float], counters: dict[str, float]) -> None:
    for name, value in counters.items():
        if name in _MAX_COUNTERS:
            into[name] = max(into.get(name, value), value)
        else:
            into[name] = into.get(name, 0.0) + value


@bp.get("/stats")
@require("viewer")
def stats() -> Response:
    """Per-second counters since ``?since=`` (a Unix second; default the last minute):
    per route and in total, summed over the cores (p50/p99: the highest core's)."""
    now = int(time.time())
    since = int_arg("since", now - STATS_WINDOW, 0)
    assert since is not None
    per_route: dict[str, dict[int, dict[str, float]]] = {}
    total: dict[int, dict[str, float]] = {}
    for entry in control_state().store.stats(since):
        second, counters = int(entry["second"]), entry["counters"]
        _add(per_route.setdefault(str(entry["route"]), {}).setdefault(second, {}), counters)
        _add(total.setdefault(second, {}), counters)

    def series(by_second: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
        return [{"second": s, **by_second[s]} for s in sorted(by_second)]

    return jsonify(
        {
            "since": since,
            "now": now,
            "routes": {route: series(seconds) for route, seconds in sorted(per_route.items())},
            "total": series(total),
        }
    )
