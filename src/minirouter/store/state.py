"""The stored items at one revision, parsed and indexed: how both backends validate a write.

A store keeps one `ConfigState` per process, brought up to date from the change history
before each write (a few records, not the whole config), so that checking an apply costs in
proportion to the apply, not to the size of the config: a delete of an upstream looks its
users up in an index instead of scanning every route.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from minirouter.model import KIND_TYPES, KINDS, Config, Item, ValidationError, from_dict, to_dict

from .base import Change, Op, Snapshot, describe
from .errors import NotFoundError
from .records import RawRecord

_REFERRERS = ("routes", "listeners")  # kinds whose items name an upstream
_BULK = 1000  # items from which a load runs with the cyclic GC paused


@dataclass(frozen=True, slots=True)
class Planned:
    """A change that will be written: the exact stored text before and after."""

    kind: str
    id: str
    op: Op
    before: str | None
    after: str | None
    item: Item | None  # the parsed `after`


def encode_item(item: Item) -> str:
    """The stored JSON text of an item (compact, ASCII: the same bytes in every backend)."""
    return json.dumps(to_dict(item), separators=(",", ":"))


def parse_item(kind: str, item_id: str, text: str) -> Item | str:
    """Parse and validate a stored value: the item, or why it is invalid."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    try:
        item = from_dict(kind, data)
    except ValidationError as exc:
        return describe(exc)
    if item.id != item_id:
        return f"id: {item.id!r} differs from the id it is stored under"
    return item


def _upstream_of(item: Item) -> str | None:
    upstream = getattr(item, "upstream", None)
    return upstream if isinstance(upstream, str) else None


