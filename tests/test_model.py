"""Tests for minirouter.model: validation (with field paths), defaults, (de)serialisation."""

from __future__ import annotations

import dataclasses
import json
import pickle
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from minirouter.model import (
    KINDS,
    Certificate,
    Config,
    HeaderEdits,
    HealthCheck,
    Listener,
    Passive,
    Redirect,
    Route,
    Target,
    Timeouts,
    Upstream,
    ValidationError,
    check_config,
    config_from_dict,
    config_to_dict,
    dump_yaml,
    from_dict,
    kind_of,
    load_config,
    loads_config,
    to_dict,
)
from tls.certs import other_key, self_signed, shared_ca

# Certificates are parsed and checked (key, expiry, names): a real pair, made for the session.
_PAIR = shared_ca().issue("example.com", "*.example.com", "a.com")
PEM_CERT, PEM_KEY = _PAIR.cert, _PAIR.key


def errors(kind: str, data: Any) -> dict[str, str]:
    """The fields of the ValidationError that from_dict must raise."""
    with pytest.raises(ValidationError) as info:
        from_dict(kind, data)
    return info.value.fields


def route(**fields: Any) -> dict[str, Any]:
    return {"id": "r", "upstream": "u", **fields}


def upstream(**fields: Any) -> dict[str, Any]:
    return {"id": "u", "targets": ["127.0.0.1:9000"], **fields}


# -- ValidationError ----------------------------------------------------------------------------


def test_validation_error_is_value_error_with_readable_summary() -> None:
    err = ValidationError({"routes[2].path": "must start with /", "id": "bad"})
    assert isinstance(err, ValueError)
    assert str(err).splitlines() == ["routes[2].path: must start with /", "id: bad"]


def test_validation_error_survives_pickle() -> None:
    err = ValidationError({"path": "bad"})
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, ValidationError)
    assert copy.fields == {"path": "bad"}


def test_all_errors_are_collected() -> None:
    fields = errors("routes", {"id": "BAD", "path": "x", "retries": 99, "bogus": 1})
    assert {"id", "path", "retries", "bogus", "upstream"} <= fields.keys()


def test_non_mapping_item() -> None:
    assert "<root>" in errors("routes", ["id", "r"])


def test_unknown_kind_is_a_plain_value_error() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        from_dict("widgets", {})


def test_kinds_and_kind_of() -> None:
    assert KINDS == ("routes", "upstreams", "listeners", "certificates")
    assert kind_of(from_dict("routes", route())) == "routes"
    assert kind_of(from_dict("upstreams", upstream())) == "upstreams"


# -- defaults -----------------------------------------------------------------------------------


def test_route_defaults() -> None:
    r = Route.from_dict({"id": "r", "upstream": "u"})
    assert r == Route(id="r", upstream="u")
    assert (r.hosts, r.path, r.path_type, r.methods, r.headers) == ((), "/", "prefix", (), {})
    assert (r.priority, r.redirect, r.strip_prefix, r.rewrite) == (0, None, False, None)
    assert r.request_headers == HeaderEdits() and r.response_headers == HeaderEdits()
    assert (r.preserve_host, r.retries, r.enabled) == (False, 1, True)


def test_upstream_defaults() -> None:
    u = Upstream.from_dict(upstream())
    assert u == Upstream(id="u", targets=(Target("127.0.0.1:9000"),))
    assert (u.balance, u.hash_on, u.tls, u.sni, u.verify, u.keepalive) == (
        "round_robin",
        "client_ip",
        False,
        None,
        True,
        64,
    )
    assert u.timeouts == Timeouts(3.0, 30.0, 60.0)
    assert u.health is None
    assert u.passive == Passive(3, 10.0)


def test_nested_defaults_fill_missing_keys() -> None:
    u = from_dict("upstreams", upstream(timeouts={"read": 5}, health={}, passive={"max_fails": 0}))
    assert u.timeouts == Timeouts(read=5.0)
    assert isinstance(u.timeouts.read, float)
    assert u.health == HealthCheck()
    assert u.passive == Passive(max_fails=0)


def test_nulls_for_optional_fields() -> None:
    u = from_dict("upstreams", upstream(sni=None, health=None))
    assert u.sni is None and u.health is None
    r = from_dict("routes", route(redirect=None, rewrite=None))
    assert r.redirect is None and r.rewrite is None


# -- targets ------------------------------------------------------------------------------------


def test_target_forms_and_properties() -> None:
    u = from_dict(
        "upstreams",
        upstream(
            targets=[
                "127.0.0.1:9001",
                {"address": "[::1]:9000"},
                {"address": "backend.internal:80", "weight": 5},
            ]
        ),
    )
    assert u.targets == (
        Target("127.0.0.1:9001"),
        Target("[::1]:9000"),
        Target("backend.internal:80", 5),
    )
    assert (u.targets[0].host, u.targets[0].port) == ("127.0.0.1", 9001)
    assert (u.targets[1].host, u.targets[1].port) == ("::1", 9000)
    assert (u.targets[2].host, u.targets[2].port) == ("backend.internal", 80)


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1",  # no port
        "host:",
        ":80",
        "host:0",
        "host:65536",
        "host:80x",
        "host:+80",
        "::1:80",  # unbracketed IPv6
        "[::g]:80",
        "[::1]80",
        "999.1.1.1:80",
        "-bad.example:80",
        "bad..example:80",
        "a b:80",
        "",
    ],
)
def test_bad_target_address(target: str) -> None:
    assert "targets[0].address" in errors("upstreams", upstream(targets=[target]))


