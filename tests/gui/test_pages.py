"""The GUI's server side through Flask's test client (no browser): login redirects, HTML errors
outside /api/ and JSON inside, security headers, roles, redaction, and the history diff."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from control import pem_material
from minirouter.certcheck import not_after
from minirouter.control import ControlSettings, accounts, create_app
from minirouter.control.app import ControlState, close_app
from minirouter.control.gui import field_diff

PAGES = (
    "/",
    "/routes",
    "/routes/+new",
    "/upstreams",
    "/upstreams/+new",
    "/listeners",
    "/listeners/+new",
    "/certificates",
    "/certificates/+new",
    "/history",
    "/match",
    "/users",
    "/tokens",
)
NOT_A_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    # scrypt at a test-suite cost: each stored hash carries its parameters, the code is the same.
    monkeypatch.setattr(accounts, "KDF", accounts.ScryptParams(n=16, r=1, p=1))
    application = create_app(ControlSettings(f"sqlite://{tmp_path / 'store.db'}"))
    application.testing = True
    state: ControlState = application.extensions["minirouter"]
    for role in ("viewer", "editor", "admin"):
        state.accounts.create_user(role, role, f"{role} password")
    yield application
    close_app(application)


def login(app: Flask, name: str) -> tuple[FlaskClient, str]:
    """A client logged in as user `name`, and its CSRF token."""
    client = app.test_client()
    response = client.post("/api/v1/session", json={"name": name, "password": f"{name} password"})
    assert response.status_code == 200, response.json
    token: str = response.json["csrf_token"]  # type: ignore[index]
    return client, token


@pytest.mark.parametrize("path", PAGES)
def test_every_page_but_login_redirects_to_it(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login" and parse_qs(location.query) == {"next": [path]}
    assert response.headers["Cache-Control"] == "no-store"
    login_page = app.test_client().get("/login")
    assert (
        login_page.status_code == 200
        and b"<title>Log in \xc2\xb7 minirouter</title>" in login_page.data
    )


def test_errors_are_html_for_pages_and_json_for_the_api(app: Flask) -> None:
    client, _ = login(app, "admin")
    page = client.get("/routes/no-such-route")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert b"routes/no-such-route does not exist" in page.data
    assert b"<title>Not found" in page.data
    unknown = client.get("/no/such/page")
    assert unknown.status_code == 404 and unknown.mimetype == "text/html"
    api = client.get("/api/v1/routes/no-such-route")
    assert api.status_code == 404 and api.mimetype == "application/json"
    assert api.json == {"error": "routes/no-such-route does not exist", "fields": {}}
    # Without a session the API still answers 401 JSON (no redirect to a login page).
    anonymous = app.test_client().get("/api/v1/routes")
    assert anonymous.status_code == 401 and anonymous.mimetype == "application/json"
    for before in ("x", "0", "٣", str(2**63)):  # "٣" is a digit, but not an ASCII one
        bad = client.get(f"/history?before={before}")
        assert bad.status_code == 400 and bad.mimetype == "text/html", before
    assert client.get(f"/history?before={2**63 - 1}").status_code == 200


def test_pages_carry_security_headers_and_the_csrf_token(app: Flask) -> None:
    client, csrf = login(app, "editor")
    response = client.get("/routes/+new")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    assert f'<meta name="csrf-token" content="{csrf}">' in html
    assert f'name="csrf_token" value="{csrf}"' in html
    assert "<script>" not in html  # no inline script: the CSP would block it
    with client.get("/assets/gui.js") as asset:  # a file response: closed, or it warns
        assert asset.status_code == 200
        assert "no-store" not in asset.headers.get("Cache-Control", "")


@pytest.mark.parametrize(
    ("next_", "location"),
    [
        ("/history", "/history"),
        ("/routes?q=api", "/routes?q=api"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_login_goes_on_to_local_pages_only(app: Flask, next_: str, location: str) -> None:
    client, _ = login(app, "viewer")
    response = client.get("/login", query_string={"next": next_})
    assert response.status_code == 302
    assert response.headers["Location"] == location


def test_roles_decide_what_each_page_offers(app: Flask) -> None:
    admin, csrf = login(app, "admin")
    headers = {"X-CSRF-Token": csrf}
    assert (
        admin.post(
            "/api/v1/upstreams", json={"id": "api", "targets": ["127.0.0.1:9"]}, headers=headers
        ).status_code
        == 201
    )
    assert (
        admin.post(
            "/api/v1/routes", json={"id": "r1", "path": "/v1/", "upstream": "api"}, headers=headers
        ).status_code
        == 201
    )
    viewer, _ = login(app, "viewer")
    for path in ("/routes/+new", "/upstreams/+new", "/users", "/tokens"):
        response = viewer.get(path)
        assert response.status_code == 403 and response.mimetype == "text/html", path
    routes = viewer.get("/routes").get_data(as_text=True)
    assert "r1" in routes and "New route" not in routes and 'data-method="DELETE"' not in routes
    form = viewer.get("/routes/r1").get_data(as_text=True)
    assert "<fieldset disabled" in form and "Save route" not in form
    assert "Roll back" not in viewer.get("/history").get_data(as_text=True)
    assert 'href="/users"' not in routes

    editor, _ = login(app, "editor")
    assert "New route" in editor.get("/routes").get_data(as_text=True)
    assert "Roll back to r1" in editor.get("/history").get_data(as_text=True)
    assert editor.get("/users").status_code == 403
    assert 'href="/users"' in admin.get("/routes").get_data(as_text=True)


def test_an_item_may_be_called_new(app: Flask) -> None:
    admin, csrf = login(app, "admin")
    body = {"id": "new", "targets": ["127.0.0.1:9"]}
    assert (
        admin.post("/api/v1/upstreams", json=body, headers={"X-CSRF-Token": csrf}).status_code
        == 201
    )
    item = admin.get("/upstreams/new").get_data(as_text=True)
    assert "<title>Upstream new · minirouter</title>" in item
    form = admin.get("/upstreams/+new").get_data(as_text=True)
    assert "<title>New upstream · minirouter</title>" in form


def test_history_never_shows_certificate_keys(app: Flask) -> None:
    admin, csrf = login(app, "admin")
    headers = {"X-CSRF-Token": csrf}
    certificate = {
        "id": "example",
        "names": ["example.com"],
        "cert": pem_material.CERT,
        "key": pem_material.KEY,
    }
    response = admin.post("/api/v1/certificates", json=certificate, headers=headers)
    assert response.status_code == 201, response.json
    replaced = {**certificate, "cert": pem_material.OTHER_CERT, "key": pem_material.OTHER_KEY}
    response = admin.put("/api/v1/certificates/example", json=replaced, headers=headers)
    assert response.status_code == 200, response.json
    secrets = [pem.splitlines()[2] for pem in (pem_material.KEY, pem_material.OTHER_KEY)]
    for who in ("viewer", "editor", "admin"):
        client, _ = login(app, who)
        page_html = client.get("/history").get_data(as_text=True)
        assert not [line for line in secrets if line in page_html], who
        # A fingerprint in its place: the update shows the key changed, without showing it.
        assert page_html.count("(private key, hidden; sha256 ") == 3, who
    # The API still gives editors the key (export / apply round trips need it).
    editor, _ = login(app, "editor")
    assert secrets[1] in editor.get("/api/v1/certificates/example").get_data(as_text=True)


def test_field_diff_lists_what_changed_field_by_field() -> None:
    before = {
        "id": "api",
        "targets": ["10.0.0.1:80", {"address": "10.0.0.2:80", "weight": 2}],
        "timeouts": {"connect": 1},
    }
    after = {
        "id": "api",
        "targets": ["10.0.0.1:80", {"address": "10.0.0.2:80", "weight": 3}],
        "health": {},
    }
    assert field_diff(before, after) == [
        {"field": "targets[1].weight", "change": "changed", "before": "2", "after": "3"},
        {"field": "timeouts.connect", "change": "removed", "before": "1", "after": ""},
        {"field": "health", "change": "added", "before": "", "after": "{}"},
    ]
    created = field_diff(None, {"id": "r1", "hosts": ["a.example", "b.example"]})
    assert created == [
        {"field": "id", "change": "added", "before": "", "after": "r1"},
        {"field": "hosts", "change": "added", "before": "", "after": '["a.example", "b.example"]'},
    ]
    assert [row["change"] for row in field_diff({"id": "r1"}, None)] == ["removed"]
    assert field_diff({"id": "r1"}, {"id": "r1"}) == []


def test_certificate_expiry_is_read_from_the_pem() -> None:
    """The pages take the expiry from the model's certificate reader."""
    expected = pem_material.NOT_AFTER.timestamp()
    assert not_after(pem_material.CERT) == expected
    assert not_after("junk\n" + pem_material.CERT) == expected
    for unreadable in (
        NOT_A_CERT,
        "",
        "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----",
    ):
        assert not_after(unreadable) is None
    truncated = pem_material.CERT.replace(pem_material.CERT.splitlines()[3], "")
    assert not_after(truncated) is None


