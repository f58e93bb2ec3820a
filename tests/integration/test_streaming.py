"""Bodies streamed both ways with bounded memory (100 MB each way, with a stalled reader),
chunked bodies, pipelining, keep-alive to clients and pooled upstream connections."""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
import time

import pytest

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import CoreProcess, poll
from .httpclient import RawConnection, raw_request_bytes, request, send, sha256_hex
from .upstreams import HttpUpstream, UpstreamSet, pattern_chunks, pattern_sha256

MB = 1024 * 1024
BIG = 100 * MB
RSS_BOUND = 100 * MB


class RssSampler:
    """Samples the core's RSS (all its processes) every 50 ms in a thread; keeps the maximum."""

    def __init__(self, core: CoreProcess) -> None:
        self.core = core
        self.baseline = core.rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.core.rss())
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, self.core.rss())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def simple(
    upstreams: UpstreamSet, start_core: StartCore, *args: str
) -> tuple[CoreProcess, HttpUpstream]:
    echo = upstreams.http("echo")
    core = start_core(config([upstream("u", echo.address)], [route("r", "u")]), *args)
    return core, echo


@pytest.mark.slow
def test_upload_100mb_streamed_with_bounded_memory(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, _echo = simple(upstreams, start_core, "--max-body-size", "0")
    assert request(core.port, "POST", "/warm", body=b"w" * MB).status == 200
    with RssSampler(core) as rss, RawConnection(core.port, 60) as c:
        # the upstream stalls 2 s before reading the body: the router must push back, not buffer
        c.send(
            b"POST /upload HTTP/1.1\r\nHost: up.test\r\nX-Pause-Body: 2\r\n"
            b"Content-Length: %d\r\n\r\n" % BIG
        )
        for piece in pattern_chunks(BIG, 256 * 1024):
            c.send(piece)
        r = c.read_response()
    assert r.status == 200, r.describe()
    data = r.json()
    assert data["body_len"] == BIG
    assert data["body_sha256"] == pattern_sha256(BIG), "upload corrupted on the way"
    assert rss.growth < RSS_BOUND, f"core RSS grew by {rss.growth / MB:.1f} MB for a 100 MB upload"


@pytest.mark.slow
def test_download_100mb_streamed_with_bounded_memory(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, _ = simple(upstreams, start_core)
    assert request(core.port, headers={"X-Download": str(MB)}).status == 200
    h = hashlib.sha256()
    received = 0
    with RssSampler(core) as rss, RawConnection(core.port, 60) as c:
        c.send(
            raw_request_bytes(
                "GET", "/download", host="down.test", headers=[("X-Download", str(BIG))]
            )
        )
        status, _, headers, head = c.read_head()
        assert status == 200, head
        assert dict((k.lower(), v) for k, v in headers).get("content-length") == str(BIG), head
        # read 1 MB, then stall for 2 s while the upstream keeps offering data
        while received < MB:
            piece = c.read_some(MB - received)
            assert piece, "connection closed early"
            h.update(piece)
            received += len(piece)
        stall_until = time.monotonic() + 2
        while time.monotonic() < stall_until:
            rss.peak = max(rss.peak, core.rss())
            time.sleep(0.05)
        while received < BIG:
            piece = c.read_some(min(MB, BIG - received))
            assert piece, f"connection closed after {received} of {BIG} bytes"
            h.update(piece)
            received += len(piece)
    assert received == BIG
    assert h.hexdigest() == pattern_sha256(BIG), "download corrupted on the way"
    assert rss.growth < RSS_BOUND, (
        f"core RSS grew by {rss.growth / MB:.1f} MB for a 100 MB download"
    )


def test_chunked_request_body(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, _echo = simple(upstreams, start_core)
    sizes = [1, 10, 4096, 65536, 100_000, 300_000, 7, 500_000]
    payload = b"".join(bytes([i % 251]) * n for i, n in enumerate(sizes))
    framed = b""
    offset = 0
    for i, n in enumerate(sizes):
        ext = b";name=value" if i == 2 else b""
        framed += b"%x%s\r\n" % (n, ext) + payload[offset : offset + n] + b"\r\n"
        offset += n
    framed += b"0\r\n\r\n"
    with RawConnection(core.port) as c:
        c.send(b"POST /chunked?x=1 HTTP/1.1\r\nHost: c.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        # in several writes, split inside chunk headers
        for i in range(0, len(framed), 7777):
            c.send(framed[i : i + 7777])
        r = c.read_response()
        # and the connection is still in sync for another request
        c.send(raw_request_bytes("GET", "/after", host="c.test"))
        after = c.read_response()
    assert r.status == 200, r.describe()
    data = r.json()
    assert data["target"] == "/chunked?x=1"
    assert data["body_len"] == len(payload)
    assert data["body_sha256"] == sha256_hex(payload)
    names = [k.lower() for k, _ in data["headers"]]
    assert not ("content-length" in names and "transfer-encoding" in names), data["headers"]
    assert names.count("transfer-encoding") <= 1 and names.count("content-length") <= 1
    assert after.status == 200 and after.json()["target"] == "/after", after.describe()


def test_chunked_request_with_trailers(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, _ = simple(upstreams, start_core)
    with RawConnection(core.port) as c:
        c.send(
            b"POST /t HTTP/1.1\r\nHost: c.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"
        )
        r = c.read_response()
        c.send(raw_request_bytes("GET", "/next", host="c.test"))
        nxt = c.read_response()
    assert r.status == 200, r.describe()
    assert r.json()["body_sha256"] == sha256_hex(b"hello world")
    assert nxt.status == 200 and nxt.json()["target"] == "/next"


def test_chunked_response_passthrough(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, _ = simple(upstreams, start_core)
    size = 5 * MB + 123
    h = hashlib.sha256()
    with RawConnection(core.port, 30) as c:
        c.send(
            raw_request_bytes(
                "GET",
                "/",
                host="c.test",
                headers=[("X-Download", str(size)), ("X-Chunked-Response", "1")],
            )
        )
        r = c.read_response(sink=h)
        c.send(raw_request_bytes("GET", "/next", host="c.test"))
        nxt = c.read_response()
    assert r.status == 200, r.describe()
    assert r.extra["length"] == size
    assert h.hexdigest() == pattern_sha256(size)
    assert nxt.status == 200 and nxt.json()["target"] == "/next"


def test_pipelined_requests_answered_in_order(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, _ = simple(upstreams, start_core)
    data = (
        raw_request_bytes("GET", "/first", host="p.test", headers=[("X-Delay", "0.5")])
        + raw_request_bytes("POST", "/second", host="p.test", body=b"0123456789")
        + raw_request_bytes("GET", "/third?x=3", host="p.test")
    )
    with RawConnection(core.port) as c:
        c.send(data)  # one write
        responses = [c.read_response() for _ in range(3)]
    assert [r.status for r in responses] == [200, 200, 200], [r.describe() for r in responses]
    assert [r.json()["target"] for r in responses] == ["/first", "/second", "/third?x=3"]
    assert responses[1].json()["body_len"] == 10


def test_pipelined_head_and_204_stay_in_sync(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, _ = simple(upstreams, start_core)
    data = (
        raw_request_bytes("HEAD", "/head", host="p.test")
        + raw_request_bytes("GET", "/nocontent", host="p.test", headers=[("X-Status", "204")])
        + raw_request_bytes("GET", "/notmodified", host="p.test", headers=[("X-Status", "304")])
        + raw_request_bytes("GET", "/last", host="p.test")
    )
    with RawConnection(core.port) as c:
        c.send(data)
        head = c.read_response(head_request=True)
        empty = c.read_response()
        not_modified = c.read_response()
        last = c.read_response()
    assert head.status == 200, head.describe()
    assert head.header("Content-Length") not in (None, "0"), "HEAD keeps the GET's Content-Length"
    assert empty.status == 204, empty.describe()
    assert not_modified.status == 304, not_modified.describe()
    assert last.status == 200 and last.json()["target"] == "/last", last.describe()


def test_client_keepalive(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, _ = simple(upstreams, start_core)
    conn = http.client.HTTPConnection("127.0.0.1", core.port, timeout=10)
    try:
        first_sock = None
        for i in range(10):
            r = send(conn, "POST", f"/k/{i}", body=b"x" * i)
            assert r.status == 200, r.describe()
            assert r.json()["target"] == f"/k/{i}"
            first_sock = first_sock or conn.sock
            assert conn.sock is not None and conn.sock is first_sock, (
                f"request {i}: the router closed the keep-alive connection"
            )
    finally:
        conn.close()


def test_connection_close_and_http10_close_after_response(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, _ = simple(upstreams, start_core)
    with RawConnection(core.port) as c:
        c.send(raw_request_bytes("GET", "/close", host="k.test", headers=[("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200, r.describe()
        assert c.wait_closed(5), "Connection: close not honoured"
    with RawConnection(core.port) as c:
        c.send(b"GET /ten HTTP/1.0\r\nHost: k.test\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r.describe()
        assert r.json()["target"] == "/ten"
        assert c.wait_closed(5), "HTTP/1.0 without keep-alive: close after the response"


def test_upstream_connections_are_reused(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, echo = simple(upstreams, start_core)
    conn = http.client.HTTPConnection("127.0.0.1", core.port, timeout=10)
    try:
        for i in range(20):
            assert send(conn, "GET", f"/ka/{i}").status == 200
    finally:
        conn.close()
    for i in range(20):  # fresh client connections share the pool too
        assert request(core.port, "GET", f"/fresh/{i}").status == 200
    assert echo.request_count() == 40
    assert echo.connections <= 4, (
        f"upstream saw {echo.connections} connections for 40 sequential requests: no pooling"
    )
    assert max(q.conn_seq for q in echo.snapshot()) >= 10


def test_fifty_pipelined_requests_in_one_write(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    core, _ = simple(upstreams, start_core)
    data = b"".join(raw_request_bytes("GET", f"/pipe/{i}", host="p.test") for i in range(50))
    with RawConnection(core.port, 20) as c:
        c.send(data)
        targets = [c.read_response().json()["target"] for _ in range(50)]
    assert targets == [f"/pipe/{i}" for i in range(50)]


def test_client_half_close_still_gets_the_response(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    """A client may shut down its sending side after the request (HTTP allows it)."""
    core, _ = simple(upstreams, start_core)
    with RawConnection(core.port) as c:
        c.send(raw_request_bytes("GET", "/half", host="h.test", headers=[("X-Delay", "0.3")]))
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response()
    assert r.status == 200 and r.json()["target"] == "/half", r.describe()


def test_large_response_headers_pass_through(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, _ = simple(upstreams, start_core)
    big = "c" * 20000
    r = request(core.port, headers=[("X-Set-Response-Header", f"Set-Cookie: big={big}")])
    assert r.status == 200, r.describe()
    assert r.header_all("Set-Cookie") == [f"big={big}"]


def test_slow_request_body_not_cut_by_header_timeout(
    upstreams: UpstreamSet, start_core: StartCore
) -> None:
    """--header-timeout is for the head; a body trickling in for longer must still arrive."""
    core, _ = simple(upstreams, start_core, "--header-timeout", "1", "--keepalive-timeout", "1")
    with RawConnection(core.port, 15) as c:
        c.send(b"POST /trickle HTTP/1.1\r\nHost: t.test\r\nContent-Length: 10\r\n\r\n")
        for i in range(10):
            time.sleep(0.25)  # the point of the test: a slow sender
            c.send(bytes([48 + i]))
        r = c.read_response()
    assert r.status == 200, r.describe()
    assert r.json()["body_sha256"] == sha256_hex(b"0123456789")


def test_client_abort_mid_download(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, echo = simple(upstreams, start_core)
    with RawConnection(core.port, 15) as c:
        c.send(
            raw_request_bytes("GET", "/dl-abort", host="d.test", headers=[("X-Download", str(BIG))])
        )
        status, _, _, head = c.read_head()
        assert status == 200, head
        c.read_some(MB)
    conn_ids = echo.conn_ids_with(b"/dl-abort")
    assert conn_ids
    poll(
        lambda: echo.is_closed(conn_ids[0]),
        5,
        message="the upstream download to be cut after its client went away",
    )
    for i in range(3):
        r = request(core.port, "GET", f"/after/{i}")
        assert r.status == 200 and r.json()["target"] == f"/after/{i}", r.describe()