def test_bad_target_address_in_mapping_form() -> None:
    fields = errors("upstreams", upstream(targets=["a:1", {"address": "nope"}]))
    assert "targets[1].address" in fields


@pytest.mark.parametrize("weight", [0, 1001, "2", True, 1.5, None])
def test_bad_target_weight(weight: Any) -> None:
    fields = errors("upstreams", upstream(targets=[{"address": "a:1", "weight": weight}]))
    assert "targets[0].weight" in fields


def test_target_unknown_and_missing_keys() -> None:
    fields = errors("upstreams", upstream(targets=[{"weight": 2, "port": 80}]))
    assert "targets[0].address" in fields
    assert "targets[0].port" in fields


def test_target_wrong_type() -> None:
    assert "targets[0]" in errors("upstreams", upstream(targets=[8080]))


def test_targets_required_non_empty_and_a_list() -> None:
    assert "targets" in errors("upstreams", {"id": "u"})
    assert "targets" in errors("upstreams", upstream(targets=[]))
    assert "targets" in errors("upstreams", upstream(targets="a:1"))


@pytest.mark.parametrize(
    "targets",
    [
        ["a:1", "a:1"],
        ["a:1", {"address": "a:1", "weight": 2}],
        ["Host.Example:1", "host.example:1"],
        ["[::1]:80", "[0:0::1]:80"],
    ],
)
def test_duplicate_targets(targets: list[Any]) -> None:
    assert "targets[1].address" in errors("upstreams", upstream(targets=targets))


# -- balance ------------------------------------------------------------------------------------


def test_weights_imply_weighted_balance() -> None:
    u = from_dict("upstreams", upstream(targets=["a:1", {"address": "b:1", "weight": 3}]))
    assert u.balance == "weighted"


def test_explicit_balance_is_kept_with_weights() -> None:
    targets = ["a:1", {"address": "b:1", "weight": 3}]
    for balance in ("round_robin", "least_conn", "hash"):
        assert from_dict("upstreams", upstream(targets=targets, balance=balance)).balance == balance


def test_equal_weights_keep_round_robin() -> None:
    u = from_dict("upstreams", upstream(targets=[{"address": "a:1", "weight": 1}]))
    assert u.balance == "round_robin"


@pytest.mark.parametrize("balance", ["random", "", None, 1, "ROUND_ROBIN"])
def test_bad_balance(balance: Any) -> None:
    assert "balance" in errors("upstreams", upstream(balance=balance))


def test_hash_on_header_with_hash_balance() -> None:
    u = from_dict("upstreams", upstream(balance="hash", hash_on="header:X-User-Id"))
    assert u.hash_on == "header:X-User-Id"
    assert from_dict("upstreams", upstream(balance="hash")).hash_on == "client_ip"


@pytest.mark.parametrize("hash_on", ["header:", "header:X User", "cookie:x", "ip", "", 1])
def test_bad_hash_on(hash_on: Any) -> None:
    assert "hash_on" in errors("upstreams", upstream(balance="hash", hash_on=hash_on))


@pytest.mark.parametrize("balance", [None, "round_robin", "least_conn", "weighted"])
def test_hash_on_header_needs_hash_balance(balance: str | None) -> None:
    data = upstream(hash_on="header:X-User-Id")
    if balance is not None:
        data["balance"] = balance
    assert "hash_on" in errors("upstreams", data)


# -- other upstream fields ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "Upper"),
        ("id", "-start"),
        ("id", "a" * 65),
        ("id", "has space"),
        ("id", ""),
        ("id", 5),
        ("tls", "yes"),
        ("tls", 1),
        ("verify", None),
        ("sni", ""),
        ("sni", 5),
        ("sni", "not a name"),
        ("keepalive", -1),
        ("keepalive", "64"),
        ("keepalive", True),
        ("keepalive", 1.0),
        ("timeouts", 3),
        ("timeouts", {"connect": 0}),
        ("health", "yes"),
        ("passive", []),
    ],
)
def test_bad_upstream_field(field: str, value: Any) -> None:
    fields = errors("upstreams", upstream(**{field: value}))
    assert any(path == field or path.startswith(field + ".") for path in fields), fields


def test_id_accepts_full_pattern() -> None:
    assert from_dict("upstreams", upstream(id="a" * 64)).id == "a" * 64
    assert from_dict("upstreams", upstream(id="0a_b.c-d")).id == "0a_b.c-d"


@pytest.mark.parametrize(
    ("nested", "value"),
    [
        ("connect", 0),
        ("connect", -1),
        ("read", "30"),
        ("idle", True),
        ("idle", float("inf")),
        ("read", float("nan")),
        ("speed", 1),
    ],
)
def test_bad_timeouts(nested: str, value: Any) -> None:
    assert f"timeouts.{nested}" in errors("upstreams", upstream(timeouts={nested: value}))


