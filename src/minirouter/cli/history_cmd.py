"""`minirouter history` and `minirouter rollback`: what changed when, by whom; and undoing it."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import click

from minirouter.cli import main
from minirouter.store import ChangeRecord, NotFoundError, TrimmedError, ValidationError

from ._common import CliError, actor, connect, echo_json, json_option, store_option
from ._config import ItemChange, describe_errors, render_change


def _revisions(records: Sequence[ChangeRecord]) -> list[list[ChangeRecord]]:
    """Records (newest first) grouped by revision, each group in the order it was applied."""
    groups: dict[int, list[ChangeRecord]] = {}
    for record in records:
        groups.setdefault(record.rev, []).append(record)
    return [sorted(group, key=lambda r: r.seq) for _, group in sorted(groups.items(), reverse=True)]


def _as_change(record: ChangeRecord) -> ItemChange:
    if record.op == "delete":
        return ItemChange(record.kind, record.id, "remove", record.before, None)
    if record.before is None:
        return ItemChange(record.kind, record.id, "add", None, record.after)
    return ItemChange(record.kind, record.id, "change", record.before, record.after)


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _record_json(record: ChangeRecord) -> dict[str, Any]:
    return {
        "rev": record.rev,
        "seq": record.seq,
        "kind": record.kind,
        "id": record.id,
        "op": record.op,
        "before": record.before,
        "after": record.after,
        "actor": record.actor,
        "at": record.at,
    }


@main.command("history")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="How many revisions to show (newest first).",
)
@click.option(
    "--before",
    "before_rev",
    type=click.IntRange(1),
    metavar="REV",
    help="Start below this revision (to page back).",
)
@store_option
@json_option
def history_cmd(limit: int, before_rev: int | None, store_url: str | None, as_json: bool) -> None:
    """Show recent revisions and what each changed.

    Newest first. Added items show their fields, changed items each changed field as old -> new
    ("(default)" is a field left at its default), removed items their id.
    """
    records: list[ChangeRecord] = []
    with connect(store_url) as store:
        bound = before_rev
        # The store pages by records (always whole revisions); ask until `limit` revisions.
        while len({r.rev for r in records}) < limit:
            page = store.history(limit=max(limit, 50), before_rev=bound)
            if not page:
                break
            records += page
            bound = page[-1].rev
    revisions = _revisions(records)[:limit]
    if as_json:
        echo_json([_record_json(r) for group in revisions for r in group])
        return
    if not revisions:
        click.echo("No history" + (f" before revision {before_rev}." if before_rev else "."))
        return
    for i, group in enumerate(revisions):
        if i:
            click.echo()
        first = group[0]
        who = f" by {first.actor}" if first.actor else ""
        count = f"{len(group)} change" + ("s" if len(group) != 1 else "")
        title = f"revision {first.rev}"
        click.echo(f"{click.style(title, bold=True)}  {_when(first.at)}{who}  ({count})")
        for record in group:
            change = _as_change(record)
            for line in render_change(f"{record.kind}/{record.id}", change, details=True):
                click.echo(line)


@main.command("rollback")
@click.argument("rev", type=click.IntRange(0), metavar="REV")
@store_option
@json_option
def rollback_cmd(rev: int, store_url: str | None, as_json: bool) -> None:
    """Restore the config of revision REV.

    The restored config is written as one new revision, whose number is printed. Every change after REV is undone; the history keeps them (roll forward with another
    rollback). Needs the history to reach back to REV.
    """
    with connect(store_url) as store:
        before = store.current_rev()
        try:
            new_rev = store.rollback(rev, actor=actor())
        except NotFoundError:
            raise CliError(
                f"revision {rev} does not exist (the store is at revision {before})"
            ) from None
        except TrimmedError:
            raise CliError(
                f"the history no longer reaches back to revision {rev}; nothing was written"
            ) from None
        except ValidationError as exc:
            raise CliError(
                f"cannot roll back to revision {rev}, nothing was written: "
                f"{describe_errors(None, exc.fields)}"
            ) from None
    if as_json:
        echo_json({"rev": new_rev, "rolled_back_to": rev, "changed": new_rev != before})
    elif new_rev == before:
        click.echo(f"Nothing to roll back: the config is as it was at revision {rev}.")
    else:
        click.echo(f"Rolled back to revision {rev}: the config is now revision {new_rev}.")
