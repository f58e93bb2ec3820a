"""Target health: passive ejection and recovery, active health checks, retries to another target
when one refuses, and 503 when no target is available."""

from __future__ import annotations

import time

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import poll
from .httpclient import Response, request
from .upstreams import BlackholeListener, UpstreamSet, free_port


def name_of(r: Response) -> str | None:
    return str(r.json()["name"]) if r.status == 200 else None


def test_passive_ejection_and_recovery(upstreams: UpstreamSet, start_core: StartCore) -> None:
    a = upstreams.http("a")
    b = upstreams.http("b", keepalive=False)  # no pooled connection to go stale when it stops
    max_fails, fail_timeout = 2, 5
    core = start_core(
        config(
            [
                upstream(
                    "pool",
                    a.address,
                    b.address,
                    passive={"max_fails": max_fails, "fail_timeout": fail_timeout},
                )
            ],
            [route("r", "pool", retries=0)],
        )
    )
    warm = {name_of(request(core.port, "POST", "/", body=b"x")) for _ in range(4)}
    assert warm == {"a", "b"}, warm

    b.stop()
    statuses: list[int] = []
    start = time.monotonic()
    streak = 0
    for _ in range(30):
        r = request(core.port, "POST", "/", body=b"x")
        statuses.append(r.status)
        if r.status == 200:
            assert name_of(r) == "a"
            streak += 1
            if streak >= 8:
                break
        else:
            assert r.status == 502, (
                f"POST to a refusing target (no retry) → 502; got {r.describe()}"
            )
            streak = 0
    elapsed = time.monotonic() - start
    assert streak >= 8, f"target b never ejected: statuses {statuses}"
    if elapsed < fail_timeout:
        assert statuses.count(502) <= max_fails, (
            f"passive max_fails={max_fails}: b should be ejected after {max_fails} failures; "
            f"statuses {statuses}"
        )

    b.start()  # same port
    poll(
        lambda: name_of(request(core.port)) == "b",
        fail_timeout + 10,
        interval=0.1,
        message="b to get traffic again after fail_timeout once it is back",
    )
    seq = [name_of(request(core.port)) for _ in range(6)]
    assert set(seq) == {"a", "b"}, f"after recovery both targets serve: {seq}"


