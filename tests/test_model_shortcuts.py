"""The validator's shortcuts (per-class field tables, fast paths for plain values, cached
address parsing) must not change what it accepts or what its errors say and name."""

from __future__ import annotations

import dataclasses
import re
import types
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirouter import model
from minirouter.model import Route, ValidationError, from_dict


def errors(kind: str, data: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        from_dict(kind, data)
    return info.value.fields


def test_no_introspection_per_item(monkeypatch: pytest.MonkeyPatch) -> None:
    # Field tables are built at import: loading 100k routes must not call fields() each time.
    def refuse(_: Any) -> Any:
        raise AssertionError("dataclasses.fields() called while validating an item")

    monkeypatch.setattr(model, "fields", refuse)
    data = {"id": "r", "path": "/a", "upstream": "u", "redirect": None}
    assert from_dict("routes", data) == Route(id="r", path="/a", upstream="u")
    assert errors("routes", {"id": "r", "redirect": {"to": "/b", "cod": 301}}) == {
        "redirect.cod": "unknown field (did you mean 'code'?)"
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Bad", "invalid id 'Bad': use [a-z0-9][a-z0-9_.-]{0,63}"),
        ("", "must not be empty"),
        (7, "expected a string, got an integer"),
        (None, "expected a string, got null"),
    ],
)
def test_id_errors_name_the_field(value: Any, message: str) -> None:
    assert errors("routes", {"id": value, "upstream": "u"}) == {"id": message}
    listener = {"id": "l", "listen": "127.0.0.1:80", "upstream": value}
    assert errors("listeners", listener) == {"upstream": message}


def test_id_subclass_of_str_still_checked() -> None:
    class Name(str):
        pass

    assert from_dict("routes", {"id": Name("r1"), "upstream": "u"}).id == "r1"
    assert errors("routes", {"id": Name("R1"), "upstream": "u"}) == {
        "id": "invalid id 'R1': use [a-z0-9][a-z0-9_.-]{0,63}"
    }


def test_mapping_that_is_not_a_dict_is_accepted() -> None:
    data = types.MappingProxyType({"id": "r", "upstream": "u", "redirect": None})
    assert from_dict("routes", data) == Route(id="r", upstream="u")
    assert errors("routes", ["id", "r"]) == {"<root>": "expected a mapping, got a list"}


def test_unknown_and_missing_fields_nested() -> None:
    found = errors("upstreams", {"targets": ["a:1"], "timeouts": {"conect": 1}})
    assert found == {
        "timeouts.conect": "unknown field (did you mean 'connect'?)",
        "id": "required field is missing",
    }


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (True, "a boolean"),
        (301.0, "a number"),
        ([301], "a list"),
        ({"code": 301}, "a mapping"),
        ("301", "'301'"),
    ],
)
def test_choice_compares_types_and_survives_unhashable_values(value: Any, shown: str) -> None:
    found = errors("routes", {"id": "r", "redirect": {"to": "/b", "code": value}})
    assert found == {"redirect.code": f"must be one of 301, 302, 303, 307, 308; got {shown}"}
    found = errors("routes", {"id": "r", "upstream": "u", "path_type": [value]})
    assert found == {"path_type": "must be one of prefix, exact, regex; got a list"}


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("1.2.3:80", "invalid host '1.2.3': expected a DNS name, IPv4 or [IPv6] address"),
        ("1.2.3.4.5:80", "invalid host '1.2.3.4.5': expected a DNS name, IPv4 or [IPv6] address"),
        ("256.1.1.1:80", "invalid host '256.1.1.1': expected a DNS name, IPv4 or [IPv6] address"),
        ("a..b:80", "invalid host 'a..b': expected a DNS name, IPv4 or [IPv6] address"),
        ("-a.b:80", "invalid host '-a.b': expected a DNS name, IPv4 or [IPv6] address"),
        ("web:0", "invalid port '0': must be 1..65535"),
    ],
)
def test_cached_address_errors_name_each_target(address: str, message: str) -> None:
    # The same bad address, seen again (parse cached), is still reported where it is.
    for _ in range(2):
        found = errors("upstreams", {"id": "u", "targets": ["10.0.0.1:80", address]})
        assert found == {"targets[1].address": message}


def test_duplicate_targets_still_found() -> None:
    found = errors("upstreams", {"id": "u", "targets": ["Web:80", "10.0.0.1:80", "web:80"]})
    assert found == {"targets[2].address": "duplicate target address (same as targets[0])"}


def test_hosts_accepted_and_normalised() -> None:
    hosts = ["API.example.com.", "*.Example.org", "10.0.0.1", "[::1]", "svc_a"]
    got = from_dict("routes", {"id": "r", "upstream": "u", "hosts": hosts}).hosts
    assert got == ("api.example.com", "*.example.org", "10.0.0.1", "::1", "svc_a")
    assert errors("routes", {"id": "r", "upstream": "u", "hosts": ["ok.com", "a.1"]}) == {
        "hosts[1]": "invalid host 'a.1': expected a DNS name, an IP address or *.suffix"
    }


_REFERENCE_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE | re.ASCII)


def _reference_is_dns_name(name: str) -> bool:
    """Each label matched on its own: the definition the one-regex check must agree with."""
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_REFERENCE_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


_NAME_PARTS = st.text(alphabet="aZ09_-.\u212a\u017f:", max_size=80) | st.lists(
    st.text(alphabet="ab9-_", min_size=0, max_size=66), max_size=6
).map(".".join)


@given(_NAME_PARTS)
def test_dns_name_check_agrees_with_per_label_definition(name: str) -> None:
    assert model._is_dns_name(name) == _reference_is_dns_name(name)


def test_dns_name_label_and_total_length_limits() -> None:
    assert model._is_dns_name("a" * 63 + ".com")
    assert not model._is_dns_name("a" * 64 + ".com")
    long_name = ".".join(["a" * 63] * 4)  # 255 characters
    assert len(long_name) > 253 and not model._is_dns_name(long_name)


def test_every_model_class_has_one_table_entry_per_field() -> None:
    # A field left out of a parser table would otherwise be refused as "unknown field".
    for cls, parsers in ((Route, model._ROUTE_PARSERS), (model.Upstream, model._UPSTREAM_PARSERS)):
        assert set(parsers) == {f.name for f in dataclasses.fields(cls)}
    with pytest.raises(TypeError, match="Redirect"):
        model._Table(model.Redirect, {"to": model._template})
