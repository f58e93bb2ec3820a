"""Which route wins: host (exact / wildcard / any, case, port, trailing dot), path (exact / prefix /
regex with rewrite, strip_prefix), method, header conditions, priority, id tie-break; redirects.

One core serves the whole module; every route forwards to its own echo upstream whose name is the
route id, so the echo body tells which route won.
"""

from __future__ import annotations

from typing import Any

import pytest

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import CoreProcess
from .httpclient import RawConnection, raw_exchange, raw_request_bytes, request
from .upstreams import HttpUpstream, UpstreamSet

ROUTES: list[dict[str, Any]] = [
    # host specificity
    route("h-exact", hosts=["api.example.com"], path="/"),
    route("h-wild", hosts=["*.example.com"], path="/"),
    route("h-wild-long", hosts=["*.deep.example.com"], path="/"),
    route("h-any", path="/any/"),
    # path specificity (all on paths.test)
    route("p-exact", hosts=["paths.test"], path="/exact", path_type="exact"),
    route("p-prefix-short", hosts=["paths.test"], path="/p/"),
    route("p-prefix-long", hosts=["paths.test"], path="/p/longer/"),
    route("p-regex-loses", hosts=["paths.test"], path="/p/.*", path_type="regex"),
    route(
        "p-regex",
        hosts=["paths.test"],
        path=r"/items/([0-9]+)/(detail|summary)",
        path_type="regex",
        rewrite="/v2/$2/item-$1",
    ),
    route("p-strip", hosts=["paths.test"], path="/strip/", strip_prefix=True),
    # methods
    route("m-get", hosts=["methods.test"], path="/m", methods=["GET"]),
    route("m-write", hosts=["methods.test"], path="/m", methods=["POST", "PUT"]),
    # header conditions: same host/path/priority, the id breaks the tie
    route("hdr-canary", hosts=["headers.test"], path="/", headers={"X-Canary": "1"}),
    route("hdr-default", hosts=["headers.test"], path="/"),
    # priority beats specificity
    route("prio-low", hosts=["prio.test"], path="/api/v1/"),
    route("prio-high", hosts=["prio.test"], path="/", priority=10),
    # identical conditions: the smaller id wins whatever the order in the file
    route("tie-b", hosts=["tie.test"], path="/"),
    route("tie-a", hosts=["tie.test"], path="/"),
    # disabled routes never match
    route("disabled", hosts=["disabled.test"], path="/", enabled=False),
]

REDIRECTS: list[dict[str, Any]] = [
    route(
        "redir-regex",
        hosts=["redir.test"],
        path="/old/(.*)",
        path_type="regex",
        redirect={"to": "https://new.test/new/$1", "code": 301},
    ),
    route(
        "redir-vars",
        hosts=["redir.test"],
        path="/vars/",
        redirect={"to": "$scheme://other.test$request_uri"},
    ),
    route(
        "redir-path",
        hosts=["redir.test"],
        path="/pathq/",
        redirect={"to": "https://$host/moved$path?was=$query", "code": 302},
    ),
]


class Env:
    def __init__(self, core: CoreProcess, ups: dict[str, HttpUpstream]) -> None:
        self.core = core
        self.ups = ups

    def get(self, host: str, path: str, method: str = "GET", **kw: Any) -> Any:
        return request(self.core.port, method, path, host=host, **kw)

    def winner(self, host: str, path: str, method: str = "GET", **kw: Any) -> str:
        r = self.get(host, path, method, **kw)
        assert r.status == 200, (
            f"{method} {path} Host: {host} → expected 200 from a route, got {r.describe()}"
        )
        return str(r.json()["name"])

    def total_requests(self) -> int:
        return sum(u.request_count() for u in self.ups.values())


@pytest.fixture(scope="module")
def env(module_upstreams: UpstreamSet, module_start_core: StartCore) -> Env:
    ups = {r["id"]: module_upstreams.http(r["id"]) for r in ROUTES}
    routes = [dict(r, upstream=r["id"]) for r in ROUTES] + REDIRECTS
    cfg = config([upstream(rid, u.address) for rid, u in ups.items()], routes)
    return Env(module_start_core(cfg), ups)


# -- hosts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.com", "h-exact"),
        ("API.Example.COM", "h-exact"),
        ("api.example.com:8080", "h-exact"),
        ("api.example.com.", "h-exact"),
        ("Api.Example.Com.:80", "h-exact"),
        ("foo.example.com", "h-wild"),
        ("FOO.example.com:9", "h-wild"),
        ("a.deep.example.com", "h-wild-long"),
    ],
)
def test_host_matching(env: Env, host: str, expected: str) -> None:
    assert env.winner(host, "/anything") == expected


def test_exact_host_beats_any_host_even_with_longer_path(env: Env) -> None:
    # h-any has the longer path (/any/) but no host: host specificity is compared first.
    assert env.winner("api.example.com", "/any/x") == "h-exact"
    assert env.winner("unknown.test", "/any/x") == "h-any"


@pytest.mark.parametrize("host", ["unknown.test", "example.com", "api.example.org"])
def test_no_route_is_404_without_fall_through(env: Env, host: str) -> None:
    before = env.total_requests()
    r = env.get(host, "/nothing-here")
    assert r.status == 404, f"Host: {host} GET /nothing-here → expected 404, got {r.describe()}"
    assert len(r.body) < 1024
    assert env.total_requests() == before, "a 404 must not reach any upstream"


# -- paths ------------------------------------------------------------------------------------


def test_exact_path(env: Env) -> None:
    assert env.winner("paths.test", "/exact") == "p-exact"
    assert env.winner("paths.test", "/exact?x=1") == "p-exact"
    for path in ("/exact/", "/exactly", "/exact/x"):
        r = env.get("paths.test", path)
        assert r.status == 404, (
            f"GET {path} (exact route /exact) → expected 404, got {r.describe()}"
        )


