"""What the upstream receives: Host, X-Forwarded-*, Via, hop-by-hop removal, route header edits
(request and response), preserve_host, framing of the forwarded request."""

from __future__ import annotations

import pytest

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import CoreProcess
from .httpclient import RawConnection, Response, request, sha256_hex
from .upstreams import HttpUpstream, UpstreamSet

CLIENT_IP = "127.0.0.7"  # the tests connect from this loopback address


class Env:
    def __init__(self, core: CoreProcess, echo: HttpUpstream) -> None:
        self.core = core
        self.echo = echo


@pytest.fixture(scope="module")
def env(module_upstreams: UpstreamSet, module_start_core: StartCore) -> Env:
    echo = module_upstreams.http("echo")
    cfg = config(
        [upstream("echo", echo.address)],
        [
            route("plain", "echo", path="/"),
            route("preserve", "echo", hosts=["preserve.test"], path="/", preserve_host=True),
            route(
                "edits",
                "echo",
                hosts=["edits.test"],
                path="/",
                request_headers={
                    "set": {"X-Env": "prod", "X-Replace": "new"},
                    "add": {"X-Added": "one"},
                    "remove": ["X-Debug"],
                },
                response_headers={
                    "set": {"X-Frame-Options": "DENY"},
                    "add": {"X-Resp-Added": "yes"},
                    "remove": ["Server"],
                },
            ),
        ],
    )
    return Env(module_start_core(cfg), echo)


