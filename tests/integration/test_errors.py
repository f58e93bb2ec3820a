"""The router's own responses: 400, 404, 408, 413, 414, 431, 502, 503 (see test_health), 504,
the request limits (defaults and flags), keep-alive idle timeout. None of them reaches an upstream."""

from __future__ import annotations

import contextlib
import time

import pytest

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import CoreProcess
from .httpclient import RawConnection, Response, raw_request_bytes, request
from .upstreams import BlackholeListener, HttpUpstream, UpstreamSet, free_port


class Env:
    def __init__(self, core: CoreProcess, echo: HttpUpstream) -> None:
        self.core = core
        self.echo = echo

    def exchange(self, data: bytes, *, expect_close: bool, timeout: float = 10.0) -> Response:
        """Send raw bytes, read one response; check that the upstream saw nothing."""
        before = self.echo.request_count()
        with RawConnection(self.core.port, timeout) as c:
            c.send(data)
            r = c.read_response()
            if expect_close:
                assert c.wait_closed(5), f"connection not closed after {r.status}"
        assert len(r.body) < 1024, f"router's own response should be short: {r.describe()}"
        assert self.echo.request_count() == before, f"{r.status}: the request reached the upstream"
        return r


def echo_config(echo: HttpUpstream) -> dict[str, object]:
    return config([upstream("echo", echo.address)], [route("all", "echo", hosts=["ok.test"])])


@pytest.fixture(scope="module")
def defaults(module_upstreams: UpstreamSet, module_start_core: StartCore) -> Env:
    echo = module_upstreams.http("echo-defaults")
    return Env(module_start_core(echo_config(echo)), echo)


@pytest.fixture(scope="module")
def small(module_upstreams: UpstreamSet, module_start_core: StartCore) -> Env:
    echo = module_upstreams.http("echo-small")
    core = module_start_core(
        echo_config(echo),
        "--max-body-size",
        "2k",
        "--max-request-line",
        "1024",
        "--max-header-size",
        "4096",
        "--max-headers",
        "10",
        "--header-timeout",
        "1",
        "--keepalive-timeout",
        "1",
    )
    return Env(core, echo)


# -- 400 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ok.test\r\nThis is not a header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ok.test\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: ok.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ok.test\r\nHost: other.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ok.test\r\nX-Bad : v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ok.test\r\nX-Nul: a\x00b\r\n\r\n",
    ],
    ids=[
        "garbage",
        "bad-header-line",
        "bad-content-length",
        "two-content-lengths",
        "bad-chunk",
        "no-host",
        "two-hosts",
        "space-before-colon",
        "nul-in-value",
    ],
)
def test_400_malformed_then_close(defaults: Env, data: bytes) -> None:
    r = defaults.exchange(data, expect_close=True)
    assert r.status == 400, f"sent {data!r}: expected 400, got {r.describe()}"


def test_400_after_a_good_request_on_the_same_connection(defaults: Env) -> None:
    with RawConnection(defaults.core.port) as c:
        c.send(raw_request_bytes("GET", "/first", host="ok.test"))
        first = c.read_response()
        assert first.status == 200, first.describe()
        c.send(b"NOT HTTP AT ALL\r\n\r\n")
        second = c.read_response()
        assert second.status == 400, second.describe()
        assert c.wait_closed(5)


# -- 404 ----------------------------------------------------------------------------------------


def test_404_no_route(defaults: Env) -> None:
    r = defaults.exchange(raw_request_bytes("GET", "/", host="nope.test"), expect_close=False)
    assert r.status == 404, r.describe()


def test_404_then_connection_usable_or_close_announced(defaults: Env) -> None:
    with RawConnection(defaults.core.port) as c:
        c.send(raw_request_bytes("POST", "/x", host="nope.test", body=b"z" * 100))
        nf = c.read_response()
        assert nf.status == 404
        if "close" in (nf.header("Connection") or "").lower():
            assert c.wait_closed(5), "Connection: close announced but the connection stays open"
            return
        c.send(raw_request_bytes("GET", "/y", host="ok.test"))
        r = c.read_response()
        assert r.status == 200 and r.json()["target"] == "/y", r.describe()


