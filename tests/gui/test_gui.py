"""The browser GUI end to end: headless chromium against a running control plane and core.

Each test gets a fresh browser context; the control plane, core, store and upstream are shared
by the module, so every test names its own items. Screenshots of every page land in
artifacts/screenshots/ (laptop-* and phone-*).
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect

from minirouter.model import from_dict
from minirouter.store import Change

from .conftest import UPSTREAM_ANSWER, Gui, Stack, poll

# The elements sticking out of the viewport (outside a scrolling table box), for a failure message.
WIDE_ELEMENTS = """() => {
  const width = document.documentElement.clientWidth;
  return Array.from(document.querySelectorAll("body *"))
    .filter((el) => el.getBoundingClientRect().right > width + 0.5 && !el.closest(".table-wrap"))
    .slice(0, 8)
    .map((el) => el.tagName.toLowerCase() + (el.className ? "." + String(el.className).split(" ").join(".") : "")
         + " " + Math.round(el.getBoundingClientRect().right));
}"""


def api_get(stack: Stack, path: str, token: str) -> int:
    """GET /api/v1`path` with a Bearer token: the status."""
    request = urllib.request.Request(stack.base_url + "/api/v1" + path)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def csrf_fields_match_the_session(gui: Gui) -> None:
    """Every form on the page carries the session's CSRF token."""
    page = gui.page
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    values = page.locator('form input[name="csrf_token"]').evaluate_all(
        "inputs => inputs.map(i => i.value)"
    )
    assert values and all(value == token for value in values), values


# -- logging in and out ----------------------------------------------------------------------------