def test_passive_all_targets_ejected_gives_503(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    core = start_core(
        config(
            [upstream("pool", dead, passive={"max_fails": 1, "fail_timeout": 30})],
            [route("r", "pool")],
        )
    )
    r = request(core.port, "POST", "/", body=b"x")
    assert r.status == 502, f"first request to a refused target → 502; got {r.describe()}"
    for method in ("POST", "GET"):
        r = request(core.port, method, "/", body=b"x" if method == "POST" else None)
        assert r.status == 503, f"only target ejected → 503; got {r.describe()}"
        assert len(r.body) < 1024


def test_active_health_checks(upstreams: UpstreamSet, start_core: StartCore) -> None:
    a = upstreams.http("a", health_path="/status/ready")
    b = upstreams.http("b", health_path="/status/ready")
    health = {"path": "/status/ready", "interval": 0.2, "timeout": 1, "healthy": 2, "unhealthy": 2}
    core = start_core(
        config(
            [upstream("pool", a.address, b.address, health=health)],
            [route("r", "pool")],
        )
    )
    poll(
        lambda: a.health_checks >= 2 and b.health_checks >= 2,
        10,
        message="health checks on GET /status/ready of both targets",
    )
    poll(
        lambda: {name_of(request(core.port)) for _ in range(4)} == {"a", "b"},
        10,
        message="both targets serving",
    )

    b.health_status = 500

    def only_a() -> bool:
        return all(name_of(request(core.port)) == "a" for _ in range(6))

    poll(only_a, 15, interval=0.1, message="b to be taken out after failing health checks")
    served = b.request_count()
    seq = [name_of(request(core.port)) for _ in range(20)]
    assert seq == ["a"] * 20, seq
    assert b.request_count() == served, "an unhealthy target got traffic"

    b.health_status = 200
    poll(
        lambda: name_of(request(core.port)) == "b",
        15,
        interval=0.1,
        message="b back in rotation after passing health checks",
    )


def test_all_targets_unhealthy_gives_503(upstreams: UpstreamSet, start_core: StartCore) -> None:
    sick = upstreams.http("sick")
    sick.health_status = 503
    health = {"path": "/healthz", "interval": 0.2, "timeout": 1, "healthy": 1, "unhealthy": 1}
    core = start_core(config([upstream("pool", sick.address, health=health)], [route("r", "pool")]))
    poll(lambda: request(core.port).status == 503, 10, message="503 from the router")
    served = sick.request_count()
    for _ in range(5):
        r = request(core.port)
        assert r.status == 503, r.describe()
        assert len(r.body) < 1024
    assert sick.request_count() == served, "an unhealthy target got traffic"
    sick.health_status = 200
    poll(lambda: request(core.port).status == 200, 10, message="recovery after healthy checks")


def test_idempotent_requests_retry_on_another_target(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    live = upstreams.http("live")
    dead = f"127.0.0.1:{free_port()}"
    core = start_core(
        config(
            [upstream("pool", dead, live.address, passive={"max_fails": 1000, "fail_timeout": 1})],
            [route("r", "pool")],
        )
    )
    for i in range(10):
        for method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS"):
            body = b"payload" if method == "PUT" else None
            r = request(core.port, method, f"/retry/{i}", body=body)
            assert r.status == 200, f"{method} must be retried on the live target; {r.describe()}"
    puts = [q for q in live.snapshot() if q.method == "PUT"]
    assert len(puts) == 10 and all(q.body_len == 7 for q in puts), "PUT body lost on retry"

    before = len([q for q in live.snapshot() if q.method == "POST"])
    statuses = [request(core.port, "POST", "/p", body=b"x").status for _ in range(6)]
    assert 502 in statuses, f"POST is not retried: some must hit the refusing target: {statuses}"
    assert set(statuses) <= {200, 502}, statuses
    after = len([q for q in live.snapshot() if q.method == "POST"])
    assert after - before == statuses.count(200), "a failed POST was retried"


def test_retries_zero_disables_retry(upstreams: UpstreamSet, start_core: StartCore) -> None:
    live = upstreams.http("live")
    dead = f"127.0.0.1:{free_port()}"
    core = start_core(
        config(
            [upstream("pool", dead, live.address, passive={"max_fails": 1000, "fail_timeout": 1})],
            [route("r", "pool", retries=0)],
        )
    )
    statuses = [request(core.port).status for _ in range(6)]
    assert 502 in statuses and 200 in statuses, statuses


def test_retries_count_is_honoured(upstreams: UpstreamSet, start_core: StartCore) -> None:
    live = upstreams.http("live")
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    passive = {"max_fails": 1000, "fail_timeout": 1}
    core = start_core(
        config(
            [upstream("pool", *dead, live.address, passive=passive)],
            [route("two", "pool", path="/two/", retries=2), route("one", "pool", path="/one/")],
        )
    )
    for i in range(9):
        r = request(core.port, "GET", f"/two/{i}")
        assert r.status == 200, (
            f"retries: 2 with 2 refusing targets of 3 must reach the live one: {r.describe()}"
        )
    statuses = [request(core.port, "GET", f"/one/{i}").status for i in range(9)]
    assert 502 in statuses, (
        f"default retries: 1 (2 attempts) cannot always get past 2 dead targets: {statuses}"
    )


def test_retry_after_connect_timeout(upstreams: UpstreamSet, start_core: StartCore) -> None:
    live = upstreams.http("live")
    blackhole = BlackholeListener()
    try:
        core = start_core(
            config(
                [
                    upstream(
                        "pool",
                        blackhole.address,
                        live.address,
                        timeouts={"connect": 0.3, "read": 10, "idle": 60},
                        passive={"max_fails": 1000, "fail_timeout": 1},
                    )
                ],
                [route("r", "pool")],
            )
        )
        for i in range(4):
            start = time.monotonic()
            r = request(core.port, "GET", f"/ct/{i}", timeout=15)
            assert r.status == 200, f"GET after a connect timeout on one target: {r.describe()}"
            assert time.monotonic() - start < 5
    finally:
        blackhole.close()