# -- 413 ----------------------------------------------------------------------------------------


def test_413_default_limit(defaults: Env) -> None:
    body = b"a" * 2_000_000
    before = defaults.echo.request_count()
    with RawConnection(defaults.core.port, 15) as c:
        c.send(b"POST /big HTTP/1.1\r\nHost: ok.test\r\nContent-Length: %d\r\n\r\n" % len(body))
        # the router may answer and close before reading the body
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            c.send(body)
        r = c.read_response()
    assert r.status == 413, f"2 MB body with default --max-body-size 1m: {r.describe()}"
    assert defaults.echo.request_count() == before
    ok = request(defaults.core.port, "POST", "/fits", host="ok.test", body=b"b" * 500_000)
    assert ok.status == 200 and ok.json()["body_len"] == 500_000, ok.describe()


def test_413_flag_with_suffix(small: Env) -> None:
    r = small.exchange(
        raw_request_bytes("POST", "/", host="ok.test", body=b"x" * 5000), expect_close=False
    )
    assert r.status == 413, f"5000-byte body with --max-body-size 2k: {r.describe()}"
    ok = request(small.core.port, "POST", "/", host="ok.test", body=b"x" * 1000)
    assert ok.status == 200, ok.describe()


def test_413_chunked_body_over_limit(small: Env) -> None:
    chunk = b"y" * 1000
    data = (
        b"POST /chunked HTTP/1.1\r\nHost: ok.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"3e8\r\n" + chunk + b"\r\n" for _ in range(5))
        + b"0\r\n\r\n"
    )
    with RawConnection(small.core.port) as c:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            c.send(data)
        r = c.read_response()
    assert r.status == 413, f"5000-byte chunked body with --max-body-size 2k: {r.describe()}"


# -- 414 ----------------------------------------------------------------------------------------


def test_414_default_request_line(defaults: Env) -> None:
    long_path = "/" + "a" * 9000
    r = defaults.exchange(raw_request_bytes("GET", long_path, host="ok.test"), expect_close=False)
    assert r.status == 414, r.describe()
    ok = request(defaults.core.port, "GET", "/" + "b" * 7000, host="ok.test")
    assert ok.status == 200, ok.describe()


def test_414_flag(small: Env) -> None:
    r = small.exchange(
        raw_request_bytes("GET", "/" + "a" * 1100, host="ok.test"), expect_close=False
    )
    assert r.status == 414, f"1100-byte path with --max-request-line 1024: {r.describe()}"
    ok = request(small.core.port, "GET", "/" + "a" * 900, host="ok.test")
    assert ok.status == 200, ok.describe()


# -- 431 ----------------------------------------------------------------------------------------


def test_431_header_block_too_large_default(defaults: Env) -> None:
    headers = [(f"X-Big-{i}", "v" * 1000) for i in range(40)]
    r = defaults.exchange(
        raw_request_bytes("GET", "/", host="ok.test", headers=headers), expect_close=False
    )
    assert r.status == 431, f"40 KB of headers with default 32768: {r.describe()}"
    ok_headers = [(f"X-Big-{i}", "v" * 1000) for i in range(20)]
    ok = request(defaults.core.port, "GET", "/", host="ok.test", headers=ok_headers)
    assert ok.status == 200, ok.describe()


def test_431_too_many_headers_default(defaults: Env) -> None:
    headers = [(f"X-H-{i}", "v") for i in range(150)]
    r = defaults.exchange(
        raw_request_bytes("GET", "/", host="ok.test", headers=headers), expect_close=False
    )
    assert r.status == 431, f"150 headers with default --max-headers 100: {r.describe()}"
    ok = request(
        defaults.core.port,
        "GET",
        "/",
        host="ok.test",
        headers=[(f"X-H-{i}", "v") for i in range(50)],
    )
    assert ok.status == 200, ok.describe()


