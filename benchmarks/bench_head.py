"""Request / response head building, compiled (`c`) vs plain Python (`py`).

    .venv/bin/pytest benchmarks/bench_head.py --benchmark-only

A browser-like request (a dozen headers, keep-alive, an X-Forwarded-For from a load balancer)
with a route's header edits, and a typical upstream response. With `--benchmark-disable` (CI)
each body runs once and the asserts still check the output.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import pytest

from minirouter import _fastpath_py
from minirouter.model import HeaderEdits

REQUEST_HEADERS = [
    (b"Host", b"www.example.com"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"Accept-Language", b"en-US,en;q=0.5"),
    (b"Accept-Encoding", b"gzip, deflate, br, zstd"),
    (b"Referer", b"https://www.example.com/"),
    (b"Cookie", b"session=4f2a9c1e8b7d6a5f; theme=dark"),
    (b"Connection", b"keep-alive"),
    (b"Upgrade-Insecure-Requests", b"1"),
    (b"Sec-Fetch-Dest", b"document"),
    (b"Sec-Fetch-Mode", b"navigate"),
    (b"X-Forwarded-For", b"203.0.113.9"),
    (b"X-Debug", b"1"),
]
RESPONSE_HEADERS = [
    (b"Server", b"gunicorn"),
    (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
    (b"Content-Type", b"text/html; charset=utf-8"),
    (b"Content-Length", b"5120"),
    (b"Cache-Control", b"private, max-age=0"),
    (b"Set-Cookie", b"session=4f2a9c1e8b7d6a5f; Path=/; HttpOnly; SameSite=Lax"),
    (b"Connection", b"keep-alive"),
    (b"Keep-Alive", b"timeout=5"),
]
REQUEST_EDITS = HeaderEdits(set={"X-Env": "prod"}, add={"X-Route": "web"}, remove=("X-Debug",))
RESPONSE_EDITS = HeaderEdits(set={"Server": "minirouter"}, remove=("X-Powered-By",))


def _module(name: str) -> ModuleType:
    if name == "py":
        return _fastpath_py
    if os.environ.get("MINIROUTER_NO_EXTENSIONS") == "1":
        pytest.skip("MINIROUTER_NO_EXTENSIONS=1: the compiled module is not built")
    return importlib.import_module("minirouter._fastpath")


@pytest.mark.parametrize("impl", ["c", "py"])
def test_request_head(benchmark: Any, impl: str) -> None:
    module = _module(impl)
    edits = module.compile_edits(REQUEST_EDITS)
    benchmark.group = "request head"

    def build() -> bytes:
        head: bytes = module.build_request_head(
            b"GET",
            b"/account/settings?tab=profile",
            REQUEST_HEADERS,
            host=b"10.0.3.17:8080",
            client_ip=b"198.51.100.23",
            proto=b"https",
            forwarded_host=b"www.example.com",
            edits=edits,
            upgrade=None,
            content_length=None,
            chunked=False,
        )
        return head

    head = benchmark(build)
    assert head.startswith(
        b"GET /account/settings?tab=profile HTTP/1.1\r\nHost: 10.0.3.17:8080\r\n"
    )
    assert b"X-Forwarded-For: 203.0.113.9, 198.51.100.23\r\n" in head
    assert b"Connection" not in head
    assert b"X-Debug" not in head
    assert head.endswith(b"Via: 1.1 minirouter\r\nX-Env: prod\r\nX-Route: web\r\n\r\n")
    assert head == _fastpath_py.build_request_head(
        b"GET",
        b"/account/settings?tab=profile",
        REQUEST_HEADERS,
        host=b"10.0.3.17:8080",
        client_ip=b"198.51.100.23",
        proto=b"https",
        forwarded_host=b"www.example.com",
        edits=_fastpath_py.compile_edits(REQUEST_EDITS),
        upgrade=None,
        content_length=None,
        chunked=False,
    )


@pytest.mark.parametrize("impl", ["c", "py"])
def test_response_head(benchmark: Any, impl: str) -> None:
    module = _module(impl)
    edits = module.compile_edits(RESPONSE_EDITS)
    benchmark.group = "response head"

    def build() -> bytes:
        head: bytes = module.build_response_head(
            200,
            b"OK",
            RESPONSE_HEADERS,
            edits=edits,
            keep_alive=True,
            upgrade=None,
            content_length=5120,
            chunked=False,
        )
        return head

    head = benchmark(build)
    assert head == (
        b"HTTP/1.1 200 OK\r\n"
        b"Server: minirouter\r\n"
        b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Cache-Control: private, max-age=0\r\n"
        b"Set-Cookie: session=4f2a9c1e8b7d6a5f; Path=/; HttpOnly; SameSite=Lax\r\n"
        b"Content-Length: 5120\r\n"
        b"\r\n"
    )
