"""The whole config: apply (JSON, YAML, dry run, prune), export, history, rollback."""

from __future__ import annotations

from typing import Any

import yaml

from minirouter.model import KINDS, config_from_dict

from .conftest import CERTIFICATE, LISTENER, ROUTE, UPSTREAM, Api, assert_error

CONFIG: dict[str, Any] = {
    "upstreams": [UPSTREAM, {"id": "web", "targets": ["127.0.0.1:9002"], "balance": "least_conn"}],
    "routes": [
        ROUTE,
        {"id": "r2", "hosts": ["*.example.com"], "path": "/", "upstream": "web", "priority": 3},
        {"id": "old", "path": "/old", "redirect": {"to": "https://x$path", "code": 301}},
    ],
    "listeners": [LISTENER],
    "certificates": [CERTIFICATE],
}


def by_id(data: dict[str, Any]) -> dict[str, Any]:
    """A config's items per kind keyed by id (the store keeps no order)."""
    config = config_from_dict(data)
    return {kind: {i.id: i for i in getattr(config, kind)} for kind in KINDS}


def test_apply_json_then_export_round_trips(api: Api) -> None:
    response = api.post("/apply", CONFIG)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["rev"] == 1 and body["dry_run"] is False
    assert {(d["kind"], d["id"], d["op"]) for d in body["diff"]} == {
        ("upstreams", "api", "create"),
        ("upstreams", "web", "create"),
        ("routes", "r1", "create"),
        ("routes", "r2", "create"),
        ("routes", "old", "create"),
        ("listeners", "pg", "create"),
        ("certificates", "example", "create"),
    }
    assert api.store.current_rev() == 1  # ONE revision for the whole apply

    exported = api.get("/export")
    assert exported.status_code == 200 and exported.mimetype == "application/json"
    assert exported.headers["ETag"] == '"1"'
    assert by_id(exported.json) == by_id(CONFIG)

    again = api.post("/apply?prune=1", exported.json)
    assert again.json == {"rev": 1, "dry_run": False, "diff": []}
    assert api.store.current_rev() == 1


def test_yaml_export_applies_back_with_no_diff(api: Api) -> None:
    api.post("/apply", CONFIG)
    exported = api.get("/export", headers={"Accept": "application/yaml"})
    assert exported.status_code == 200 and exported.mimetype == "application/yaml"
    text = exported.get_data(as_text=True)
    assert "-----BEGIN CERTIFICATE-----" in text and text.startswith("upstreams:")
    assert by_id(yaml.safe_load(text)) == by_id(CONFIG)
    for content_type in ("application/yaml", "text/plain", "application/x-www-form-urlencoded"):
        response = api.post("/apply?prune=true", data=text, content_type=content_type)
        assert response.status_code == 200, response.json
        assert response.json["diff"] == [] and response.json["rev"] == 1


def test_yaml_apply(api: Api) -> None:
    text = "upstreams:\n  - id: api\n    targets: [127.0.0.1:9001]\nroutes:\n  - {id: r1, path: /v1/, upstream: api}\n"
    response = api.post("/apply", data=text, content_type="application/yaml")
    assert response.status_code == 200, response.json
    assert api.get("/routes/r1").json == ROUTE


def test_dry_run_returns_the_diff_and_writes_nothing(api: Api) -> None:
    rev = api.seed()
    desired = {
        "upstreams": [{**UPSTREAM, "keepalive": 8}, {"id": "web", "targets": ["127.0.0.1:9002"]}],
        "routes": [],
    }
    response = api.post("/apply?dry_run=1&prune=1", desired)
    assert response.status_code == 200, response.json
    assert response.json["dry_run"] is True and response.json["rev"] == rev
    assert response.json["diff"] == [
        {
            "kind": "routes",
            "id": "r1",
            "op": "delete",
            "before": ROUTE,
            "after": None,
        },
        {
            "kind": "upstreams",
            "id": "api",
            "op": "update",
            "before": UPSTREAM,
            "after": {**UPSTREAM, "keepalive": 8},
        },
        {
            "kind": "upstreams",
            "id": "web",
            "op": "create",
            "before": None,
            "after": {"id": "web", "targets": ["127.0.0.1:9002"]},
        },
    ]
    assert api.store.current_rev() == rev
    assert api.get("/routes/r1").status_code == 200