def test_certificate_pages_list_expiry_and_never_show_the_key(app: Flask) -> None:
    admin, csrf = login(app, "admin")
    headers = {"X-CSRF-Token": csrf}
    real = {"id": "real", "names": ["gui.test"], "cert": pem_material.CERT, "key": pem_material.KEY}
    response = admin.post("/api/v1/certificates", json=real, headers=headers)
    assert response.status_code == 201, response.json
    key_line = pem_material.KEY.splitlines()[2]
    for who in ("admin", "editor", "viewer"):
        client, _ = login(app, who)
        listing = client.get("/certificates").get_data(as_text=True)
        assert "<title>Certificates · minirouter</title>" in listing
        assert "gui.test" in listing
        assert "2036-11-26 11:15:25 UTC" in listing  # its expiry, read from the PEM
        item = client.get("/certificates/real").get_data(as_text=True)
        assert "<title>Certificate real · minirouter</title>" in item
        assert pem_material.CERT.splitlines()[2] in item  # the certificate itself is public
        for page_html in (listing, item):
            assert key_line not in page_html
            assert "PRIVATE KEY-----\n" not in page_html
        assert ("Save certificate" in item) is (who != "viewer")
    viewer, _ = login(app, "viewer")
    assert viewer.get("/certificates/+new").status_code == 403
    assert viewer.get("/certificates/nope").status_code == 404


