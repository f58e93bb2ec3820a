"""Config reload: SIGHUP and file change, no request dropped, in-flight requests keep their route,
invalid files rejected (old config keeps serving, revision unchanged)."""

from __future__ import annotations

import http.client
import threading
import time
from functools import partial
from typing import Any

import pytest

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import CoreProcess, poll
from .httpclient import Response, request, send
from .upstreams import HttpUpstream, UpstreamSet


def two_way(
    a: HttpUpstream, b: HttpUpstream, serve: str, extra_route: bool = False
) -> dict[str, Any]:
    routes = [route("main", serve, path="/")]
    if extra_route:
        routes.append(route("extra", "b", path="/extra/"))
    return config([upstream("a", a.address), upstream("b", b.address)], routes)


def served_by(core: CoreProcess, path: str = "/") -> str | None:
    r = request(core.port, "GET", path)
    return str(r.json()["name"]) if r.status == 200 else None


def serves(core: CoreProcess, name: str) -> bool:
    return served_by(core) == name


def test_sighup_reload(upstreams: UpstreamSet, start_core: StartCore) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    core = start_core(two_way(a, b, "a"))
    assert core.revision() == 1
    assert served_by(core) == "a"
    assert request(core.port, "GET", "/extra/x").json()["name"] == "a"
    core.write_config(two_way(a, b, "b", extra_route=True))
    core.sighup()
    core.wait_for_revision(2)
    assert served_by(core) == "b"
    assert served_by(core, "/extra/x") == "b"
    assert core.healthz()["routes"] == 2


def test_file_change_reload_without_signal(upstreams: UpstreamSet, start_core: StartCore) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    core = start_core(two_way(a, b, "a"))
    core.write_config(two_way(a, b, "b"))
    poll(lambda: served_by(core) == "b", 10, message="the file change to be picked up")
    assert core.revision() == 2
    # an in-place (non-atomic) rewrite is a change too
    core.write_config(two_way(a, b, "a"), atomic=False)
    poll(lambda: served_by(core) == "a", 10, message="the in-place rewrite to be picked up")
    assert core.revision() == 3


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("upstreams: [\n  - id: a\n    targets: [oops\n", "yaml"),  # YAML syntax error
        ("routes:\n  - id: r\n    upstream: missing\n", "upstream"),  # a missing upstream
        (
            "upstreams:\n  - id: a\n    targets: [127.0.0.1:1]\n    balance: bogus\nroutes: []\n",
            "balance",
        ),
    ],
    ids=["yaml-syntax", "missing-upstream", "bad-balance"],
)
def test_invalid_reload_keeps_old_config(
    upstreams: UpstreamSet, start_core: StartCore, bad: str, named: str
) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    core = start_core(two_way(a, b, "a"))
    core.write_config(bad)
    core.sighup()
    # for 2.5 s (more than two file polls) the old config keeps serving and the revision stays
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert core.proc.poll() is None, "core died on an invalid config"
        assert served_by(core) == "a"
        assert core.revision() == 1
        time.sleep(0.1)
    log = core.stderr_text() + core.stdout_text()
    assert named in log.lower(), (
        f"rejection not logged with the offending field ({named!r}):\n{log[-2000:]}"
    )
    # a good file after the bad one is the next revision: the bad one did not count
    core.write_config(two_way(a, b, "b"))
    poll(lambda: served_by(core) == "b", 10, message="the good config after the bad one")
    assert core.revision() == 2


def test_in_flight_request_keeps_its_route(upstreams: UpstreamSet, start_core: StartCore) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    core = start_core(two_way(a, b, "a"))
    result: list[Response] = []
    t = threading.Thread(
        target=lambda: result.append(request(core.port, headers={"X-Delay": "2.5"}, timeout=15))
    )
    t.start()
    try:
        poll(lambda: a.in_flight == 1, 5, message="the slow request to reach a")
        # remove upstream a and its route entirely
        core.write_config(config([upstream("b", b.address)], [route("main", "b", path="/")]))
        core.sighup()
        core.wait_for_revision(2)
        assert served_by(core) == "b"
    finally:
        t.join(15)
    assert len(result) == 1 and result[0].status == 200, [r.describe() for r in result]
    assert result[0].json()["name"] == "a"


@pytest.mark.slow
def test_no_request_dropped_during_reloads(upstreams: UpstreamSet, start_core: StartCore) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    core = start_core(two_way(a, b, "a"))
    stop = threading.Event()
    failures: list[str] = []
    counts = {"keepalive": 0, "fresh": 0}
    deadline = time.monotonic() + 15

    def keepalive_client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", core.port, timeout=10)
        try:
            for i in range(20_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    r = send(conn, "POST", f"/ka/{i}", body=b"p" * 100)
                except (OSError, http.client.HTTPException) as e:
                    failures.append(f"keep-alive request {i}: {e!r}")
                    conn.close()
                    continue
                if r.status != 200:
                    failures.append(f"keep-alive request {i}: {r.describe()}")
                counts["keepalive"] += 1
        finally:
            conn.close()

    def fresh_client() -> None:
        for i in range(20_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                r = request(core.port, "GET", f"/fresh/{i}")
            except (OSError, http.client.HTTPException) as e:
                failures.append(f"fresh request {i}: {e!r}")
                continue
            if r.status != 200:
                failures.append(f"fresh request {i}: {r.describe()}")
            counts["fresh"] += 1

    threads = [threading.Thread(target=keepalive_client), threading.Thread(target=fresh_client)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            target = "b" if i % 2 == 0 else "a"
            core.write_config(two_way(a, b, target, extra_route=(i % 3 == 0)))
            if i % 2:
                core.sighup()
            poll(partial(serves, core, target), 10, message=f"reload {i} to serve {target}")
        alive = [t.is_alive() for t in threads]
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert all(alive), "client traffic did not span all the reloads (raise the bounds)"
    assert not failures, f"{len(failures)} failed requests during reloads, e.g. {failures[:5]}"
    assert counts["keepalive"] > 20 and counts["fresh"] > 20, counts
    assert core.revision() >= 7
    assert core.proc.poll() is None


def test_reload_changes_upstream_targets(upstreams: UpstreamSet, start_core: StartCore) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    core = start_core(config([upstream("pool", a.address)], [route("r", "pool")]))
    assert served_by(core) == "a"
    core.write_config(config([upstream("pool", b.address)], [route("r", "pool")]))
    core.sighup()
    poll(lambda: served_by(core) == "b", 10, message="the new target to serve")
    assert {served_by(core) for _ in range(5)} == {"b"}