@pytest.mark.parametrize(
    ("nested", "value"),
    [
        ("path", "healthz"),
        ("path", "/health z"),
        ("path", ""),
        ("interval", 0),
        ("timeout", -2),
        ("timeout", "2"),
        ("healthy", 0),
        ("unhealthy", 0),
        ("healthy", 1.0),
        ("unhealthy", True),
        ("port", 80),
    ],
)
def test_bad_health(nested: str, value: Any) -> None:
    assert f"health.{nested}" in errors("upstreams", upstream(health={nested: value}))


def test_health_path_may_have_a_query() -> None:
    u = from_dict("upstreams", upstream(health={"path": "/health?full=1"}))
    assert u.health == HealthCheck(path="/health?full=1")


@pytest.mark.parametrize(
    ("nested", "value"),
    [("max_fails", -1), ("max_fails", "3"), ("fail_timeout", 0), ("fail_timeout", None)],
)
def test_bad_passive(nested: str, value: Any) -> None:
    assert f"passive.{nested}" in errors("upstreams", upstream(passive={nested: value}))


def test_tls_fields() -> None:
    u = from_dict("upstreams", upstream(tls=True, sni="api.example.com", verify=False))
    assert (u.tls, u.sni, u.verify) == (True, "api.example.com", False)


# -- routes: hosts, paths -----------------------------------------------------------------------


def test_hosts_are_normalised() -> None:
    r = from_dict("routes", route(hosts=["API.Example.COM.", "*.Example.com", "10.0.0.1", "[::1]"]))
    assert r.hosts == ("api.example.com", "*.example.com", "10.0.0.1", "::1")


@pytest.mark.parametrize(
    "host",
    [
        "*",
        "*.",
        "a.*.com",
        "*example.com",
        "**.example.com",
        "ex ample.com",
        "",
        "-a.com",
        "a-.com",
        "a..com",
        "example.com:8080",
        "1.2.3.4.5",
        "\u017fite.com",  # long s: matches [a-z] case-insensitively unless ASCII-only
        "caf\u00e9.com",
        "a" * 64 + ".com",
        5,
    ],
)
def test_bad_host(host: Any) -> None:
    assert "hosts[1]" in errors("routes", route(hosts=["ok.example", host]))


def test_duplicate_host_after_normalising() -> None:
    assert "hosts[1]" in errors("routes", route(hosts=["a.example", "A.example."]))


def test_hosts_must_be_a_list() -> None:
    assert "hosts" in errors("routes", route(hosts="a.example"))


@pytest.mark.parametrize("path_type", ["prefix", "exact"])
@pytest.mark.parametrize("path", ["v1", "", "/a b", "/a\tb", "/a\x00", "/a?b=1", "/a#x", "/\u00a0"])
def test_bad_literal_path(path_type: str, path: str) -> None:
    assert "path" in errors("routes", route(path=path, path_type=path_type))


def test_path_must_be_a_string() -> None:
    assert "path" in errors("routes", route(path=5))


@pytest.mark.parametrize("path_type", ["Prefix", "glob", None])
def test_bad_path_type(path_type: Any) -> None:
    assert "path_type" in errors("routes", route(path_type=path_type))


def test_regex_path_error_includes_re_message() -> None:
    fields = errors("routes", route(path="/(a", path_type="regex"))
    assert "missing )" in fields["path"]


def test_regex_route_with_rewrite() -> None:
    r = from_dict("routes", route(path=r"/v1/(\w+)/(\d+)", path_type="regex", rewrite="/v2/$2/$1"))
    assert (r.path_type, r.rewrite) == ("regex", "/v2/$2/$1")
    assert from_dict("routes", route(path="/x", path_type="regex", rewrite="/y$0")).rewrite
    # One digit after "$" (as the fast path reads it): "$12" is group 1 followed by "2".
    r = from_dict("routes", route(path="/(a)/(b)", path_type="regex", rewrite="/$12/${2}"))
    assert r.rewrite == "/$12/${2}"


@pytest.mark.parametrize("path_type", ["prefix", "exact"])
def test_rewrite_only_for_regex_routes(path_type: str) -> None:
    assert "rewrite" in errors("routes", route(path="/a", path_type=path_type, rewrite="/b"))


@pytest.mark.parametrize("rewrite", ["/v2/$3", "/${3}", "/${10}", "/a b/$1", "", 5])
def test_bad_rewrite(rewrite: Any) -> None:
    fields = errors("routes", route(path="/(a)/(b)", path_type="regex", rewrite=rewrite))
    assert "rewrite" in fields


def test_strip_prefix_not_for_regex_routes() -> None:
    fields = errors("routes", route(path="/a", path_type="regex", strip_prefix=True))
    assert "strip_prefix" in fields
    assert from_dict("routes", route(path="/a", path_type="exact", strip_prefix=True)).strip_prefix


# -- routes: methods, headers, numbers ----------------------------------------------------------


def test_methods_are_upper_cased() -> None:
    assert from_dict("routes", route(methods=["get", "Post", "PURGE"])).methods == (
        "GET",
        "POST",
        "PURGE",
    )


@pytest.mark.parametrize("method", ["GE T", "", "G/ET", 1, "\u00df"])
def test_bad_method(method: Any) -> None:
    assert "methods[0]" in errors("routes", route(methods=[method]))


def test_duplicate_method() -> None:
    assert "methods[1]" in errors("routes", route(methods=["get", "GET"]))