def test_prune_deletes_what_the_body_does_not_name(api: Api) -> None:
    api.seed()
    api.post("/upstreams", {"id": "spare", "targets": ["127.0.0.1:9"]})
    desired = {"upstreams": [UPSTREAM], "routes": [ROUTE]}
    kept = api.post("/apply", desired)  # without prune: nothing to do
    assert kept.json["diff"] == []
    assert api.get("/upstreams/spare").status_code == 200
    pruned = api.post("/apply?prune=1", desired)
    assert [(d["id"], d["op"]) for d in pruned.json["diff"]] == [("spare", "delete")]
    assert_error(api.get("/upstreams/spare"), 404)
    emptied = api.post("/apply?prune=1", {})
    assert {d["id"] for d in emptied.json["diff"]} == {"api", "r1"}
    assert api.get("/export").json == {}


def test_apply_errors_write_nothing(api: Api) -> None:
    rev = api.seed()
    assert_error(api.post("/apply", data="upstreams: [", content_type="application/yaml"), 400)
    assert_error(api.post("/apply", data="{oops", content_type="application/json"), 400)
    assert_error(api.post("/apply", data="", content_type="application/yaml"), 400)
    body = assert_error(
        api.post(
            "/apply", {"routes": [{"id": "x", "path": "/", "upstream": "nope"}], "widgets": []}
        ),
        422,
        "routes[0].upstream",
        "widgets",
    )
    assert "unknown upstream" in body["fields"]["routes[0].upstream"]
    assert_error(api.post("/apply", [1, 2]), 422, "<root>")
    assert_error(api.post("/apply?dry_run=maybe", {}), 400, "dry_run")
    assert api.store.current_rev() == rev


def test_history_pages(api: Api) -> None:
    api.seed()  # revs 1, 2
    api.post("/apply", CONFIG)  # rev 3: several changes
    first = api.get("/history?limit=2").json
    assert first["rev"] == 3
    revs = [r["rev"] for r in first["revisions"]]
    assert revs == [3]  # whole revisions: rev 3 alone has more than 2 changes
    changes = first["revisions"][0]["changes"]
    assert [c["seq"] for c in changes] == list(range(1, len(changes) + 1))
    assert first["next_before"] == 3
    second = api.get("/history?limit=1&before=3").json
    assert [r["rev"] for r in second["revisions"]] == [2]
    change = second["revisions"][0]["changes"][0]
    assert change == {
        "seq": 1,
        "kind": "routes",
        "id": "r1",
        "op": "put",
        "before": None,
        "after": ROUTE,
    }
    assert second["revisions"][0]["actor"] == "token:admin-token"
    last = api.get(f"/history?limit=1&before={second['next_before']}").json
    assert [r["rev"] for r in last["revisions"]] == [1] and last["next_before"] is None
    assert_error(api.get("/history?limit=0"), 400, "limit")
    assert_error(api.get("/history?before=x"), 400, "before")
    # Beyond what the stores hold (SQLite's 64-bit INTEGER): refused, not a server error.
    assert_error(api.get(f"/history?before={2**63}"), 400, "before")
    assert api.get(f"/history?before={2**63 - 1}").json["revisions"][0]["rev"] == 3


def test_rollback(api: Api) -> None:
    rev = api.seed()
    api.put("/routes/r1", {**ROUTE, "path": "/changed/"})
    api.post("/upstreams", {"id": "extra", "targets": ["127.0.0.1:9"]})
    response = api.post("/rollback", {"rev": rev}, as_="editor")
    assert response.status_code == 200, response.json
    assert response.json == {"rev": rev + 3, "rolled_back_to": rev}
    assert api.get("/routes/r1").json == ROUTE
    assert_error(api.get("/upstreams/extra"), 404)
    newest = api.get("/history?limit=1").json["revisions"][0]
    assert newest["actor"] == "token:editor-token"
    # With If-Match: current -> done; the store then is as at revision 0.
    current = api.store.current_rev()
    done = api.post("/rollback", {"rev": 0}, headers={"If-Match": f'"{current}"'})
    assert done.status_code == 200 and done.json["rev"] == current + 1
    assert api.get("/export").json == {}


def test_rollback_errors(api: Api) -> None:
    rev = api.seed()
    assert_error(api.post("/rollback", {"rev": rev + 5}), 422, "rev")
    assert_error(api.post("/rollback", {"rev": -1}), 422, "rev")
    assert_error(api.post("/rollback", {"rev": "1"}), 422, "rev")
    assert_error(api.post("/rollback", {}), 422, "rev")
    assert_error(api.post("/rollback", data="nope", content_type="application/json"), 400)
    assert api.store.current_rev() == rev
    same = api.post("/rollback", {"rev": rev})  # nothing to undo
    assert same.json == {"rev": rev, "rolled_back_to": rev}
