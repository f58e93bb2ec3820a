"""`check_history` (a store catching up before a write) runs the checks of `complete_history`
without decoding each record's JSON, which the store then parses itself."""

from __future__ import annotations

from typing import Any

import pytest

from minirouter.store import records
from minirouter.store.errors import TrimmedError
from minirouter.store.records import RawRecord, check_history, complete_history


def raw(rev: int, seq: int, n: int = 1, epoch: str = "") -> RawRecord:
    after = f'{{"id":"r{rev}","path":"/","upstream":"u"}}'
    return RawRecord(rev, seq, n, "routes", f"r{rev}", "put", None, after, "t", 0.0, epoch)


def test_check_history_decodes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    history = [raw(3, 1, 2), raw(3, 2, 2), raw(4, 1)]
    assert [(r.rev, r.seq) for r in complete_history(2, 4, history)] == [(3, 1), (3, 2), (4, 1)]

    def refuse(_: Any) -> Any:
        raise AssertionError("JSON decoded")

    monkeypatch.setattr(records, "_json_object", refuse)
    check_history(2, 4, history)
    with pytest.raises(AssertionError, match="JSON decoded"):
        complete_history(2, 4, history)


@pytest.mark.parametrize(
    ("history", "current", "expected", "message"),
    [
        ([raw(4, 1)], 4, None, "gap after revision 2: next stored change is 4.1"),
        ([raw(3, 1, 2)], 3, None, "no longer reaches back to revision 3"),
        ([raw(3, 1)], 4, None, "no longer reaches back to revision 3"),
        ([], 1, None, "revision 2 is newer than the store's 1"),
        ([raw(3, 1, epoch="a"), raw(4, 1, epoch="b")], 4, None, "belongs to another history"),
        ([raw(3, 1)], 3, "other", "holds another history"),
    ],
)
def test_check_history_refuses_what_complete_history_refuses(
    history: list[RawRecord], current: int, expected: str | None, message: str
) -> None:
    for check in (check_history, complete_history):
        with pytest.raises(TrimmedError, match=message):
            check(2, current, history, "a" if expected else "", expected)
