"""`minirouter nodes` and `minirouter status`: the cores following the store, and the store."""

from __future__ import annotations

import time
from typing import Any

import click

from minirouter.cli import _common, main
from minirouter.model import KINDS
from minirouter.store import InfoValue
from minirouter.store.base import redact_url

from ._common import (
    DISPLAY_KINDS,
    CliError,
    connect,
    echo_json,
    fields_list,
    json_option,
    store_option,
    table,
)


def _age(seconds: float) -> str:
    """``42s``, ``5m``, ``3h12m``, ``2d4h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _number(value: InfoValue | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _epoch(value: InfoValue | None) -> str:
    """A heartbeat's epoch ("" from a core that follows a store without one, or none sent)."""
    return value if isinstance(value, str) else ""


def _state(
    applied: float | None, current: int, node_epoch: str = "", epoch: str = ""
) -> tuple[str, int | None]:
    """("current" | "behind N" | "ahead" | "other history" | "unknown", how many revisions
    behind). A revision names a config only within one history (epoch) of the store."""
    if applied is None:
        return "unknown", None
    if node_epoch != epoch:
        # The store was reset or republished since the core last followed it: its revision
        # numbers say nothing about the config the core serves.
        return "other history", None
    behind = current - int(applied)
    if behind == 0:
        return "current", 0
    if behind > 0:
        return f"behind {behind}", behind
    # The core serves a newer revision than the store has: the store was reset or restored.
    return "ahead (store behind)", behind


@main.command("nodes")
@store_option
@json_option
def nodes_cmd(store_url: str | None, as_json: bool) -> None:
    """List the cores and the revision each serves.

    For every core following the store: its node id, the revision it has applied and
    whether that is the store's current one, uptime, version, pid and listen addresses. A
    core is current when it serves the store's revision of the store's history (epoch): one
    that still follows an earlier history (the store was reset or republished) shows as
    "other history".

    A core reports every 2 s and disappears from the list 10 s after its last report.
    """
    with connect(store_url) as store:
        # Nodes first: a revision made in between then shows as "behind", never "ahead".
        nodes = store.nodes()
        epoch, current = store.head()
    now = time.time()
    rows: list[dict[str, Any]] = []
    for node in nodes:
        applied = _number(node.get("rev"))
        state, behind = _state(applied, current, _epoch(node.get("epoch")), epoch)
        started = _number(node.get("started"))
        seen = _number(node.get("seen"))
        rows.append(
            {
                **node,
                "state": state,
                "behind": behind,
                "current": behind == 0,
                "uptime": now - started if started is not None else None,
                "last_seen": now - seen if seen is not None else None,
            }
        )
    if as_json:
        echo_json({"rev": current, "epoch": epoch, "nodes": rows})
        return
    if not rows:
        click.echo(f"No core reports to this store (revision {current}).")
        return
    headers = ["NODE", "REV", "STATE", "UP", "VERSION", "PID", "LISTEN"]
    with_seen = any(row["last_seen"] is not None for row in rows)
    if with_seen:
        headers.insert(3, "SEEN")
    lines = []
    for row in rows:
        state = row["state"]
        colour = "green" if state == "current" else "yellow" if state != "unknown" else None
        line = [
            str(row["node"]),
            str(row.get("rev", "-")),
            click.style(state, fg=colour),
            _age(row["uptime"]) if row["uptime"] is not None else "-",
            str(row.get("version", "-")),
            str(row.get("pid", "-")),
            str(row.get("listen", "-")),
        ]
        if with_seen:
            line.insert(3, f"{_age(row['last_seen'])} ago" if row["last_seen"] is not None else "-")
        lines.append(line)
    table(headers, lines)
    click.echo(f"store at revision {current}")


@main.command("status")
@store_option
@json_option
def status_cmd(store_url: str | None, as_json: bool) -> None:
    """Show the store: reachable, revision, counts.

    Prints the store URL (without password), whether it answers, its revision, the number
    of items of each kind (and any stored item that is invalid), the cores following it and
    what the backend reports about itself.

    Exits 1 if the store cannot be reached (after printing what is known).
    """
    url = _common.store_url(store_url)
    shown = redact_url(url)
    try:
        with connect(url) as store:
            info = store.info()
            snap = store.snapshot()
            nodes = store.nodes()
    except CliError as exc:
        if as_json:
            echo_json({"url": shown, "reachable": False, "error": exc.format_message()})
        else:
            fields_list([("store", shown), ("reachable", click.style("no", fg="red"))])
        raise
    counts = {kind: len(getattr(snap.config, kind)) for kind in KINDS}
    current = sum(
        1
        for n in nodes
        if _number(n.get("rev")) == snap.rev and _epoch(n.get("epoch")) == snap.epoch
    )
    if as_json:
        echo_json(
            {
                "url": shown,
                "reachable": True,
                "rev": snap.rev,
                "counts": counts,
                "invalid": dict(snap.invalid),
                "nodes": {"total": len(nodes), "current": current},
                "info": {k: v for k, v in info.items() if k != "url"},
            }
        )
        return
    pairs: list[tuple[str, object]] = [
        ("store", shown),
        ("reachable", click.style("yes", fg="green")),
        ("backend", f"{info.get('backend', '?')} ({info.get('server', '?')})"),
        ("revision", snap.rev),
    ]
    pairs += [(kind, counts[kind]) for kind in DISPLAY_KINDS]
    invalid = len(snap.invalid)
    pairs.append(("invalid", click.style(str(invalid), fg="red") if invalid else "0"))
    pairs.append(("nodes", f"{len(nodes)} ({current} current)"))
    skip = {"backend", "server", "url", "rev"}
    pairs += [(str(k), v) for k, v in info.items() if k not in skip]
    fields_list(pairs)
    for key, why in sorted(snap.invalid.items()):
        click.echo(click.style(f"  invalid {key}: {why}", fg="red"))