def test_header_conditions() -> None:
    assert from_dict("routes", route(headers={"X-Canary": "1"})).headers == {"X-Canary": "1"}


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ({"X Canary": "1"}, "headers.X Canary"),
        ({"X-Canary": 1}, "headers.X-Canary"),
        ({"X-Canary": "a\r\nb"}, "headers.X-Canary"),
        ({"X-A": "1", "x-a": "2"}, "headers.x-a"),
        ({"": "1"}, "headers."),
    ],
)
def test_bad_header_conditions(headers: dict[str, Any], path: str) -> None:
    assert path in errors("routes", route(headers=headers))


def test_headers_must_be_a_mapping() -> None:
    assert "headers" in errors("routes", route(headers=["X-A"]))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", 1_000_001),
        ("priority", -1_000_001),
        ("priority", "1"),
        ("priority", 1.0),
        ("priority", False),
        ("retries", -1),
        ("retries", 11),
        ("retries", True),
        ("preserve_host", "false"),
        ("enabled", 0),
        ("strip_prefix", None),
        ("upstream", "Not-An-Id"),
        ("upstream", 3),
    ],
)
def test_bad_route_scalar(field: str, value: Any) -> None:
    assert field in errors("routes", route(**{field: value}))


def test_route_numbers_at_bounds() -> None:
    assert from_dict("routes", route(priority=-1_000_000, retries=0)).priority == -1_000_000
    assert from_dict("routes", route(priority=1_000_000, retries=10)).retries == 10


# -- routes: upstream / redirect ----------------------------------------------------------------


def test_redirect_route() -> None:
    r = from_dict("routes", {"id": "r", "redirect": {"to": "https://x$path"}})
    assert r.redirect == Redirect("https://x$path", 308)
    assert r.upstream is None
    r = from_dict("routes", {"id": "r", "redirect": {"to": "/new", "code": 301}})
    assert r.redirect == Redirect("/new", 301)


def test_upstream_or_redirect_required() -> None:
    assert "upstream" in errors("routes", {"id": "r"})
    assert "upstream" in errors("routes", {"id": "r", "upstream": None})


def test_not_both_upstream_and_redirect() -> None:
    fields = errors("routes", route(redirect={"to": "/x"}))
    assert "upstream" in fields and "redirect" in fields


@pytest.mark.parametrize(
    ("redirect", "path"),
    [
        ({"to": "/x", "code": 200}, "redirect.code"),
        ({"to": "/x", "code": "301"}, "redirect.code"),
        ({"to": "/x", "code": True}, "redirect.code"),
        ({"to": "/x", "code": 301.0}, "redirect.code"),
        ({"code": 301}, "redirect.to"),
        ({"to": ""}, "redirect.to"),
        ({"to": "/a b"}, "redirect.to"),
        ({"to": "/x", "status": 301}, "redirect.status"),
        ("https://x", "redirect"),
    ],
)
def test_bad_redirect(redirect: Any, path: str) -> None:
    assert path in errors("routes", {"id": "r", "redirect": redirect})


# -- routes: header edits -----------------------------------------------------------------------


def test_header_edits() -> None:
    r = from_dict(
        "routes",
        route(
            request_headers={"set": {"X-Env": "prod"}, "add": {"Via": "x"}, "remove": ["X-Debug"]},
            response_headers={
                "set": {"X-Served-By": "r"},
                "add": {"Vary": "A"},
                "remove": ["Server"],
            },
        ),
    )
    assert r.request_headers == HeaderEdits({"X-Env": "prod"}, {"Via": "x"}, ("X-Debug",))
    assert r.response_headers == HeaderEdits({"X-Served-By": "r"}, {"Vary": "A"}, ("Server",))


def test_request_host_may_be_set() -> None:
    r = from_dict("routes", route(request_headers={"set": {"Host": "internal"}}))
    assert r.request_headers.set == {"Host": "internal"}


@pytest.mark.parametrize("side", ["request_headers", "response_headers"])
@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "CONNECTION"])
@pytest.mark.parametrize("op", ["set", "add", "remove"])
def test_framing_headers_cannot_be_edited(side: str, name: str, op: str) -> None:
    edits: dict[str, Any] = {op: [name]} if op == "remove" else {op: {name: "1"}}
    path = f"{side}.remove[0]" if op == "remove" else f"{side}.{op}.{name}"
    fields = errors("routes", route(**{side: edits}))
    assert path in fields
    assert "cannot be edited" in fields[path]


def test_response_host_cannot_be_edited() -> None:
    assert "response_headers.set.Host" in errors(
        "routes", route(response_headers={"set": {"Host": "x"}})
    )


@pytest.mark.parametrize(
    ("edits", "path"),
    [
        ({"set": {"Bad Name": "1"}}, "request_headers.set.Bad Name"),
        ({"set": {"X-A": "a\nb"}}, "request_headers.set.X-A"),
        ({"add": {"X-A": "a\rb"}}, "request_headers.add.X-A"),
        ({"add": {"X-A": "a\x00b"}}, "request_headers.add.X-A"),
        ({"set": {"X-A": None}}, "request_headers.set.X-A"),
        ({"remove": ["X-A", "x-a"]}, "request_headers.remove[1]"),
        ({"remove": ["Bad:Name"]}, "request_headers.remove[0]"),
        ({"remove": "X-A"}, "request_headers.remove"),
        ({"set": ["X-A"]}, "request_headers.set"),
        ({"replace": {}}, "request_headers.replace"),
        ("X-A: 1", "request_headers"),
    ],
)
def test_bad_header_edits(edits: Any, path: str) -> None:
    assert path in errors("routes", route(request_headers=edits))


