"""Items of each kind: list, get, create, replace, delete, with ETag / If-Match, and every
error status, on both backends. After each error, nothing was stored."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest
import redis

from minirouter.control import ControlSettings, create_app
from minirouter.control.app import close_app

from .conftest import CERTIFICATE, LISTENER, ROUTE, UPSTREAM, Api, StoreTarget, assert_error

ITEMS: dict[str, dict[str, Any]] = {
    "upstreams": {
        "id": "web",
        "targets": ["127.0.0.1:9002", {"address": "127.0.0.1:9003", "weight": 2}],
        "balance": "weighted",
    },
    "routes": {"id": "r2", "hosts": ["example.com"], "path": "/v2/", "upstream": "api"},
    "listeners": LISTENER,
    "certificates": CERTIFICATE,
}
# A change to each item, valid.
CHANGED: dict[str, dict[str, Any]] = {
    "upstreams": {"targets": ["127.0.0.1:9009"]},
    "routes": {"path": "/v3/", "upstream": "api"},
    "listeners": {"listen": "127.0.0.1:15433", "upstream": "api"},
    "certificates": {
        "names": ["example.org"],
        "cert": CERTIFICATE["cert"],
        "key": CERTIFICATE["key"],
    },
}


def etag_rev(response: Any) -> int:
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"'), etag
    return int(etag.strip('"'))


@pytest.mark.parametrize("kind", list(ITEMS))
def test_item_life_cycle(api: Api, kind: str) -> None:
    api.seed()
    item = ITEMS[kind]
    created = api.post(f"/{kind}", item)
    assert created.status_code == 201, created.json
    assert created.json == item
    assert created.headers["Location"] == f"/api/v1/{kind}/{item['id']}"
    rev = etag_rev(created)
    assert rev == api.store.current_rev()

    got = api.get(f"/{kind}/{item['id']}")
    assert got.status_code == 200 and got.json == item and etag_rev(got) == rev

    listed = api.get(f"/{kind}")
    assert listed.status_code == 200 and etag_rev(listed) == rev
    assert item in listed.json["items"] and listed.json["rev"] == rev
    assert listed.json["invalid"] == {}

    replaced = api.put(f"/{kind}/{item['id']}", CHANGED[kind], headers={"If-Match": f'"{rev}"'})
    assert replaced.status_code == 200, replaced.json
    assert replaced.json == {"id": item["id"], **CHANGED[kind]}
    assert etag_rev(replaced) == rev + 1

    deleted = api.delete(f"/{kind}/{item['id']}", headers={"If-Match": f'"{rev + 1}"'})
    assert deleted.status_code == 204 and deleted.get_data() == b""
    assert etag_rev(deleted) == rev + 2
    assert_error(api.get(f"/{kind}/{item['id']}"), 404)

    history = api.get("/history?limit=3").json["revisions"]
    assert [r["rev"] for r in history] == [rev + 2, rev + 1, rev]
    assert {r["actor"] for r in history} == {"token:admin-token"}


def test_put_creates(api: Api) -> None:
    api.seed()
    response = api.put("/upstreams/new", {"targets": ["127.0.0.1:9005"]})
    assert response.status_code == 201
    assert response.json == {"id": "new", "targets": ["127.0.0.1:9005"]}
    again = api.put("/upstreams/new", {"targets": ["127.0.0.1:9005"]})  # changes nothing
    assert again.status_code == 200 and etag_rev(again) == etag_rev(response)


def test_list_filter(api: Api) -> None:
    api.seed()
    api.post(
        "/routes", {"id": "shop", "hosts": ["shop.example.com"], "path": "/", "upstream": "api"}
    )
    ids = lambda q: [i["id"] for i in api.get(f"/routes?q={q}").json["items"]]  # noqa: E731
    assert ids("SHOP") == ["shop"]
    assert ids("/v1") == ["r1"]
    assert ids("api") == ["r1", "shop"]  # the upstream's name
    assert ids("nothing") == []


def test_create_existing_is_409(api: Api) -> None:
    rev = api.seed()
    body = assert_error(api.post("/upstreams", {**UPSTREAM, "targets": ["127.0.0.1:1"]}), 409, "id")
    assert "exists" in body["error"]
    assert api.store.current_rev() == rev
    assert api.get("/upstreams/api").json == UPSTREAM


def test_validation_names_each_field(api: Api) -> None:
    rev = api.seed()
    body = assert_error(
        api.post("/upstreams", {"id": "Bad Id", "targets": [], "keepalive": -1, "nope": 1}),
        422,
        "id",
        "targets",
        "keepalive",
        "nope",
    )
    assert "unknown field" in body["fields"]["nope"]
    assert_error(
        api.post("/routes", {"id": "r9", "path": "/x", "upstream": "missing"}), 422, "upstream"
    )
    assert_error(api.put("/routes/r1", {"path": "no-slash", "upstream": "api"}), 422, "path")
    assert_error(api.put("/routes/r1", {"id": "other", "path": "/", "upstream": "api"}), 422, "id")
    assert_error(api.post("/routes", ["not", "an", "object"]), 422, "<root>")
    assert_error(api.put("/routes/Not_Valid", {"path": "/", "upstream": "api"}), 422, "id")
    assert api.store.current_rev() == rev
    assert api.get("/routes/r1").json == ROUTE


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{not json", "application/json"),
        ("", "application/json"),
        ('{"id": NaN}', "application/json"),
        ("[" * 100_000 + "]" * 100_000, "application/json"),
    ],
    ids=["syntax", "empty", "nan", "deep"],
)
def test_malformed_body_is_400(api: Api, data: str, content_type: str) -> None:
    rev = api.seed()
    for method, path in (("POST", "/upstreams"), ("PUT", "/upstreams/x"), ("POST", "/match")):
        assert_error(api.call(method, path, data=data, content_type=content_type), 400)
    assert api.store.current_rev() == rev


def test_stale_if_match_is_412_and_writes_nothing(api: Api) -> None:
    rev = api.seed()
    stale = {"If-Match": f'"{rev - 1}"'}
    response = api.put("/routes/r1", {"path": "/changed/", "upstream": "api"}, headers=stale)
    assert_error(response, 412)
    assert etag_rev(response) == rev  # the current one, to retry with
    assert_error(api.delete("/routes/r1", headers=stale), 412)
    assert_error(
        api.post("/upstreams", {"id": "x", "targets": ["127.0.0.1:1"]}, headers=stale), 412
    )
    assert_error(api.post("/apply", {"upstreams": [UPSTREAM]}, headers=stale), 412)
    assert_error(api.post("/rollback", {"rev": 0}, headers=stale), 412)
    assert api.store.current_rev() == rev
    assert api.get("/routes/r1").json == ROUTE
    # A list of ETags, one of them current, and a bare number, are accepted.
    assert (
        api.put(
            "/routes/r1", {**ROUTE, "priority": 1}, headers={"If-Match": f'"1", "{rev}"'}
        ).status_code
        == 200
    )
    assert api.put("/routes/r1", ROUTE, headers={"If-Match": str(rev + 1)}).status_code == 200


def test_if_match_star_needs_the_item(api: Api) -> None:
    rev = api.seed()
    assert_error(api.put("/routes/nope", ROUTE | {"id": "nope"}, headers={"If-Match": "*"}), 412)
    assert_error(api.delete("/routes/nope", headers={"If-Match": "*"}), 412)
    assert api.store.current_rev() == rev
    assert (
        api.put("/routes/r1", {**ROUTE, "priority": 2}, headers={"If-Match": "*"}).status_code
        == 200
    )


def test_bad_if_match_is_400(api: Api) -> None:
    rev = api.seed()
    assert_error(api.delete("/routes/r1", headers={"If-Match": "yesterday"}), 400, "If-Match")
    assert api.store.current_rev() == rev


def test_delete_missing_is_404(api: Api) -> None:
    api.seed()
    assert_error(api.delete("/routes/nope"), 404)
    assert_error(api.get("/routes/nope"), 404)
    assert_error(api.get("/listeners/nope"), 404)


def test_delete_used_upstream_is_409(api: Api) -> None:
    rev = api.seed()
    body = assert_error(api.delete("/upstreams/api"), 409)
    assert "routes/r1" in str(body["fields"])
    assert api.store.current_rev() == rev
    assert api.delete("/routes/r1").status_code == 204
    assert api.delete("/upstreams/api").status_code == 204


def test_unknown_paths_and_methods(api: Api) -> None:
    assert_error(api.get("/widgets"), 404)
    assert_error(api.get("/routes/a/b"), 404)
    response = api.call("PATCH", "/routes/r1")
    assert_error(response, 405)
    assert "PUT" in response.headers["Allow"]


def test_oversized_body_is_413(target: StoreTarget, api: Api) -> None:
    small = create_app(ControlSettings(target.url, max_body_size=4096))
    try:
        client = small.test_client()
        auth = {"Authorization": f"Bearer {api.tokens['admin']}"}
        big = {"id": "big", "targets": ["127.0.0.1:9001"], "hash_on": "x" * 5000}
        assert_error(client.post("/api/v1/upstreams", json=big, headers=auth), 413)
        yaml_body = "upstreams:\n" + "  - {id: a, targets: ['127.0.0.1:1']}\n" * 200
        response = client.post(
            "/api/v1/apply", data=yaml_body, headers={**auth, "Content-Type": "application/yaml"}
        )
        assert_error(response, 413)
        assert api.store.current_rev() == 0
    finally:
        close_app(small)


def test_certificate_keys_are_hidden_from_viewers(api: Api) -> None:
    api.seed()
    api.post("/certificates", CERTIFICATE)
    assert api.get("/certificates/example", as_="viewer").json["key"] == "<redacted>"
    assert api.get("/certificates", as_="viewer").json["items"][0]["key"] == "<redacted>"
    assert api.get("/export", as_="viewer").json["certificates"][0]["key"] == "<redacted>"
    history = api.get("/history", as_="viewer").json["revisions"][0]["changes"][0]
    assert history["after"]["key"] == "<redacted>"
    assert api.get("/certificates/example", as_="editor").json["key"] == CERTIFICATE["key"]


def test_certificate_replaced_without_its_key_keeps_it(api: Api) -> None:
    """The GUI never sends a stored key back: a PUT that leaves ``key`` out keeps it."""
    assert api.post("/certificates", CERTIFICATE).status_code == 201
    rev = api.store.current_rev()
    changed = {"names": ["example.org"], "cert": CERTIFICATE["cert"]}
    response = api.put("/certificates/example", changed, headers={"If-Match": f'"{rev}"'})
    assert response.status_code == 200, response.json
    assert response.json == {**CERTIFICATE, "names": ["example.org"]}
    stored = api.store.snapshot().config.certificates[0]
    assert (stored.names, stored.key) == (("example.org",), CERTIFICATE["key"])
    # A new certificate has no stored key to keep: 422 on the key, nothing stored.
    rev = api.store.current_rev()
    assert_error(api.put("/certificates/other", changed), 422, "key")
    assert_error(api.post("/certificates", {**changed, "id": "other"}), 422, "key")
    # A stale If-Match is still refused first.
    assert_error(api.put("/certificates/example", changed, headers={"If-Match": '"1"'}), 412)
    assert api.store.current_rev() == rev


def test_invalid_stored_items_are_reported(api: Api, target: StoreTarget) -> None:
    """A value written behind minirouter's back: listed as invalid, 404 to read, deletable."""
    api.seed()
    if target.path is not None:
        with contextlib.closing(sqlite3.connect(target.path)) as conn, conn:
            conn.execute("INSERT INTO items VALUES ('routes', 'broken', '{\"id\": 3}')")
    else:
        with redis.Redis.from_url(target.url) as client:
            client.hset("{minirouter}:routes", "broken", '{"id": 3}')
    # Not a revision of its own: the app sees it once the revision moves.
    api.post("/upstreams", {"id": "other", "targets": ["127.0.0.1:9"]})
    listed = api.get("/routes").json
    assert "broken" in listed["invalid"] and [i["id"] for i in listed["items"]] == ["r1"]
    body = assert_error(api.get("/routes/broken"), 404)
    assert "invalid" in body["error"]
    assert api.delete("/routes/broken").status_code == 204
    assert api.get("/routes").json["invalid"] == {}
