"""Concurrency: many client connections at once, every answer belongs to its own request."""

from __future__ import annotations

import hashlib
import http.client
import threading
import time

import pytest

from .cfg import config, route, upstream
from .conftest import StartCore
from .httpclient import send
from .upstreams import UpstreamSet

CLIENTS = 32
PER_CLIENT = 40


@pytest.mark.slow
def test_concurrent_clients_get_their_own_answers(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    a, b = upstreams.http("a"), upstreams.http("b")
    core = start_core(config([upstream("pool", a.address, b.address)], [route("r", "pool")]))
    failures: list[str] = []
    done = [0] * CLIENTS
    deadline = time.monotonic() + 60

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", core.port, timeout=20)
        try:
            for i in range(PER_CLIENT):
                if time.monotonic() > deadline:
                    failures.append(f"client {n}: out of time after {i} requests")
                    return
                body = f"{n}-{i}-".encode() * (1 + (n * 31 + i) % 500)
                path = f"/c{n}/r{i}?n={n}"
                try:
                    r = send(conn, "POST", path, body=body)
                except (OSError, http.client.HTTPException) as e:
                    failures.append(f"client {n} request {i}: {e!r}")
                    return
                if r.status != 200:
                    failures.append(f"client {n} request {i}: {r.describe()}")
                    continue
                data = r.json()
                if (
                    data["target"] != path
                    or data["body_sha256"] != hashlib.sha256(body).hexdigest()
                ):
                    failures.append(f"client {n} request {i}: got the answer for {data['target']}")
                done[n] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not failures, f"{len(failures)} failures, e.g. {failures[:5]}"
    assert sum(done) == CLIENTS * PER_CLIENT
    assert a.request_count() > 0 and b.request_count() > 0
    assert core.proc.poll() is None