def test_431_flags(small: Env) -> None:
    many = [(f"X-H-{i}", "v") for i in range(20)]
    r = small.exchange(
        raw_request_bytes("GET", "/", host="ok.test", headers=many), expect_close=False
    )
    assert r.status == 431, f"20 headers with --max-headers 10: {r.describe()}"
    big = [("X-Big", "v" * 5000)]
    r = small.exchange(
        raw_request_bytes("GET", "/", host="ok.test", headers=big), expect_close=False
    )
    assert r.status == 431, f"5 KB header with --max-header-size 4096: {r.describe()}"
    ok = request(small.core.port, "GET", "/", host="ok.test", headers=[("X-A", "1"), ("X-B", "2")])
    assert ok.status == 200, ok.describe()


# -- 408 and idle keep-alive -------------------------------------------------------------------


def test_408_header_timeout_then_close(small: Env) -> None:
    before = small.echo.request_count()
    with RawConnection(small.core.port, 10) as c:
        start = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHost: ok.test\r\n")  # the head never ends
        r = c.read_response()
        elapsed = time.monotonic() - start
        assert r.status == 408, r.describe()
        assert c.wait_closed(5), "connection must be closed after 408"
    assert 0.5 <= elapsed <= 6, f"--header-timeout 1 answered after {elapsed:.2f}s"
    assert small.echo.request_count() == before


def test_keepalive_timeout_closes_idle_connection(small: Env) -> None:
    with RawConnection(small.core.port, 10) as c:
        c.send(raw_request_bytes("GET", "/1", host="ok.test"))
        assert c.read_response().status == 200
        c.send(raw_request_bytes("GET", "/2", host="ok.test"))  # reused at once: still open
        assert c.read_response().status == 200
        start = time.monotonic()
        assert c.wait_closed(8), "idle keep-alive connection not closed (--keepalive-timeout 1)"
        elapsed = time.monotonic() - start
    assert elapsed >= 0.5, f"closed after {elapsed:.2f}s, before the keep-alive timeout"


def test_slow_upstream_response_not_cut_by_client_timeouts(small: Env) -> None:
    """The keep-alive and header timeouts are for idle clients, not for a request in flight."""
    with RawConnection(small.core.port, 15) as c:
        c.send(raw_request_bytes("GET", "/slow", host="ok.test", headers=[("X-Delay", "2.5")]))
        r = c.read_response()
    assert r.status == 200, r.describe()


# -- 502 / 504 --------------------------------------------------------------------------------


def test_502_refused(start_core: StartCore) -> None:
    core = start_core(config([upstream("gone", f"127.0.0.1:{free_port()}")], [route("r", "gone")]))
    for method in ("GET", "POST"):
        r = request(core.port, method, "/", body=b"x" if method == "POST" else None)
        assert r.status == 502, f"{method} to a closed port: {r.describe()}"
        assert len(r.body) < 1024


def test_502_upstream_closes_without_answer(upstreams: UpstreamSet, start_core: StartCore) -> None:
    closer = upstreams.http("closer", mode="close")
    core = start_core(config([upstream("u", closer.address)], [route("r", "u")]))
    for method in ("GET", "POST"):
        r = request(core.port, method, "/", body=b"x" if method == "POST" else None)
        assert r.status == 502, f"{method} to an upstream that closes: {r.describe()}"


