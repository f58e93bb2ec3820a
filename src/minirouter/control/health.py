"""Upstream targets' health as the cores report it, aggregated over the live fleet.

Each core (one per worker) publishes in its heartbeat ``health``: a JSON string
``{"<upstream id>": {"host:port": true | false}}``, true when the target is available to it
(active checks pass and it is not passively ejected). Every core keeps its own view, so a
target can be up on one core and down on another; this module says, per configured target,
on how many of the live cores it is up or down, and which cores see it down.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypedDict

from minirouter.model import Upstream

State = Literal["up", "down", "partial", "unknown"]


class TargetHealth(TypedDict):
    """One target over the fleet: "unknown" when no live core reports it."""

    address: str
    state: State
    up: int  # cores that report it available
    down: int  # cores that report it unavailable
    cores: int  # live cores in all
    down_on: list[str]  # the node ids of the cores that report it down
    text: str  # for people: "up on 3/3 cores", "down on 1/3 cores (web1-w0)", "no data"


def parse_health(value: Any) -> dict[str, dict[str, bool]] | None:
    """A heartbeat's ``health`` field as a mapping, or None when absent or malformed.

    Accepts the JSON text the cores write (and an already parsed mapping); anything that is
    not ``{str: {str: bool}}`` is dropped entry by entry rather than failing the whole node.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    parsed: dict[str, dict[str, bool]] = {}
    for upstream_id, targets in value.items():
        if isinstance(upstream_id, str) and isinstance(targets, dict):
            parsed[upstream_id] = {
                address: up
                for address, up in targets.items()
                if isinstance(address, str) and isinstance(up, bool)
            }
    return parsed


def _describe(state: State, up: int, down: int, cores: int, down_on: list[str]) -> str:
    if state == "unknown":
        return "no data"
    plural = "" if cores == 1 else "s"
    if state == "up":
        return f"up on {up}/{cores} core{plural}"
    return f"down on {down}/{cores} core{plural} ({', '.join(down_on)})"


def target_health(upstream: Upstream, nodes: Iterable[Mapping[str, Any]]) -> list[TargetHealth]:
    """Each configured target of `upstream`, in config order, aggregated over `nodes`
    (the store's live heartbeats). A core that does not report the target (e.g. still at an
    older revision) counts as neither up nor down."""
    fleet = [(str(node.get("node", "")), parse_health(node.get("health"))) for node in nodes]
    result: list[TargetHealth] = []
    for target in upstream.targets:
        down_on: list[str] = []
        up = 0
        for node_id, health in fleet:
            seen = (health or {}).get(upstream.id, {}).get(target.address)
            if seen is True:
                up += 1
            elif seen is False:
                down_on.append(node_id)
        down = len(down_on)
        state: State = (
            "unknown" if up + down == 0 else "up" if down == 0 else "down" if up == 0 else "partial"
        )
        result.append(
            {
                "address": target.address,
                "state": state,
                "up": up,
                "down": down,
                "cores": len(fleet),
                "down_on": sorted(down_on),
                "text": _describe(state, up, down, len(fleet), sorted(down_on)),
            }
        )
    return result


def fleet_health(
    upstreams: Iterable[Upstream], nodes: Iterable[Mapping[str, Any]]
) -> dict[str, list[TargetHealth]]:
    """`target_health` of every upstream, by upstream id."""
    fleet = list(nodes)
    return {upstream.id: target_health(upstream, fleet) for upstream in upstreams}
