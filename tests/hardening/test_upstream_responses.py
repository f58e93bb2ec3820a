"""Broken upstream answers (issue 6): 502 when nothing was sent to the client yet, else the client
connection is closed; a connection that misbehaved never goes back to the pool; a pooled
connection found closed is retried once, and only for an idempotent request."""

from __future__ import annotations

import pytest

from integration.httpclient import RawConnection

from .conftest import Rig
from .servers import ONE_WRITE, TWO_WRITES

BAD_HOST = b"Host: bad.test\r\n"


def get(mode: str, method: bytes = b"GET") -> bytes:
    extra = b"Content-Length: 0\r\n" if method == b"POST" else b""
    return method + b" /mode/" + mode.encode() + b" HTTP/1.1\r\n" + BAD_HOST + extra + b"\r\n"


def _good_request(port: int) -> None:
    with RawConnection(port, timeout=5) as conn:
        conn.send(get("good"))
        resp = conn.read_response()
        assert (resp.status, resp.body) == (200, b"ok"), resp.describe()


def _connection_of(rig: Rig, mode: str) -> int:
    conns = [cid for m, cid in rig.bad.requests() if m == mode]
    assert conns, rig.bad.requests()
    return conns[-1]


BAD_ONE_WRITE = sorted(m for m in ONE_WRITE if m != "good")


@pytest.mark.parametrize("mode", BAD_ONE_WRITE)
def test_bad_answer_is_502_and_never_pooled(rig: Rig, mode: str) -> None:
    _good_request(rig.port)  # so that a pooled connection exists and gets used
    with RawConnection(rig.port, timeout=5) as conn:
        conn.send(get(mode))
        resp = conn.read_response()
        assert resp.status == 502, resp.describe()
        assert resp.header("Connection") == "close"
        assert b"extra" not in resp.body and b"ok" not in resp.body
        assert conn.wait_closed(5)
    bad_conn = _connection_of(rig, mode)
    _good_request(rig.port)
    assert _connection_of(rig, "good") != bad_conn, "a broken upstream connection was reused"


@pytest.mark.parametrize("mode", sorted(TWO_WRITES))
def test_broken_after_the_head_closes_the_client(rig: Rig, mode: str) -> None:
    """The head (and part of the body) went out already: the client learns it from a close."""
    with RawConnection(rig.port, timeout=5) as conn:
        conn.send(get(mode))
        status, _, headers, _ = conn.read_head()
        assert status == 200
        if mode == "bad_chunk_later":
            assert ("Transfer-Encoding", "chunked") in headers
            assert conn.read_exactly(10) == b"5\r\nabcde\r\n"
        else:
            assert ("Content-Length", "10") in headers
            assert conn.read_exactly(5) == b"abcde"
        rig.bad.release()
        rest = conn.read_to_eof()  # returns only because the router closes the connection
        assert b"EXTRA" not in rest and len(rest) <= 5, rest
        assert mode == "extra_later" or len(rest) < 5, rest
    bad_conn = _connection_of(rig, mode)
    _good_request(rig.port)
    assert _connection_of(rig, "good") != bad_conn


def test_hang_is_504(rig: Rig) -> None:
    with RawConnection(rig.port, timeout=10) as conn:
        conn.send(get("hang"))
        resp = conn.read_response()
        assert resp.status == 504, resp.describe()
        assert conn.wait_closed(5)


def test_reset_before_answer_is_502(rig: Rig) -> None:
    with RawConnection(rig.port, timeout=5) as conn:
        conn.send(get("reset"))
        assert conn.read_response().status == 502


@pytest.mark.parametrize(("method", "tries"), [(b"GET", 2), (b"POST", 1)])
def test_stale_pooled_connection_retried_once_if_idempotent(
    rig: Rig, method: bytes, tries: int
) -> None:
    """`close` reads the request and closes without a word, as an upstream does that dropped an
    idle keep-alive connection just as the request came: a GET is tried once more on a fresh
    connection (which fails the same way), a POST is not."""
    _good_request(rig.port)
    before = len(rig.bad.requests())
    with RawConnection(rig.port, timeout=5) as conn:
        conn.send(get("close", method))
        assert conn.read_response().status == 502
    modes = rig.bad.requests()[before:]
    assert [m for m, _ in modes] == ["close"] * tries, modes
    if tries == 2:
        assert modes[0][1] != modes[1][1], "the retry must use a fresh connection"


def test_interim_responses(rig: Rig) -> None:
    """103 is relayed to an HTTP/1.1 client; 100 (the router's own business) is not; the final
    answer follows on a connection still in step."""
    with RawConnection(rig.port, timeout=5) as conn:
        conn.send(get("early_hints"))
        status, _, headers, _ = conn.read_head()
        assert status == 103
        assert ("Link", "</a.css>; rel=preload") in headers
        resp = conn.read_response()
        assert (resp.status, resp.body) == (200, b"ok"), resp.describe()
        conn.send(get("continue"))
        status, _, _, _ = conn.read_head()
        assert status == 200
        assert conn.read_exactly(2) == b"ok"
        conn.send(get("good"))
        assert conn.read_response().status == 200
