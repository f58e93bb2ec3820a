"""The store contract: what every backend (Redis protocol, SQLite) provides.

A store holds the config as items keyed by (kind, id), a global revision that grows by one
per `apply`, the history of changes (one record per changed item, all records of one apply
sharing its revision), node heartbeats and per-second stats. See DESIGN.md, "Store".
"""

from __future__ import annotations

import abc
import json
import random
import re
import secrets
import time
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, cast
from urllib.parse import parse_qsl, urlencode

from minirouter.model import KINDS, Config, Item, ValidationError, from_dict, kind_of

from .errors import ConflictError, NotFoundError, StoreError

Op = Literal["put", "delete"]
InfoValue = str | int | float

# How often an apply without `expect_rev` is retried when another writer got in first.
CONFLICT_ATTEMPTS = 20


def conflict_backoff(attempt: int) -> None:
    """Sleep before retry `attempt` (0..): random, growing to 50 ms, so writers spread out."""
    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))


@dataclass(frozen=True, slots=True)
class Change:
    """One change of an `apply`: put `item` under (kind, id), or delete (kind, id)."""

    kind: str
    id: str
    op: Op
    item: Item | None = None

    @classmethod
    def put(cls, item: Item) -> Change:
        """A put of `item`, its kind and id taken from the item."""
        return cls(kind_of(item), item.id, "put", item)

    @classmethod
    def delete(cls, kind: str, id: str) -> Change:
        """A delete of (kind, id)."""
        return cls(kind, id, "delete")


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One stored change: revision `rev`, position `seq` (1..) among the changes of that apply.

    `before` / `after` are the item's JSON shape (None: absent, or not a JSON object).
    `epoch` names the history the record belongs to ("" if the store did not say).
    """

    rev: int
    seq: int
    kind: str
    id: str
    op: Op
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    actor: str
    at: float
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole config at revision `rev`, read atomically.

    `invalid` maps "kind/id" to why a stored value was left out of `config` (invalid JSON or
    item, or an upstream reference to an upstream that is not stored at all). `epoch` names
    the history `rev` belongs to (see `Store.head`). `texts` holds the stored JSON text of
    each item of `config` (kind -> id -> text), for a reader that keeps a copy on disk.
    """

    rev: int
    config: Config
    invalid: Mapping[str, str] = field(default_factory=dict)
    epoch: str = ""
    texts: Mapping[str, Mapping[str, str]] = field(default_factory=dict, compare=False)


