"""The errors every store raises, whatever the backend.

Callers catch these, never a driver's own exceptions: `StoreUnavailable` means "retry later"
(the store cannot be reached), `ConflictError` means "reload and try again", `TrimmedError`
means "the history no longer reaches back that far: reload the snapshot".
"""

from __future__ import annotations

from minirouter.model import ValidationError

__all__ = [
    "ConflictError",
    "NotFoundError",
    "StoreError",
    "StoreUnavailable",
    "TrimmedError",
    "ValidationError",
]


class StoreError(Exception):
    """Base class of every store error (also raised for a bad store URL or a corrupt store)."""


class ConflictError(StoreError):
    """The revision moved: `expect_rev` was stale. Nothing was written."""

    def __init__(self, current_rev: int, expected_rev: int | None = None) -> None:
        self.current_rev = current_rev
        self.expected_rev = expected_rev
        if expected_rev is None:
            message = f"the config changed concurrently (now at revision {current_rev})"
        else:
            message = f"expected revision {expected_rev}, but the store is at {current_rev}"
        super().__init__(message)

    def __reduce__(self) -> tuple[type[ConflictError], tuple[int, int | None]]:
        return (type(self), (self.current_rev, self.expected_rev))


class NotFoundError(StoreError, KeyError):
    """A delete named an item that does not exist (or rollback named a revision not yet made)."""

    def __init__(self, kind: str, id: str) -> None:
        self.kind = kind
        self.id = id
        super().__init__(kind, id)

    def __str__(self) -> str:
        if self.kind == "revision":
            return f"revision {self.id} does not exist"
        return f"{self.kind.rstrip('s')} {self.id!r} does not exist"

    def __reduce__(self) -> tuple[type[NotFoundError], tuple[str, str]]:
        return (type(self), (self.kind, self.id))


class TrimmedError(StoreError):
    """The change history no longer reaches back to the revision asked for (or shows a gap).

    The caller reloads the snapshot and continues from its revision.
    """


class StoreUnavailable(StoreError):
    """The store cannot be reached (connection refused, timeout, locked or unreadable file).

    The message is one line and names the store URL without its password.
    """
