"""The config endpoints: items of each kind, bulk apply and export, history and rollback.

Every write goes through `_write`: read the snapshot, check `If-Match` against its revision,
compute the changes, and make them ONE store apply with ``expect_rev`` set to that revision.
If another writer got in first, the write is recomputed (without `If-Match`) or refused with
412 (with it). Each error is raised before the store is written, so nothing is stored on any
error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from minirouter.model import KINDS, ValidationError, config_from_dict, dump_yaml, from_dict, to_dict
from minirouter.store import Change, ConflictError, NotFoundError, Snapshot, TrimmedError
from minirouter.store.base import ChangeRecord, undo_changes

from .accounts import Identity
from .app import control_state
from .auth import identity, require
from .bodies import etag, flag, if_match, int_arg, precondition_failed, read_body, read_object
from .diff import config_diff
from .errors import ApiError

bp = Blueprint("config", __name__)

KIND = "<any(" + ", ".join(KINDS) + "):kind>"
WRITE_ATTEMPTS = 5
REDACTED = "<redacted>"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


# -- helpers --------------------------------------------------------------------------------------


def shown(kind: str, data: dict[str, Any], who: Identity) -> dict[str, Any]:
    """An item as `who` may see it: a certificate's private key only for editors and up."""
    if kind == "certificates" and "key" in data and not who.allows("editor"):
        return {**data, "key": REDACTED}
    return data


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in ("cert", "key"):  # PEM text: nothing to search for in there
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def matches(data: dict[str, Any], query: str) -> bool:
    """Whether any text value of the item contains `query` (case-insensitive)."""
    return any(query in text.lower() for text in _strings(data))


def _exists(snapshot: Snapshot, kind: str, item_id: str) -> bool:
    """Whether (kind, id) is stored, valid or not."""
    return _find(snapshot, kind, item_id) is not None or f"{kind}/{item_id}" in snapshot.invalid


def _find(snapshot: Snapshot, kind: str, item_id: str) -> Any:
    for item in getattr(snapshot.config, kind):
        if item.id == item_id:
            return item
    return None


def _relative(exc: ValidationError, kind: str, item_id: str) -> dict[str, str]:
    """A store's field paths ("routes/api.upstream") made relative to the item ("upstream")."""
    prefix = f"{kind}/{item_id}"
    fields: dict[str, str] = {}
    for path, message in exc.fields.items():
        if path == prefix:
            fields["<root>"] = message
        elif path.startswith(prefix + "."):
            fields[path[len(prefix) + 1 :]] = message
        else:
            fields[path] = message
    return fields


def _write(
    build: Callable[[Snapshot], list[Change]], item: tuple[str, str] | None = None
) -> tuple[int, Snapshot]:
    """Apply what `build` makes of the current snapshot, as one revision.

    Returns the revision written (the snapshot's if there was nothing to write) and the
    snapshot the changes were computed from. `item` is the (kind, id) an `If-Match: *`
    requires to exist.
    """
    precondition = if_match()
    state = control_state()
    for _ in range(WRITE_ATTEMPTS):
        snapshot = state.snapshot()
        if precondition is not None:
            if not precondition.accepts(snapshot.rev):
                raise precondition_failed(snapshot.rev)
            if precondition.any and item is not None and not _exists(snapshot, *item):
                raise ApiError(412, f"{item[0]}/{item[1]} does not exist (If-Match: *)")
        changes = build(snapshot)
        if not changes:
            return snapshot.rev, snapshot
        try:
            rev = state.store.apply(changes, expect_rev=snapshot.rev, actor=identity().actor)
        except ConflictError as exc:
            if precondition is not None and not precondition.any:
                raise precondition_failed(exc.current_rev) from None
            continue  # another writer got in first: recompute against its revision
        return rev, snapshot
    raise ApiError(409, "the config kept changing while this was written; try again")


def _item_response(kind: str, item: Any, rev: int, status: int) -> tuple[Response, int]:
    response = jsonify(shown(kind, to_dict(item), identity()))
    response.headers["ETag"] = etag(rev)
    if status == 201:
        response.headers["Location"] = url_for(".item", kind=kind, item_id=item.id)
    return response, status


# -- items ----------------------------------------------------------------------------------------


