"""Route.max_body_size and Route.websocket: parsing, validation naming the field, round trips."""

from __future__ import annotations

from typing import Any

import pytest

from minirouter.model import Route, ValidationError, config_from_dict, dump_yaml, loads_config

BASE: dict[str, Any] = {"id": "r", "upstream": "u"}


def route(**fields: Any) -> Route:
    return Route.from_dict({**BASE, **fields})


def test_defaults() -> None:
    r = route()
    assert r.max_body_size is None and r.websocket is True
    assert r.to_dict() == BASE  # defaults are left out


@pytest.mark.parametrize(
    ("given", "size"),
    [
        (0, 0),
        (4096, 4096),
        ("0", 0),
        ("4096", 4096),
        ("512k", 512 * 1024),
        ("10m", 10 * 1024**2),
        ("10M", 10 * 1024**2),
        ("1g", 1024**3),
        ("2mb", 2 * 1024**2),
        (None, None),
    ],
)
def test_max_body_size_accepts_sizes(given: object, size: int | None) -> None:
    assert route(max_body_size=given).max_body_size == size


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (-1, "must not be negative"),
        ("-1", "invalid size"),
        ("10q", "invalid size"),
        ("", "invalid size"),
        ("ten", "invalid size"),
        (True, "got a boolean"),
        (1.5, "got a number"),
        ([1], "got a list"),
    ],
)
def test_max_body_size_rejects(given: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        route(max_body_size=given)
    assert list(info.value.fields) == ["max_body_size"]
    assert message in info.value.fields["max_body_size"]


@pytest.mark.parametrize("given", [1, "false", None, 0])
def test_websocket_must_be_a_boolean(given: object) -> None:
    with pytest.raises(ValidationError) as info:
        route(websocket=given)
    assert list(info.value.fields) == ["websocket"]


def test_serialised_as_bytes_and_loaded_back_equal() -> None:
    r = route(max_body_size="10m", websocket=False)
    assert r.to_dict() == {**BASE, "max_body_size": 10 * 1024**2, "websocket": False}
    assert Route.from_dict(r.to_dict()) == r
    unlimited = route(max_body_size=0)
    assert unlimited.to_dict()["max_body_size"] == 0  # 0 (unlimited) is not the default None
    assert Route.from_dict(unlimited.to_dict()) == unlimited


def test_yaml_round_trip_and_field_path_in_a_config() -> None:
    cfg = config_from_dict(
        {
            "upstreams": [{"id": "u", "targets": ["127.0.0.1:9000"]}],
            "routes": [{**BASE, "max_body_size": "1k", "websocket": False}],
        }
    )
    assert loads_config(dump_yaml(cfg)) == cfg
    with pytest.raises(ValidationError) as info:
        config_from_dict(
            {
                "upstreams": [{"id": "u", "targets": ["127.0.0.1:9000"]}],
                "routes": [BASE, {**BASE, "id": "s", "max_body_size": "big"}],
            }
        )
    assert list(info.value.fields) == ["routes[1].max_body_size"]
