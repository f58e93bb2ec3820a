"""Random sequences of applies on both backends at once: each must match a plain-dict model,
and the two backends must agree on every outcome, revision and record."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minirouter.model import Config, Item, Route, Upstream
from minirouter.store import Change, NotFoundError, Store, ValidationError
from minirouter.store.redis import RedisStore
from minirouter.store.sqlite import SqliteStore

from .conftest import Server
from .helpers import route, strip_time, upstream

UPSTREAMS = ["u1", "u2", "u3"]
ROUTES = ["r1", "r2", "r3", "r4"]

changes = st.one_of(
    st.builds(
        lambda uid, port: Change.put(upstream(uid, port)),
        st.sampled_from(UPSTREAMS),
        st.integers(9001, 9003),
    ),
    st.builds(
        lambda rid, uid, path: Change.put(route(rid, uid, path)),
        st.sampled_from(ROUTES),
        st.sampled_from(UPSTREAMS),
        st.sampled_from(["/a/", "/b/"]),
    ),
    st.builds(lambda uid: Change.delete("upstreams", uid), st.sampled_from(UPSTREAMS)),
    st.builds(lambda rid: Change.delete("routes", rid), st.sampled_from(ROUTES)),
)
applies = st.lists(st.lists(changes, min_size=0, max_size=4), min_size=1, max_size=10)

_counter = itertools.count()


def expected_outcome(
    model: dict[tuple[str, str], Item], batch: list[Change]
) -> tuple[type[Exception] | None, dict[tuple[str, str], Item], bool]:
    """What the store must do: (error type or None, the new model, whether anything changed)."""
    work = dict(model)
    changed = False
    for change in batch:
        key = (change.kind, change.id)
        if change.op == "delete":
            if key not in work:
                return NotFoundError, model, False
            del work[key]
            changed = True
        else:
            assert change.item is not None
            changed = changed or work.get(key) != change.item
            work[key] = change.item
    for item in work.values():
        if isinstance(item, Route) and ("upstreams", item.upstream) not in work:
            return ValidationError, model, False
    return None, work, changed


def outcome(store: Store, batch: list[Change]) -> Any:
    try:
        return store.apply(batch, actor="h")
    except (NotFoundError, ValidationError) as exc:
        return type(exc)


def as_config(model: dict[tuple[str, str], Item]) -> Config:
    ordered = sorted(model.items())
    return Config(
        upstreams=tuple(i for (k, _), i in ordered if isinstance(i, Upstream)),
        routes=tuple(i for (k, _), i in ordered if isinstance(i, Route)),
    )


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=applies, back_to=st.integers(0, 1000))
def test_random_applies_match_the_model_on_both_backends(
    redis_server: Server, tmp_path: Path, batches: list[list[Change]], back_to: int
) -> None:
    n = next(_counter)
    redis_store = RedisStore(f"redis://127.0.0.1:{redis_server.port}/0", prefix=f"h{n}")
    sqlite_store = SqliteStore(tmp_path / f"h{n}.db")
    with redis_store, sqlite_store:
        model: dict[tuple[str, str], Item] = {}
        rev = 0
        configs = [Config()]  # by revision
        for batch in batches:
            error, model, changed = expected_outcome(model, batch)
            results = [outcome(redis_store, batch), outcome(sqlite_store, batch)]
            if error is not None:
                assert results == [error, error]
            else:
                rev += changed
                assert results == [rev, rev]
                if changed:
                    configs.append(as_config(model))
        # Equal but for the epoch: each store's history has its own.
        snaps = [dataclasses.replace(s.snapshot(), epoch="") for s in (redis_store, sqlite_store)]
        assert snaps[0] == snaps[1]
        assert snaps[0].rev == rev
        assert snaps[0].config == as_config(model)
        assert dict(snaps[0].invalid) == {}
        histories = [strip_time(s.changes_since(0)) for s in (redis_store, sqlite_store)]
        assert histories[0] == histories[1]
        assert len({r[0] for r in histories[0]}) == rev  # one revision per changing apply
        # A fresh instance (no cached state) agrees with the one that wrote.
        with RedisStore(f"redis://127.0.0.1:{redis_server.port}/0", prefix=f"h{n}") as fresh:
            assert fresh.snapshot() == redis_store.snapshot()
        # Rolling back to any earlier revision gives exactly its config, on both.
        target = back_to % (rev + 1)
        new_revs = [store.rollback(target, "h") for store in (redis_store, sqlite_store)]
        assert new_revs[0] == new_revs[1] == (rev if configs[target] == configs[rev] else rev + 1)
        for store in (redis_store, sqlite_store):
            assert store.snapshot().config == configs[target]
