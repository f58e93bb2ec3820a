"""`minirouter republish`: a store that lost the cores' config gets it back, as a new history
that every core accepts (CliRunner over a real store; end to end with a real core)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.coreproc import poll
from integration.upstreams import UpstreamSet
from minirouter.model import config_from_dict
from mirror.conftest import (  # noqa: F401  (fixtures)
    RedisFactory,
    StartCore,
    redis_factory,
    start_core,
    upstream_loop,
    upstreams,
)
from mirror.support import (
    StoreBackend,
    TrafficLoop,
    get,
    put,
    route_item,
    upstream_item,
    wait_served,
)
from store.conftest import Backend

from .conftest import BASIC, Cli

Write = Callable[..., Path]


def snapshot_file(tmp_path: Path, rev: int, config: dict[str, object]) -> Path:
    """A core's local snapshot as `minirouter core --snapshot` writes it."""
    path = tmp_path / "core-snapshot.json"
    path.write_text(json.dumps({"rev": rev, "epoch": "0123456789abcdef", "config": config}))
    return path


def test_republish_from_an_export_replaces_the_config_as_a_new_history(
    cli: Cli, write: Write
) -> None:
    store = cli.store()
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    cli.ok("route", "add", "extra", "--path", "/x/", "--upstream", "web")
    epoch, rev = store.head()
    assert rev == 2
    wanted = {"upstreams": BASIC["upstreams"], "routes": [BASIC["routes"][0]]}
    out = cli.ok("republish", "-f", str(write(wanted)), "--yes").stdout
    assert "routes:\n  - extra\n  - site\n0 to add, 0 to change, 2 to remove" in out, out
    assert "republishing as revision 3 of a new history" in out, out
    new_epoch, new_rev = store.head()
    assert new_rev == 3 and new_epoch not in ("", epoch)
    assert f"as revision 3 (epoch {new_epoch})" in out
    assert store.snapshot().config == config_from_dict(wanted)


def test_republish_from_a_core_snapshot_goes_above_the_fleet(cli: Cli, tmp_path: Path) -> None:
    store = cli.store()
    cli.put("upstreams", {"id": "web", "targets": ["127.0.0.1:9003"]})  # revision 1
    # A live core reports revision 30 (of the history the store lost); its snapshot says 12.
    store.heartbeat("core-a", {"rev": 30, "epoch": "0123456789abcdef"}, ttl=30)
    path = snapshot_file(tmp_path, 12, BASIC)
    report = cli.json("republish", "--from-snapshot", str(path), "--yes")
    assert (report["rev"], report["previous_rev"], report["fleet_rev"]) == (31, 1, 30)
    assert report["epoch"] == store.head()[0] != "0123456789abcdef"
    assert store.snapshot().config == config_from_dict(BASIC)
    # --rev higher than that is taken as it is.
    assert (
        cli.json("republish", "--from-snapshot", str(path), "--yes", "--rev", "100")["rev"] == 100
    )


def test_republish_refuses_without_a_source_or_confirmation(
    cli: Cli, tmp_path: Path, write: Write
) -> None:
    path = snapshot_file(tmp_path, 3, BASIC)
    assert "exactly one source" in cli.fails("republish", "--yes", code=2)
    assert "exactly one source" in cli.fails(
        "republish", "--from-snapshot", str(path), "-f", str(write(BASIC)), "--yes", code=2
    )
    # No terminal to ask on (CliRunner's stdin): --yes is required; nothing written.
    assert "--yes" in cli.fails("republish", "--from-snapshot", str(path), code=2)
    assert cli.rev() == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"rev": 3}')
    assert "is not a core's snapshot" in cli.fails("republish", "--from-snapshot", str(bad))
    invalid = snapshot_file(tmp_path, 3, {"routes": [{"id": "r", "path": "/", "upstream": "x"}]})
    assert "invalid config" in cli.fails("republish", "--from-snapshot", str(invalid), "--yes")
    assert cli.rev() == 0


def test_a_core_behind_an_emptied_store_follows_it_again_after_republish(
    redis_factory: RedisFactory,  # noqa: F811
    upstreams: UpstreamSet,  # noqa: F811
    start_core: StartCore,  # noqa: F811
) -> None:
    """End to end, under traffic: Redis restarted empty, the core keeps serving and reports
    the store behind; `republish --from-snapshot <its snapshot>` and it follows the store."""
    server = redis_factory(persist=False)
    backend = StoreBackend("redis", server.url, redis=server)
    try:
        a = upstreams.http("a")
        store = backend.open()
        store.apply(put(upstream_item("a", a.address), route_item("load", "a", path="/load/")))
        store.apply(put(route_item("r2", "a")))
        rev = store.apply(put(route_item("r3", "a")))
        core = start_core(backend.url)
        poll(
            lambda: json.loads(core.snapshot_path.read_text())["rev"] == rev,
            5,
            message="the core's disk snapshot at revision 3",
        )

        def ok(status: int, name: str | None) -> bool:
            return status == 200 and name == "a"

        with TrafficLoop(core.port, "/load/x", ok, max_seconds=30) as traffic:
            traffic.wait_requests(20)
            server.kill()
            server.start()  # empty: revision 0
            poll(
                lambda: core.store_health()["store_behind"] == [0, rev],
                10,
                message=lambda: f"store_behind [0, {rev}] in /healthz: {core.healthz()}",
            )
            traffic.wait_requests(20)
            cli = Cli(backend.url, Backend("redis", backend.url))
            out = cli.ok("republish", "--from-snapshot", str(core.snapshot_path), "--yes")
            new_rev = rev + 1
            assert f"as revision {new_rev}" in out.stdout, out.stdout
            poll(
                lambda: core.store_health()["store_behind"] is None,
                10,
                message=lambda: f"store_behind cleared: {core.healthz()}",
            )
            traffic.wait_requests(20)
        assert traffic.failures == [], traffic.failures[:10]
        health = core.store_health()
        assert health["connected"] is True, health
        assert health["epoch"] == store.head()[0], health
        assert core.metric("minirouter_store_behind") == 0
        assert core.revision() == new_rev
        assert get(core.port, "/r3/x") == (200, "a")
        # It follows the store again.
        store.apply(put(route_item("r4", "a")))
        wait_served(core.port, "/r4/x", "a", 5)
        assert core.revision() == new_rev + 1
    finally:
        backend.close()


@pytest.mark.parametrize("flag", ["--from-snapshot", "-f"])
def test_a_missing_source_file_is_one_line(cli: Cli, tmp_path: Path, flag: str) -> None:
    assert "cannot read" in cli.fails("republish", flag, str(tmp_path / "nope"), "--yes")
