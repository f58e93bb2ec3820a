"""Balancing policies, observed by which upstream answered: round_robin, weighted, least_conn, hash."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from typing import Any

import pytest

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import CoreProcess, poll
from .httpclient import Response, request, send
from .upstreams import UpstreamSet


def names_over_keepalive(core: CoreProcess, n: int, **kw: Any) -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.1", core.port, timeout=10)
    try:
        out = []
        for _ in range(n):
            r = send(conn, "GET", "/", **kw)
            assert r.status == 200, r.describe()
            out.append(str(r.json()["name"]))
        return out
    finally:
        conn.close()


def test_round_robin_alternates(upstreams: UpstreamSet, start_core: StartCore) -> None:
    a, b, c = (upstreams.http(n) for n in "abc")
    core = start_core(
        config(
            [upstream("pool", a.address, b.address, c.address, balance="round_robin")],
            [route("r", "pool")],
        )
    )
    seq = names_over_keepalive(core, 12)
    assert set(seq[:3]) == {"a", "b", "c"}, seq
    assert all(seq[i] == seq[i + 3] for i in range(len(seq) - 3)), f"not a rotation: {seq}"
    # one request per fresh client connection rotates just the same
    fresh = [str(request(core.port).json()["name"]) for _ in range(6)]
    assert set(fresh[:3]) == {"a", "b", "c"} and fresh[:3] == fresh[3:], fresh


def test_round_robin_is_default(upstreams: UpstreamSet, start_core: StartCore) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    core = start_core(config([upstream("pool", a.address, b.address)], [route("r", "pool")]))
    seq = names_over_keepalive(core, 8)
    assert all(seq[i] != seq[i + 1] for i in range(len(seq) - 1)), seq


@pytest.mark.parametrize("explicit", [True, False], ids=["balance-weighted", "implied-by-weights"])
def test_weighted_one_to_three(
    upstreams: UpstreamSet, start_core: StartCore, explicit: bool
) -> None:
    light, heavy = upstreams.http("light"), upstreams.http("heavy")
    extra = {"balance": "weighted"} if explicit else {}
    core = start_core(
        config(
            [
                upstream(
                    "pool",
                    {"address": light.address, "weight": 1},
                    {"address": heavy.address, "weight": 3},
                    **extra,
                )
            ],
            [route("r", "pool")],
        )
    )
    n = 400
    counts = Counter(names_over_keepalive(core, n))
    # exact 100/300 for a smooth weighted round robin; > 4 standard deviations for a random pick
    assert 65 <= counts["light"] <= 135, counts
    assert counts["light"] + counts["heavy"] == n


def test_least_conn_avoids_the_busy_target(upstreams: UpstreamSet, start_core: StartCore) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    core = start_core(
        config(
            [upstream("pool", a.address, b.address, balance="least_conn")],
            [route("r", "pool")],
        )
    )
    names_over_keepalive(core, 4)  # warm up both targets
    results: list[Response] = []

    def slow() -> None:
        results.append(request(core.port, headers={"X-Delay": "3"}, timeout=15))

    t1 = threading.Thread(target=slow)
    t1.start()
    t2: threading.Thread | None = None
    try:
        poll(lambda: a.in_flight + b.in_flight == 1, 5, message="the slow request in flight")
        busy, idle = (a, b) if a.in_flight else (b, a)
        seq = names_over_keepalive(core, 10)
        assert seq == [idle.name] * 10, (
            f"least_conn: {busy.name} has 1 request in flight, {idle.name} none; got {seq}"
        )
        # a second long request goes to the idle target: then each has one
        t2 = threading.Thread(target=slow)
        t2.start()
        poll(lambda: a.in_flight + b.in_flight == 2, 5, message="two slow requests in flight")
        assert (a.in_flight, b.in_flight) == (1, 1), "second long request went to the busy target"
    finally:
        t1.join(20)
        if t2 is not None:
            t2.join(20)
    assert [r.status for r in results] == [200, 200], [r.describe() for r in results]


def test_hash_on_header_is_stable(upstreams: UpstreamSet, start_core: StartCore) -> None:
    ups = [upstreams.http(n) for n in "abc"]
    core = start_core(
        config(
            [
                upstream(
                    "pool",
                    *(u.address for u in ups),
                    balance="hash",
                    hash_on="header:X-User-Id",
                )
            ],
            [route("r", "pool")],
        )
    )
    users = [f"user-{i}" for i in range(20)]
    seen: dict[str, set[str]] = {u: set() for u in users}
    conn = http.client.HTTPConnection("127.0.0.1", core.port, timeout=10)
    try:
        for _ in range(4):
            for user in users:
                r = send(conn, headers={"X-User-Id": user})
                assert r.status == 200, r.describe()
                seen[user].add(str(r.json()["name"]))
    finally:
        conn.close()
    unstable = {u: s for u, s in seen.items() if len(s) != 1}
    assert not unstable, f"same X-User-Id went to several targets: {unstable}"
    used = {next(iter(s)) for s in seen.values()}
    assert len(used) >= 2, f"20 users all hashed to {used}: not a hash"
    # no header at all still gets an answer
    r = request(core.port)
    assert r.status == 200, f"hash on a header the request lacks: {r.describe()}"
    # the same user on a fresh connection lands on the same target
    for user in users[:5]:
        r = request(core.port, headers={"X-User-Id": user})
        assert {r.json()["name"]} == seen[user]


def test_hash_on_client_ip_is_stable(upstreams: UpstreamSet, start_core: StartCore) -> None:
    ups = [upstreams.http(n) for n in "abc"]
    core = start_core(
        config(
            [upstream("pool", *(u.address for u in ups), balance="hash", hash_on="client_ip")],
            [route("r", "pool")],
        )
    )
    sources = [f"127.0.0.{i}" for i in range(1, 21)]
    seen: dict[str, set[str]] = {s: set() for s in sources}
    for _ in range(3):
        for src in sources:
            r = request(core.port, source=src)
            assert r.status == 200, r.describe()
            seen[src].add(str(r.json()["name"]))
    unstable = {s: v for s, v in seen.items() if len(v) != 1}
    assert not unstable, f"same client address went to several targets: {unstable}"
    used = {next(iter(v)) for v in seen.values()}
    assert len(used) >= 2, f"20 client addresses all hashed to {used}"
