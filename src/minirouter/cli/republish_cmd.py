"""`minirouter republish`: put back the config the cores serve into a store that lost it.

A store that comes back empty (a Redis restarted without persistence) or older than what the
cores serve (restored from an old dump) is not applied by the cores: they keep serving and
report `store_behind`. This command writes their config back, from a core's local snapshot or
from an export, as a new history of the store (a new epoch) numbered above every core's
revision, so that every core reloads it and follows the store again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from minirouter.cli import main
from minirouter.model import Config, ValidationError, config_from_dict, load_config
from minirouter.store import Store

from . import _common
from ._common import (
    CliError,
    CliUsageError,
    actor,
    connect,
    echo_json,
    json_option,
    store_option,
    validation_summary,
)
from ._config import diff_config, render_diff, summary


def _from_snapshot(path: Path) -> tuple[Config, int]:
    """The config and revision of a core's local snapshot (``minirouter core --snapshot``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rev = int(data["rev"])
        return config_from_dict(data["config"]), rev
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        raise CliError(f"{path}: invalid config: {validation_summary(exc)}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path} is not a core's snapshot: {exc}") from None


def _from_export(path: Path) -> Config:
    try:
        return load_config(path)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        raise CliError(f"{path}: invalid config: {validation_summary(exc)}") from None


def _fleet_rev(store: Store) -> int:
    """The highest revision a live core reports in its heartbeat (0 if none does)."""
    revs = [node.get("rev") for node in store.nodes()]
    return max((int(r) for r in revs if isinstance(r, int)), default=0)


@main.command("republish")
@click.option(
    "--from-snapshot",
    "snapshot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="A core's local snapshot (the file of `minirouter core --snapshot`).",
)
@click.option(
    "-f",
    "--file",
    "export_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="An export (`minirouter export`, YAML or JSON).",
)
@click.option(
    "--rev",
    "min_rev",
    type=click.IntRange(1),
    metavar="REV",
    help="The revision to publish at, at least. Default: one above the source's, the "
    "store's and every live core's revision.",
)
@click.option("-y", "--yes", is_flag=True, help="Republish without asking for confirmation.")
@store_option
@json_option
def republish_cmd(
    snapshot_path: Path | None,
    export_path: Path | None,
    min_rev: int | None,
    yes: bool,
    store_url: str | None,
    as_json: bool,
) -> None:
    """Write a whole config back into the store as a new history that every core accepts.

    For a store that came back empty or older than what the cores serve (they keep serving
    and report `store_behind` in /healthz): the config in the store becomes exactly the
    source's (other items are removed), at a revision above every core's, with a new epoch,
    so that every core reloads it and follows the store again.

    \b
    Examples:
      minirouter republish --from-snapshot ~/.local/state/minirouter/core-0.0.0.0-8080.json
      minirouter export -o saved.yaml    # beforehand, while the store was good
      minirouter republish -f saved.yaml --yes
    """
    if (snapshot_path is None) == (export_path is None):
        raise CliUsageError("give exactly one source: --from-snapshot PATH or -f FILE")
    if snapshot_path is not None:
        config, source_rev = _from_snapshot(snapshot_path)
    else:
        assert export_path is not None
        config, source_rev = _from_export(export_path), 0
    with connect(store_url) as store:
        snap = store.snapshot()
        fleet_rev = _fleet_rev(store)
        floor = max(source_rev, snap.rev, fleet_rev) + 1
        target = max(floor, min_rev) if min_rev is not None else floor
        wanted = {
            kind: {item.id: item for item in getattr(config, kind)}
            for kind in ("upstreams", "routes", "listeners", "certificates")
        }
        diff = diff_config(snap.config, snap.invalid, wanted, prune=True)
        if not as_json:
            for line in render_diff(diff):
                click.echo(line)
            fleet = f"the live cores at up to {fleet_rev}" if fleet_rev else "no live core"
            click.echo(
                f"{summary(diff) if diff else 'No item changes'}: the store is at revision "
                f"{snap.rev}, {fleet}; republishing as revision {target} of a new history."
            )
        if min_rev is not None and min_rev < floor:
            click.echo(
                f"warning: --rev {min_rev} is not above every core's revision; a core "
                "at a higher revision keeps reporting the store behind",
                err=True,
            )
        if not yes:
            if not _common.stdin_is_tty():
                raise CliUsageError(
                    "not republished: confirm with --yes (there is no terminal to ask on)"
                )
            if not _common.confirm(f"Replace the store's config and publish revision {target}?"):
                raise CliError("not republished: nothing was written")
        rev = store.republish(config, min_rev=target, actor=actor())
        epoch = store.head()[0]
    report: dict[str, Any] = {
        "rev": rev,
        "epoch": epoch,
        "previous_rev": snap.rev,
        "fleet_rev": fleet_rev,
        "items": sum(len(v) for v in wanted.values()),
        "diff": [c.to_json() for c in diff],
    }
    if as_json:
        echo_json(report)
    else:
        click.echo(
            f"Republished {report['items']} items as revision {rev} (epoch {epoch}): "
            "the cores reload it."
        )
