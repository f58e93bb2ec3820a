"""Stored change records and the rules that tell a complete history from a trimmed one.

Both backends store, per change, the revision, its position `seq` (1..n) among the `n`
changes of that revision, and the before/after JSON text. Histories are trimmed from the
front, possibly in the middle of a revision (a capped Redis stream), so a reader checks that
what it got starts right after the revision it knows and has no hole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from .base import ChangeRecord, Op
from .errors import TrimmedError


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A change record as stored: JSON text, and `n`, the number of changes in its revision."""

    rev: int
    seq: int
    n: int
    kind: str
    id: str
    op: Op
    before: str | None
    after: str | None
    actor: str
    at: float
    epoch: str = ""  # the history it belongs to; "" when the store keeps it elsewhere

    def record(self, epoch: str = "") -> ChangeRecord:
        """The public form, with the JSON parsed; `epoch` if the record names none itself."""
        return ChangeRecord(
            self.rev,
            self.seq,
            self.kind,
            self.id,
            self.op,
            _json_object(self.before),
            _json_object(self.after),
            self.actor,
            self.at,
            self.epoch or epoch,
        )


def _json_object(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None  # a value written behind minirouter's back
    return cast(dict[str, Any], value) if isinstance(value, dict) else None


class Sequencer:
    """Follows a history from revision `rev` on, batching complete revisions.

    `feed` takes the next stored records in order and returns the records of the revisions
    they complete; it raises TrimmedError at the first record that does not continue the
    history without a hole (the stream was trimmed past us, or written behind our back), or
    that names another epoch than `epoch` (the store was reset and written again). With no
    `epoch` ("") it takes the first one a record names.
    """

    def __init__(self, rev: int, epoch: str = "") -> None:
        self.rev = rev  # the last revision returned complete
        self.epoch = epoch
        self._pending: list[RawRecord] = []

    @property
    def position(self) -> tuple[int, int] | None:
        """(rev, seq) of the last record fed, or None if none was fed since the start."""
        if self._pending:
            return self._pending[-1].rev, self._pending[-1].seq
        return None

    def feed(self, raws: Iterable[RawRecord]) -> list[ChangeRecord]:
        done: list[ChangeRecord] = []
        for revision in self._revisions(raws):
            done.extend(r.record(self.epoch) for r in revision)
        return done

    def _revisions(self, raws: Iterable[RawRecord]) -> Iterator[list[RawRecord]]:
        """The stored records of each revision that `raws` complete, unparsed."""
        for raw in raws:
            last = self._pending[-1] if self._pending else None
            if last is None:
                ok = raw.rev == self.rev + 1 and raw.seq == 1
            else:
                ok = raw.rev == last.rev and raw.seq == last.seq + 1
            if not ok:
                raise TrimmedError(
                    f"the change history has a gap after revision {self.rev}: "
                    f"next stored change is {raw.rev}.{raw.seq}"
                )
            if raw.epoch:
                if not self.epoch:
                    self.epoch = raw.epoch
                elif raw.epoch != self.epoch:
                    raise TrimmedError(
                        f"change {raw.rev}.{raw.seq} belongs to another history (epoch "
                        f"{raw.epoch}, not {self.epoch}): the store was reset"
                    )
            self._pending.append(raw)
            if raw.seq >= raw.n:  # the revision is complete
                revision, self._pending = self._pending, []
                self.rev = raw.rev
                yield revision


def complete_history(
    rev: int,
    current: int,
    raws: Iterable[RawRecord],
    epoch: str = "",
    expected: str | None = None,
) -> list[ChangeRecord]:
    """The records after `rev` given every stored record after it, the current revision and
    the store's `epoch`.

    Raises TrimmedError unless they reach from `rev` + 1 to `current` without a hole, and,
    if `expected` is given (not empty), unless the store's epoch is `expected`.
    """
    return _follow(rev, current, raws, epoch, expected, parse=True)


def check_history(
    rev: int,
    current: int,
    raws: Iterable[RawRecord],
    epoch: str = "",
    expected: str | None = None,
) -> None:
    """The checks of `complete_history`, for a reader that applies the stored text itself:
    parsing every record's JSON only to drop it would decode each change twice."""
    _follow(rev, current, raws, epoch, expected, parse=False)


def _follow(
    rev: int,
    current: int,
    raws: Iterable[RawRecord],
    epoch: str,
    expected: str | None,
    *,
    parse: bool,
) -> list[ChangeRecord]:
    if expected and epoch != expected:
        raise TrimmedError(
            f"the store holds another history (epoch {epoch or 'none'}, not {expected}): "
            "it was reset or republished"
        )
    if rev > current:
        raise TrimmedError(
            f"revision {rev} is newer than the store's {current} (was the store reset?)"
        )
    sequencer = Sequencer(rev, epoch)
    records: list[ChangeRecord] = []
    if parse:
        records = sequencer.feed(raws)
    else:
        for _ in sequencer._revisions(raws):
            pass
    if sequencer.rev != current or sequencer.position is not None:
        raise TrimmedError(
            f"the change history no longer reaches back to revision {rev + 1} "
            f"(the store is at {current})"
        )
    return records
