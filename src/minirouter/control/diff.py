"""The difference between the stored config and a desired one, as store changes and as data.

Used by ``POST /apply`` (and its dry run); the GUI shows the same entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from minirouter.model import KINDS, Config, Item, to_dict
from minirouter.store import Change


def config_diff(
    current: Config, invalid: Mapping[str, str], desired: Config, prune: bool
) -> tuple[list[Change], list[dict[str, Any]]]:
    """The changes that make `current` into `desired`, and one diff entry per change.

    Items equal in both are left alone. Without `prune`, items `desired` does not name stay;
    with it they are deleted. `invalid` ("kind/id" -> why) names stored values that are not
    in `current` because they are invalid: they count as present (replaced, or pruned).

    Each entry is ``{"kind", "id", "op": "create" | "update" | "delete", "before", "after"}``
    with the item's JSON shape (None where there is none, or it is invalid).
    """
    changes: list[Change] = []
    entries: list[dict[str, Any]] = []
    for kind in KINDS:
        have: dict[str, Item] = {item.id: item for item in getattr(current, kind)}
        broken = {key.partition("/")[2] for key in invalid if key.partition("/")[0] == kind}
        want: dict[str, Item] = {item.id: item for item in getattr(desired, kind)}
        for item_id in sorted(want):
            item, old = want[item_id], have.get(item_id)
            if old == item:
                continue
            exists = old is not None or item_id in broken
            changes.append(Change.put(item))
            entries.append(_entry(kind, item_id, "update" if exists else "create", old, item))
        if prune:
            for item_id in sorted((have.keys() | broken) - want.keys()):
                changes.append(Change.delete(kind, item_id))
                entries.append(_entry(kind, item_id, "delete", have.get(item_id), None))
    return changes, entries


def _entry(
    kind: str, item_id: str, op: str, before: Item | None, after: Item | None
) -> dict[str, Any]:
    return {
        "kind": kind,
        "id": item_id,
        "op": op,
        "before": to_dict(before) if before is not None else None,
        "after": to_dict(after) if after is not None else None,
    }