class Store(abc.ABC):
    """A revisioned config store. Synchronous and thread-safe; `watch` is async.

    Every error raised is a `StoreError` (see `errors.py`) or a `ValidationError`.

    A revision number alone does not name a config: a store that is wiped (a Redis restarted
    without persistence) starts again at revision 0 and may be written up to and past the
    revision a reader knows. So the store also holds an *epoch*, a random id that names its
    history: a new one is written with the first revision after revision 0 and by
    `republish`; it never changes otherwise. A reader that knows (epoch, rev) resumes with
    `changes_since(rev, epoch)`, which refuses (TrimmedError) to splice another history on.
    """

    url: str  # without the password: safe to log

    # -- config ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def snapshot(self) -> Snapshot:
        """The whole config and its revision, read atomically; invalid items are left out."""

    @abc.abstractmethod
    def apply(
        self, changes: Sequence[Change], expect_rev: int | None = None, actor: str = ""
    ) -> int:
        """Apply `changes` all-or-nothing as ONE new revision and return it.

        Raises ConflictError if `expect_rev` is given and is not the current revision,
        NotFoundError for a delete of a missing item, ValidationError (nothing written) if an
        item is invalid or the result would break a reference (a route or listener naming a
        missing upstream, an upstream deleted while still used). Changes that change nothing
        are skipped; if nothing changes, no revision is made and the current one is returned.
        """

    @abc.abstractmethod
    def current_rev(self) -> int:
        """The current revision (0 for an empty, never written store)."""

    @abc.abstractmethod
    def head(self) -> tuple[str, int]:
        """(epoch, current revision), read together; the epoch is "" for a never written store
        (and for one written before epochs existed, until its next write)."""

    @abc.abstractmethod
    def changes_since(self, rev: int, epoch: str | None = None) -> list[ChangeRecord]:
        """Every change with a revision above `rev`, oldest first.

        Raises TrimmedError if the history no longer reaches back to `rev` + 1, if `rev` is
        newer than the store (the store was reset), or if `epoch` is given (not empty) and is
        not the store's (another history): reload the snapshot then.
        """

    @abc.abstractmethod
    def watch(self, rev: int, epoch: str | None = None) -> AsyncGenerator[list[ChangeRecord], None]:
        """Yield the changes after `rev` as they happen, in batches of complete revisions.

        With `epoch` (not empty) the history followed must be that one, from the start;
        without it, the epoch of the first record seen.

        Close the generator when done (``contextlib.aclosing``): that releases its connection.

        Raises TrimmedError when the history cannot be followed without a gap (reload the
        snapshot and watch from its revision), StoreUnavailable when the connection breaks
        (reconnect with backoff and watch from the last revision applied).
        """

    @abc.abstractmethod
    def history(self, limit: int = 50, before_rev: int | None = None) -> list[ChangeRecord]:
        """The newest changes first, starting below `before_rev` if given.

        At least `limit` records if there are that many, and always whole revisions (so the
        next page is `before_rev=result[-1].rev`).
        """

    def rollback(self, rev: int, actor: str = "") -> int:
        """Make the config what it was at revision `rev`, as one new revision; return it.

        Computed from the history (every change after `rev` undone); raises TrimmedError if
        the history no longer reaches back, NotFoundError for a revision not yet made.
        """
        for attempt in range(CONFLICT_ATTEMPTS):
            current = self.current_rev()
            if rev < 0 or rev > current:
                raise NotFoundError("revision", str(rev))
            records = self.changes_since(rev)
            if not records:
                return current
            try:
                return self.apply(undo_changes(records), expect_rev=records[-1].rev, actor=actor)
            except ConflictError:
                conflict_backoff(attempt)  # someone wrote meanwhile: recompute from history
        raise ConflictError(self.current_rev())

    def republish(self, config: Config, min_rev: int = 0, actor: str = "") -> int:
        """Make `config` the whole stored config, as a NEW history; return its revision.

        For an operator restoring a config the cores serve (from a core's local snapshot or an
        export) into a store that came back empty or older. One revision, numbered
        max(current + 1, `min_rev`), with a new epoch: every reader treats it as another
        history and reloads the whole snapshot, and a reader at a revision below it accepts
        it (a reader above it keeps what it has: pass `min_rev` above every core's revision).
        Items not in `config` are deleted; ValidationError (nothing written) if `config` is
        not consistent.
        """
        check_rev(min_rev)
        return self._republish(config, min_rev, actor)

    @abc.abstractmethod
    def _republish(self, config: Config, min_rev: int, actor: str) -> int:
        """`republish`, done atomically by the backend."""

    # -- fleet ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def heartbeat(self, node_id: str, info: Mapping[str, InfoValue], ttl: float) -> None:
        """Record that node `node_id` is alive, with `info`, for `ttl` seconds."""

    @abc.abstractmethod
    def nodes(self) -> list[dict[str, InfoValue]]:
        """Every node whose heartbeat has not expired: its info plus "node" (the id)."""

    @abc.abstractmethod
    def publish_stats(
        self,
        node_id: str,
        second: int,
        counters: Mapping[str, Mapping[str, float]],
        ttl: float,
    ) -> None:
        """Store per-route counters (route -> counter -> value) of one second, kept `ttl` s.

        Publishing the same node and second again replaces the counters named.
        """

    @abc.abstractmethod
    def stats(self, since_second: int) -> list[dict[str, Any]]:
        """Counters of every second >= `since_second` still kept.

        Each entry is {"node", "second", "route", "counters": {name: value}}, ordered by
        second, node and route.
        """

    # -- control-plane accounts -----------------------------------------------------------------
    #
    # Records are JSON objects the store keeps as they are given (the control plane decides
    # what they hold: role, password hash, ...); the store only needs their "name". Token
    # records are stored under the digest of the token (the token itself never reaches the
    # store), so the check of a request's token is one lookup.

    @abc.abstractmethod
    def user(self, name: str) -> dict[str, Any] | None:
        """The record of user `name`, or None."""

    @abc.abstractmethod
    def users(self) -> list[dict[str, Any]]:
        """Every user record, sorted by name."""

    @abc.abstractmethod
    def add_user(self, record: Mapping[str, Any], replace: bool = False) -> bool:
        """Store a user record (its "name" is the key); False if the name exists and not
        `replace`. ValueError for a record without a string "name" or that is not JSON."""

    @abc.abstractmethod
    def delete_user(self, name: str) -> bool:
        """Delete user `name`; False if there was none."""

    @abc.abstractmethod
    def token(self, digest: str) -> dict[str, Any] | None:
        """The record of the token whose digest is `digest`, or None (unknown or revoked)."""

    @abc.abstractmethod
    def tokens(self) -> list[dict[str, Any]]:
        """Every token record (without digests), sorted by name."""

    @abc.abstractmethod
    def add_token(self, digest: str, record: Mapping[str, Any]) -> bool:
        """Store a token record under `digest`, atomically; False (nothing stored) if a token
        of the same "name" or digest exists. ValueError as for `add_user`."""

    @abc.abstractmethod
    def revoke_token(self, name: str) -> bool:
        """Delete the token named `name`; False if there was none."""

    @abc.abstractmethod
    def shared_secret(self, name: str, candidate: str) -> str:
        """The secret stored under `name`, storing `candidate` first if there is none.

        Atomic: processes that race all get the same value (the first one stored). For a key
        that several control processes must agree on, e.g. the session-signing key.
        """

    # -- housekeeping ---------------------------------------------------------------------------

    @abc.abstractmethod
    def info(self) -> dict[str, InfoValue]:
        """What this store is: backend, URL (no password), server version, parser, ..."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection and file; the store cannot be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


def new_epoch() -> str:
    """A fresh epoch: random, 16 hex digits."""
    return secrets.token_hex(8)


def replacement_changes(config: Config, stored: Mapping[str, Iterable[str]]) -> list[Change]:
    """The changes that turn a store holding the ids `stored` (kind -> ids) into `config`:
    a delete of every stored item `config` lacks, then a put of every item of `config`."""
    changes: list[Change] = []
    for kind in KINDS:
        wanted = {item.id for item in getattr(config, kind)}
        changes += [Change.delete(kind, i) for i in sorted(stored.get(kind, ())) if i not in wanted]
    for kind in ("upstreams", *(k for k in KINDS if k != "upstreams")):
        changes += [Change.put(item) for item in getattr(config, kind)]
    return changes


def undo_changes(records: Sequence[ChangeRecord]) -> list[Change]:
    """The changes that undo `records` (oldest first): each item back to its first `before`."""
    first_before: dict[tuple[str, str], dict[str, Any] | None] = {}
    last_after: dict[tuple[str, str], dict[str, Any] | None] = {}
    for record in records:
        key = (record.kind, record.id)
        first_before.setdefault(key, record.before)
        last_after[key] = record.after
    changes: list[Change] = []
    errors: dict[str, str] = {}
    for (kind, item_id), target in first_before.items():
        if target == last_after[(kind, item_id)]:
            continue  # changed and changed back
        if target is None:
            changes.append(Change(kind, item_id, "delete"))
            continue
        try:
            changes.append(Change(kind, item_id, "put", from_dict(kind, target)))
        except ValidationError as exc:
            # Only possible for a value written behind minirouter's back.
            errors[f"{kind}/{item_id}"] = f"cannot restore an invalid value: {describe(exc)}"
    if errors:
        raise ValidationError(errors)
    return changes


def describe(exc: ValidationError) -> str:
    """A ValidationError as one line."""
    return "; ".join(f"{path}: {message}" for path, message in exc.fields.items())


def redact_url(url: str) -> str:
    """`url` without its password (``redis://user:***@host``), safe for messages and logs.

    Only the password is touched (no parse and rebuild, which would normalise the URL).
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        cut = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
        authority, tail = rest[:cut], rest[cut:]
        if "@" in authority:
            userinfo, _, hosts = authority.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            authority = f"{user}:***@{hosts}" if colon else authority
        url = f"{scheme}://{authority}{tail}"
    return re.sub(r"(?i)([?&][a-z_]*password=)[^&#]*", r"\1***", url)


def split_params(url: str, names: Iterable[str]) -> tuple[str, dict[str, str]]:
    """Take minirouter's own query parameters (`names`) out of `url`; the rest stays.

    Only the query is rebuilt: urlunsplit() would turn ``sqlite:////abs`` into ``sqlite://abs``.
    """
    base, _, query = url.partition("?")
    wanted = set(names)
    own: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in wanted:
            own[name] = value
        else:
            rest.append((name, value))
    return (f"{base}?{urlencode(rest)}" if rest else base), own


def int_param(params: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    """An integer URL parameter, checked (StoreError naming it if it is not one)."""
    if name not in params:
        return default
    try:
        value = int(params[name])
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise StoreError(
            f"store URL parameter {name}={params[name]!r}: expected an integer >= {minimum}"
        )
    return value


def check_rev(rev: int) -> None:
    """Refuse a negative revision (a caller's bug)."""
    if rev < 0:
        raise ValueError(f"revision must be >= 0, got {rev}")


def account_json(record: Mapping[str, Any]) -> tuple[str, str]:
    """(name, JSON text) of an account record; ValueError unless it has a usable "name"."""
    name = record.get("name")
    if not isinstance(name, str) or not name or any(c in name for c in "\r\n\x00"):
        raise ValueError(f"an account record needs a name without line breaks; got {name!r}")
    try:
        text = json.dumps(dict(record), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"account record {name!r} is not JSON: {exc}") from None
    return name, text


def account_record(text: str | bytes | None) -> dict[str, Any] | None:
    """A stored account record parsed, None for a missing or unreadable one."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None  # written by something else: treated as absent
    return cast(dict[str, Any], value) if isinstance(value, dict) else None


def check_node(node_id: str) -> None:
    """Refuse an empty node id or one with line breaks or NUL."""
    if not node_id or any(c in node_id for c in "\r\n\x00"):
        raise ValueError(f"invalid node id {node_id!r}")