class ConfigState:
    """Stored raw values at revision `rev`, with the valid items parsed and an index of users.

    Not thread-safe: the owning store guards it with its lock.
    """

    def __init__(
        self,
        rev: int,
        raw: Mapping[str, Mapping[str, str]],
        previous: ConfigState | None = None,
        epoch: str = "",
    ) -> None:
        self.rev = rev
        self.epoch = epoch
        self._raw: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self._items: dict[str, dict[str, Item]] = {kind: {} for kind in KINDS}
        self._errors: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        # upstream id -> (kind, id) of every valid route and listener naming it
        self._users: dict[str, set[tuple[str, str]]] = {}
        # Parsing builds ~10 objects per item and frees none of them: the cyclic GC would
        # only rescan them again and again (a third or more of the time at 100k routes).
        bulk = gc.isenabled() and sum(map(len, raw.values())) >= _BULK
        if bulk:
            gc.disable()
        try:
            for kind in KINDS:
                for item_id, text in raw.get(kind, {}).items():
                    # Parsing dominates a reload; a value unchanged since the last one is reused.
                    old = previous.parsed(kind, item_id, text) if previous is not None else None
                    self._set(kind, item_id, text, old)
        finally:
            if bulk:
                gc.enable()

    def parsed(self, kind: str, item_id: str, text: str) -> Item | str | None:
        """The parse of `text` if this state holds exactly that text for (kind, id)."""
        if self._raw[kind].get(item_id) != text:
            return None
        item = self._items[kind].get(item_id)
        return item if item is not None else self._errors[kind][item_id]

    def _set(self, kind: str, item_id: str, text: str | None, parsed: Item | str | None) -> None:
        old = self._items[kind].pop(item_id, None)
        if old is not None and (upstream := _upstream_of(old)) is not None:
            self._users[upstream].discard((kind, item_id))
        self._errors[kind].pop(item_id, None)
        if text is None:
            self._raw[kind].pop(item_id, None)
            return
        self._raw[kind][item_id] = text
        if parsed is None:
            parsed = parse_item(kind, item_id, text)
        if isinstance(parsed, str):
            self._errors[kind][item_id] = parsed
            return
        self._items[kind][item_id] = parsed
        if kind in _REFERRERS and (upstream := _upstream_of(parsed)) is not None:
            self._users.setdefault(upstream, set()).add((kind, item_id))

    # -- reading --------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The valid items as a Config (sorted by id); the rest reported in `invalid`."""
        invalid = {
            f"{kind}/{item_id}": message
            for kind in KINDS
            for item_id, message in sorted(self._errors[kind].items())
        }
        upstreams = self._raw["upstreams"]
        sections: dict[str, tuple[Item, ...]] = {}
        texts: dict[str, dict[str, str]] = {}
        for kind in KINDS:
            kept: list[Item] = []
            raw = self._raw[kind]
            kept_texts = texts[kind] = {}
            items = self._items[kind]
            # Sorted ids, not sorted (id, item) pairs: 100k temporary tuples would wake the
            # cyclic GC over a hundred times during one snapshot.
            for item_id in sorted(items):
                item = items[item_id]
                upstream = _upstream_of(item) if kind in _REFERRERS else None
                # A stored but invalid upstream still counts: a mirror keeps its last good one.
                if upstream is not None and upstream not in upstreams:
                    invalid[f"{kind}/{item_id}"] = f"upstream: unknown upstream {upstream!r}"
                    continue
                kept.append(item)
                kept_texts[item_id] = raw[item_id]
            sections[kind] = tuple(kept)
        config = Config(**cast(dict[str, Any], sections))
        return Snapshot(self.rev, config, invalid, self.epoch, texts)

    def stored_ids(self) -> dict[str, list[str]]:
        """The ids stored under each kind, valid or not."""
        return {kind: list(self._raw[kind]) for kind in KINDS}

    # -- writing --------------------------------------------------------------------------------

    def plan(self, changes: Sequence[Change]) -> list[Planned]:
        """Check `changes` against this state; the writes they make, no-ops left out.

        Raises NotFoundError or ValidationError (fields named "kind/id.field").
        """
        overlay: dict[tuple[str, str], str | None] = {}
        final_items: dict[tuple[str, str], Item] = {}
        planned: list[Planned] = []
        errors: dict[str, str] = {}

        def current(kind: str, item_id: str) -> str | None:
            key = (kind, item_id)
            return overlay[key] if key in overlay else self._raw[kind].get(item_id)

        for change in changes:
            kind, item_id, key = change.kind, change.id, (change.kind, change.id)
            where = f"{kind}/{item_id}"
            if kind not in KIND_TYPES:
                errors[where] = f"unknown kind; expected one of {', '.join(KINDS)}"
                continue
            before = current(kind, item_id)
            if change.op == "delete":
                if before is None:
                    raise NotFoundError(kind, item_id)
                overlay[key] = None
                final_items.pop(key, None)
                planned.append(Planned(kind, item_id, "delete", before, None, None))
                continue
            if change.op != "put":
                errors[where] = f"unknown op {change.op!r}; expected put or delete"
                continue
            item = self._checked(change, errors)
            if item is None:
                continue
            after = encode_item(item)
            if before is not None and (before == after or self._equal(kind, before, item)):
                continue  # no-op
            overlay[key] = after
            final_items[key] = item
            planned.append(Planned(kind, item_id, "put", before, after, item))

        self._check_references(overlay, final_items, errors)
        if errors:
            raise ValidationError(errors)
        return planned

    def _checked(self, change: Change, errors: dict[str, str]) -> Item | None:
        """The change's item, validated again (a dataclass can be built without validation)."""
        where = f"{change.kind}/{change.id}"
        cls = KIND_TYPES[change.kind]
        item = change.item
        if not isinstance(item, cls):
            errors[where] = f"expected a {cls.__name__}, got {type(item).__name__}"
            return None
        if item.id != change.id:
            errors[f"{where}.id"] = f"{item.id!r} differs from the id of the change"
            return None
        try:
            return from_dict(change.kind, to_dict(item))
        except ValidationError as exc:
            for path, message in exc.fields.items():
                errors[where if path == "<root>" else f"{where}.{path}"] = message
            return None

    def _equal(self, kind: str, text: str, item: Item) -> bool:
        parsed = self.parsed(kind, item.id, text)  # the cached parse if `text` is stored
        if parsed is None:
            parsed = parse_item(kind, item.id, text)
        return parsed == item

    def _check_references(
        self,
        overlay: Mapping[tuple[str, str], str | None],
        final_items: Mapping[tuple[str, str], Item],
        errors: dict[str, str],
    ) -> None:
        def upstream_exists(upstream_id: str) -> bool:
            key = ("upstreams", upstream_id)
            if key in overlay:
                return overlay[key] is not None
            return upstream_id in self._raw["upstreams"]

        for (kind, item_id), item in final_items.items():
            upstream = _upstream_of(item) if kind in _REFERRERS else None
            if upstream is not None and not upstream_exists(upstream):
                errors[f"{kind}/{item_id}.upstream"] = f"unknown upstream {upstream!r}"
        for (kind, item_id), text in overlay.items():
            if kind != "upstreams" or text is not None or item_id not in self._raw[kind]:
                continue
            # Users changed by this apply were checked above with their new value.
            users = sorted(u for u in self._users.get(item_id, ()) if u not in overlay)
            if users:
                names = ", ".join(f"{k}/{i}" for k, i in users)
                errors[f"upstreams/{item_id}"] = f"still used by {names}"

    def advance(self, rev: int, planned: Iterable[Planned], epoch: str | None = None) -> None:
        """Move to revision `rev` (of history `epoch`, if given) after `planned` was written."""
        for change in planned:
            self._set(change.kind, change.id, change.after, change.item)
        self.rev = rev
        if epoch is not None:
            self.epoch = epoch

    def advance_records(self, raws: Iterable[RawRecord]) -> None:
        """Move forward through stored change records (a complete, gap-free run)."""
        for raw in raws:
            if raw.kind in KIND_TYPES:
                self._set(raw.kind, raw.id, raw.after, None)
            self.rev = raw.rev

    def before_of(self, kind: str, item_id: str) -> str | None:
        """The stored text of (kind, id) at this revision."""
        return self._raw[kind].get(item_id)
