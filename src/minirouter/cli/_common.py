"""Plumbing shared by the config commands: the store options, one-line errors, output helpers.

Every command that talks to the store takes `--store URL` (else ``$MINIROUTER_STORE``, else the
embedded default) and opens the store with `connect`, which closes it again and turns every
store error into a `CliError`: one line on stderr, exit status 1, no traceback.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import yaml

from minirouter.model import ValidationError
from minirouter.store import (
    ConflictError,
    Store,
    StoreError,
    StoreUnavailable,
    default_store_url,
    open_store,
)
from minirouter.store.base import redact_url

F = TypeVar("F", bound=Callable[..., Any])

# How long the CLI waits for a Redis connection. redis-py waits for the OS by default (minutes
# for a host that drops packets); an operator's command should fail within seconds.
CONNECT_TIMEOUT = 5.0
_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")

# The user-facing name of each kind, and the command group that manages it.
NOUNS: dict[str, str] = {
    "routes": "route",
    "upstreams": "upstream",
    "listeners": "listener",
    "certificates": "certificate",
}
# Upstreams first: the order in which a reader (and the store) needs them.
DISPLAY_KINDS: tuple[str, ...] = ("upstreams", "routes", "listeners", "certificates")


class CliError(click.ClickException):
    """An error the command reports as ``minirouter: <message>`` (one line) on stderr."""

    def __init__(self, message: str) -> None:
        # One line whatever the message holds: scripts read the last line of stderr.
        super().__init__("; ".join(line.strip() for line in message.splitlines() if line.strip()))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"minirouter: {self.format_message()}", err=True, file=file)


class CliUsageError(CliError):
    """A one-line error about how the command was called: exit status 2."""

    exit_code = 2


def store_option(f: F) -> F:
    """Add ``--store URL`` (env ``MINIROUTER_STORE``) to a command, as its `store_url` argument."""
    return click.option(
        "--store",
        "store_url",
        metavar="URL",
        envvar="MINIROUTER_STORE",
        show_envvar=True,
        help="The config store: redis://host:6379/0, rediss://..., unix:///path.sock, "
        "redis+sentinel://h1:26379,h2:26379/name or sqlite:///path/store.db. "
        "Default: the embedded SQLite store of this user.",
    )(f)


def json_option(f: F) -> F:
    """Add ``--json`` to a command, as its `as_json` argument."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of text."
    )(f)


def store_url(url: str | None) -> str:
    """The store URL a command uses: the option (or env), else the embedded default."""
    return url or default_store_url()


def _with_connect_timeout(url: str, seconds: float) -> str:
    scheme = url.partition(":")[0].lower()
    if scheme not in _REDIS_SCHEMES or "socket_connect_timeout=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}socket_connect_timeout={seconds:g}"


def _reason(exc: StoreUnavailable, store_url_shown: str) -> str:
    """Why the store cannot be reached, short: the OS's words when there are some."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    message = str(exc)
    # The store's message names its own URL (with our connect timeout); keep what follows.
    _, sep, rest = message.partition(": ")
    reason = rest if sep and message.startswith("cannot ") else message
    # redis-py appends the repr of its client to some errors (Sentinel's "No master found
    # for 'x' : <redis.client.Redis(<...>)>"): a screenful that says nothing more.
    reason = reason.partition(" : <")[0]
    return reason if len(reason) <= 200 else reason[:197] + "..."


def unreachable_message(url: str, exc: StoreUnavailable) -> str:
    """The one-line message for a store that cannot be reached or used."""
    shown = redact_url(url)
    verb = "use" if url.lower().startswith("sqlite:") else "reach"
    return f"cannot {verb} the config store at {shown}: {_reason(exc, shown)}"


def validation_summary(exc: ValidationError, limit: int = 10) -> str:
    """A ValidationError on one line: ``field: message; field: message; ... and N more``."""
    parts = [f"{path}: {message}" for path, message in exc.fields.items()]
    more = len(parts) - limit
    return "; ".join(parts[:limit]) + (f"; ... and {more} more" if more > 0 else "")


@contextlib.contextmanager
def connect(url: str | None, *, connect_timeout: float = CONNECT_TIMEOUT) -> Iterator[Store]:
    """Open the store at `url` (or the default) for one command; close it afterwards.

    Store errors that the command does not handle itself become one-line `CliError`s.
    """
    url = store_url(url)
    try:
        store = open_store(_with_connect_timeout(url, connect_timeout))
    except StoreUnavailable as exc:
        raise CliError(unreachable_message(url, exc)) from None
    except StoreError as exc:
        raise CliError(str(exc)) from None
    try:
        yield store
    except StoreUnavailable as exc:
        raise CliError(unreachable_message(url, exc)) from None
    except ConflictError as exc:
        raise CliError(f"{exc}; nothing was written, try again") from None
    except StoreError as exc:
        raise CliError(str(exc)) from None
    except ValidationError as exc:
        raise CliError(
            f"refused by the store, nothing was written: {validation_summary(exc)}"
        ) from None
    finally:
        store.close()


def actor() -> str:
    """Who writes, as recorded in the history: ``cli:<user>@<host>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}"


