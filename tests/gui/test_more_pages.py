"""The browser GUI's listener and certificate pages, and upstream targets' live health.

Headless chromium against the running control plane and core of tests/gui/conftest.py; the
items are named after each test, as the stack is shared by the module.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from control import pem_material
from minirouter.model import from_dict
from minirouter.store import Change

from .conftest import Gui, free_port


def test_listeners_list_create_edit_delete(gui: Gui) -> None:
    store = gui.stack.store()
    store.apply(
        [Change.put(from_dict("upstreams", {"id": "l-db", "targets": ["127.0.0.1:9"]}))],
        actor="test:gui",
    )
    gui.login()
    page = gui.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Listeners").click()
    expect(page).to_have_title("Listeners · minirouter")
    page.get_by_role("link", name="New listener").click()
    expect(page).to_have_title("New listener · minirouter")

    # A bad address is refused beside its field, focused; nothing is stored.
    before = store.current_rev()
    page.get_by_label("ID", exact=True).fill("l-pg")
    listen = page.get_by_label("Listen on", exact=True)
    listen.fill("127.0.0.1")
    page.get_by_label("Upstream", exact=True).select_option("l-db")
    page.get_by_role("button", name="Create listener").click()
    expect(page.locator("#e-listen")).to_be_visible()
    expect(listen).to_have_attribute("aria-invalid", "true")
    expect(listen).to_be_focused()
    assert store.current_rev() == before
    gui.shot("listener-form-error")

    port = free_port()
    listen.fill(f"127.0.0.1:{port}")
    # With the keyboard: Enter in a field submits the form.
    listen.press("Enter")
    expect(page).to_have_url(gui.stack.base_url + "/listeners")
    expect(page.locator("#notice")).to_have_text("Created listener l-pg.")
    row = page.locator("#listeners-table tr[data-item='l-pg']")
    expect(row).to_contain_text(f"127.0.0.1:{port}")
    expect(row).to_contain_text("l-db")
    search = page.get_by_label("Search listeners", exact=True)
    search.fill("no-such-listener")
    expect(row).to_be_hidden()
    search.fill(str(port))
    expect(row).to_be_visible()
    gui.shot("listeners")

    # Edit: a PUT with If-Match.
    row.get_by_role("link", name="Edit listener l-pg").click()
    expect(page).to_have_title("Listener l-pg · minirouter")
    other = free_port()
    page.get_by_label("Listen on", exact=True).fill(f"127.0.0.1:{other}")
    page.get_by_role("button", name="Save listener").click()
    expect(page.locator("#notice")).to_have_text("Saved listener l-pg.")
    expect(row).to_contain_text(f"127.0.0.1:{other}")
    saved = next(item for item in store.snapshot().config.listeners if item.id == "l-pg")
    assert saved.listen == f"127.0.0.1:{other}"

    # Delete asks first.
    page.get_by_role("button", name="Delete listener l-pg").click()
    gui.confirm("Delete listener")
    expect(page.locator("#notice")).to_have_text("Deleted listener l-pg.")
    expect(row).to_have_count(0)
    assert "l-pg" not in [item.id for item in store.snapshot().config.listeners]


def test_certificates_keep_the_key_hidden(gui: Gui) -> None:
    store = gui.stack.store()
    gui.login()
    page = gui.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Certificates").click()
    expect(page).to_have_title("Certificates · minirouter")
    page.get_by_role("link", name="New certificate").click()
    expect(page).to_have_title("New certificate · minirouter")

    # Without a key: refused beside the key field.
    before = store.current_rev()
    page.get_by_label("ID", exact=True).fill("c-gui")
    page.get_by_label("Names", exact=True).fill("gui.test www.gui.test")
    page.get_by_label("Certificate (PEM)", exact=True).fill(pem_material.CERT)
    page.get_by_role("button", name="Create certificate").click()
    key = page.get_by_label("Private key (PEM)", exact=True)
    expect(page.locator("#e-key")).to_be_visible()
    expect(key).to_have_attribute("aria-invalid", "true")
    assert store.current_rev() == before
    gui.shot("certificate-form-error")

    key.fill(pem_material.KEY)
    page.get_by_role("button", name="Create certificate").click()
    expect(page).to_have_url(gui.stack.base_url + "/certificates")
    expect(page.locator("#notice")).to_have_text("Created certificate c-gui.")
    row = page.locator("#certificates-table tr[data-item='c-gui']")
    expect(row).to_contain_text("gui.test, www.gui.test")
    expect(row.locator("time")).to_have_attribute("datetime", "2036-11-26T11:15:25+00:00")
    gui.shot("certificates")

    # The edit form never holds the key: blank, and saving it blank keeps the stored one.
    row.get_by_role("link", name="c-gui", exact=True).click()
    expect(page).to_have_title("Certificate c-gui · minirouter")
    expect(page.get_by_label("Private key (PEM)", exact=True)).to_have_value("")
    assert pem_material.KEY.splitlines()[2] not in page.content()
    gui.shot("certificate-edit")
    page.get_by_label("Names", exact=True).fill("gui.test")
    page.get_by_role("button", name="Save certificate").click()
    expect(page.locator("#notice")).to_have_text("Saved certificate c-gui.")
    expect(row).not_to_contain_text("www.gui.test")
    saved = next(c for c in store.snapshot().config.certificates if c.id == "c-gui")
    assert saved.names == ("gui.test",) and saved.key == pem_material.KEY

    # Delete: Escape backs out, the dialog's button deletes.
    page.get_by_role("button", name="Delete certificate c-gui").click()
    expect(page.locator("dialog#confirm")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("dialog#confirm")).to_be_hidden()
    page.get_by_role("button", name="Delete certificate c-gui").click()
    gui.confirm("Delete certificate")
    expect(page.locator("#notice")).to_have_text("Deleted certificate c-gui.")
    assert "c-gui" not in [c.id for c in store.snapshot().config.certificates]


def test_upstream_targets_show_their_health_live(gui: Gui) -> None:
    stack = gui.stack
    closed = free_port()  # nothing listens there: its active checks fail
    good, bad = f"127.0.0.1:{stack.upstream_port}", f"127.0.0.1:{closed}"
    stack.store().apply(
        [
            Change.put(
                from_dict(
                    "upstreams",
                    {
                        "id": "h-web",
                        "targets": [good, bad],
                        "health": {"path": "/", "interval": 0.2, "timeout": 1, "unhealthy": 1},
                    },
                )
            )
        ],
        actor="test:gui",
    )
    gui.login()
    # Loaded at once, before the core has checked anything (or even seen the upstream): what
    # the page shows below it learns by polling on its own, in the same document.
    page = gui.go("/upstreams")
    page.evaluate("window.loadedOnce = true")
    row = page.locator("#upstreams-table tr[data-item='h-web']")
    down = row.locator(f"[data-health-address='{bad}']")
    expect(down).to_have_text(re.compile(r"^down on 1/1 core \(.+\)$"), timeout=15_000)
    expect(down).to_have_class(re.compile(r"\bdown\b"))
    expect(row.locator(f"[data-health-address='{good}']")).to_have_text("up on 1/1 core")
    assert page.evaluate("window.loadedOnce") is True  # no reload
    gui.shot("upstreams-health")

    row.get_by_role("link", name="h-web", exact=True).click()
    expect(page).to_have_title("Upstream h-web · minirouter")
    health = page.locator("table.target-health")
    expect(health.locator(f"[data-health-address='{bad}']")).to_contain_text("down on 1/1 core")
    expect(health.locator(f"[data-health-address='{good}']")).to_have_text("up on 1/1 core")
    gui.shot("upstream-health")