def test_longer_prefix_wins_and_prefix_beats_regex(env: Env) -> None:
    assert env.winner("paths.test", "/p/x") == "p-prefix-short"
    assert env.winner("paths.test", "/p/longer/x") == "p-prefix-long"
    assert env.winner("paths.test", "/p/longer/") == "p-prefix-long"


def test_prefix_route_forwards_path_and_query_unchanged(env: Env) -> None:
    r = env.get("paths.test", "/p/longer/a/b?x=1&y=%20z&flag")
    assert r.status == 200, r.describe()
    assert r.json()["target"] == "/p/longer/a/b?x=1&y=%20z&flag"


def test_regex_with_rewrite_keeps_query(env: Env) -> None:
    r = env.get("paths.test", "/items/42/detail?full=1")
    assert r.status == 200, r.describe()
    body = r.json()
    assert body["name"] == "p-regex"
    assert body["target"] == "/v2/detail/item-42?full=1"
    r = env.get("paths.test", "/items/7/summary")
    assert r.json()["target"] == "/v2/summary/item-7"


def test_regex_is_anchored_at_start(env: Env) -> None:
    r = env.get("paths.test", "/x/items/42/detail")
    assert r.status == 404, f"regex route is anchored at the start; got {r.describe()}"
    r = env.get("paths.test", "/items/abc/detail")
    assert r.status == 404, r.describe()


@pytest.mark.parametrize(
    ("path", "forwarded"),
    [
        ("/strip/a/b", "/a/b"),
        ("/strip/a/b?q=1&r=2", "/a/b?q=1&r=2"),
        ("/strip/", "/"),
    ],
)
def test_strip_prefix(env: Env, path: str, forwarded: str) -> None:
    r = env.get("paths.test", path)
    assert r.status == 200, r.describe()
    body = r.json()
    assert body["name"] == "p-strip"
    assert body["target"] == forwarded, f"GET {path} via strip_prefix /strip/"


# -- methods, headers, priority, ties ---------------------------------------------------------


def test_methods(env: Env) -> None:
    assert env.winner("methods.test", "/m") == "m-get"
    assert env.winner("methods.test", "/m", "POST", body=b"x") == "m-write"
    assert env.winner("methods.test", "/m", "PUT", body=b"x") == "m-write"
    before = env.total_requests()
    r = env.get("methods.test", "/m", "DELETE")
    assert r.status == 404, f"DELETE on routes limited to GET / POST,PUT → {r.describe()}"
    assert env.total_requests() == before


def test_header_condition(env: Env) -> None:
    assert env.winner("headers.test", "/", headers={"X-Canary": "1"}) == "hdr-canary"
    # header names are case-insensitive
    assert env.winner("headers.test", "/", headers=[("x-canary", "1")]) == "hdr-canary"
    # values must match exactly
    assert env.winner("headers.test", "/", headers={"X-Canary": "2"}) == "hdr-default"
    assert env.winner("headers.test", "/", headers={"X-Canary": "10"}) == "hdr-default"
    assert env.winner("headers.test", "/") == "hdr-default"


def test_priority_beats_specificity(env: Env) -> None:
    assert env.winner("prio.test", "/api/v1/users") == "prio-high"
    assert env.winner("prio.test", "/other") == "prio-high"


def test_identical_routes_smaller_id_wins(env: Env) -> None:
    for _ in range(3):
        assert env.winner("tie.test", "/x") == "tie-a"


def test_disabled_route_never_matches(env: Env) -> None:
    r = env.get("disabled.test", "/")
    assert r.status == 404, r.describe()


def test_each_request_on_a_keepalive_connection_is_routed_on_its_own_host(env: Env) -> None:
    # Two requests for two hosts on one connection: each is routed on its own Host.
    with RawConnection(env.core.port) as c:
        c.send(raw_request_bytes("GET", "/a", host="api.example.com"))
        first = c.read_response()
        c.send(raw_request_bytes("GET", "/a", host="x.example.com"))
        second = c.read_response()
    assert first.status == 200 and second.status == 200, (first.describe(), second.describe())
    assert first.json()["name"] == "h-exact"
    assert second.json()["name"] == "h-wild"


# -- redirects --------------------------------------------------------------------------------


def test_redirect_regex_capture(env: Env) -> None:
    before = env.total_requests()
    r = env.get("redir.test", "/old/a/b")
    assert r.status == 301, r.describe()
    assert r.header("Location") == "https://new.test/new/a/b"
    assert env.total_requests() == before


def test_redirect_default_code_scheme_and_request_uri(env: Env) -> None:
    r = env.get("redir.test", "/vars/x/y?k=v&z=1")
    assert r.status == 308, f"redirect without code → 308; got {r.describe()}"
    assert r.header("Location") == "http://other.test/vars/x/y?k=v&z=1"
    r = env.get("redir.test", "/vars/post", "POST", body=b"data")
    assert r.status == 308, r.describe()
    assert r.header("Location") == "http://other.test/vars/post"


def test_redirect_host_path_query(env: Env) -> None:
    r = env.get("redir.test", "/pathq/a?b=1")
    assert r.status == 302, r.describe()
    assert r.header("Location") == "https://redir.test/moved/pathq/a?was=b=1"


def test_redirect_on_raw_connection(env: Env) -> None:
    data = raw_request_bytes("GET", "/old/z", host="redir.test")
    r = raw_exchange(env.core.port, data)
    assert r.status == 301 and r.header("Location") == "https://new.test/new/z", r.describe()
