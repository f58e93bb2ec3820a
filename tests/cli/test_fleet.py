"""`minirouter nodes` and `status`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from .conftest import BASIC, Cli

Write = Callable[..., Path]


def _heartbeat(cli: Cli, node: str, rev: int, started_ago: float, epoch: str | None = None) -> None:
    """A core's heartbeat; by default it follows the store's current history (epoch)."""
    store = cli.store()
    info = {
        "rev": rev,
        "epoch": store.head()[0] if epoch is None else epoch,
        "version": "0.1.0",
        "started": time.time() - started_ago,
        "pid": 4242,
        "listen": "127.0.0.1:8080",
        "worker": 0,
        "host": "box",
    }
    store.heartbeat(node, info, 30)


def test_nodes(cli: Cli, write: Write) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    cli.ok("route", "rm", "site")
    _heartbeat(cli, "box-1-w0", 2, 3700)
    _heartbeat(cli, "box-2-w0", 1, 42)
    lines = cli.ok("nodes").stdout.splitlines()
    assert lines[0].split() == ["NODE", "REV", "STATE", "UP", "VERSION", "PID", "LISTEN"]
    assert lines[1].split() == [
        "box-1-w0",
        "2",
        "current",
        "1h01m",
        "0.1.0",
        "4242",
        "127.0.0.1:8080",
    ]
    assert lines[2].split() == [
        "box-2-w0",
        "1",
        "behind",
        "1",
        "42s",
        "0.1.0",
        "4242",
        "127.0.0.1:8080",
    ]
    assert lines[3] == "store at revision 2"


def test_nodes_json(cli: Cli) -> None:
    _heartbeat(cli, "n1", 0, 1)
    data = cli.json("nodes")
    assert data["rev"] == 0
    [node] = data["nodes"]
    assert (node["node"], node["rev"], node["state"], node["current"], node["behind"]) == (
        "n1", 0, "current", True, 0
    )  # fmt: skip
    assert 0 < node["uptime"] < 60


def test_a_node_ahead_of_the_store(cli: Cli) -> None:
    _heartbeat(cli, "n1", 9, 1)
    assert "ahead (store behind)" in cli.ok("nodes").stdout


def test_a_node_of_another_history_is_not_current(cli: Cli, write: Write) -> None:
    """Same revision number, but the core follows an earlier history of the store (it was
    reset or republished since): not current, in `nodes` and in `status`."""
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    epoch, rev = cli.store().head()
    assert epoch
    _heartbeat(cli, "old", rev, 5, epoch="an-earlier-history")
    _heartbeat(cli, "new", rev, 5)
    data = cli.json("nodes")
    assert data["epoch"] == epoch
    states = {n["node"]: (n["state"], n["current"], n["behind"]) for n in data["nodes"]}
    assert states == {"old": ("other history", False, None), "new": ("current", True, 0)}
    lines = cli.ok("nodes").stdout.splitlines()
    assert lines[1].split()[:3] == ["new", str(rev), "current"]
    assert lines[2].split()[:4] == ["old", str(rev), "other", "history"]
    assert cli.json("status")["nodes"] == {"total": 2, "current": 1}


def test_no_nodes(cli: Cli) -> None:
    assert cli.ok("nodes").stdout == "No core reports to this store (revision 0).\n"


def test_status(cli: Cli, write: Write) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    _heartbeat(cli, "n1", 1, 1)
    fields = dict(
        (line.split(":", 1)[0], line.split(":", 1)[1].strip())
        for line in cli.ok("status").stdout.splitlines()
        if not line.startswith(" ")
    )
    assert fields["reachable"] == "yes"
    assert fields["revision"] == "1"
    assert (fields["upstreams"], fields["routes"], fields["listeners"]) == ("2", "2", "0")
    assert fields["invalid"] == "0"
    assert fields["nodes"] == "1 (1 current)"
    assert fields["backend"].startswith(cli.backend.name)
    assert fields["store"] == cli.url


def test_status_reports_invalid_items(cli: Cli, write: Write) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    cli.backend.raw_put("routes", "bad", '{"id": "bad"}')
    out = cli.ok("status").stdout
    assert "invalid:      1" in out
    assert "  invalid routes/bad: upstream: one of upstream or redirect is required" in out
    data = cli.json("status")
    assert data["invalid"] == {"routes/bad": "upstream: one of upstream or redirect is required"}


def test_status_json(cli: Cli) -> None:
    data = cli.json("status")
    assert data["reachable"] is True
    assert data["rev"] == 0
    assert data["counts"] == {"routes": 0, "upstreams": 0, "listeners": 0, "certificates": 0}
    assert data["nodes"] == {"total": 0, "current": 0}
    assert data["info"]["backend"] == cli.backend.name


def test_status_hides_the_password_and_says_unreachable(cli: Cli, closed_url: str) -> None:
    url = closed_url.replace("redis://", "redis://admin:s3cret@")
    result = cli("status", "--store", url)
    assert result.exit_code == 1
    assert "s3cret" not in result.output
    assert "reachable: no" in result.stdout
    assert result.stderr.startswith(
        "minirouter: cannot reach the config store at redis://admin:***@"
    )
    data = json.loads(cli("status", "--json", "--store", url).stdout)
    assert data["reachable"] is False and "s3cret" not in json.dumps(data)