# -- unknown keys, listeners, certificates ------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_key_is_named(kind: str) -> None:
    fields = errors(kind, {"id": "x", "surprise": 1})
    assert "unknown field" in fields["surprise"]


def test_unknown_key_suggests_the_right_one() -> None:
    assert "did you mean 'upstream'" in errors("routes", route(upstreams="u"))["upstreams"]


def test_listener() -> None:
    listener = from_dict("listeners", {"id": "pg", "listen": "0.0.0.0:15432", "upstream": "pg"})
    assert listener == Listener("pg", "0.0.0.0:15432", "pg")
    assert from_dict("listeners", {"id": "l", "listen": "[::]:80", "upstream": "u"}).listen


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"id": "l", "listen": "15432", "upstream": "u"}, "listen"),
        ({"id": "l", "listen": "0.0.0.0:0", "upstream": "u"}, "listen"),
        ({"id": "l", "listen": 15432, "upstream": "u"}, "listen"),
        ({"id": "l", "listen": "0.0.0.0:1"}, "upstream"),
        ({"id": "l", "listen": "0.0.0.0:1", "upstream": "Bad Id"}, "upstream"),
        ({"listen": "0.0.0.0:1", "upstream": "u"}, "id"),
    ],
)
def test_bad_listener(data: dict[str, Any], path: str) -> None:
    assert path in errors("listeners", data)


def test_certificate() -> None:
    cert = from_dict(
        "certificates",
        {"id": "c", "names": ["Example.com", "*.example.com"], "cert": PEM_CERT, "key": PEM_KEY},
    )
    assert cert == Certificate("c", ("example.com", "*.example.com"), PEM_CERT, PEM_KEY)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"names": []}, "names"),
        ({"names": "example.com"}, "names"),
        ({"names": ["a.*"]}, "names[0]"),
        ({"names": ["a.com", "A.com"]}, "names[1]"),
        ({"cert": ""}, "cert"),
        ({"cert": "MIIB"}, "cert"),
        ({"key": None}, "key"),
        ({"key": "not pem"}, "key"),
    ],
)
def test_bad_certificate(change: dict[str, Any], path: str) -> None:
    data = {"id": "c", "names": ["a.com"], "cert": PEM_CERT, "key": PEM_KEY, **change}
    assert path in errors("certificates", data)


def test_certificate_required_fields() -> None:
    assert {"names", "cert", "key"} <= errors("certificates", {"id": "c"}).keys()


def test_certificate_default_and_listener_tls_round_trip() -> None:
    data = {"id": "c", "names": ["a.com"], "cert": PEM_CERT, "key": PEM_KEY, "default": True}
    cert = from_dict("certificates", data)
    assert cert.default is True and to_dict(cert) == data
    listener = from_dict(
        "listeners", {"id": "l", "listen": "0.0.0.0:1", "upstream": "u", "tls": True}
    )
    assert listener.tls is True
    assert "tls" not in to_dict(dataclasses.replace(listener, tls=False))
    assert "listeners" not in errors(
        "listeners", {"id": "l", "listen": "x:1", "upstream": "u", "tls": 1}
    )
    assert "tls" in errors("listeners", {"id": "l", "listen": "x:1", "upstream": "u", "tls": 1})


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"key": shared_ca().issue("a.com").key}, "key", "does not match the certificate"),
        ({"cert": shared_ca().issue("a.com", expired=True).cert}, "cert", "expired on"),
        ({"names": ["b.com"]}, "names[0]", "'b.com' is not covered by the certificate"),
        # a wildcard certificate covers one label, not the bare domain or two labels
        ({"names": ["x.y.example.com"]}, "names[0]", "not covered"),
        ({"cert": PEM_KEY}, "cert", "not a valid PEM certificate"),
        (
            {"key": "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"},
            "key",
            "not a valid PEM private key",
        ),
    ],
)
def test_certificate_contents_are_checked(change: dict[str, Any], path: str, message: str) -> None:
    data = {"id": "c", "names": ["a.com"], "cert": PEM_CERT, "key": PEM_KEY, **change}
    assert message in errors("certificates", data)[path]


def test_encrypted_key_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization

    key = other_key()
    pair = shared_ca().issue("a.com", key=key)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()
    data = {"id": "c", "names": ["a.com"], "cert": pair.cert, "key": encrypted}
    assert "encrypted" in errors("certificates", data)["key"]
    # the same key unencrypted is accepted: it matches the certificate
    plain = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert from_dict("certificates", data | {"key": plain}).key == plain


def test_upstream_ca() -> None:
    ca = shared_ca().cert_pem
    up = from_dict("upstreams", {"id": "u", "targets": ["h:1"], "tls": True, "ca": ca})
    assert up.ca == ca
    assert "ca" in errors("upstreams", {"id": "u", "targets": ["h:1"], "ca": ca})  # no tls
    # a CA with verification off would be ignored: refused rather than silently unchecked
    no_verify = {"id": "u", "targets": ["h:1"], "tls": True, "ca": ca, "verify": False}
    assert "no effect with verify: false" in errors("upstreams", no_verify)["ca"]
    bad = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    fields = errors("upstreams", {"id": "u", "targets": ["h:1"], "tls": True, "ca": bad})
    assert "not valid PEM certificates" in fields["ca"]