def stdin_is_tty() -> bool:
    """Whether someone can answer a prompt (tests replace this)."""
    return sys.stdin.isatty()


def confirm(question: str) -> bool:
    """Ask a yes/no question on stderr (tests replace this); no answer means no."""
    return click.confirm(question, default=False, err=True)


def edit_text(text: str) -> str | None:
    """Open `text` in $VISUAL / $EDITOR; the saved text, or None if it was not saved."""
    try:
        return click.edit(text, extension=".yaml", require_save=True)
    except click.ClickException as exc:  # the editor could not start, or failed
        raise CliError(exc.format_message()) from None


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:`` URL (None for other URLs), without opening it."""
    if not url.lower().startswith("sqlite:"):
        return None
    path = url.partition(":")[2].partition("?")[0]
    if path.startswith("//"):
        path = path[2:]
    return Path(path)


def complete_ids(kind: str) -> Callable[[click.Context, click.Parameter, str], list[str]]:
    """Shell completion of the ids of `kind`, read from the store named on the command line."""

    def complete(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
        url = store_url(ctx.params.get("store_url") or os.environ.get("MINIROUTER_STORE"))
        path = sqlite_path(url)
        if path is not None and not path.exists():
            return []  # completing must not create the embedded store
        try:
            with connect(url, connect_timeout=1.0) as store:
                items = getattr(store.snapshot().config, kind)
        except (click.ClickException, StoreError, ValidationError):
            return []
        return [item.id for item in items if item.id.startswith(incomplete)]

    return complete


# -- output ---------------------------------------------------------------------------------------


def echo_json(value: Any) -> None:
    """Print `value` as indented JSON."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows under headers, columns padded to their widest cell."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max([len(h), *(len(click.unstyle(row[i])) for row in cells)]) for i, h in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        # Pad by the visible width: a cell may carry colour codes.
        padded = (
            v + " " * (w - len(click.unstyle(v))) for v, w in zip(values, widths, strict=True)
        )
        return "  ".join(padded).rstrip()

    click.echo(click.style(line(headers), bold=True))
    for row in cells:
        click.echo(line(row))


def fields_list(pairs: Sequence[tuple[str, object]]) -> None:
    """Print ``name: value`` lines with the values aligned."""
    width = max((len(name) for name, _ in pairs), default=0) + 1
    for name, value in pairs:
        click.echo(f"{(name + ':').ljust(width)} {value}")


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (PEM) as literal blocks, like the model's export."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = None
    if any(c in data for c in "\x85\u2028\u2029"):
        style = '"'  # written raw they would load back as line breaks
    elif "\n" in data:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(value: Mapping[str, Any]) -> str:
    """`value` as block-style YAML, keys in their given order."""
    text: str = yaml.dump(
        dict(value), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return text


def warn(message: str) -> None:
    """A warning on stderr that does not change the exit status."""
    click.echo(click.style(f"minirouter: warning: {message}", fg="yellow"), err=True)


def warn_invalid(invalid: Mapping[str, str], kinds: Sequence[str]) -> None:
    """Warn about stored items of `kinds` that are invalid and so left out of the snapshot."""
    bad = [key for key in invalid if key.partition("/")[0] in kinds]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        warn(f"left out {len(bad)} invalid stored item(s): {shown} (see `minirouter status`)")