@bp.get(f"/{KIND}")
@require("viewer")
def items(kind: str) -> Response:
    """Every item of `kind` (``?q=`` keeps those with a text value containing it)."""
    query = request.args.get("q", "").strip().lower()
    snapshot = control_state().snapshot()
    who = identity()
    found = [to_dict(item) for item in getattr(snapshot.config, kind)]
    if query:
        found = [data for data in found if matches(data, query)]
    invalid = {
        key.partition("/")[2]: message
        for key, message in snapshot.invalid.items()
        if key.partition("/")[0] == kind
    }
    response = jsonify(
        {"rev": snapshot.rev, "items": [shown(kind, d, who) for d in found], "invalid": invalid}
    )
    response.headers["ETag"] = etag(snapshot.rev)
    return response


@bp.post(f"/{KIND}")
@require("editor")
def create(kind: str) -> tuple[Response, int]:
    """Create an item; 409 if one of that id exists."""
    item = from_dict(kind, read_object())

    def build(snapshot: Snapshot) -> list[Change]:
        if _exists(snapshot, kind, item.id):
            raise ApiError(409, f"{kind}/{item.id} exists already", {"id": "exists already"})
        return [Change.put(item)]

    try:
        rev, _ = _write(build)
    except ValidationError as exc:
        raise ApiError(422, "validation failed", _relative(exc, kind, item.id)) from None
    return _item_response(kind, item, rev, 201)


@bp.get(f"/{KIND}/<item_id>")
@require("viewer")
def item(kind: str, item_id: str) -> Response:
    """One item, with the config revision as its ETag."""
    snapshot = control_state().snapshot()
    found = _find(snapshot, kind, item_id)
    if found is None:
        problem = snapshot.invalid.get(f"{kind}/{item_id}")
        if problem is not None:
            raise ApiError(404, f"{kind}/{item_id} is stored but invalid: {problem}")
        raise ApiError(404, f"{kind}/{item_id} does not exist")
    response, _ = _item_response(kind, found, snapshot.rev, 200)
    return response


@bp.put(f"/{KIND}/<item_id>")
@require("editor")
def replace(kind: str, item_id: str) -> tuple[Response, int]:
    """Create or replace an item: 201 if it was created, 200 if replaced."""
    body = read_object()
    if body.setdefault("id", item_id) != item_id:
        raise ApiError(
            422, "validation failed", {"id": f"differs from the id in the path {item_id!r}"}
        )
    # A certificate replaced without its key keeps the stored one: the GUI never sends a
    # private key back to the browser, so its edit form leaves the key out unless it changes.
    keep_key = kind == "certificates" and "key" not in body
    made: list[Any] = [] if keep_key else [from_dict(kind, body)]

    def build(snapshot: Snapshot) -> list[Change]:
        if keep_key:
            stored = _find(snapshot, kind, item_id)
            made[:] = [from_dict(kind, {**body, "key": stored.key} if stored else body)]
        return [Change.put(made[0])]

    try:
        rev, snapshot = _write(build, (kind, item_id))
    except ValidationError as exc:
        raise ApiError(422, "validation failed", _relative(exc, kind, item_id)) from None
    new = made[0]
    return _item_response(kind, new, rev, 200 if _exists(snapshot, kind, item_id) else 201)


@bp.delete(f"/{KIND}/<item_id>")
@require("editor")
def delete(kind: str, item_id: str) -> tuple[str, int, dict[str, str]]:
    """Delete an item: 404 if there is none, 409 if other items still use it."""

    def build(snapshot: Snapshot) -> list[Change]:
        if not _exists(snapshot, kind, item_id):
            raise ApiError(404, f"{kind}/{item_id} does not exist")
        return [Change.delete(kind, item_id)]

    try:
        rev, _ = _write(build, (kind, item_id))
    except NotFoundError:
        raise ApiError(404, f"{kind}/{item_id} does not exist") from None
    except ValidationError as exc:
        fields = _relative(exc, kind, item_id)
        raise ApiError(409, f"{kind}/{item_id} is still in use", fields) from None
    return "", 204, {"ETag": etag(rev)}


# -- the whole config ------------------------------------------------------------------------------