@pytest.mark.parametrize("mode", ["close_mid", "close_mid_chunked"])
def test_upstream_breaking_mid_response_is_not_passed_off_as_complete(
    upstreams: UpstreamSet, start_core: StartCore, mode: str
) -> None:
    breaker = upstreams.http("breaker", mode=mode)
    core = start_core(config([upstream("u", breaker.address)], [route("r", "u")]))
    with RawConnection(core.port, 10) as c:
        c.send(raw_request_bytes("GET", "/", host="x"))
        status, _, headers, head = c.read_head()
        assert status == 200, head
        rest = c.read_to_eof()  # must end: the router closes the client connection
    assert len(rest) < 100_000 + 200, "more bytes than the upstream sent"
    if mode == "close_mid_chunked":
        assert not rest.endswith(b"0\r\n\r\n"), (
            "router terminated a chunked body the upstream broke"
        )
    else:
        cl = dict((k.lower(), v) for k, v in headers).get("content-length")
        assert cl == "100000" and len(rest) < 100_000, (cl, len(rest))


def test_504_read_timeout(upstreams: UpstreamSet, start_core: StartCore) -> None:
    hang = upstreams.http("hang", mode="hang")
    core = start_core(
        config(
            [upstream("u", hang.address, timeouts={"connect": 2, "read": 0.5, "idle": 60})],
            [route("r", "u")],
        )
    )
    for method in ("GET", "POST"):
        start = time.monotonic()
        r = request(core.port, method, "/", body=b"x" if method == "POST" else None, timeout=15)
        elapsed = time.monotonic() - start
        assert r.status == 504, f"{method} to an upstream that never answers: {r.describe()}"
        assert 0.4 <= elapsed <= 5, f"timeouts.read 0.5 answered after {elapsed:.2f}s"


def test_504_connect_timeout(start_core: StartCore) -> None:
    blackhole = BlackholeListener()
    try:
        core = start_core(
            config(
                [
                    upstream(
                        "u", blackhole.address, timeouts={"connect": 0.5, "read": 30, "idle": 60}
                    )
                ],
                [route("r", "u")],
            )
        )
        for method in ("POST", "GET"):
            start = time.monotonic()
            r = request(core.port, method, "/", body=b"x" if method == "POST" else None, timeout=15)
            elapsed = time.monotonic() - start
            assert r.status == 504, f"{method}, connect never completes: {r.describe()}"
            assert elapsed <= 5, f"timeouts.connect 0.5 answered after {elapsed:.2f}s"
    finally:
        blackhole.close()


def test_408_slowloris_head_dripping_in(small: Env) -> None:
    """The header timeout bounds the whole head, not the gap between two bytes."""
    head = b"GET /drip HTTP/1.1\r\nHost: ok.test\r\nX-Long: " + b"a" * 100
    with RawConnection(small.core.port, 10) as c:
        start = time.monotonic()
        closed = False
        for byte in head:
            try:
                c.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if c.wait_closed(0.15) or time.monotonic() - start > 8:
                closed = True
                break
        elapsed = time.monotonic() - start
    assert closed, "a head dripping in byte by byte was never cut off (--header-timeout 1)"
    assert elapsed < 6, f"cut off only after {elapsed:.1f}s with --header-timeout 1"


def test_413_from_content_length_without_waiting_for_the_body(small: Env) -> None:
    before = small.echo.request_count()
    with RawConnection(small.core.port, 5) as c:
        c.send(b"POST /big HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 50000\r\n\r\n")
        r = c.read_response()  # no body sent: the answer must not wait for it
    assert r.status == 413, r.describe()
    assert small.echo.request_count() == before


def test_expect_100_continue(defaults: Env) -> None:
    """A client that waits for `100 Continue` before its body gets one (from the router or the
    upstream), then the final response."""
    body = b"e" * 5000
    with RawConnection(defaults.core.port, 5) as c:
        c.send(
            b"POST /expect HTTP/1.1\r\nHost: ok.test\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        status, _, _, head = c.read_head()
        assert status == 100, f"expected an interim 100 Continue, got {head!r}"
        c.send(body)
        r = c.read_response()
    assert r.status == 200, r.describe()
    assert r.json()["body_len"] == len(body)
