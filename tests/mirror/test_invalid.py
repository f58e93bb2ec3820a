"""An invalid value written behind minirouter's back (raw HSET + XADD on Redis, raw SQL on
SQLite, with a matching change record so that the watch sees it) is skipped: the last good
version keeps serving, /healthz names it, and the metric counts it."""

from __future__ import annotations

import json

import pytest

from integration.coreproc import poll
from integration.upstreams import UpstreamSet

from .conftest import StartCore
from .support import StoreBackend, get, put, route_item, upstream_item, wait_served

GOOD = {"id": "r1", "path": "/r1/", "upstream": "a"}

INVALID = {
    "bad-field": json.dumps(GOOD | {"path_type": "bogus"}),
    "not-json": '{"id": "r1", "path": ',
    "not-an-object": "[1, 2]",
    "other-id": json.dumps(GOOD | {"id": "r9"}),
}


@pytest.mark.parametrize(
    "bad",
    [
        *INVALID,
        "unknown-upstream",
    ],
)
def test_invalid_value_behind_our_back_is_skipped(
    bad: str, backend: StoreBackend, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    text = INVALID.get(bad) or json.dumps(GOOD | {"upstream": "missing"})
    a, b = upstreams.http("a"), upstreams.http("b")
    store = backend.open()
    store.apply(put(upstream_item("a", a.address), upstream_item("b", b.address)))
    store.apply(put(route_item("r1", "a"), route_item("r2", "b")))
    core = start_core(backend.url)
    assert get(core.port, "/r1/x") == (200, "a")
    assert core.metric("minirouter_mirror_invalid_items_total") == 0

    bad_rev = backend.raw_change("routes", "r1", text)
    # Until it is reported, or (wrongly) applied: then fail at once, saying how.
    poll(
        lambda: (
            "routes/r1" in core.store_health()["invalid_items"]
            or get(core.port, "/r1/x") != (200, "a")
        ),
        5,
        message=lambda: f"routes/r1 in store.invalid_items ({core.healthz()})",
    )
    assert get(core.port, "/r1/x") == (200, "a"), "the last good version must keep serving"
    health = core.healthz()
    assert health["store"]["invalid_items"]["routes/r1"], health  # says why
    assert health["store"]["connected"] is True, health
    assert core.metric("minirouter_mirror_invalid_items_total", kind="routes") > 0
    assert get(core.port, "/r1/x") == (200, "a"), "the last good version must keep serving"
    assert get(core.port, "/r2/x") == (200, "b")
    assert "routes/r1" in core.stderr_text()  # and a log line names it

    # The stream goes on past it.
    good_rev = store.apply(put(route_item("r3", "b")))
    assert good_rev == bad_rev + 1
    wait_served(core.port, "/r3/x", "b", 5)
    assert core.revision() == good_rev
    assert get(core.port, "/r1/x") == (200, "a")

    # A valid value again: applied, and no longer reported.
    store.apply(put(route_item("r1", "b")))
    wait_served(core.port, "/r1/x", "b", 5)
    assert "routes/r1" not in core.store_health()["invalid_items"]


def test_a_skipped_revision_still_counts_as_applied(
    backend: StoreBackend, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    a = upstreams.http("a")
    store = backend.open()
    store.apply(put(upstream_item("a", a.address), route_item("r1", "a")))
    core = start_core(backend.url)
    bad_rev = backend.raw_change("routes", "r1", INVALID["bad-field"])
    poll(
        lambda: "routes/r1" in core.store_health()["invalid_items"],
        5,
        message="routes/r1 reported",
    )
    assert core.revision() == bad_rev == store.current_rev()


def test_last_good_version_survives_a_full_reload(
    backend: StoreBackend, upstreams: UpstreamSet, start_core: StartCore
) -> None:
    a = upstreams.http("a")
    writer = backend.open(history=2)
    writer.apply(put(upstream_item("a", a.address), route_item("r1", "a")))
    core = start_core(backend.url)
    backend.raw_change("routes", "r1", INVALID["bad-field"])
    poll(
        lambda: "routes/r1" in core.store_health()["invalid_items"],
        5,
        message="routes/r1 reported",
    )
    # Trim the history behind a paused core: it reloads the whole snapshot when it resumes.
    core.pause()
    try:
        for i in range(150):  # enough for Redis' approximate trimming (nodes of 100 entries)
            last = writer.apply(put(route_item(f"n{i}", "a")))
    finally:
        core.resume()
    poll(lambda: core.revision() == last, 10, message=f"revision {last}")
    assert "trimmed" in core.stderr_text()
    assert "routes/r1" in core.store_health()["invalid_items"]
    assert get(core.port, "/r1/x") == (200, "a")
