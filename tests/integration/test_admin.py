"""The --admin listener: GET /healthz (JSON) and GET /metrics (Prometheus text)."""

from __future__ import annotations

import json

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import admin_get, metric_sum, parse_metrics, poll
from .httpclient import RawConnection, raw_request_bytes, request
from .upstreams import UpstreamSet, free_port


def test_healthz(upstreams: UpstreamSet, start_core: StartCore) -> None:
    echo = upstreams.http("echo")
    core = start_core(
        config(
            [upstream("u", echo.address)],
            [
                route("one", "u", path="/1/"),
                route("two", "u", path="/2/"),
                route("three", "u", path="/3/"),
            ],
        )
    )
    assert core.admin_port is not None
    status, ctype, body = admin_get(core.admin_port, "/healthz")
    assert status == 200, body
    assert "json" in ctype, f"Content-Type {ctype!r}"
    data = json.loads(body)
    assert data["status"] == "ok"
    assert data["revision"] == 1
    assert data["routes"] == 3
    # the admin endpoints are not on the proxy listener
    r = request(core.port, "GET", "/healthz")
    assert r.status == 404, (
        f"/healthz on the proxy listener must be routed (no route → 404): {r.describe()}"
    )
    status, _, _ = admin_get(core.admin_port, "/no-such-admin-path")
    assert status == 404


def test_metrics(upstreams: UpstreamSet, start_core: StartCore) -> None:
    echo = upstreams.http("echo")
    core = start_core(config([upstream("u", echo.address)], [route("app", "u", path="/app/")]))
    for i in range(3):
        assert request(core.port, "GET", f"/app/{i}").status == 200
    assert request(core.port, "GET", "/app/x", headers={"X-Status": "500"}).status == 500
    assert request(core.port, "GET", "/nothing").status == 404

    with RawConnection(core.port) as held:
        held.send(raw_request_bytes("GET", "/app/held", host="m.test"))
        assert held.read_response().status == 200
        assert core.admin_port is not None
        status, ctype, body = admin_get(core.admin_port, "/metrics")
        assert status == 200
        assert ctype.startswith("text/plain"), f"Content-Type {ctype!r}"
        text = body.decode()
        metrics = parse_metrics(text)
        open_conns = metric_sum(metrics, "minirouter_open_connections")
        assert open_conns >= 1, f"a client connection is open; gauge says {open_conns}"

    def counted() -> bool:
        nonlocal metrics, text
        text = core.metrics_text()
        metrics = parse_metrics(text)
        return (
            metric_sum(metrics, "minirouter_requests_total", route="app", status="200") == 4
            and metric_sum(metrics, "minirouter_requests_total", route="app", status="500") == 1
        )

    poll(counted, 5, message=lambda: f"requests_total app/200 == 4 and app/500 == 1 in:\n{text}")
    not_found = [
        lab
        for n, lab, v in metrics
        if n == "minirouter_requests_total" and lab.get("status") == "404"
    ]
    assert not_found, f"404 not counted in minirouter_requests_total:\n{text}"
    assert metric_sum(metrics, "minirouter_config_revision") == 1

    buckets = [
        (lab, v) for n, lab, v in metrics if n == "minirouter_upstream_latency_seconds_bucket"
    ]
    assert buckets, f"no minirouter_upstream_latency_seconds_bucket:\n{text}"
    inf = [v for lab, v in buckets if lab.get("le") == "+Inf"]
    assert inf and sum(inf) >= 5, f"+Inf bucket should count the 5 proxied requests: {buckets}"
    assert "# TYPE minirouter_requests_total counter" in text
    assert "# TYPE minirouter_upstream_latency_seconds histogram" in text


def test_metrics_revision_follows_reload(upstreams: UpstreamSet, start_core: StartCore) -> None:
    echo = upstreams.http("echo")
    core = start_core(config([upstream("u", echo.address)], [route("r", "u")]))
    core.write_config(
        config([upstream("u", echo.address)], [route("r", "u"), route("s", "u", path="/s/")])
    )
    core.sighup()
    core.wait_for_revision(2)
    poll(
        lambda: metric_sum(core.metrics(), "minirouter_config_revision") == core.revision() >= 2,
        5,
        message="minirouter_config_revision to equal the /healthz revision",
    )


def test_metrics_count_router_errors_per_route(start_core: StartCore) -> None:
    core = start_core(
        config([upstream("gone", f"127.0.0.1:{free_port()}")], [route("dead", "gone")])
    )
    assert request(core.port, "POST", "/", body=b"x").status == 502
    poll(
        lambda: (
            metric_sum(core.metrics(), "minirouter_requests_total", route="dead", status="502") == 1
        ),
        5,
        message=lambda: f"requests_total{{route=dead,status=502}} == 1 in:\n{core.metrics_text()}",
    )


def test_open_connections_gauge_returns_to_idle(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    echo = upstreams.http("echo")
    core = start_core(config([upstream("u", echo.address)], [route("app", "u", path="/app/")]))
    conns = [RawConnection(core.port) for _ in range(9)]
    try:
        for i, c in enumerate(conns):
            if i % 3 == 0:
                c.send(raw_request_bytes("GET", "/app/x", host="g.test"))
                assert c.read_response().status == 200
            elif i % 3 == 1:
                c.send(b"BROKEN\r\n\r\n")
                assert c.read_response().status == 400
                assert c.wait_closed(5)  # the router closes after a 400
            else:
                c.send(b"POST /app/y HTTP/1.1\r\nHost: g.test\r\nContent-Length: 50\r\n\r\nabc")
        poll(
            lambda: metric_sum(core.metrics(), "minirouter_open_connections") >= 6,
            5,
            message="minirouter_open_connections to count the 6 open clients",
        )
    finally:
        for c in conns:
            c.close()
    poll(
        lambda: metric_sum(core.metrics(), "minirouter_open_connections") <= 1,
        5,
        message=lambda: f"open connections back to idle: {core.metrics_text()}",
    )