def test_listener_pages(app: Flask) -> None:
    admin, csrf = login(app, "admin")
    headers = {"X-CSRF-Token": csrf}
    upstream = {"id": "db", "targets": ["127.0.0.1:5432"]}
    assert admin.post("/api/v1/upstreams", json=upstream, headers=headers).status_code == 201
    listener = {"id": "pg", "listen": "127.0.0.1:15432", "upstream": "db"}
    assert admin.post("/api/v1/listeners", json=listener, headers=headers).status_code == 201
    listing = admin.get("/listeners?q=15432").get_data(as_text=True)
    assert "<title>Listeners · minirouter</title>" in listing
    assert 'data-item="pg"' in listing and "1 of 1 listener" in listing
    assert 'aria-label="Delete listener pg"' in listing
    assert 'data-item="pg"' not in admin.get("/listeners?q=nomatch").get_data(as_text=True)
    form = admin.get("/listeners/pg").get_data(as_text=True)
    assert "<title>Listener pg · minirouter</title>" in form
    assert 'value="127.0.0.1:15432"' in form and '<option value="db" selected>' in form
    viewer, _ = login(app, "viewer")
    read_only = viewer.get("/listeners/pg").get_data(as_text=True)
    assert "<fieldset disabled" in read_only and "Save listener" not in read_only
    assert "Delete listener" not in viewer.get("/listeners").get_data(as_text=True)
    assert 'href="/listeners"' in read_only and 'href="/certificates"' in read_only


def test_upstream_pages_show_each_targets_health(app: Flask) -> None:
    admin, csrf = login(app, "admin")
    body = {"id": "web", "targets": ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]}
    response = admin.post("/api/v1/upstreams", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201
    state: ControlState = app.extensions["minirouter"]
    for node, second_up in (("core-a", True), ("core-b", False)):
        health = {"web": {"127.0.0.1:9001": True, "127.0.0.1:9002": second_up}}
        state.store.heartbeat(node, {"rev": 1, "health": json.dumps(health)}, ttl=30)
    for path in ("/upstreams", "/upstreams/web"):
        html = admin.get(path).get_data(as_text=True)
        assert "up on 2/2 cores" in html, path
        assert "down on 1/2 cores (core-b)" in html, path
        assert "no data" in html, path
        assert 'class="badge health partial"' in html, path
    assert 'data-health-url="/api/v1/health"' in admin.get("/upstreams").get_data(as_text=True)
    item = admin.get("/upstreams/web").get_data(as_text=True)
    assert 'data-health-url="/api/v1/upstreams/web/health"' in item


def test_dashboard_counts_a_core_current_only_in_the_stores_history(app: Flask) -> None:
    admin, csrf = login(app, "admin")
    body = {"id": "web", "targets": ["127.0.0.1:9001"]}
    assert admin.post("/api/v1/upstreams", json=body, headers={"X-CSRF-Token": csrf}).status_code
    state: ControlState = app.extensions["minirouter"]
    epoch, rev = state.store.head()
    state.store.heartbeat("core-a", {"rev": rev, "epoch": epoch}, ttl=30)
    # Same revision number, but of an earlier history (the store was reset and rewritten).
    state.store.heartbeat("core-b", {"rev": rev, "epoch": "an-earlier-history"}, ttl=30)
    html = admin.get("/").get_data(as_text=True)
    row_a = html[html.index("core-a") : html.index("core-b")]
    row_b = html[html.index("core-b") :]
    assert '<span class="badge ok">current</span>' in row_a
    assert '<span class="badge warn">behind</span>' in row_b.split("</tr>")[0]
