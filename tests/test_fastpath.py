"""The fast-path API, run against both implementations (ids `c` and `py`).

`_fastpath_py` is the spec; the Hypothesis tests at the end check that the compiled `_fastpath`
gives the same answers on random route sets, requests and heads.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import os
import random
import subprocess
import sys
from types import ModuleType
from typing import Any

import httptools
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from minirouter import _fastpath_py, extensions, fastpath
from minirouter.model import HeaderEdits, PathType, Route

NO_EXTENSIONS = extensions.NO_EXTENSIONS


def _compiled() -> ModuleType:
    if NO_EXTENSIONS:
        pytest.skip("MINIROUTER_NO_EXTENSIONS=1: the compiled module is not built")
    # Not skipped when missing: a build that silently lost the extension must fail here.
    return importlib.import_module("minirouter._fastpath")


def _module(name: str) -> ModuleType:
    return _compiled() if name == "c" else _fastpath_py


# Module scope: Hypothesis tests may use it (it holds no per-test state).
@pytest.fixture(scope="module", params=["c", "py"])
def fp(request: pytest.FixtureRequest) -> ModuleType:
    return _module(request.param)


def R(route_id: str, **kw: Any) -> Route:  # short: the tests build many routes
    return Route(id=route_id, upstream="u", **kw)


# ------------------------------------------------------------------------ implementation


@pytest.mark.skipif(NO_EXTENSIONS, reason="MINIROUTER_NO_EXTENSIONS=1")
def test_fastpath_loads_the_compiled_module() -> None:
    compiled = importlib.import_module("minirouter._fastpath")
    assert extensions.is_compiled(compiled), compiled.__file__
    assert fastpath.IMPLEMENTATION == "c"
    assert fastpath.RouteTable is compiled.RouteTable
    assert fastpath.build_request_head is compiled.build_request_head
    assert fastpath.normalize_host is compiled.normalize_host


def test_no_extensions_env_selects_plain_python() -> None:
    code = "from minirouter import fastpath; print(fastpath.IMPLEMENTATION, fastpath.RouteTable.__module__)"
    env = {**os.environ, "MINIROUTER_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["py", "minirouter._fastpath_py"]


def test_both_modules_export_the_same_api(fp: ModuleType) -> None:
    for name in _fastpath_py.__all__:
        assert hasattr(fp, name), name


# ---------------------------------------------------------------------------- hosts


@pytest.mark.parametrize(
    ("given_host", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("EXAMPLE.com.:443", "example.com"),
        ("example.com.", "example.com"),
        ("example.com..", "example.com."),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8::1]:80", "2001:db8::1"),
        ("::1", "::1"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("", ""),
        ("ÉXAMPLE.com", "éxample.com"),
    ],
)
def test_normalize_host(fp: ModuleType, given_host: str, expected: str) -> None:
    assert fp.normalize_host(given_host) == expected


# --------------------------------------------------------------------- which route wins


def winner(fp: ModuleType, routes: list[Route], host: str, path: str, method: str = "GET",
           headers: dict[str, str] | None = None) -> str | None:  # fmt: skip
    found = fp.RouteTable(routes).match(host, path, method, headers)
    return None if found is None else str(found.route.id)


def test_host_specificity(fp: ModuleType) -> None:
    routes = [
        R("any"),
        R("wild", hosts=("*.example.com",)),
        R("wild-longer", hosts=("*.api.example.com",)),
        R("exact", hosts=("v1.api.example.com",)),
    ]
    assert winner(fp, routes, "v1.api.example.com", "/") == "exact"
    assert winner(fp, routes, "v2.api.example.com", "/") == "wild-longer"
    assert winner(fp, routes, "a.b.api.example.com", "/") == "wild-longer"
    assert winner(fp, routes, "www.example.com", "/") == "wild"
    # A wildcard needs at least one label in front of its suffix.
    assert winner(fp, routes, "example.com", "/") == "any"
    assert winner(fp, routes, "api.example.com", "/") == "wild"
    assert winner(fp, routes, "other.org", "/") == "any"


def test_host_is_normalised_on_both_sides(fp: ModuleType) -> None:
    routes = [R("a", hosts=("API.Example.com.",)), R("w", hosts=("*.Example.ORG",))]
    assert winner(fp, routes, "api.example.COM:8443", "/") == "a"
    assert winner(fp, routes, "x.example.org.", "/") == "w"


def test_no_fall_through_to_another_hosts_route(fp: ModuleType) -> None:
    routes = [R("a", hosts=("a.example.com",))]
    assert winner(fp, routes, "b.example.com", "/") is None


def test_priority_beats_specificity(fp: ModuleType) -> None:
    routes = [
        R("exact", hosts=("a.example.com",), path="/v1/users", path_type="exact"),
        R("any-root", priority=1),
    ]
    assert winner(fp, routes, "a.example.com", "/v1/users") == "any-root"


def test_path_specificity(fp: ModuleType) -> None:
    routes = [
        R("root"),
        R("v1", path="/v1"),
        R("v1-slash", path="/v1/"),
        R("exact", path="/v1/users", path_type="exact"),
        R("regex", path=r"/v1/.*", path_type="regex"),
    ]
    assert winner(fp, routes, "h", "/v1/users") == "exact"
    assert winner(fp, routes, "h", "/v1/users/1") == "v1-slash"
    # A prefix is a plain string prefix, as in nginx.
    assert winner(fp, routes, "h", "/v1x") == "v1"
    assert winner(fp, routes, "h", "/") == "root"
    only_regex = [R("regex", path=r"/v1/.*", path_type="regex"), R("other", path="/x")]
    assert winner(fp, only_regex, "h", "/v1/a") == "regex"


def test_smaller_id_breaks_ties(fp: ModuleType) -> None:
    routes = [R("b"), R("a"), R("c")]
    assert winner(fp, routes, "h", "/") == "a"


def test_answer_does_not_depend_on_input_order(fp: ModuleType) -> None:
    routes = [R(f"r{i}", path=f"/{'x' * (i % 3)}", priority=i % 2) for i in range(12)]
    expected = winner(fp, routes, "h", "/xx/y")
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(routes)
        assert winner(fp, routes, "h", "/xx/y") == expected


def test_disabled_routes_are_left_out(fp: ModuleType) -> None:
    routes = [R("off", priority=9, enabled=False), R("on")]
    table = fp.RouteTable(routes)
    assert len(table) == 1
    assert winner(fp, routes, "h", "/") == "on"


def test_methods_and_headers(fp: ModuleType) -> None:
    routes = [
        R("canary", priority=5, headers={"X-Canary": "1"}),
        R("writes", priority=3, methods=("POST", "PUT")),
        R("default"),
    ]
    assert winner(fp, routes, "h", "/", "GET", {"x-canary": "1"}) == "canary"
    assert winner(fp, routes, "h", "/", "GET", {"x-canary": "0"}) == "default"
    assert winner(fp, routes, "h", "/", "GET", None) == "default"
    assert winner(fp, routes, "h", "/", "POST", {}) == "writes"
    assert winner(fp, routes, "h", "/", "DELETE") == "default"


def test_falls_back_to_next_candidate_under_the_same_key(fp: ModuleType) -> None:
    # Same host, same prefix: the best one is rejected by its method, the next one must win,
    # and a less specific route only if every route under the key is rejected.
    routes = [
        R("p-post", hosts=("h",), path="/api/", priority=2, methods=("POST",)),
        R("p-canary", hosts=("h",), path="/api/", priority=1, headers={"x-canary": "1"}),
        R("p-get", hosts=("h",), path="/api/", methods=("GET",)),
        R("short", hosts=("h",), path="/"),
    ]
    assert winner(fp, routes, "h", "/api/x", "POST") == "p-post"
    assert winner(fp, routes, "h", "/api/x", "GET", {"x-canary": "1"}) == "p-canary"
    assert winner(fp, routes, "h", "/api/x", "GET") == "p-get"
    assert winner(fp, routes, "h", "/api/x", "PUT") == "short"


def test_regex_routes_and_captures(fp: ModuleType) -> None:
    routes = [
        R("user", path=r"/u/(\d+)(/edit)?", path_type="regex", rewrite="/users/$1${2}"),
        R("ten", path="/t" + "(.)" * 10, path_type="regex", rewrite="/${10}/$1/$0"),
        R("plain", path=r"/p/(\w+)", path_type="regex"),
    ]
    table = fp.RouteTable(routes)
    found = table.match("h", "/u/42", "GET")
    assert (found.route.id, found.captures, found.path) == ("user", ("42", ""), "/users/42")
    # re.match: anchored at the start only.
    found = table.match("h", "/u/42/edit/more", "GET")
    assert (found.captures, found.path) == (("42", "/edit"), "/users/42/edit")
    found = table.match("h", "/tabcdefghij", "GET")
    assert found.path == "/j/a//tabcdefghij"
    found = table.match("h", "/p/abc/x", "GET")
    assert (found.captures, found.path) == (("abc",), "/p/abc/x")
    assert table.match("h", "/x/u/42", "GET") is None


def test_regex_only_scanned_when_it_could_win(fp: ModuleType) -> None:
    routes = [
        R("literal", path="/a"),
        R("regex-high", path=r"/a(.*)", path_type="regex", priority=1),
        R("regex-low", path=r"/(.*)", path_type="regex"),
    ]
    assert winner(fp, routes, "h", "/ab") == "regex-high"
    assert winner(fp, routes[::2], "h", "/ab") == "literal"
    assert winner(fp, routes[::2], "h", "/b") == "regex-low"


@pytest.mark.parametrize(
    ("route", "path", "forwarded"),
    [
        (R("r", path="/v1/", strip_prefix=True), "/v1/users", "/users"),
        (R("r", path="/v1", strip_prefix=True), "/v1/users", "/users"),
        (R("r", path="/v1", strip_prefix=True), "/v1", "/"),
        (R("r", path="/v1/", strip_prefix=True), "/v1/", "/"),
        (R("r", path="/v1", strip_prefix=True), "/v1x", "/x"),
        (R("r", path="/v1", strip_prefix=False), "/v1/users", "/v1/users"),
        (R("r", path="/v1", path_type="exact", strip_prefix=True), "/v1", "/"),
        (R("r", path="/v1", path_type="exact"), "/v1", "/v1"),
    ],
)
def test_forwarded_path(fp: ModuleType, route: Route, path: str, forwarded: str) -> None:
    found = fp.RouteTable([route]).match("h", path, "GET")
    assert (found.path, found.captures) == (forwarded, ())


def test_match_carries_compiled_edits(fp: ModuleType) -> None:
    route = R("r", request_headers=HeaderEdits(set={"X-Env": "prod"}))
    found = fp.RouteTable([route]).match("h", "/", "GET")
    assert found.route is route
    assert isinstance(found.request_edits, fp.Edits)
    assert found.request_edits
    assert not found.response_edits
    assert found.request_edits == fp.compile_edits(route.request_headers)
    assert not fp.compile_edits(None)
    assert not fp.compile_edits(HeaderEdits())


def test_bad_tables_are_rejected(fp: ModuleType) -> None:
    with pytest.raises(ValueError, match="duplicate route id"):
        fp.RouteTable([R("a"), R("a", path="/x")])
    with pytest.raises(ValueError, match="invalid regex"):
        fp.RouteTable([R("a", path="(", path_type="regex")])
    # A disabled duplicate is not in the table, so it does not count.
    assert len(fp.RouteTable([R("a"), R("a", enabled=False)])) == 1


def test_empty_table(fp: ModuleType) -> None:
    table = fp.RouteTable([])
    assert len(table) == 0
    assert table.match("h", "/", "GET") is None
    explanation = table.explain("h", "/", "GET")
    assert explanation.winner is None
    assert explanation.candidates == []


# --------------------------------------------------------------------------- explain


def test_explain_reasons(fp: ModuleType) -> None:
    routes = [
        R("win", hosts=("a.example.com",), path="/v1/", priority=10),
        R("low", hosts=("a.example.com",), path="/v1/users", path_type="exact"),
        R("host", hosts=("*.example.com",), path="/v1/", priority=10),
        R("path", hosts=("a.example.com",), path="/v", priority=10),
        R("zid", hosts=("a.example.com",), path="/v1/", priority=10),
        R("nohost", hosts=("b.example.com",)),
        R("nopath", path="/v2/"),
        R("method", methods=("POST",)),
        R("header", headers={"X-Canary": "1"}),
        R("off", enabled=False),
    ]
    table = fp.RouteTable(routes)
    explanation = table.explain("A.example.com", "/v1/users", "GET", {})
    got = [(c.route_id, c.matched, c.reason) for c in explanation.candidates]
    assert got == [
        ("win", True, "winner"),
        ("zid", True, "larger id"),
        ("path", True, "less specific path"),
        ("host", True, "less specific host"),
        ("low", True, "lower priority (0 < 10)"),
        ("header", False, "header x-canary does not match"),
        ("method", False, "method GET not allowed"),
        ("nohost", False, "host does not match"),
        ("nopath", False, "path does not match"),
    ]
    assert explanation.winner is not None
    assert explanation.winner.route.id == "win"
    assert explanation.winner.path == "/v1/users"
    assert explanation.winner == table.match("A.example.com", "/v1/users", "GET", {})
    assert explanation.candidates[0] == fp.Candidate("win", True, "winner")


# ---------------------------------------------------------------------- head building


def request_head(fp: ModuleType, headers: list[tuple[bytes, bytes]], **kw: Any) -> bytes:
    args: dict[str, Any] = {
        "host": b"backend:8080",
        "client_ip": b"192.0.2.7",
        "proto": b"https",
        "forwarded_host": b"www.example.com",
        "edits": None,
        "upgrade": None,
        "content_length": None,
        "chunked": False,
    }
    args.update(kw)
    return bytes(fp.build_request_head(b"GET", b"/p?q=1", headers, **args))


def response_head(fp: ModuleType, headers: list[tuple[bytes, bytes]], **kw: Any) -> bytes:
    args: dict[str, Any] = {
        "edits": None,
        "keep_alive": True,
        "upgrade": None,
        "content_length": None,
        "chunked": False,
    }
    args.update(kw)
    return bytes(fp.build_response_head(200, b"OK", headers, **args))


def test_request_head_basic(fp: ModuleType) -> None:
    head = request_head(
        fp,
        [
            (b"Host", b"www.example.com"),
            (b"User-Agent", b"curl/8"),
            (b"Accept", b"*/*"),
            (b"Content-Length", b"5"),
        ],
        content_length=5,
    )
    assert head == (
        b"GET /p?q=1 HTTP/1.1\r\n"
        b"Host: backend:8080\r\n"
        b"User-Agent: curl/8\r\n"
        b"Accept: */*\r\n"
        b"X-Forwarded-For: 192.0.2.7\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: www.example.com\r\n"
        b"Via: 1.1 minirouter\r\n"
        b"Content-Length: 5\r\n"
        b"\r\n"
    )


def test_request_head_drops_hop_by_hop(fp: ModuleType) -> None:
    head = request_head(
        fp,
        [
            (b"connection", b"keep-alive, X-Secret , x-forwarded-for,HOST"),
            (b"Connection", b"Via"),
            (b"X-Secret", b"s"),
            (b"Keep-Alive", b"timeout=5"),
            (b"TE", b"trailers"),
            (b"Trailer", b"X-T"),
            (b"Upgrade", b"websocket"),
            (b"Proxy-Authorization", b"Basic x"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Forwarded-Proto", b"http"),
            (b"x-forwarded-host", b"evil"),
            (b"X-Forwarded-For", b"10.0.0.1"),
            (b"Via", b"1.0 old"),
            (b"X-Kept", b"k"),
        ],
        chunked=True,
    )
    assert head == (
        b"GET /p?q=1 HTTP/1.1\r\n"
        b"Host: backend:8080\r\n"
        b"X-Kept: k\r\n"
        # Listed in Connection, so the client's values go; the router's own still get written.
        b"X-Forwarded-For: 192.0.2.7\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: www.example.com\r\n"
        b"Via: 1.1 minirouter\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"\r\n"
    )


def test_request_head_merges_forwarded_for_and_via(fp: ModuleType) -> None:
    head = request_head(
        fp,
        [
            (b"X-Forwarded-For", b"203.0.113.1, 10.0.0.1"),
            (b"Via", b"1.1 edge"),
            (b"x-forwarded-for", b"10.0.0.2"),
            (b"VIA", b"1.1 lb"),
        ],
    )
    assert b"X-Forwarded-For: 203.0.113.1, 10.0.0.1, 10.0.0.2, 192.0.2.7\r\n" in head
    assert b"Via: 1.1 edge, 1.1 lb, 1.1 minirouter\r\n" in head
    assert head.count(b"X-Forwarded-For") == 1
    assert head.lower().count(b"via:") == 1


def test_request_head_upgrade(fp: ModuleType) -> None:
    head = request_head(
        fp, [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")], upgrade=b"websocket"
    )
    assert head.endswith(
        b"Via: 1.1 minirouter\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )
    assert head.count(b"pgrade:") == 1


def test_request_head_edits(fp: ModuleType) -> None:
    edits = fp.compile_edits(
        HeaderEdits(
            set={"x-env": "prod", "X-New": "n", "Host": "internal"},
            add={"X-Added": "a", "x-env": "also"},
            remove=("X-Debug", "X-Forwarded-Host"),
        )
    )
    head = request_head(
        fp,
        [
            (b"X-Env", b"dev"),
            (b"x-debug", b"1"),
            (b"A", b"1"),
            (b"X-ENV", b"dev2"),
        ],
        edits=edits,
    )
    assert head == (
        b"GET /p?q=1 HTTP/1.1\r\n"
        b"Host: internal\r\n"
        b"x-env: prod\r\n"
        b"A: 1\r\n"
        b"X-Forwarded-For: 192.0.2.7\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"Via: 1.1 minirouter\r\n"
        b"X-New: n\r\n"
        b"X-Added: a\r\n"
        b"x-env: also\r\n"
        b"\r\n"
    )


def test_edits_cannot_touch_framing_or_inject(fp: ModuleType) -> None:
    edits = fp.compile_edits(
        HeaderEdits(
            set={"Transfer-Encoding": "chunked", "X-Bad": "a\r\nX-Evil: 1", "Bad Name": "v"},
            add={"Content-Length": "0", "Proxy-X": "1", "Connection": "close"},
            remove=("Content-Length", "Upgrade"),
        )
    )
    assert not edits
    head = request_head(fp, [], edits=edits, content_length=3, upgrade=b"h2c")
    assert b"Content-Length: 3\r\n" in head
    assert b"Transfer-Encoding" not in head
    assert b"Upgrade: h2c\r\nConnection: upgrade\r\n" in head
    assert b"Evil" not in head


def test_request_head_never_emits_cr_lf_nul(fp: ModuleType) -> None:
    head = request_head(
        fp,
        [(b"X-Bad", b"a\r\nInjected: 1"), (b"X-Nul", b"a\x00b"), (b"X\nBad", b"v"), (b"Ok", b"1")],
        host=b"h\r\nX-Evil: 1",
        client_ip=b"1.2.3.4\n",
        forwarded_host=b"f\x00",
        upgrade=b"ws\r\n",
    )
    lines = head.split(b"\r\n")
    assert lines[-2:] == [b"", b""]
    assert all(b"\r" not in line and b"\n" not in line and b"\x00" not in line for line in lines)
    assert b"Injected" not in head
    assert b"Ok: 1\r\n" in head
    assert b"Host: hX-Evil: 1\r\n" in head  # scrubbed, and still a single Host line


def test_response_head(fp: ModuleType) -> None:
    upstream = [
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"99"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Server", b"upstream"),
        (b"Via", b"1.1 app"),
    ]
    assert response_head(fp, upstream, content_length=12) == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain\r\n"
        b"Server: upstream\r\n"
        b"Via: 1.1 app\r\n"
        b"Content-Length: 12\r\n"
        b"\r\n"
    )
    edits = fp.compile_edits(HeaderEdits(set={"server": "minirouter"}, add={"X-A": "1"}))
    assert response_head(fp, upstream, chunked=True, keep_alive=False, edits=edits) == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain\r\n"
        b"server: minirouter\r\n"
        b"Via: 1.1 app\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"Connection: close\r\n"
        b"X-A: 1\r\n"
        b"\r\n"
    )


def test_response_head_upgrade(fp: ModuleType) -> None:
    head = bytes(
        fp.build_response_head(
            101,
            b"Switching Protocols",
            [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), (b"Sec-X", b"k")],
            edits=None,
            keep_alive=False,
            upgrade=b"websocket",
            content_length=None,
            chunked=False,
        )
    )
    assert head == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Sec-X: k\r\n"
        b"Connection: upgrade\r\n"
        b"Upgrade: websocket\r\n"
        b"\r\n"
    )


def test_large_head_and_many_edits(fp: ModuleType) -> None:
    # Past the compiled builder's stack buffers (head bytes and tracked "set" edits).
    many = {f"X-S{i}": str(i) for i in range(40)}
    edits = fp.compile_edits(HeaderEdits(set=many))
    headers = [(b"X-Big%d" % i, b"v" * 300) for i in range(30)] + [(b"x-s3", b"old")]
    head = request_head(fp, headers, edits=edits)
    spec_edits = _fastpath_py.compile_edits(HeaderEdits(set=many))
    assert head == request_head(_fastpath_py, headers, edits=spec_edits)
    assert head.count(b"X-Big") == 30
    assert b"X-S3: 3\r\n" in head
    assert b"old" not in head


def test_header_type_errors_do_not_crash(fp: ModuleType) -> None:
    with pytest.raises((TypeError, AttributeError)):
        request_head(fp, [("str-name", b"v")])  # type: ignore[list-item]
    with pytest.raises((TypeError, ValueError)):
        request_head(fp, [(b"only-name",)])  # type: ignore[list-item]


# ----------------------------------------------------- Hypothesis: c == py, explain == match

HOST_PATTERNS = ["a.com", "x.a.com", "y.x.a.com", "b.com", "B.com.", "*.a.com", "*.x.a.com",
                 "*.com", "*.b.com", "*.y.x.a.com"]  # fmt: skip
REQUEST_HOSTS = ["a.com", "x.a.com", "y.x.a.com", "z.y.x.a.com", "b.com", "c.b.com",
                 "X.A.COM:8080", "a.com.", "other.org", "[::1]:80", "", ".a.com", "com"]  # fmt: skip
LITERAL_PATHS = ["/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", ""]
REGEXES = [r"/a/(\d+)", r"/(a|b)(/.*)?", r"/a(x)?(/)?", r".*", r"/a/b", r"(/)(a)?"]
PATH_TYPES: list[PathType] = ["prefix", "prefix", "exact", "regex"]
REWRITES = [None, "/r/$1", "/x${2}y$0", "/static", "$3", "${12}$$1"]


# Conditions are drawn sparingly so that most requests meet several matching routes and every
# precedence rule gets exercised, not just "no route matches".
sparse_hosts = st.just(()) | st.lists(st.sampled_from(HOST_PATTERNS), max_size=2).map(tuple)
sparse_methods = st.just(()) | st.just(()) | st.sets(st.sampled_from(["GET", "POST"])).map(tuple)
no_headers: dict[str, str] = {}
sparse_headers = (
    st.just(no_headers)
    | st.just(no_headers)
    | st.dictionaries(
        st.sampled_from(["X-Canary", "x-env"]), st.sampled_from(["1", "prod"]), max_size=2
    )
)


@st.composite
def routes_strategy(draw: st.DrawFn) -> list[Route]:
    ids = draw(st.lists(st.text("abcd", min_size=1, max_size=3), unique=True, max_size=12))
    routes = []
    for route_id in ids:
        path_type = draw(st.sampled_from(PATH_TYPES))
        regex = path_type == "regex"
        routes.append(
            Route(
                id=route_id,
                hosts=draw(sparse_hosts),
                path=draw(st.sampled_from(REGEXES if regex else LITERAL_PATHS)),
                path_type=path_type,
                methods=draw(sparse_methods),
                headers=draw(sparse_headers),
                priority=draw(st.integers(0, 2)),
                strip_prefix=draw(st.booleans()),
                rewrite=draw(st.sampled_from(REWRITES)) if regex else None,
                enabled=draw(st.sampled_from([True, True, True, False])),
            )
        )
    return routes


request_paths = st.sampled_from([*LITERAL_PATHS, "/a/12", "/b/x", "/ax/", "/a/b/cd"]) | st.text(
    "/ab1x", max_size=8
)
request_headers = st.none() | st.dictionaries(
    st.sampled_from(["x-canary", "x-env", "X-Canary"]), st.sampled_from(["1", "0", "prod"])
)
request_hosts = st.sampled_from(REQUEST_HOSTS[:4]) | st.sampled_from(REQUEST_HOSTS)


def _summary(found: Any) -> tuple[str, tuple[str, ...], str] | None:
    if found is None:
        return None
    return (found.route.id, tuple(found.captures), found.path)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    routes=routes_strategy(),
    host=request_hosts,
    path=request_paths,
    method=st.sampled_from(["GET", "POST", "PUT"]),
    headers=request_headers,
)
def test_compiled_matches_spec(
    routes: list[Route], host: str, path: str, method: str, headers: dict[str, str] | None
) -> None:
    compiled = _compiled()
    spec_table = _fastpath_py.RouteTable(routes)
    c_table = compiled.RouteTable(routes)
    expected = _summary(spec_table.match(host, path, method, headers))
    assert _summary(c_table.match(host, path, method, headers)) == expected

    spec_explained = spec_table.explain(host, path, method, headers)
    c_explained = c_table.explain(host, path, method, headers)
    assert _summary(spec_explained.winner) == expected
    assert _summary(c_explained.winner) == expected
    assert [(c.route_id, c.matched, c.reason) for c in c_explained.candidates] == [
        (c.route_id, c.matched, c.reason) for c in spec_explained.candidates
    ]


@settings(max_examples=200)
@given(
    routes=routes_strategy(),
    host=request_hosts,
    path=request_paths,
    method=st.sampled_from(["GET", "POST"]),
    headers=request_headers,
)
def test_explain_agrees_with_match(
    fp: ModuleType,
    routes: list[Route],
    host: str,
    path: str,
    method: str,
    headers: dict[str, str] | None,
) -> None:
    table = fp.RouteTable(routes)
    found = table.match(host, path, method, headers)
    explained = table.explain(host, path, method, headers)
    assert explained.winner == found
    assert len(explained.candidates) == len(table)
    matched = [c for c in explained.candidates if c.matched]
    assert (matched[0].route_id if matched else None) == (found and found.route.id)
    assert all(c.reason != "winner" for c in explained.candidates[1:])


@given(host=st.text(max_size=12) | st.sampled_from(REQUEST_HOSTS))
def test_normalize_host_agrees(host: str) -> None:
    assert _compiled().normalize_host(host) == _fastpath_py.normalize_host(host)


HEADER_NAMES = [b"Host", b"host", b"Connection", b"connection", b"Keep-Alive", b"TE", b"Trailer",
                b"Upgrade", b"Proxy-Authorization", b"proxy-connection", b"X-Forwarded-For",
                b"x-forwarded-for", b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Via", b"via",
                b"Content-Length", b"Transfer-Encoding", b"Accept", b"X-A", b"x-a", b"Close",
                b"X-Bad\r\n", b"Server", b"X-Env"]  # fmt: skip
HEADER_VALUES = [b"", b"1", b"close", b"keep-alive", b"X-A, close", b" x-a ,Upgrade", b"\tVia",
                 b"bad\r\nvalue", b"nul\x00", b"10.0.0.1", b"1.1 proxy", b"host, server"]  # fmt: skip
EDIT_NAMES = ["X-A", "x-a", "Host", "Via", "X-Forwarded-For", "Content-Length", "Bad Name",
              "Server", "X-Env", "x-env", "Upgrade", "Proxy-Foo", "X-New"]  # fmt: skip
EDIT_VALUES = ["v", "w", "", "a\r\nb", "caf\u00e9"]

header_lists = st.lists(
    st.tuples(
        st.sampled_from(HEADER_NAMES) | st.binary(max_size=6),
        st.sampled_from(HEADER_VALUES) | st.binary(max_size=8),
    ),
    max_size=10,
)
header_edits = st.none() | st.builds(
    HeaderEdits,
    set=st.dictionaries(st.sampled_from(EDIT_NAMES), st.sampled_from(EDIT_VALUES), max_size=4),
    add=st.dictionaries(st.sampled_from(EDIT_NAMES), st.sampled_from(EDIT_VALUES), max_size=3),
    remove=st.lists(st.sampled_from(EDIT_NAMES), max_size=3).map(tuple),
)
small_bytes = st.sampled_from([b"", b"h", b"10.1.2.3", b"a\r\nb"]) | st.binary(max_size=6)
framing = st.tuples(st.none() | st.integers(0, 2**40), st.booleans())


def _assert_well_formed(head: bytes) -> None:
    assert head.endswith(b"\r\n\r\n")
    body = head.replace(b"\r\n", b"")
    assert b"\r" not in body
    assert b"\n" not in body
    assert b"\x00" not in body
    names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:-2]]
    # Exactly the framing the core asked for: never two, never one smuggled in.
    assert names.count(b"content-length") + names.count(b"transfer-encoding") <= 1


@settings(max_examples=300)
@given(
    headers=header_lists,
    edits=header_edits,
    method=small_bytes,
    target=small_bytes,
    host=small_bytes,
    client_ip=small_bytes,
    proto=small_bytes,
    forwarded_host=small_bytes,
    upgrade=st.none() | small_bytes,
    frame=framing,
)
def test_request_head_compiled_matches_spec(
    headers: list[tuple[bytes, bytes]],
    edits: HeaderEdits | None,
    method: bytes,
    target: bytes,
    host: bytes,
    client_ip: bytes,
    proto: bytes,
    forwarded_host: bytes,
    upgrade: bytes | None,
    frame: tuple[int | None, bool],
) -> None:
    compiled = _compiled()
    heads = []
    for module in (_fastpath_py, compiled):
        heads.append(
            module.build_request_head(
                method,
                target,
                headers,
                host=host,
                client_ip=client_ip,
                proto=proto,
                forwarded_host=forwarded_host,
                edits=module.compile_edits(edits),
                upgrade=upgrade,
                content_length=frame[0],
                chunked=frame[1],
            )
        )
    assert heads[1] == heads[0]
    _assert_well_formed(heads[0])


@settings(max_examples=300)
@given(
    status=st.integers(100, 599),
    reason=small_bytes,
    headers=header_lists,
    edits=header_edits,
    keep_alive=st.booleans(),
    upgrade=st.none() | small_bytes,
    frame=framing,
)
def test_response_head_compiled_matches_spec(
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    edits: HeaderEdits | None,
    keep_alive: bool,
    upgrade: bytes | None,
    frame: tuple[int | None, bool],
) -> None:
    compiled = _compiled()
    heads = [
        module.build_response_head(
            status,
            reason,
            headers,
            edits=module.compile_edits(edits),
            keep_alive=keep_alive,
            upgrade=upgrade,
            content_length=frame[0],
            chunked=frame[1],
        )
        for module in (_fastpath_py, compiled)
    ]
    assert heads[1] == heads[0]
    _assert_well_formed(heads[0])


def test_uses_headers_says_whether_match_reads_headers(fp: ModuleType) -> None:
    plain = fp.RouteTable([Route(id="a", upstream="u")])
    assert plain.uses_headers is False
    canary = fp.RouteTable(
        [Route(id="a", upstream="u"), Route(id="b", headers={"X-C": "1"}, upstream="u")]
    )
    assert canary.uses_headers is True


def test_a_table_built_from_a_previous_one_answers_like_a_fresh_one(fp: ModuleType) -> None:
    routes = [
        Route(id=f"r{i}", hosts=(f"h{i % 7}.test",), path=f"/p{i % 5}/", upstream="u")
        for i in range(50)
    ]
    old = fp.RouteTable(routes)
    changed = list(routes)
    changed[3] = Route(id="r3", hosts=("h3.test",), path="/p3/", priority=5, upstream="u")
    del changed[10]
    changed.append(Route(id="new", hosts=("h1.test",), path="/p1/x", upstream="u"))
    incremental = fp.RouteTable(changed, previous=old)
    fresh = fp.RouteTable(changed)
    for h in range(7):
        for p in range(5):
            for suffix in ("", "x"):
                args = (f"h{h}.test", f"/p{p}/{suffix}", "GET")
                assert incremental.explain(*args) == fresh.explain(*args), args
    # The old table still answers by the old routes.
    assert old.match("h3.test", "/p3/", "GET").route.id == "r3"
    assert old.match("h3.test", "/p3/", "GET").route.priority == 0


# -- a table built from the previous one ------------------------------------------------------
#
# The compiled table patches the previous table when a few routes change (shares the unchanged
# entries, index buckets and map shards). Whatever it does, every table in a chain of changes
# must answer exactly as one built from scratch, and the table it was made from as before.


def _same_answers(table: Any, routes: list[Route], requests: list[tuple[Any, ...]]) -> None:
    spec = _fastpath_py.RouteTable(routes)
    assert table.routes == spec.routes
    assert len(table) == len(spec)
    for host, path, method, headers in requests:
        expected = _summary(spec.match(host, path, method, headers))
        assert _summary(table.match(host, path, method, headers)) == expected
        got = table.explain(host, path, method, headers)
        want = spec.explain(host, path, method, headers)
        assert [(c.route_id, c.matched, c.reason) for c in got.candidates] == [
            (c.route_id, c.matched, c.reason) for c in want.candidates
        ]


@st.composite
def change_chains(draw: st.DrawFn) -> list[list[Route]]:
    """A config and a few successive versions of it: routes added, replaced, removed."""
    routes = draw(routes_strategy())
    versions = [routes]
    for _ in range(draw(st.integers(1, 4))):
        current = list(versions[-1])
        for _ in range(draw(st.integers(1, 3))):
            op = draw(st.sampled_from(["add", "replace", "delete"]))
            if op != "add" and current:
                at = draw(st.integers(0, len(current) - 1))
                if op == "delete":
                    del current[at]
                    continue
                new = draw(routes_strategy().filter(bool))[0]
                current[at] = dataclasses.replace(new, id=current[at].id)
            else:
                taken = {r.id for r in current}
                new = draw(routes_strategy().filter(bool))[0]
                if new.id not in taken:
                    current.insert(draw(st.integers(0, len(current))), new)
        versions.append(current)
    return versions


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    versions=change_chains(),
    requests=st.lists(
        st.tuples(request_hosts, request_paths, st.sampled_from(["GET", "POST"]), request_headers),
        min_size=1,
        max_size=6,
    ),
)
def test_a_table_built_from_the_previous_one_answers_as_a_new_one(
    versions: list[list[Route]], requests: list[tuple[Any, ...]]
) -> None:
    compiled = _compiled()
    table = told = alone = compiled.RouteTable(versions[0])
    for before, routes in itertools.pairwise(versions):
        table = compiled.RouteTable(routes, previous=table)
        _same_answers(table, routes, requests)
        # The same chain told which ids changed (as the mirror does): only those are looked at.
        changes = _changes(before, routes)
        told = compiled.RouteTable(tuple(routes), previous=told, changes=changes)
        _same_answers(told, routes, requests)
        # And given the changes alone: the routes are listed by id.
        alone = compiled.RouteTable(None, previous=alone, changes=changes)
        _same_answers(alone, sorted(routes, key=_route_id), requests)


def _route_id(route: Route) -> str:
    return route.id


def _changes(before: list[Route], after: list[Route]) -> dict[str, Route | None]:
    """id -> new Route (None: deleted) of every id whose Route object is not the same."""
    old = {r.id: r for r in before}
    new = {r.id: r for r in after}
    changed: dict[str, Route | None] = {i: None for i in old if i not in new}
    changed.update((i, r) for i, r in new.items() if old.get(i) is not r)
    return changed


def test_a_table_told_the_changes_looks_at_nothing_else(fp: ModuleType) -> None:
    """With `changes`, the ids named are the only ones compared: enabling, disabling, editing,
    adding and deleting routes that way answers as a fresh table, across many changes."""
    routes = [R(f"r{i:03d}", path=f"/p{i % 9}/", priority=i % 3) for i in range(100)]
    table = alone = fp.RouteTable(tuple(routes))
    requests = [("h", f"/p{i}/x", m, None) for i in range(9) for m in ("GET", "POST")]
    for step in range(60):
        current = {r.id: r for r in routes}
        rid = f"r{(step * 37) % 130:03d}"  # some of them new ids
        match step % 4:
            case 0:
                new: Route | None = R(rid, path=f"/p{step % 9}/", methods=("POST",))
            case 1:
                new = R(rid, path=f"/p{step % 9}/", priority=step % 3, enabled=step % 8 != 1)
            case 2:
                new = None
            case _:
                new = R(rid, path=f"/p{step % 9}/", priority=(step % 3) + 2)
        if new is None:
            current.pop(rid, None)
        else:
            current[rid] = new
        routes = list(current.values())
        table = fp.RouteTable(tuple(routes), previous=table, changes={rid: new})
        _same_answers(table, [r for r in routes if r.enabled], requests)
        alone = fp.RouteTable(None, previous=alone, changes={rid: new})
        _same_answers(alone, sorted((r for r in routes if r.enabled), key=_route_id), requests)
    # Several at once, beyond the patch limit: a full build, the same answers.
    changes: dict[str, Route | None] = {f"r{i:03d}": R(f"r{i:03d}", path="/p1/") for i in range(80)}
    routes = list(({r.id: r for r in routes} | changes).values())
    table = fp.RouteTable(tuple(routes), previous=table, changes=changes)
    _same_answers(table, [r for r in routes if r.enabled], requests)
    alone = fp.RouteTable(None, previous=alone, changes=changes)
    _same_answers(alone, sorted((r for r in routes if r.enabled), key=_route_id), requests)
    # A new priority value: the compiled table cannot patch, and builds it whole.
    edited = R("r001", path="/p1/", priority=99)
    changes = {"r001": edited, "r002": None}
    routes = [*(r for r in routes if r.id not in changes), edited]
    alone = fp.RouteTable(None, previous=alone, changes=changes)
    _same_answers(alone, sorted((r for r in routes if r.enabled), key=_route_id), requests)
    with pytest.raises(TypeError, match="routes=None"):
        fp.RouteTable(None, changes=changes)
    with pytest.raises(TypeError, match="routes=None"):
        fp.RouteTable(None, previous=alone)


def test_many_ids_added_between_two_neighbours(fp: ModuleType) -> None:
    """Each new id sorts between the last one added and "b", all in one group: the table must
    still order every id correctly (an earlier compiled table gave ids spaced-out ranks, and
    the gap between two of them halved with every id added between them)."""
    routes = [R("a", path="/x/"), R("b", path="/x/")]
    table = fp.RouteTable(routes)
    requests = [("h", "/x/1", "GET", None)]
    for k in range(1, 45):
        routes = [*routes, R("a" + "z" * k, path="/x/")]
        table = fp.RouteTable(routes, previous=table)
        _same_answers(table, routes, requests)
    # And a route edited, one deleted, one with a new priority, all in a row.
    routes[3] = R(routes[3].id, path="/x/", methods=("POST",))
    table = fp.RouteTable(routes, previous=table)
    _same_answers(table, routes, [*requests, ("h", "/x/1", "POST", None)])
    del routes[0]
    table = fp.RouteTable(routes, previous=table)
    _same_answers(table, routes, requests)
    routes.append(R("c", path="/x/", priority=7))
    table = fp.RouteTable(routes, previous=table)
    _same_answers(table, routes, requests)
    with pytest.raises(ValueError, match="duplicate"):
        fp.RouteTable([*routes, R("c", path="/y/")], previous=table)


def _big_config() -> list[Route]:
    """Over 512 entries in each map the compiled table keeps (ids, exact hosts, wildcard
    suffixes, one bucket's exact paths and prefixes): such maps are split into shards."""
    routes = [R(f"any{i:04d}", path=f"/p{i}/", priority=i % 3) for i in range(700)]
    routes += [R(f"exa{i:04d}", path=f"/e{i}", path_type="exact") for i in range(600)]
    routes += [R(f"hst{i:04d}", hosts=(f"h{i}.test",), path="/") for i in range(600)]
    routes += [R(f"wld{i:04d}", hosts=(f"*.w{i}.test",), path="/w/") for i in range(600)]
    routes += [R(f"rgx{i:02d}", path=rf"^/r{i}/(\d+)$", path_type="regex") for i in range(20)]
    return routes


def _big_requests(rng: random.Random) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for _ in range(40):
        i = rng.randrange(760)
        host = rng.choice([f"h{i}.test", f"a.w{i}.test", "other.test"])
        path = rng.choice([f"/p{i}/x", f"/e{i}", "/w/x", f"/r{i % 25}/7", "/p1/x"])
        out.append((host, path, rng.choice(["GET", "POST"]), None))
    return out


def _every_route_requests() -> list[tuple[Any, ...]]:
    """A request aimed at each id `_big_config` and the changes below may use."""
    out: list[tuple[Any, ...]] = []
    for i in range(760):
        out += [
            ("other.test", f"/p{i}/x", "GET", None),
            ("other.test", f"/e{i}", "POST", None),
            (f"h{i}.test", "/p1/x", "GET", None),
            (f"a.w{i}.test", "/w/x", "GET", None),
        ]
    out += [("other.test", f"/r{i}/7", "GET", None) for i in range(25)]
    return out


def _big_edit(rid: str, rng: random.Random) -> Route:
    """A new version of route `rid` of `_big_config` (or a new route of the same kind)."""
    kind, at = rid[:3], int(rid[3:])
    match kind:
        case "any":
            return R(rid, path=f"/p{at}/", priority=rng.randrange(3))
        case "exa":
            return R(rid, path=f"/e{at}", path_type="exact", methods=("GET",))
        case "hst":
            return R(rid, hosts=(f"h{at}.test",), path=rng.choice(["/", "/p1/"]))
        case "wld":
            return R(rid, hosts=(f"*.w{at}.test",), path="/w/", priority=1)
        case _:
            return R(rid, path=rf"^/r{at}/(\d+)$", path_type="regex", priority=2)


def test_a_big_table_patched_many_times_answers_as_a_new_one() -> None:
    """A long chain of one-route changes on a table big enough that the compiled one shares
    map shards between tables: each table answers as one built from scratch, and a table
    made earlier in the chain still answers as it did."""
    fp = _compiled()
    rng = random.Random(7)
    routes = {r.id: r for r in _big_config()}
    table = alone = first = fp.RouteTable(tuple(routes.values()))
    first_answers = [_summary(first.match(*req)) for req in _every_route_requests()]
    kinds = ["any", "exa", "hst", "wld", "rgx"]
    for step in range(150):
        kind = rng.choice(kinds)
        rid = f"{kind}{rng.randrange(760):04d}" if kind != "rgx" else f"rgx{rng.randrange(25):02d}"
        new: Route | None
        if rid in routes and rng.random() < 0.35:
            new = None
        else:
            new = dataclasses.replace(_big_edit(rid, rng), enabled=rng.random() > 0.1)
        if new is None:
            routes.pop(rid, None)
        else:
            routes[rid] = new
        table = fp.RouteTable(tuple(routes.values()), previous=table, changes={rid: new})
        alone = fp.RouteTable(None, previous=alone, changes={rid: new})
        if step % 15 == 14:
            enabled = [r for r in routes.values() if r.enabled]
            requests = _big_requests(rng)
            _same_answers(table, enabled, requests)
            _same_answers(alone, sorted(enabled, key=_route_id), requests)
    _same_answers(table, [r for r in routes.values() if r.enabled], _big_requests(rng))
    assert [_summary(first.match(*req)) for req in _every_route_requests()] == first_answers


# ------------------------------------------------------------------------- response parsing

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 5\r\nX-A:  v v \t\r\n\r\nhello"


def test_simple_response_is_parsed_as_llhttp_reports_it(fp: ModuleType) -> None:
    assert fp.parse_simple_response(OK_RESPONSE) == (
        200,
        b"OK",
        [(b"Server", b"up"), (b"Content-Length", b"5"), (b"X-A", b"v v \t")],
        True,
        b"hello",
    )
    assert fp.parse_simple_response(
        b"HTTP/1.0 503 Busy Now\r\ncontent-length: 0\r\nConnection: Keep-Alive\r\n\r\n"
    ) == (503, b"Busy Now", [(b"content-length", b"0"), (b"Connection", b"Keep-Alive")], True, b"")
    assert fp.parse_simple_response(b"HTTP/1.0 200 \r\nContent-Length: 0\r\n\r\n") == (
        200,
        b"",
        [(b"Content-Length", b"0")],
        False,  # HTTP/1.0 without keep-alive
        b"",
    )
    closing = b"HTTP/1.1 404 No\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno"
    assert fp.parse_simple_response(closing) == (
        404,
        b"No",
        [(b"Connection", b"close"), (b"Content-Length", b"2")],
        False,
        b"no",
    )


@pytest.mark.parametrize(
    "data",
    [
        OK_RESPONSE[:-1],  # body incomplete
        OK_RESPONSE + b"x",  # bytes after the response
        OK_RESPONSE[:20],  # head incomplete
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # no length: the close ends the body
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1 \r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: \x80\r\nContent-Length: 0\r\n\r\n",  # obs-text
        b"HTTP/1.1 200 \xc3\xa9\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",  # obs-fold
        b"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: " + b"a" * 8192 + b"\r\n\r\n",
    ],
)
def test_anything_but_the_simple_case_is_left_to_llhttp(fp: ModuleType, data: bytes) -> None:
    assert fp.parse_simple_response(data) is None


class _Llhttp:
    """What an httptools parser of `parser_type` reports for `data` (the reference): the
    callbacks both kinds of message have; a subclass sets up its own fields, then calls this."""

    def __init__(self, data: bytes, parser_type: Any) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = 0
        self.parser: Any = parser_type(self)
        try:
            self.parser.feed_data(data)
            self.error = False
        except httptools.HttpParserError:
            self.error = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.complete += 1


class _LlhttpResponse(_Llhttp):
    """What httptools' response parser reports for one read."""

    def __init__(self, data: bytes) -> None:
        self.reason = b""
        self.body = b""
        self.head: tuple[int, bool] | None = None
        super().__init__(data, httptools.HttpResponseParser)

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_headers_complete(self) -> None:
        self.head = (self.parser.get_status_code(), self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.body += body


_FIELD_NAMES = [
    b"Content-Length",
    b"content-length",
    b"Connection",
    b"X-A",
    b"Server",
    b"Transfer-Encoding",
    b"Upgrade",
    b"Proxy-Connection",
    b"Bad Name",
    b"",
    b"X@",
]
_FIELD_VALUES = [
    b"0",
    b"5",
    b"05",
    b" 5",
    b"close",
    b"Keep-Alive",
    b"keep-alive, close",
    b"chunked",
    b"",
    b" \t",
    b"v \t",
    b"\x80",
    b"a\x7fb",
    b"upgrade",
]


def _usual_or_odd(draw: st.DrawFn, usual: list[bytes], odd: st.SearchStrategy[bytes]) -> bytes:
    """One of `usual` seven times in eight, else something from `odd`."""
    if draw(st.integers(0, 7)) == 0:
        return draw(odd)
    return draw(st.sampled_from(usual))


@st.composite
def _responses(draw: st.DrawFn) -> bytes:
    """Mostly well-formed responses with a matching Content-Length, each part sometimes odd."""

    def part(usual: list[bytes], odd: st.SearchStrategy[bytes]) -> bytes:
        return _usual_or_odd(draw, usual, odd)

    version = part([b"HTTP/1.1", b"HTTP/1.0"], st.sampled_from([b"HTTP/2.0", b"HTTP/1.1 "]))
    status = part(
        [b"200", b"404", b"599"], st.sampled_from([b"204", b"304", b"101", b"99", b"2000"])
    )
    reason = part([b"OK", b"", b"Not Found"], st.binary(max_size=4) | st.just(b"a\tb"))
    eol = part([b"\r\n"], st.sampled_from([b"\n", b"\r"]))
    body = draw(st.binary(max_size=6))
    lines = [version + b" " + status + b" " + reason]
    fields = [(b"Content-Length", b": ", b"%d" % len(body))]
    for _ in range(draw(st.integers(0, 3))):
        name = part(_FIELD_NAMES[:5], st.sampled_from(_FIELD_NAMES[5:]) | st.binary(max_size=4))
        sep = part([b": ", b":"], st.sampled_from([b":\t ", b" :", b": \t"]))
        value = part(_FIELD_VALUES[:7], st.sampled_from(_FIELD_VALUES[7:]) | st.binary(max_size=4))
        fields.append((name, sep, value))
    if draw(st.integers(0, 9)) == 0:
        fields.pop(0)
    fields = draw(st.permutations(fields))
    lines += [name + sep + value for name, sep, value in fields]
    return eol.join(lines) + eol + eol + body + part([b""], st.just(b"x"))


@settings(max_examples=600)
@given(data=_responses())
def test_simple_response_agrees_with_the_spec_and_with_llhttp(data: bytes) -> None:
    ours = _fastpath_py.parse_simple_response(data)
    event("parsed" if ours is not None else "left to llhttp")
    if not NO_EXTENSIONS:
        assert _compiled().parse_simple_response(data) == ours
    if ours is None:
        return
    status, reason, headers, keep_alive, body = ours
    ref = _LlhttpResponse(data)
    assert not ref.error
    assert ref.head == (status, keep_alive)
    assert (ref.reason, ref.headers, ref.body, ref.complete) == (reason, headers, body, 1)


# -------------------------------------------------------------------------- request parsing

LIMITS = (8192, 8192, 100)  # max_request_line, max_header_size, max_headers
GET = b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  wrk \r\n\r\n"


def test_simple_request_is_parsed_as_llhttp_reports_it(fp: ModuleType) -> None:
    pipelined = GET + b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /"
    assert fp.parse_simple_request(pipelined, *LIMITS) == (
        len(GET),
        b"GET",
        b"/a/b?x=1&y=%20",
        [(b"Host", b"example.com"), (b"User-Agent", b"wrk ")],
        "1.1",
        True,
    )
    assert fp.parse_simple_request(pipelined[len(GET) :], *LIMITS) == (
        len(pipelined) - len(GET) - 5,
        b"HEAD",
        b"/",
        [(b"Connection", b"keep-alive")],
        "1.0",
        True,
    )
    closing = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n"
    assert fp.parse_simple_request(closing, *LIMITS) == (
        len(closing),
        b"GET",
        b"/",
        [(b"Host", b"a"), (b"Connection", b"Close")],
        "1.1",
        False,
    )
    assert fp.parse_simple_request(b"GET / HTTP/1.0\r\n\r\n", *LIMITS) == (
        18,
        b"GET",
        b"/",
        [],
        "1.0",
        False,
    )


@pytest.mark.parametrize(
    "data",
    [
        GET[:-1],  # head incomplete
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, te\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",  # absolute form
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \x80\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
def test_any_other_request_is_left_to_llhttp(fp: ModuleType, data: bytes) -> None:
    assert fp.parse_simple_request(data, *LIMITS) is None


def test_simple_request_limits_are_the_cores(fp: ModuleType) -> None:
    # Over a limit: llhttp's path answers 414 / 431, so the shortcut steps aside.
    assert fp.parse_simple_request(GET, 14, 8192, 100) is not None
    assert fp.parse_simple_request(GET, 13, 8192, 100) is None
    size = len(b"Host") + len(b"example.com") + 4 + len(b"User-Agent") + len(b"wrk ") + 4
    assert fp.parse_simple_request(GET, 8192, size, 100) is not None
    assert fp.parse_simple_request(GET, 8192, size - 1, 100) is None
    assert fp.parse_simple_request(GET, 8192, 8192, 2) is not None
    assert fp.parse_simple_request(GET, 8192, 8192, 1) is None


class _LlhttpRequest(_Llhttp):
    """What httptools' request parser reports for the first request in `data`."""

    def __init__(self, data: bytes) -> None:
        self.url = b""
        self.head: tuple[bytes, str, bool, bool] | None = None
        super().__init__(data, httptools.HttpRequestParser)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        p = self.parser
        self.head = (
            p.get_method(),
            p.get_http_version(),
            p.should_keep_alive(),
            p.should_upgrade(),
        )


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    """Mostly simple requests, each part sometimes odd."""

    def part(usual: list[bytes], odd: st.SearchStrategy[bytes]) -> bytes:
        return _usual_or_odd(draw, usual, odd)

    method = part([b"GET", b"HEAD"], st.sampled_from([b"POST", b"get", b"CONNECT", b"G ET"]))
    target = part([b"/", b"/a/b?c=d&e", b"/%41;x=1:@!$'()*+,"], st.binary(max_size=5))
    version = part([b"HTTP/1.1", b"HTTP/1.0"], st.sampled_from([b"HTTP/2.0", b"HTTP/1.1 "]))
    eol = part([b"\r\n"], st.sampled_from([b"\n", b"\r"]))
    lines = [method + b" " + target + b" " + version]
    for _ in range(draw(st.integers(0, 3))):
        name = part(
            [b"Host", b"Connection", b"X-A", b"Accept"],
            st.sampled_from([b"Content-Length", b"Upgrade", b"Expect", b"Transfer-Encoding"])
            | st.binary(max_size=4),
        )
        sep = part([b": ", b":"], st.sampled_from([b":\t ", b" :", b": \t"]))
        value = part(
            [b"a", b"close", b"keep-alive", b"", b"v \t", b"Keep-Alive"],
            st.sampled_from([b"upgrade", b"0", b"close, te", b"\x80"]) | st.binary(max_size=4),
        )
        lines.append(name + sep + value)
    tail = part([b"", b"GET / HTTP/1.1\r\n\r\n"], st.binary(max_size=6))
    return eol.join(lines) + eol + eol + tail


@settings(max_examples=600)
@given(data=_requests())
def test_simple_request_agrees_with_the_spec_and_with_llhttp(data: bytes) -> None:
    ours = _fastpath_py.parse_simple_request(data, *LIMITS)
    event("parsed" if ours is not None else "left to llhttp")
    if not NO_EXTENSIONS:
        assert _compiled().parse_simple_request(data, *LIMITS) == ours
    if ours is None:
        return
    end, method, target, headers, version, keep_alive = ours
    ref = _LlhttpRequest(data[:end])
    assert not ref.error
    assert ref.head == (method, version, keep_alive, False)
    assert (ref.url, ref.headers, ref.complete) == (target, headers, 1)
