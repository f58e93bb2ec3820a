"""RouteTable.match at 10 / 1k / 10k / 100k routes, compiled (`c`) vs plain Python (`py`).

    .venv/bin/pytest benchmarks/bench_match.py --benchmark-only

Targets (docs/architecture.md): the compiled match takes at most 1 us (median) at 10k routes and
is at least 10x faster than the plain module; lookup cost must not grow with the route count.
Also the cost of a new table after one route of 10k changed, patched from the previous table or
built whole.
Tables are built once per session, outside the timed part. With `--benchmark-disable` (CI) each
body runs once and the asserts still check the answer.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from minirouter import _fastpath_py
from minirouter.model import Route

SIZES = {"10": 10, "1k": 1_000, "10k": 10_000, "100k": 100_000}


def _module(name: str) -> ModuleType:
    if name == "py":
        return _fastpath_py
    if os.environ.get("MINIROUTER_NO_EXTENSIONS") == "1":
        pytest.skip("MINIROUTER_NO_EXTENSIONS=1: the compiled module is not built")
    return importlib.import_module("minirouter._fastpath")


def _site_host(site: int) -> str:
    # Every fifth site is a wildcard host; the rest are exact hosts.
    return f"*.t{site}.example.net" if site % 5 == 4 else f"svc{site}.example.com"


def make_routes(count: int) -> list[Route]:
    """A deterministic config: sites of 4 routes each, plus a few regex and any-host routes.

    Site `s` (host `svc<s>.example.com`, or `*.t<s>.example.net` for every fifth) has routes
    `s<s>-root` (prefix "/"), `s<s>-api` (prefix "/api/"), `s<s>-users` (prefix
    "/api/v<s % 3>/users/", GET and POST only) and `s<s>-health` (exact "/healthz"). Every
    seventh site's api route has priority 5 and every eleventh has a header-conditioned canary.
    """
    fixed = [
        Route(id="any-robots", path="/robots.txt", path_type="exact", upstream="u"),
        Route(
            id="media-user",
            hosts=("media.example.com",),
            path=r"/u/(\d+)/profile",
            path_type="regex",
            rewrite="/profiles/$1",
            upstream="u",
        ),
        Route(
            id="media-file",
            hosts=("media.example.com",),
            path=r"/f/(.+)\.(png|jpg)$",
            path_type="regex",
            upstream="u",
        ),
        Route(id="media-root", hosts=("media.example.com",), path="/static/", upstream="u"),
        Route(
            id="legacy",
            hosts=("*.example.net",),
            path=r"/old/(.*)",
            path_type="regex",
            rewrite="/new/$1",
            upstream="u",
        ),
    ]
    routes = list(fixed)
    site = 0
    while len(routes) < count:
        hosts = (_site_host(site),)
        prefix = f"s{site}"
        for route in (
            Route(id=f"{prefix}-root", hosts=hosts, path="/", upstream="u"),
            Route(
                id=f"{prefix}-api",
                hosts=hosts,
                path="/api/",
                upstream="u",
                priority=5 if site % 7 == 6 else 0,
            ),
            Route(
                id=f"{prefix}-users",
                hosts=hosts,
                path=f"/api/v{site % 3}/users/",
                methods=("GET", "POST"),
                strip_prefix=True,
                upstream="u",
            ),
            Route(
                id=f"{prefix}-health", hosts=hosts, path="/healthz", path_type="exact", upstream="u"
            ),
        ):
            if len(routes) < count:
                routes.append(route)
        if site % 11 == 3 and len(routes) < count:
            routes.append(Route(id=f"{prefix}-canary", hosts=hosts, path="/api/", priority=1,
                                headers={"X-Canary": "1"}, upstream="u"))  # fmt: skip
        site += 1
    return routes


@dataclass(frozen=True)
class Request:
    host: str
    path: str
    method: str
    headers: dict[str, str] | None
    route_id: str | None  # the expected winner
    forwarded: str | None = None  # the expected Match.path


def _last_site(routes: list[Route], wildcard: bool) -> int:
    """The last site whose users route made it into the config (near the end, so a scan would
    have to walk almost everything), of the wanted host kind and without a priority override."""
    ids = {route.id for route in routes}
    for site in range(len(routes), -1, -1):
        if f"s{site}-users" in ids and (site % 5 == 4) == wildcard and site % 7 != 6:
            return site
    raise AssertionError("no such site")


def _request(routes: list[Route], kind: str) -> Request:
    if kind == "exact-host":
        # The common case: an exact host, a prefix route, a port in the Host header.
        s = _last_site(routes, wildcard=False)
        return Request(f"svc{s}.example.com:8443", f"/api/v{s % 3}/users/42", "GET", None,
                       f"s{s}-users", "/42")  # fmt: skip
    if kind == "wildcard":
        s = _last_site(routes, wildcard=True)
        return Request(f"app.t{s}.example.net", f"/api/v{s % 3}/users/7/x", "POST",
                       {"x-canary": "0"}, f"s{s}-users", "/7/x")  # fmt: skip
    if kind == "method-fallback":
        # The users route refuses DELETE: the lookup must fall back to the shorter prefix.
        s = _last_site(routes, wildcard=False)
        return Request(f"svc{s}.example.com", f"/api/v{s % 3}/users/1", "DELETE", None,
                       f"s{s}-api")  # fmt: skip
    if kind == "regex":
        return Request("media.example.com", "/u/1234/profile", "GET", None, "media-user",
                       "/profiles/1234")  # fmt: skip
    assert kind == "miss"
    return Request("nowhere.example.org", "/x", "GET", None, None)


class Tables:
    """Route tables built once per session, keyed by (implementation, size)."""

    def __init__(self) -> None:
        self._routes: dict[int, list[Route]] = {}
        self._tables: dict[tuple[str, int], Any] = {}

    def routes(self, count: int) -> list[Route]:
        if count not in self._routes:
            with _no_gc():
                self._routes[count] = make_routes(count)
        return self._routes[count]

    def get(self, impl: str, count: int) -> Any:
        key = (impl, count)
        if key not in self._tables:
            routes = self.routes(count)
            with _no_gc():
                self._tables[key] = _module(impl).RouteTable(routes)
        return self._tables[key]


@contextmanager
def _no_gc() -> Iterator[None]:
    # A 100k-route build allocates about a million objects, none of them garbage; the cyclic
    # collector would walk them over and over (it roughly doubles the build time).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@pytest.fixture(scope="session")
def tables() -> Tables:
    return Tables()


def _check(found: Any, request: Request) -> None:
    if request.route_id is None:
        assert found is None
        return
    assert found is not None
    assert found.route.id == request.route_id
    if request.forwarded is not None:
        assert found.path == request.forwarded


def _run(benchmark: Any, table: Any, request: Request) -> Any:
    match: Callable[..., Any] = table.match
    return benchmark(match, request.host, request.path, request.method, request.headers)


@pytest.mark.parametrize("impl", ["c", "py"])
@pytest.mark.parametrize("size", list(SIZES))
def test_match(benchmark: Any, tables: Tables, size: str, impl: str) -> None:
    count = SIZES[size]
    table = tables.get(impl, count)
    assert len(table) == count
    request = _request(tables.routes(count), "exact-host")
    benchmark.group = f"match {size} routes"
    _check(_run(benchmark, table, request), request)


@pytest.mark.parametrize("impl", ["c", "py"])
@pytest.mark.parametrize("kind", ["wildcard", "method-fallback", "regex", "miss"])
def test_match_kinds_10k(benchmark: Any, tables: Tables, kind: str, impl: str) -> None:
    table = tables.get(impl, 10_000)
    request = _request(tables.routes(10_000), kind)
    benchmark.group = f"match 10k routes: {kind}"
    _check(_run(benchmark, table, request), request)


def _edited(routes: list[Route], at: int) -> list[Route]:
    """`routes` with the route at `at` replaced by an equal-looking new object (an edit)."""
    changed = list(routes)
    changed[at] = dataclasses.replace(routes[at], priority=routes[at].priority)
    return changed


@pytest.mark.parametrize("how", ["told", "patched", "full"])
def test_table_after_one_change_10k(benchmark: Any, tables: Tables, how: str) -> None:
    """A new compiled table after one route of 10k changed: built from the previous table,
    told the changed id alone (`told`: as the mirror does) or comparing every route
    (`patched`), both sharing what did not change; or from scratch (`full`). What a config
    change costs the event loop of every core, on top of validating the change."""
    routes = tables.routes(10_000)
    previous = tables.get("c", 10_000)
    at = len(routes) // 2
    changed = _edited(routes, at)
    build = _module("c").RouteTable
    benchmark.group = "route table after one change, 10k routes"
    if how == "told":
        table = benchmark(build, None, previous=previous, changes={changed[at].id: changed[at]})
    elif how == "patched":
        table = benchmark(build, changed, previous=previous)
    else:
        table = benchmark(build, changed)
    request = _request(routes, "exact-host")
    _check(table.match(request.host, request.path, request.method, request.headers), request)