def values(headers: list[list[str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def joined(headers: list[list[str]], name: str) -> str:
    return ", ".join(values(headers, name))


def upstream_view(r: Response) -> list[list[str]]:
    assert r.status == 200, r.describe()
    headers = r.json()["headers"]
    assert isinstance(headers, list)
    return headers


def get(
    env: Env,
    path: str = "/",
    host: str = "front.test",
    headers: list[tuple[str, str]] | dict[str, str] | None = None,
) -> Response:
    return request(env.core.port, path=path, host=host, headers=headers, source=CLIENT_IP)


def test_forwarded_header_set(env: Env) -> None:
    r = get(env, "/fwd/x?q=1&r=two", headers={"User-Agent": "itest-agent", "Accept": "text/x"})
    h = upstream_view(r)
    assert r.json()["target"] == "/fwd/x?q=1&r=two"
    assert values(h, "Host") == [env.echo.address], "Host must be the target address"
    assert values(h, "X-Forwarded-For") == [CLIENT_IP]
    assert values(h, "X-Forwarded-Proto") == ["http"]
    assert values(h, "X-Forwarded-Host") == ["front.test"]
    assert "1.1 minirouter" in joined(h, "Via"), f"Via: {values(h, 'Via')}"
    assert values(h, "User-Agent") == ["itest-agent"]
    assert values(h, "Accept") == ["text/x"]


def test_x_forwarded_for_and_via_are_appended(env: Env) -> None:
    r = get(env, headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.2", "Via": "1.0 edge"})
    h = upstream_view(r)
    assert joined(h, "X-Forwarded-For").replace(" ", "") == f"203.0.113.9,198.51.100.2,{CLIENT_IP}"
    via = joined(h, "Via")
    assert "1.0 edge" in via and "1.1 minirouter" in via, via
    assert via.index("1.0 edge") < via.index("1.1 minirouter"), via


def test_spoofed_forwarded_proto_and_host_are_replaced(env: Env) -> None:
    r = get(env, headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.test"})
    h = upstream_view(r)
    assert values(h, "X-Forwarded-Proto") == ["http"]
    assert values(h, "X-Forwarded-Host") == ["front.test"]


def test_hop_by_hop_headers_removed(env: Env) -> None:
    r = get(
        env,
        headers=[
            ("Connection", "keep-alive, X-Secret, x-other-secret"),
            ("X-Secret", "s1"),
            ("X-Other-Secret", "s2"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "example/1"),
            ("X-Kept", "kept"),
        ],
    )
    h = upstream_view(r)
    names = {k.lower() for k, _ in h}
    for gone in (
        "x-secret",
        "x-other-secret",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ):
        assert gone not in names, f"hop-by-hop header {gone!r} reached the upstream: {h}"
    for v in values(h, "Connection"):
        assert "secret" not in v.lower(), f"client's Connection value forwarded: {v!r}"
        assert "upgrade" not in v.lower()
    assert values(h, "X-Kept") == ["kept"]


def test_connection_header_cannot_remove_router_headers(env: Env) -> None:
    r = get(
        env,
        headers={
            "Connection": "X-Forwarded-For, Via, X-Forwarded-Proto, X-Forwarded-Host, Host",
            "X-Forwarded-For": "203.0.113.1",
        },
    )
    h = upstream_view(r)
    assert joined(h, "X-Forwarded-For").endswith(CLIENT_IP), values(h, "X-Forwarded-For")
    assert "1.1 minirouter" in joined(h, "Via")
    assert values(h, "X-Forwarded-Proto") == ["http"]
    assert values(h, "X-Forwarded-Host") == ["front.test"]
    assert values(h, "Host") == [env.echo.address]


def test_end_to_end_headers_kept_in_order_with_duplicates(env: Env) -> None:
    r = get(
        env,
        headers=[
            ("X-Multi", "first"),
            ("Cookie", "a=1"),
            ("X-Multi", "second"),
            ("Authorization", "Bearer t0k3n"),
            ("X-Empty", ""),
        ],
    )
    h = upstream_view(r)
    assert values(h, "X-Multi") == ["first", "second"]
    assert values(h, "Cookie") == ["a=1"]
    assert values(h, "Authorization") == ["Bearer t0k3n"]


def test_preserve_host(env: Env) -> None:
    r = get(env, host="preserve.test")
    h = upstream_view(r)
    assert values(h, "Host") == ["preserve.test"]
    assert values(h, "X-Forwarded-Host") == ["preserve.test"]


def test_route_request_header_edits(env: Env) -> None:
    r = get(
        env,
        host="edits.test",
        headers=[
            ("X-Debug", "1"),
            ("x-debug", "2"),
            ("X-Replace", "old"),
            ("X-Added", "zero"),
        ],
    )
    h = upstream_view(r)
    assert r.json()["name"] == "echo"
    assert values(h, "X-Debug") == [], "remove: [X-Debug] (any case)"
    assert values(h, "X-Env") == ["prod"]
    assert values(h, "X-Replace") == ["new"], "set replaces every existing value"
    assert values(h, "X-Added") == ["zero", "one"], "add appends"


def test_route_request_edits_only_on_their_route(env: Env) -> None:
    h = upstream_view(get(env, headers={"X-Debug": "1"}))
    assert values(h, "X-Debug") == ["1"]
    assert values(h, "X-Env") == []


def test_route_response_header_edits(env: Env) -> None:
    r = get(
        env,
        host="edits.test",
        headers=[
            ("X-Set-Response-Header", "X-Frame-Options: SAMEORIGIN"),
            ("X-Set-Response-Header", "X-Resp-Added: upstream"),
        ],
    )
    assert r.status == 200, r.describe()
    assert r.header_all("X-Frame-Options") == ["DENY"]
    assert r.header_all("X-Resp-Added") == ["upstream", "yes"]
    assert "upstream-echo" not in r.header_all("Server"), "remove: [Server]"
    assert r.header("X-Upstream") == "echo"
    # the body is untouched and correctly framed
    assert r.json()["name"] == "echo"


def test_response_hop_by_hop_headers_removed(env: Env) -> None:
    r = get(
        env,
        headers=[
            ("X-Set-Response-Header", "Connection: X-Private"),
            ("X-Set-Response-Header", "X-Private: secret"),
            ("X-Set-Response-Header", "Keep-Alive: timeout=3"),
            ("X-Set-Response-Header", "Proxy-Authenticate: Basic"),
            ("X-Set-Response-Header", "X-Public: yes"),
        ],
    )
    assert r.status == 200, r.describe()
    assert r.header_all("X-Private") == [], f"listed in upstream's Connection: {r.headers}"
    assert "timeout=3" not in r.header_all("Keep-Alive"), r.headers
    assert r.header_all("Proxy-Authenticate") == []
    assert r.header_all("X-Public") == ["yes"]


def test_body_forwarded_with_one_content_length(env: Env) -> None:
    body = bytes(range(256)) * 100
    r = request(env.core.port, "POST", "/upload", host="front.test", body=body)
    data = r.json()
    h = data["headers"]
    assert data["body_len"] == len(body)
    assert data["body_sha256"] == sha256_hex(body)
    assert values(h, "Content-Length") == [str(len(body))]
    assert values(h, "Transfer-Encoding") == []


def test_content_length_and_transfer_encoding_never_both_upstream(env: Env) -> None:
    """Request smuggling: CL + TE. Either reject with 400 or forward with one clean framing."""
    before = env.echo.request_count()
    with RawConnection(env.core.port) as c:
        c.send(
            b"POST /smuggle HTTP/1.1\r\nHost: front.test\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        r = c.read_response()
    if r.status == 400:
        assert env.echo.request_count() == before
        return
    assert r.status == 200, r.describe()
    data = r.json()
    names = [k.lower() for k, _ in data["headers"]]
    assert not ("content-length" in names and "transfer-encoding" in names), data["headers"]
    assert data["body_len"] == 5, "Transfer-Encoding overrides Content-Length (RFC 9112 6.3)"
    assert data["body_sha256"] == sha256_hex(b"hello")