# -- to_dict ------------------------------------------------------------------------------------


def test_to_dict_omits_defaults() -> None:
    assert to_dict(from_dict("routes", route())) == {"id": "r", "upstream": "u"}
    assert to_dict(from_dict("upstreams", upstream(timeouts={}, passive={}))) == upstream()


def test_to_dict_targets_and_implied_balance() -> None:
    data = upstream(
        targets=["a:1", {"address": "b:1", "weight": 1}, {"address": "c:1", "weight": 2}]
    )
    out = to_dict(from_dict("upstreams", data))
    assert out["targets"] == ["a:1", "b:1", {"address": "c:1", "weight": 2}]
    assert out["balance"] == "weighted"


def test_to_dict_keeps_explicit_round_robin_with_weights() -> None:
    data = upstream(targets=[{"address": "c:1", "weight": 2}], balance="round_robin")
    u = from_dict("upstreams", data)
    assert to_dict(u)["balance"] == "round_robin"
    assert from_dict("upstreams", to_dict(u)) == u


def test_to_dict_nested_objects() -> None:
    u = from_dict("upstreams", upstream(health={}, timeouts={"read": 2.5, "idle": 60}))
    out = to_dict(u)
    assert out["health"] == {}  # health's default is "none", so an all-default check stays
    assert out["timeouts"] == {"read": 2.5}
    r = from_dict("routes", route(request_headers={"remove": ["X-A"]}, response_headers={}))
    assert to_dict(r)["request_headers"] == {"remove": ["X-A"]}
    assert "response_headers" not in to_dict(r)


def test_to_dict_field_order_and_methods() -> None:
    r = from_dict("routes", route(retries=2, hosts=["a.b"], path="/x", priority=3))
    assert list(to_dict(r)) == ["id", "hosts", "path", "priority", "upstream", "retries"]
    assert r.to_dict() == to_dict(r)


# -- whole configs ------------------------------------------------------------------------------


def full_config() -> dict[str, Any]:
    return {
        "upstreams": [
            upstream(targets=["127.0.0.1:9001", {"address": "127.0.0.1:9002", "weight": 3}]),
            {"id": "pg-pool", "targets": ["db:5432"]},
        ],
        "routes": [
            route(id="api-v1", hosts=["api.example.com"], path="/v1/", strip_prefix=True),
            {"id": "old", "redirect": {"to": "https://new$path"}},
        ],
        "listeners": [{"id": "pg", "listen": "0.0.0.0:15432", "upstream": "pg-pool"}],
        "certificates": [{"id": "c", "names": ["*.example.com"], "cert": PEM_CERT, "key": PEM_KEY}],
    }


def config_errors(data: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        config_from_dict(data)
    return info.value.fields


def test_config_from_dict() -> None:
    config = Config.from_dict(full_config())
    assert [u.id for u in config.upstreams] == ["u", "pg-pool"]
    assert config.upstreams[0].balance == "weighted"
    assert [r.id for r in config.routes] == ["api-v1", "old"]
    assert config.listeners[0].upstream == "pg-pool"
    assert config_from_dict(config_to_dict(config)) == config
    assert config.to_dict() == config_to_dict(config)


def test_empty_config() -> None:
    assert config_from_dict({}) == Config()
    assert config_from_dict({"routes": None}) == Config()
    assert config_to_dict(Config()) == {}


def test_config_item_errors_have_full_paths() -> None:
    data = full_config()
    data["routes"].append(route(id="bad", path="nope"))
    data["upstreams"][0]["targets"].append("x:99999")
    fields = config_errors(data)
    assert "routes[2].path" in fields
    assert "upstreams[0].targets[2].address" in fields


def test_config_duplicate_ids() -> None:
    data = full_config()
    data["routes"].append(route(id="api-v1"))
    data["upstreams"].append(upstream(id="pg-pool"))
    fields = config_errors(data)
    assert "routes[2].id" in fields and "routes[0]" in fields["routes[2].id"]
    assert "upstreams[2].id" in fields


def test_config_cross_references() -> None:
    data = full_config()
    data["routes"].append(route(id="r3", upstream="missing"))
    data["listeners"][0]["upstream"] = "nowhere"
    fields = config_errors(data)
    assert "unknown upstream" in fields["routes[2].upstream"]
    assert "listeners[0].upstream" in fields


def test_invalid_upstream_does_not_cascade_to_references() -> None:
    data = full_config()
    data["upstreams"][1]["targets"] = []
    fields = config_errors(data)
    assert "upstreams[1].targets" in fields
    assert "listeners[0].upstream" not in fields


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ([], "<root>"),
        ({"route": []}, "route"),
        ({"routes": {"id": "r"}}, "routes"),
        ({"routes": ["r"]}, "routes[0]"),
    ],
)
def test_bad_config_shape(data: Any, path: str) -> None:
    assert path in config_errors(data)