def test_login_is_required_and_logout_ends_the_session(gui: Gui) -> None:
    page = gui.go("/routes")
    # Not logged in: the login page, which comes back to /routes afterwards.
    expect(page).to_have_url(re.compile(r"/login\?next=/routes$"))
    expect(page).to_have_title("Log in · minirouter")
    gui.shot("login")

    page.get_by_label("Name", exact=True).fill("admin")
    page.get_by_label("Password", exact=True).fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("[data-form-errors]")).to_contain_text("Wrong name or password.")
    expect(page).to_have_url(re.compile(r"/login"))

    # With the keyboard only: Tab from the name to the password, Enter submits.
    page.get_by_label("Name", exact=True).focus()
    page.keyboard.press("Tab")
    page.keyboard.type("admin password for the gui tests")
    page.keyboard.press("Enter")
    expect(page).to_have_url(gui.stack.base_url + "/routes")
    expect(page).to_have_title("Routes · minirouter")
    cookie = next(c for c in gui.context.cookies() if c["name"] == "minirouter_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    for path in ("/", "/history", "/upstreams/+new"):
        gui.go(path)
        expect(page).to_have_url(re.compile(r"/login\?next="))


# -- the main flow: a change made in the GUI reaches the core, and is rolled back -----------------


def test_change_reaches_the_core_and_rolls_back(gui: Gui) -> None:
    stack = gui.stack
    store = stack.store()
    page = gui.page
    gui.login()
    expect(page).to_have_title("Dashboard · minirouter")
    start_rev = store.current_rev()
    # A second tab stays on the dashboard for the whole test, never reloaded: what it shows at
    # the end it learnt by polling on its own.
    dashboard = gui.context.new_page()
    dashboard.on("pageerror", lambda exc: gui.errors.append(str(exc)))
    dashboard.goto(stack.base_url + "/")
    dashboard.evaluate("window.loadedOnce = true")

    # An upstream through its form: first a bad target, refused beside the field.
    gui.go("/upstreams")
    page.get_by_role("link", name="New upstream").click()
    expect(page).to_have_title("New upstream · minirouter")
    csrf_fields_match_the_session(gui)
    page.get_by_label("ID", exact=True).fill("web")
    page.get_by_label("Targets", exact=True).fill("no-port-here")
    page.get_by_role("button", name="Create upstream").click()
    expect(page.locator("#e-targets")).to_contain_text("host:port")
    expect(page.get_by_label("Targets", exact=True)).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Targets", exact=True).fill(f"127.0.0.1:{stack.upstream_port}")
    page.get_by_role("button", name="Create upstream").click()
    expect(page).to_have_url(stack.base_url + "/upstreams")
    expect(page.locator("#notice")).to_have_text("Created upstream web.")
    expect(page.locator("#upstreams-table")).to_contain_text(f"127.0.0.1:{stack.upstream_port}")
    upstream_rev = store.current_rev()
    assert upstream_rev == start_rev + 1
    gui.shot("upstreams")

    # A route: a path without the leading "/" is refused, the message beside the Path field.
    gui.go("/routes/+new")
    expect(page).to_have_title("New route · minirouter")
    page.get_by_label("ID", exact=True).fill("hello")
    page.get_by_label("Hosts", exact=True).fill("gui.test")
    page.get_by_label("Path", exact=True).fill("hello/")
    page.get_by_label("Upstream", exact=True).select_option("web")
    page.get_by_role("button", name="Create route").click()
    error = page.locator("#e-path")
    expect(error).to_be_visible()
    expect(error).to_contain_text('must start with "/"')
    expect(page.get_by_label("Path", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Path", exact=True)).to_be_focused()
    assert store.current_rev() == upstream_rev  # nothing stored
    gui.shot("route-form-error")

    page.get_by_label("Path", exact=True).fill("/hello/")
    page.get_by_role("button", name="Create route").click()
    expect(page).to_have_url(stack.base_url + "/routes")
    expect(page.locator("#notice")).to_have_text("Created route hello.")
    route_rev = store.current_rev()
    assert route_rev == upstream_rev + 1

    # An upstream still in use cannot be deleted: the dialog says why, nothing changes.
    gui.go("/upstreams")
    page.get_by_role("button", name="Delete upstream web").click()
    gui.confirm("Delete upstream")
    expect(page.locator("#confirm-error")).to_contain_text("still in use")
    page.locator("dialog#confirm").get_by_role("button", name="Cancel").click()
    expect(page.locator("dialog#confirm")).to_be_hidden()
    assert store.current_rev() == route_rev
    gui.go("/routes")

    # The running core follows the store: the request reaches the upstream.
    poll(
        lambda: stack.through_core("/hello/there", "gui.test") == (200, UPSTREAM_ANSWER),
        10,
        "the new route to reach the core",
    )

    # Searching the list (typing filters at once; the server searches on Enter).
    search = page.get_by_label("Search routes", exact=True)
    search.fill("no-such-route")
    expect(page.locator("#routes-table tr[data-item='hello']")).to_be_hidden()
    search.fill("gui.test")
    expect(page.locator("#routes-table tr[data-item='hello']")).to_be_visible()
    gui.shot("routes")

    # Editing: a PUT with If-Match; the priority shows in the list.
    page.get_by_role("link", name="hello", exact=True).click()
    expect(page).to_have_title("Route hello · minirouter")
    gui.shot("route-edit")
    page.get_by_label("Priority", exact=True).fill("5")
    page.get_by_role("button", name="Save route").click()
    expect(page.locator("#notice")).to_have_text("Saved route hello.")
    expect(page.locator("tr[data-item='hello'] td.num")).to_have_text("5")

    # Delete asks first; Escape cancels and nothing changes.
    edited_rev = store.current_rev()
    page.get_by_role("button", name="Delete route hello").click()
    expect(page.locator("dialog#confirm")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("dialog#confirm")).to_be_hidden()
    assert store.current_rev() == edited_rev

    # Some traffic, for the dashboard's charts: hits and misses.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert stack.through_core("/hello/x", "gui.test")[0] == 200
        stack.through_core("/missing", "nowhere.test")
        time.sleep(0.02)

    # History: the route's creation with its fields; roll back to before it.
    gui.go("/history")
    expect(page).to_have_title("History · minirouter")
    created = page.locator(f"#rev-{route_rev}")
    expect(created).to_contain_text("created route hello")
    expect(created.locator("table.diff")).to_contain_text("/hello/")
    expect(page.locator(f"#rev-{edited_rev}")).to_contain_text("updated route hello")
    expect(page.locator(f"#rev-{edited_rev} table.diff tr.added")).to_contain_text("priority")
    gui.shot("history")
    page.get_by_role("button", name=f"Roll back to revision {upstream_rev}").click()
    gui.confirm(f"Roll back to revision {upstream_rev}")
    expect(page.locator("#notice")).to_have_text(f"Rolled back to revision {upstream_rev}.")
    snapshot = store.snapshot()
    assert [r.id for r in snapshot.config.routes if r.id == "hello"] == []
    assert "web" in [u.id for u in snapshot.config.upstreams]

    # The core follows the rollback: no route for that host any more.
    poll(
        lambda: stack.through_core("/hello/there", "gui.test")[0] == 404,
        10,
        "the rollback to reach the core",
    )

    # The dashboard tab opened at the start followed all of it by itself.
    rev = store.current_rev()
    expect(dashboard.locator("[data-per-route] tr[data-route='hello']")).to_be_visible(
        timeout=10_000
    )
    expect(dashboard.locator("[data-fleet] tbody")).to_contain_text(str(rev), timeout=10_000)
    expect(dashboard.locator("[data-fleet-summary]")).to_contain_text(f"config revision {rev}")
    assert dashboard.evaluate("window.loadedOnce") is True  # the same document: no reload
    dashboard.close()

    # A fresh dashboard: the core is current, the charts and the per-route table are drawn.
    gui.go("/")
    fleet = page.locator("[data-fleet] tbody")
    expect(fleet).to_contain_text("current", timeout=10_000)
    expect(fleet).to_contain_text(str(rev))
    expect(page.locator("[data-per-route] tr[data-route='hello']")).to_be_visible(timeout=10_000)
    expect(page.locator('[data-now="rps"]')).not_to_have_text("—")
    assert page.locator('[data-chart="rps"] path.line').count() == 1
    assert page.locator('[data-chart="status"] rect.bar').count() > 0
    # One route's charts: the selector lists the routes seen.
    page.get_by_label("Show", exact=True).select_option("hello")
    expect(page.locator('[data-chart="rps"] path.line')).to_have_count(1)
    page.get_by_label("Show", exact=True).select_option("")
    gui.shot("dashboard")


# -- the match tester ------------------------------------------------------------------------------


def test_match_tester_shows_the_winner_and_why_others_lost(gui: Gui) -> None:
    store = gui.stack.store()
    store.apply(
        [
            Change.put(from_dict("upstreams", {"id": "m-up", "targets": ["127.0.0.1:9"]})),
            Change.put(
                from_dict(
                    "routes",
                    {"id": "m-api", "hosts": ["m.test"], "path": "/api/", "upstream": "m-up"},
                )
            ),
            Change.put(
                from_dict(
                    "routes", {"id": "m-wild", "hosts": ["*.test"], "path": "/", "upstream": "m-up"}
                )
            ),
        ],
        actor="test:gui",
    )
    gui.login()
    page = gui.go("/match")
    expect(page).to_have_title("Match tester · minirouter")
    page.get_by_label("Host", exact=True).fill("m.test")
    page.get_by_label("Path", exact=True).fill("/api/users?id=3")
    page.get_by_role("button", name="Test").click()
    winner = page.locator("[data-winner]")
    expect(winner).to_contain_text("Winner: route m-api")
    expect(winner).to_contain_text("forwards /api/users to upstream m-up")
    rows = page.locator("[data-candidates]")
    expect(rows.locator("tr.is-winner")).to_contain_text("m-api")
    expect(rows.locator("tr", has_text="m-wild")).to_contain_text("yes")
    gui.shot("match")

    # No route: said plainly; a bad path is refused beside the field.
    page.get_by_label("Host", exact=True).fill("elsewhere.example")
    page.get_by_role("button", name="Test").click()
    expect(winner).to_have_text("No route matches: the router answers 404.")
    page.get_by_label("Path", exact=True).fill("no-slash")
    page.get_by_role("button", name="Test").click()
    expect(page.locator("#e-path")).to_contain_text("starting with /")


# -- roles -----------------------------------------------------------------------------------------


def test_admin_adds_a_viewer_who_can_only_read(gui: Gui) -> None:
    gui.login()
    page = gui.go("/users")
    expect(page).to_have_title("Users · minirouter")
    form = page.locator("form[data-api-form]")
    form.get_by_label("Name", exact=True).fill("vera")
    form.get_by_label("Role", exact=True).select_option("viewer")
    form.get_by_label("Password", exact=True).fill("short")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator("#e-password")).to_contain_text("at least 8 characters")
    form.get_by_label("Password", exact=True).fill("vera's long password")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator("#notice")).to_have_text("Added user vera.")
    expect(page.locator("#users-table tr[data-item='vera']")).to_contain_text("viewer")
    gui.shot("users")

    # Vera logs in: she reads everything, changes nothing, and sees no admin pages.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    gui.login("vera", "vera's long password")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Routes")).to_be_visible()
    expect(nav.get_by_role("link", name="Users")).to_have_count(0)
    gui.go("/routes")
    expect(page.get_by_role("link", name="New route")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("^Delete"))).to_have_count(0)
    gui.go("/history")
    expect(page.get_by_role("button", name=re.compile("^Roll back"))).to_have_count(0)
    for path in ("/routes/+new", "/users"):
        response = page.goto(gui.stack.base_url + path)
        assert response is not None and response.status == 403
        expect(page).to_have_title("Not allowed · minirouter")
    gui.shot("forbidden")