@bp.post("/apply")
@require("editor")
def apply() -> Response:
    """Make the stored config the one in the body (JSON or YAML), as one revision.

    ``?dry_run=1``: only return the diff. ``?prune=1``: also delete what the body does not
    name. The diff lists each change with its before and after.
    """
    dry_run, prune = flag("dry_run"), flag("prune")
    desired = config_from_dict(read_body(yaml_allowed=True))
    diff: list[dict[str, Any]] = []

    def build(snapshot: Snapshot) -> list[Change]:
        changes, entries = config_diff(snapshot.config, snapshot.invalid, desired, prune)
        diff[:] = entries
        return [] if dry_run else changes

    rev, _ = _write(build)
    response = jsonify({"rev": rev, "dry_run": dry_run, "diff": diff})
    response.headers["ETag"] = etag(rev)
    return response


@bp.get("/export")
@require("viewer")
def export() -> Response:
    """The whole config: JSON, or YAML with ``Accept: application/yaml``; `apply` takes it back."""
    snapshot = control_state().snapshot()
    config = snapshot.config
    if not identity().allows("editor"):
        hidden = tuple(dataclasses.replace(c, key=REDACTED) for c in config.certificates)
        config = dataclasses.replace(config, certificates=hidden)
    wanted = request.accept_mimetypes.best_match(["application/json", *YAML_TYPES])
    if wanted in YAML_TYPES:
        response = Response(dump_yaml(config), content_type="application/yaml; charset=utf-8")
    else:
        response = jsonify(to_dict(config))
    response.headers["ETag"] = etag(snapshot.rev)
    response.vary.add("Accept")
    return response


def _revisions(records: list[ChangeRecord], who: Identity) -> list[dict[str, Any]]:
    grouped: list[dict[str, Any]] = []
    for record in records:
        if not grouped or grouped[-1]["rev"] != record.rev:
            grouped.append(
                {"rev": record.rev, "actor": record.actor, "at": record.at, "changes": []}
            )
        grouped[-1]["changes"].append(
            {
                "seq": record.seq,
                "kind": record.kind,
                "id": record.id,
                "op": record.op,
                "before": _shown_or_none(record.kind, record.before, who),
                "after": _shown_or_none(record.kind, record.after, who),
            }
        )
    for revision in grouped:
        revision["changes"].sort(key=lambda change: change["seq"])
    return grouped


def _shown_or_none(kind: str, data: Mapping[str, Any] | None, who: Identity) -> Any:
    return shown(kind, dict(data), who) if data is not None else None


@bp.get("/history")
@require("viewer")
def history() -> Response:
    """Changes, newest revision first, paged: ``?limit=`` changes (whole revisions) per page,
    ``?before=<rev>`` for the next page (`next_before` of this one)."""
    limit = int_arg("limit", 50, 1, 1000) or 50
    before = int_arg("before", None, 1)
    state = control_state()
    current = state.store.current_rev()
    records = state.store.history(limit, before)
    oldest = records[-1].rev if records else None
    more = oldest is not None and oldest > 1 and len(records) >= limit
    return jsonify(
        {
            "rev": current,
            "revisions": _revisions(records, identity()),
            "next_before": oldest if more else None,
        }
    )


@bp.post("/rollback")
@require("editor")
def rollback() -> Response:
    """Make the config what it was at revision ``rev``, as one new revision."""
    body = read_object()
    target = body.get("rev")
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise ApiError(422, "validation failed", {"rev": "expected an integer >= 0"})
    store = control_state().store
    precondition = if_match()
    try:
        current = store.current_rev()
        if target > current:
            raise ApiError(
                422,
                "validation failed",
                {"rev": f"revision {target} does not exist yet (now {current})"},
            )
        if precondition is None:
            rev = store.rollback(target, actor=identity().actor)
        else:
            if not precondition.accepts(current):
                raise precondition_failed(current)
            changes = undo_changes(store.changes_since(target))
            try:
                rev = (
                    store.apply(changes, expect_rev=current, actor=identity().actor)
                    if changes
                    else current
                )
            except ConflictError as exc:
                raise precondition_failed(exc.current_rev) from None
    except TrimmedError:
        raise ApiError(
            422,
            "validation failed",
            {"rev": f"the history no longer reaches back to revision {target}"},
        ) from None
    except NotFoundError:
        raise ApiError(
            422, "validation failed", {"rev": f"revision {target} does not exist"}
        ) from None
    response = jsonify({"rev": rev, "rolled_back_to": target})
    response.headers["ETag"] = etag(rev)
    return response