def test_check_config() -> None:
    config = config_from_dict(full_config())
    check_config(config)
    broken = dataclasses.replace(config, routes=(*config.routes, Route("x", upstream="gone")))
    with pytest.raises(ValidationError) as info:
        check_config(broken)
    assert "routes[2].upstream" in info.value.fields
    dup = dataclasses.replace(config, listeners=config.listeners * 2)
    with pytest.raises(ValidationError) as info:
        check_config(dup)
    assert "listeners[1].id" in info.value.fields


# -- YAML ---------------------------------------------------------------------------------------


def test_dump_and_load_yaml(tmp_path: Path) -> None:
    config = config_from_dict(full_config())
    text = dump_yaml(config)
    assert text.startswith("upstreams:\n- id: u\n")
    assert "{" not in text.split("certificates")[0]  # block style
    assert "cert: |" in text  # PEM as a literal block
    assert list(yaml.safe_load(text)) == ["upstreams", "routes", "listeners", "certificates"]
    assert loads_config(text) == config
    file = tmp_path / "config.yaml"
    file.write_text(text)
    assert load_config(file) == config
    assert load_config(str(file)) == config


def test_load_json(tmp_path: Path) -> None:
    file = tmp_path / "config.json"
    file.write_text('{"upstreams": [{"id": "u", "targets": ["a:1"]}]}')
    assert load_config(file).upstreams[0].targets == (Target("a:1"),)


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("routes:\n  - id: a\n    path: [/x\n")
    with pytest.raises(ValidationError) as info:
        load_config(file)
    message = info.value.fields["<file>"]
    assert "line" in message and "column" in message


def test_yaml_bad_encoding() -> None:
    with pytest.raises(ValidationError) as info:
        loads_config(b"routes: \xff\xfe\xfa")
    assert "<file>" in info.value.fields


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text", "42"])
def test_yaml_top_level_must_be_a_mapping(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        loads_config(text)
    assert "mapping" in info.value.fields["<file>"]


def test_yaml_validation_errors_use_field_paths() -> None:
    with pytest.raises(ValidationError) as info:
        loads_config("upstreams:\n  - id: u\n    targets: [a:1]\n    keepalive: '8'\n")
    assert "upstreams[0].keepalive" in info.value.fields


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.yaml")


# -- property tests: round trips ----------------------------------------------------------------

LOWER = string.ascii_lowercase + string.digits
ids = st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,63}\Z")
labels = st.text(LOWER, min_size=1, max_size=8).filter(lambda s: not s.isdigit())
dns_names = st.lists(labels, min_size=1, max_size=3).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(1, 65535)
addresses = st.one_of(
    st.tuples(st.one_of(dns_names, ipv4), ports).map(lambda hp: f"{hp[0]}:{hp[1]}"),
    st.tuples(ipv6, ports).map(lambda hp: f"[{hp[0]}]:{hp[1]}"),
)
positive = st.one_of(
    st.integers(1, 10_000), st.floats(min_value=1e-3, max_value=1e6, allow_nan=False)
)
tokens = st.from_regex(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}\Z")
# Valid values only: no CR, LF, NUL, nor lone surrogates (refused: see the test below).
header_values = st.text(
    st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=20
)
editable = tokens.filter(
    lambda n: n.lower() not in {"content-length", "transfer-encoding", "connection", "host"}
)
safe_path = st.text(string.ascii_letters + string.digits + "/-._~%", max_size=20).map(
    lambda s: "/" + s
)


def header_dicts(names: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.lists(
        st.tuples(names, header_values), max_size=3, unique_by=lambda t: t[0].lower()
    ).map(dict)


def header_edits() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "set": header_dicts(editable),
            "add": header_dicts(editable),
            "remove": st.lists(editable, max_size=3, unique_by=str.lower),
        },
    )


def optional_fields(**strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=strategies)


targets = st.one_of(
    addresses,
    st.fixed_dictionaries({"address": addresses}, optional={"weight": st.integers(1, 1000)}),
)


def address_of(target: Any) -> str:
    return str(target if isinstance(target, str) else target["address"]).lower()


@st.composite
def upstream_dicts(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": draw(ids),
        "targets": draw(
            st.lists(
                targets,
                min_size=1,
                max_size=4,
                unique_by=address_of,
            )
        ),
    }
    data |= draw(
        optional_fields(
            balance=st.sampled_from(["round_robin", "weighted", "least_conn", "hash"]),
            tls=st.booleans(),
            sni=st.one_of(st.none(), dns_names),
            verify=st.booleans(),
            keepalive=st.integers(0, 1000),
            timeouts=optional_fields(connect=positive, read=positive, idle=positive),
            health=st.one_of(
                st.none(),
                optional_fields(
                    path=safe_path,
                    interval=positive,
                    timeout=positive,
                    healthy=st.integers(1, 10),
                    unhealthy=st.integers(1, 10),
                ),
            ),
            passive=optional_fields(max_fails=st.integers(0, 100), fail_timeout=positive),
        )
    )
    if data.get("balance") == "hash":
        data |= draw(
            optional_fields(hash_on=st.one_of(st.just("client_ip"), tokens.map("header:".__add__)))
        )
    return data


REGEXES = [(r"/v1/(\w+)", 1), (r"/(a|b)/(\d+)/", 2), (r"/static/.*\.css", 0)]


