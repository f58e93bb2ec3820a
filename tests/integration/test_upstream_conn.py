"""The upstream side: pooled connections (closed by the upstream, idle timeout, pool size), aborted
clients not poisoning the pool, odd upstream responses (close-delimited, garbage, error statuses,
a slowly dripping body)."""

from __future__ import annotations

import hashlib
import threading
import time

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import CoreProcess, poll
from .httpclient import RawConnection, Response, raw_request_bytes, request
from .upstreams import HttpUpstream, UpstreamSet, pattern_sha256


def one(
    upstreams: UpstreamSet,
    start_core: StartCore,
    *,
    up_fields: dict[str, object] | None = None,
    **kw: object,
) -> tuple[CoreProcess, HttpUpstream]:
    echo = upstreams.http("echo", **kw)
    core = start_core(config([upstream("u", echo.address, **(up_fields or {}))], [route("r", "u")]))
    return core, echo


def test_pool_drops_connections_the_upstream_closed(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, echo = one(upstreams, start_core, idle_close=0.3)
    for i in range(6):
        method = "GET" if i % 2 == 0 else "POST"
        r = request(core.port, method, f"/n/{i}", body=b"data" if method == "POST" else None)
        assert r.status == 200, (
            f"request {i} ({method}) after the upstream closed its idle keep-alive connection: {r.describe()}"
        )
        assert r.json()["target"] == f"/n/{i}"
        poll(
            lambda: echo.open_connections() == 0,
            5,
            message="the upstream to close the idle connection",
        )


def test_idle_pooled_connections_closed_after_timeouts_idle(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, echo = one(
        upstreams, start_core, up_fields={"timeouts": {"connect": 2, "read": 10, "idle": 0.5}}
    )
    assert request(core.port).status == 200
    start = time.monotonic()
    poll(
        lambda: echo.open_connections() == 0,
        8,
        message="the router to close its pooled connection after timeouts.idle 0.5",
    )
    assert time.monotonic() - start < 8
    assert request(core.port).status == 200


def test_keepalive_caps_idle_pooled_connections(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, echo = one(upstreams, start_core, up_fields={"keepalive": 1})
    results: list[Response] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(request(core.port, headers={"X-Delay": "0.5"}))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert [r.status for r in results] == [200] * 4
    assert echo.connections >= 2, "4 concurrent requests should need several upstream connections"
    poll(
        lambda: echo.open_connections() <= 1,
        5,
        message=lambda: (
            f"at most keepalive=1 idle connection kept; upstream has {echo.open_connections()} open"
        ),
    )


def test_client_abort_mid_body_does_not_poison_the_pool(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, echo = one(upstreams, start_core)
    assert request(core.port, "GET", "/warm").status == 200
    with RawConnection(core.port) as c:
        c.send(b"POST /aborted HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 500)
        poll(lambda: echo.conn_ids_with(b"/aborted"), 5, message="the aborted request upstream")
    # the upstream connection carrying the half body must not be reused
    for i in range(5):
        r = request(core.port, "GET", f"/after/{i}", timeout=10)
        assert r.status == 200, r.describe()
        assert r.json()["target"] == f"/after/{i}", f"response of another request: {r.json()}"


def test_client_abort_mid_body_closes_the_upstream_connection(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, echo = one(upstreams, start_core)
    with RawConnection(core.port) as c:
        c.send(b"POST /aborted HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 500)
        conn_ids = poll(lambda: echo.conn_ids_with(b"/aborted"), 5, message="the request upstream")
    poll(
        lambda: echo.is_closed(conn_ids[0]),
        5,
        message="the router to close the upstream connection of a request whose client went away",
    )
    # and it does not count as in flight: SIGTERM exits at once (default --shutdown-timeout 30)
    start = time.monotonic()
    core.terminate()
    code = core.wait(10)
    assert code == 0 and time.monotonic() - start < 5, (
        f"exit code {code} after {time.monotonic() - start:.1f}s: the aborted request held up shutdown"
    )


def test_client_abort_while_waiting_does_not_poison_the_pool(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, echo = one(upstreams, start_core)
    assert request(core.port, "GET", "/warm").status == 200
    with RawConnection(core.port) as c:
        c.send(raw_request_bytes("GET", "/slow-abandoned", host="x", headers=[("X-Delay", "1")]))
        poll(lambda: echo.in_flight == 1, 5, message="the slow request to reach the upstream")
    for i in range(5):
        r = request(core.port, "GET", f"/after/{i}", timeout=10)
        assert r.status == 200, r.describe()
        got = r.json()["target"]
        assert got == f"/after/{i}", (
            f"GET /after/{i} got the answer to {got} (pooled connection reused)"
        )


def test_close_delimited_upstream_response(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, _ = one(upstreams, start_core, mode="close_delimited")
    h = hashlib.sha256()
    with RawConnection(core.port, 15) as c:
        c.send(raw_request_bytes("GET", "/", host="x", headers=[("X-Download", "300000")]))
        r = c.read_response(sink=h)
    assert r.status == 200, r.describe()
    assert r.extra["length"] == 300000
    assert h.hexdigest() == pattern_sha256(300000)


def test_garbage_from_upstream_is_502(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, _ = one(upstreams, start_core, mode="garbage")
    for method in ("GET", "POST"):
        r = request(core.port, method, "/", body=b"x" if method == "POST" else None)
        assert r.status == 502, f"{method}, upstream answered non-HTTP bytes: {r.describe()}"


def test_upstream_error_statuses_pass_through(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, _ = one(upstreams, start_core)
    for status in (404, 500, 503):
        r = request(core.port, headers={"X-Status": str(status)})
        assert r.status == status, r.describe()
        assert r.json()["name"] == "echo", "the upstream's own body, not a router page"


def test_slow_body_not_cut_by_read_timeout(upstreams: UpstreamSet, start_core: StartCore) -> None:
    """timeouts.read bounds each wait between two reads, not the whole transfer."""
    core, _ = one(
        upstreams, start_core, up_fields={"timeouts": {"connect": 2, "read": 0.6, "idle": 60}}
    )
    r = request(core.port, headers={"X-Drip": "6", "X-Drip-Interval": "0.3"}, timeout=15)
    assert r.status == 200, r.describe()
    assert len(r.body) == 6000


def test_body_stalled_longer_than_read_timeout_is_cut(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    """An upstream that stops sending mid-body: the client learns it from a close, in time."""
    core, _ = one(
        upstreams, start_core, up_fields={"timeouts": {"connect": 2, "read": 0.5, "idle": 60}}
    )
    start = time.monotonic()
    with RawConnection(core.port, 15) as c:
        c.send(
            raw_request_bytes(
                "GET", "/", host="x", headers=[("X-Drip", "3"), ("X-Drip-Interval", "3")]
            )
        )
        status, _, _, head = c.read_head()
        assert status == 200, head
        assert c.wait_closed(10), "the stalled response was not cut"
    elapsed = time.monotonic() - start
    assert elapsed < 3, f"cut after {elapsed:.1f}s with timeouts.read 0.5"
