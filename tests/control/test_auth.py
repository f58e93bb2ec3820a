"""Authentication and roles over every endpoint, login sessions and CSRF, and how secrets
are stored. Every refused request leaves the config and the accounts as they were."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from minirouter.control.openapi import document

from .conftest import CERTIFICATE, LISTENER, PREFIX, ROUTE, UPSTREAM, Api, StoreTarget, assert_error

CERT_CHANGED = {k: v for k, v in CERTIFICATE.items() if k != "id"} | {"names": ["example.org"]}

# (method, path, body, the role needed, the status on success); the OpenAPI path is derived.
ENDPOINTS: list[tuple[str, str, Any, str, int]] = [
    ("GET", "/routes", None, "viewer", 200),
    ("POST", "/routes", {"id": "r9", "path": "/9/", "upstream": "api"}, "editor", 201),
    ("GET", "/routes/r1", None, "viewer", 200),
    ("PUT", "/routes/r1", {"path": "/put/", "upstream": "api"}, "editor", 200),
    ("DELETE", "/routes/r1", None, "editor", 204),
    ("GET", "/upstreams", None, "viewer", 200),
    ("POST", "/upstreams", {"id": "u9", "targets": ["127.0.0.1:9"]}, "editor", 201),
    ("GET", "/upstreams/api", None, "viewer", 200),
    ("PUT", "/upstreams/api", {"targets": ["127.0.0.1:9009"]}, "editor", 200),
    ("DELETE", "/upstreams/spare", None, "editor", 204),
    ("GET", "/listeners", None, "viewer", 200),
    ("POST", "/listeners", {**LISTENER, "id": "l9", "listen": "127.0.0.1:15999"}, "editor", 201),
    ("GET", "/listeners/pg", None, "viewer", 200),
    ("PUT", "/listeners/pg", {"listen": "127.0.0.1:15998", "upstream": "api"}, "editor", 200),
    ("DELETE", "/listeners/pg", None, "editor", 204),
    ("GET", "/certificates", None, "viewer", 200),
    ("POST", "/certificates", {**CERTIFICATE, "id": "c9"}, "editor", 201),
    ("GET", "/certificates/example", None, "viewer", 200),
    ("PUT", "/certificates/example", CERT_CHANGED, "editor", 200),
    ("DELETE", "/certificates/example", None, "editor", 204),
    ("POST", "/apply?dry_run=1", {"upstreams": [UPSTREAM]}, "editor", 200),
    ("GET", "/export", None, "viewer", 200),
    ("GET", "/history", None, "viewer", 200),
    ("POST", "/rollback", {"rev": 1}, "editor", 200),
    ("POST", "/match", {"host": "x", "path": "/v1/"}, "viewer", 200),
    ("GET", "/nodes", None, "viewer", 200),
    ("GET", "/health", None, "viewer", 200),
    ("GET", "/upstreams/api/health", None, "viewer", 200),
    ("GET", "/stats", None, "viewer", 200),
    ("GET", "/users", None, "admin", 200),
    (
        "POST",
        "/users",
        {"name": "new", "role": "viewer", "password": "a long secret"},
        "admin",
        201,
    ),
    ("DELETE", "/users/someone", None, "admin", 204),
    ("GET", "/tokens", None, "admin", 200),
    ("POST", "/tokens", {"name": "new", "role": "viewer"}, "admin", 201),
    ("DELETE", "/tokens/spare", None, "admin", 204),
    ("GET", "/session", None, "viewer", 200),
]
PUBLIC = {("POST", "/session"), ("DELETE", "/session"), ("GET", "/openapi.json")}
ROLE_ORDER = ("viewer", "editor", "admin")
IDENTITIES = [
    "none",
    "bad",
    "revoked",
    "viewer",
    "editor",
    "admin",
    "session-viewer",
    "session-admin",
]
UNSAFE = [e for e in ENDPOINTS if e[0] != "GET"]


def template(method: str, path: str) -> str:
    """The OpenAPI path of a concrete path ("/routes/r1" -> "/routes/{id}")."""
    parts = path.partition("?")[0].split("/")
    if len(parts) >= 3:
        parts[2] = "{name}" if parts[1] in ("users", "tokens") else "{id}"
    return "/".join(parts)


def test_the_matrix_covers_every_operation() -> None:
    documented = {
        (method.upper(), path)
        for path, operations in document()["paths"].items()
        for method in operations
    }
    covered = {(m, template(m, p)) for m, p, *_ in ENDPOINTS}
    assert covered | PUBLIC == documented
    for method, path, _, role, _ in ENDPOINTS:
        assert (
            document()["paths"][template(method, path)][method.lower()]["x-minirouter-role"] == role
        )


def seed(api: Api) -> None:
    config = {
        "upstreams": [UPSTREAM, {"id": "spare", "targets": ["127.0.0.1:9"]}],
        "routes": [ROUTE],
        "listeners": [LISTENER],
        "certificates": [CERTIFICATE],
    }
    assert api.post("/apply", config).status_code == 200
    accounts = api.state.accounts
    accounts.create_user("someone", "viewer", "another secret")
    accounts.create_token("spare", "viewer")
    for role in ("viewer", "admin"):
        accounts.create_user(f"{role}-user", role, f"{role} password")


def fingerprint(api: Api) -> tuple[Any, ...]:
    """What a refused request must leave unchanged."""
    store = api.store
    return store.current_rev(), store.users(), store.tokens()


def login(api: Api, name: str, password: str) -> tuple[FlaskClient, str]:
    """A client of its own (its own cookies) logged in as `name`; and the CSRF token."""
    client = api.app.test_client()
    response = client.post(f"{PREFIX}/session", json={"name": name, "password": password})
    assert response.status_code == 200, response.json
    return client, response.json["csrf_token"]


def call_as(api: Api, who: str, method: str, path: str, body: Any) -> TestResponse:
    if who.startswith("session-"):
        role = who.removeprefix("session-")
        client, csrf = login(api, f"{role}-user", f"{role} password")
        return client.open(PREFIX + path, method=method, json=body, headers={"X-CSRF-Token": csrf})
    as_ = None if who == "none" else who
    return api.call(method, path, as_=as_, json=body)


def allowed(who: str, role: str) -> bool:
    """Whether identity `who` has `role` or a higher one."""
    have = who.removeprefix("session-")
    return have in ROLE_ORDER and ROLE_ORDER.index(have) >= ROLE_ORDER.index(role)


@pytest.mark.parametrize(
    ("method", "path", "body", "role", "success"),
    ENDPOINTS,
    ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS],
)
def test_refused(api: Api, method: str, path: str, body: Any, role: str, success: int) -> None:
    """No token, a bad or a revoked one: 401; a role too low (token or cookie): 403. Each
    time nothing changes (refusals change nothing, so one test makes them all in turn)."""
    seed(api)
    before = fingerprint(api)
    for who in IDENTITIES:
        if allowed(who, role):
            continue
        response = call_as(api, who, method, path, body)
        if who in ("none", "bad", "revoked"):
            assert_error(response, 401)
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), who
        else:
            assert role in assert_error(response, 403)["error"], who
        assert fingerprint(api) == before, who


ALLOWED = [(*e, who) for e in ENDPOINTS for who in IDENTITIES if allowed(who, e[3])]


@pytest.mark.parametrize(
    ("method", "path", "body", "role", "success", "who"),
    ALLOWED,
    ids=[f"{m} {p} {who}" for m, p, *_, who in ALLOWED],
)
def test_allowed(
    api: Api, method: str, path: str, body: Any, role: str, success: int, who: str
) -> None:
    """Each identity whose role suffices (token or cookie) gets the success status."""
    seed(api)
    response = call_as(api, who, method, path, body)
    assert response.status_code == success, response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "path", "body", "role", "success"), UNSAFE, ids=[f"{m} {p}" for m, p, *_ in UNSAFE]
)
def test_cookie_writes_need_the_csrf_token(
    api: Api, method: str, path: str, body: Any, role: str, success: int
) -> None:
    seed(api)
    before = fingerprint(api)
    client, csrf = login(api, "admin-user", "admin password")
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        response = client.open(PREFIX + path, method=method, json=body, headers=headers)
        assert "CSRF" in assert_error(response, 403)["error"]
    assert fingerprint(api) == before
    response = client.open(PREFIX + path, method=method, json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == success
    # Another session's token is no good either.
    other, _ = login(api, "admin-user", "admin password")
    assert_error(
        other.open(PREFIX + "/routes", method="POST", json=ROUTE, headers={"X-CSRF-Token": csrf}),
        403,
    )


def test_session_login_and_logout(api: Api) -> None:
    seed(api)
    client = api.app.test_client()
    response = client.post(
        f"{PREFIX}/session", json={"name": "viewer-user", "password": "viewer password"}
    )
    assert response.status_code == 200
    assert response.json["name"] == "viewer-user" and response.json["role"] == "viewer"
    assert response.json["kind"] == "user" and len(response.json["csrf_token"]) >= 32
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("minirouter_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert "viewer password" not in cookie
    assert client.get(f"{PREFIX}/routes").status_code == 200
    whoami = client.get(f"{PREFIX}/session").json
    assert whoami["csrf_token"] == response.json["csrf_token"]
    assert_error(client.delete(f"{PREFIX}/session"), 403)  # logout needs the CSRF token too
    assert_error(client.delete(f"{PREFIX}/session", headers={"X-CSRF-Token": "é"}), 403)
    out = client.delete(f"{PREFIX}/session", headers={"X-CSRF-Token": whoami["csrf_token"]})
    assert out.status_code == 204 and "minirouter_session=;" in out.headers["Set-Cookie"]
    assert_error(client.get(f"{PREFIX}/routes"), 401)
    assert client.delete(f"{PREFIX}/session").status_code == 204  # no session: nothing to do


def test_login_failures(api: Api) -> None:
    seed(api)
    client = api.app.test_client()
    url = f"{PREFIX}/session"
    for body in (
        {"name": "viewer-user", "password": "wrong"},
        {"name": "nobody", "password": "x"},
        {"name": "../x", "password": "x"},
    ):
        response = client.post(url, json=body)
        assert_error(response, 401)
        assert "Set-Cookie" not in response.headers
    assert_error(client.post(url, json={"name": "viewer-user"}), 422, "password")
    assert_error(client.post(url, json={"name": 1, "password": []}), 422, "name", "password")
    # A form (which another site could post) is refused: login must be JSON.
    form = client.post(url, data={"name": "viewer-user", "password": "viewer password"})
    assert_error(form, 400)
    text = client.post(
        url,
        data='{"name": "viewer-user", "password": "viewer password"}',
        content_type="text/plain",
    )
    assert_error(text, 400)


def test_cookie_settings(target: StoreTarget, api: Api) -> None:
    from minirouter.control import ControlSettings, create_app
    from minirouter.control.app import close_app

    seed(api)
    secure = create_app(ControlSettings(target.url, cookie_secure=True, session_lifetime=60))
    try:
        response = secure.test_client().post(
            f"{PREFIX}/session", json={"name": "viewer-user", "password": "viewer password"}
        )
        cookie = response.headers["Set-Cookie"]
        assert ("Secure" in cookie and "Max-Age=60" in cookie) or "Expires=" in cookie
        # Both apps share the key kept in the store: a cookie of one works on the other.
        client = api.app.test_client()
        client.set_cookie("minirouter_session", cookie.split(";")[0].partition("=")[2])
        assert client.get(f"{PREFIX}/session").json["name"] == "viewer-user"
    finally:
        close_app(secure)


def test_forged_cookie_is_refused(api: Api) -> None:
    seed(api)
    client, _ = login(api, "viewer-user", "viewer password")
    client.set_cookie("minirouter_session", "eyJ1IjoiYWRtaW4tdXNlciJ9.forged.signature")
    assert_error(client.get(f"{PREFIX}/routes"), 401)


def test_deleting_a_user_or_changing_the_password_ends_sessions(api: Api) -> None:
    seed(api)
    client, _ = login(api, "viewer-user", "viewer password")
    api.state.accounts.create_user("viewer-user", "viewer", "a new password", replace=True)
    assert_error(client.get(f"{PREFIX}/routes"), 401)
    client, _ = login(api, "viewer-user", "a new password")
    assert client.get(f"{PREFIX}/routes").status_code == 200
    assert api.delete("/users/viewer-user").status_code == 204
    assert_error(client.get(f"{PREFIX}/routes"), 401)


def test_role_change_applies_at_once(api: Api) -> None:
    seed(api)
    client, _ = login(api, "admin-user", "admin password")
    assert client.get(f"{PREFIX}/users").status_code == 200
    api.state.accounts.store.add_user(
        {**api.store.user("admin-user"), "role": "viewer"},  # type: ignore[dict-item]
        replace=True,
    )
    assert_error(client.get(f"{PREFIX}/users"), 403)


def test_token_life_cycle(api: Api) -> None:
    created = api.post("/tokens", {"name": "ci", "role": "editor"})
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"
    token = created.json["token"]
    assert created.json["name"] == "ci" and created.json["role"] == "editor"
    assert created.json["created_by"] == "token:admin-token"
    listed = api.get("/tokens").json["tokens"]
    assert {"ci", "admin-token", "viewer-token", "editor-token"} <= {t["name"] for t in listed}
    assert all(set(t) <= {"name", "role", "created", "created_by"} for t in listed)
    assert token not in api.get("/tokens").get_data(as_text=True)
    auth = {"Authorization": f"Bearer {token}"}
    made = api.call("POST", "/upstreams", as_=None, json=UPSTREAM, headers=auth)
    assert made.status_code == 201
    assert api.get("/history").json["revisions"][0]["actor"] == "token:ci"
    assert_error(api.post("/tokens", {"name": "ci", "role": "viewer"}), 409, "name")
    assert_error(api.post("/tokens", {"name": "bad name", "role": "root"}), 422, "name", "role")
    assert api.delete("/tokens/ci").status_code == 204
    assert_error(api.call("GET", "/routes", as_=None, headers=auth), 401)
    assert_error(api.delete("/tokens/ci"), 404)


def test_authorization_header_forms(api: Api) -> None:
    token = api.tokens["viewer"]
    for header in (f"bearer {token}", f"Bearer   {token}  "):
        assert (
            api.call("GET", "/routes", as_=None, headers={"Authorization": header}).status_code
            == 200
        )
    for header in (f"Basic {token}", "Bearer", "", token, "Bearer " + "x" * 5000):
        assert_error(api.call("GET", "/routes", as_=None, headers={"Authorization": header}), 401)


def test_bad_token_beats_a_good_cookie(api: Api) -> None:
    seed(api)
    client, _ = login(api, "admin-user", "admin password")
    assert_error(client.get(f"{PREFIX}/routes", headers={"Authorization": "Bearer nope"}), 401)
    # And a Bearer request needs no CSRF token, cookie or not.
    response = client.post(
        f"{PREFIX}/upstreams",
        json={"id": "z", "targets": ["127.0.0.1:1"]},
        headers={"Authorization": f"Bearer {api.tokens['editor']}"},
    )
    assert response.status_code == 201


def test_user_management(api: Api) -> None:
    created = api.post("/users", {"name": "carol", "role": "editor", "password": "carol's secret"})
    assert created.status_code == 201
    assert set(created.json) == {"name", "role", "created", "created_by"}
    assert_error(
        api.post("/users", {"name": "carol", "role": "viewer", "password": "whatever1"}),
        409,
        "name",
    )
    assert_error(
        api.post("/users", {"name": "dave", "role": "viewer", "password": "short"}), 422, "password"
    )
    assert_error(
        api.post("/users", {"name": "", "role": "x", "password": 5}),
        422,
        "name",
        "role",
        "password",
    )
    listed = api.get("/users").json["users"]
    assert [u["name"] for u in listed] == ["carol"] and "password" not in listed[0]
    assert api.delete("/users/carol").status_code == 204
    assert_error(api.delete("/users/carol"), 404)


def test_secrets_are_never_stored_in_clear(api: Api, target: StoreTarget) -> None:
    password = "a very particular password"
    api.post("/users", {"name": "erin", "role": "admin", "password": password})
    token = api.post("/tokens", {"name": "deploy", "role": "editor"}).json["token"]
    raw = target.raw_dump()
    assert b"erin" in raw and b"deploy" in raw  # the records are there...
    assert password.encode() not in raw  # ...but never the password
    assert token.encode() not in raw  # ...nor a token
    for known in api.tokens.values():
        assert known.encode() not in raw
    record = api.store.user("erin")
    assert record is not None and record["password"]["alg"] == "scrypt"
    assert len(record["password"]["salt"]) >= 16
    client, _ = login(api, "erin", password)
    assert password.encode() not in target.raw_dump()
    assert client.get(f"{PREFIX}/session").json["role"] == "admin"


def test_openapi_is_public(api: Api) -> None:
    response = api.call("GET", "/openapi.json", as_=None)
    assert response.status_code == 200 and response.json["openapi"].startswith("3.1")
