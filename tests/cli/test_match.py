"""`minirouter match`: the winner and why the others lost, from the core's own route table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Cli

Write = Callable[..., Path]

CONFIG = {
    "upstreams": [{"id": "api", "targets": ["127.0.0.1:9001"]}],
    "routes": [
        {"id": "any", "path": "/", "upstream": "api"},
        {"id": "v1", "hosts": ["api.example.com"], "path": "/v1/", "upstream": "api", "strip_prefix": True},
        {"id": "wild", "hosts": ["*.example.com"], "path": "/v1/", "upstream": "api"},
        {"id": "canary", "hosts": ["api.example.com"], "path": "/v1/", "headers": {"X-Canary": "1"}, "priority": 5, "upstream": "api"},
        {"id": "posts", "path": "/v1/", "methods": ["POST"], "priority": 9, "upstream": "api"},
        {"id": "off", "path": "/", "priority": 100, "upstream": "api", "enabled": False},
        {"id": "moved", "hosts": ["old.example.com"], "path": "/", "redirect": {"to": "https://new.example.com$path", "code": 301}},
    ],
}  # fmt: skip


@pytest.fixture
def routed(cli: Cli, write: Write) -> Cli:
    cli.ok("apply", "-f", str(write(CONFIG)), "--yes")
    return cli


def test_winner_and_losers(routed: Cli) -> None:
    out = routed.ok("match", "--host", "API.example.com:8080", "--path", "/v1/users?x=1").stdout
    lines = out.splitlines()
    assert lines[0] == "v1 wins: forwards /users to upstream api."
    assert lines[2].split() == ["ROUTE", "MATCHES", "RESULT"]
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines[3:]}
    assert rows["v1"] == ["yes", "winner"]
    assert rows["wild"][0] == "yes" and "host" in rows["wild"][1]
    assert rows["any"][0] == "yes"
    assert rows["canary"][0] == "no" and "header" in rows["canary"][1].lower()
    assert rows["posts"][0] == "no" and "method" in rows["posts"][1].lower()
    assert rows["moved"] == ["no", "host does not match"]
    assert rows["off"] == ["no", "disabled"]
    # Winner first, then the other matching routes in precedence order.
    assert [line.split()[0] for line in lines[3:6]] == ["v1", "wild", "any"]


def test_headers_and_methods(routed: Cli) -> None:
    header = routed.ok(
        "match", "--host", "api.example.com", "--path", "/v1/x", "--header", "x-canary=1"
    )
    assert header.stdout.startswith("canary wins")
    post = routed.ok("match", "--host", "a.b", "--path", "/v1/x", "--method", "post")
    assert post.stdout.startswith("posts wins")


def test_redirect(routed: Cli) -> None:
    out = routed.ok("match", "--host", "old.example.com", "--path", "/a").stdout
    assert out.startswith("moved wins: redirects (301) to https://new.example.com$path.")


def test_json(routed: Cli) -> None:
    data = routed.json("match", "--host", "api.example.com", "--path", "/v1/users")
    assert data["rev"] == 1
    assert (data["route"], data["upstream"], data["path"], data["redirect"]) == (
        "v1",
        "api",
        "/users",
        None,
    )
    assert data["candidates"][0] == {"route": "v1", "matched": True, "reason": "winner"}
    assert {c["route"] for c in data["candidates"]} == {r["id"] for r in CONFIG["routes"]}


def test_no_route(cli: Cli, write: Write) -> None:
    cli.ok(
        "apply",
        "-f",
        str(write({"upstreams": CONFIG["upstreams"], "routes": CONFIG["routes"][1:2]})),
        "--yes",
    )
    out = cli.ok("match", "--host", "other.org", "--path", "/v1/").stdout
    assert out.splitlines()[0] == "No route matches: the router answers 404."
    assert out.splitlines()[3].split(None, 2) == ["v1", "no", "host does not match"]
    data = cli.json("match", "--host", "other.org", "--path", "/")
    assert data["route"] is None and data["path"] is None


def test_empty_store(cli: Cli) -> None:
    out = cli.ok("match", "--host", "a", "--path", "/").stdout
    assert out == "No route matches: the router answers 404.\n(no routes stored, revision 0)\n"


def test_many_non_matching_routes_are_cut_unless_all(cli: Cli, write: Write) -> None:
    routes = [{"id": f"r{i:02d}", "path": f"/r{i}/", "upstream": "api"} for i in range(30)]
    cli.ok("apply", "-f", str(write({"upstreams": CONFIG["upstreams"], "routes": routes})), "--yes")
    out = cli.ok("match", "--host", "a", "--path", "/nothing").stdout
    assert out.rstrip().endswith("... and 10 more routes that do not match (--all lists them).")
    assert len(cli.ok("match", "--host", "a", "--path", "/x", "--all").stdout.splitlines()) == 33


def test_usage(cli: Cli) -> None:
    cli.fails("match", "--path", "/", code=2)
    cli.fails("match", "--host", "a", "--path", "/", "--header", "nonsense", code=2)