def test_tokens_are_shown_once_and_can_be_revoked(gui: Gui) -> None:
    gui.login()
    page = gui.go("/tokens")
    expect(page).to_have_title("API tokens · minirouter")
    form = page.locator("form[data-api-form]")
    form.get_by_label("Name", exact=True).fill("ci-gui")
    form.get_by_label("Role", exact=True).select_option("editor")
    form.get_by_role("button", name="Create token").click()
    box = page.locator("[data-token-box]")
    expect(box).to_be_visible()
    token = page.get_by_label("The new token", exact=True).input_value()
    assert len(token) >= 40
    assert api_get(gui.stack, "/routes", token) == 200
    # Listed at once (no reload, which would lose the only copy of the token).
    expect(page.locator("#tokens-table tr[data-item='ci-gui']")).to_contain_text("editor")
    gui.shot("tokens")

    page.reload()
    expect(page.locator("#tokens-table tr[data-item='ci-gui']")).to_contain_text("editor")
    assert token not in page.content()  # shown once: never again
    page.get_by_role("button", name="Revoke token ci-gui").click()
    gui.confirm("Revoke token")
    expect(page.locator("#notice")).to_have_text("Revoked token ci-gui.")
    assert api_get(gui.stack, "/routes", token) == 401


# -- a phone ---------------------------------------------------------------------------------------


def test_pages_fit_a_phone(phone: Gui) -> None:
    phone.login()
    page = phone.page
    for path, name in (
        ("/", "dashboard"),
        ("/routes", "routes"),
        ("/routes/+new", "route-form"),
        ("/upstreams", "upstreams"),
        ("/listeners", "listeners"),
        ("/certificates", "certificates"),
        ("/certificates/+new", "certificate-form"),
        ("/history", "history"),
        ("/match", "match"),
    ):
        phone.go(path)
        # Wide tables scroll inside their box; the page itself never scrolls sideways.
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (path, overflow, page.evaluate(WIDE_ELEMENTS))
        phone.shot(name)
    # The nav is reachable and the dashboard's charts drew on a narrow screen too.
    phone.go("/")
    expect(page.locator('[data-chart="rps"] .grid text').first).to_be_attached(timeout=10_000)
    expect(page).to_have_title("Dashboard · minirouter")