@st.composite
def route_dicts(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {"id": draw(ids)}
    path_type = draw(st.sampled_from(["prefix", "exact", "regex", None]))
    if path_type == "regex":
        regex, groups = draw(st.sampled_from(REGEXES))
        data |= {"path_type": "regex", "path": regex}
        if draw(st.booleans()):
            data["rewrite"] = "/r" + "".join(f"/${i}/${{{i}}}" for i in range(groups + 1))
    else:
        if path_type is not None:
            data["path_type"] = path_type
        data |= draw(optional_fields(path=safe_path, strip_prefix=st.booleans()))
    hosts = st.one_of(dns_names, dns_names.map("*.".__add__), ipv4)
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "get", "purge"])
    data |= draw(
        optional_fields(
            hosts=st.lists(hosts, max_size=3, unique=True),
            methods=st.lists(methods, max_size=3, unique_by=str.upper),
            headers=header_dicts(tokens),
            priority=st.integers(-1_000_000, 1_000_000),
            request_headers=header_edits(),
            response_headers=header_edits(),
            preserve_host=st.booleans(),
            retries=st.integers(0, 10),
            enabled=st.booleans(),
        )
    )
    if draw(st.booleans()):
        data["upstream"] = draw(ids)
    else:
        data["redirect"] = draw(
            st.fixed_dictionaries(
                {"to": safe_path.map("https://example.com".__add__)},
                optional={"code": st.sampled_from([301, 302, 303, 307, 308])},
            )
        )
    return data


@given(upstream_dicts())
def test_upstream_round_trip(data: dict[str, Any]) -> None:
    u = from_dict("upstreams", data)
    assert from_dict("upstreams", json.loads(json.dumps(to_dict(u)))) == u
    assert from_dict("upstreams", to_dict(u)) == u
    assert to_dict(from_dict("upstreams", to_dict(u))) == to_dict(u)


@given(route_dicts())
def test_route_round_trip(data: dict[str, Any]) -> None:
    r = from_dict("routes", data)
    assert from_dict("routes", json.loads(json.dumps(to_dict(r)))) == r
    assert from_dict("routes", to_dict(r)) == r
    assert to_dict(from_dict("routes", to_dict(r))) == to_dict(r)


@settings(max_examples=50)
@given(upstream_dicts(), route_dicts())
def test_yaml_round_trip(up: dict[str, Any], rt: dict[str, Any]) -> None:
    u = from_dict("upstreams", up)
    r = from_dict("routes", rt)
    if r.upstream is not None:
        r = dataclasses.replace(r, upstream=u.id)
    config = Config(upstreams=(u,), routes=(r,))
    assert loads_config(dump_yaml(config)) == config


def test_certificate_openssl_would_refuse_is_refused() -> None:
    # cryptography parses a 1024-bit RSA certificate fine, but OpenSSL (security level 2)
    # refuses to serve it: the core could never load it, so the write is refused.
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    data = self_signed(key, "a.com", "a.com").item("c", ["a.com"])
    assert "refused by OpenSSL" in errors("certificates", data)["cert"]


def test_key_of_an_unsupported_type_is_a_validation_error_not_a_crash() -> None:
    import subprocess

    # A valid EC key on a curve cryptography does not support (made by the openssl CLI).
    key = subprocess.run(
        ["openssl", "ecparam", "-name", "secp112r1", "-genkey", "-noout"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert "-----BEGIN EC PRIVATE KEY-----" in key
    data = {"id": "c", "names": ["a.com"], "cert": PEM_CERT, "key": key}
    assert "not a valid PEM private key" in errors("certificates", data)["key"]


def test_certificate_without_subject_alt_name_is_refused() -> None:
    # Clients ignore the common name: a certificate without SAN covers no name at all.
    data = self_signed(other_key(), "a.com").item("c", ["a.com"])
    assert "no subjectAltName" in errors("certificates", data)["names[0]"]


@pytest.mark.parametrize(
    ("kind", "data", "field", "at"),
    [
        ("routes", {"id": "r", "upstream": "u", "path": "/\ud800"}, "path", 1),
        (
            "routes",
            {"id": "r", "upstream": "u", "path": "^/\ud800", "path_type": "regex"},
            "path",
            2,
        ),
        ("routes", {"id": "r", "redirect": {"to": "/\udfff"}}, "redirect.to", 1),
        ("routes", {"id": "r", "upstream": "u", "headers": {"X-A": "a\ud800"}}, "headers.X-A", 1),
        (
            "routes",
            {"id": "r", "upstream": "u", "request_headers": {"set": {"X-A": "\ud800"}}},
            "request_headers.set.X-A",
            0,
        ),
        (
            "upstreams",
            {"id": "u", "targets": ["127.0.0.1:1"], "health": {"path": "/\ud800"}},
            "health.path",
            1,
        ),
    ],
)
def test_text_with_a_lone_surrogate_is_refused(
    kind: str, data: dict[str, Any], field: str, at: int
) -> None:
    # JSON carries "\ud800" fine, but such a value could never be written as UTF-8 (YAML
    # export, the GUI, the snapshot file): refused on write, naming the field.
    assert errors(kind, data) == {
        field: f"must be valid Unicode text (a lone surrogate at position {at})"
    }
    valid = json.loads(json.dumps(data).replace("\\ud800", "\\u00e9").replace("\\udfff", "\\u00e9"))
    assert from_dict(kind, valid).id == data["id"]  # other non-ASCII text is accepted
