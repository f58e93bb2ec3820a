"""`minirouter history` and `rollback`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .conftest import BASIC, Cli

Write = Callable[..., Path]


def _three_revisions(cli: Cli, write: Write) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")  # 1
    cli.ok("route", "add", "extra", "--path", "/x/", "--upstream", "web", "--priority", "2")  # 2
    changed = {"routes": [{"id": "extra", "path": "/y/", "upstream": "web"}]}
    cli.ok("apply", "-f", str(write(changed)), "--yes")  # 3


def test_history_shows_each_revision_with_its_diff(cli: Cli, write: Write) -> None:
    _three_revisions(cli, write)
    cli.ok("route", "rm", "site")  # 4
    out = cli.ok("history").stdout
    blocks = out.split("\n\n")
    assert [b.split()[1] for b in blocks] == ["4", "3", "2", "1"]
    assert "by cli:" in blocks[0] and "(1 change)" in blocks[0]
    assert blocks[0].splitlines()[1] == "  - routes/site"
    assert blocks[1].splitlines()[1:] == [
        "  ~ routes/extra",
        '      path: "/x/" -> "/y/"',
        "      priority: 2 -> (default)",
    ]
    assert blocks[2].splitlines()[1:] == [
        "  + routes/extra",
        '      path: "/x/"',
        "      priority: 2",
        '      upstream: "web"',
    ]
    assert "(4 changes)" in blocks[3]
    assert blocks[3].splitlines()[1] == "  + upstreams/api"


def test_limit_and_before(cli: Cli, write: Write) -> None:
    _three_revisions(cli, write)
    assert [b.split()[1] for b in cli.ok("history", "--limit", "2").stdout.split("\n\n")] == [
        "3",
        "2",
    ]
    paged = cli.ok("history", "--limit", "5", "--before", "3").stdout.split("\n\n")
    assert [b.split()[1] for b in paged] == ["2", "1"]
    assert cli.ok("history", "--before", "1").stdout == "No history before revision 1.\n"


def test_history_json(cli: Cli, write: Write) -> None:
    _three_revisions(cli, write)
    records = json.loads(cli.ok("history", "--json", "--limit", "2").stdout)
    assert [(r["rev"], r["kind"], r["id"], r["op"]) for r in records] == [
        (3, "routes", "extra", "put"),
        (2, "routes", "extra", "put"),
    ]
    assert records[0]["before"] == {"id": "extra", "path": "/x/", "upstream": "web", "priority": 2}
    assert records[0]["after"] == {"id": "extra", "path": "/y/", "upstream": "web"}


def test_empty_history(cli: Cli) -> None:
    assert cli.ok("history").stdout == "No history.\n"
    assert cli.json("history") == []


def test_rollback(cli: Cli, write: Write) -> None:
    _three_revisions(cli, write)
    assert cli.ok("rollback", "1").stdout == (
        "Rolled back to revision 1: the config is now revision 4.\n"
    )
    assert [r.id for r in cli.config().routes] == ["api-v1", "site"]
    assert cli.ok("rollback", "4").stdout == (
        "Nothing to roll back: the config is as it was at revision 4.\n"
    )
    assert cli.json("rollback", "3") == {"rev": 5, "rolled_back_to": 3, "changed": True}
    assert next(r for r in cli.config().routes if r.id == "extra").path == "/y/"
    assert "  - routes/extra" in cli.ok("history", "--limit", "2").stdout


def test_rollback_to_nothing(cli: Cli, write: Write) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    cli.ok("rollback", "0")
    assert cli.config().routes == () and cli.config().upstreams == ()


def test_rollback_to_a_future_revision(cli: Cli) -> None:
    err = cli.fails("rollback", "7")
    assert err == "minirouter: revision 7 does not exist (the store is at revision 0)\n"


def test_rollback_usage(cli: Cli) -> None:
    cli.fails("rollback", code=2)
    cli.fails("rollback", "-1", code=2)
    cli.fails("rollback", "x", code=2)
