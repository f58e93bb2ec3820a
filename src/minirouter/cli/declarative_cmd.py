"""`minirouter apply` and `minirouter export`: the whole config as one declarative file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import click

from minirouter.cli import _common, main
from minirouter.model import KINDS, ValidationError, dump_yaml
from minirouter.store import ConflictError

from ._common import (
    CliError,
    CliUsageError,
    actor,
    connect,
    echo_json,
    json_option,
    store_option,
    validation_summary,
    warn_invalid,
)
from ._config import (
    FILE_ARG,
    check_document,
    check_references,
    diff_config,
    read_document,
    render_diff,
    store_changes,
    summary,
)


@main.command("apply")
@click.option(
    "-f",
    "--file",
    "file",
    type=FILE_ARG,
    required=True,
    help="YAML or JSON file with upstreams, routes, listeners, certificates; - reads stdin.",
)
@click.option("--dry-run", is_flag=True, help="Show the diff and stop: write nothing.")
@click.option(
    "--prune",
    is_flag=True,
    help="Also remove every stored item the file does not name (the file is the whole config). "
    "Without it, items not in the file are kept.",
)
@click.option("-y", "--yes", is_flag=True, help="Apply without asking for confirmation.")
@click.option(
    "--expect-rev",
    type=click.IntRange(0),
    metavar="REV",
    help="Refuse (exit 1) unless the store is still at revision REV, e.g. the one a reviewed "
    "--dry-run showed.",
)
@store_option
@json_option
def apply_cmd(
    file: str,
    dry_run: bool,
    prune: bool,
    yes: bool,
    expect_rev: int | None,
    store_url: str | None,
    as_json: bool,
) -> None:
    """Apply a config file (YAML or JSON) as one revision.

    Makes the stored config what FILE says. Everything is validated first (an error
    names the field and its line; nothing is written), then the diff against the store is
    printed: + added, ~ changed (field by field), - removed (with --prune). Asks before
    writing unless --yes; without a terminal to ask on (or with -f -) --yes is required.
    The write is refused if the config changed since the diff was computed.

    \b
    Examples:
      minirouter apply -f config.yaml --dry-run
      minirouter apply -f config.yaml --prune --yes
      minirouter export | minirouter apply -f - --store redis://other:6379/0 --yes
    """
    doc = read_document(file)
    wanted = check_document(doc)
    with connect(store_url) as store:
        snap = store.snapshot()
        if expect_rev is not None and snap.rev != expect_rev:
            raise CliError(
                f"the store is at revision {snap.rev}, not {expect_rev}; nothing was written: "
                "review the new diff (--dry-run) and apply again"
            )
        upstreams = set(wanted.items["upstreams"])
        if not prune:
            upstreams |= {u.id for u in snap.config.upstreams}
        check_references(doc, wanted, upstreams)
        diff = diff_config(snap.config, snap.invalid, wanted.items, prune=prune)

        if not as_json:
            for line in render_diff(diff):
                click.echo(line)
            if diff:
                click.echo(f"{summary(diff)} (store at revision {snap.rev}).")
        report = {
            "rev": snap.rev,
            "dry_run": dry_run,
            "applied": False,
            "diff": [c.to_json() for c in diff],
        }
        if not diff or dry_run:
            if as_json:
                echo_json(report)
            elif not diff:
                click.echo(f"No changes (store at revision {snap.rev}).")
            return
        if not yes:
            # With -f -, stdin held the file: nobody is left to answer.
            if file == "-" or not _common.stdin_is_tty():
                raise CliUsageError(
                    "not applied: confirm with --yes (there is no terminal to ask on), "
                    "or use --dry-run to only see the diff"
                )
            if as_json:
                for line in render_diff(diff):
                    click.echo(line, err=True)
            if not _common.confirm(f"Apply these changes ({summary(diff)})?"):
                raise CliError("not applied: nothing was written")
        try:
            rev = store.apply(store_changes(diff), expect_rev=snap.rev, actor=actor())
        except ConflictError as exc:
            raise CliError(
                f"the config changed while this apply was prepared (the store is now at "
                f"revision {exc.current_rev}, the diff was against {snap.rev}); nothing was "
                "written: run apply again to see the new diff"
            ) from None
        except ValidationError as exc:
            raise CliError(
                f"refused by the store, nothing was written: {validation_summary(exc)}"
            ) from None
    if as_json:
        echo_json({**report, "rev": rev, "applied": True})
    else:
        click.echo(f"Applied as revision {rev}.")


@main.command("export")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (mode 0600: it holds private keys) instead of stdout.",
)
@store_option
def export_cmd(output: Path | None, store_url: str | None) -> None:
    """Print the whole config as YAML.

    `minirouter apply -f` takes the output back with no diff. Stored items that are invalid are left out (with a warning on stderr).
    """
    with connect(store_url) as store:
        snap = store.snapshot()
    warn_invalid(snap.invalid, KINDS)
    text = f"# minirouter config at revision {snap.rev}\n" + dump_yaml(snap.config)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        _write_private(output, text)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"Wrote revision {snap.rev} to {output}.", err=True)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (temp file and rename), readable by the owner only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp files are 0600
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
